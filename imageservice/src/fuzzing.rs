//! Entry points for the fuzz targets in `fuzz/` into parsers that are not public. Not an API:
//! hidden from the docs and free to change with the fuzz targets.

use std::path::Path;

use crate::Error;
use crate::hosts::RegistryHost;

/// A `hosts.toml` as [`crate::hosts::Hosts::for_registry`] parses it for `domain`, without the
/// file system.
pub fn hosts_toml(text: &str, domain: &str) -> Result<Vec<RegistryHost>, Error> {
    let dir = Path::new("/etc/carapace/certs.d").join(domain);
    crate::hosts::parse(text, &dir.join("hosts.toml"), &dir, domain)
}
