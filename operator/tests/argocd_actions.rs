//! The Argo CD actions of a BlueGreenDeployment (`charts/nova/argocd/actions/`), run as Argo CD
//! runs them (gopher-lua, Argo CD's library set, through `nova-gitops-check`), against a live
//! operator: discovery offers promote on a paused rollout and nothing on a settled one, and the
//! object the promote action returns, patched in as Argo CD patches it, promotes the rollout.

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::wait::await_condition;
use nova::api::bluegreen::{BlueGreenDeployment, Color, Phase};
use serde_json::{Value, json};
use test_cluster::{Mode, shared};

mod common;

const ACTIONS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../charts/nova/argocd/actions");

/// Runs `nova-gitops-check <mode> <script>` over `obj`.
fn lua(mode: &str, script: &str, obj: &Value) -> Result<Value> {
    let bin = test_cluster::gitops_check_dir()?.join("nova-gitops-check");
    let mut child = Command::new(bin)
        .args([mode, &format!("{ACTIONS}/{script}")])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    child.stdin.take().context("stdin")?.write_all(&serde_json::to_vec(obj)?)?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("{script}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

async fn wait_for(
    api: &Api<BlueGreenDeployment>,
    what: &str,
    cond: impl Fn(&BlueGreenDeployment) -> bool,
) -> Result<BlueGreenDeployment> {
    let found = tokio::time::timeout(
        Duration::from_secs(90),
        await_condition(api.clone(), "shop", |b: Option<&BlueGreenDeployment>| b.is_some_and(&cond)),
    )
    .await;
    match found {
        Ok(Ok(Some(b))) => Ok(b),
        _ => bail!("{what}: the status is {:#?}", api.get("shop").await?.status),
    }
}

fn phase(b: &BlueGreenDeployment) -> Option<Phase> {
    b.status.as_ref().and_then(|s| s.phase)
}

fn active(b: &BlueGreenDeployment) -> Option<Color> {
    b.status.as_ref().and_then(|s| s.active_color)
}

#[tokio::test]
async fn argo_cd_promote_action_promotes_a_paused_rollout() -> Result<()> {
    let cp = shared(Mode::Simulated).await?;
    let client = cp.client().await?;
    common::install_crds(&client).await?;
    let ns = cp.namespace(&client, "argo-actions").await?;
    let op = common::Operator::start(client.clone(), &ns).await?;
    // Scraping from the start, so the platforms dashboard can be proven on this rollout.
    let prom = common::dashboards::scraping(op.port())?;
    let api: Api<BlueGreenDeployment> = Api::namespaced(client.clone(), &ns);
    let container =
        |image: &str| json!([{"name": "app", "image": image, "ports": [{"containerPort": 8080}]}]);
    let b: BlueGreenDeployment = serde_json::from_value(json!({
        "apiVersion": "nova.infra.dev/v1alpha1", "kind": "BlueGreenDeployment", "metadata": {"name": "shop"},
        "spec": {"replicas": 1, "autoPromotionEnabled": false,
                 "template": {"spec": {"containers": container("shop:1")}}}}))?;
    api.create(&PostParams::default(), &b).await?;
    let settled = wait_for(&api, "Healthy on blue", |b| phase(b) == Some(Phase::Healthy)).await?;
    let offered = lua("discover", "discovery.lua", &serde_json::to_value(&settled)?)?;
    assert_eq!(offered, json!({"promote": {"disabled": true}, "abort": {"disabled": true}}), "settled");

    let patch = json!({"spec": {"template": {"spec": {"containers": container("shop:2")}}}});
    api.patch("shop", &PatchParams::default(), &Patch::Merge(patch)).await?;
    let paused = wait_for(&api, "Paused with a preview", |b| phase(b) == Some(Phase::Paused)).await?;
    let obj = serde_json::to_value(&paused)?;
    let offered = lua("discover", "discovery.lua", &obj)?;
    assert_eq!(offered["promote"], json!({"disabled": false}), "{offered}");

    // Argo CD patches the difference between the object and what the action returned.
    let returned = lua("action", "promote.lua", &obj)?;
    let annotations = returned["metadata"]["annotations"].clone();
    let preview = paused.status.as_ref().and_then(|s| s.preview_revision.clone()).context("preview")?;
    assert_eq!(annotations[nova::bluegreen::PROMOTE_ANNOTATION], json!(preview));
    let patch = json!({"metadata": {"annotations": annotations}});
    api.patch("shop", &PatchParams::default(), &Patch::Merge(patch)).await?;
    let promoted = wait_for(&api, "promoted to green", |b| {
        phase(b) == Some(Phase::Healthy) && active(b) == Some(Color::Green)
    })
    .await?;
    assert_eq!(promoted.status.and_then(|s| s.active_revision), Some(preview));
    common::dashboards::assert_every_panel_has_data(
        "platforms",
        prom.url(),
        std::time::Duration::from_secs(90),
    )
    .await?;
    op.stop().await
}
