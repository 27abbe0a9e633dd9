use prost::Message;
use tonic::{Request, Response, Status};

use crate::redact::{Stripped, strip_debug_redact};
use crate::v1::image_service_client::ImageServiceClient;
use crate::v1::image_service_server::{ImageService, ImageServiceServer};
use crate::v1::runtime_service_server::RuntimeService;
use crate::v1::*;

fn round_trip<M: Message + Default + PartialEq + std::fmt::Debug>(m: &M) {
    let wire = m.encode_to_vec();
    assert!(
        !wire.is_empty(),
        "{m:?} encoded to nothing: every field was left at its default"
    );
    assert_eq!(&M::decode(wire.as_slice()).unwrap(), m);
}

#[test]
fn every_field_kind_round_trips() {
    // string, bytes (non-UTF-8, which v0.36.2+ allows in an env value), bool, int64, enum,
    // repeated message, nested message, map.
    round_trip(&ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: "app".into(),
            attempt: 3,
        }),
        envs: vec![KeyValue {
            key: "RAW".into(),
            value: vec![0xff, 0x00, b'x'],
        }],
        tty: true,
        stop_signal: Signal::Sigusr1 as i32,
        mounts: vec![Mount {
            container_path: "/data".into(),
            image: Some(ImageSpec {
                image: "busybox".into(),
                image_ref: "sha256:ab".into(),
                ..Default::default()
            }),
            image_sub_path: "etc".into(),
            readonly: true,
            propagation: MountPropagation::PropagationPrivate as i32,
            ..Default::default()
        }],
        labels: [("k".to_owned(), "v".to_owned())].into(),
        linux: Some(LinuxContainerConfig {
            resources: Some(LinuxContainerResources {
                memory_limit_in_bytes: 1 << 30,
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    });
    // double, uint64, and the wrapper messages the stats use.
    let psi = PsiStats {
        full: Some(PsiData {
            total: u64::MAX,
            avg10: 0.25,
            avg60: 1.5,
            avg300: 100.0,
        }),
        some: Some(PsiData {
            total: 7,
            ..Default::default()
        }),
    };
    round_trip(&ContainerStats {
        cpu: Some(CpuUsage {
            timestamp: 1,
            psi: Some(psi),
            ..Default::default()
        }),
        memory: Some(MemoryUsage {
            working_set_bytes: Some(UInt64Value { value: 4096 }),
            psi: Some(psi),
            ..Default::default()
        }),
        io: Some(IoUsage {
            timestamp: 2,
            psi: Some(psi),
        }),
        ..Default::default()
    });
    round_trip(&UpdatePodSandboxResourcesRequest {
        pod_sandbox_id: "p".into(),
        overhead: Some(LinuxContainerResources {
            cpu_shares: 2,
            ..Default::default()
        }),
        resources: Some(LinuxContainerResources {
            cpu_quota: 50_000,
            cpu_period: 100_000,
            ..Default::default()
        }),
    });
    round_trip(&ContainerStatus {
        stop_signal: Signal::Sigrtmax as i32,
        ..Default::default()
    });
    round_trip(&RuntimeFeatures {
        user_namespaces_host_network: true,
        ..Default::default()
    });
    round_trip(&StreamPodSandboxesResponse {
        pod_sandboxes: vec![PodSandbox {
            id: "a".into(),
            ..Default::default()
        }],
    });
}

/// A kubelet on cri-api v0.32..v0.36.1 sends an env value as `string`; on the wire that is the
/// same length-delimited field as `bytes`, so it still decodes.
#[test]
fn env_value_sent_as_string_decodes_as_bytes() {
    // KeyValue{key: "A", value: "é"} as the string-typed message encodes it.
    let wire = [0x0a, 1, b'A', 0x12, 2, 0xc3, 0xa9];
    let kv = KeyValue::decode(&wire[..]).unwrap();
    assert_eq!(kv.value, "é".as_bytes());
    assert_eq!(kv.encode_to_vec(), wire);
}

#[test]
fn auth_config_debug_hides_credentials() {
    let auth = AuthConfig {
        username: "user".into(),
        password: "hunter2".into(),
        auth: "dXNlcjpodW50ZXIy".into(),
        server_address: "registry.local".into(),
        identity_token: "id-token".into(),
        registry_token: "reg-token".into(),
    };
    let shown = format!(
        "{:?}",
        PullImageRequest {
            auth: Some(auth),
            ..Default::default()
        }
    );
    for secret in ["hunter2", "dXNlcjpodW50ZXIy", "id-token", "reg-token"] {
        assert!(!shown.contains(secret), "{secret} in {shown}");
    }
    assert!(
        shown.contains("user") && shown.contains("registry.local"),
        "{shown}"
    );
    assert!(format!("{:?}", AuthConfig::default()).contains(r#"password: """#));
}

/// The RPCs cri-api v0.33..v0.36 added to `RuntimeService`, as the generated server trait
/// declares them: this fails to compile if one is missing or its streaming shape changed.
#[test]
fn runtime_service_has_the_v0_36_rpcs() {
    #[allow(dead_code)]
    fn declared<T: RuntimeService>(
        _: Option<T::StreamPodSandboxesStream>,
        _: Option<T::StreamContainersStream>,
        _: Option<T::StreamContainerStatsStream>,
        _: Option<T::StreamPodSandboxStatsStream>,
        _: Option<T::StreamPodSandboxMetricsStream>,
    ) {
        let _ = T::stream_pod_sandboxes;
        let _ = T::stream_containers;
        let _ = T::stream_container_stats;
        let _ = T::stream_pod_sandbox_stats;
        let _ = T::stream_pod_sandbox_metrics;
        let _ = T::update_pod_sandbox_resources;
    }
}

/// The generated client talks to the generated server in-process (no socket): a server stream
/// (`StreamImages`, new in v0.36) arrives message by message, and a unary call carries the
/// request's fields across.
#[tokio::test]
async fn image_service_client_and_server_speak() {
    struct Images;
    #[tonic::async_trait]
    impl ImageService for Images {
        async fn list_images(
            &self,
            _: Request<ListImagesRequest>,
        ) -> Result<Response<ListImagesResponse>, Status> {
            Err(Status::unimplemented("list"))
        }
        async fn image_status(
            &self,
            _: Request<ImageStatusRequest>,
        ) -> Result<Response<ImageStatusResponse>, Status> {
            Err(Status::unimplemented("status"))
        }
        async fn pull_image(
            &self,
            r: Request<PullImageRequest>,
        ) -> Result<Response<PullImageResponse>, Status> {
            let r = r.into_inner();
            let (image, auth) = (r.image.unwrap_or_default(), r.auth.unwrap_or_default());
            Ok(Response::new(PullImageResponse {
                image_ref: format!("{}@{}", image.image, auth.password),
            }))
        }
        async fn remove_image(
            &self,
            _: Request<RemoveImageRequest>,
        ) -> Result<Response<RemoveImageResponse>, Status> {
            Err(Status::unimplemented("remove"))
        }
        async fn image_fs_info(
            &self,
            _: Request<ImageFsInfoRequest>,
        ) -> Result<Response<ImageFsInfoResponse>, Status> {
            Err(Status::unimplemented("fs"))
        }
        type StreamImagesStream =
            tokio_stream::Iter<std::vec::IntoIter<Result<StreamImagesResponse, Status>>>;
        async fn stream_images(
            &self,
            r: Request<StreamImagesRequest>,
        ) -> Result<Response<Self::StreamImagesStream>, Status> {
            let wanted = r.into_inner().filter.and_then(|f| f.image).map(|i| i.image);
            let page = |id: &str| StreamImagesResponse {
                images: vec![Image {
                    id: id.into(),
                    ..Default::default()
                }],
            };
            Ok(Response::new(tokio_stream::iter(vec![
                Ok(page("one")),
                Ok(page(&wanted.unwrap_or_default())),
            ])))
        }
    }

    let mut client = ImageServiceClient::new(ImageServiceServer::new(Images));
    let filter = ImageFilter {
        image: Some(ImageSpec {
            image: "two".into(),
            ..Default::default()
        }),
    };
    let mut stream = client
        .stream_images(StreamImagesRequest {
            filter: Some(filter),
        })
        .await
        .unwrap()
        .into_inner();
    let mut ids = Vec::new();
    while let Some(page) = stream.message().await.unwrap() {
        ids.extend(page.images.into_iter().map(|i| i.id));
    }
    assert_eq!(ids, ["one", "two"]);

    let pulled = client
        .pull_image(PullImageRequest {
            image: Some(ImageSpec {
                image: "busybox".into(),
                ..Default::default()
            }),
            auth: Some(AuthConfig {
                password: "pw".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(pulled.into_inner().image_ref, "busybox@pw");
    let err = client
        .list_images(ListImagesRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unimplemented);
}

#[test]
fn debug_redact_is_stripped_from_option_lists_only() {
    let text = "\
/* A block comment naming [debug_redact = true]
   over two lines. */
message AuthConfig {
    string username = 1;
    // Hidden in logs: [debug_redact = true].
    string password = 2 [debug_redact = true];
    string token = 3 [deprecated = true, debug_redact = true]; // trailing comment
    message Inner {
        string secret = 1 [debug_redact=true];
    }
    string after_inner = 4 [ debug_redact = true ];
}
";
    let want = "\
/* A block comment naming [debug_redact = true]
   over two lines. */
message AuthConfig {
    string username = 1;
    // Hidden in logs: [debug_redact = true].
    string password = 2;
    string token = 3 [deprecated = true]; // trailing comment
    message Inner {
        string secret = 1;
    }
    string after_inner = 4;
}
";
    assert_eq!(
        strip_debug_redact(text).unwrap(),
        Stripped {
            text: want.into(),
            fields: vec![
                "AuthConfig.password".into(),
                "AuthConfig.token".into(),
                "Inner.secret".into(),
                "AuthConfig.after_inner".into(),
            ],
        }
    );
    // Nothing to strip: the text comes back unchanged.
    assert_eq!(
        strip_debug_redact(want).unwrap(),
        Stripped {
            text: want.into(),
            fields: vec![]
        }
    );
}

#[test]
fn debug_redact_in_an_unknown_form_is_refused() {
    let split = "message A {\n    string p = 1 [\n        debug_redact = true\n    ];\n}\n";
    let err = strip_debug_redact(split).unwrap_err();
    assert!(err.starts_with("line 3:"), "{err}");
    assert!(strip_debug_redact("option debug_redact = true;\n").is_err());
}

/// The vendored file, cleaned, is upstream's text with exactly the four options removed.
#[test]
fn vendored_proto_loses_only_the_options() {
    let upstream = include_str!("../proto/api.proto");
    let stripped = strip_debug_redact(upstream).unwrap();
    assert_eq!(
        stripped.text,
        upstream.replace(" [debug_redact = true]", "")
    );
    assert_eq!(stripped.fields.len(), 4);
    assert!(upstream.starts_with("/*\nCopyright 2020 The Kubernetes Authors."));
}
