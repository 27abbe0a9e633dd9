use std::fs;
use std::os::unix::fs::symlink;

use super::*;

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

fn image(entrypoint: &[&str], cmd: &[&str]) -> ImageInfo {
    ImageInfo {
        id: "sha256:abc".into(),
        name: "docker.io/library/busybox:latest".into(),
        image_ref: "docker.io/library/busybox@sha256:def".into(),
        entrypoint: s(entrypoint),
        cmd: s(cmd),
        ..Default::default()
    }
}

fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: v.into(),
    }
}

/// A layer dir with `files` (path → content) written below it.
fn layer(root: &Path, name: &str, files: &[(&str, &str)]) -> PathBuf {
    let dir = root.join(name);
    fs::create_dir_all(&dir).unwrap();
    for (p, content) in files {
        let p = dir.join(p.trim_start_matches('/'));
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, content).unwrap();
    }
    dir
}

const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
                      # a comment\n\
                      broken line\n\
                      app:x:1000:1000:App:/home/app:/bin/sh\n\
                      nobody:x:65534:65534::/nonexistent:/bin/false\n";
const GROUP: &str = "root:x:0:\n\
                     app:x:1000:\n\
                     staff:x:50:app,other\n\
                     audio:x:29:app\n\
                     video:x:44:other\n";

fn sandbox() -> SandboxInfo {
    SandboxInfo {
        id: "sb1234".into(),
        pod_name: "web".into(),
        pod_namespace: "default".into(),
        pod_uid: "uid-1".into(),
        network: rt::NsMode::Join("/run/carapace/netns/sb1234".into()),
        ipc: rt::NsMode::Join("/run/carapace/ipcns/sb1234".into()),
        uts: rt::NsMode::Join("/run/carapace/utsns/sb1234".into()),
        pid: rt::NsMode::New,
        cgroup_parent: "kubepods/besteffort/poduid-1".into(),
        log_directory: Some("/var/log/pods/default_web_uid-1".into()),
        hostname: "web".into(),
        hostname_path: Some("/run/carapace/sb/hostname".into()),
        hosts_path: Some("/run/carapace/sb/hosts".into()),
        resolv_conf_path: Some("/run/carapace/sb/resolv.conf".into()),
        shm_path: Some("/run/carapace/sb/shm".into()),
    }
}

fn no_target(_: &str) -> Result<PathBuf, Error> {
    Err(Error::NotFound("target".into()))
}

fn sc() -> LinuxContainerSecurityContext {
    LinuxContainerSecurityContext::default()
}

// --- command, env, working dir -------------------------------------------------------------

#[test]
fn command_replaces_entrypoint_and_drops_image_cmd() {
    let img = image(&["/entry"], &["default-arg"]);
    assert_eq!(argv(&s(&["/bin/sh"]), &[], &img).unwrap(), s(&["/bin/sh"]));
    assert_eq!(
        argv(&s(&["/bin/sh"]), &s(&["-c", "true"]), &img).unwrap(),
        s(&["/bin/sh", "-c", "true"])
    );
}

#[test]
fn args_alone_replace_image_cmd() {
    let img = image(&["/entry"], &["default-arg"]);
    assert_eq!(argv(&[], &s(&["x"]), &img).unwrap(), s(&["/entry", "x"]));
    assert_eq!(argv(&[], &[], &img).unwrap(), s(&["/entry", "default-arg"]));
    // No entrypoint: args are the whole argv.
    assert_eq!(
        argv(&[], &s(&["ls"]), &image(&[], &["sh"])).unwrap(),
        s(&["ls"])
    );
}

#[test]
fn no_command_anywhere_is_invalid() {
    let e = argv(&[], &[], &image(&[], &[])).unwrap_err();
    assert!(
        matches!(e, Error::InvalidArgument(ref m) if m.contains("no command")),
        "{e}"
    );
    assert!(argv(&s(&[""]), &[], &image(&[], &[])).is_err());
}

#[test]
fn config_env_wins_over_image_env_in_place() {
    let env = merge_env(
        &s(&["PATH=/bin", "A=image", "B=image"]),
        &[kv("A", "config"), kv("C", "new=with=equals")],
    )
    .unwrap();
    assert_eq!(
        env,
        s(&["PATH=/bin", "A=config", "B=image", "C=new=with=equals"])
    );
    assert!(merge_env(&[], &[kv("", "x")]).is_err());
    assert!(merge_env(&[], &[kv("A=B", "x")]).is_err());
}

#[test]
fn working_dir_is_config_then_image_then_root() {
    assert_eq!(working_dir("/work", "/img").unwrap(), "/work");
    assert_eq!(working_dir("", "/img").unwrap(), "/img");
    assert_eq!(working_dir("", "").unwrap(), "/");
    assert_eq!(working_dir("", "rel").unwrap(), "/rel");
    assert!(working_dir("relative", "").is_err());
}

#[test]
fn stop_signals_parse_by_name_and_number() {
    assert_eq!(parse_signal("SIGQUIT"), Some(3));
    assert_eq!(parse_signal("term"), Some(15));
    assert_eq!(parse_signal("9"), Some(9));
    assert_eq!(parse_signal("SIGRTMIN+3"), Some(37));
    assert_eq!(parse_signal("RTMAX-1"), Some(63));
    assert_eq!(parse_signal("SIGNOPE"), None);
    assert_eq!(parse_signal("0"), None);
    assert_eq!(parse_signal("99"), None);
}

// --- user resolution -------------------------------------------------------------------------

#[test]
fn image_user_by_name_resolves_in_the_images_passwd_and_group() {
    let t = tempfile::tempdir().unwrap();
    // passwd in the lower layer, group in the upper one: the merged view has both.
    let upper = layer(t.path(), "upper", &[("etc/group", GROUP)]);
    let lower = layer(
        t.path(),
        "lower",
        &[("etc/passwd", PASSWD), ("etc/group", "stale:x:1:app\n")],
    );
    let layers = vec![upper, lower];
    let u = resolve_user(&layers, None, "app").unwrap();
    assert_eq!((u.uid, u.gid), (1000, 1000));
    // Primary gid first, then the groups that list `app` as a member.
    assert_eq!(u.additional_gids, vec![1000, 50, 29]);
    assert_eq!(u.home.as_deref(), Some("/home/app"));

    let u = resolve_user(&layers, None, "app:staff").unwrap();
    assert_eq!((u.uid, u.gid), (1000, 50));
    assert_eq!(u.additional_gids, vec![50, 29]);

    let u = resolve_user(&layers, None, "1000:44").unwrap();
    assert_eq!((u.uid, u.gid), (1000, 44));

    let e = resolve_user(&layers, None, "app:nogroup").unwrap_err();
    assert!(
        matches!(e, Error::InvalidArgument(ref m) if m.contains("nogroup")),
        "{e}"
    );
    let e = resolve_user(&layers, None, "ghost").unwrap_err();
    assert!(
        matches!(e, Error::InvalidArgument(ref m) if m.contains("ghost")),
        "{e}"
    );
}

#[test]
fn numeric_users_need_not_exist_and_root_is_the_default() {
    let t = tempfile::tempdir().unwrap();
    let layers = vec![layer(
        t.path(),
        "l",
        &[("etc/passwd", PASSWD), ("etc/group", GROUP)],
    )];
    let u = resolve_user(&layers, None, "4242").unwrap();
    assert_eq!(
        (u.uid, u.gid, u.additional_gids.clone()),
        (4242, 0, vec![0])
    );
    assert_eq!(u.home, None);
    let u = resolve_user(&layers, None, "").unwrap();
    assert_eq!((u.uid, u.gid), (0, 0));
    assert_eq!(u.home.as_deref(), Some("/root"));
    // An image without /etc/passwd at all.
    let empty = vec![layer(t.path(), "empty", &[])];
    let u = resolve_user(&empty, None, "").unwrap();
    assert_eq!((u.uid, u.gid), (0, 0));
}

#[test]
fn run_as_user_and_group_override_the_image_user() {
    let t = tempfile::tempdir().unwrap();
    let layers = vec![layer(
        t.path(),
        "l",
        &[("etc/passwd", PASSWD), ("etc/group", GROUP)],
    )];
    let mut c = sc();
    c.run_as_user = Some(Int64Value { value: 1000 });
    c.supplemental_groups = vec![7, 50];
    let u = resolve_user(&layers, Some(&c), "nobody").unwrap();
    assert_eq!((u.uid, u.gid), (1000, 1000));
    assert_eq!(u.additional_gids, vec![1000, 50, 29, 7]);

    c.run_as_group = Some(Int64Value { value: 3000 });
    let u = resolve_user(&layers, Some(&c), "").unwrap();
    assert_eq!((u.uid, u.gid), (1000, 3000));
    assert_eq!(u.additional_gids[0], 3000);

    let mut c = sc();
    c.run_as_username = "nobody".into();
    let u = resolve_user(&layers, Some(&c), "app").unwrap();
    assert_eq!((u.uid, u.gid), (65534, 65534));

    let mut c = sc();
    c.run_as_user = Some(Int64Value { value: -1 });
    assert!(resolve_user(&layers, Some(&c), "").is_err());

    // A group without any user to go with it is the caller's mistake.
    let mut c = sc();
    c.run_as_group = Some(Int64Value { value: 5 });
    assert!(resolve_user(&layers, Some(&c), "").is_err());
}

#[test]
fn symlinked_passwd_pointing_outside_the_layer_is_not_followed() {
    let t = tempfile::tempdir().unwrap();
    // A host file an image must never read.
    let outside = layer(
        t.path(),
        "host",
        &[("etc/passwd", "evil:x:0:0::/:/bin/sh\n")],
    );
    let l = layer(t.path(), "l", &[]);
    fs::create_dir_all(l.join("etc")).unwrap();
    symlink(outside.join("etc/passwd"), l.join("etc/passwd")).unwrap();
    let layers = vec![l.clone()];
    // The absolute target is resolved inside the image, where it does not exist.
    assert!(find_in_layers(&layers, "/etc/passwd").unwrap().is_none());
    assert!(resolve_user(&layers, None, "evil").is_err());

    // `..` stops at the image's root.
    fs::remove_file(l.join("etc/passwd")).unwrap();
    symlink("../../../../../../host/etc/passwd", l.join("etc/passwd")).unwrap();
    assert!(find_in_layers(&layers, "/etc/passwd").unwrap().is_none());

    // A symlinked /etc directory pointing outside is not followed either.
    let l2 = layer(t.path(), "l2", &[]);
    symlink(outside.join("etc"), l2.join("etc")).unwrap();
    assert!(find_in_layers(&[l2], "/etc/passwd").unwrap().is_none());
}

#[test]
fn symlinks_inside_the_image_resolve_across_layers() {
    let t = tempfile::tempdir().unwrap();
    let upper = layer(t.path(), "upper", &[]);
    fs::create_dir_all(upper.join("etc")).unwrap();
    symlink("/usr/share/passwd", upper.join("etc/passwd")).unwrap();
    let lower = layer(t.path(), "lower", &[("usr/share/passwd", PASSWD)]);
    let layers = vec![upper, lower.clone()];
    let (host, _) = find_in_layers(&layers, "/etc/passwd").unwrap().unwrap();
    assert_eq!(host, lower.join("usr/share/passwd"));
    assert_eq!(resolve_user(&layers, None, "app").unwrap().uid, 1000);
}

#[test]
fn a_lower_layers_symlink_hidden_by_an_upper_directory_is_ignored() {
    let t = tempfile::tempdir().unwrap();
    let outside = layer(t.path(), "host", &[("passwd", "evil:x:0:0::/:/bin/sh\n")]);
    let upper = layer(t.path(), "upper", &[("etc/group", GROUP)]);
    let lower = layer(t.path(), "lower", &[]);
    symlink(&outside, lower.join("etc")).unwrap();
    assert!(
        find_in_layers(&[upper, lower], "/etc/passwd")
            .unwrap()
            .is_none()
    );
}

#[test]
fn symlink_loops_are_refused() {
    let t = tempfile::tempdir().unwrap();
    let l = layer(t.path(), "l", &[]);
    fs::create_dir_all(l.join("etc")).unwrap();
    symlink("/etc/passwd", l.join("etc/passwd")).unwrap();
    assert!(matches!(
        find_in_layers(&[l], "/etc/passwd"),
        Err(Error::InvalidArgument(_))
    ));
}

#[test]
fn oversized_passwd_is_refused() {
    let t = tempfile::tempdir().unwrap();
    let l = layer(t.path(), "l", &[]);
    fs::create_dir_all(l.join("etc")).unwrap();
    let f = fs::File::create(l.join("etc/passwd")).unwrap();
    f.set_len(MAX_ETC_FILE + 1).unwrap();
    assert!(matches!(
        resolve_user(&[l], None, ""),
        Err(Error::InvalidArgument(ref m)) if m.contains("larger")
    ));
}

// --- log path, namespaces, seccomp, resources, mounts ------------------------------------------

#[test]
fn log_path_is_joined_and_escapes_are_rejected() {
    let dir = Path::new("/var/log/pods/ns_p_u");
    assert_eq!(
        log_path(Some(dir), "c/0.log").unwrap(),
        Some(dir.join("c/0.log"))
    );
    assert_eq!(log_path(Some(dir), "").unwrap(), None);
    assert_eq!(log_path(None, "c/0.log").unwrap(), None);
    for bad in ["../x.log", "/etc/passwd", "c/../../x.log", "c/..", "a\0b"] {
        assert!(
            matches!(log_path(Some(dir), bad), Err(Error::InvalidArgument(_))),
            "{bad:?}"
        );
    }
    assert!(log_path(Some(Path::new("relative")), "c/0.log").is_err());
}

#[test]
fn pid_namespace_follows_the_mode() {
    let mut sb = sandbox();
    let opts = |pid: NamespaceMode, target: &str| NamespaceOption {
        pid: pid as i32,
        target_id: target.into(),
        ..Default::default()
    };
    let ns = namespaces(Some(&opts(NamespaceMode::Container, "")), &sb, &no_target).unwrap();
    assert_eq!(ns.pid, rt::NsMode::New);
    assert_eq!(ns.network, sb.network);
    assert_eq!(ns.ipc, sb.ipc);
    assert_eq!(ns.uts, sb.uts);
    let ns = namespaces(Some(&opts(NamespaceMode::Node, "")), &sb, &no_target).unwrap();
    assert_eq!(ns.pid, rt::NsMode::Host);
    // POD on a sandbox without a shared PID namespace.
    assert!(matches!(
        namespaces(Some(&opts(NamespaceMode::Pod, "")), &sb, &no_target),
        Err(Error::FailedPrecondition(_))
    ));
    sb.pid = rt::NsMode::Join("/run/carapace/pidns/sb".into());
    let ns = namespaces(Some(&opts(NamespaceMode::Pod, "")), &sb, &no_target).unwrap();
    assert_eq!(ns.pid, rt::NsMode::Join("/run/carapace/pidns/sb".into()));
    let target = |id: &str| Ok(PathBuf::from(format!("/proc/{}/ns/pid", id.len())));
    let ns = namespaces(Some(&opts(NamespaceMode::Target, "abc")), &sb, &target).unwrap();
    assert_eq!(ns.pid, rt::NsMode::Join("/proc/3/ns/pid".into()));
    assert!(namespaces(Some(&opts(NamespaceMode::Target, "")), &sb, &target).is_err());
    assert!(namespaces(Some(&opts(NamespaceMode::Target, "x")), &sb, &no_target).is_err());
    // No options at all: the CRI default, POD.
    let ns = namespaces(None, &sb, &no_target).unwrap();
    assert_eq!(ns.pid, rt::NsMode::Join("/run/carapace/pidns/sb".into()));
    let mut host = sandbox();
    host.network = rt::NsMode::Host;
    let ns = namespaces(Some(&opts(NamespaceMode::Container, "")), &host, &no_target).unwrap();
    assert_eq!(ns.network, rt::NsMode::Host);
}

#[test]
#[allow(deprecated)]
fn seccomp_profile_selection() {
    use security_profile::ProfileType;
    let with = |t: ProfileType, r: &str| {
        let mut c = sc();
        c.seccomp = Some(SecurityProfile {
            profile_type: t as i32,
            localhost_ref: r.into(),
        });
        c
    };
    assert_eq!(seccomp(None).unwrap(), rt::SeccompProfile::Unconfined);
    assert_eq!(
        seccomp(Some(&sc())).unwrap(),
        rt::SeccompProfile::Unconfined
    );
    assert_eq!(
        seccomp(Some(&with(ProfileType::RuntimeDefault, ""))).unwrap(),
        rt::SeccompProfile::RuntimeDefault
    );
    assert_eq!(
        seccomp(Some(&with(ProfileType::Unconfined, ""))).unwrap(),
        rt::SeccompProfile::Unconfined
    );
    assert_eq!(
        seccomp(Some(&with(
            ProfileType::Localhost,
            "/var/lib/kubelet/seccomp/p.json"
        )))
        .unwrap(),
        rt::SeccompProfile::Localhost("/var/lib/kubelet/seccomp/p.json".into())
    );
    assert!(seccomp(Some(&with(ProfileType::Localhost, "p.json"))).is_err());
    assert!(seccomp(Some(&with(ProfileType::Localhost, "/a/../b.json"))).is_err());
    // The deprecated string field.
    let mut c = sc();
    c.seccomp_profile_path = "runtime/default".into();
    assert_eq!(
        seccomp(Some(&c)).unwrap(),
        rt::SeccompProfile::RuntimeDefault
    );
    c.seccomp_profile_path = "localhost//etc/p.json".into();
    assert_eq!(
        seccomp(Some(&c)).unwrap(),
        rt::SeccompProfile::Localhost("/etc/p.json".into())
    );
    c.seccomp_profile_path = "bogus".into();
    assert!(seccomp(Some(&c)).is_err());
}

#[test]
fn resources_map_and_zero_means_unset() {
    let (r, oom) = resources(&LinuxContainerResources::default()).unwrap();
    assert_eq!(r, rt::Resources::default());
    assert_eq!(oom, 0);
    let cri = LinuxContainerResources {
        cpu_period: 100_000,
        cpu_quota: 50_000,
        cpu_shares: 512,
        memory_limit_in_bytes: 64 << 20,
        oom_score_adj: 999,
        cpuset_cpus: "0-1".into(),
        cpuset_mems: "0".into(),
        hugepage_limits: vec![HugepageLimit {
            page_size: "2MB".into(),
            limit: 4 << 20,
        }],
        unified: HashMap::new(),
        memory_swap_limit_in_bytes: 64 << 20,
    };
    let (r, oom) = resources(&cri).unwrap();
    assert_eq!(oom, 999);
    assert_eq!(r.cpu_shares, Some(512));
    assert_eq!(r.cpu_quota, Some(50_000));
    assert_eq!(r.cpu_period, Some(100_000));
    assert_eq!(r.cpuset_cpus.as_deref(), Some("0-1"));
    assert_eq!(r.cpuset_mems.as_deref(), Some("0"));
    assert_eq!(r.memory_limit, Some(64 << 20));
    assert_eq!(r.memory_swap_limit, Some(64 << 20));
    assert_eq!(r.hugepage_limits.get("2MB"), Some(&(4 << 20)));
    assert_eq!(resources_to_cri(&r, Some(oom)), cri);

    for bad in [
        LinuxContainerResources {
            memory_limit_in_bytes: -1,
            ..Default::default()
        },
        LinuxContainerResources {
            cpu_shares: -2,
            ..Default::default()
        },
        LinuxContainerResources {
            oom_score_adj: 1001,
            ..Default::default()
        },
        LinuxContainerResources {
            cpuset_cpus: "0;rm".into(),
            ..Default::default()
        },
    ] {
        assert!(
            matches!(resources(&bad), Err(Error::InvalidArgument(_))),
            "{bad:?}"
        );
    }
}

#[test]
fn sandbox_files_are_mounted_unless_the_kubelet_mounts_them() {
    let sb = sandbox();
    let cri = vec![
        Mount {
            container_path: "/etc/hosts".into(),
            host_path: "/var/lib/kubelet/pods/u/etc-hosts".into(),
            ..Default::default()
        },
        Mount {
            container_path: "/data".into(),
            host_path: "/srv/data".into(),
            readonly: true,
            selinux_relabel: true,
            propagation: MountPropagation::PropagationHostToContainer as i32,
            ..Default::default()
        },
    ];
    let m = mounts(&cri, &sb, true).unwrap();
    let dests: Vec<&str> = m.iter().map(|m| m.container_path.as_str()).collect();
    assert_eq!(
        dests,
        [
            "/etc/hosts",
            "/data",
            "/etc/hostname",
            "/etc/resolv.conf",
            "/dev/shm"
        ]
    );
    assert_eq!(
        m[0].host_path,
        PathBuf::from("/var/lib/kubelet/pods/u/etc-hosts")
    );
    assert!(m[1].readonly);
    assert_eq!(m[1].propagation, rt::Propagation::HostToContainer);
    // The pod's files follow readonly_rootfs; /dev/shm stays writable.
    assert!(m[2].readonly && m[3].readonly && !m[4].readonly);

    for bad in [
        Mount {
            container_path: "data".into(),
            host_path: "/srv".into(),
            ..Default::default()
        },
        Mount {
            container_path: "/data".into(),
            host_path: "srv".into(),
            ..Default::default()
        },
        Mount {
            container_path: "/data/../etc".into(),
            host_path: "/srv".into(),
            ..Default::default()
        },
        Mount {
            container_path: "/d".into(),
            host_path: "/srv".into(),
            propagation: 9,
            ..Default::default()
        },
        Mount {
            container_path: "/d".into(),
            host_path: "/srv".into(),
            recursive_read_only: true,
            ..Default::default()
        },
    ] {
        assert!(
            matches!(
                mounts(std::slice::from_ref(&bad), &sb, false),
                Err(Error::InvalidArgument(_))
            ),
            "{bad:?}"
        );
    }
}

fn cri_config() -> ContainerConfig {
    ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: "app".into(),
            attempt: 2,
        }),
        image: Some(ImageSpec {
            image: "busybox".into(),
            ..Default::default()
        }),
        args: s(&["-c", "sleep 1"]),
        envs: vec![kv("FOO", "bar")],
        log_path: "app/2.log".into(),
        labels: [("tier".to_owned(), "web".to_owned())].into(),
        annotations: [("a".to_owned(), "b".to_owned())].into(),
        linux: Some(LinuxContainerConfig {
            resources: Some(LinuxContainerResources {
                memory_limit_in_bytes: 1 << 30,
                oom_score_adj: 100,
                ..Default::default()
            }),
            security_context: Some(LinuxContainerSecurityContext {
                run_as_username: "app".into(),
                no_new_privs: true,
                readonly_rootfs: true,
                capabilities: Some(Capability {
                    add_capabilities: s(&["NET_ADMIN"]),
                    drop_capabilities: s(&["MKNOD"]),
                    ..Default::default()
                }),
                masked_paths: s(&["/proc/kcore"]),
                namespace_options: Some(NamespaceOption {
                    pid: NamespaceMode::Container as i32,
                    ..Default::default()
                }),
                seccomp: Some(SecurityProfile {
                    profile_type: security_profile::ProfileType::RuntimeDefault as i32,
                    localhost_ref: String::new(),
                }),
                ..Default::default()
            }),
        }),
        ..Default::default()
    }
}

#[test]
fn full_mapping_of_a_typical_container() {
    let t = tempfile::tempdir().unwrap();
    let l = layer(
        t.path(),
        "l",
        &[("etc/passwd", PASSWD), ("etc/group", GROUP)],
    );
    let mut img = image(&["/bin/sh"], &["-c", "default"]);
    img.env = s(&["PATH=/usr/bin:/bin", "FOO=image"]);
    img.stop_signal = "SIGQUIT".into();
    img.lower_dirs = vec![l.clone()];
    let sb = sandbox();
    let c = cri_config();
    let rc = runtime_config(&MapInput {
        id: "abcd",
        config: &c,
        image: &img,
        sandbox: &sb,
        target_pid_ns: &no_target,
    })
    .unwrap();
    assert_eq!(rc.id, "abcd");
    assert_eq!(rc.process.args, s(&["/bin/sh", "-c", "sleep 1"]));
    assert_eq!(
        rc.process.env,
        s(&["PATH=/usr/bin:/bin", "FOO=bar", "HOME=/home/app"])
    );
    assert_eq!(rc.process.cwd, "/");
    assert_eq!((rc.process.uid, rc.process.gid), (1000, 1000));
    assert_eq!(rc.process.additional_gids, vec![1000, 50, 29]);
    assert_eq!(rc.process.oom_score_adj, Some(100));
    assert!(rc.process.no_new_privileges);
    assert!(rc.rootfs.readonly);
    assert_eq!(rc.rootfs.lower_dirs, vec![l]);
    assert_eq!(rc.namespaces.pid, rt::NsMode::New);
    assert_eq!(rc.security.seccomp, rt::SeccompProfile::RuntimeDefault);
    assert_eq!(rc.security.add_capabilities, s(&["NET_ADMIN"]));
    assert_eq!(rc.security.drop_capabilities, s(&["MKNOD"]));
    assert_eq!(rc.security.masked_paths, Some(s(&["/proc/kcore"])));
    // Empty in the CRI: the runtime's defaults.
    assert_eq!(rc.security.readonly_paths, None);
    assert_eq!(rc.cgroup.parent, sb.cgroup_parent);
    assert_eq!(rc.cgroup.resources.memory_limit, Some(1 << 30));
    assert_eq!(
        rc.log_path,
        Some(PathBuf::from("/var/log/pods/default_web_uid-1/app/2.log"))
    );
    assert_eq!(rc.stop_signal, Some(3));
    assert_eq!(rc.hostname.as_deref(), Some("web"));
    assert_eq!(rc.annotations.get("a").map(String::as_str), Some("b"));
    assert_eq!(
        rc.annotations
            .get("io.kubernetes.cri.sandbox-id")
            .map(String::as_str),
        Some("sb1234")
    );
    assert_eq!(rc.mounts.len(), 4);

    // Privileged: no seccomp whatever was asked.
    let mut p = cri_config();
    if let Some(sc) = p.linux.as_mut().and_then(|l| l.security_context.as_mut()) {
        sc.privileged = true;
    }
    let rc = runtime_config(&MapInput {
        id: "abcd",
        config: &p,
        image: &img,
        sandbox: &sb,
        target_pid_ns: &no_target,
    })
    .unwrap();
    assert!(rc.security.privileged);
    assert_eq!(rc.security.seccomp, rt::SeccompProfile::Unconfined);
}

#[test]
fn mapping_refuses_what_it_cannot_honour() {
    let t = tempfile::tempdir().unwrap();
    let mut img = image(&["/bin/sh"], &[]);
    img.lower_dirs = vec![layer(t.path(), "l", &[("etc/passwd", PASSWD)])];
    let sb = sandbox();
    let map = |c: &ContainerConfig| {
        runtime_config(&MapInput {
            id: "abcd",
            config: c,
            image: &img,
            sandbox: &sb,
            target_pid_ns: &no_target,
        })
    };
    let mut c = cri_config();
    c.log_path = "../../escape.log".into();
    assert!(matches!(map(&c), Err(Error::InvalidArgument(_))));
    let mut c = cri_config();
    c.metadata = None;
    assert!(matches!(map(&c), Err(Error::InvalidArgument(_))));
    let mut c = cri_config();
    c.devices.push(Device::default());
    assert!(matches!(map(&c), Err(Error::InvalidArgument(_))));
    let mut c = cri_config();
    if let Some(sc) = c.linux.as_mut().and_then(|l| l.security_context.as_mut()) {
        sc.apparmor = Some(SecurityProfile {
            profile_type: security_profile::ProfileType::Localhost as i32,
            localhost_ref: "my-profile".into(),
        });
    }
    assert!(matches!(map(&c), Err(Error::InvalidArgument(_))));
    // The runtime's own validation maps to InvalidArgument too (a bad id).
    let c = cri_config();
    let e = runtime_config(&MapInput {
        id: "../x",
        config: &c,
        image: &img,
        sandbox: &sb,
        target_pid_ns: &no_target,
    })
    .unwrap_err();
    assert_eq!(tonic::Status::from(e).code(), tonic::Code::InvalidArgument);
}

#[test]
fn image_info_comes_from_the_image_config() {
    let img = carapace_imageservice::Image {
        id: carapace_imageservice::Digest::of(b"config"),
        repo_tags: vec!["docker.io/library/nginx:1".into()],
        repo_digests: vec!["docker.io/library/nginx@sha256:aa".into()],
        size: 1,
        uid: None,
        username: "www".into(),
        pinned: false,
        manifests: vec![],
        layers: vec![],
        chain_ids: vec![],
    };
    let config = serde_json::json!({"config": {
        "Entrypoint": ["/docker-entrypoint.sh"], "Cmd": ["nginx", "-g", "daemon off;"],
        "Env": ["PATH=/bin"], "WorkingDir": "/srv", "User": "www:www", "StopSignal": "SIGQUIT"
    }});
    let info = ImageInfo::from_image(&img, &config, vec!["/l".into()], "nginx:1");
    assert_eq!(info.id, img.id.to_string());
    assert_eq!(info.name, "docker.io/library/nginx:1");
    assert_eq!(info.image_ref, "docker.io/library/nginx@sha256:aa");
    assert_eq!(info.entrypoint, s(&["/docker-entrypoint.sh"]));
    assert_eq!(info.cmd, s(&["nginx", "-g", "daemon off;"]));
    assert_eq!(info.env, s(&["PATH=/bin"]));
    assert_eq!(info.working_dir, "/srv");
    assert_eq!(info.user, "www:www");
    assert_eq!(info.stop_signal, "SIGQUIT");
    // A config without the `config` object (e.g. `FROM scratch` minimal).
    let bare = ImageInfo::from_image(&img, &serde_json::json!({}), vec![], "nginx:1");
    assert!(bare.entrypoint.is_empty() && bare.cmd.is_empty() && bare.user.is_empty());
}

// --- names, filters, idempotence ----------------------------------------------------------------

#[test]
fn reserved_name_is_containerd_s() {
    let md = ContainerMetadata {
        name: "app".into(),
        attempt: 3,
    };
    assert_eq!(container_name(&md, &sandbox()), "app_web_default_uid-1_3");
}

#[test]
fn ids_are_64_hex_and_differ() {
    let a = new_id().unwrap();
    let b = new_id().unwrap();
    assert_eq!(a.len(), 64);
    assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
    assert_ne!(a, b);
    rt::validate_id(&a).unwrap();
}

fn meta(id: &str, sandbox_id: &str, name: &str, labels: &[(&str, &str)]) -> Meta {
    Meta {
        id: id.into(),
        name: name.into(),
        sandbox_id: sandbox_id.into(),
        metadata_name: name.into(),
        attempt: 0,
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        annotations: BTreeMap::new(),
        image_spec: "busybox".into(),
        image: "docker.io/library/busybox:latest".into(),
        image_ref: "sha256:1".into(),
        image_id: "sha256:1".into(),
        log_path: String::new(),
        mounts: vec![],
        created_at: 1,
    }
}

#[test]
fn list_filters_by_id_prefix_sandbox_and_labels() {
    let m = meta("abc123", "sb999", "n", &[("app", "web"), ("tier", "front")]);
    let f = |id: &str, sb: &str, labels: &[(&str, &str)]| ContainerFilter {
        id: id.into(),
        pod_sandbox_id: sb.into(),
        label_selector: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        state: None,
    };
    assert!(matches(&f("", "", &[]), &m));
    assert!(matches(&f("abc", "", &[]), &m));
    assert!(!matches(&f("abd", "", &[]), &m));
    assert!(matches(&f("", "sb9", &[]), &m));
    assert!(!matches(&f("", "sb1", &[]), &m));
    assert!(matches(&f("", "", &[("app", "web")]), &m));
    assert!(matches(
        &f("", "", &[("app", "web"), ("tier", "front")]),
        &m
    ));
    assert!(!matches(&f("", "", &[("app", "db")]), &m));
    assert!(!matches(&f("", "", &[("missing", "")]), &m));
}

/// An API over an empty runtime in a temp dir: enough for everything that does not run a
/// container (which needs root and is covered in `e2e/`).
fn api(t: &tempfile::TempDir) -> ContainerApi {
    ContainerApi::open(RuntimeOptions {
        root: t.path().join("root"),
        state: t.path().join("state"),
        helper_exe: "/bin/false".into(),
        helper_args: vec![],
        sealed: None,
    })
    .unwrap()
}

fn insert(api: &ContainerApi, m: Meta) {
    let mut t = api.inner.table();
    t.names.insert(m.name.clone(), m.id.clone());
    t.containers.insert(m.id.clone(), m);
}

fn create_request(sandbox_id: &str) -> CreateContainerRequest {
    CreateContainerRequest {
        pod_sandbox_id: sandbox_id.into(),
        config: Some(cri_config()),
        sandbox_config: None,
    }
}

#[tokio::test]
async fn create_retried_with_the_same_name_returns_the_first_container() {
    let t = tempfile::tempdir().unwrap();
    let api = api(&t);
    let sb = sandbox();
    let name = container_name(
        &ContainerMetadata {
            name: "app".into(),
            attempt: 2,
        },
        &sb,
    );
    insert(&api, meta("first", &sb.id, &name, &[]));
    let r = api
        .create(create_request(&sb.id), sb.clone(), image(&["sh"], &[]))
        .await
        .unwrap();
    assert_eq!(r.container_id, "first");

    // The same name in another sandbox is a conflict, not a retry.
    let mut other = sb.clone();
    other.id = "sb-other".into();
    let e = api
        .create(create_request(&other.id), other, image(&["sh"], &[]))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::AlreadyExists(_)), "{e}");
}

#[tokio::test]
async fn a_retry_waits_for_the_create_in_flight() {
    let t = tempfile::tempdir().unwrap();
    let api = api(&t);
    let sb = sandbox();
    let md = ContainerMetadata {
        name: "app".into(),
        attempt: 2,
    };
    let name = container_name(&md, &sb);
    let (tx, rx) = watch::channel(());
    api.inner.table().creating.insert(name.clone(), rx);
    let retry = {
        let api = api.clone();
        let sb = sb.clone();
        tokio::spawn(async move {
            api.create(create_request(&sb.id), sb, image(&["sh"], &[]))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(!retry.is_finished());
    // The first call finishes.
    insert(&api, meta("first", &sb.id, &name, &[]));
    api.inner.table().creating.remove(&name);
    drop(tx);
    assert_eq!(retry.await.unwrap().unwrap().container_id, "first");
}

#[tokio::test]
async fn a_failed_create_frees_the_name() {
    let t = tempfile::tempdir().unwrap();
    let api = api(&t);
    let sb = sandbox();
    // No lower dirs and no command: the mapping refuses it.
    let e = api
        .create(create_request(&sb.id), sb.clone(), image(&[], &[]))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::InvalidArgument(_)), "{e}");
    let tbl = api.inner.table();
    assert!(tbl.creating.is_empty() && tbl.names.is_empty() && tbl.containers.is_empty());
}

#[tokio::test]
async fn stop_and_remove_of_unknown_ids_succeed() {
    let t = tempfile::tempdir().unwrap();
    let api = api(&t);
    api.stop(StopContainerRequest {
        container_id: "nope".into(),
        timeout: 1,
    })
    .await
    .unwrap();
    api.remove(RemoveContainerRequest {
        container_id: "nope".into(),
    })
    .await
    .unwrap();
    let e = api
        .status(ContainerStatusRequest {
            container_id: "nope".into(),
            verbose: false,
        })
        .await
        .unwrap_err();
    assert!(matches!(e, Error::NotFound(_)), "{e}");
}

#[tokio::test]
async fn remove_forgets_a_container_the_runtime_lost() {
    let t = tempfile::tempdir().unwrap();
    let api = api(&t);
    insert(&api, meta("gone", "sb", "gone_n", &[]));
    api.remove(RemoveContainerRequest {
        container_id: "gone".into(),
    })
    .await
    .unwrap();
    assert!(api.inner.table().containers.is_empty());
    assert!(api.inner.table().names.is_empty());
}

#[tokio::test]
async fn list_applies_every_filter_and_unknown_state() {
    let t = tempfile::tempdir().unwrap();
    let api = api(&t);
    insert(&api, meta("aaa1", "sb1", "a", &[("app", "web")]));
    insert(&api, meta("aaa2", "sb2", "b", &[("app", "db")]));
    insert(&api, meta("bbb3", "sb1", "c", &[("app", "web")]));
    let list = |filter: ContainerFilter| {
        let api = api.clone();
        async move {
            let mut ids: Vec<String> = api
                .list(ListContainersRequest {
                    filter: Some(filter),
                })
                .await
                .unwrap()
                .containers
                .into_iter()
                .map(|c| c.id)
                .collect();
            ids.sort();
            ids
        }
    };
    assert_eq!(
        list(ContainerFilter::default()).await,
        ["aaa1", "aaa2", "bbb3"]
    );
    assert_eq!(
        list(ContainerFilter {
            id: "aaa".into(),
            ..Default::default()
        })
        .await,
        ["aaa1", "aaa2"]
    );
    assert_eq!(
        list(ContainerFilter {
            pod_sandbox_id: "sb1".into(),
            label_selector: [("app".to_owned(), "web".to_owned())].into(),
            ..Default::default()
        })
        .await,
        ["aaa1", "bbb3"]
    );
    // The runtime has none of them: their state is unknown, never running.
    let state = |s: ContainerState| ContainerFilter {
        state: Some(ContainerStateValue { state: s as i32 }),
        ..Default::default()
    };
    assert!(
        list(state(ContainerState::ContainerRunning))
            .await
            .is_empty()
    );
    assert_eq!(list(state(ContainerState::ContainerUnknown)).await.len(), 3);
    assert_eq!(api.ids_in_sandbox("sb1").len(), 2);
}

#[test]
fn ids_resolve_by_unique_prefix() {
    let t = tempfile::tempdir().unwrap();
    let api = api(&t);
    insert(&api, meta("abc1", "sb", "a", &[]));
    insert(&api, meta("abc2", "sb", "b", &[]));
    insert(&api, meta("def", "sb", "c", &[]));
    assert_eq!(api.inner.resolve("d").unwrap(), "def");
    assert_eq!(api.inner.resolve("abc1").unwrap(), "abc1");
    assert!(matches!(
        api.inner.resolve("abc"),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(api.inner.resolve("x"), Err(Error::NotFound(_))));
    assert!(matches!(
        api.inner.resolve(""),
        Err(Error::InvalidArgument(_))
    ));
}

#[test]
fn metadata_survives_a_restart() {
    let t = tempfile::tempdir().unwrap();
    let opts = RuntimeOptions {
        root: t.path().join("root"),
        state: t.path().join("state"),
        helper_exe: "/bin/false".into(),
        helper_args: vec![],
        sealed: None,
    };
    // A bundle as the runtime leaves it (its record is opaque here), with our cri.json beside it,
    // and one without cri.json (a create interrupted between the two writes).
    let api1 = ContainerApi::open(opts.clone()).unwrap();
    drop(api1);
    let bundle = opts.state.join("containers/keep");
    fs::create_dir_all(&bundle).unwrap();
    fs::write(bundle.join("container.json"), "{}").unwrap();
    let m = meta("keep", "sb", "keep_name", &[("l", "v")]);
    write_atomic(&bundle.join(META_FILE), &serde_json::to_vec(&m).unwrap()).unwrap();
    let orphan = opts.state.join("containers/orphan");
    fs::create_dir_all(&orphan).unwrap();
    fs::write(orphan.join("container.json"), "{}").unwrap();

    let api2 = ContainerApi::open(opts).unwrap();
    let tbl = api2.inner.table();
    assert_eq!(tbl.containers.get("keep"), Some(&m));
    assert_eq!(tbl.names.get("keep_name").map(String::as_str), Some("keep"));
    assert!(!tbl.containers.contains_key("orphan"));
    assert!(!orphan.exists(), "the half-created container is cleaned up");
}
