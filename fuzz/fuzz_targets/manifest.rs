//! Manifests, indexes and image configs as a registry serves them: the first byte picks the
//! Content-Type header the registry sent, the rest is the body.
#![no_main]

use carapace_imageservice::manifest::{
    Document, ImageConfig, Platform, check_layer_type, parse_document, select, user_of,
};
use libfuzzer_sys::fuzz_target;

const CONTENT_TYPES: &[Option<&str>] = &[
    None,
    Some("application/json"),
    Some("application/vnd.oci.image.index.v1+json"),
    Some("application/vnd.oci.image.manifest.v1+json"),
    Some("application/vnd.docker.distribution.manifest.list.v2+json"),
    Some("application/vnd.docker.distribution.manifest.v2+json; charset=utf-8"),
    Some("application/vnd.docker.distribution.manifest.v1+prettyjws"),
    Some("text/plain"),
];

fuzz_target!(|data: &[u8]| {
    let Some((&first, body)) = data.split_first() else {
        return;
    };
    let content_type = CONTENT_TYPES[usize::from(first) % CONTENT_TYPES.len()];
    match parse_document(body, content_type, "fuzz") {
        Ok(Document::Index(i)) => {
            let _ = select(&i, &Platform::host());
        }
        Ok(Document::Manifest(m)) => {
            for l in &m.layers {
                let _ = check_layer_type(&l.media_type);
            }
        }
        Err(_) => {}
    }
    if let Ok(c) = serde_json::from_slice::<ImageConfig>(body) {
        let _ = user_of(&c);
    }
});
