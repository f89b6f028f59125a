//! `nova bench platforms`: N Platforms through the operator against the same objects written
//! by a plain client, on the cluster of the current kubeconfig (the dev cluster).

use crate::bench::{Operator, install_crds, metric, namespace, peak_rss_mib, tempfile_dir};

use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Service};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use nova::api::Platform;
use nova::platform::desired;

const PARALLEL_WRITES: usize = 16;

#[derive(Debug)]
pub struct Report {
    pub count: usize,
    pub concurrency: u16,
    pub nova_seconds: f64,
    pub nova_reconciles: u64,
    pub nova_peak_rss_mib: f64,
    pub plain_seconds: f64,
}

impl Report {
    pub fn markdown(&self) -> String {
        format!(
            "| what | Nova operator | plain client (baseline) | ratio |\n|---|---|---|---|\n\
             | {n} Platforms → all Ready / {n} Deployments+Services → all Available | {:.1} s | {:.1} s | {:.2}× |\n\
             | reconciles (operator concurrency {}) | {} ({:.0}/s) | – | – |\n\
             | operator peak RSS | {:.0} MiB | – | – |\n",
            self.nova_seconds,
            self.plain_seconds,
            self.nova_seconds / self.plain_seconds,
            self.concurrency,
            self.nova_reconciles,
            self.nova_reconciles as f64 / self.nova_seconds,
            self.nova_peak_rss_mib,
            n = self.count,
        )
    }
}

fn platform(i: usize) -> Platform {
    serde_json::from_value(json!({
        "apiVersion": "nova.infra.dev/v1alpha1", "kind": "Platform",
        "metadata": {"name": format!("app-{i:05}")},
        "spec": {"image": "ghcr.io/acme/app:1.0", "replicas": 1},
    }))
    .expect("platform")
}

/// Polls until `done` says every object is there.
async fn wait_all<F, Fut>(mut done: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<bool>>,
{
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tick.tick().await;
        if done().await? {
            return Ok(());
        }
    }
}

fn available(d: &Deployment) -> bool {
    d.status.as_ref().and_then(|s| s.available_replicas).unwrap_or(0) >= 1
}

async fn plain_client(client: &Client, count: usize) -> anyhow::Result<f64> {
    let ns = namespace(client, "bench-plain").await?;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let services: Api<Service> = Api::namespaced(client.clone(), &ns);
    let apply = PatchParams::apply("plain-bench").force();
    let started = Instant::now();
    stream::iter(0..count)
        .map(|i| {
            let (deployments, services, apply) = (deployments.clone(), services.clone(), apply.clone());
            let ns = ns.clone();
            async move {
                let mut p = platform(i);
                p.metadata.namespace = Some(ns);
                let c = desired::children(&p);
                let name = p.name_any();
                deployments.patch(&name, &apply, &Patch::Apply(&c.deployment)).await?;
                services.patch(&name, &apply, &Patch::Apply(&c.service)).await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(PARALLEL_WRITES)
        .try_collect::<Vec<_>>()
        .await?;
    wait_all(|| {
        let deployments = deployments.clone();
        async move {
            Ok(deployments.list(&ListParams::default()).await?.items.iter().filter(|d| available(d)).count()
                >= count)
        }
    })
    .await?;
    let took = started.elapsed().as_secs_f64();
    Api::<Namespace>::all(client.clone()).delete(&ns, &DeleteParams::background()).await?;
    Ok(took)
}

async fn nova(client: &Client, count: usize, concurrency: u16) -> anyhow::Result<(f64, u64, f64)> {
    let ns = namespace(client, "bench-nova").await?;
    let state = tempfile_dir()?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let operator = Operator::start(&ns, concurrency, &state, port)?;
    let platforms: Api<Platform> = Api::namespaced(client.clone(), &ns);
    let started = Instant::now();
    stream::iter(0..count)
        .map(|i| {
            let platforms = platforms.clone();
            async move { platforms.create(&PostParams::default(), &platform(i)).await.map(drop) }
        })
        .buffer_unordered(PARALLEL_WRITES)
        .try_collect::<Vec<_>>()
        .await?;
    wait_all(|| {
        let platforms = platforms.clone();
        async move {
            let list = platforms.list(&ListParams::default()).await?;
            let ready = list
                .items
                .iter()
                .filter(|p| {
                    p.status.as_ref().is_some_and(|s| {
                        s.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True")
                    })
                })
                .count();
            Ok(ready >= count)
        }
    })
    .await?;
    let took = started.elapsed().as_secs_f64();
    let reconciles = metric(port, "nova_reconcile_total").await?;
    let rss = peak_rss_mib(operator.0.id());
    drop(operator);
    Api::<Namespace>::all(client.clone()).delete(&ns, &DeleteParams::background()).await?;
    let _ = std::fs::remove_dir_all(&state);
    Ok((took, reconciles, rss))
}

/// Runs both sides, plain client first, on the same cluster.
pub async fn platforms(client: Client, count: usize, concurrency: u16) -> anyhow::Result<Report> {
    install_crds(&client).await?;
    eprintln!("plain client: {count} Deployments + Services ...");
    let plain_seconds = plain_client(&client, count).await?;
    eprintln!("nova: {count} Platforms ...");
    let (nova_seconds, nova_reconciles, nova_peak_rss_mib) = nova(&client, count, concurrency).await?;
    Ok(Report { count, concurrency, nova_seconds, nova_reconciles, nova_peak_rss_mib, plain_seconds })
}
