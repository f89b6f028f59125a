//! Smoke tests of the API-server-only control plane: the harness must hand out a real,
//! strict kube-apiserver.

use anyhow::{Context, Result};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DynamicObject, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::runtime::{WatchStreamExt, conditions, wait::await_condition, watcher};
use kube::{Api, Client};
use serde_json::json;
use test_cluster::{ControlPlane, Mode, shared};

async fn setup(prefix: &str) -> Result<(&'static ControlPlane, Client, String)> {
    let cp = shared(Mode::ApiServer).await?;
    let client = cp.client().await?;
    let ns = cp.namespace(&client, prefix).await?;
    Ok((cp, client, ns))
}

fn api_status(err: kube::Error) -> kube::core::Status {
    match err {
        kube::Error::Api(status) => *status,
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn version_endpoint_reports_the_pinned_release() -> Result<()> {
    let (_, client, _) = setup("version").await?;
    let info = client.apiserver_version().await?;
    assert_eq!(info.git_version, test_cluster::pinned_version());
    assert_eq!(format!("v{}.{}", info.major, info.minor), {
        let v = test_cluster::pinned_version();
        v[..v.rfind('.').unwrap()].to_owned()
    });
    Ok(())
}

#[tokio::test]
async fn configmap_create_get_and_watch() -> Result<()> {
    let (_, client, ns) = setup("configmap").await?;
    let cms: Api<ConfigMap> = Api::namespaced(client, &ns);

    // Start watching first, so the test sees the events of its own writes.
    let mut events = watcher(cms.clone(), watcher::Config::default()).applied_objects().boxed();
    let cm: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "settings"},
        "data": {"color": "blue"},
    }))?;
    cms.create(&PostParams::default(), &cm).await?;
    let got = cms.get("settings").await?;
    assert_eq!(got.data.unwrap()["color"], "blue");

    cms.patch("settings", &PatchParams::default(), &Patch::Merge(json!({"data": {"color": "green"}})))
        .await?;
    let seen = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        while let Some(cm) = events.try_next().await? {
            if cm.data.as_ref().and_then(|d| d.get("color")).map(String::as_str) == Some("green") {
                return Ok::<_, anyhow::Error>(true);
            }
        }
        Ok(false)
    })
    .await
    .context("no watch event for the patch")??;
    assert!(seen);
    Ok(())
}

#[tokio::test]
async fn crd_cel_rule_rejects_a_violating_object() -> Result<()> {
    let (_, client, ns) = setup("cel").await?;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd: CustomResourceDefinition = serde_json::from_value(json!({
        "metadata": {"name": "ranges.harness.nova.infra.dev"},
        "spec": {
            "group": "harness.nova.infra.dev",
            "names": {"kind": "Range", "plural": "ranges", "singular": "range"},
            "scope": "Namespaced",
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "properties": {"spec": {
                        "type": "object",
                        "properties": {"min": {"type": "integer"}, "max": {"type": "integer"}},
                        "x-kubernetes-validations": [
                            {"rule": "self.min <= self.max", "message": "min must not exceed max"}
                        ],
                    }},
                }},
            }],
        },
    }))?;
    crds.create(&PostParams::default(), &crd).await?;
    let established =
        await_condition(crds, "ranges.harness.nova.infra.dev", conditions::is_crd_established());
    tokio::time::timeout(std::time::Duration::from_secs(30), established).await??;

    let gvk = GroupVersionKind::gvk("harness.nova.infra.dev", "v1", "Range");
    let ranges: Api<DynamicObject> = Api::namespaced_with(client, &ns, &ApiResource::from_gvk(&gvk));
    let make = |name: &str, min: i64, max: i64| -> DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": "harness.nova.infra.dev/v1", "kind": "Range",
            "metadata": {"name": name}, "spec": {"min": min, "max": max},
        }))
        .unwrap()
    };
    ranges.create(&PostParams::default(), &make("good", 1, 2)).await?;
    let err = ranges.create(&PostParams::default(), &make("bad", 5, 2)).await.unwrap_err();
    let status = api_status(err);
    assert_eq!(status.code, 422, "{status:?}");
    assert!(status.message.contains("min must not exceed max"), "{}", status.message);
    Ok(())
}

#[tokio::test]
async fn server_side_apply_conflicts_between_field_managers() -> Result<()> {
    let (_, client, ns) = setup("ssa").await?;
    let cms: Api<ConfigMap> = Api::namespaced(client, &ns);
    let doc = |value: &str| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "shared"}, "data": {"owner": value}});
    cms.patch("shared", &PatchParams::apply("alice"), &Patch::Apply(doc("alice"))).await?;
    let err = cms.patch("shared", &PatchParams::apply("bob"), &Patch::Apply(doc("bob"))).await.unwrap_err();
    let status = api_status(err);
    assert_eq!(status.code, 409, "{status:?}");
    assert!(status.message.contains("conflict"), "{}", status.message);
    assert!(status.message.contains("alice"), "names the manager owning the field: {}", status.message);

    // Forcing takes the field over; the value and the managed-fields owner both change.
    cms.patch("shared", &PatchParams::apply("bob").force(), &Patch::Apply(doc("bob"))).await?;
    let cm = cms.get("shared").await?;
    assert_eq!(cm.data.unwrap()["owner"], "bob");
    let managers: Vec<String> =
        cm.metadata.managed_fields.unwrap_or_default().into_iter().filter_map(|m| m.manager).collect();
    assert!(managers.contains(&"bob".to_owned()), "{managers:?}");
    Ok(())
}

#[tokio::test]
async fn built_kubectl_talks_to_the_control_plane() -> Result<()> {
    let (cp, client, ns) = setup("kubectl").await?;
    let manifest = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: from-kubectl\n  namespace: {ns}\ndata:\n  k: v\n"
    );
    let file = tempfile::NamedTempFile::new()?;
    std::fs::write(file.path(), manifest)?;
    let out = cp.kubectl().args(["apply", "--server-side", "-f"]).arg(file.path()).output()?;
    assert!(out.status.success(), "kubectl apply: {}", String::from_utf8_lossy(&out.stderr));

    let cm = Api::<ConfigMap>::namespaced(client, &ns).get("from-kubectl").await?;
    assert_eq!(cm.data.unwrap()["k"], "v");

    let out = cp.kubectl().args(["version", "-o", "json"]).output()?;
    assert!(out.status.success(), "kubectl version: {}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(v["clientVersion"]["gitVersion"], test_cluster::pinned_version());
    assert_eq!(v["serverVersion"]["gitVersion"], test_cluster::pinned_version());
    Ok(())
}

#[tokio::test]
async fn service_account_client_is_bound_by_rbac() -> Result<()> {
    let (cp, admin, ns) = setup("rbac").await?;
    let sa: ServiceAccount = serde_json::from_value(json!({"metadata": {"name": "reader"}}))?;
    Api::<ServiceAccount>::namespaced(admin.clone(), &ns).create(&PostParams::default(), &sa).await?;

    let as_sa = cp.client_for_service_account(&ns, "reader").await?;
    let cms: Api<ConfigMap> = Api::namespaced(as_sa, &ns);
    let err = cms.list(&Default::default()).await.unwrap_err();
    let status = api_status(err);
    assert_eq!(status.code, 403, "{status:?}");
    assert!(status.message.contains(&format!("system:serviceaccount:{ns}:reader")), "{}", status.message);

    let role: Role = serde_json::from_value(json!({
        "metadata": {"name": "read-configmaps"},
        "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]}],
    }))?;
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "reader"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "read-configmaps"},
        "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": ns}],
    }))?;
    Api::<Role>::namespaced(admin.clone(), &ns).create(&PostParams::default(), &role).await?;
    Api::<RoleBinding>::namespaced(admin, &ns).create(&PostParams::default(), &binding).await?;

    // RBAC changes reach the authorizer through its informer: wait for the grant, then make
    // sure it is exactly the grant (list yes, create no).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(100));
    loop {
        tick.tick().await;
        match cms.list(&Default::default()).await {
            Ok(_) => break,
            Err(e) if std::time::Instant::now() < deadline => drop(e),
            Err(e) => return Err(e).context("the RoleBinding never took effect"),
        }
    }
    let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "nope"}}))?;
    let status = api_status(cms.create(&PostParams::default(), &cm).await.unwrap_err());
    assert_eq!(status.code, 403, "{status:?}");
    Ok(())
}
