//! The configured runtime handlers, as the container side needs them: a pod's handler name
//! becomes the OCI runtime its containers are created with.

use std::collections::BTreeMap;
use std::sync::RwLock;

use carapace_runtime::config::OciRuntime;

use crate::error::Error;

static HANDLERS: RwLock<BTreeMap<String, OciRuntime>> = RwLock::new(BTreeMap::new());

/// Sets the handlers every later [`oci_runtime`] looks in (the daemon's `[runtimes.*]`).
pub(crate) fn set(handlers: BTreeMap<String, OciRuntime>) {
    *HANDLERS.write().unwrap_or_else(|e| e.into_inner()) = handlers;
}

/// The OCI runtime of handler `name`: `None` for the built-in executor (`""`), NotFound naming
/// it for a handler the configuration does not have.
pub(crate) fn oci_runtime(name: &str) -> Result<Option<OciRuntime>, Error> {
    if name.is_empty() {
        return Ok(None);
    }
    HANDLERS
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .get(name)
        .cloned()
        .map(Some)
        .ok_or_else(|| Error::NotFound(format!("runtime handler {name:?}")))
}
