//! The daemon answers the CRI on its socket: version, status, runtime config, the RPCs not built
//! yet, the lock on its root, its socket's life cycle, and refusing a bad configuration.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};

use carapace_e2e::{Daemon, DaemonConfig, cri};
use tonic::Code;

#[tokio::test]
async fn version_status_and_runtime_config_answer_over_the_socket() {
    let d = Daemon::start().await;
    let mut rt = d.runtime().await;

    let v = rt
        .version(cri::VersionRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(v.runtime_name, "carapace");
    assert_eq!(v.runtime_api_version, "v1");
    assert!(!v.runtime_version.is_empty());

    let s = rt
        .status(cri::StatusRequest { verbose: true })
        .await
        .unwrap()
        .into_inner();
    let conds = s.status.unwrap().conditions;
    let runtime = conds.iter().find(|c| c.r#type == "RuntimeReady").unwrap();
    assert!(runtime.status);
    let network = conds.iter().find(|c| c.r#type == "NetworkReady").unwrap();
    // The private CNI conf dir is empty: the node's network is not ready, and says why.
    assert!(!network.status);
    assert!(!network.reason.is_empty() && network.message.contains("net.d"));
    let config: serde_json::Value = serde_json::from_str(&s.info["config"]).unwrap();
    assert_eq!(
        config["root"].as_str().unwrap(),
        d.config.root().display().to_string()
    );

    let rc = rt
        .runtime_config(cri::RuntimeConfigRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        rc.linux.unwrap().cgroup_driver,
        cri::CgroupDriver::Cgroupfs as i32
    );

    rt.update_runtime_config(cri::UpdateRuntimeConfigRequest {
        runtime_config: Some(cri::RuntimeConfig {
            network_config: Some(cri::NetworkConfig {
                pod_cidr: "10.244.1.0/24".into(),
            }),
        }),
    })
    .await
    .unwrap();
    let s = rt
        .status(cri::StatusRequest { verbose: true })
        .await
        .unwrap()
        .into_inner();
    assert!(s.info["podCIDR"].contains("10.244.1.0/24"));

    let socket_mode = std::fs::metadata(d.config.socket()).unwrap();
    assert!(socket_mode.file_type().is_socket());
    assert_eq!(socket_mode.permissions().mode() & 0o777, 0o660);
    eprintln!("socket ready after {:?}", d.ready_after);
    d.stop().await;
}

#[tokio::test]
async fn systemd_cgroup_driver_is_reported() {
    let mut cfg = DaemonConfig::new();
    cfg.set("cgroup.driver", toml::Value::String("systemd".into()));
    let d = Daemon::start_with(cfg).await;
    let rc = d
        .runtime()
        .await
        .runtime_config(cri::RuntimeConfigRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        rc.linux.unwrap().cgroup_driver,
        cri::CgroupDriver::Systemd as i32
    );
    d.stop().await;
}

#[tokio::test]
async fn a_malformed_call_is_refused_naming_what_is_missing() {
    let d = Daemon::start().await;
    let err = d
        .runtime()
        .await
        .checkpoint_container(cri::CheckpointContainerRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("container id is required"),
        "{}",
        err.message()
    );
    // The daemon is unharmed.
    d.runtime()
        .await
        .version(cri::VersionRequest::default())
        .await
        .unwrap();
    d.stop().await;
}

#[tokio::test]
async fn a_second_daemon_on_the_same_root_is_refused() {
    let d = Daemon::start().await;
    // Same root, another socket: the lock on the root, not the socket, is what refuses it.
    let mut second = DaemonConfig::new();
    second.set(
        "root",
        toml::Value::String(d.config.root().display().to_string()),
    );
    let (status, stderr) = second.run_to_exit().await;
    assert!(!status.success());
    assert!(stderr.contains("already running"), "{stderr}");
    assert!(
        stderr.contains(&d.config.root().display().to_string()),
        "{stderr}"
    );
    // The first daemon still answers, on a socket the second did not touch.
    d.runtime()
        .await
        .version(cri::VersionRequest::default())
        .await
        .unwrap();
    d.stop().await;
}

#[tokio::test]
async fn a_stale_socket_is_replaced() {
    let cfg = DaemonConfig::new();
    let socket = cfg.socket();
    std::fs::create_dir_all(socket.parent().unwrap()).unwrap();
    // A socket file with nobody listening, as a daemon killed with SIGKILL leaves it.
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    assert!(socket.exists());
    let d = Daemon::start_with(cfg).await;
    assert!(d.log_text().contains("stale socket"));
    d.stop().await;
}

#[tokio::test]
async fn a_bad_configuration_key_fails_start_naming_the_key() {
    let mut cfg = DaemonConfig::new();
    cfg.set("grpc.adress", toml::Value::String("/tmp/x.sock".into()));
    let (status, stderr) = cfg.run_to_exit().await;
    assert!(!status.success());
    assert!(stderr.contains("adress"), "{stderr}");

    let mut cfg = DaemonConfig::new();
    cfg.set("cgroup.driver", toml::Value::String("cgroupv3".into()));
    let (status, stderr) = cfg.run_to_exit().await;
    assert!(!status.success());
    assert!(
        stderr.contains("cgroupv3") && stderr.contains("driver"),
        "{stderr}"
    );
    // Nothing was created for a daemon that never started.
    assert!(!cfg.socket().exists());
}

#[tokio::test]
async fn sigterm_removes_the_socket_and_exits_zero() {
    let d = Daemon::start().await;
    let socket = d.config.socket();
    assert!(socket.exists());
    let log = d.stop().await; // asserts exit 0 and the socket gone
    assert!(log.contains("SIGTERM"), "{log}");
}

#[tokio::test]
async fn config_default_prints_a_file_that_parses_back() {
    let out = tokio::process::Command::new(carapace_e2e::carapace_bin())
        .args(["config", "default"])
        .output()
        .await
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("root = \"/var/lib/carapace\""));
    // What `make install` puts on a node is what the binary calls its defaults.
    let shipped = include_str!("../../deploy/config.toml");
    assert_eq!(
        text, shipped,
        "deploy/config.toml is out of date: regenerate it with `carapace config default`"
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, &text).unwrap();
    let out = tokio::process::Command::new(carapace_e2e::carapace_bin())
        .args(["config", "check", "--config"])
        .arg(&path)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
