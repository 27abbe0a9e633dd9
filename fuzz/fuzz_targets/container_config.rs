//! A CreateContainer's `ContainerConfig` as protobuf bytes, after one byte that shapes the pod
//! and the image: mapped to the runtime's config and the OCI spec, refused or not, never a panic.
#![no_main]

use carapace_cri::api::ContainerConfig;
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let Some((&shape, body)) = data.split_first() else {
        return;
    };
    let Ok(config) = ContainerConfig::decode(body) else {
        return;
    };
    let _ = carapace_cri::fuzzing::container_config(&config, shape);
});
