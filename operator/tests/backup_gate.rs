//! A release that waits for a good backup, end to end on the simulated cluster with a real
//! Backup (files on a test host, restored in a drill): a new revision asks the Backup for a run
//! and is promoted only after that run's artifact is written and verified; when the run fails,
//! the rollout is held Paused, saying why, and traffic stays on the old revision.

use std::time::Duration;

use anyhow::{Context, Result};
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use nova::api::backup::Backup;
use nova::api::bluegreen::{BlueGreenDeployment, Phase};
use serde_json::json;
use test_cluster::{Mode, eventually, shared};

mod common;

const WAIT: Duration = Duration::from_secs(120);

#[tokio::test]
async fn a_release_waits_for_a_verified_backup_and_a_failed_one_holds_it() -> Result<()> {
    let cp = shared(Mode::Simulated).await?;
    let client = cp.client().await?;
    common::install_crds(&client).await?;
    let ns = cp.namespace(&client, "backup-gate").await?;
    let (th, host) = common::app_host(&client, &ns, "bg").await?;
    th.ssh("mkdir -p /srv/site && echo hello > /srv/site/index.html")?;
    let backups: Api<Backup> = Api::namespaced(client.clone(), &ns);
    let b: Backup = serde_json::from_value(json!({
        "apiVersion": "nova.infra.dev/v1alpha1", "kind": "Backup", "metadata": {"name": "site"},
        "spec": {"schedule": "0 3 1 1 *",
                 "source": {"files": {"hostRef": {"name": host}, "paths": ["/srv/site"]}},
                 "destination": {"hostPath": {"hostRef": {"name": host}, "path": "/var/backups/nova"}},
                 "verify": {"restoreTest": true}}}))?;
    backups.create(&PostParams::default(), &b).await?;
    let rollouts: Api<BlueGreenDeployment> = Api::namespaced(client.clone(), &ns);
    let bg: BlueGreenDeployment = serde_json::from_value(json!({
        "apiVersion": "nova.infra.dev/v1alpha1", "kind": "BlueGreenDeployment", "metadata": {"name": "shop"},
        "spec": {"replicas": 1, "scaleDownDelaySeconds": 0,
                 "template": {"metadata": {"labels": {"app": "shop"}},
                              "spec": {"containers": [{"name": "app", "image": "shop:1", "ports": [{"containerPort": 8080}]}]}},
                 "backupGate": {"backupRef": {"name": "site"}, "maxAgeSeconds": 600}}}))?;
    rollouts.create(&PostParams::default(), &bg).await?;
    let op = common::Operator::start(client.clone(), &ns).await?;

    let status = || async { anyhow::Ok(rollouts.get("shop").await?.status.unwrap_or_default()) };
    eventually("the first release", WAIT, || async {
        anyhow::Ok(status().await?.phase == Some(Phase::Healthy))
    })
    .await?;
    let first = status().await?.active_revision.context("active revision")?;
    assert!(
        backups.get("site").await?.status.unwrap_or_default().recent.is_empty(),
        "no run before a release needs one"
    );

    // A new revision: the Backup runs on request, its artifact is verified, then the promotion.
    let image = |tag: &str| json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "image": tag, "ports": [{"containerPort": 8080}]}]}}}});
    rollouts.patch("shop", &PatchParams::default(), &Patch::Merge(image("shop:2"))).await?;
    eventually("promoted after the backup", WAIT, || async {
        let st = status().await?;
        anyhow::Ok(
            st.phase == Some(Phase::Healthy) && st.active_revision.as_ref().is_some_and(|r| *r != first),
        )
    })
    .await?;
    let second = status().await?.active_revision.context("active revision")?;
    let bst = backups.get("site").await?.status.unwrap_or_default();
    assert_eq!(bst.recent.len(), 1, "{:?}", bst.recent);
    assert!(bst.recent[0].verified, "{:?}", bst.recent);
    assert!(bst.last_request.as_ref().is_some_and(|r| r.starts_with(&format!("{second}@"))), "{bst:?}");

    // The Backup breaks: the next release is held, saying why, on the old revision.
    let broken =
        json!({"spec": {"source": {"files": {"hostRef": {"name": host}, "paths": ["/srv/missing"]}}}});
    backups.patch("site", &PatchParams::default(), &Patch::Merge(broken)).await?;
    rollouts.patch("shop", &PatchParams::default(), &Patch::Merge(image("shop:3"))).await?;
    eventually("held by the failed backup", WAIT, || async {
        let st = status().await?;
        anyhow::Ok(
            st.phase == Some(Phase::Paused) && st.conditions.iter().any(|c| c.reason == "BackupFailed"),
        )
    })
    .await?;
    let st = status().await?;
    assert_eq!(
        st.active_revision.as_deref(),
        Some(second.as_str()),
        "traffic stays on the last good revision"
    );
    let ready = st.conditions.iter().find(|c| c.type_ == "Ready").context("Ready")?;
    assert!(ready.message.contains("the run of Backup site failed"), "{}", ready.message);
    op.stop().await
}
