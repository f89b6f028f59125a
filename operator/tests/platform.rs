//! The Platform controller on the simulated cluster: children, readiness, drift, orphans,
//! deletion, dependencies, printer columns, `kubectl wait`, and RBAC as the chart grants it.

use anyhow::{Context, Result};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::wait::await_condition;
use kube::{Api, Client, ResourceExt};
use nova::api::Platform;
use nova::api::bluegreen::BlueGreenDeployment;
use serde_json::json;
use test_cluster::{ControlPlane, Mode, eventually, shared};

/// A password a test Secret holds (registered for the secret scan).
const DB_PASSWORD: &str = "hunter2-shop-db-password";
mod common;
use common::{Operator, TIMEOUT, install_crds};

async fn setup(prefix: &str) -> Result<(&'static ControlPlane, Client, String)> {
    let cp = shared(Mode::Simulated).await?;
    let client = cp.client().await?;
    install_crds(&client).await?;
    let ns = cp.namespace(&client, prefix).await?;
    Ok((cp, client, ns))
}

fn platform(name: &str, spec: serde_json::Value) -> Platform {
    serde_json::from_value(json!({
        "apiVersion": "nova.infra.dev/v1alpha1", "kind": "Platform",
        "metadata": {"name": name}, "spec": spec,
    }))
    .unwrap()
}

fn condition(p: &Platform, type_: &str) -> Option<(String, String, String)> {
    p.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

fn ready(p: Option<&Platform>) -> bool {
    p.and_then(|p| condition(p, "Ready")).is_some_and(|c| c.0 == "True")
}

#[tokio::test]
async fn platform_lifecycle_children_drift_orphans_and_deletion() -> Result<()> {
    let (cp, client, ns) = setup("plat").await?;
    let op = Operator::start(client.clone(), &ns).await?;
    let platforms: Api<Platform> = Api::namespaced(client.clone(), &ns);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let services: Api<Service> = Api::namespaced(client.clone(), &ns);
    let ingresses: Api<Ingress> = Api::namespaced(client.clone(), &ns);

    let spec = json!({"image": "ghcr.io/acme/shop:1.0", "replicas": 2, "domains": ["shop.example.com"],
                      "health": {"path": "/healthz"}});
    platforms.create(&PostParams::default(), &platform("shop", spec)).await?;
    tokio::time::timeout(TIMEOUT, await_condition(platforms.clone(), "shop", ready))
        .await
        .context("Platform never became Ready")??;

    let p = platforms.get("shop").await?;
    let status = p.status.clone().unwrap();
    assert_eq!(status.ready_replicas, Some(2));
    assert_eq!(status.observed_generation, p.metadata.generation);
    assert_eq!(status.url.as_deref(), Some("http://shop.example.com"));
    assert!(status.active_revision.is_some());
    for owner in [
        deployments.get("shop").await?.owner_references().to_vec(),
        services.get("shop").await?.owner_references().to_vec(),
        ingresses.get("shop").await?.owner_references().to_vec(),
    ] {
        assert_eq!(owner[0].uid, p.uid().unwrap(), "children are controlled by the Platform");
    }

    // kubectl sees the printer columns and `kubectl wait` returns.
    let out = cp.kubectl().args(["get", "platforms", "-n", &ns]).output()?;
    let table = String::from_utf8(out.stdout)?;
    let header: Vec<&str> = table.lines().next().unwrap_or_default().split_whitespace().collect();
    assert_eq!(header, ["NAME", "READY", "REPLICAS", "AVAILABLE", "URL", "AGE"], "{table}");
    assert!(table.lines().nth(1).unwrap_or_default().contains("True"), "{table}");
    let wait = cp
        .kubectl()
        .args(["wait", "--for=condition=Ready", "platform/shop", "-n", &ns, "--timeout=30s"])
        .output()?;
    assert!(wait.status.success(), "{}", String::from_utf8_lossy(&wait.stderr));
    let listed = cp.kubectl().args(["get", "nova", "-n", &ns, "-o", "name"]).output()?;
    assert!(String::from_utf8(listed.stdout)?.contains("platform.nova.infra.dev/shop"));

    // Drift: someone scales the Deployment by hand; Nova puts it back.
    deployments
        .patch(
            "shop",
            &PatchParams::apply("someone").force(),
            &Patch::Apply(json!({
            "apiVersion": "apps/v1", "kind": "Deployment", "spec": {"replicas": 5}})),
        )
        .await?;
    eventually("the hand-made replica count to be reverted", TIMEOUT, || {
        let deployments = deployments.clone();
        async move { Ok::<_, kube::Error>(deployments.get("shop").await?.spec.unwrap().replicas == Some(2)) }
    })
    .await?;

    // Orphan: the domain goes away, so does the Ingress.
    platforms
        .patch("shop", &PatchParams::default(), &Patch::Merge(json!({"spec": {"domains": null}})))
        .await?;
    eventually("the Ingress to be deleted", TIMEOUT, || {
        let ingresses = ingresses.clone();
        async move { Ok::<_, kube::Error>(ingresses.get_opt("shop").await?.is_none()) }
    })
    .await?;
    // Status is written after the children in the same reconcile: await it, do not race it.
    let want = Some(format!("http://shop.{ns}.svc"));
    eventually("the in-cluster URL in status", TIMEOUT, || {
        let (platforms, want) = (platforms.clone(), want.clone());
        async move { Ok::<_, kube::Error>(platforms.get("shop").await?.status.and_then(|s| s.url) == want) }
    })
    .await?;

    // Deleting the Platform removes what it created (garbage collection through owner refs).
    platforms.delete("shop", &DeleteParams::foreground()).await?;
    eventually("children to be deleted", TIMEOUT, || {
        let (d, s) = (deployments.clone(), services.clone());
        async move {
            Ok::<_, kube::Error>(d.get_opt("shop").await?.is_none() && s.get_opt("shop").await?.is_none())
        }
    })
    .await?;
    op.stop().await
}

#[tokio::test]
async fn missing_secret_degrades_with_a_message_then_recovers() -> Result<()> {
    let (_, client, ns) = setup("deps").await?;
    let op = Operator::start(client.clone(), &ns).await?;
    let platforms: Api<Platform> = Api::namespaced(client.clone(), &ns);
    let spec = json!({"image": "app:1", "envFrom": [{"secretRef": {"name": "db-credentials"}}]});
    platforms.create(&PostParams::default(), &platform("api", spec)).await?;

    let degraded =
        |p: Option<&Platform>| p.and_then(|p| condition(p, "Degraded")).is_some_and(|c| c.0 == "True");
    tokio::time::timeout(TIMEOUT, await_condition(platforms.clone(), "api", degraded)).await??;
    let p = platforms.get("api").await?;
    let (_, reason, message) = condition(&p, "Degraded").unwrap();
    assert_eq!(reason, "MissingDependency");
    assert!(
        message.contains("\"db-credentials\"") && message.contains("spec.envFrom[0].secretRef"),
        "{message}"
    );
    assert!(
        Api::<Deployment>::namespaced(client.clone(), &ns).get_opt("api").await?.is_none(),
        "nothing is applied while a dependency is missing"
    );
    // Blocked on the user, not failing: counted apart from errors, and said in Stalled.
    let metrics = op.metrics().await?;
    assert!(
        metrics.contains(r#"nova_reconcile_blocked_total{kind="Platform",reason="MissingDependency"}"#),
        "{metrics}"
    );
    assert!(!metrics.contains("nova_reconcile_errors_total{"), "{metrics}");
    let p = platforms.get("api").await?;
    let stalled = p.status.unwrap_or_default().conditions.into_iter().find(|c| c.type_ == "Stalled");
    assert_eq!(stalled.map(|c| (c.status, c.reason)), Some(("True".into(), "MissingDependency".into())));

    let secret: Secret = serde_json::from_value(json!({"metadata": {"name": "db-credentials"},
                                                      "stringData": {"PASSWORD": DB_PASSWORD}}))?;
    test_cluster::record::secret(DB_PASSWORD);
    Api::<Secret>::namespaced(client.clone(), &ns).create(&PostParams::default(), &secret).await?;
    tokio::time::timeout(TIMEOUT, await_condition(platforms.clone(), "api", ready)).await??;
    let recovered = platforms.get("api").await?;
    let stalled =
        recovered.status.clone().unwrap_or_default().conditions.into_iter().find(|c| c.type_ == "Stalled");
    assert_eq!(stalled.map(|c| c.status), Some("False".into()), "no longer stalled");
    let text = serde_json::to_string(&recovered.status)?;
    assert!(!text.contains(DB_PASSWORD), "secret values never reach status");
    op.stop().await
}

#[tokio::test]
async fn host_targets_check_the_spec_then_need_hosts() -> Result<()> {
    let (_, client, ns) = setup("hosts").await?;
    let op = Operator::start(client.clone(), &ns).await?;
    let platforms: Api<Platform> = Api::namespaced(client.clone(), &ns);
    let reason_is = |want: &'static str| {
        move |p: Option<&Platform>| p.and_then(|p| condition(p, "Ready")).is_some_and(|c| c.1 == want)
    };
    // What hosts cannot run is refused before anything is made, naming the field.
    let spec =
        json!({"image": "app:1", "domains": ["edge.example.com"], "target": {"hosts": {"names": ["vps-1"]}}});
    platforms.create(&PostParams::default(), &platform("edge", spec)).await?;
    tokio::time::timeout(TIMEOUT, await_condition(platforms.clone(), "edge", reason_is("InvalidSpec")))
        .await??;
    let p = platforms.get("edge").await?;
    assert!(condition(&p, "Ready").is_some_and(|c| c.2.contains("spec.command")), "{:?}", p.status);
    assert!(Api::<Deployment>::namespaced(client.clone(), &ns).get_opt("edge").await?.is_none());
    assert!(Api::<BlueGreenDeployment>::namespaced(client.clone(), &ns).get_opt("edge").await?.is_none());

    // A valid spec on a Host that does not exist: the rollout says so, through the Platform.
    let patch = json!({"spec": {"command": ["/usr/bin/app"]}});
    platforms.patch("edge", &PatchParams::default(), &Patch::Merge(&patch)).await?;
    tokio::time::timeout(TIMEOUT, await_condition(platforms.clone(), "edge", reason_is("BlueGreen")))
        .await??;
    let p = platforms.get("edge").await?;
    assert!(condition(&p, "Ready").is_some_and(|c| c.2.contains("selects no Host")), "{:?}", p.status);
    assert!(Api::<Deployment>::namespaced(client, &ns).get_opt("edge").await?.is_none());
    op.stop().await
}
