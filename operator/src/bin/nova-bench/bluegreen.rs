//! `nova bench bluegreen`: promote/abort cycles through the operator, timed from the request
//! (`nova rollout promote|abort`) to a watcher seeing the active Service's selector change;
//! beside it, the floor: a plain client patching a Service's selector, seen by the same kind
//! of watcher.

use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Service};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use serde_json::json;
use tokio::sync::mpsc;

use crate::bench::{Operator, install_crds, namespace, p50_p99, tempfile_dir};
use nova::api::bluegreen::{BlueGreenDeployment, Color, Phase};
use nova::bluegreen::desired::selected;

#[derive(Debug)]
pub struct Report {
    pub cycles: usize,
    pub promote_ms: Vec<f64>,
    pub rollback_ms: Vec<f64>,
    pub plain_ms: Vec<f64>,
    pub total_seconds: f64,
}

impl Report {
    pub fn markdown(&mut self) -> String {
        let (pp50, pp99) = p50_p99(&mut self.promote_ms);
        let (rp50, rp99) = p50_p99(&mut self.rollback_ms);
        let (bp50, bp99) = p50_p99(&mut self.plain_ms);
        format!(
            "| {n} cycles | p50 | p99 | p50 / plain patch |\n|---|---|---|---|\n\
             | switch: `nova rollout promote` → active selector seen changed | {pp50:.1} ms | {pp99:.1} ms | {:.1}× |\n\
             | rollback: `nova rollout abort` → active selector seen back | {rp50:.1} ms | {rp99:.1} ms | {:.1}× |\n\
             | floor: plain client patches a selector → seen changed | {bp50:.1} ms | {bp99:.1} ms | 1× |\n\
             \nWhole run (including starting {n} previews): {:.0} s.\n",
            pp50 / bp50,
            rp50 / bp50,
            self.total_seconds,
            n = self.cycles,
        )
    }
}

/// Sends the selection of Service `name` each time a watch event shows it, with the time seen.
fn watch_selector(
    api: Api<Service>,
    name: &str,
) -> mpsc::UnboundedReceiver<(Instant, Option<(Color, String)>)> {
    let (tx, rx) = mpsc::unbounded_channel();
    let cfg = watcher::Config::default().fields(&format!("metadata.name={name}"));
    tokio::spawn(async move {
        let mut events = std::pin::pin!(watcher(api, cfg).default_backoff().applied_objects());
        while let Some(Ok(svc)) = events.next().await {
            if tx.send((Instant::now(), selected(&svc))).is_err() {
                return;
            }
        }
    });
    rx
}

/// Waits until the watcher reports `want`; returns when it was seen.
async fn seen(
    rx: &mut mpsc::UnboundedReceiver<(Instant, Option<(Color, String)>)>,
    want: &(Color, String),
) -> anyhow::Result<Instant> {
    let deadline = Duration::from_secs(60);
    loop {
        let (at, sel) = tokio::time::timeout(deadline, rx.recv())
            .await
            .map_err(|_| anyhow::anyhow!("the selector never became {want:?}"))?
            .ok_or_else(|| anyhow::anyhow!("the watch ended"))?;
        if sel.as_ref() == Some(want) {
            return Ok(at);
        }
    }
}

async fn wait_bg(
    api: &Api<BlueGreenDeployment>,
    what: &str,
    cond: impl Fn(&BlueGreenDeployment) -> bool,
) -> anyhow::Result<BlueGreenDeployment> {
    let found = tokio::time::timeout(
        Duration::from_secs(120),
        kube::runtime::wait::await_condition(api.clone(), "bench", move |b: Option<&BlueGreenDeployment>| {
            b.is_some_and(&cond)
        }),
    )
    .await
    .map_err(|_| anyhow::anyhow!("bench rollout never became {what}"))??;
    found.ok_or_else(|| anyhow::anyhow!("bench rollout deleted"))
}

fn fresh_phase(b: &BlueGreenDeployment, phase: Phase) -> bool {
    let st = b.status.as_ref();
    st.and_then(|s| s.observed_generation) == b.metadata.generation && st.and_then(|s| s.phase) == Some(phase)
}

async fn nova(client: &Client, cycles: usize) -> anyhow::Result<(Vec<f64>, Vec<f64>)> {
    let ns = namespace(client, "bench-bg").await?;
    let state = tempfile_dir()?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let operator = Operator::start(&ns, 4, &state, port)?;
    let api: Api<BlueGreenDeployment> = Api::namespaced(client.clone(), &ns);
    let image = |i: usize| format!("ghcr.io/acme/app:{i}");
    let bg: BlueGreenDeployment = serde_json::from_value(json!({
        "apiVersion": "nova.infra.dev/v1alpha1", "kind": "BlueGreenDeployment",
        "metadata": {"name": "bench"},
        "spec": {"replicas": 1, "autoPromotionEnabled": false, "scaleDownDelaySeconds": 3600,
                 "template": {"spec": {"containers": [{"name": "app", "image": image(0),
                                                        "ports": [{"containerPort": 8080}]}]}}},
    }))?;
    api.create(&PostParams::default(), &bg).await?;
    wait_bg(&api, "Healthy", |b| fresh_phase(b, Phase::Healthy)).await?;
    let mut rx = watch_selector(Api::namespaced(client.clone(), &ns), "bench");

    let (mut promote, mut rollback) = (Vec::new(), Vec::new());
    for i in 1..=cycles {
        let patch =
            json!([{"op": "replace", "path": "/spec/template/spec/containers/0/image", "value": image(i)}]);
        api.patch("bench", &PatchParams::default(), &Patch::<()>::Json(serde_json::from_value(patch)?))
            .await?;
        let paused = wait_bg(&api, "Paused", |b| fresh_phase(b, Phase::Paused)).await?;
        let st = paused.status.unwrap_or_default();
        let (Some(preview), Some(rev), Some(active), Some(active_rev)) =
            (st.preview_color, st.preview_revision, st.active_color, st.active_revision)
        else {
            anyhow::bail!("a paused rollout names its colours");
        };

        let asked = Instant::now();
        nova::rollout::promote(client, &ns, "bench").await?;
        promote.push(seen(&mut rx, &(preview, rev)).await?.duration_since(asked).as_secs_f64() * 1000.0);
        wait_bg(&api, "Healthy", |b| fresh_phase(b, Phase::Healthy)).await?;

        let asked = Instant::now();
        nova::rollout::abort(client, &ns, "bench").await?;
        rollback
            .push(seen(&mut rx, &(active, active_rev)).await?.duration_since(asked).as_secs_f64() * 1000.0);
        wait_bg(&api, "Aborted", |b| fresh_phase(b, Phase::Aborted)).await?;
        if i % 10 == 0 {
            eprintln!("  {i}/{cycles} cycles");
        }
    }
    drop(operator);
    Api::<Namespace>::all(client.clone()).delete(&ns, &DeleteParams::background()).await?;
    let _ = std::fs::remove_dir_all(&state);
    Ok((promote, rollback))
}

/// The floor: the same selector flip done by hand, as a blue-green script would.
async fn plain(client: &Client, cycles: usize) -> anyhow::Result<Vec<f64>> {
    let ns = namespace(client, "bench-bg-plain").await?;
    let services: Api<Service> = Api::namespaced(client.clone(), &ns);
    let selector = |c: Color| json!({"nova.infra.dev/bluegreen": "bench", "nova.infra.dev/color": c.as_str(), "nova.infra.dev/revision": "r"});
    let svc: Service = serde_json::from_value(json!({
        "metadata": {"name": "bench"},
        "spec": {"selector": selector(Color::Blue), "ports": [{"port": 80, "targetPort": 8080}]},
    }))?;
    services.create(&PostParams::default(), &svc).await?;
    let mut rx = watch_selector(services.clone(), "bench");
    seen(&mut rx, &(Color::Blue, "r".into())).await?;
    let mut out = Vec::new();
    let mut color = Color::Blue;
    for _ in 0..cycles * 2 {
        color = color.other();
        let asked = Instant::now();
        let patch = json!({"spec": {"selector": selector(color)}});
        services.patch("bench", &PatchParams::default(), &Patch::Merge(&patch)).await?;
        out.push(seen(&mut rx, &(color, "r".into())).await?.duration_since(asked).as_secs_f64() * 1000.0);
    }
    Api::<Namespace>::all(client.clone()).delete(&ns, &DeleteParams::background()).await?;
    Ok(out)
}

pub async fn run(client: Client, cycles: usize) -> anyhow::Result<Report> {
    install_crds(&client).await?;
    let started = Instant::now();
    eprintln!("nova: {cycles} promote/abort cycles ...");
    let (promote_ms, rollback_ms) = nova(&client, cycles).await?;
    let total_seconds = started.elapsed().as_secs_f64();
    eprintln!("plain client: {} selector patches ...", cycles * 2);
    let plain_ms = plain(&client, cycles).await?;
    Ok(Report { cycles, promote_ms, rollback_ms, plain_ms, total_seconds })
}
