//! Requests a hostile or buggy client sends, answered with a clear status and nothing worse.

use carapace_e2e::{Daemon, cri};
use tonic::Code;

/// A 100 KB id, image reference or sysctl echoed whole in a status passed the 16 KiB of headers
/// clients accept: they saw RESOURCE_EXHAUSTED instead of the answer.
#[tokio::test]
async fn a_huge_input_gets_its_status_with_a_short_message() {
    let d = Daemon::start().await;
    let mut rt = d.runtime().await;
    let id = "f".repeat(100_000);
    let e = rt
        .container_status(cri::ContainerStatusRequest {
            container_id: id.clone(),
            verbose: false,
        })
        .await
        .unwrap_err();
    assert_eq!(
        e.code(),
        Code::NotFound,
        "{}",
        &e.message()[..200.min(e.message().len())]
    );
    assert!(e.message().len() < 1024, "{} bytes", e.message().len());
    assert!(e.message().contains("bytes cut"), "{}", e.message());
    let e = d
        .images()
        .await
        .image_status(cri::ImageStatusRequest {
            image: Some(cri::ImageSpec {
                image: format!("registry.e2e.test/{}", "x".repeat(100_000)),
                ..Default::default()
            }),
            verbose: false,
        })
        .await;
    match e {
        Ok(r) => assert!(r.into_inner().image.is_none()),
        Err(e) => {
            assert_ne!(e.code(), Code::ResourceExhausted);
            assert!(e.message().len() < 1024, "{} bytes", e.message().len());
        }
    }
    d.stop().await;
}

/// A relative log directory was made relative to the daemon's working directory.
#[tokio::test]
async fn a_relative_log_directory_is_refused() {
    let d = Daemon::start().await;
    let mut rt = d.runtime().await;
    let dir = "carapace-e2e-relative-logs";
    let e = rt
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(cri::PodSandboxConfig {
                log_directory: format!("{dir}/pod"),
                ..carapace_e2e::node::pod_config("rel", "0d1e2f30-0000-4000-8000-0000000000a0")
            }),
            runtime_handler: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e}");
    assert!(e.message().contains("log_directory"), "{e}");
    let cwd = std::fs::read_link(format!("/proc/{}/cwd", d.pid())).unwrap();
    assert!(!cwd.join(dir).exists(), "made under {}", cwd.display());
    assert!(d.pods().await.is_empty());
    d.stop().await;
}
