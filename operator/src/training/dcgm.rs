//! GPU readings of a TrainingJob's pods from the DCGM exporter's metrics, through Prometheus
//! (`--prometheus-url`). The exporter labels each GPU with the node (`Hostname`), the GPU index
//! (`gpu`) and the pod using it (`pod`, `namespace`; `exported_pod`, `exported_namespace` where
//! Prometheus kept its own target labels). While the gang runs a worker's GPUs are found by
//! its pod; while the thermal guard keeps the gang stopped (no pods), by the node and GPU
//! indices it ran on, kept in `status.workers[].host` and `.gpus`.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::pods;
use super::thermal::Reading;
use crate::api::training::WorkerStatus;

/// The DCGM fields read: temperature, utilisation, framebuffer used (MiB), slowdown threshold.
const FIELDS: &str = "DCGM_FI_DEV_(GPU_TEMP|GPU_UTIL|FB_USED|SLOWDOWN_TEMP)";

#[derive(Deserialize)]
struct Answer {
    status: String,
    #[serde(default)]
    data: Option<Data>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
struct Data {
    result: Vec<Sample>,
}

/// One series of an instant query.
#[derive(Deserialize, Clone, Debug)]
pub struct Sample {
    metric: BTreeMap<String, String>,
    value: (f64, String),
}

fn quoted(v: &str) -> String {
    format!("\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The query: the namespace's GPUs while the gang runs; the nodes the workers ran on while it
/// is stopped (`stopped`), or None when no worker's node is known.
pub fn query(ns: &str, workers: &[WorkerStatus], stopped: bool) -> Option<String> {
    let name = format!("__name__=~{}", quoted(FIELDS));
    if !stopped {
        let ns = quoted(ns);
        return Some(format!("{{{name},namespace={ns}}} or {{{name},exported_namespace={ns}}}"));
    }
    let nodes: std::collections::BTreeSet<String> =
        workers.iter().filter_map(|w| w.host.as_deref()).map(regex::escape).collect();
    (!nodes.is_empty())
        .then(|| format!("{{{name},Hostname=~{}}}", quoted(&nodes.into_iter().collect::<Vec<_>>().join("|"))))
}

/// Prometheus's answer to [`query`], or its error in its words.
pub fn parse(body: &str) -> Result<Vec<Sample>, String> {
    let a: Answer = serde_json::from_str(body).map_err(|e| format!("Prometheus's answer: {e}"))?;
    match (a.status.as_str(), a.data) {
        ("success", Some(d)) => Ok(d.result),
        _ => Err(a.error.unwrap_or_else(|| "Prometheus answered without data".into())),
    }
}

/// One GPU's fields, folded from its series.
#[derive(Default, Debug)]
struct Gpu {
    pod: Option<String>,
    celsius: Option<i32>,
    utilization: Option<i32>,
    memory_mib: Option<i64>,
    slowdown: Option<i32>,
}

fn fold(samples: &[Sample], ns: &str) -> BTreeMap<(String, u32), Gpu> {
    let mut gpus: BTreeMap<(String, u32), Gpu> = BTreeMap::new();
    for s in samples {
        // `exported_pod` is there only when `pod` is Prometheus's own (the exporter's target).
        let label = |k: &str| s.metric.get(&format!("exported_{k}")).or_else(|| s.metric.get(k));
        let (Some(node), Some(Ok(index))) =
            (s.metric.get("Hostname"), s.metric.get("gpu").map(|g| g.parse()))
        else {
            continue;
        };
        let Ok(v) = s.value.1.parse::<f64>() else { continue };
        let g = gpus.entry((node.clone(), index)).or_default();
        if label("namespace").map(String::as_str) == Some(ns) {
            g.pod = g.pod.take().or_else(|| label("pod").cloned());
        }
        match s.metric.get("__name__").map(String::as_str) {
            Some("DCGM_FI_DEV_GPU_TEMP") => g.celsius = Some(v.round() as i32),
            Some("DCGM_FI_DEV_GPU_UTIL") => g.utilization = Some(v.round() as i32),
            Some("DCGM_FI_DEV_FB_USED") => g.memory_mib = Some(v.round() as i64),
            Some("DCGM_FI_DEV_SLOWDOWN_TEMP") if v > 0.0 => g.slowdown = Some(v.round() as i32),
            _ => {}
        }
    }
    gpus
}

/// The workers' readings into `workers` (one entry per worker, created as needed) and for the
/// guard: by pod name (attempt `attempt` of `job`) while the gang runs, by node and GPU while
/// it is `stopped`.
pub fn readings(
    job: &str,
    ns: &str,
    attempt: i32,
    n: u32,
    workers: &mut Vec<WorkerStatus>,
    samples: &[Sample],
    stopped: bool,
) -> Vec<Reading> {
    for i in 0..n as i32 {
        if !workers.iter().any(|w| w.index == i) {
            workers.push(WorkerStatus { index: i, ..WorkerStatus::default() });
        }
    }
    workers.sort_by_key(|w| w.index);
    let gpus = fold(samples, ns);
    let mut out = Vec::new();
    for w in workers.iter_mut() {
        let pod = pods::pod_name(job, attempt, w.index as u32);
        let ids: Vec<u32> =
            w.gpus.as_deref().unwrap_or_default().split(',').filter_map(|g| g.parse().ok()).collect();
        let mine: Vec<(&(String, u32), &Gpu)> = gpus
            .iter()
            .filter(|((node, i), g)| match stopped {
                false => g.pod.as_deref() == Some(pod.as_str()),
                true => w.host.as_deref() == Some(node.as_str()) && ids.contains(i),
            })
            .collect();
        if mine.is_empty() {
            continue;
        }
        if !stopped {
            w.host = Some(mine[0].0.0.clone());
            w.gpus = Some(mine.iter().map(|((_, i), _)| i.to_string()).collect::<Vec<_>>().join(","));
        }
        w.gpu_temperature_celsius = mine.iter().filter_map(|(_, g)| g.celsius).max();
        w.gpu_utilization_percent = mine.iter().filter_map(|(_, g)| g.utilization).max();
        w.gpu_memory_used_mib = Some(mine.iter().filter_map(|(_, g)| g.memory_mib).sum());
        out.extend(mine.iter().filter_map(|((_, i), g)| {
            Some(Reading {
                worker: w.index as u32,
                gpu: *i,
                celsius: g.celsius?,
                slowdown_celsius: g.slowdown,
            })
        }));
    }
    out
}

/// Asks Prometheus; the error never holds the URL (it may carry credentials).
pub async fn read(http: &reqwest::Client, base: &str, query: &str) -> Result<Vec<Sample>, String> {
    let url = format!("{}/api/v1/query", base.trim_end_matches('/'));
    let resp = http
        .get(&url)
        .query(&[("query", query)])
        .timeout(std::time::Duration::from_secs(10))
        .send()
        .await
        .map_err(|e| format!("Prometheus could not be reached: {}", e.without_url()))?;
    let body = resp.text().await.map_err(|e| format!("Prometheus's answer: {}", e.without_url()))?;
    parse(&body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample(name: &str, labels: serde_json::Value, v: &str) -> serde_json::Value {
        let mut m = labels;
        m["__name__"] = json!(name);
        json!({"metric": m, "value": [1.0, v]})
    }

    fn answer(result: Vec<serde_json::Value>) -> Vec<Sample> {
        parse(&json!({"status": "success", "data": {"resultType": "vector", "result": result}}).to_string())
            .unwrap()
    }

    #[test]
    fn the_query_selects_the_namespace_running_and_the_nodes_stopped() {
        let q = query("team-a", &[], false).unwrap();
        assert!(
            q.contains(r#"namespace="team-a"} or {"#) && q.contains(r#"exported_namespace="team-a""#),
            "{q}"
        );
        let w = |h: &str| WorkerStatus { host: Some(h.into()), gpus: Some("0".into()), ..Default::default() };
        let q = query("team-a", &[w("gpu.a"), w("b"), w("b")], true).unwrap();
        assert!(q.ends_with(r#"Hostname=~"b|gpu\\.a"}"#), "{q}");
        assert_eq!(query("team-a", &[WorkerStatus::default()], true), None);
    }

    #[test]
    fn readings_follow_the_pods_running_and_the_nodes_stopped() {
        let on = |pod: &str, gpu: &str| json!({"Hostname": "n1", "gpu": gpu, "namespace": "ns", "pod": pod});
        let samples = answer(vec![
            sample("DCGM_FI_DEV_GPU_TEMP", on("llm-a3-0", "0"), "61"),
            sample("DCGM_FI_DEV_GPU_TEMP", on("llm-a3-0", "1"), "88"),
            sample("DCGM_FI_DEV_SLOWDOWN_TEMP", on("llm-a3-0", "1"), "90"),
            sample("DCGM_FI_DEV_FB_USED", on("llm-a3-0", "1"), "1024"),
            sample("DCGM_FI_DEV_GPU_UTIL", on("llm-a3-0", "1"), "97"),
            // Prometheus kept its own `namespace`/`pod`: the exporter's are `exported_*`.
            sample(
                "DCGM_FI_DEV_GPU_TEMP",
                json!({"Hostname": "n2", "gpu": "0", "exported_namespace": "ns", "exported_pod": "llm-a3-1",
                       "namespace": "gpu-operator", "pod": "dcgm-exporter-x"}),
                "55",
            ),
            sample("DCGM_FI_DEV_GPU_TEMP", on("other-a1-0", "2"), "99"),
        ]);
        let mut workers = Vec::new();
        let r = readings("llm", "ns", 3, 2, &mut workers, &samples, false);
        let got: Vec<(u32, u32, i32, Option<i32>)> =
            r.iter().map(|r| (r.worker, r.gpu, r.celsius, r.slowdown_celsius)).collect();
        assert_eq!(got, [(0, 0, 61, None), (0, 1, 88, Some(90)), (1, 0, 55, None)]);
        assert_eq!((workers[0].host.as_deref(), workers[0].gpus.as_deref()), (Some("n1"), Some("0,1")));
        assert_eq!(
            (workers[0].gpu_temperature_celsius, workers[0].gpu_memory_used_mib),
            (Some(88), Some(1024))
        );
        assert_eq!((workers[1].host.as_deref(), workers[1].gpu_utilization_percent), (Some("n2"), None));

        // Stopped: no pods; the same GPUs by node and index, whoever uses them now.
        let cool = answer(vec![
            sample("DCGM_FI_DEV_GPU_TEMP", json!({"Hostname": "n1", "gpu": "1"}), "72"),
            sample("DCGM_FI_DEV_GPU_TEMP", json!({"Hostname": "n1", "gpu": "3"}), "95"),
        ]);
        let r = readings("llm", "ns", 3, 2, &mut workers, &cool, true);
        assert_eq!(r.iter().map(|r| (r.worker, r.gpu, r.celsius)).collect::<Vec<_>>(), [(0, 1, 72)]);
        assert_eq!(workers[0].gpus.as_deref(), Some("0,1"), "the placement is kept while stopped");
    }

    #[test]
    fn prometheus_errors_are_told_in_its_words() {
        let err = json!({"status": "error", "errorType": "bad_data", "error": "parse error at char 3"});
        assert_eq!(parse(&err.to_string()).unwrap_err(), "parse error at char 3");
        assert!(parse("<html>").unwrap_err().starts_with("Prometheus's answer"));
    }
}
