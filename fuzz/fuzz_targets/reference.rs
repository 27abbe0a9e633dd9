//! Image references as the kubelet and users write them: parsing never panics, and a parsed
//! reference prints in a normal form that parses back to itself.
#![no_main]

use carapace_imageservice::{Digest, Reference};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let _ = s.parse::<Digest>();
    let Ok(r) = Reference::parse(s) else {
        return;
    };
    let normal = r.to_string();
    let again = Reference::parse(&normal)
        .unwrap_or_else(|e| panic!("{s:?} normalised to {normal:?}, which does not parse: {e}"));
    assert_eq!(
        again, r,
        "{s:?} normalised to {normal:?}, which parses differently"
    );
    let _ = (r.name(), r.repo_tag(), r.domain(), r.repository());
    if let Some(d) = r.digest() {
        let _ = r.with_digest(d);
    }
});
