//! Images: the registry client (OCI distribution API, auth, mirrors from `hosts.toml`), the content
//! store addressed by sha256 digest, the overlayfs snapshotter that unpacks each layer once by chain ID,
//! and image metadata (names, tags, sizes). Nothing read from a registry or an image may drive
//! host-side behaviour outside the store.
//!
//! The CRI layer uses [`Images`]; the other modules are public for tools and tests.
#![deny(unsafe_code)]

pub mod content;
mod digest;
mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod hosts;
mod images;
pub mod manifest;
mod metadata;
mod metrics;
mod reference;
mod registry;
pub mod snapshot;
pub mod unpack;

#[cfg(test)]
mod pull_tests;

pub use digest::{ChainId, Digest, chain_ids};
pub use error::Error;
pub use images::{FsUsage, GcReport, Images, ImagesConfig};
pub use metadata::Image;
pub use reference::Reference;
pub use registry::{Credentials, ping};
pub use unpack::UnpackLimits;
