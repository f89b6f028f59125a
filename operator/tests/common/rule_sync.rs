//! What a kubelet and a rule-reloading sidecar (or prometheus-operator's rule sync) do for a
//! Prometheus in a cluster, done by the test: the rule files Nova wrote into the cluster are
//! copied into a real Prometheus's rule directory, which is then reloaded. Neither a kubelet
//! running containers nor prometheus-operator (which needs one to run its Prometheus) can run
//! here, so this copy is the one step of the path the test plays itself.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{ApiResource, DynamicObject, ListParams};
use kube::{Api, Client, ResourceExt};
use test_cluster::prometheus::Prometheus;

/// Where the rule files come from.
#[derive(Clone)]
pub enum Source {
    /// ConfigMaps labelled for rule sidecars.
    ConfigMaps,
    /// PrometheusRule objects (their spec is a rule file) with this label, when given — as a
    /// Prometheus object's `ruleSelector` picks them.
    PrometheusRules { selector: Option<(String, String)> },
}

/// Copies rule files until dropped.
pub struct RuleSync {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for RuleSync {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn files(client: &Client, ns: &str, source: &Source) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    match source {
        Source::ConfigMaps => {
            let api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
            let lp = ListParams::default().labels(&format!("{}=true", nova::alerts::targets::RULES_LABEL));
            for cm in api.list(&lp).await? {
                for (k, v) in cm.data.unwrap_or_default() {
                    out.insert(k.replace(".rules.yaml", ".yaml"), v);
                }
            }
        }
        Source::PrometheusRules { selector } => {
            let ar: ApiResource = nova::alerts::targets::prometheus_rule();
            let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &ar);
            let lp = match selector {
                Some((k, v)) => ListParams::default().labels(&format!("{k}={v}")),
                None => ListParams::default(),
            };
            for r in api.list(&lp).await? {
                let file = format!("{ns}-{}.yaml", r.name_any());
                out.insert(file, serde_yaml::to_string(&r.data["spec"])?);
            }
        }
    }
    Ok(out)
}

impl RuleSync {
    pub fn start(client: Client, ns: &str, source: Source, dir: PathBuf, prom: Arc<Prometheus>) -> Self {
        let ns = ns.to_owned();
        let task = tokio::spawn(async move {
            let mut last = BTreeMap::new();
            loop {
                if let Ok(now) = files(&client, &ns, &source).await
                    && now != last
                {
                    for f in last.keys().filter(|k| !now.contains_key(*k)) {
                        let _ = std::fs::remove_file(dir.join(f));
                    }
                    for (f, text) in &now {
                        let _ = std::fs::write(dir.join(f), text);
                    }
                    let p = prom.clone();
                    if tokio::task::spawn_blocking(move || p.reload()).await.is_ok_and(|r| r.is_ok()) {
                        last = now;
                    }
                }
                // Poll interval of the copy, as a sidecar's.
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        Self { task }
    }
}
