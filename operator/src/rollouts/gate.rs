//! The health gate's checks: HTTP requests to each ready endpoint of the preview Service (read
//! from its EndpointSlices, so no kube-proxy is needed) and a Prometheus instant query.

use std::time::Duration;

use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::ListParams;
use kube::{Api, Client};
use serde::Deserialize;

use super::plan::Outcome;
use crate::api::bluegreen::{Analysis, GateCheck};

/// The one HTTP client of health gates and analysis, on Kubernetes and on hosts: built once (its
/// connection pool kept), never through a proxy from the environment (checks go to pod and
/// Prometheus addresses inside the network, the same on both paths).
pub fn client() -> &'static reqwest::Client {
    static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    // A builder with no custom TLS cannot fail; fall back to the default client if it did.
    CLIENT.get_or_init(|| reqwest::Client::builder().no_proxy().build().unwrap_or_default())
}

/// `addr:port` of every endpoint the preview Service would send traffic to.
pub async fn ready_endpoints(
    client: &Client,
    ns: &str,
    service: &str,
    port: Option<i32>,
) -> Result<Vec<String>, kube::Error> {
    let api: Api<EndpointSlice> = Api::namespaced(client.clone(), ns);
    let slices =
        api.list(&ListParams::default().labels(&format!("kubernetes.io/service-name={service}"))).await?;
    Ok(endpoints_of(&slices.items, port))
}

/// Pure part of [`ready_endpoints`]: ready endpoints, each with the check port or the slice's.
pub fn endpoints_of(slices: &[EndpointSlice], port: Option<i32>) -> Vec<String> {
    let mut out = Vec::new();
    for slice in slices {
        let Some(port) = port.or_else(|| slice.ports.iter().flatten().find_map(|p| p.port)) else { continue };
        for ep in slice.endpoints.iter().flatten() {
            // Unset `ready` means ready, as kube-proxy reads it.
            if ep.conditions.as_ref().and_then(|c| c.ready) == Some(false) {
                continue;
            }
            for addr in &ep.addresses {
                if slice.address_type == "IPv6" {
                    out.push(format!("[{addr}]:{port}"));
                } else {
                    out.push(format!("{addr}:{port}"));
                }
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// One round: every endpoint must answer the expected status in time.
pub async fn http_round(http: &reqwest::Client, endpoints: &[String], check: &GateCheck) -> Outcome {
    if endpoints.is_empty() {
        return Outcome::Inconclusive("no ready endpoints in the preview Service's EndpointSlices".into());
    }
    let timeout = Duration::from_secs(u64::try_from(check.timeout_seconds).unwrap_or(2));
    let requests = endpoints.iter().map(|ep| {
        let url = format!("http://{ep}{}", check.path);
        async move {
            match http.get(&url).timeout(timeout).send().await {
                Ok(r) if i32::from(r.status().as_u16()) == check.expected_status => Ok(()),
                Ok(r) => {
                    Err(format!("{ep} answered {} (expected {})", r.status().as_u16(), check.expected_status))
                }
                Err(e) if e.is_timeout() => {
                    Err(format!("{ep} did not answer within {}s", check.timeout_seconds))
                }
                Err(_) => Err(format!("{ep} refused or dropped the connection")),
            }
        }
    });
    let failures: Vec<String> =
        futures::future::join_all(requests).await.into_iter().filter_map(Result::err).collect();
    if failures.is_empty() {
        Outcome::Pass(format!(
            "{} of {} endpoints answered {}",
            endpoints.len(),
            endpoints.len(),
            check.expected_status
        ))
    } else {
        Outcome::Fail(failures.join("; "))
    }
}

/// A comparison like `result < 0.01`, as the CRD's pattern admits it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Condition {
    op: Op,
    threshold: f64,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Op {
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
}

impl Condition {
    pub fn parse(s: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "analysis.successCondition {s:?}: expected `result <op> <number>` with <, <=, >, >=, == or !="
            )
        };
        let rest = s.trim().strip_prefix("result").ok_or_else(bad)?.trim_start();
        let (op, num) =
            [("<=", Op::Le), (">=", Op::Ge), ("==", Op::Eq), ("!=", Op::Ne), ("<", Op::Lt), (">", Op::Gt)]
                .into_iter()
                .find_map(|(sym, op)| rest.strip_prefix(sym).map(|n| (op, n)))
                .ok_or_else(bad)?;
        let threshold = num.trim().parse::<f64>().map_err(|_| bad())?;
        Ok(Self { op, threshold })
    }

    pub fn holds(&self, v: f64) -> bool {
        match self.op {
            Op::Lt => v < self.threshold,
            Op::Le => v <= self.threshold,
            Op::Gt => v > self.threshold,
            Op::Ge => v >= self.threshold,
            Op::Eq => v == self.threshold,
            Op::Ne => v != self.threshold,
        }
    }
}

#[derive(Deserialize)]
struct PromResponse {
    status: String,
    #[serde(default)]
    data: Option<PromData>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PromData {
    result_type: String,
    result: serde_json::Value,
}

/// The one number a query returned, or why there is none.
pub fn sample_of(body: &str) -> Result<f64, String> {
    let r: PromResponse = serde_json::from_str(body)
        .map_err(|e| format!("Prometheus answered something else than its API: {e}"))?;
    if r.status != "success" {
        return Err(format!("Prometheus refused the query: {}", r.error.unwrap_or_default()));
    }
    let data = r.data.ok_or("Prometheus answered without data")?;
    let value = match data.result_type.as_str() {
        "scalar" => data.result.get(1).cloned(),
        "vector" => {
            let items = data.result.as_array().cloned().unwrap_or_default();
            if items.len() != 1 {
                return Err(format!(
                    "the query returned {} samples; it must return exactly one",
                    items.len()
                ));
            }
            items[0].get("value").and_then(|v| v.get(1)).cloned()
        }
        other => return Err(format!("the query returned a {other}; it must return one sample")),
    };
    value
        .and_then(|v| v.as_str().and_then(|s| s.parse::<f64>().ok()))
        .ok_or_else(|| "Prometheus returned a sample without a number".into())
}

/// One measurement.
pub async fn analysis_round(http: &reqwest::Client, a: &Analysis) -> Outcome {
    let cond = match Condition::parse(&a.success_condition) {
        Ok(c) => c,
        Err(e) => return Outcome::Fail(e),
    };
    let url = format!("{}/api/v1/query", a.prometheus_url.trim_end_matches('/'));
    let body =
        match http.get(&url).query(&[("query", &a.query)]).timeout(Duration::from_secs(10)).send().await {
            Ok(r) => r.text().await.map_err(|e| e.to_string()),
            Err(e) => {
                Err(format!("Prometheus at {} could not be reached: {}", a.prometheus_url, e.without_url()))
            }
        };
    match body.and_then(|b| sample_of(&b)) {
        Ok(v) if cond.holds(v) => {
            Outcome::Pass(format!("{} = {v} satisfies {}", a.query, a.success_condition))
        }
        Ok(v) => Outcome::Fail(format!("{} = {v} does not satisfy {}", a.query, a.success_condition)),
        Err(e) => Outcome::Fail(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn conditions_parse_and_compare() {
        let c = Condition::parse("result < 0.01").unwrap();
        assert!(c.holds(0.0) && !c.holds(0.01));
        assert!(Condition::parse("result>=-2").unwrap().holds(-2.0));
        assert!(Condition::parse("result != 1.5").unwrap().holds(1.0));
        assert!(Condition::parse("rate < 1").unwrap_err().contains("successCondition"));
        assert!(Condition::parse("result ~ 1").is_err());
    }

    #[test]
    fn one_sample_is_required() {
        let vec1 = json!({"status": "success", "data": {"resultType": "vector",
            "result": [{"metric": {}, "value": [1.0, "0.25"]}]}});
        assert_eq!(sample_of(&vec1.to_string()), Ok(0.25));
        let scalar = json!({"status": "success", "data": {"resultType": "scalar", "result": [1.0, "3"]}});
        assert_eq!(sample_of(&scalar.to_string()), Ok(3.0));
        let empty = json!({"status": "success", "data": {"resultType": "vector", "result": []}});
        assert!(sample_of(&empty.to_string()).unwrap_err().contains("0 samples"));
        let err = json!({"status": "error", "errorType": "bad_data", "error": "parse error"});
        assert!(sample_of(&err.to_string()).unwrap_err().contains("parse error"));
    }

    #[test]
    fn endpoints_skip_unready_and_use_the_right_port() {
        let slices: Vec<EndpointSlice> = serde_json::from_value(json!([
            {"metadata": {"name": "a"}, "addressType": "IPv4", "ports": [{"port": 8080}],
             "endpoints": [{"addresses": ["10.0.0.1"]}, {"addresses": ["10.0.0.2"], "conditions": {"ready": false}}]},
            {"metadata": {"name": "b"}, "addressType": "IPv6", "ports": [{"port": 8080}],
             "endpoints": [{"addresses": ["fd00::1"], "conditions": {"ready": true}}]},
        ]))
        .unwrap();
        assert_eq!(endpoints_of(&slices, None), ["10.0.0.1:8080", "[fd00::1]:8080"]);
        assert_eq!(endpoints_of(&slices, Some(9)), ["10.0.0.1:9", "[fd00::1]:9"]);
    }
}
