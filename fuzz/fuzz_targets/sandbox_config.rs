//! A RunPodSandbox's `PodSandboxConfig` as protobuf bytes, through the request's validation.
#![no_main]

use carapace_cri::api::PodSandboxConfig;
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let Ok(config) = PodSandboxConfig::decode(data) else {
        return;
    };
    let _ = carapace_cri::fuzzing::sandbox_config(config, String::new());
});
