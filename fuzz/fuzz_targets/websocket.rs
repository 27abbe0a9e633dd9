//! What a streaming client sends on an upgraded WebSocket connection, under the subprotocol the
//! first byte picks.
#![no_main]

use libfuzzer_sys::fuzz_target;

const PROTOCOLS: &[&str] = &[
    "v5.channel.k8s.io",
    "v4.channel.k8s.io",
    "v4.base64.channel.k8s.io",
    "channel.k8s.io",
    "base64.channel.k8s.io",
    "SPDY/3.1+portforward.k8s.io",
];

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    carapace_cri::fuzzing::websocket_messages(
        PROTOCOLS[usize::from(first) % PROTOCOLS.len()],
        rest,
    );
});
