//! Which hosts serve a registry, read from a containerd-compatible `certs.d` folder: for registry
//! `R`, `<dir>/R/hosts.toml` (else `<dir>/_default/hosts.toml`) may set `server`, `ca`,
//! `skip_verify`, `capabilities`, `header`, `override_path`, and `[host."<url>"]` mirrors with the
//! same keys. Mirrors are tried in file order, then the server. The folder is read at every pull,
//! as containerd does, so an operator's edit applies without a restart.

use std::path::{Path, PathBuf};

use reqwest::Url;
use serde::Deserialize;

use crate::Error;
use crate::reference::DOCKER_HUB;

/// What a host may be used for, as containerd's `capabilities`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// Fetch manifests by digest and blobs.
    pub pull: bool,
    /// Resolve a tag to a digest.
    pub resolve: bool,
}

/// One host to try for a registry.
#[derive(Debug, Clone, PartialEq)]
pub struct RegistryHost {
    /// The API root, ending in `/v2` unless `override_path` was set.
    pub api: Url,
    pub capabilities: Capabilities,
    pub skip_verify: bool,
    /// PEM files of extra roots to trust for this host.
    pub ca: Vec<PathBuf>,
    /// Extra request headers.
    pub headers: Vec<(String, String)>,
}

impl RegistryHost {
    /// `host:port` for logs and errors.
    pub fn authority(&self) -> String {
        match (self.api.host_str(), self.api.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_owned(),
            _ => self.api.to_string(),
        }
    }
}

/// The `certs.d` folder.
#[derive(Debug, Clone)]
pub struct Hosts {
    dir: PathBuf,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HostOpts {
    capabilities: Option<Vec<String>>,
    skip_verify: Option<bool>,
    ca: Option<StringOrList>,
    /// Client certificates: parsed so a containerd file loads, but not used yet.
    #[allow(dead_code)]
    client: Option<toml::Value>,
    header: Option<toml::Table>,
    override_path: Option<bool>,
    /// containerd reads `dial_timeout` too; accepted, not used.
    #[allow(dead_code)]
    dial_timeout: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum StringOrList {
    One(String),
    Many(Vec<String>),
}

impl Hosts {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The hosts to try for registry `domain` (as written in a reference), mirrors first.
    pub fn for_registry(&self, domain: &str) -> Result<Vec<RegistryHost>, Error> {
        // The domain was validated by `Reference`: no '/' and no '..', so it names one folder.
        for folder in [domain, "_default"] {
            let dir = self.dir.join(folder);
            let file = dir.join("hosts.toml");
            match std::fs::read_to_string(&file) {
                Ok(text) => return parse(&text, &file, &dir, domain),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(format!("reading {}", file.display()), e)),
            }
            // Docker's older layout: `*.crt` files in the registry's folder are CAs for it.
            if folder == domain {
                let cas = legacy_cas(&dir);
                if !cas.is_empty() {
                    let mut h = default_server(domain)?;
                    h.ca = cas;
                    return Ok(vec![h]);
                }
            }
        }
        Ok(vec![default_server(domain)?])
    }
}

fn legacy_cas(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut cas: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "crt"))
        .collect();
    cas.sort();
    cas
}

/// Loopback registries speak plain HTTP by default, as containerd assumes for localhost.
fn is_loopback(domain: &str) -> bool {
    let host = match domain.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) && !h.ends_with(':') => h,
        _ => domain,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn default_server(domain: &str) -> Result<RegistryHost, Error> {
    let url = if domain == DOCKER_HUB {
        "https://registry-1.docker.io".to_owned()
    } else if is_loopback(domain) {
        format!("http://{domain}")
    } else {
        format!("https://{domain}")
    };
    let api = api_url(&url, false).map_err(|reason| Error::InvalidReference {
        reference: domain.to_owned(),
        reason,
    })?;
    Ok(RegistryHost {
        api,
        capabilities: Capabilities {
            pull: true,
            resolve: true,
        },
        skip_verify: false,
        ca: Vec::new(),
        headers: Vec::new(),
    })
}

fn api_url(url: &str, override_path: bool) -> Result<Url, String> {
    let mut u = Url::parse(url).map_err(|e| format!("{url:?}: {e}"))?;
    if !matches!(u.scheme(), "http" | "https") || u.host_str().is_none() {
        return Err(format!(
            "{url:?}: must be an http:// or https:// URL with a host"
        ));
    }
    if !override_path {
        let path = u.path().trim_end_matches('/').to_owned();
        if !path.ends_with("/v2") {
            u.set_path(&format!("{path}/v2"));
        }
    }
    Ok(u)
}

pub(crate) fn parse(
    text: &str,
    file: &Path,
    dir: &Path,
    domain: &str,
) -> Result<Vec<RegistryHost>, Error> {
    let bad = |reason: String| Error::Config {
        path: file.to_owned(),
        reason,
    };
    let mut table: toml::Table =
        toml::from_str(text).map_err(|e| bad(e.to_string().trim_end().to_owned()))?;
    let server = match table.remove("server") {
        None => None,
        Some(toml::Value::String(s)) => Some(s),
        Some(_) => return Err(bad("`server` must be a string".into())),
    };
    let hosts = match table.remove("host") {
        None => toml::Table::new(),
        Some(toml::Value::Table(t)) => t,
        Some(_) => return Err(bad("`host` must be a table of URLs".into())),
    };
    // What is left are the server's own options.
    let server_opts: HostOpts = toml::Value::Table(table)
        .try_into()
        .map_err(|e: toml::de::Error| bad(e.to_string().trim_end().to_owned()))?;
    let mut out = Vec::new();
    for (url, opts) in &hosts {
        let opts: HostOpts = opts.clone().try_into().map_err(|e: toml::de::Error| {
            bad(format!("[host.{url:?}]: {}", e.to_string().trim_end()))
        })?;
        out.push(host(url, &opts, dir).map_err(|r| bad(format!("[host.{url:?}]: {r}")))?);
    }
    let server = match &server {
        Some(s) => host(s, &server_opts, dir).map_err(|r| bad(format!("server: {r}")))?,
        None => {
            let mut h = default_server(domain)?;
            apply_opts(&mut h, &server_opts, dir)?;
            h
        }
    };
    out.push(server);
    Ok(out)
}

fn host(url: &str, o: &HostOpts, dir: &Path) -> Result<RegistryHost, String> {
    let api = api_url(url, o.override_path.unwrap_or(false))?;
    let mut h = RegistryHost {
        api,
        capabilities: Capabilities {
            pull: true,
            resolve: true,
        },
        skip_verify: false,
        ca: Vec::new(),
        headers: Vec::new(),
    };
    apply_opts(&mut h, o, dir).map_err(|e| e.to_string())?;
    Ok(h)
}

fn apply_opts(h: &mut RegistryHost, o: &HostOpts, dir: &Path) -> Result<(), Error> {
    if let Some(caps) = &o.capabilities {
        h.capabilities = Capabilities {
            pull: caps.iter().any(|c| c == "pull"),
            resolve: caps.iter().any(|c| c == "resolve"),
        };
    }
    h.skip_verify = o.skip_verify.unwrap_or(false);
    let cas = match &o.ca {
        None => Vec::new(),
        Some(StringOrList::One(s)) => vec![s.clone()],
        Some(StringOrList::Many(v)) => v.clone(),
    };
    // Relative CA paths are relative to the host's folder, as in containerd.
    h.ca = cas.iter().map(|c| dir.join(c)).collect();
    if let Some(hdr) = &o.header {
        for (k, v) in hdr {
            match v {
                toml::Value::String(s) => h.headers.push((k.clone(), s.clone())),
                toml::Value::Array(a) => {
                    for s in a.iter().filter_map(|x| x.as_str()) {
                        h.headers.push((k.clone(), s.to_owned()));
                    }
                }
                _ => {}
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, folder: &str, text: &str) {
        std::fs::create_dir_all(dir.join(folder)).unwrap();
        std::fs::write(dir.join(folder).join("hosts.toml"), text).unwrap();
    }

    #[test]
    fn defaults_without_a_file() {
        let d = tempfile::tempdir().unwrap();
        let h = Hosts::new(d.path());
        let hub = h.for_registry("docker.io").unwrap();
        assert_eq!(hub.len(), 1);
        assert_eq!(hub[0].api.as_str(), "https://registry-1.docker.io/v2");
        let q = h.for_registry("quay.io").unwrap();
        assert_eq!(q[0].api.as_str(), "https://quay.io/v2");
        let l = h.for_registry("127.0.0.1:5000").unwrap();
        assert_eq!(l[0].api.as_str(), "http://127.0.0.1:5000/v2");
        assert_eq!(l[0].authority(), "127.0.0.1:5000");
        let l = h.for_registry("localhost").unwrap();
        assert_eq!(l[0].api.scheme(), "http");
    }

    #[test]
    fn mirrors_in_file_order_then_the_server() {
        let d = tempfile::tempdir().unwrap();
        write(
            d.path(),
            "docker.io",
            r#"
server = "https://registry-1.docker.io"
skip_verify = false

[host."http://127.0.0.1:5000"]
  capabilities = ["pull", "resolve"]
  skip_verify = true

[host."https://b-mirror.example/v2/prefix"]
  capabilities = ["pull"]
  ca = ["ca.pem", "/abs/ca2.pem"]
  override_path = true
  [host."https://b-mirror.example/v2/prefix".header]
    x-custom = "1"

[host."https://a-mirror.example"]
  ca = "one.pem"
"#,
        );
        let hs = Hosts::new(d.path()).for_registry("docker.io").unwrap();
        let urls: Vec<&str> = hs.iter().map(|h| h.api.as_str()).collect();
        assert_eq!(
            urls,
            [
                "http://127.0.0.1:5000/v2",
                "https://b-mirror.example/v2/prefix",
                "https://a-mirror.example/v2",
                "https://registry-1.docker.io/v2"
            ]
        );
        assert!(hs[0].skip_verify);
        assert!(!hs[1].capabilities.resolve && hs[1].capabilities.pull);
        assert_eq!(
            hs[1].ca,
            [
                d.path().join("docker.io/ca.pem"),
                PathBuf::from("/abs/ca2.pem")
            ]
        );
        assert_eq!(hs[1].headers, [("x-custom".to_owned(), "1".to_owned())]);
        assert_eq!(hs[2].ca, [d.path().join("docker.io/one.pem")]);
    }

    #[test]
    fn default_folder_applies_to_other_registries() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "_default", "[host.\"http://127.0.0.1:1234\"]\n");
        let hs = Hosts::new(d.path()).for_registry("ghcr.io").unwrap();
        assert_eq!(hs[0].api.as_str(), "http://127.0.0.1:1234/v2");
        assert_eq!(hs[1].api.as_str(), "https://ghcr.io/v2");
    }

    #[test]
    fn bad_files_are_named() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "r.io", "server = \"ftp://x\"\n");
        let e = Hosts::new(d.path())
            .for_registry("r.io")
            .unwrap_err()
            .to_string();
        assert!(e.contains("hosts.toml") && e.contains("ftp"), "{e}");
        write(d.path(), "s.io", "sever = \"https://x\"\n");
        let e = Hosts::new(d.path())
            .for_registry("s.io")
            .unwrap_err()
            .to_string();
        assert!(e.contains("sever"), "{e}");
    }
}
