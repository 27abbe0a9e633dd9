//! What a streaming client sends on an upgraded SPDY/3.1 connection.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    carapace_cri::fuzzing::spdy_frames(data);
});
