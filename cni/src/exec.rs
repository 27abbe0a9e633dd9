//! Running plugins: finding the binary, the CNI_* environment, the stdin configuration with
//! `prevResult` and `runtimeConfig`, a deadline, and the result or error a plugin prints.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use crate::cache::Cache;
use crate::{Attachment, AttachmentResult, Error, Network, parse_version};

/// How long one plugin invocation may run before it is killed.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// A plugin's stdout beyond this is refused; results are a few KiB.
const MAX_STDOUT: u64 = 1 << 20;
/// How much of a plugin's stderr is kept for an error message.
const MAX_STDERR: u64 = 16 << 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Add,
    Check,
    Del,
    Version,
}

impl Op {
    fn as_str(self) -> &'static str {
        match self {
            Op::Add => "ADD",
            Op::Check => "CHECK",
            Op::Del => "DEL",
            Op::Version => "VERSION",
        }
    }
}

/// The CNI client: where plugins are, where ADD results are cached, and the per-call timeout.
/// Calls block the calling thread for as long as the plugins run.
#[derive(Debug)]
pub struct Cni {
    bin_dirs: Vec<PathBuf>,
    cache: Cache,
    timeout: Duration,
}

impl Cni {
    /// `cache_dir` holds the ADD results (`<cache_dir>/results/<network>-<container>-<ifname>`);
    /// on a node a directory a reboot keeps, so the DEL of a pod the reboot ended still releases
    /// what its ADD took (an IPAM lease).
    pub fn new(bin_dirs: Vec<PathBuf>, cache_dir: &Path) -> Self {
        Self {
            bin_dirs,
            cache: Cache::new(cache_dir),
            timeout: DEFAULT_TIMEOUT,
        }
    }

    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Runs ADD through every plugin of `network` in order, chaining each result into the next
    /// plugin's `prevResult`, and caches the final result. On error nothing is cached: the caller
    /// undoes a partial ADD with [`Cni::del`] and the network as fallback.
    pub fn add(&self, network: &Network, att: &Attachment) -> Result<AttachmentResult, Error> {
        att.validate()?;
        let mut prev: Option<AttachmentResult> = None;
        for plugin in network.plugins() {
            let (name, out) = self.invoke(Op::Add, network, plugin, att, prev.as_ref())?;
            carapace_crashpoint::hit_in("cni: plugin ADD done", &name);
            let value: Value = serde_json::from_slice(&out).map_err(|e| Error::BadResult {
                plugin: name.clone(),
                reason: format!("not JSON: {e}"),
            })?;
            let result = AttachmentResult::from_json(value).map_err(|reason| Error::BadResult {
                plugin: name,
                reason,
            })?;
            prev = Some(result);
        }
        // `Network` guarantees at least one plugin, so there is a result.
        let result = prev.ok_or_else(|| Error::BadResult {
            plugin: network.name().into(),
            reason: "the network has no plugin".into(),
        })?;
        self.cache.store(
            network.name(),
            att,
            network.to_list_json(),
            result.raw().clone(),
        )?;
        carapace_crashpoint::hit("cni: ADD result cached");
        Ok(result)
    }

    /// Runs CHECK with the configuration and result ADD cached. Versions before 0.4.0 have no
    /// CHECK, and a list may disable it: both succeed without running anything.
    pub fn check(&self, network_name: &str, att: &Attachment) -> Result<(), Error> {
        att.validate()?;
        let entry = self
            .cache
            .load(network_name, att)?
            .ok_or_else(|| Error::NotCached {
                network: network_name.into(),
                container_id: att.container_id.clone(),
                what: "CHECK",
            })?;
        let network = cached_network(&entry.config)?;
        if network.disable_check() || parse_version(network.cni_version()) < Some((0, 4, 0)) {
            return Ok(());
        }
        let prev =
            AttachmentResult::from_json(entry.result).map_err(|reason| Error::BadResult {
                plugin: network_name.into(),
                reason,
            })?;
        for plugin in network.plugins() {
            self.invoke(Op::Check, &network, plugin, att, Some(&prev))?;
        }
        Ok(())
    }

    /// Runs DEL through the plugins in reverse order, with the cached ADD result as `prevResult`
    /// (from 0.4.0 on), and then forgets the cache entry. It runs the configuration that ADD ran
    /// when the cache has it, else `fallback` if it is the named network (the undo of a failed
    /// ADD, or an ADD whose cache was lost); with neither there is nothing to delete.
    pub fn del(
        &self,
        network_name: &str,
        att: &Attachment,
        fallback: Option<&Network>,
    ) -> Result<(), Error> {
        att.validate()?;
        // An entry a power loss tore (its rename reached the disk, its data did not) is no
        // reason to refuse the DEL for ever: it goes as a missing one does.
        let entry = self.cache.load(network_name, att).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "unreadable CNI cache entry; DEL runs without it");
            None
        });
        let cached = entry.and_then(|entry| {
            let network = cached_network(&entry.config).ok()?;
            Some((network, AttachmentResult::from_json(entry.result).ok()))
        });
        let (network, prev) = match cached {
            Some(c) => c,
            None => match fallback {
                Some(n) if n.name() == network_name => (n.clone(), None),
                _ => return self.cache.remove(network_name, att),
            },
        };
        let prev = prev.filter(|_| parse_version(network.cni_version()) >= Some((0, 4, 0)));
        for plugin in network.plugins().iter().rev() {
            let (name, _) = self.invoke(Op::Del, &network, plugin, att, prev.as_ref())?;
            carapace_crashpoint::hit_in("cni: plugin DEL done", &name);
        }
        self.cache.remove(network_name, att)?;
        carapace_crashpoint::hit("cni: cache entry removed");
        Ok(())
    }

    /// The cached ADD result of an attachment, if there is one.
    pub fn cached_result(
        &self,
        network_name: &str,
        att: &Attachment,
    ) -> Result<Option<AttachmentResult>, Error> {
        att.validate()?;
        Ok(self
            .cache
            .load(network_name, att)?
            .and_then(|e| AttachmentResult::from_json(e.result).ok()))
    }

    /// What a plugin says of itself (CNI `VERSION`, which needs no container or namespace): where
    /// it was found and the versions it supports, for `carapace check`.
    pub fn plugin_versions(&self, plugin: &str) -> Result<(PathBuf, Vec<String>), Error> {
        if !crate::is_safe_name(plugin) {
            return Err(Error::InvalidConfig {
                path: PathBuf::new(),
                reason: format!("invalid plugin name {plugin:?}"),
            });
        }
        let path = self.find(plugin)?;
        let mut cmd = Command::new(&path);
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("CNI_") {
                cmd.env_remove(k);
            }
        }
        cmd.env("CNI_COMMAND", Op::Version.as_str())
            .current_dir("/")
            .process_group(0)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let stdin = br#"{"cniVersion":"1.0.0"}"#;
        let out = run(&mut cmd, stdin, self.timeout).map_err(|e| match e {
            RunError::Io(source) => Error::Exec {
                plugin: plugin.into(),
                source,
            },
            RunError::Timeout => Error::Timeout {
                plugin: plugin.into(),
                command: Op::Version.as_str(),
                after: self.timeout,
            },
        })?;
        if !out.status.success() {
            return Err(plugin_error(plugin, Op::Version, &out));
        }
        let bad = |reason: String| Error::BadResult {
            plugin: plugin.into(),
            reason,
        };
        let v: Value = serde_json::from_slice(&out.stdout).map_err(|e| bad(e.to_string()))?;
        let versions = v
            .get("supportedVersions")
            .and_then(Value::as_array)
            .ok_or_else(|| bad("no `supportedVersions`".into()))?
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect();
        Ok((path, versions))
    }

    /// Finds a plugin binary: the first executable file of that name in the bin dirs.
    fn find(&self, plugin: &str) -> Result<PathBuf, Error> {
        self.bin_dirs
            .iter()
            .map(|d| d.join(plugin))
            .find(|p| {
                std::fs::metadata(p)
                    .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            })
            .ok_or_else(|| Error::PluginNotFound {
                plugin: plugin.into(),
                dirs: self.bin_dirs.clone(),
            })
    }

    /// Runs one plugin; returns its type and stdout.
    fn invoke(
        &self,
        op: Op,
        network: &Network,
        plugin: &Map<String, Value>,
        att: &Attachment,
        prev: Option<&AttachmentResult>,
    ) -> Result<(String, Vec<u8>), Error> {
        let ty = plugin
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let path = self.find(&ty)?;
        let stdin = plugin_stdin(network, plugin, att, prev);
        let cni_path = std::env::join_paths(&self.bin_dirs).map_err(|e| Error::Exec {
            plugin: ty.clone(),
            source: std::io::Error::other(e),
        })?;
        let mut cmd = Command::new(&path);
        // The daemon's own CNI_* variables, if any, must not leak into a call.
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("CNI_") {
                cmd.env_remove(k);
            }
        }
        cmd.env("CNI_COMMAND", op.as_str())
            .env("CNI_CONTAINERID", &att.container_id)
            .env("CNI_NETNS", &att.netns)
            .env("CNI_IFNAME", &att.ifname)
            .env("CNI_ARGS", att.cni_args())
            .env("CNI_PATH", cni_path)
            .current_dir("/")
            // Its own process group, so a timeout kills whatever the plugin started too.
            .process_group(0)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        tracing::debug!(plugin = %ty, command = op.as_str(), container_id = %att.container_id, "running CNI plugin");
        let out = run(&mut cmd, &stdin, self.timeout).map_err(|e| match e {
            RunError::Io(source) => Error::Exec {
                plugin: ty.clone(),
                source,
            },
            RunError::Timeout => Error::Timeout {
                plugin: ty.clone(),
                command: op.as_str(),
                after: self.timeout,
            },
        })?;
        if !out.stderr.is_empty() {
            tracing::debug!(plugin = %ty, stderr = %String::from_utf8_lossy(&out.stderr), "CNI plugin stderr");
        }
        if out.status.success() {
            return Ok((ty, out.stdout));
        }
        Err(plugin_error(&ty, op, &out))
    }
}

fn cached_network(config: &Value) -> Result<Network, Error> {
    let bytes = serde_json::to_vec(config).unwrap_or_default();
    Network::from_bytes(&bytes, Path::new("cached.conflist"))
}

/// The stdin of one plugin: its configuration with the list's name and version, the previous
/// result, and the capability arguments it declares in `capabilities`, under `runtimeConfig`.
fn plugin_stdin(
    network: &Network,
    plugin: &Map<String, Value>,
    att: &Attachment,
    prev: Option<&AttachmentResult>,
) -> Vec<u8> {
    let mut conf = plugin.clone();
    conf.insert("name".into(), network.name().into());
    conf.insert("cniVersion".into(), network.cni_version().into());
    if let Some(p) = prev {
        conf.insert("prevResult".into(), p.converted_to(network.cni_version()));
    }
    if let Some(Value::Object(declared)) = plugin.get("capabilities") {
        let mut runtime = match conf.remove("runtimeConfig") {
            Some(Value::Object(m)) => m,
            _ => Map::new(),
        };
        for (k, v) in att.capabilities.to_runtime_config() {
            if declared.get(&k) == Some(&Value::Bool(true)) {
                runtime.insert(k, v);
            }
        }
        if !runtime.is_empty() {
            conf.insert("runtimeConfig".into(), Value::Object(runtime));
        }
    }
    serde_json::to_vec(&Value::Object(conf)).unwrap_or_default()
}

fn plugin_error(ty: &str, op: Op, out: &Output) -> Error {
    #[derive(serde::Deserialize)]
    struct Wire {
        code: u32,
        msg: String,
        #[serde(default)]
        details: String,
    }
    match serde_json::from_slice::<Wire>(&out.stdout) {
        Ok(w) => Error::Plugin {
            plugin: ty.into(),
            command: op.as_str(),
            code: w.code,
            msg: w.msg,
            details: w.details,
        },
        Err(_) => {
            let text = if out.stderr.is_empty() {
                &out.stdout
            } else {
                &out.stderr
            };
            Error::PluginFailed {
                plugin: ty.into(),
                command: op.as_str(),
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(text).trim().to_owned(),
            }
        }
    }
}

struct Output {
    status: std::process::ExitStatus,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

enum RunError {
    Io(std::io::Error),
    Timeout,
}

/// Spawns `cmd`, feeds it `stdin`, and collects its output, killing its process group at the
/// deadline.
fn run(cmd: &mut Command, stdin: &[u8], timeout: Duration) -> Result<Output, RunError> {
    let deadline = Instant::now() + timeout;
    let mut child = spawn_retrying(cmd).map_err(RunError::Io)?;
    let mut input = child.stdin.take();
    let data = stdin.to_vec();
    // A plugin that never reads stdin must not block us: feed it from a thread.
    let writer = std::thread::spawn(move || {
        if let Some(mut w) = input.take() {
            let _ = w.write_all(&data);
        }
    });
    let reader = |r: Option<Box<dyn Read + Send>>, limit: u64| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(r) = r {
                let _ = r.take(limit).read_to_end(&mut buf);
            }
            buf
        })
    };
    let stdout = reader(child.stdout.take().map(|s| Box::new(s) as _), MAX_STDOUT);
    let stderr = reader(child.stderr.take().map(|s| Box::new(s) as _), MAX_STDERR);
    // Its exit wakes us (no polling interval added to every plugin call); the deadline bounds the
    // wait.
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    let left = deadline.saturating_duration_since(Instant::now());
    let status = match rx.recv_timeout(left) {
        Ok(Ok(status)) => status,
        Ok(Err(e)) => return Err(RunError::Io(e)),
        Err(_) => {
            let pgid = nix::unistd::Pid::from_raw(pid as i32);
            let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
            // The waiter reaps it; the reader threads end when the killed group's pipes close,
            // not waited for, in case something outside the group holds them.
            let _ = rx.recv_timeout(Duration::from_secs(5));
            return Err(RunError::Timeout);
        }
    };
    let _ = writer.join();
    Ok(Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    })
}

/// `ETXTBSY` is transient: another thread of ours may have forked while a plugin file was open
/// for writing (a plugin being installed, or a test writing one). Retry it briefly.
fn spawn_retrying(cmd: &mut Command) -> std::io::Result<std::process::Child> {
    let mut tries = 0;
    loop {
        match cmd.spawn() {
            Err(e) if e.raw_os_error() == Some(nix::libc::ETXTBSY) && tries < 20 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Capabilities, PortMapping};
    use serde_json::json;

    /// A fake plugin: logs its environment and stdin under `log/<type>.<COMMAND>.{env,stdin}` and
    /// prints `result` on ADD (with `cniVersion` and an interface named after itself).
    fn fake_plugin(bin: &Path, log: &Path, ty: &str, body: &str) {
        let script = format!(
            "#!/bin/sh\nlog={log}/{ty}.$CNI_COMMAND\nenv | grep '^CNI_' | sort > $log.env\ncat > $log.stdin\n{body}\n",
            log = log.display()
        );
        let path = bin.join(ty);
        std::fs::write(&path, script).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    const OK_ADD: &str = r#"if [ "$CNI_COMMAND" = ADD ]; then echo '{"cniVersion":"1.0.0","interfaces":[{"name":"eth0","sandbox":"/ns"}],"ips":[{"address":"10.99.0.7/24","gateway":"10.99.0.1","interface":0}]}'; fi"#;

    struct Fixture {
        _dir: tempfile::TempDir,
        bin: PathBuf,
        log: PathBuf,
        cni: Cni,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        let log = dir.path().join("log");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::create_dir_all(&log).unwrap();
        let cni = Cni::new(
            vec![dir.path().join("nothing-here"), bin.clone()],
            &dir.path().join("cache"),
        );
        Fixture {
            _dir: dir,
            bin,
            log,
            cni,
        }
    }

    fn network(version: &str, plugins: Value) -> Network {
        let list = json!({"cniVersion": version, "name": "podnet", "plugins": plugins});
        Network::from_bytes(list.to_string().as_bytes(), Path::new("10-podnet.conflist")).unwrap()
    }

    fn attachment() -> Attachment {
        Attachment {
            container_id: "sandbox1".into(),
            netns: "/run/carapace/sandboxes/sandbox1/ns/net".into(),
            ifname: "eth0".into(),
            args: vec![
                ("K8S_POD_NAMESPACE".into(), "default".into()),
                ("K8S_POD_NAME".into(), "web".into()),
            ],
            capabilities: Capabilities {
                port_mappings: vec![PortMapping {
                    host_port: 8080,
                    container_port: 80,
                    protocol: "tcp".into(),
                    host_ip: String::new(),
                }],
                ..Default::default()
            },
        }
    }

    fn read_json(p: PathBuf) -> Value {
        serde_json::from_slice(
            &std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())),
        )
        .unwrap()
    }

    #[test]
    fn add_chains_prev_result_and_passes_declared_capabilities_only() {
        let f = fixture();
        fake_plugin(&f.bin, &f.log, "mainplug", OK_ADD);
        // The second plugin answers only when handed a prevResult, as meta plugins pass it on.
        fake_plugin(
            &f.bin,
            &f.log,
            "metaplug",
            r#"grep -q prevResult $log.stdin && echo '{"cniVersion":"0.4.0","ips":[{"version":"4","address":"10.99.0.7/24"}]}'"#,
        );
        let net = network(
            "0.4.0",
            json!([{"type":"mainplug","bridge":"br9"},{"type":"metaplug","capabilities":{"portMappings":true}}]),
        );
        let att = attachment();
        let r = f.cni.add(&net, &att).unwrap();
        assert_eq!(
            r.addresses(),
            ["10.99.0.7".parse::<std::net::IpAddr>().unwrap()]
        );

        let env = std::fs::read_to_string(f.log.join("mainplug.ADD.env")).unwrap();
        for line in [
            "CNI_COMMAND=ADD",
            "CNI_CONTAINERID=sandbox1",
            "CNI_IFNAME=eth0",
            "CNI_NETNS=/run/carapace/sandboxes/sandbox1/ns/net",
            "CNI_ARGS=IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web",
        ] {
            assert!(env.lines().any(|l| l == line), "{line} missing from\n{env}");
        }
        assert!(
            env.contains(&format!("nothing-here:{}\n", f.bin.display())),
            "{env}"
        );
        let first = read_json(f.log.join("mainplug.ADD.stdin"));
        assert_eq!(first["name"], "podnet");
        assert_eq!(first["cniVersion"], "0.4.0");
        assert_eq!(first["bridge"], "br9");
        assert!(first.get("prevResult").is_none());
        assert!(
            first.get("runtimeConfig").is_none(),
            "undeclared capability passed: {first}"
        );
        let second = read_json(f.log.join("metaplug.ADD.stdin"));
        // Converted to the list's version: 0.4.0 wants the per-IP version.
        assert_eq!(second["prevResult"]["cniVersion"], "0.4.0");
        assert_eq!(second["prevResult"]["ips"][0]["version"], "4");
        assert_eq!(second["runtimeConfig"]["portMappings"][0]["hostPort"], 8080);
        assert_eq!(
            f.cni
                .cached_result("podnet", &att)
                .unwrap()
                .unwrap()
                .addresses(),
            r.addresses()
        );
    }

    #[test]
    fn del_runs_in_reverse_with_cached_config_and_prev_result() {
        let f = fixture();
        fake_plugin(
            &f.bin,
            &f.log,
            "a",
            &format!("{OK_ADD}\necho a >> {}/order", f.log.display()),
        );
        fake_plugin(
            &f.bin,
            &f.log,
            "b",
            &format!("{OK_ADD}\necho b >> {}/order", f.log.display()),
        );
        let net = network("1.0.0", json!([{"type":"a"},{"type":"b"}]));
        let att = attachment();
        f.cni.add(&net, &att).unwrap();
        f.cni.check("podnet", &att).unwrap();
        // The configuration changes on disk; DEL still runs what ADD ran.
        let other = network("1.0.0", json!([{"type":"gone"}]));
        f.cni.del("podnet", &att, Some(&other)).unwrap();
        let order = std::fs::read_to_string(f.log.join("order")).unwrap();
        assert_eq!(order, "a\nb\na\nb\nb\na\n", "ADD a,b; CHECK a,b; DEL b,a");
        let del = read_json(f.log.join("a.DEL.stdin"));
        assert_eq!(del["prevResult"]["ips"][0]["address"], "10.99.0.7/24");
        assert!(f.cni.cached_result("podnet", &att).unwrap().is_none());
        // A second DEL has no cache and the fallback is another network: nothing to run.
        f.cni.del("podnet", &att, None).unwrap();
        assert!(matches!(
            f.cni.check("podnet", &att),
            Err(Error::NotCached { .. })
        ));
    }

    #[test]
    fn a_torn_cache_entry_and_no_netns_still_let_del_run_and_go() {
        let f = fixture();
        fake_plugin(&f.bin, &f.log, "a", OK_ADD);
        let net = network("1.0.0", json!([{"type":"a"}]));
        let mut att = attachment();
        f.cni.add(&net, &att).unwrap();
        let entry = f._dir.path().join("cache/results/podnet-sandbox1-eth0");
        std::fs::write(&entry, "").unwrap();
        // After a reboot: the namespace is gone, so no path, as the spec allows for DEL.
        att.netns = PathBuf::new();
        f.cni.del("podnet", &att, Some(&net)).unwrap();
        let env = std::fs::read_to_string(f.log.join("a.DEL.env")).unwrap();
        assert!(env.lines().any(|l| l == "CNI_NETNS="), "{env}");
        assert!(!entry.exists());
        // Torn, and no network of that name to fall back on: nothing to run, the entry goes.
        f.cni.add(&net, &att).unwrap();
        std::fs::write(&entry, "{").unwrap();
        f.cni.del("podnet", &att, None).unwrap();
        assert!(!entry.exists());
    }

    #[test]
    fn plugin_error_keeps_the_plugins_message_and_caches_nothing() {
        let f = fixture();
        fake_plugin(
            &f.bin,
            &f.log,
            "failing",
            r#"echo '{"cniVersion":"1.0.0","code":11,"msg":"failed to allocate for range 0: no IP addresses available","details":"range 10.99.0.0/24"}'; exit 1"#,
        );
        let net = network("1.0.0", json!([{"type":"failing"}]));
        let att = attachment();
        let e = f.cni.add(&net, &att).unwrap_err();
        match &e {
            Error::Plugin {
                code,
                msg,
                details,
                command,
                ..
            } => {
                assert_eq!((*code, *command), (11, "ADD"));
                assert!(msg.contains("no IP addresses available"));
                assert_eq!(details, "range 10.99.0.0/24");
            }
            other => panic!("{other:?}"),
        }
        assert!(f.cni.cached_result("podnet", &att).unwrap().is_none());
        // The undo of a failed ADD: DEL with the network as fallback runs the plugin.
        let e = f.cni.del("podnet", &att, Some(&net)).unwrap_err();
        assert!(e.to_string().contains("DEL"), "{e}");
    }

    #[test]
    fn non_json_failure_missing_plugin_and_bad_result() {
        let f = fixture();
        fake_plugin(&f.bin, &f.log, "crash", "echo boom >&2; exit 3");
        fake_plugin(&f.bin, &f.log, "garbage", "echo not-json");
        let att = attachment();
        let e = f
            .cni
            .add(&network("1.0.0", json!([{"type":"crash"}])), &att)
            .unwrap_err();
        assert!(
            matches!(&e, Error::PluginFailed { stderr, .. } if stderr == "boom"),
            "{e:?}"
        );
        let e = f
            .cni
            .add(&network("1.0.0", json!([{"type":"absent"}])), &att)
            .unwrap_err();
        assert!(matches!(e, Error::PluginNotFound { .. }), "{e:?}");
        let e = f
            .cni
            .add(&network("1.0.0", json!([{"type":"garbage"}])), &att)
            .unwrap_err();
        assert!(matches!(e, Error::BadResult { .. }), "{e:?}");
    }

    #[test]
    fn a_hung_plugin_is_killed_at_the_deadline() {
        let mut f = fixture();
        f.cni.timeout = Duration::from_millis(300);
        fake_plugin(&f.bin, &f.log, "hang", "sleep 30 & sleep 30");
        let started = Instant::now();
        let e = f
            .cni
            .add(&network("1.0.0", json!([{"type":"hang"}])), &attachment())
            .unwrap_err();
        assert!(matches!(e, Error::Timeout { .. }), "{e:?}");
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn check_is_skipped_before_0_4_0_and_when_disabled() {
        let f = fixture();
        fake_plugin(
            &f.bin,
            &f.log,
            "p",
            &format!("{OK_ADD}\n[ $CNI_COMMAND = CHECK ] && exit 1; exit 0"),
        );
        let att = attachment();
        f.cni
            .add(&network("0.3.1", json!([{"type":"p"}])), &att)
            .unwrap();
        f.cni.check("podnet", &att).unwrap();
        let list = json!({"cniVersion":"1.0.0","name":"podnet","disableCheck":true,"plugins":[{"type":"p"}]});
        let net =
            Network::from_bytes(list.to_string().as_bytes(), Path::new("x.conflist")).unwrap();
        f.cni.add(&net, &att).unwrap();
        f.cni.check("podnet", &att).unwrap();
        f.cni
            .add(&network("1.0.0", json!([{"type":"p"}])), &att)
            .unwrap();
        assert!(f.cni.check("podnet", &att).is_err());
    }

    #[test]
    fn version_asks_the_plugin_alone_and_refuses_unsafe_names() {
        let f = fixture();
        fake_plugin(
            &f.bin,
            &f.log,
            "bridge",
            r#"echo '{"cniVersion":"1.0.0","supportedVersions":["0.4.0","1.0.0"]}'"#,
        );
        let (path, versions) = f.cni.plugin_versions("bridge").unwrap();
        assert_eq!(path, f.bin.join("bridge"));
        assert_eq!(versions, ["0.4.0", "1.0.0"]);
        let env = std::fs::read_to_string(f.log.join("bridge.VERSION.env")).unwrap();
        assert_eq!(env, "CNI_COMMAND=VERSION\n");
        assert!(matches!(
            f.cni.plugin_versions("missing"),
            Err(Error::PluginNotFound { .. })
        ));
        assert!(matches!(
            f.cni.plugin_versions("../bin/bridge"),
            Err(Error::InvalidConfig { .. })
        ));
    }
}
