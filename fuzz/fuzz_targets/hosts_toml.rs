//! `certs.d/<registry>/hosts.toml`, for a registry the first byte picks.
#![no_main]

use carapace_imageservice::fuzzing::hosts_toml;
use libfuzzer_sys::fuzz_target;

const DOMAINS: &[&str] = &[
    "docker.io",
    "127.0.0.1:5000",
    "registry.example:8443",
    "[::1]:5000",
];

fuzz_target!(|data: &[u8]| {
    let Some((&first, body)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(body) else {
        return;
    };
    if let Ok(hosts) = hosts_toml(text, DOMAINS[usize::from(first) % DOMAINS.len()]) {
        assert!(!hosts.is_empty(), "no host at all, not even the server");
        for h in &hosts {
            let _ = h.authority();
        }
    }
});
