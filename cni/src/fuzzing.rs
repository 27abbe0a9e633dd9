//! Entry points for the fuzz targets in `fuzz/` into parsers that are not public. Not an API:
//! hidden from the docs and free to change with the fuzz targets.

use serde_json::Value;

use crate::AttachmentResult;

/// `result` as it is chained to a plugin of `version` as `prevResult`.
pub fn converted_to(result: &AttachmentResult, version: &str) -> Value {
    result.converted_to(version)
}
