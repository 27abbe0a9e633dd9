//! A CNI plugin's ADD result: parsed, converted to every supported version as it is chained as
//! `prevResult`, and each conversion must parse again to the same addresses (with their IP
//! version before 1.0.0).
#![no_main]

use carapace_cni::{AttachmentResult, SUPPORTED_VERSIONS};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(value) = serde_json::from_slice(data) else {
        return;
    };
    let Ok(r) = AttachmentResult::from_json(value) else {
        return;
    };
    for v in SUPPORTED_VERSIONS {
        let converted = carapace_cni::fuzzing::converted_to(&r, v);
        let again = AttachmentResult::from_json(converted.clone()).unwrap_or_else(|e| {
            panic!("the result converted to {v} does not parse: {e}: {converted}")
        });
        assert_eq!(again.addresses(), r.addresses(), "converted to {v}");
        assert_eq!(again.cni_version, *v);
        if v.starts_with("0.") {
            let ips = converted["ips"].as_array().map_or(&[][..], Vec::as_slice);
            assert!(
                ips.iter().all(|ip| ip.get("version").is_some()),
                "an address without its version in a {v} result: {converted}"
            );
        }
    }
});
