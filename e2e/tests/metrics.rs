//! The metrics endpoint as a real Prometheus sees it: scraped, `up`, the per-RPC counter moving
//! after a call, the node gauges (pods by state, CNI latency) following a pod's life; and the
//! exposition passes `promtool check metrics`.

use std::process::Stdio;
use std::time::Duration;

use carapace_e2e::node::pod_config;
use carapace_e2e::prometheus::Prometheus;
use carapace_e2e::{Daemon, DaemonConfig, PodNetwork, cri, eventually};
use tokio::io::AsyncWriteExt;

#[tokio::test]
async fn prometheus_scrapes_the_daemon_and_sees_calls_counted() {
    let d = Daemon::start().await;
    let prom = Prometheus::start(d.config.metrics_addr(), None).await;
    let up = eventually(
        Duration::from_secs(60),
        "prometheus to scrape carapace",
        || async {
            prom.value("up{job=\"carapace\"}")
                .await
                .filter(|v| *v == 1.0)
        },
    )
    .await;
    assert_eq!(up, 1.0);

    let counter =
        "sum(carapace_cri_requests_total{job=\"carapace\",method=\"Version\",code=\"OK\"})";
    // The fixture's readiness probe was a Version call, so the series exists already.
    let before = eventually(Duration::from_secs(30), "the Version counter", || async {
        prom.value(counter).await
    })
    .await;
    let mut rt = d.runtime().await;
    for _ in 0..3 {
        rt.version(cri::VersionRequest::default()).await.unwrap();
    }
    let after = eventually(
        Duration::from_secs(30),
        "the Version counter to go up",
        || async { prom.value(counter).await.filter(|v| *v >= before + 3.0) },
    )
    .await;
    assert!(after >= before + 3.0);

    // A refused call is counted under its own code.
    let _ = rt
        .checkpoint_container(cri::CheckpointContainerRequest::default())
        .await;
    eventually(Duration::from_secs(30), "the InvalidArgument counter", || async {
        prom.value("carapace_cri_requests_total{method=\"CheckpointContainer\",code=\"InvalidArgument\"}")
            .await
    })
    .await;
    prom.stop().await;
    d.stop().await;
}

#[tokio::test]
async fn the_exposition_passes_promtool_and_carries_process_metrics() {
    let d = Daemon::start().await;
    d.runtime()
        .await
        .version(cri::VersionRequest::default())
        .await
        .unwrap();
    let text = d.metrics_text().await;
    for name in [
        "carapace_build_info{",
        "process_resident_memory_bytes ",
        "process_open_fds ",
        "process_cpu_seconds_total ",
        "carapace_cri_request_duration_seconds_bucket{",
        "carapace_cri_requests_total{code=\"OK\",method=\"Version\",service=\"runtime.v1.RuntimeService\"}",
    ] {
        assert!(text.contains(name), "{name} missing from /metrics:\n{text}");
    }
    let mut promtool = tokio::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running promtool (installed by deploy/install-deps.sh test)");
    let mut stdin = promtool.stdin.take().unwrap();
    stdin.write_all(text.as_bytes()).await.unwrap();
    drop(stdin);
    let out = promtool.wait_with_output().await.unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    d.stop().await;
}

#[tokio::test]
async fn prometheus_scrapes_the_pod_gauges_and_cni_latency() {
    let cfg = DaemonConfig::new();
    let net = PodNetwork::bridge(&cfg, 34);
    let d = Daemon::start_with(cfg).await;
    let prom = Prometheus::start(d.config.metrics_addr(), None).await;
    let id = d
        .run_pod(&pod_config(
            "gauged",
            "5a7a0000-0000-4000-8000-000000000034",
        ))
        .await;
    let wait = |q: &'static str, want: f64| {
        let prom = &prom;
        async move {
            eventually(Duration::from_secs(60), q, || async {
                prom.value(q).await.filter(|v| *v == want)
            })
            .await
        }
    };
    wait("carapace_pods{job=\"carapace\",state=\"ready\"}", 1.0).await;
    wait(
        "carapace_containers{job=\"carapace\",state=\"running\"}",
        0.0,
    )
    .await;
    wait("carapace_monitor_processes{job=\"carapace\"}", 0.0).await;
    wait(
        "carapace_cni_operation_duration_seconds_count{job=\"carapace\",operation=\"add\",outcome=\"success\"}",
        1.0,
    )
    .await;
    d.remove_pod(&id).await;
    wait("carapace_pods{job=\"carapace\",state=\"ready\"}", 0.0).await;
    wait(
        "carapace_cni_operation_duration_seconds_count{job=\"carapace\",operation=\"del\",outcome=\"success\"}",
        1.0,
    )
    .await;
    prom.stop().await;
    d.stop().await;
    drop(net);
}
