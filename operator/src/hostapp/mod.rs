//! Platforms on SSH hosts: the application as systemd units in two colours behind nginx, moved
//! by the same blue-green state machine as on Kubernetes. `desired` is pure, `engine` does the
//! SSH work; `settle` drives rounds until the rollout stands still, for callers that wait (the
//! `nova apply` command and tests). The operator runs one round per reconcile instead.

mod colour;
pub mod desired;
pub mod engine;
pub mod ports;
pub mod scrape;

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;

use kube::ResourceExt;

use crate::api::bluegreen::{BlueGreenDeploymentSpec, BlueGreenDeploymentStatus, Phase};
use crate::api::common::HostSelector;
use crate::api::host::Host;
use crate::conditions;
use crate::rollouts::plan::Plan;
pub use desired::App;
pub use engine::{Error, HostConn, Requests};

/// The Hosts a selector picks, by name or by labels (matchLabels and matchExpressions).
pub fn select<'a>(hosts: &'a [Host], sel: &HostSelector) -> Vec<&'a Host> {
    hosts
        .iter()
        .filter(|h| {
            if !sel.names.is_empty() {
                return sel.names.iter().any(|n| *n == h.name_any());
            }
            sel.selector.as_ref().is_some_and(|s| crate::tenancy::matches(s, h.labels()))
        })
        .collect()
}

/// The status to store after a round: the plan's, with its phase and conditions merged in.
pub fn status_after(
    old: &BlueGreenDeploymentStatus,
    p: &Plan,
    generation: Option<i64>,
) -> BlueGreenDeploymentStatus {
    let mut st = p.status.clone();
    st.phase = Some(p.phase);
    st.observed_generation = generation;
    st.conditions = conditions::merge(&old.conditions, &p.conditions, generation, Timestamp::now());
    st
}

/// Whether a rollout needs no further round now (it may later: a scale-down is due, or a user
/// promotes or aborts).
pub fn settled(st: &BlueGreenDeploymentStatus, wait_scale_down: bool) -> bool {
    let still = matches!(st.phase, Some(Phase::Healthy | Phase::Paused | Phase::Degraded | Phase::Aborted));
    still && !(wait_scale_down && st.scale_down_at.is_some())
}

/// How often a waiting caller looks again while a process starts or a check is pending.
const POLL: Duration = Duration::from_millis(250);

/// Runs rounds until the rollout settles (see [`settled`]), calling `progress` after each with
/// the stored status and the round's plan. Requests apply to the first round only, as a CLI
/// invocation asks once.
pub async fn settle(
    hosts: &[HostConn],
    app: &App,
    spec: &BlueGreenDeploymentSpec,
    status: &mut BlueGreenDeploymentStatus,
    mut req: Requests,
    wait_scale_down: bool,
    mut progress: impl FnMut(&BlueGreenDeploymentStatus, &Plan),
) -> Result<(), Error> {
    loop {
        // Without a cluster there is no Backup to ask: a backup gate holds (Paused, saying so).
        let p = engine::round(hosts, app, spec, status, req, None).await?;
        req = Requests::default();
        *status = status_after(status, &p, status.observed_generation);
        progress(status, &p);
        if settled(status, wait_scale_down) && p.switch.is_none() {
            return Ok(());
        }
        let wait = p.requeue.map_or(POLL, |r| r.min(POLL * 4));
        tokio::time::sleep(wait).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn host(name: &str, labels: serde_json::Value) -> Host {
        serde_json::from_value(json!({
            "apiVersion": "nova.infra.dev/v1alpha1", "kind": "Host",
            "metadata": {"name": name, "labels": labels},
            "spec": {"address": "192.0.2.1", "sshKeySecretRef": {"name": "k", "key": "k"}},
        }))
        .unwrap()
    }

    #[test]
    fn selectors_pick_by_name_or_labels() {
        let hosts = [
            host("a", json!({"role": "web", "zone": "x"})),
            host("b", json!({"role": "web"})),
            host("c", json!({"role": "gpu"})),
        ];
        let pick = |sel: serde_json::Value| -> Vec<String> {
            let sel: HostSelector = serde_json::from_value(sel).unwrap();
            select(&hosts, &sel).into_iter().map(|h| h.name_any()).collect()
        };
        assert_eq!(pick(json!({"names": ["c", "a"]})), ["a", "c"]);
        assert_eq!(pick(json!({"selector": {"matchLabels": {"role": "web"}}})), ["a", "b"]);
        assert_eq!(
            pick(json!({"selector": {"matchExpressions": [{"key": "zone", "operator": "DoesNotExist"}]}})),
            ["b", "c"]
        );
        assert_eq!(
            pick(
                json!({"selector": {"matchExpressions": [{"key": "role", "operator": "In", "values": ["gpu"]}]}})
            ),
            ["c"]
        );
        assert!(pick(json!({})).is_empty());
    }
}
