//! Images: the registry client (OCI distribution API, auth, mirrors from `hosts.toml`), the content
//! store addressed by sha256 digest, the overlayfs snapshotter that unpacks each layer once by chain ID,
//! and image metadata (names, tags, sizes). Nothing read from a registry or an image may drive
//! host-side behaviour outside the store.
#![deny(unsafe_code)]
