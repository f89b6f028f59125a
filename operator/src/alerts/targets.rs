//! Where an AlertRule's rules and routing are written on Kubernetes: a `PrometheusRule` and an
//! `AlertmanagerConfig` when prometheus-operator's CRDs are served, otherwise a ConfigMap of
//! rule files (for a sidecar such as the Grafana/k8s-sidecar or a Prometheus config reloader)
//! and one Secret holding the whole Alertmanager configuration.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, ObjectMeta, Patch, PatchParams};
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::{Value, json};

use crate::api::AlertRule;
use crate::context::{Call, Error, FIELD_MANAGER};

/// The label sidecars select the rule ConfigMaps by.
pub const RULES_LABEL: &str = "nova.infra.dev/prometheus-rules";
/// The Secret (in the operator's namespace) holding the merged Alertmanager configuration.
pub const ALERTMANAGER_SECRET: &str = "nova-alertmanager";
/// Its key.
pub const ALERTMANAGER_KEY: &str = "alertmanager.yaml";

/// Which of prometheus-operator's kinds the apiserver serves.
#[derive(Debug, Default, Clone, Copy)]
pub struct Served {
    pub prometheus_rules: bool,
    pub alertmanager_configs: bool,
    pub prometheuses: bool,
}

async fn group_has(client: &Client, gv: &str, plural: &str) -> Result<bool, Error> {
    match client.list_api_group_resources(gv).await {
        Ok(list) => Ok(list.resources.iter().any(|r| r.name == plural)),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(false),
        Err(e) => Err(e).call(|| format!("discovering {gv}")),
    }
}

pub async fn served(client: &Client) -> Result<Served, Error> {
    Ok(Served {
        prometheus_rules: group_has(client, "monitoring.coreos.com/v1", "prometheusrules").await?,
        prometheuses: group_has(client, "monitoring.coreos.com/v1", "prometheuses").await?,
        alertmanager_configs: group_has(client, "monitoring.coreos.com/v1alpha1", "alertmanagerconfigs")
            .await?,
    })
}

fn resource(version: &str, kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("monitoring.coreos.com", version, kind), plural)
}

pub fn prometheus_rule() -> ApiResource {
    resource("v1", "PrometheusRule", "prometheusrules")
}

pub fn alertmanager_config() -> ApiResource {
    resource("v1alpha1", "AlertmanagerConfig", "alertmanagerconfigs")
}

pub fn prometheus() -> ApiResource {
    resource("v1", "Prometheus", "prometheuses")
}

/// The name of the objects Nova makes for AlertRule `name`.
pub fn child_name(name: &str) -> String {
    format!("nova-{name}")
}

fn meta(obj: &AlertRule, labels: &BTreeMap<String, String>) -> ObjectMeta {
    let mut labels = labels.clone();
    labels.insert("app.kubernetes.io/managed-by".into(), "nova".into());
    ObjectMeta {
        name: Some(child_name(&obj.name_any())),
        namespace: obj.namespace(),
        labels: Some(labels),
        owner_references: obj.controller_owner_ref(&()).map(|o| vec![o]),
        ..Default::default()
    }
}

async fn apply_dynamic(
    client: &Client,
    ar: &ApiResource,
    obj: &AlertRule,
    meta: ObjectMeta,
    spec: Value,
) -> Result<(), Error> {
    let ns = obj.namespace().unwrap_or_default();
    let name = meta.name.clone().unwrap_or_default();
    let mut d = DynamicObject::new(&name, ar).within(&ns);
    d.metadata = meta;
    d.data = json!({ "spec": spec });
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, ar);
    api.patch(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&d))
        .await
        .call(|| format!("applying {} {ns}/{name}", ar.kind))?;
    Ok(())
}

/// Where `obj`'s rules go: its PrometheusRule when prometheus-operator's kind is served, else
/// its ConfigMap for a rule sidecar.
pub fn rules_target(obj: &AlertRule, served: Served) -> String {
    let kind = if served.prometheus_rules { "PrometheusRule" } else { "ConfigMap" };
    format!("{kind} {}/{}", obj.namespace().unwrap_or_default(), child_name(&obj.name_any()))
}

/// Writes the rules as a PrometheusRule.
pub async fn put_prometheus_rule(
    client: &Client,
    obj: &AlertRule,
    labels: &BTreeMap<String, String>,
    file: Value,
) -> Result<(), Error> {
    apply_dynamic(client, &prometheus_rule(), obj, meta(obj, labels), file).await
}

/// The key of the rule file in the ConfigMap: unique across namespaces, for a sidecar that
/// gathers every namespace's files into one directory.
pub fn file_key(obj: &AlertRule) -> String {
    format!("{}-{}.rules.yaml", obj.namespace().unwrap_or_default(), obj.name_any())
}

/// Writes the rules as a ConfigMap.
pub async fn put_config_map(
    client: &Client,
    obj: &AlertRule,
    labels: &BTreeMap<String, String>,
    yaml: String,
) -> Result<(), Error> {
    let mut labels = labels.clone();
    labels.insert(RULES_LABEL.into(), "true".into());
    let cm = ConfigMap {
        metadata: meta(obj, &labels),
        data: Some([(file_key(obj), yaml)].into()),
        ..Default::default()
    };
    let (ns, name) = (obj.namespace().unwrap_or_default(), child_name(&obj.name_any()));
    Api::<ConfigMap>::namespaced(client.clone(), &ns)
        .patch(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&cm))
        .await
        .call(|| format!("applying ConfigMap {ns}/{name}"))?;
    Ok(())
}

/// Writes the routing as an AlertmanagerConfig.
pub async fn put_alertmanager_config(client: &Client, obj: &AlertRule, spec: Value) -> Result<(), Error> {
    apply_dynamic(client, &alertmanager_config(), obj, meta(obj, &BTreeMap::new()), spec).await
}

/// Deletes the AlertmanagerConfig Nova made for `obj`, if any (routing removed).
pub async fn drop_alertmanager_config(client: &Client, obj: &AlertRule) -> Result<(), Error> {
    let ns = obj.namespace().unwrap_or_default();
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &alertmanager_config());
    crate::apply::delete_if_owned(&api, &child_name(&obj.name_any()), obj).await
}

/// Deletes what Nova made for `obj` (those it owns only).
pub async fn drop_children(client: &Client, obj: &AlertRule, served: Served) -> Result<(), Error> {
    let ns = obj.namespace().unwrap_or_default();
    let name = child_name(&obj.name_any());
    crate::apply::delete_if_owned(&Api::<ConfigMap>::namespaced(client.clone(), &ns), &name, obj).await?;
    if served.prometheus_rules {
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &prometheus_rule());
        crate::apply::delete_if_owned(&api, &name, obj).await?;
    }
    if served.alertmanager_configs {
        drop_alertmanager_config(client, obj).await?;
    }
    Ok(())
}

/// Writes the merged Alertmanager configuration (Secret `nova-alertmanager` in `ns`).
pub async fn put_alertmanager_secret(client: &Client, ns: &str, yaml: &str) -> Result<(), Error> {
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(ALERTMANAGER_SECRET.into()),
            namespace: Some(ns.into()),
            labels: Some([("app.kubernetes.io/managed-by".to_owned(), "nova".to_owned())].into()),
            ..Default::default()
        },
        data: Some([(ALERTMANAGER_KEY.to_owned(), k8s_openapi::ByteString(yaml.as_bytes().to_vec()))].into()),
        ..Default::default()
    };
    Api::<Secret>::namespaced(client.clone(), ns)
        .patch(ALERTMANAGER_SECRET, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&secret))
        .await
        .call(|| format!("applying Secret {ns}/{ALERTMANAGER_SECRET}"))?;
    Ok(())
}
