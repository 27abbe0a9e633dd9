//! CDI (Container Device Interface) devices: the spec files in the configured directories
//! (`cdi_spec_dirs`, `/etc/cdi` and `/var/run/cdi` by default), and what a container that asks for
//! fully qualified device names (`vendor.com/class=name`, in `ContainerConfig.cdi_devices` or in
//! `cdi.k8s.io/<key>` annotations) gets from them: device nodes, bind mounts, environment and
//! additional groups, as the runtime's config ([`CdiEdits`]).
//!
//! The directories are read afresh by every resolve: the kubelet's DRA drivers and device plugins
//! write specs just before the container that uses them is created, and a create that asks for
//! CDI devices is rare enough that a cache would only add a way to be stale.
//!
//! What the spec asks and the runtime cannot do is refused naming the device, never dropped:
//! hooks (the built-in executor runs no OCI hooks), `intelRdt`, `netDevices`, FIFO nodes, a node
//! whose numbers, mode or owner differ from the host node's (the runtime makes the node from the
//! host's), and mounts that are not binds.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Component, Path, PathBuf};
use std::sync::RwLock;

use carapace_runtime::config as rt;
use serde::{Deserialize, Deserializer};

use super::invalid;
use crate::api::CdiDevice;
use crate::error::Error;

/// Where spec files are looked for when the configuration names no directories, lowest priority
/// first: the CDI library's defaults (static specs, then generated ones).
pub(crate) const DEFAULT_SPEC_DIRS: [&str; 2] = ["/etc/cdi", "/var/run/cdi"];

/// The annotation form of a request, older than `cdi_devices` and still what a device plugin's
/// allocate answer may carry: `cdi.k8s.io/<key>: vendor.com/class=a,vendor.com/class=b`.
const ANNOTATION_PREFIX: &str = "cdi.k8s.io/";

/// Real specs are kilobytes (a GPU node's, a few hundred); a larger file is not a spec.
const MAX_SPEC_BYTES: u64 = 16 << 20;

/// The spec versions (major, minor) whose files are read: 0.3.0, the earliest the CDI library
/// accepts, to 1.1.0, the current one. Later minor versions only added fields.
const VERSIONS: [(u64, u64); 8] = [
    (0, 3),
    (0, 4),
    (0, 5),
    (0, 6),
    (0, 7),
    (0, 8),
    (1, 0),
    (1, 1),
];

/// The daemon's `cdi_spec_dirs`; `None` until set, which means the defaults.
static SPEC_DIRS: RwLock<Option<Vec<PathBuf>>> = RwLock::new(None);

/// Sets the directories every later [`CdiRegistry::configured`] reads (the daemon's
/// `cdi_spec_dirs`), lowest priority first.
pub(crate) fn set_spec_dirs(dirs: Vec<PathBuf>) {
    *SPEC_DIRS.write().unwrap_or_else(|e| e.into_inner()) = Some(dirs);
}

/// The names a container asks for: `cdi_devices` in order, then those of `cdi.k8s.io/`
/// annotations (by key), each once, as containerd merges them.
pub(crate) fn requested(
    devices: &[CdiDevice],
    annotations: &HashMap<String, String>,
) -> Result<Vec<String>, Error> {
    let mut out: Vec<String> = Vec::new();
    for d in devices {
        if parse_qualified(&d.name).is_none() {
            return Err(invalid(format!(
                "CDI device {:?} is not a fully qualified name (vendor.com/class=name)",
                d.name
            )));
        }
        if !out.contains(&d.name) {
            out.push(d.name.clone());
        }
    }
    let mut keys: Vec<&String> = annotations
        .keys()
        .filter(|k| k.starts_with(ANNOTATION_PREFIX))
        .collect();
    keys.sort();
    for key in keys {
        for name in annotations[key].split(',') {
            if parse_qualified(name).is_none() {
                return Err(invalid(format!(
                    "CDI device {name:?} of annotation {key} is not a fully qualified name \
                     (vendor.com/class=name)"
                )));
            }
            if !out.iter().any(|n| n == name) {
                out.push(name.to_owned());
            }
        }
    }
    Ok(out)
}

/// What the requested devices add to a container, in the runtime's terms.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct CdiEdits {
    /// `KEY=VALUE`; a key already set is replaced in place.
    pub env: Vec<String>,
    /// Made in the container and allowed by its device cgroup, as the CRI's `devices` are.
    pub devices: Vec<rt::Device>,
    pub mounts: Vec<rt::Mount>,
    pub additional_gids: Vec<u32>,
}

impl CdiEdits {
    /// Merges the edits into `config` as the CDI library edits an OCI spec: an env key, device
    /// path or mount destination the container already has is replaced by the device's.
    pub(crate) fn apply(self, config: &mut rt::ContainerConfig) {
        let env = &mut config.process.env;
        for e in self.env {
            // Checked on load: every entry has a key and `=`.
            let key = e.split('=').next().unwrap_or_default();
            let prefix = format!("{key}=");
            match env
                .iter()
                .position(|x| x.as_encoded_bytes().starts_with(prefix.as_bytes()))
            {
                Some(i) => env[i] = e.into(),
                None => env.push(e.into()),
            }
        }
        for d in self.devices {
            config
                .devices
                .retain(|x| x.container_path != d.container_path);
            config.devices.push(d);
        }
        for m in self.mounts {
            config
                .mounts
                .retain(|x| Path::new(&x.container_path) != Path::new(&m.container_path));
            config.mounts.push(m);
        }
        for g in self.additional_gids {
            if !config.process.additional_gids.contains(&g) {
                config.process.additional_gids.push(g);
            }
        }
    }
}

/// The spec files of some directories, lowest priority first.
#[derive(Debug, Clone)]
pub(crate) struct CdiRegistry {
    dirs: Vec<PathBuf>,
}

impl CdiRegistry {
    pub(crate) fn new(dirs: Vec<PathBuf>) -> Self {
        Self { dirs }
    }

    /// The daemon's directories (see [`set_spec_dirs`]), else the defaults.
    pub(crate) fn configured() -> Self {
        let dirs = SPEC_DIRS
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .unwrap_or_else(|| DEFAULT_SPEC_DIRS.iter().map(PathBuf::from).collect());
        Self::new(dirs)
    }

    /// The edits of `names` (fully qualified, see [`requested`]): each spec's own edits once, the
    /// first time one of its devices is named, then each device's. A name no readable spec
    /// defines, or that two files of one directory define, is refused naming it.
    pub(crate) fn resolve(&self, names: &[String]) -> Result<CdiEdits, Error> {
        let mut edits = CdiEdits::default();
        if names.is_empty() {
            return Ok(edits);
        }
        let loaded = Loaded::read(&self.dirs);
        let mut applied = HashSet::new();
        for name in names {
            let Some((kind, _)) = parse_qualified(name) else {
                return Err(invalid(format!(
                    "CDI device {name:?} is not a fully qualified name (vendor.com/class=name)"
                )));
            };
            if let Some((a, b)) = loaded.conflicts.get(name.as_str()) {
                return Err(invalid(format!(
                    "CDI device {name:?} is defined by two spec files of one directory, {} and {}",
                    a.display(),
                    b.display()
                )));
            }
            let Some(&(s, d)) = loaded.devices.get(name.as_str()) else {
                return Err(invalid(loaded.unknown(name, kind, &self.dirs)));
            };
            let (path, spec) = &loaded.specs[s];
            let fail =
                |why: String| invalid(format!("CDI device {name:?} ({}): {why}", path.display()));
            if applied.insert(s) {
                add(&mut edits, &spec.container_edits).map_err(fail)?;
            }
            add(&mut edits, &spec.devices[d].container_edits).map_err(fail)?;
        }
        Ok(edits)
    }
}

/// `vendor/class=name` → (`vendor/class`, `name`), each part valid by the CDI library's rules.
fn parse_qualified(name: &str) -> Option<(&str, &str)> {
    let (kind, device) = name.split_once('=')?;
    valid_kind(kind).then_some(())?;
    valid_device_name(device).then_some((kind, device))
}

/// `vendor/class`: both start with a letter, end with a letter or digit, and hold only those,
/// `_`, `-` and `.`.
fn valid_kind(kind: &str) -> bool {
    let part = |s: &str| {
        let b = s.as_bytes();
        match (b.first(), b.last()) {
            (Some(f), Some(l)) => {
                f.is_ascii_alphabetic()
                    && l.is_ascii_alphanumeric()
                    && b.iter()
                        .all(|c| c.is_ascii_alphanumeric() || b"_-.".contains(c))
            }
            _ => false,
        }
    };
    kind.split_once('/')
        .is_some_and(|(vendor, class)| part(vendor) && part(class))
}

/// A device name starts and ends with a letter or digit and holds only those, `_`, `-`, `.`
/// and `:`.
fn valid_device_name(name: &str) -> bool {
    let b = name.as_bytes();
    match (b.first(), b.last()) {
        (Some(f), Some(l)) => {
            f.is_ascii_alphanumeric()
                && l.is_ascii_alphanumeric()
                && b.iter()
                    .all(|c| c.is_ascii_alphanumeric() || b"_-.:".contains(c))
        }
        _ => false,
    }
}

// --- the spec file ---------------------------------------------------------------------------

/// `null`, as Go writes an empty list, reads as the empty value.
fn nullable<'de, D: Deserializer<'de>, T: Default + Deserialize<'de>>(d: D) -> Result<T, D::Error> {
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Spec {
    cdi_version: String,
    kind: String,
    #[serde(default, deserialize_with = "nullable")]
    #[allow(dead_code)] // Read so that a spec using it parses; it means nothing to a runtime.
    annotations: BTreeMap<String, String>,
    devices: Vec<DeviceSpec>,
    #[serde(default, deserialize_with = "nullable")]
    container_edits: Edits,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct DeviceSpec {
    name: String,
    #[serde(default, deserialize_with = "nullable")]
    #[allow(dead_code)] // As `Spec::annotations`.
    annotations: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "nullable")]
    container_edits: Edits,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
struct Edits {
    #[serde(deserialize_with = "nullable")]
    env: Vec<String>,
    #[serde(deserialize_with = "nullable")]
    device_nodes: Vec<DeviceNode>,
    #[serde(deserialize_with = "nullable")]
    mounts: Vec<MountSpec>,
    #[serde(deserialize_with = "nullable")]
    hooks: Vec<Hook>,
    /// The library's tag; the spec's text spells it `additionalGIDs`, which Go's
    /// case-insensitive JSON reads too.
    #[serde(alias = "additionalGIDs", deserialize_with = "nullable")]
    additional_gids: Vec<u32>,
    intel_rdt: Option<serde_json::Value>,
    #[serde(deserialize_with = "nullable")]
    net_devices: Vec<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct DeviceNode {
    path: String,
    #[serde(default)]
    host_path: String,
    #[serde(default, rename = "type")]
    typ: String,
    #[serde(default)]
    major: i64,
    #[serde(default)]
    minor: i64,
    /// Go's `os.FileMode`: the permission bits are the low nine, as in `st_mode`.
    file_mode: Option<u32>,
    #[serde(default)]
    permissions: String,
    uid: Option<u32>,
    gid: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct MountSpec {
    host_path: String,
    container_path: String,
    #[serde(default, deserialize_with = "nullable")]
    options: Vec<String>,
    #[serde(default, rename = "type")]
    typ: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[allow(dead_code)] // Parsed to be validated and named in the refusal; never run.
struct Hook {
    hook_name: String,
    path: String,
    #[serde(default, deserialize_with = "nullable")]
    args: Vec<String>,
    #[serde(default, deserialize_with = "nullable")]
    env: Vec<String>,
    timeout: Option<i64>,
}

const HOOK_NAMES: [&str; 6] = [
    "prestart",
    "createRuntime",
    "createContainer",
    "startContainer",
    "poststart",
    "poststop",
];

/// A spec file's text as a spec: JSON, or YAML (of which JSON is a subset) for `.yaml`.
fn parse_spec(text: &str, yaml: bool) -> Result<Spec, String> {
    let spec: Spec = if yaml {
        let docs = yaml_rust2::YamlLoader::load_from_str(text).map_err(|e| e.to_string())?;
        let doc = docs
            .into_iter()
            .next()
            .ok_or("the file holds no YAML document")?;
        serde_json::from_value(yaml_to_json(doc)?).map_err(|e| e.to_string())?
    } else {
        serde_json::from_str(text).map_err(|e| e.to_string())?
    };
    check_spec(&spec)?;
    Ok(spec)
}

fn yaml_to_json(y: yaml_rust2::Yaml) -> Result<serde_json::Value, String> {
    use serde_json::Value;
    use yaml_rust2::Yaml;
    Ok(match y {
        Yaml::Null => Value::Null,
        Yaml::Boolean(b) => Value::Bool(b),
        Yaml::Integer(i) => Value::from(i),
        Yaml::Real(s) => s
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map(Value::Number)
            .ok_or_else(|| format!("{s:?} is not a finite number"))?,
        Yaml::String(s) => Value::String(s),
        Yaml::Array(a) => Value::Array(a.into_iter().map(yaml_to_json).collect::<Result<_, _>>()?),
        Yaml::Hash(h) => {
            let mut m = serde_json::Map::new();
            for (k, v) in h {
                let Yaml::String(k) = k else {
                    return Err(format!("mapping key {k:?} is not a string"));
                };
                m.insert(k, yaml_to_json(v)?);
            }
            Value::Object(m)
        }
        Yaml::Alias(_) => return Err("YAML aliases are not supported in CDI specs".into()),
        Yaml::BadValue => return Err("invalid YAML value".into()),
    })
}

/// What makes a file invalid whichever of its devices is asked for, as the CDI library checks it
/// on load.
fn check_spec(spec: &Spec) -> Result<(), String> {
    let version = spec.cdi_version.as_str();
    let parts: Vec<Option<u64>> = version.split('.').map(|p| p.parse().ok()).collect();
    let known = match parts[..] {
        [Some(major), Some(minor), Some(_)] => VERSIONS.contains(&(major, minor)),
        _ => false,
    };
    if !known {
        return Err(format!(
            "cdiVersion {version:?} is not one this runtime reads (0.3.0 to 1.1.x)"
        ));
    }
    if !valid_kind(&spec.kind) {
        return Err(format!("kind {:?} is not vendor.com/class", spec.kind));
    }
    if spec.devices.is_empty() {
        return Err("the spec defines no device".into());
    }
    let mut seen = HashSet::new();
    for d in &spec.devices {
        if !valid_device_name(&d.name) {
            return Err(format!("device name {:?} is invalid", d.name));
        }
        if !seen.insert(d.name.as_str()) {
            return Err(format!("device {:?} is defined twice", d.name));
        }
        check_edits(&d.container_edits).map_err(|e| format!("device {:?}: {e}", d.name))?;
    }
    check_edits(&spec.container_edits)
}

fn check_edits(e: &Edits) -> Result<(), String> {
    let env_ok = |v: &String| v.find('=').is_some_and(|i| i > 0) && !v.contains('\0');
    if let Some(v) = e.env.iter().find(|v| !env_ok(v)) {
        // The key only: the value may be a secret.
        let key = v.split('=').next().unwrap_or_default();
        return Err(format!("invalid environment variable {key:?}"));
    }
    for n in &e.device_nodes {
        if n.path.is_empty() {
            return Err("a device node has no path".into());
        }
        if !matches!(n.typ.as_str(), "" | "b" | "c" | "u" | "p") {
            return Err(format!("device node {}: invalid type {:?}", n.path, n.typ));
        }
        let perms_ok = n.permissions == "none" || n.permissions.chars().all(|c| "rwm".contains(c));
        if !perms_ok {
            return Err(format!(
                "device node {}: invalid permissions {:?}",
                n.path, n.permissions
            ));
        }
    }
    for h in &e.hooks {
        if !HOOK_NAMES.contains(&h.hook_name.as_str()) {
            return Err(format!("invalid hook name {:?}", h.hook_name));
        }
        if h.path.is_empty() {
            return Err(format!("hook {} has no path", h.hook_name));
        }
    }
    for m in &e.mounts {
        if m.host_path.is_empty() || m.container_path.is_empty() {
            return Err("a mount has an empty host or container path".into());
        }
    }
    Ok(())
}

// --- the directories ---------------------------------------------------------------------------

/// The specs read from the directories, and where each device comes from.
#[derive(Default)]
struct Loaded {
    specs: Vec<(PathBuf, Spec)>,
    /// Qualified name → (index in `specs`, index in its devices).
    devices: HashMap<String, (usize, usize)>,
    /// Devices that two files of the same directory define: neither wins.
    conflicts: HashMap<String, (PathBuf, PathBuf)>,
    /// Files that could not be read as specs: path, their kind where it could be made out, why.
    broken: Vec<(PathBuf, Option<String>, String)>,
}

impl Loaded {
    /// Reads every `.json` and `.yaml` file of `dirs` (not below them), in name order. A device
    /// defined in a later directory replaces an earlier one's, as the CDI library orders them.
    fn read(dirs: &[PathBuf]) -> Self {
        let mut out = Loaded::default();
        let mut priority_of: HashMap<String, usize> = HashMap::new();
        for (priority, dir) in dirs.iter().enumerate() {
            let entries = match std::fs::read_dir(dir) {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), error = %e, "reading a CDI spec directory");
                    continue;
                }
            };
            let mut files: Vec<PathBuf> = entries
                .filter_map(|e| e.ok())
                .filter(|e| e.file_type().is_ok_and(|t| !t.is_dir()))
                .map(|e| e.path())
                .filter(|p| {
                    matches!(
                        p.extension().and_then(|e| e.to_str()),
                        Some("json" | "yaml")
                    )
                })
                .collect();
            files.sort();
            for path in files {
                let spec = match read_spec(&path) {
                    Ok(s) => s,
                    Err((kind, why)) => {
                        tracing::warn!(path = %path.display(), error = %why, "skipping a CDI spec file");
                        out.broken.push((path, kind, why));
                        continue;
                    }
                };
                let s = out.specs.len();
                for (d, dev) in spec.devices.iter().enumerate() {
                    let name = format!("{}={}", spec.kind, dev.name);
                    match priority_of.get(&name) {
                        Some(&p) if p == priority => {
                            let other = out
                                .devices
                                .get(&name)
                                .map(|&(o, _)| out.specs[o].0.clone())
                                .or_else(|| out.conflicts.get(&name).map(|c| c.0.clone()))
                                .unwrap_or_default();
                            out.devices.remove(&name);
                            out.conflicts.insert(name, (other, path.clone()));
                            continue;
                        }
                        _ => {}
                    }
                    out.conflicts.remove(&name);
                    priority_of.insert(name.clone(), priority);
                    out.devices.insert(name, (s, d));
                }
                out.specs.push((path, spec));
            }
        }
        out
    }

    /// Why `name` (of `kind`) is unknown, with the files that failed to load and might have
    /// defined it.
    fn unknown(&self, name: &str, kind: &str, dirs: &[PathBuf]) -> String {
        let mut msg = format!(
            "unknown CDI device {name:?}: no spec file in {} defines it",
            dirs.iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
        for (path, k, why) in &self.broken {
            if k.as_deref().is_none_or(|k| k == kind) {
                msg.push_str(&format!("; {} failed to load: {why}", path.display()));
            }
        }
        msg
    }
}

/// One spec file, or why not with its `kind` where it could still be made out.
fn read_spec(path: &Path) -> Result<Spec, (Option<String>, String)> {
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_SPEC_BYTES + 1).read_to_string(&mut text))
        .map_err(|e| (None, e.to_string()))?;
    if text.len() as u64 > MAX_SPEC_BYTES {
        return Err((None, format!("larger than {MAX_SPEC_BYTES} bytes")));
    }
    let yaml = path.extension().is_some_and(|e| e == "yaml");
    parse_spec(&text, yaml).map_err(|why| (kind_of(&text, yaml), why))
}

/// The `kind` of a file that is not a valid spec, to name it against a device of that kind.
fn kind_of(text: &str, yaml: bool) -> Option<String> {
    let v: serde_json::Value = if yaml {
        let doc = yaml_rust2::YamlLoader::load_from_str(text)
            .ok()?
            .into_iter()
            .next()?;
        yaml_to_json(doc).ok()?
    } else {
        serde_json::from_str(text).ok()?
    };
    v.get("kind")?.as_str().map(str::to_owned)
}

// --- the edits -----------------------------------------------------------------------------------

fn absolute_clean(p: &str) -> bool {
    p.starts_with('/')
        && !p.contains('\0')
        && !Path::new(p).components().any(|c| c == Component::ParentDir)
}

/// Adds `e` to `out`, or says which part the runtime cannot apply.
fn add(out: &mut CdiEdits, e: &Edits) -> Result<(), String> {
    if let Some(h) = e.hooks.first() {
        return Err(format!(
            "the spec asks for a {} hook ({}): carapace runs no OCI hooks",
            h.hook_name, h.path
        ));
    }
    if e.intel_rdt.is_some() {
        return Err("intelRdt is not supported".into());
    }
    if !e.net_devices.is_empty() {
        return Err("netDevices are not supported".into());
    }
    out.env.extend(e.env.iter().cloned());
    for n in &e.device_nodes {
        out.devices.push(device_node(n)?);
    }
    for m in &e.mounts {
        out.mounts.push(mount(m)?);
    }
    out.additional_gids
        .extend(e.additional_gids.iter().filter(|g| **g != 0));
    Ok(())
}

/// A device node as the runtime makes it: from the host node (`hostPath`, else `path`), whose
/// type and numbers fill what the spec leaves out, as the CDI library fills them.
fn device_node(n: &DeviceNode) -> Result<rt::Device, String> {
    let host = if n.host_path.is_empty() {
        &n.path
    } else {
        &n.host_path
    };
    if !absolute_clean(&n.path) || !absolute_clean(host) {
        return Err(format!(
            "device node {} (host {host}) must be an absolute path without `..`",
            n.path
        ));
    }
    let meta = std::fs::metadata(host).map_err(|e| {
        format!(
            "device node {}: host node {host}: {e} (carapace makes the node from the host's)",
            n.path
        )
    })?;
    let ft = meta.file_type();
    let host_type = if ft.is_char_device() {
        "c"
    } else if ft.is_block_device() {
        "b"
    } else if ft.is_fifo() {
        "p"
    } else {
        return Err(format!(
            "device node {}: {host} is not a device node",
            n.path
        ));
    };
    if host_type == "p" || n.typ == "p" {
        return Err(format!(
            "device node {}: FIFO nodes are not supported",
            n.path
        ));
    }
    let asked = match n.typ.as_str() {
        "u" => "c",
        t => t,
    };
    if !asked.is_empty() && asked != host_type {
        return Err(format!(
            "device node {}: type {} but host node {host} is of type {host_type}",
            n.path, n.typ
        ));
    }
    let rdev = meta.rdev();
    let (major, minor) = (
        i64::from(nix::sys::stat::major(rdev) as u32),
        i64::from(nix::sys::stat::minor(rdev) as u32),
    );
    if n.major != 0 && (n.major, n.minor) != (major, minor) {
        return Err(format!(
            "device node {}: {}:{} but host node {host} is {major}:{minor} (carapace makes the \
             node from the host's)",
            n.path, n.major, n.minor
        ));
    }
    let differs = |what: &str, asked: u32, host_has: u32| {
        Err(format!(
            "device node {}: {what} {asked:#o} but host node {host} has {host_has:#o}; carapace \
             gives the container node the host node's mode and owner",
            n.path
        ))
    };
    if let Some(m) = n.file_mode
        && m & 0o777 != meta.mode() & 0o777
    {
        return differs("fileMode", m & 0o777, meta.mode() & 0o777);
    }
    if let Some(u) = n.uid
        && u != meta.uid()
    {
        return differs("uid", u, meta.uid());
    }
    if let Some(g) = n.gid
        && g != meta.gid()
    {
        return differs("gid", g, meta.gid());
    }
    let permissions = match n.permissions.as_str() {
        "" => "rwm".to_owned(),
        // No access: the runtime always lets the container make the node itself, which alone
        // opens nothing.
        "none" => "m".to_owned(),
        p => p.to_owned(),
    };
    Ok(rt::Device {
        host_path: PathBuf::from(host),
        container_path: n.path.clone(),
        permissions,
    })
}

/// A CDI mount as one of the runtime's bind mounts. Only binds: the spec's `type` is a dummy for
/// them, and any other filesystem is refused.
fn mount(m: &MountSpec) -> Result<rt::Mount, String> {
    if !absolute_clean(&m.host_path) || !absolute_clean(&m.container_path) {
        return Err(format!(
            "mount {} (host {}) must be an absolute path without `..`",
            m.container_path, m.host_path
        ));
    }
    let bind = matches!(m.typ.as_str(), "" | "bind")
        || m.options.iter().any(|o| o == "bind" || o == "rbind");
    if !bind {
        return Err(format!(
            "mount {}: type {:?} is not supported, only bind mounts",
            m.container_path, m.typ
        ));
    }
    let mut readonly = false;
    let mut propagation = rt::Propagation::Private;
    for o in &m.options {
        match o.as_str() {
            "ro" => readonly = true,
            "rw" => readonly = false,
            "private" | "rprivate" => propagation = rt::Propagation::Private,
            "slave" | "rslave" => propagation = rt::Propagation::HostToContainer,
            "shared" | "rshared" => propagation = rt::Propagation::Bidirectional,
            // Binds are recursive, as the CRI's are; nosuid, nodev and noexec are not applied to
            // binds, as for the CRI's host path mounts (docs/cri.md); atime modes change nothing
            // a container can see.
            "bind" | "rbind" | "nosuid" | "nodev" | "noexec" | "relatime" | "norelatime"
            | "noatime" | "strictatime" => {}
            other => {
                return Err(format!(
                    "mount {}: option {other:?} is not supported",
                    m.container_path
                ));
            }
        }
    }
    if !Path::new(&m.host_path).exists() {
        return Err(format!(
            "mount {}: host path {} does not exist",
            m.container_path, m.host_path
        ));
    }
    Ok(rt::Mount {
        host_path: PathBuf::from(&m.host_path),
        container_path: m.container_path.clone(),
        readonly,
        propagation,
        recursive_readonly: false,
        image: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    /// A registry over two directories, lowest priority first, with `files` written into them:
    /// (directory index, file name, text).
    fn registry(files: &[(usize, &str, &str)]) -> (tempfile::TempDir, CdiRegistry) {
        let tmp = tempfile::tempdir().unwrap();
        let dirs: Vec<PathBuf> = (0..2).map(|i| tmp.path().join(format!("d{i}"))).collect();
        for d in &dirs {
            std::fs::create_dir(d).unwrap();
        }
        for (i, name, text) in files {
            std::fs::write(dirs[*i].join(name), text).unwrap();
        }
        (tmp, CdiRegistry::new(dirs))
    }

    fn invalid_msg(r: Result<CdiEdits, Error>) -> String {
        match r {
            Err(Error::InvalidArgument(m)) => m,
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
    }

    const YAML: &str = r#"
cdiVersion: 0.6.0
kind: example.com/null
annotations:
  note: a test
containerEdits:
  env:
    - SPEC_LEVEL=1
devices:
  - name: one
    containerEdits:
      env: ["DEVICE=one"]
      deviceNodes:
        - path: /dev/cdi-null
          hostPath: /dev/null
          permissions: rw
      mounts:
        - hostPath: /etc
          containerPath: /host-etc
          options: [ro, nosuid, nodev, rbind, rprivate]
      additionalGids: [0, 44]
  - name: two
    containerEdits:
      deviceNodes:
        - path: /dev/null
          type: c
          major: 1
          minor: 3
"#;

    #[test]
    fn yaml_spec_gives_env_nodes_mounts_and_groups_with_spec_edits_once() {
        let (_t, r) = registry(&[(0, "null.yaml", YAML)]);
        let e = r
            .resolve(&names(&["example.com/null=one", "example.com/null=two"]))
            .unwrap();
        assert_eq!(e.env, names(&["SPEC_LEVEL=1", "DEVICE=one"]));
        assert_eq!(
            e.devices,
            vec![
                rt::Device {
                    host_path: "/dev/null".into(),
                    container_path: "/dev/cdi-null".into(),
                    permissions: "rw".into(),
                },
                rt::Device {
                    host_path: "/dev/null".into(),
                    container_path: "/dev/null".into(),
                    permissions: "rwm".into(),
                },
            ]
        );
        assert_eq!(e.mounts.len(), 1);
        let m = &e.mounts[0];
        assert_eq!(
            (m.host_path.as_path(), m.container_path.as_str(), m.readonly),
            (Path::new("/etc"), "/host-etc", true)
        );
        assert_eq!(m.propagation, rt::Propagation::Private);
        assert_eq!(e.additional_gids, vec![44]);
    }

    #[test]
    fn json_spec_of_every_known_version_reads_and_others_are_named() {
        for v in ["0.3.0", "0.5.0", "0.8.0", "1.0.0", "1.1.0"] {
            let json = format!(
                r#"{{"cdiVersion":"{v}","kind":"example.com/j","devices":[{{"name":"a",
                "containerEdits":{{"env":["A=1"],"deviceNodes":null}}}}]}}"#
            );
            let (_t, r) = registry(&[(0, "j.json", &json)]);
            let e = r.resolve(&names(&["example.com/j=a"])).unwrap();
            assert_eq!(e.env, names(&["A=1"]), "{v}");
        }
        let json = r#"{"cdiVersion":"9.0.0","kind":"example.com/j","devices":[{"name":"a"}]}"#;
        let (_t, r) = registry(&[(0, "j.json", json)]);
        let m = invalid_msg(r.resolve(&names(&["example.com/j=a"])));
        assert!(
            m.contains("example.com/j=a") && m.contains("j.json") && m.contains("9.0.0"),
            "{m}"
        );
    }

    #[test]
    fn unknown_device_is_refused_naming_it_and_a_broken_unrelated_file_does_not_matter() {
        let (_t, r) = registry(&[
            (0, "null.yaml", YAML),
            (0, "broken.json", "{ not json"),
            (
                1,
                "other.yaml",
                "cdiVersion: 0.6.0\nkind: other.com/x\ndevices: [{name: a, bogus: 1}]\n",
            ),
        ]);
        // The good file still serves its devices.
        r.resolve(&names(&["example.com/null=two"])).unwrap();
        let m = invalid_msg(r.resolve(&names(&["example.com/null=nope"])));
        assert!(m.contains("\"example.com/null=nope\""), "{m}");
        // A file whose kind could not be made out might have defined it: named.
        assert!(m.contains("broken.json"), "{m}");
        // One of another kind could not have.
        assert!(!m.contains("other.yaml"), "{m}");
        let m = invalid_msg(r.resolve(&names(&["other.com/x=a"])));
        assert!(m.contains("other.yaml") && m.contains("bogus"), "{m}");
    }

    #[test]
    fn later_directory_overrides_and_same_directory_twice_is_a_conflict() {
        let spec = |env: &str| {
            format!(
                r#"{{"cdiVersion":"0.6.0","kind":"example.com/o","devices":[{{"name":"a","containerEdits":{{"env":["{env}"]}}}}]}}"#
            )
        };
        let (_t, r) = registry(&[
            (0, "a.json", &spec("FROM=etc")),
            (1, "a.json", &spec("FROM=run")),
        ]);
        let e = r.resolve(&names(&["example.com/o=a"])).unwrap();
        assert_eq!(e.env, names(&["FROM=run"]));

        let (_t, r) = registry(&[(1, "a.json", &spec("X=1")), (1, "b.json", &spec("X=2"))]);
        let m = invalid_msg(r.resolve(&names(&["example.com/o=a"])));
        assert!(m.contains("a.json") && m.contains("b.json"), "{m}");
    }

    #[test]
    fn hooks_and_what_the_runtime_cannot_make_are_refused_naming_the_device() {
        let spec = |edits: &str| {
            format!(
                r#"{{"cdiVersion":"1.0.0","kind":"example.com/h","devices":[{{"name":"a","containerEdits":{edits}}}]}}"#
            )
        };
        let cases = [
            (
                r#"{"hooks":[{"hookName":"createContainer","path":"/bin/true"}]}"#,
                "hook",
            ),
            (
                r#"{"deviceNodes":[{"path":"/dev/cdi-missing-node"}]}"#,
                "cdi-missing-node",
            ),
            (
                r#"{"deviceNodes":[{"path":"/dev/x","hostPath":"/dev/null","major":1,"minor":5}]}"#,
                "1:3",
            ),
            (
                r#"{"deviceNodes":[{"path":"/dev/x","hostPath":"/dev/null","type":"b"}]}"#,
                "type",
            ),
            (
                r#"{"deviceNodes":[{"path":"/dev/x","hostPath":"/dev/null","uid":4242}]}"#,
                "uid",
            ),
            (
                r#"{"mounts":[{"hostPath":"tmpfs","containerPath":"/t","type":"tmpfs"}]}"#,
                "/t",
            ),
            (
                r#"{"mounts":[{"hostPath":"/etc","containerPath":"/t","options":["idmap","bind"]}]}"#,
                "idmap",
            ),
            (
                r#"{"mounts":[{"hostPath":"/no/such/dir","containerPath":"/t"}]}"#,
                "does not exist",
            ),
            (r#"{"intelRdt":{"closID":"x"}}"#, "intelRdt"),
        ];
        for (edits, why) in cases {
            let (_t, r) = registry(&[(0, "h.json", &spec(edits))]);
            let m = invalid_msg(r.resolve(&names(&["example.com/h=a"])));
            assert!(
                m.contains("\"example.com/h=a\"") && m.contains(why),
                "{edits}: {m}"
            );
        }
        // A node the spec describes as the host has it is fine.
        let ok = r#"{"deviceNodes":[{"path":"/dev/x","hostPath":"/dev/null","type":"c","major":1,"minor":3,"fileMode":438,"uid":0,"gid":0,"permissions":"none"}]}"#;
        let (_t, r) = registry(&[(0, "h.json", &spec(ok))]);
        let e = r.resolve(&names(&["example.com/h=a"])).unwrap();
        assert_eq!(e.devices[0].permissions, "m");
    }

    #[test]
    fn names_come_from_the_field_then_the_annotations_once_each_and_malformed_ones_are_refused() {
        let dev = |n: &str| CdiDevice { name: n.into() };
        let mut ann = HashMap::new();
        ann.insert(
            "cdi.k8s.io/plugin_dev1".to_string(),
            "vendor.com/gpu=1,vendor.com/gpu=0".to_string(),
        );
        ann.insert("other/key".to_string(), "not=a device".to_string());
        let got = requested(&[dev("vendor.com/gpu=0"), dev("vendor.com/gpu=0")], &ann).unwrap();
        assert_eq!(got, names(&["vendor.com/gpu=0", "vendor.com/gpu=1"]));
        for bad in [
            "",
            "gpu0",
            "/dev/null",
            "vendor.com/gpu",
            "vendor.com=x",
            "1v.com/gpu=0",
            "v.com/gpu=-x",
        ] {
            let e = requested(&[dev(bad)], &HashMap::new()).unwrap_err();
            assert!(
                matches!(&e, Error::InvalidArgument(m) if m.contains(&format!("{bad:?}"))),
                "{bad:?}: {e}"
            );
        }
        ann.insert("cdi.k8s.io/x".into(), "bad".into());
        assert!(requested(&[], &ann).is_err());
    }

    #[test]
    fn edits_replace_what_the_container_has_at_the_same_key_or_path() {
        let mut c = rt::ContainerConfig::default();
        c.process.env = vec!["A=old".into(), "B=keep".into()];
        c.devices.push(rt::Device {
            host_path: "/dev/zero".into(),
            container_path: "/dev/x".into(),
            permissions: "r".into(),
        });
        c.process.additional_gids = vec![44];
        CdiEdits {
            env: names(&["A=new", "C=1"]),
            devices: vec![rt::Device {
                host_path: "/dev/null".into(),
                container_path: "/dev/x".into(),
                permissions: "rw".into(),
            }],
            mounts: Vec::new(),
            additional_gids: vec![44, 45],
        }
        .apply(&mut c);
        assert_eq!(c.process.env, vec!["A=new", "B=keep", "C=1"]);
        assert_eq!(c.devices.len(), 1);
        assert_eq!(c.devices[0].host_path, Path::new("/dev/null"));
        assert_eq!(c.process.additional_gids, vec![44, 45]);
    }
}
