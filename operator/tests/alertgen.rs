//! AlertRules generated from other kinds on the simulated cluster: created for a Backup with
//! objectives, a TlsCertificate, a BlueGreenDeployment and a TrainingJob, owned by them;
//! removed when the object no longer asks for alerts or is deleted (no garbage collector runs
//! here: Nova removes them itself); an AlertRule of the same name Nova did not make is left
//! alone.

use std::time::Duration;

use anyhow::{Context, Result};
use kube::api::{DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::GroupVersionKind;
use kube::discovery::ApiResource;
use kube::{Api, ResourceExt};
use nova::alertgen::FOR_LABEL;
use nova::api::AlertRule;
use serde_json::json;
use test_cluster::{Mode, eventually, shared};

mod common;

const WAIT: Duration = Duration::from_secs(60);

fn resource(kind: &str) -> ApiResource {
    let plural = format!("{}s", kind.to_lowercase());
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("nova.infra.dev", "v1alpha1", kind), &plural)
}

/// Creates the first example of `kind` as `name` in `ns`, with `patch` merged into its spec.
async fn create(
    client: &kube::Client,
    ns: &str,
    kind: &str,
    name: &str,
    patch: serde_json::Value,
) -> Result<String> {
    let (_, mut v) =
        common::example_objects()?.into_iter().find(|(_, v)| v["kind"] == kind).context(kind.to_owned())?;
    v["metadata"] = json!({"name": name, "namespace": ns});
    common::merge(&mut v["spec"], patch);
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &resource(kind));
    let created = api.create(&PostParams::default(), &serde_json::from_value(v)?).await?;
    created.uid().context("uid")
}

#[tokio::test]
async fn alerts_are_generated_owned_and_removed_with_their_objects() -> Result<()> {
    let cp = shared(Mode::Simulated).await?;
    let client = cp.client().await?;
    common::install_crds(&client).await?;
    let ns = cp.namespace(&client, "alertgen").await?;
    let rules: Api<AlertRule> = Api::namespaced(client.clone(), &ns);
    // Someone's own AlertRule that has the name Nova would generate for the certificate.
    let mine: AlertRule = serde_json::from_value(json!({"metadata": {"name": "tlscertificate-site"},
        "spec": {"groups": [{"name": "mine", "rules": [{"alert": "Mine", "expr": "vector(1)", "for": "1m"}]}]}}))?;
    rules.create(&PostParams::default(), &mine).await?;
    let op = common::Operator::start(client.clone(), &ns).await?;

    let backup =
        create(&client, &ns, "Backup", "nightly", json!({"objectives": {"rpoSeconds": 3600}})).await?;
    create(&client, &ns, "TlsCertificate", "site", json!({})).await?;
    let rollout = create(&client, &ns, "BlueGreenDeployment", "shop", json!({})).await?;
    let job = create(&client, &ns, "TrainingJob", "fit", json!({})).await?;
    let owned_by = |a: &AlertRule, uid: &str| a.owner_references().iter().any(|o| o.uid == uid);
    for (name, uid, alert) in [
        ("backup-nightly", &backup, "NovaBackupStale"),
        ("bluegreendeployment-shop", &rollout, "NovaRolloutDegraded"),
        ("trainingjob-fit", &job, "NovaTrainingStalled"),
    ] {
        eventually(&format!("AlertRule {name}"), WAIT, || async {
            let Some(a) = rules.get_opt(name).await? else { return anyhow::Ok(false) };
            let alerts: Vec<&str> =
                a.spec.groups.iter().flat_map(|g| &g.rules).map(|r| r.alert.as_str()).collect();
            anyhow::Ok(owned_by(&a, uid) && a.labels().contains_key(FOR_LABEL) && alerts.contains(&alert))
        })
        .await?;
    }
    let kept = rules.get("tlscertificate-site").await?;
    assert!(kept.labels().get(FOR_LABEL).is_none() && kept.spec.groups[0].name == "mine", "{kept:?}");

    // No objectives: no alerts. Deleted: its alerts go too (Nova, not a garbage collector).
    let backups: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &resource("Backup"));
    backups
        .patch("nightly", &PatchParams::default(), &Patch::Merge(json!({"spec": {"objectives": null}})))
        .await?;
    let jobs: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &resource("TrainingJob"));
    jobs.delete("fit", &DeleteParams::default()).await?;
    for name in ["backup-nightly", "trainingjob-fit"] {
        eventually(&format!("AlertRule {name} removed"), WAIT, || async {
            anyhow::Ok(rules.get_opt(name).await?.is_none())
        })
        .await?;
    }
    assert!(rules.get_opt("bluegreendeployment-shop").await?.is_some());
    op.stop().await
}
