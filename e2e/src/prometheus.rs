//! A real Prometheus (Debian's, installed by `deploy/install-deps.sh test`) on a loopback port,
//! scraping one daemon every second, for the tests of what an operator sees: the metrics, the
//! dashboard's queries and the alert rules.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;

use crate::{eventually, free_port, try_http_get, url_encode};

/// A Prometheus server on a loopback port scraping one target and evaluating the alert rules,
/// both every second. Killed on drop; its data lives in a temp dir removed with it.
pub struct Prometheus {
    child: tokio::process::Child,
    addr: std::net::SocketAddr,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    /// Started, and answering once it has scraped `target` (`up == 1`); with `rules`, evaluating
    /// that rules file every second too.
    pub async fn start(target: std::net::SocketAddr, rules: Option<&Path>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 {rule_files}\
                 scrape_configs:\n  - job_name: carapace\n    static_configs:\n      - targets: ['{target}']\n",
                rule_files = rules
                    .map(|r| format!("rule_files:\n  - {}\n", r.display()))
                    .unwrap_or_default(),
            ),
        )
        .unwrap();
        let addr: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let child = tokio::process::Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("starting prometheus (installed by deploy/install-deps.sh test)");
        let prom = Self {
            child,
            addr,
            _dir: dir,
        };
        eventually(
            Duration::from_secs(60),
            "prometheus to scrape carapace",
            || async {
                let r = prom.query("up{job=\"carapace\"} == 1").await.ok()?;
                (!r.is_empty()).then_some(())
            },
        )
        .await;
        prom
    }

    /// `data` of an API answer, or Prometheus' error (or the transport's).
    pub async fn api(&self, path: &str) -> Result<Value, String> {
        let (status, body) = try_http_get(self.addr, path)
            .await
            .map_err(|e| e.to_string())?;
        let v: Value =
            serde_json::from_str(&body).map_err(|e| format!("HTTP {status}: {e}: {body}"))?;
        if v["status"] != "success" {
            return Err(format!("HTTP {status}: {}: {}", v["errorType"], v["error"]));
        }
        Ok(v["data"].clone())
    }

    /// The value of an instant query's first sample, if it has one.
    pub async fn value(&self, q: &str) -> Option<f64> {
        let series = self.query(q).await.ok()?;
        series.first()?["value"][1].as_str()?.parse().ok()
    }

    /// The series of an instant query.
    pub async fn query(&self, q: &str) -> Result<Vec<Value>, String> {
        let data = self
            .api(&format!("/api/v1/query?query={}", url_encode(q)))
            .await?;
        Ok(data["result"].as_array().cloned().unwrap_or_default())
    }

    pub async fn query_range(
        &self,
        q: &str,
        start: f64,
        end: f64,
        step: u32,
    ) -> Result<Vec<Value>, String> {
        let data = self
            .api(&format!(
                "/api/v1/query_range?query={}&start={start}&end={end}&step={step}",
                url_encode(q)
            ))
            .await?;
        Ok(data["result"].as_array().cloned().unwrap_or_default())
    }

    pub async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}
