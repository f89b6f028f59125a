//! Asking Prometheus: its rules, its metric names, its version. Only fields every version from
//! Debian's 2.42 on answers are read; filtering is done here, not by query parameters 2.42
//! does not know (`rule_name[]`, `match[]` on the rules API).

use std::collections::HashSet;

use serde::Deserialize;

use super::loaded::RulesAnswer;

/// Why Prometheus could not be read; the URL is not secret, but kept out of `Display` all the
/// same so that basic-auth credentials in it never reach a condition.
#[derive(Debug, thiserror::Error)]
pub enum PromError {
    #[error("Prometheus's {what} could not be read: {reason}")]
    Read { what: &'static str, reason: String },
}

async fn get<T: serde::de::DeserializeOwned>(
    http: &reqwest::Client,
    base: &str,
    path: &str,
    what: &'static str,
) -> Result<T, PromError> {
    let url = format!("{}{path}", base.trim_end_matches('/'));
    let fail = |reason: String| PromError::Read { what, reason };
    let resp = http
        .get(&url)
        .timeout(std::time::Duration::from_secs(10))
        .send()
        .await
        .map_err(|e| fail(without_url(e)))?;
    if !resp.status().is_success() {
        return Err(fail(format!("HTTP {}", resp.status())));
    }
    resp.json().await.map_err(|e| fail(without_url(e)))
}

fn without_url(e: reqwest::Error) -> String {
    e.without_url().to_string()
}

/// `/api/v1/rules`.
pub async fn rules(http: &reqwest::Client, base: &str) -> Result<RulesAnswer, PromError> {
    get(http, base, "/api/v1/rules?type=alert", "rules API").await
}

#[derive(Deserialize)]
struct Strings {
    data: Vec<String>,
}

/// The metric names Prometheus holds series of.
pub async fn metric_names(http: &reqwest::Client, base: &str) -> Result<HashSet<String>, PromError> {
    let s: Strings = get(http, base, "/api/v1/label/__name__/values", "metric names").await?;
    Ok(s.data.into_iter().collect())
}

#[derive(Deserialize)]
struct BuildInfo {
    data: BuildData,
}

#[derive(Deserialize)]
struct BuildData {
    version: String,
}

/// Prometheus's version, from `/api/v1/status/buildinfo`.
pub async fn version(http: &reqwest::Client, base: &str) -> Result<String, PromError> {
    let b: BuildInfo = get(http, base, "/api/v1/status/buildinfo", "build information").await?;
    Ok(b.data.version)
}

/// Prometheus's answer: version, rules, metric names.
pub struct Answer {
    pub version: String,
    pub rules: RulesAnswer,
    pub names: HashSet<String>,
}

/// Everything the read-back needs, asked of the Prometheus at `base`.
pub async fn answer(base: &str) -> Result<Answer, PromError> {
    let http = crate::rollouts::gate::client();
    let version = version(http, base).await?;
    let rules = rules(http, base).await?;
    let names = metric_names(http, base).await?;
    Ok(Answer { version, rules, names })
}
