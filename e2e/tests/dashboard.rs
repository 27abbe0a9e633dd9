//! The operator's view, on a real Prometheus: every panel of `deploy/grafana/carapace.json` returns
//! data for a node with pods, containers, an exec, pulls and failed calls; the alert rules of
//! `deploy/prometheus/carapace-rules.yaml` load there, read series the daemon exports, and pass
//! `promtool check rules` and their unit tests (`promtool test rules`). Pod network index 131.
//!
//! `render_dashboard_data` (ignored; run by `deploy/grafana/render.sh`) records a few minutes of
//! the same node for the picture in `docs/dashboard.png`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use carapace_e2e::node::{Node, container};
use carapace_e2e::prometheus::Prometheus;
use carapace_e2e::registry::{Entry, Platform, Registry};
use carapace_e2e::{cri, eventually};
use serde_json::Value;

const INDEX: u8 = 131;
const POD_UID: &str = "5a7a0000-0000-4000-8000-000000000131";
/// The pod each round starts and removes, for CNI ADD and DEL.
const CHURN_UID: &str = "5a7a0000-0000-4000-8001-000000000131";

fn deploy(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(path)
}

/// One query of one dashboard panel, its variables substituted.
struct Target {
    panel: String,
    unit: String,
    expr: String,
    legend: String,
}

fn dashboard() -> Value {
    let path = deploy("grafana/carapace.json");
    let text = std::fs::read_to_string(&path).unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Replaces `$name` and `${name}` by each value of `vars` (Grafana's built-ins among them);
/// a variable left over is a panel Grafana would show but this test could not evaluate.
fn substitute(text: &str, vars: &[(&str, String)], panel: &str) -> String {
    let mut vars: Vec<&(&str, String)> = vars.iter().collect();
    // Longest first, so `$__rate_interval` is not taken for `$__rate` or `$job` for `$jobs`.
    vars.sort_by_key(|(name, _)| std::cmp::Reverse(name.len()));
    let mut out = text.to_owned();
    for (name, value) in vars {
        out = out.replace(&format!("${{{name}}}"), value);
        out = out.replace(&format!("${name}"), value);
    }
    assert!(
        !out.contains('$'),
        "panel {panel:?}: a variable the test does not know in {out}"
    );
    out
}

/// Every query of every panel, rows' nested panels included.
fn targets(dash: &Value, vars: &[(&str, String)]) -> Vec<Target> {
    fn walk(panels: &Value, vars: &[(&str, String)], out: &mut Vec<Target>) {
        for p in panels.as_array().into_iter().flatten() {
            walk(&p["panels"], vars, out);
            if p["type"] == "row" {
                continue;
            }
            let title = p["title"].as_str().unwrap_or_default().to_owned();
            let targets = p["targets"].as_array().cloned().unwrap_or_default();
            assert!(!targets.is_empty(), "panel {title:?} has no query");
            assert_eq!(
                p["datasource"]["uid"], "${datasource}",
                "panel {title:?} does not use the dashboard's data source variable"
            );
            for t in targets {
                let expr = t["expr"].as_str().unwrap_or_default();
                assert!(!expr.is_empty(), "panel {title:?}: a query without expr");
                out.push(Target {
                    expr: substitute(expr, vars, &title),
                    legend: t["legendFormat"].as_str().unwrap_or_default().to_owned(),
                    unit: p["fieldConfig"]["defaults"]["unit"]
                        .as_str()
                        .unwrap_or("short")
                        .to_owned(),
                    panel: title.clone(),
                });
            }
        }
    }
    let mut out = Vec::new();
    walk(&dash["panels"], vars, &mut out);
    out
}

/// The values the test gives the dashboard's variables and Grafana's interval built-ins.
fn variables(target: std::net::SocketAddr, rate_interval: &str) -> Vec<(&'static str, String)> {
    vec![
        ("job", "carapace".into()),
        ("instance", target.to_string()),
        ("__rate_interval", rate_interval.into()),
        ("__interval", "15s".into()),
    ]
}

fn has_a_number(series: &[Value]) -> bool {
    series.iter().any(|s| {
        s["value"][1]
            .as_str()
            .and_then(|v| v.parse::<f64>().ok())
            .is_some_and(f64::is_finite)
    })
}

/// What a kubelet does on a busy node, once: pulls (a new image, one already here, one that is
/// not in the registry), a container run to its exit, an exec, a call for a container that is not
/// there, and a pod started and removed. Returns the exited container's id.
async fn exercise(
    n: &mut Node,
    pod: &cri::PodSandboxConfig,
    pod_id: &str,
    sleeper: &str,
    round: u32,
) -> String {
    // A new image each round, so that its pull downloads blobs: 64 KiB of noise in its layer.
    let repo = format!("e2e/dash-{round}");
    let mut x = u64::from(round) + 1;
    let noise: String = (0..65536)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            char::from(b'a' + (x >> 59) as u8)
        })
        .collect();
    n.registry
        .push_crafted(
            &repo,
            &[Platform::native(vec![vec![Entry::file("noise", &noise)]])],
        )
        .await;
    n.pull_image(&n.registry.image(&repo, "v1")).await;
    n.pull_image(&Registry::busybox()).await;
    let missing =
        n.d.images()
            .await
            .pull_image(cri::PullImageRequest {
                image: Some(cri::ImageSpec {
                    image: format!(
                        "{}/e2e/busybox:no-such-tag",
                        carapace_e2e::registry::REGISTRY
                    ),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await;
    assert!(missing.is_err(), "pulled a tag that is not there");

    let once = container(&format!("once-{round}"), &["true"]);
    let (once_id, _, _) = n.run_to_exit(pod_id, pod, &once).await;
    let r = n.exec_sync(sleeper, &["echo", "hello"], 10).await.unwrap();
    assert_eq!(r.stdout, b"hello\n");
    let status =
        n.rt.container_status(cri::ContainerStatusRequest {
            container_id: "no-such-container".into(),
            verbose: false,
        })
        .await;
    assert_eq!(status.unwrap_err().code(), tonic::Code::NotFound);

    let churn = n.pod("churn", CHURN_UID);
    let churn_id = n.run_pod(&churn).await;
    n.remove_pod(&churn_id).await;
    once_id
}

#[tokio::test]
async fn every_dashboard_panel_has_data_on_a_real_prometheus() {
    let (mut n, pod, pod_id) = Node::with_running_pod(INDEX, "dash", POD_UID).await;
    let target = n.d.config.metrics_addr();
    let rules = deploy("prometheus/carapace-rules.yaml");
    let prom = Prometheus::start(target, Some(&rules)).await;
    let sleeper = n
        .create_started(&pod_id, &pod, &container("sleeper", &["sleep", "3600"]))
        .await;
    exercise(&mut n, &pod, &pod_id, &sleeper, 0).await;

    // Each query covers the whole run (5m), so what the node did above is in every window once
    // Prometheus has scraped twice since.
    let dash = dashboard();
    let targets = targets(&dash, &variables(target, "5m"));
    assert!(targets.len() >= 20, "only {} queries", targets.len());
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut empty = Vec::new();
        for t in &targets {
            match prom.query(&t.expr).await {
                Err(e) => panic!("panel {:?}: {} failed: {e}", t.panel, t.expr),
                Ok(series) if !has_a_number(&series) => empty.push(format!(
                    "panel {:?}: {} -> {}",
                    t.panel,
                    t.expr,
                    serde_json::to_string(&series).unwrap()
                )),
                Ok(_) => {}
            }
        }
        if empty.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "panels without data after 60 s:\n{}\n/metrics:\n{}",
            empty.join("\n"),
            n.d.metrics_text().await
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    // The monitors' fds and CPU are read from the real monitor of `sleeper`: it holds fds, and
    // starting the container took it some CPU.
    for q in [
        "carapace_monitor_open_fds{job=\"carapace\"} > 0",
        "carapace_monitor_cpu_seconds_total{job=\"carapace\"} > 0",
    ] {
        let series = prom.query(q).await.unwrap();
        assert!(has_a_number(&series), "{q}: {series:?}");
    }

    // The variables' queries (Grafana's `label_values(metric, label)`) find this node.
    for v in dash["templating"]["list"].as_array().unwrap() {
        if v["type"] != "query" {
            continue;
        }
        let name = v["name"].as_str().unwrap();
        let def = v["definition"].as_str().unwrap();
        let inner = def
            .strip_prefix("label_values(")
            .and_then(|d| d.strip_suffix(')'))
            .unwrap_or_else(|| panic!("variable {name}: {def} is not label_values(...)"));
        let (metric, label) = inner.rsplit_once(',').unwrap();
        let metric = substitute(metric, &variables(target, "5m"), name);
        let series = prom.query(&metric).await.unwrap();
        let values: Vec<&str> = series
            .iter()
            .filter_map(|s| s["metric"][label.trim()].as_str())
            .collect();
        let want = variables(target, "5m")
            .into_iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v)
            .unwrap();
        assert!(
            values.contains(&want.as_str()),
            "variable {name}: {def} gives {values:?}, not {want}"
        );
    }

    // The alert rules: evaluated on these series without an error, and every metric they read
    // is one the daemon exports.
    let groups = eventually(Duration::from_secs(30), "every rule evaluated", || async {
        let data = prom.api("/api/v1/rules").await.ok()?;
        let groups = data["groups"].as_array()?.clone();
        let all_ran = groups
            .iter()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .all(|r| r["health"] != "unknown");
        all_ran.then_some(groups)
    })
    .await;
    let rules_run: Vec<Value> = groups
        .iter()
        .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
        .collect();
    assert!(rules_run.len() >= 7, "rules loaded: {rules_run:?}");
    for r in &rules_run {
        assert_eq!(
            r["health"], "ok",
            "rule {} failed: {}",
            r["name"], r["lastError"]
        );
        let query = r["query"].as_str().unwrap();
        for name in metric_names(query) {
            let series = prom
                .query(&format!("group({{__name__=\"{name}\", job=\"carapace\"}})"))
                .await
                .unwrap();
            assert!(
                !series.is_empty(),
                "rule {} reads {name}, which carapace does not export",
                r["name"]
            );
        }
    }
    // The recording rule matches the real series' labels (a monitor is running).
    let per_monitor = prom
        .query("carapace:monitor_resident_memory_bytes:per_monitor")
        .await
        .unwrap();
    assert!(has_a_number(&per_monitor), "{per_monitor:?}");

    prom.stop().await;
    n.remove_all(&pod_id).await;
}

/// The carapace metric names a PromQL expression reads.
fn metric_names(query: &str) -> Vec<String> {
    let mut names: Vec<String> = query
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|w| w.starts_with("carapace_") && !w.contains(':'))
        .map(str::to_owned)
        .collect();
    names.sort();
    names.dedup();
    names
}

/// Runs promtool and fails with its output on a non-zero exit.
fn promtool(args: &[&str]) {
    let out = std::process::Command::new("promtool")
        .args(args)
        .current_dir(deploy("prometheus"))
        .output()
        .expect("running promtool (from Debian's prometheus, deploy/install-deps.sh test)");
    assert!(
        out.status.success(),
        "promtool {args:?}: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_alert_rules_pass_promtool_check_and_their_unit_tests() {
    promtool(&["check", "rules", "carapace-rules.yaml"]);
    promtool(&["test", "rules", "carapace-rules.test.yaml"]);

    // deploy/prometheus.yml as installed: the rules where it says they are.
    let dir = tempfile::tempdir().unwrap();
    let installed = dir.path().join("carapace-rules.yaml");
    std::fs::copy(deploy("prometheus/carapace-rules.yaml"), &installed).unwrap();
    let config = std::fs::read_to_string(deploy("prometheus.yml")).unwrap();
    assert!(config.contains("/etc/prometheus/carapace-rules.yaml"));
    let config = config.replace(
        "/etc/prometheus/carapace-rules.yaml",
        &installed.display().to_string(),
    );
    let path = dir.path().join("prometheus.yml");
    std::fs::write(&path, config).unwrap();
    promtool(&["check", "config", &path.display().to_string()]);
}

#[test]
fn the_dashboard_queries_name_only_known_variables() {
    let dash = dashboard();
    let addr: std::net::SocketAddr = "127.0.0.1:9464".parse().unwrap();
    let t = targets(&dash, &variables(addr, "1m"));
    assert!(t.iter().all(|t| !t.expr.contains('$')));
    let mut ids: Vec<i64> = dash["panels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_i64().unwrap())
        .collect();
    let n = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), n, "panel ids repeat");
}

/// Records the dashboard's queries over a few minutes of a busy node, as JSON for
/// `deploy/grafana/render.py`: `DASHBOARD_DATA` (the output file, required) and
/// `DASHBOARD_SECONDS` (how long, default 150).
#[tokio::test]
#[ignore = "run by deploy/grafana/render.sh, not in CI"]
async fn render_dashboard_data() {
    let out = PathBuf::from(std::env::var("DASHBOARD_DATA").expect("DASHBOARD_DATA=<file>"));
    let seconds: u64 = std::env::var("DASHBOARD_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(150);
    let (mut n, pod, pod_id) = Node::with_running_pod(INDEX, "dash", POD_UID).await;
    let target = n.d.config.metrics_addr();
    let prom = Prometheus::start(target, Some(&deploy("prometheus/carapace-rules.yaml"))).await;
    let start = now();
    let mut sleepers = vec![
        n.create_started(&pod_id, &pod, &container("sleeper-0", &["sleep", "3600"]))
            .await,
    ];
    let began = Instant::now();
    let mut round = 0;
    let mut exited: Option<String> = None;
    while began.elapsed() < Duration::from_secs(seconds) {
        let once = exercise(&mut n, &pod, &pod_id, &sleepers[0], round).await;
        // One exited container at a time, as a kubelet's garbage collection keeps it.
        if let Some(id) = exited.replace(once) {
            n.remove_container(&id).await;
        }
        // The node fills up for the first half, then drains: the gauges move.
        if began.elapsed() < Duration::from_secs(seconds / 2) {
            if round % 3 == 2 {
                let name = format!("sleeper-{}", sleepers.len());
                let id = n
                    .create_started(&pod_id, &pod, &container(&name, &["sleep", "3600"]))
                    .await;
                sleepers.push(id);
            }
        } else if sleepers.len() > 1 && round % 3 == 2 {
            let id = sleepers.pop().unwrap();
            n.stop_container(&id, 0).await;
        }
        round += 1;
        tokio::time::sleep(Duration::from_secs(4)).await;
    }
    let end = now();
    let mut panels = Vec::new();
    for t in targets(&dashboard(), &variables(target, "30s")) {
        let series = prom.query_range(&t.expr, start, end, 2).await.unwrap();
        panels.push(serde_json::json!({
            "panel": t.panel,
            "unit": t.unit,
            "expr": t.expr,
            "series": series.iter().map(|s| serde_json::json!({
                "legend": legend(&t.legend, &s["metric"]),
                "values": s["values"],
            })).collect::<Vec<_>>(),
        }));
    }
    std::fs::write(
        &out,
        serde_json::to_string(&serde_json::json!({"start": start, "end": end, "panels": panels}))
            .unwrap(),
    )
    .unwrap();
    prom.stop().await;
    n.remove_all(&pod_id).await;
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// Grafana's legend: `{{label}}` replaced by the series' label value.
fn legend(format: &str, metric: &Value) -> String {
    let mut out = format.to_owned();
    if let Some(labels) = metric.as_object() {
        for (k, v) in labels {
            out = out.replace(&format!("{{{{{k}}}}}"), v.as_str().unwrap_or_default());
        }
    }
    out
}
