//! The Grafana dashboards the chart ships (charts/nova/dashboards): their panel queries, and the
//! proof that each returns data from a real Prometheus scraping a real Nova (or node_exporter).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::Value;

pub fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../charts/nova/dashboards")
}

/// A real Prometheus scraping the operator on `port` as job `nova`, every second.
pub fn scraping(port: u16) -> Result<test_cluster::prometheus::Prometheus> {
    let jobs = vec![("nova".into(), vec![format!("127.0.0.1:{port}")])];
    Ok(test_cluster::prometheus::Prometheus::start_with(
        &[],
        &test_cluster::prometheus::Extra { jobs, ..Default::default() },
    )?)
}

/// Every dashboard file, sorted.
pub fn files() -> Result<Vec<PathBuf>> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir())?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    out.sort();
    Ok(out)
}

pub fn load(name: &str) -> Result<Value> {
    let path = dir().join(format!("{name}.json"));
    serde_json::from_str(&std::fs::read_to_string(&path)?).with_context(|| path.display().to_string())
}

/// (panel title, query) of every panel's targets.
pub fn queries(dashboard: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for p in dashboard["panels"].as_array().into_iter().flatten() {
        let title = p["title"].as_str().unwrap_or_default().to_owned();
        for t in p["targets"].as_array().into_iter().flatten() {
            out.push((title.clone(), t["expr"].as_str().unwrap_or_default().to_owned()));
        }
    }
    out
}

/// Whether Prometheus answers `expr` with at least one finite value (a NaN shows as nothing).
async fn has_data(http: &reqwest::Client, prom: &str, expr: &str) -> Result<bool> {
    let v: Value =
        http.get(format!("{prom}/api/v1/query")).query(&[("query", expr)]).send().await?.json().await?;
    if v["status"] != "success" {
        bail!("Prometheus refused {expr}: {v}");
    }
    Ok(v["data"]["result"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|r| r["value"][1].as_str().and_then(|s| s.parse::<f64>().ok()).is_some_and(f64::is_finite)))
}

/// Waits until every panel of dashboard `name` shows data from `prom`; fails naming the panels
/// that still show nothing.
pub async fn assert_every_panel_has_data(name: &str, prom: &str, wait: Duration) -> Result<()> {
    let d = load(name)?;
    let http = reqwest::Client::new();
    let empty = std::sync::Mutex::new(Vec::new());
    let shown =
        test_cluster::eventually(&format!("every panel of dashboard {name} to show data"), wait, || async {
            let mut none = Vec::new();
            for (title, expr) in queries(&d) {
                if !has_data(&http, prom, &expr).await? {
                    none.push(format!("{title:?}: {expr}"));
                }
            }
            let done = none.is_empty();
            *empty.lock().unwrap() = none;
            Ok::<_, anyhow::Error>(done)
        })
        .await;
    shown.with_context(|| format!("panels without data:\n  {}", empty.lock().unwrap().join("\n  ")))
}
