//! The JSON documents of the OCI image spec and Docker's schema2 that a pull reads: index /
//! manifest list, manifest, image config; and the choice of a manifest for this node's platform.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{Digest, Error};

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
const DOCKER_SCHEMA1: &[&str] = &[
    "application/vnd.docker.distribution.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
];

/// What we ask registries for, most wanted first.
pub const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.v2+json";

/// Manifests and configs are small; a larger one is refused before it is parsed.
pub const MAX_MANIFEST_BYTES: u64 = 4 << 20;
pub const MAX_CONFIG_BYTES: u64 = 16 << 20;
/// More layers than overlayfs can stack in one mount (its limit is 500) make no usable image.
const MAX_LAYERS: usize = 500;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    #[serde(default)]
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl Platform {
    /// The platform carapace runs on: linux and this build's architecture in Go's names.
    pub fn host() -> Self {
        let (architecture, variant) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", None),
            "aarch64" => ("arm64", Some("v8")),
            "x86" => ("386", None),
            "arm" => ("arm", Some("v7")),
            "powerpc64" => ("ppc64le", None),
            "s390x" => ("s390x", None),
            "riscv64" => ("riscv64", None),
            other => (other, None),
        };
        Self {
            os: "linux".into(),
            architecture: architecture.into(),
            variant: variant.map(Into::into),
        }
    }

    /// How well an index entry fits this platform: `None` if not at all, higher is better. An
    /// exact variant beats a missing one; arm64 treats no variant as v8, as containerd does.
    fn score(&self, entry: &Platform) -> Option<u8> {
        if entry.os != self.os || entry.architecture != self.architecture {
            return None;
        }
        let normal = |v: Option<&str>| match (self.architecture.as_str(), v) {
            ("arm64", None) => Some("v8".to_owned()),
            ("amd64", Some("v1")) => None,
            (_, v) => v.map(str::to_owned),
        };
        let want = normal(self.variant.as_deref());
        let have = normal(entry.variant.as_deref());
        if want == have {
            Some(2)
        } else if have.is_none() {
            Some(1)
        } else {
            None
        }
    }
}

/// An OCI index or Docker manifest list.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    pub manifests: Vec<Descriptor>,
}

/// An OCI or Docker schema2 image manifest.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

/// The parts of an image config that a runtime needs; the rest is kept as raw JSON for verbose
/// status and for the container layer.
#[derive(Debug, Default, Clone, Deserialize)]
pub struct ImageConfig {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub config: Option<RunConfig>,
    pub rootfs: RootFs,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RunConfig {
    #[serde(default)]
    pub user: Option<String>,
}

#[derive(Debug, Default, Clone, Deserialize)]
pub struct RootFs {
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    pub diff_ids: Vec<Digest>,
}

/// A manifest document as fetched: either an index to choose from or an image manifest.
#[derive(Debug)]
pub enum Document {
    Index(Index),
    Manifest(Manifest),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Probe {
    #[serde(default)]
    schema_version: Option<u32>,
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Option<serde_json::Value>,
    #[serde(default)]
    layers: Option<serde_json::Value>,
}

/// Parses a manifest document; `content_type` is the registry's header, which wins over the
/// document's own `mediaType` field when it is a type we know.
pub fn parse_document(
    bytes: &[u8],
    content_type: Option<&str>,
    what: &str,
) -> Result<Document, Error> {
    let bad = |reason: String| Error::refused(format!("manifest {what}"), reason);
    let probe: Probe = serde_json::from_slice(bytes).map_err(|e| bad(format!("not JSON: {e}")))?;
    let header = content_type
        .map(|c| c.split(';').next().unwrap_or("").trim())
        .filter(|c| !c.is_empty() && *c != "application/json" && *c != "text/plain");
    let media = header.or(probe.media_type.as_deref());
    if probe.schema_version == Some(1) || media.is_some_and(|m| DOCKER_SCHEMA1.contains(&m)) {
        return Err(Error::Unsupported(format!(
            "{what}: Docker schema1 manifests are not supported (deprecated since 2017); \
             push the image again with a current client"
        )));
    }
    let is_index = match media {
        Some(OCI_INDEX | DOCKER_LIST) => true,
        Some(OCI_MANIFEST | DOCKER_MANIFEST) => false,
        Some(other) => {
            return Err(Error::Unsupported(format!(
                "{what}: media type {other:?} is not an image manifest or index"
            )));
        }
        None if probe.manifests.is_some() => true,
        None if probe.layers.is_some() => false,
        None => return Err(bad("neither an index nor a manifest".into())),
    };
    if is_index {
        let i: Index = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
        Ok(Document::Index(i))
    } else {
        let m: Manifest = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
        if !matches!(
            m.config.media_type.as_str(),
            OCI_CONFIG | DOCKER_CONFIG | ""
        ) {
            return Err(Error::Unsupported(format!(
                "{what}: config media type {:?} is not a container image (an artifact?)",
                m.config.media_type
            )));
        }
        if m.config.size > MAX_CONFIG_BYTES {
            return Err(bad(format!(
                "config of {} bytes is too large",
                m.config.size
            )));
        }
        if m.layers.len() > MAX_LAYERS {
            return Err(bad(format!(
                "{} layers, more than {MAX_LAYERS}",
                m.layers.len()
            )));
        }
        Ok(Document::Manifest(m))
    }
}

/// The index entry for `platform`, best variant first; the first of equals, as the index orders
/// them.
pub fn select<'a>(index: &'a Index, platform: &Platform) -> Option<&'a Descriptor> {
    let mut best: Option<(u8, &Descriptor)> = None;
    for d in &index.manifests {
        let Some(p) = &d.platform else { continue };
        if let Some(s) = platform.score(p) {
            if best.is_none_or(|(b, _)| s > b) {
                best = Some((s, d));
            }
        }
    }
    best.map(|(_, d)| d)
}

/// Layer media types we can unpack; others (e.g. foreign/nondistributable layers, encrypted
/// layers) are refused up front rather than failing mid-unpack.
pub fn check_layer_type(media_type: &str) -> Result<(), Error> {
    let ok = media_type.is_empty()
        || matches!(
            media_type,
            "application/vnd.oci.image.layer.v1.tar"
                | "application/vnd.oci.image.layer.v1.tar+gzip"
                | "application/vnd.oci.image.layer.v1.tar+zstd"
                | "application/vnd.docker.image.rootfs.diff.tar.gzip"
                | "application/vnd.docker.image.rootfs.diff.tar"
                | "application/vnd.docker.image.rootfs.diff.tar.zstd"
        );
    if ok {
        Ok(())
    } else {
        Err(Error::Unsupported(format!(
            "layer media type {media_type:?} is not supported"
        )))
    }
}

/// uid and username from a config's `User` ("1000", "1000:1000", "app", "app:grp"), as the CRI
/// reports them: a numeric user gives a uid, a name gives a username.
pub fn user_of(config: &ImageConfig) -> (Option<i64>, String) {
    let user = config
        .config
        .as_ref()
        .and_then(|c| c.user.as_deref())
        .unwrap_or("");
    let name = user.split(':').next().unwrap_or("");
    match name.parse::<i64>() {
        Ok(uid) => (Some(uid), String::new()),
        Err(_) => (None, name.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plat(a: &str, v: Option<&str>) -> Platform {
        Platform {
            os: "linux".into(),
            architecture: a.into(),
            variant: v.map(Into::into),
        }
    }

    fn desc(n: u8, p: Platform) -> Descriptor {
        Descriptor {
            media_type: OCI_MANIFEST.into(),
            digest: Digest::of(&[n]),
            size: 1,
            platform: Some(p),
            annotations: BTreeMap::new(),
        }
    }

    #[test]
    fn platform_selection_is_variant_aware() {
        let idx = Index {
            manifests: vec![
                desc(0, plat("arm", Some("v6"))),
                desc(1, plat("arm64", None)),
                desc(2, plat("arm", Some("v7"))),
                desc(3, plat("amd64", None)),
            ],
        };
        assert_eq!(
            select(&idx, &plat("amd64", None)).unwrap().digest,
            Digest::of(&[3])
        );
        assert_eq!(
            select(&idx, &plat("arm64", Some("v8"))).unwrap().digest,
            Digest::of(&[1])
        );
        assert_eq!(
            select(&idx, &plat("arm", Some("v7"))).unwrap().digest,
            Digest::of(&[2])
        );
        assert!(select(&idx, &plat("s390x", None)).is_none());
        let amd_v3 = Index {
            manifests: vec![desc(4, plat("amd64", Some("v3")))],
        };
        assert!(select(&amd_v3, &plat("amd64", None)).is_none());
    }

    #[test]
    fn schema1_is_refused_clearly() {
        let e = parse_document(br#"{"schemaVersion":1,"name":"x"}"#, None, "x:1").unwrap_err();
        assert!(matches!(e, Error::Unsupported(_)));
        assert!(e.to_string().contains("schema1"), "{e}");
        let e = parse_document(
            b"{}",
            Some("application/vnd.docker.distribution.manifest.v1+prettyjws"),
            "x",
        )
        .unwrap_err();
        assert!(e.to_string().contains("schema1"), "{e}");
    }

    #[test]
    fn documents_by_header_or_shape() {
        let d = Digest::of(b"c");
        let m = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"{DOCKER_CONFIG}","digest":"{d}","size":1}},"layers":[]}}"#
        );
        assert!(matches!(
            parse_document(m.as_bytes(), Some(DOCKER_MANIFEST), "x").unwrap(),
            Document::Manifest(_)
        ));
        assert!(matches!(
            parse_document(m.as_bytes(), None, "x").unwrap(),
            Document::Manifest(_)
        ));
        let art = m.replace(DOCKER_CONFIG, "application/vnd.cncf.helm.config.v1+json");
        assert!(matches!(
            parse_document(art.as_bytes(), None, "x"),
            Err(Error::Unsupported(_))
        ));
        let i = r#"{"schemaVersion":2,"manifests":[]}"#;
        assert!(matches!(
            parse_document(i.as_bytes(), Some("application/json"), "x").unwrap(),
            Document::Index(_)
        ));
    }

    #[test]
    fn users() {
        let c = |u: &str| ImageConfig {
            config: Some(RunConfig {
                user: Some(u.into()),
            }),
            ..Default::default()
        };
        assert_eq!(user_of(&c("1000:50")), (Some(1000), String::new()));
        assert_eq!(user_of(&c("nobody")), (None, "nobody".into()));
        assert_eq!(user_of(&c("")), (None, String::new()));
        assert_eq!(user_of(&ImageConfig::default()), (None, String::new()));
    }
}
