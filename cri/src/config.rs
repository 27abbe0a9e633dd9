//! The daemon's configuration: one TOML file, every key optional with a documented default. Keys
//! are named as containerd names its own where it has one, so operators recognise them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Where the configuration is read from when `--config` is not given.
pub const DEFAULT_PATH: &str = "/etc/carapace/config.toml";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: key `{key}`: {reason}")]
    Invalid {
        path: PathBuf,
        key: &'static str,
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Persistent data: images, content store, snapshots, container metadata.
    pub root: PathBuf,
    /// Runtime state that a reboot may lose: sockets, pinned namespaces, sandbox and container state.
    pub state: PathBuf,
    /// Where CDI spec files are read from, lowest priority first: a device defined in a later
    /// directory replaces an earlier one's (containerd's `cdi_spec_dirs`).
    pub cdi_spec_dirs: Vec<PathBuf>,
    pub grpc: Grpc,
    pub metrics: Metrics,
    pub stream: Stream,
    pub cni: Cni,
    pub cgroup: Cgroup,
    pub registry: Registry,
    pub image: Image,
    pub log: Log,
    /// Runtime handlers by name (containerd's `runtimes`): pods whose RunPodSandbox names one
    /// run their containers with that OCI runtime; the built-in executor is the handler `""`.
    pub runtimes: std::collections::BTreeMap<String, RuntimeHandler>,
}

/// One `[runtimes.<name>]`: an OCI runtime run through its command line.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeHandler {
    /// The runtime's binary; a bare name is looked up in the usual bin directories. Default:
    /// `options.BinaryName`, else the handler's name.
    pub runtime_path: Option<PathBuf>,
    /// The runtime's state directory (its `--root`). Default: `options.Root`, else
    /// `<state>/runtimes/<name>`.
    pub runtime_root: Option<PathBuf>,
    /// Global options put before every subcommand (e.g. `["--debug"]`).
    pub runtime_args: Vec<String>,
    /// containerd's runc options table, the keys that apply here.
    pub options: RuntimeHandlerOptions,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeHandlerOptions {
    #[serde(rename = "BinaryName")]
    pub binary_name: Option<PathBuf>,
    #[serde(rename = "Root")]
    pub root: Option<PathBuf>,
}

/// Where a bare runtime name is looked for.
const BIN_DIRS: &[&str] = &[
    "/usr/local/sbin",
    "/usr/local/bin",
    "/usr/sbin",
    "/usr/bin",
    "/sbin",
    "/bin",
];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Grpc {
    /// The unix socket the CRI is served on.
    pub address: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Metrics {
    /// host:port of the Prometheus endpoint (`GET /metrics`).
    pub address: SocketAddr,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Stream {
    /// host:port of the exec/attach/port-forward server; port 0 lets the kernel choose.
    pub address: SocketAddr,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Cni {
    /// Where network configuration lists are read from, in lexical order.
    pub conf_dir: PathBuf,
    /// Where CNI plugins are looked for, in order.
    pub bin_dirs: Vec<PathBuf>,
    /// How long one plugin call (ADD, DEL, CHECK) may run before it is killed: a hung plugin
    /// fails the pod's run instead of holding it (and the kubelet's pod worker) forever.
    pub plugin_timeout_secs: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupDriver {
    Cgroupfs,
    Systemd,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Cgroup {
    /// How the kubelet names cgroups: `cgroupfs` (`/kubepods/...`) or `systemd` (`kubepods-....slice`).
    pub driver: CgroupDriver,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Registry {
    /// containerd-style `certs.d` folder: `<host>/hosts.toml` per registry, `_default/hosts.toml`.
    pub config_path: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Image {
    /// A pull that receives no data for this many seconds fails (containerd's
    /// `image_pull_progress_timeout`).
    pub pull_progress_timeout_secs: u64,
    /// Blobs downloaded at once, over all pulls (containerd's `max_concurrent_downloads`).
    pub max_concurrent_downloads: usize,
    /// A layer with more tar entries than this is refused.
    pub max_layer_entries: u64,
    /// A layer larger than this uncompressed is refused.
    pub max_layer_bytes: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Log {
    pub level: LogLevel,
    pub format: LogFormat,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            root: "/var/lib/carapace".into(),
            state: "/run/carapace".into(),
            cdi_spec_dirs: crate::container::DEFAULT_CDI_SPEC_DIRS
                .iter()
                .map(PathBuf::from)
                .collect(),
            grpc: Grpc::default(),
            metrics: Metrics::default(),
            stream: Stream::default(),
            cni: Cni::default(),
            cgroup: Cgroup::default(),
            registry: Registry::default(),
            image: Image::default(),
            log: Log::default(),
            runtimes: Default::default(),
        }
    }
}

impl Default for Grpc {
    fn default() -> Self {
        Self {
            address: "/run/carapace/carapace.sock".into(),
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            address: SocketAddr::from(([127, 0, 0, 1], 9464)),
        }
    }
}

impl Default for Stream {
    fn default() -> Self {
        Self {
            address: SocketAddr::from(([127, 0, 0, 1], 0)),
        }
    }
}

impl Default for Cni {
    fn default() -> Self {
        Self {
            conf_dir: "/etc/cni/net.d".into(),
            bin_dirs: vec!["/opt/cni/bin".into(), "/usr/lib/cni".into()],
            plugin_timeout_secs: carapace_cni::DEFAULT_TIMEOUT.as_secs(),
        }
    }
}

impl Default for Cgroup {
    fn default() -> Self {
        Self {
            driver: CgroupDriver::Cgroupfs,
        }
    }
}

impl Default for Registry {
    fn default() -> Self {
        Self {
            config_path: "/etc/carapace/certs.d".into(),
        }
    }
}

impl Default for Image {
    fn default() -> Self {
        Self {
            pull_progress_timeout_secs: 300,
            max_concurrent_downloads: 3,
            max_layer_entries: 1_000_000,
            max_layer_bytes: 64 << 30,
        }
    }
}

impl Default for Log {
    fn default() -> Self {
        Self {
            level: LogLevel::Info,
            format: LogFormat::Text,
        }
    }
}

impl Config {
    /// Reads `path`. A missing file at the default path means defaults; a missing file that the
    /// operator named is an error, since a typo there would otherwise go unnoticed.
    pub fn load(path: &Path, explicit: bool) -> Result<Self, ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {
                return Ok(Self::default());
            }
            Err(source) => {
                return Err(ConfigError::Read {
                    path: path.into(),
                    source,
                });
            }
        };
        Self::parse(&text, path)
    }

    /// Parses and validates a configuration; `path` only names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let cfg: Self = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.into(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        cfg.validate(path)?;
        Ok(cfg)
    }

    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |key, reason: String| ConfigError::Invalid {
            path: path.into(),
            key,
            reason,
        };
        let absolute = [
            ("root", &self.root),
            ("state", &self.state),
            ("grpc.address", &self.grpc.address),
            ("cni.conf_dir", &self.cni.conf_dir),
            ("registry.config_path", &self.registry.config_path),
        ];
        for (key, p) in absolute {
            if !p.is_absolute() {
                return Err(invalid(
                    key,
                    format!("must be an absolute path, not {:?}", p.display()),
                ));
            }
        }
        if let Some(p) = self.cdi_spec_dirs.iter().find(|p| !p.is_absolute()) {
            return Err(invalid(
                "cdi_spec_dirs",
                format!("must hold absolute paths, not {:?}", p.display()),
            ));
        }
        if let Some(p) = self.cni.bin_dirs.iter().find(|p| !p.is_absolute()) {
            return Err(invalid(
                "cni.bin_dirs",
                format!("must hold absolute paths, not {:?}", p.display()),
            ));
        }
        if self.root == self.state {
            return Err(invalid(
                "state",
                "must differ from `root`: state is wiped by a reboot, root is not".into(),
            ));
        }
        if self.image.pull_progress_timeout_secs == 0 {
            return Err(invalid(
                "image.pull_progress_timeout_secs",
                "must be at least 1".into(),
            ));
        }
        if self.cni.plugin_timeout_secs == 0 {
            return Err(invalid(
                "cni.plugin_timeout_secs",
                "must be at least 1".into(),
            ));
        }
        if self.image.max_concurrent_downloads == 0 {
            return Err(invalid(
                "image.max_concurrent_downloads",
                "must be at least 1".into(),
            ));
        }
        for name in self.runtimes.keys() {
            let bad = name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
            if bad {
                return Err(invalid(
                    "runtimes",
                    format!("handler name {name:?}: letters, digits, '-', '_' and '.' only"),
                ));
            }
            self.oci_runtime(name)
                .map_err(|reason| invalid("runtimes", format!("handler {name:?}: {reason}")))?;
        }
        // sun_path is 108 bytes with its NUL; a longer path fails at bind with a vague EINVAL.
        if self.grpc.address.as_os_str().len() > 107 {
            return Err(invalid(
                "grpc.address",
                "a unix socket path may be at most 107 bytes".into(),
            ));
        }
        Ok(())
    }

    /// The OCI runtime of the handler `name` (configured, else an error saying what is wrong).
    pub fn oci_runtime(&self, name: &str) -> Result<carapace_runtime::config::OciRuntime, String> {
        let h = self
            .runtimes
            .get(name)
            .ok_or_else(|| format!("no runtime handler {name:?} is configured"))?;
        let path = h
            .runtime_path
            .clone()
            .or_else(|| h.options.binary_name.clone())
            .unwrap_or_else(|| PathBuf::from(name));
        let binary = if path.is_absolute() {
            path
        } else if path.components().count() == 1 {
            BIN_DIRS
                .iter()
                .map(|d| Path::new(d).join(&path))
                .find(|p| p.is_file())
                .ok_or_else(|| format!("runtime {:?} not found in {BIN_DIRS:?}", path.display()))?
        } else {
            return Err(format!(
                "runtime_path must be absolute or a bare name, not {:?}",
                path.display()
            ));
        };
        if !binary.is_file() {
            return Err(format!("runtime {} does not exist", binary.display()));
        }
        let root = h
            .runtime_root
            .clone()
            .or_else(|| h.options.root.clone())
            .unwrap_or_else(|| self.state.join("runtimes").join(name));
        if !root.is_absolute() {
            return Err(format!(
                "runtime_root must be absolute, not {:?}",
                root.display()
            ));
        }
        Ok(carapace_runtime::config::OciRuntime {
            handler: name.to_owned(),
            binary,
            root,
            args: h.runtime_args.clone(),
        })
    }

    /// The defaults as a commented TOML file, for `carapace config default`.
    pub fn default_toml() -> &'static str {
        DEFAULT_TOML
    }
}

const DEFAULT_TOML: &str = r#"# carapace configuration. Every key is optional; the values below are the defaults.
# Keys are named as containerd names its own where it has one.

# Persistent data: images, content store, snapshots, container metadata.
root = "/var/lib/carapace"
# Runtime state that a reboot may lose: pinned namespaces, sandbox and container state.
state = "/run/carapace"
# CDI spec files (.json and .yaml) for the devices a container asks for by name (vendor.com/class=name),
# read at each create that asks for one; a device in a later directory replaces an earlier one's.
cdi_spec_dirs = ["/etc/cdi", "/var/run/cdi"]

[grpc]
# The unix socket the CRI is served on (kubelet: --container-runtime-endpoint=unix://<address>).
address = "/run/carapace/carapace.sock"

[metrics]
# host:port of the Prometheus endpoint, GET /metrics.
address = "127.0.0.1:9464"

[stream]
# host:port of the exec/attach/port-forward server; port 0 lets the kernel choose a free port.
address = "127.0.0.1:0"

[cni]
# Network configuration lists (.conflist, .conf, .json), read in lexical order; the first is the pod network.
conf_dir = "/etc/cni/net.d"
# Where CNI plugins are looked for, in order.
bin_dirs = ["/opt/cni/bin", "/usr/lib/cni"]
# A plugin call (ADD, DEL, CHECK) running longer than this many seconds is killed, with what it started;
# the pod's run then fails with DEADLINE_EXCEEDED and is undone.
plugin_timeout_secs = 60

[cgroup]
# "cgroupfs" or "systemd": must match the kubelet's cgroupDriver.
driver = "cgroupfs"

[registry]
# containerd-style certs.d: <host>/hosts.toml per registry (mirrors, CA, skip_verify), _default/hosts.toml for the rest.
config_path = "/etc/carapace/certs.d"

[image]
# A pull that receives no data for this many seconds fails (containerd: image_pull_progress_timeout).
pull_progress_timeout_secs = 300
# Blobs downloaded at once, over all pulls.
max_concurrent_downloads = 3
# Layers with more tar entries, or more uncompressed bytes (64 GiB), are refused.
max_layer_entries = 1000000
max_layer_bytes = 68719476736

# Runtime handlers (RuntimeClass): none by default; the built-in executor is the handler "".
# [runtimes.runc]
# runtime_path = "runc"              # or options.BinaryName; a bare name is looked up
# runtime_root = "/run/carapace/runtimes/runc"   # or options.Root; the runtime's --root
# runtime_args = []                  # global options before every subcommand

[log]
# error, warn, info, debug or trace.
level = "info"
# "text" or "json".
format = "text"
"#;

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Config, ConfigError> {
        Config::parse(s, Path::new("test.toml"))
    }

    #[test]
    fn default_toml_parses_back_to_the_defaults() {
        assert_eq!(parse(Config::default_toml()).unwrap(), Config::default());
    }

    #[test]
    fn runtime_handlers_take_containerds_keys_and_defaults() {
        let sh = "/bin/sh";
        let c = parse(&format!(
            "state = \"/st\"\n[runtimes.a]\nruntime_path = \"{sh}\"\nruntime_args = [\"--debug\"]\n\
             [runtimes.b.options]\nBinaryName = \"sh\"\nRoot = \"/r\"\n"
        ))
        .unwrap();
        let a = c.oci_runtime("a").unwrap();
        assert_eq!(a.binary, Path::new(sh));
        assert_eq!(a.root, Path::new("/st/runtimes/a"));
        assert_eq!(a.args, ["--debug"]);
        let b = c.oci_runtime("b").unwrap();
        assert!(b.binary.is_absolute() && b.binary.ends_with("sh"), "{b:?}");
        assert_eq!(b.root, Path::new("/r"));
        assert!(c.oci_runtime("c").unwrap_err().contains("\"c\""));
    }

    #[test]
    fn runtime_handlers_without_a_binary_or_with_a_bad_name_are_refused() {
        let e = parse("[runtimes.nosuch-runtime-xyz]\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("runtimes") && e.contains("nosuch-runtime-xyz"),
            "{e}"
        );
        let e = parse("[runtimes.r]\nruntime_path = \"/no/such/runc\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("/no/such/runc"), "{e}");
        let e = parse("[runtimes.\"a/b\"]\nruntime_path = \"/bin/sh\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("a/b"), "{e}");
        let e = parse("[runtimes.r]\nruntime_path = \"/bin/sh\"\nruntime_root = \"rel\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("runtime_root"), "{e}");
    }

    #[test]
    fn empty_file_is_the_defaults() {
        assert_eq!(parse("").unwrap(), Config::default());
    }

    #[test]
    fn keys_override_defaults() {
        let c = parse(
            "root = \"/x\"\n[cgroup]\ndriver = \"systemd\"\n[metrics]\naddress = \"0.0.0.0:1\"\n",
        )
        .unwrap();
        assert_eq!(c.root, PathBuf::from("/x"));
        assert_eq!(c.cgroup.driver, CgroupDriver::Systemd);
        assert_eq!(c.metrics.address.port(), 1);
        assert_eq!(c.state, PathBuf::from("/run/carapace"));
    }

    #[test]
    fn unknown_key_is_named() {
        let e = parse("[grpc]\nadress = \"/x.sock\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("adress"), "{e}");
    }

    #[test]
    fn bad_value_is_named_with_reason() {
        let e = parse("[cgroup]\ndriver = \"cgroupv3\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("driver") && e.contains("cgroupv3"), "{e}");
        let e = parse("[metrics]\naddress = \"localhost\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("address"), "{e}");
        let e = parse("[image]\nmax_concurrent_downloads = 0\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("max_concurrent_downloads"), "{e}");
        let e = parse("[cni]\nplugin_timeout_secs = 0\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("plugin_timeout_secs"), "{e}");
        let e = parse("root = \"relative\"\n").unwrap_err().to_string();
        assert!(e.contains("`root`") && e.contains("absolute"), "{e}");
        let e = parse("cdi_spec_dirs = [\"cdi\"]\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("cdi_spec_dirs") && e.contains("absolute"), "{e}");
    }

    #[test]
    fn missing_default_file_is_defaults_but_missing_named_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("none.toml");
        assert_eq!(Config::load(&p, false).unwrap(), Config::default());
        assert!(Config::load(&p, true).is_err());
    }
}
