//! The user a container runs as, read out of the image's layers: its `/etc/passwd` and
//! `/etc/group`, found through the overlay's whiteouts and symlinks without leaving the layers.

use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Component, Path, PathBuf};

use super::invalid;
use crate::api::*;
use crate::error::Error;

/// The largest `/etc/passwd` or `/etc/group` read from an image.
const MAX_ETC_FILE: u64 = 4 << 20;
/// Symlinks followed while resolving a path in the image, as the kernel's limit.
const MAX_SYMLINKS: usize = 40;

/// Lexically applies `.` and `..` (which stops at the root) to components below the root.
fn push_components(out: &mut Vec<String>, path: &Path) {
    for c in path.components() {
        match c {
            Component::Normal(n) => out.push(n.to_string_lossy().into_owned()),
            Component::ParentDir => {
                out.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
}

fn is_whiteout(m: &std::fs::Metadata) -> bool {
    m.file_type().is_char_device() && m.rdev() == 0
}

/// Finds `path` in the merged (overlay) view of `layers`, topmost first, as `RESOLVE_IN_ROOT`
/// would: symlinks are resolved against the image's root (absolute targets and `..` never leave
/// it) and the host's filesystem is never consulted: each step is an `lstat` below a directory
/// already known to be a real directory of that layer. Returns the regular file's host path and
/// its metadata; `None` when it does not exist, is deleted (whiteout) or is not a regular file.
fn find_in_layers(
    layers: &[PathBuf],
    path: &str,
) -> Result<Option<(PathBuf, std::fs::Metadata)>, Error> {
    let mut want = Vec::new();
    push_components(&mut want, Path::new(path));
    'resolve: for _ in 0..=MAX_SYMLINKS {
        // The layers in which the prefix resolved so far is a directory, topmost first.
        let mut dirs: Vec<&Path> = layers.iter().map(PathBuf::as_path).collect();
        let mut rel = PathBuf::new();
        for (i, comp) in want.iter().enumerate() {
            rel.push(comp);
            let last = i + 1 == want.len();
            let mut hit: Option<(&Path, std::fs::Metadata)> = None;
            let mut below = Vec::new();
            for l in &dirs {
                match std::fs::symlink_metadata(l.join(&rel)) {
                    Ok(m) => match &hit {
                        None => {
                            let dir = m.is_dir();
                            hit = Some((l, m));
                            if !dir {
                                break;
                            }
                            below.push(*l);
                        }
                        // A lower directory merges; anything else is hidden by the upper dir
                        // and hides what is below it.
                        Some(_) if m.is_dir() => below.push(*l),
                        Some(_) => break,
                    },
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => {
                        return Err(Error::Internal(format!(
                            "reading {} in the image: {e}",
                            rel.display()
                        )));
                    }
                }
            }
            let Some((layer, meta)) = hit else {
                return Ok(None);
            };
            if is_whiteout(&meta) {
                return Ok(None);
            }
            if meta.file_type().is_symlink() {
                let target = std::fs::read_link(layer.join(&rel)).map_err(|e| {
                    Error::Internal(format!("reading link {} in the image: {e}", rel.display()))
                })?;
                let mut next: Vec<String> = if target.is_absolute() {
                    Vec::new()
                } else {
                    want[..i].to_vec()
                };
                push_components(&mut next, &target);
                next.extend(want[i + 1..].iter().cloned());
                want = next;
                continue 'resolve;
            }
            if last {
                return Ok(meta.is_file().then(|| (layer.join(&rel), meta)));
            }
            if !meta.is_dir() {
                return Ok(None);
            }
            dirs = below;
        }
        // The path resolved to the root itself.
        return Ok(None);
    }
    Err(invalid(format!(
        "too many levels of symbolic links resolving {path} in the image"
    )))
}

/// Reads a small text file of the image (e.g. `/etc/passwd`); `None` when it has none.
fn read_image_file(layers: &[PathBuf], path: &str) -> Result<Option<String>, Error> {
    let Some((host, meta)) = find_in_layers(layers, path)? else {
        return Ok(None);
    };
    if meta.len() > MAX_ETC_FILE {
        return Err(invalid(format!(
            "the image's {path} is larger than {MAX_ETC_FILE} bytes"
        )));
    }
    let file = std::fs::File::open(&host)
        .map_err(|e| Error::Internal(format!("opening the image's {path}: {e}")))?;
    // The file opened must be the one checked: a swap to a symlink in between is refused.
    let opened = file
        .metadata()
        .map_err(|e| Error::Internal(format!("reading the image's {path}: {e}")))?;
    if opened.dev() != meta.dev() || opened.ino() != meta.ino() {
        return Err(Error::Internal(format!(
            "the image's {path} changed while read"
        )));
    }
    let mut buf = Vec::new();
    file.take(MAX_ETC_FILE + 1)
        .read_to_end(&mut buf)
        .map_err(|e| Error::Internal(format!("reading the image's {path}: {e}")))?;
    if buf.len() as u64 > MAX_ETC_FILE {
        return Err(invalid(format!(
            "the image's {path} is larger than {MAX_ETC_FILE} bytes"
        )));
    }
    Ok(Some(String::from_utf8_lossy(&buf).into_owned()))
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
    home: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct GroupEntry {
    name: String,
    gid: u32,
    members: Vec<String>,
}

/// The records of a colon-separated file (`/etc/passwd`, `/etc/group`): comment lines skipped,
/// and a record with fewer than `min_fields` fields or no name dropped, as is one `entry` refuses.
fn parse_records<T>(text: &str, min_fields: usize, entry: impl Fn(&[&str]) -> Option<T>) -> Vec<T> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < min_fields || f[0].is_empty() {
                return None;
            }
            entry(&f)
        })
        .collect()
}

fn parse_passwd(text: &str) -> Vec<PasswdEntry> {
    parse_records(text, 4, |f| {
        Some(PasswdEntry {
            name: f[0].to_owned(),
            uid: f[2].trim().parse().ok()?,
            gid: f[3].trim().parse().ok()?,
            home: f.get(5).map(|s| s.to_string()).unwrap_or_default(),
        })
    })
}

fn parse_group(text: &str) -> Vec<GroupEntry> {
    parse_records(text, 3, |f| {
        Some(GroupEntry {
            name: f[0].to_owned(),
            gid: f[2].trim().parse().ok()?,
            members: f
                .get(3)
                .map(|m| {
                    m.split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default(),
        })
    })
}

/// The process's identity inside the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct User {
    pub uid: u32,
    pub gid: u32,
    /// The primary gid first (CVE-2023-25173), then the user's groups, then the configured ones.
    pub additional_gids: Vec<u32>,
    /// From the image's passwd, for `HOME` when the env has none.
    pub home: Option<String>,
}

fn id_from_i64(v: i64, what: &str) -> Result<u32, Error> {
    u32::try_from(v).map_err(|_| invalid(format!("{what} {v} is out of range")))
}

/// Resolves the user the container runs as: `run_as_user`, else `run_as_username`, else the
/// image's USER, looked up in the image's own `/etc/passwd` and `/etc/group`.
pub(super) fn resolve_user(
    layers: &[PathBuf],
    sc: Option<&LinuxContainerSecurityContext>,
    image_user: &str,
) -> Result<User, Error> {
    let passwd = parse_passwd(&read_image_file(layers, "/etc/passwd")?.unwrap_or_default());
    let groups = parse_group(&read_image_file(layers, "/etc/group")?.unwrap_or_default());
    let by_uid = |uid: u32| passwd.iter().find(|p| p.uid == uid);
    let by_name = |name: &str| passwd.iter().find(|p| p.name == name);

    let run_as_user = sc.and_then(|s| s.run_as_user.as_ref()).map(|v| v.value);
    let run_as_username = sc.map(|s| s.run_as_username.as_str()).unwrap_or("");
    let run_as_group = sc.and_then(|s| s.run_as_group.as_ref()).map(|v| v.value);

    // (user part, group part) of the effective user string.
    let (user_part, group_part): (String, Option<String>) = if let Some(uid) = run_as_user {
        (id_from_i64(uid, "run_as_user")?.to_string(), None)
    } else if !run_as_username.is_empty() {
        (run_as_username.to_owned(), None)
    } else {
        if run_as_group.is_some() && image_user.is_empty() {
            return Err(invalid(
                "run_as_group is set but neither run_as_user, run_as_username nor the image names a user",
            ));
        }
        match image_user.split_once(':') {
            Some((u, g)) => (u.to_owned(), Some(g.to_owned())),
            None => (image_user.to_owned(), None),
        }
    };

    let (uid, mut gid, entry) = if user_part.is_empty() {
        (0, 0, by_uid(0))
    } else if let Ok(uid) = user_part.parse::<u32>() {
        // A numeric user need not exist in the image; its group is then 0.
        let e = by_uid(uid);
        (uid, e.map(|e| e.gid).unwrap_or(0), e)
    } else {
        let e = by_name(&user_part).ok_or_else(|| {
            invalid(format!(
                "user {user_part:?} is not in the image's /etc/passwd"
            ))
        })?;
        (e.uid, e.gid, Some(e))
    };
    if let Some(g) = group_part.filter(|g| !g.is_empty()) {
        gid = match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => groups
                .iter()
                .find(|e| e.name == g)
                .map(|e| e.gid)
                .ok_or_else(|| invalid(format!("group {g:?} is not in the image's /etc/group")))?,
        };
    }
    if let Some(g) = run_as_group {
        gid = id_from_i64(g, "run_as_group")?;
    }

    let mut gids = vec![gid];
    let mut add = |g: u32| {
        if !gids.contains(&g) {
            gids.push(g);
        }
    };
    // Strict: the image's /etc/group adds nothing; the primary gid and the pod's groups only.
    let policy = sc.map(|s| s.supplemental_groups_policy).unwrap_or_default();
    let strict = match SupplementalGroupsPolicy::try_from(policy) {
        Ok(p) => p == SupplementalGroupsPolicy::Strict,
        Err(_) => {
            return Err(invalid(format!(
                "unknown supplemental_groups_policy {policy}"
            )));
        }
    };
    let username = entry.map(|e| e.name.as_str()).unwrap_or(user_part.as_str());
    if !username.is_empty() && !strict {
        for g in groups
            .iter()
            .filter(|g| g.members.iter().any(|m| m == username))
        {
            add(g.gid);
        }
    }
    for g in sc.map(|s| s.supplemental_groups.as_slice()).unwrap_or(&[]) {
        add(id_from_i64(*g, "supplemental group")?);
    }
    Ok(User {
        uid,
        gid,
        additional_gids: gids,
        home: entry.map(|e| e.home.clone()).filter(|h| !h.is_empty()),
    })
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::symlink;

    use super::*;
    use crate::container::fixtures::*;

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
    fn strict_policy_leaves_out_the_images_groups() {
        let t = tempfile::tempdir().unwrap();
        let layers = vec![layer(
            t.path(),
            "l",
            &[("etc/passwd", PASSWD), ("etc/group", GROUP)],
        )];
        let mut c = sc();
        c.run_as_user = Some(Int64Value { value: 1000 });
        c.supplemental_groups = vec![1234];
        // Merge, the default: the groups listing `app` in the image come too.
        let u = resolve_user(&layers, Some(&c), "").unwrap();
        assert_eq!(u.additional_gids, vec![1000, 50, 29, 1234]);
        c.supplemental_groups_policy = SupplementalGroupsPolicy::Strict as i32;
        let u = resolve_user(&layers, Some(&c), "").unwrap();
        assert_eq!((u.uid, u.gid), (1000, 1000));
        assert_eq!(u.additional_gids, vec![1000, 1234]);
        // A group named by the image's USER is still looked up: it is the primary one.
        let mut c = sc();
        c.supplemental_groups_policy = SupplementalGroupsPolicy::Strict as i32;
        let u = resolve_user(&layers, Some(&c), "app:staff").unwrap();
        assert_eq!((u.uid, u.gid, u.additional_gids), (1000, 50, vec![50]));
        c.supplemental_groups_policy = 7;
        assert!(matches!(
            resolve_user(&layers, Some(&c), "app"),
            Err(Error::InvalidArgument(_))
        ));
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
}
