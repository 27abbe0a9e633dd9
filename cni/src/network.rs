//! Network configuration: a `.conflist` (a list of plugins) or a `.conf`/`.json` single plugin
//! configuration, which is wrapped into a list of one as libcni does.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::{Error, is_safe_name, is_supported, parse_version};

/// Configuration files larger than this are refused: nothing legitimate comes close.
const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// A network configuration list, validated: what ADD, CHECK and DEL run.
#[derive(Debug, Clone, PartialEq)]
pub struct Network {
    name: String,
    cni_version: String,
    disable_check: bool,
    plugins: Vec<Map<String, Value>>,
    source: PathBuf,
}

impl Network {
    /// Parses a configuration. `source` names it in errors and decides the format: a `.conflist`
    /// must be a list; anything else may be a list (it has `plugins`) or a single plugin.
    pub fn from_bytes(bytes: &[u8], source: &Path) -> Result<Self, Error> {
        let invalid = |reason: String| Error::InvalidConfig {
            path: source.to_owned(),
            reason,
        };
        let value: Value = serde_json::from_slice(bytes).map_err(|e| invalid(e.to_string()))?;
        let Value::Object(mut top) = value else {
            return Err(invalid("not a JSON object".into()));
        };
        let is_list =
            source.extension().is_some_and(|e| e == "conflist") || top.contains_key("plugins");
        let name = match top.get("name") {
            Some(Value::String(n)) if is_safe_name(n) => n.clone(),
            Some(Value::String(n)) => return Err(invalid(format!("invalid network name {n:?}"))),
            _ => return Err(invalid("missing `name`".into())),
        };
        let cni_version = choose_version(&top).map_err(invalid)?;
        let disable_check = top
            .get("disableCheck")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let plugins = if is_list {
            match top.remove("plugins") {
                Some(Value::Array(ps)) if !ps.is_empty() => ps
                    .into_iter()
                    .map(|p| match p {
                        Value::Object(m) => Ok(m),
                        _ => Err(invalid("a plugin configuration is not an object".into())),
                    })
                    .collect::<Result<Vec<_>, _>>()?,
                Some(Value::Array(_)) => return Err(invalid("`plugins` is empty".into())),
                _ => return Err(invalid("missing `plugins` list".into())),
            }
        } else {
            top.remove("name");
            top.remove("cniVersion");
            top.remove("cniVersions");
            vec![top]
        };
        for p in &plugins {
            match p.get("type") {
                Some(Value::String(t)) if is_safe_name(t) => {}
                Some(Value::String(t)) => {
                    return Err(invalid(format!("invalid plugin type {t:?}")));
                }
                _ => return Err(invalid("a plugin has no `type`".into())),
            }
        }
        Ok(Self {
            name,
            cni_version,
            disable_check,
            plugins,
            source: source.to_owned(),
        })
    }

    /// Reads and parses one configuration file.
    pub fn from_file(path: &Path) -> Result<Self, Error> {
        let invalid = |reason: String| Error::InvalidConfig {
            path: path.to_owned(),
            reason,
        };
        let meta = std::fs::metadata(path).map_err(|e| invalid(e.to_string()))?;
        if meta.len() > MAX_CONFIG_BYTES {
            return Err(invalid(format!("larger than {MAX_CONFIG_BYTES} bytes")));
        }
        let bytes = std::fs::read(path).map_err(|e| invalid(e.to_string()))?;
        Self::from_bytes(&bytes, path)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn cni_version(&self) -> &str {
        &self.cni_version
    }

    /// The file this network was read from.
    pub fn source(&self) -> &Path {
        &self.source
    }

    /// Plugin types, in ADD order.
    pub fn plugin_types(&self) -> impl Iterator<Item = &str> {
        self.plugins
            .iter()
            .filter_map(|p| p.get("type").and_then(Value::as_str))
    }

    /// Every plugin binary an ADD may run, in order: each plugin's type, then its IPAM plugin's
    /// (`ipam.type`), which the plugin runs itself from the same plugin directories.
    pub fn binaries(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for p in &self.plugins {
            let ipam = p
                .get("ipam")
                .and_then(|i| i.get("type"))
                .and_then(Value::as_str)
                // Not validated at load (the plugin looks it up), so checked here before anyone
                // joins it to a directory.
                .filter(|t| is_safe_name(t));
            for b in p
                .get("type")
                .and_then(Value::as_str)
                .into_iter()
                .chain(ipam)
            {
                if !out.contains(&b) {
                    out.push(b);
                }
            }
        }
        out
    }

    pub(crate) fn plugins(&self) -> &[Map<String, Value>] {
        &self.plugins
    }

    pub(crate) fn disable_check(&self) -> bool {
        self.disable_check
    }

    /// The list form, as cached with an ADD result so DEL runs what ADD ran.
    pub(crate) fn to_list_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("cniVersion".into(), self.cni_version.clone().into());
        m.insert("name".into(), self.name.clone().into());
        if self.disable_check {
            m.insert("disableCheck".into(), true.into());
        }
        m.insert(
            "plugins".into(),
            Value::Array(self.plugins.iter().cloned().map(Value::Object).collect()),
        );
        Value::Object(m)
    }
}

/// The version to run with: the highest supported of `cniVersions` (CNI 1.1), else `cniVersion`.
fn choose_version(top: &Map<String, Value>) -> Result<String, String> {
    if let Some(Value::Array(vs)) = top.get("cniVersions") {
        let best = vs
            .iter()
            .filter_map(Value::as_str)
            .filter(|v| is_supported(v))
            .max_by_key(|v| parse_version(v));
        if let Some(v) = best {
            return Ok(v.to_owned());
        }
    }
    match top.get("cniVersion") {
        Some(Value::String(v)) if is_supported(v) => Ok(v.clone()),
        Some(Value::String(v)) => Err(format!("unsupported cniVersion {v:?}")),
        _ => Err("missing `cniVersion`".into()),
    }
}

/// The pod network: the first valid configuration in `conf_dir`, in lexical order of file names,
/// among `.conflist`, `.conf` and `.json` files. Invalid files are skipped and named in the error
/// if none is valid.
pub fn load_network(conf_dir: &Path) -> Result<Network, Error> {
    let no_network = |skipped| Error::NoNetwork {
        dir: conf_dir.to_owned(),
        skipped,
    };
    let mut files: Vec<PathBuf> = match std::fs::read_dir(conf_dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| {
                matches!(
                    p.extension().and_then(|x| x.to_str()),
                    Some("conflist" | "conf" | "json")
                ) && p.is_file()
            })
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(no_network(vec![(conf_dir.to_owned(), e.to_string())])),
    };
    files.sort();
    let mut skipped = Vec::new();
    for f in files {
        match Network::from_file(&f) {
            Ok(n) => return Ok(n),
            Err(Error::InvalidConfig { path, reason }) => {
                tracing::debug!(path = %path.display(), %reason, "skipping CNI configuration");
                skipped.push((path, reason));
            }
            Err(e) => skipped.push((f, e.to_string())),
        }
    }
    Err(no_network(skipped))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) {
        std::fs::write(dir.join(name), text).unwrap();
    }

    #[test]
    fn first_valid_file_in_lexical_order_is_the_network() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "05-broken.conflist", "{not json");
        write(d.path(), "07-notes.txt", "ignored");
        write(
            d.path(),
            "20-b.conflist",
            r#"{"cniVersion":"1.0.0","name":"b","plugins":[{"type":"bridge"}]}"#,
        );
        write(
            d.path(),
            "10-a.conflist",
            r#"{"cniVersion":"0.4.0","name":"a","plugins":[{"type":"bridge"},{"type":"portmap"}]}"#,
        );
        let n = load_network(d.path()).unwrap();
        assert_eq!(n.name(), "a");
        assert_eq!(n.cni_version(), "0.4.0");
        assert_eq!(n.plugin_types().collect::<Vec<_>>(), ["bridge", "portmap"]);
    }

    #[test]
    fn single_plugin_conf_is_wrapped_into_a_list() {
        let d = tempfile::tempdir().unwrap();
        write(
            d.path(),
            "10-one.conf",
            r#"{"cniVersion":"1.0.0","name":"one","type":"bridge","bridge":"cni0"}"#,
        );
        let n = load_network(d.path()).unwrap();
        assert_eq!(n.plugins().len(), 1);
        assert_eq!(n.plugins()[0]["bridge"], "cni0");
        assert!(n.plugins()[0].get("name").is_none());
        let list = n.to_list_json();
        assert_eq!(list["plugins"][0]["type"], "bridge");
    }

    #[test]
    fn no_valid_file_names_each_skipped_file() {
        let d = tempfile::tempdir().unwrap();
        write(
            d.path(),
            "10-a.conflist",
            r#"{"cniVersion":"9.9.9","name":"a","plugins":[{"type":"x"}]}"#,
        );
        write(
            d.path(),
            "20-b.conflist",
            r#"{"cniVersion":"1.0.0","name":"b","plugins":[]}"#,
        );
        write(
            d.path(),
            "30-c.conf",
            r#"{"cniVersion":"1.0.0","name":"c","type":"../evil"}"#,
        );
        let e = load_network(d.path()).unwrap_err().to_string();
        assert!(
            e.contains("9.9.9") && e.contains("empty") && e.contains("../evil"),
            "{e}"
        );
        let e = load_network(&d.path().join("missing")).unwrap_err();
        assert!(matches!(e, Error::NoNetwork { .. }));
    }

    #[test]
    fn cni_versions_picks_the_highest_supported() {
        let n = Network::from_bytes(
            br#"{"cniVersion":"0.4.0","cniVersions":["0.4.0","1.0.0","7.0.0"],"name":"n","plugins":[{"type":"p"}]}"#,
            Path::new("x.conflist"),
        )
        .unwrap();
        assert_eq!(n.cni_version(), "1.0.0");
    }

    #[test]
    fn binaries_are_the_plugins_and_their_ipam_once_each() {
        let n = Network::from_bytes(
            br#"{"cniVersion":"1.0.0","name":"n","plugins":[
                {"type":"bridge","ipam":{"type":"host-local"}},
                {"type":"portmap"},
                {"type":"ptp","ipam":{"type":"host-local"}},
                {"type":"tuning","ipam":{"type":"../../bin/sh"}}]}"#,
            Path::new("n.conflist"),
        )
        .unwrap();
        assert_eq!(
            n.binaries(),
            ["bridge", "host-local", "portmap", "ptp", "tuning"]
        );
    }
}
