//! What a BlueGreenDeployment owns: one Deployment per colour and two Services. Pure functions.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy};
use k8s_openapi::api::core::v1::{PodTemplateSpec, Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Resource, ResourceExt};

use crate::api::bluegreen::{BlueGreenDeployment, Color};
use crate::workload::{REVISION_ANNOTATION, SERVICE_PORT};

/// Label naming the BlueGreenDeployment a pod belongs to.
pub const BLUEGREEN_LABEL: &str = "nova.infra.dev/bluegreen";
/// Label naming a pod's colour.
pub const COLOR_LABEL: &str = "nova.infra.dev/color";
/// Label naming a pod's revision, so a Service never selects pods of two revisions.
pub const REVISION_LABEL: &str = "nova.infra.dev/revision";

pub fn deployment_name(bg: &BlueGreenDeployment, c: Color) -> String {
    format!("{}-{c}", bg.name_any())
}

pub fn active_service(bg: &BlueGreenDeployment) -> String {
    bg.spec.strategy.active_service.clone().unwrap_or_else(|| bg.name_any())
}

pub fn preview_service(bg: &BlueGreenDeployment) -> String {
    bg.spec.strategy.preview_service.clone().unwrap_or_else(|| format!("{}-preview", bg.name_any()))
}

/// Names that Kubernetes would refuse, said before anything is applied.
pub fn check_names(bg: &BlueGreenDeployment) -> Result<(), String> {
    for (field, name) in [
        ("spec.activeService (default: the object's name)", active_service(bg)),
        ("spec.previewService (default: <name>-preview)", preview_service(bg)),
    ] {
        if name.len() > 63 {
            return Err(format!(
                "{field}: Service name {name:?} is longer than 63 characters; set a shorter one"
            ));
        }
    }
    if active_service(bg) == preview_service(bg) {
        return Err("spec.activeService and spec.previewService must differ".into());
    }
    Ok(())
}

/// The port pods serve on: the first port of the first container.
pub fn app_port(template: &PodTemplateSpec) -> Result<i32, String> {
    template
        .spec
        .as_ref()
        .and_then(|s| s.containers.first())
        .and_then(|c| c.ports.as_ref())
        .and_then(|p| p.first())
        .map(|p| p.container_port)
        .ok_or_else(|| {
            "spec.template.spec.containers[0].ports: name the port the application serves on".into()
        })
}

fn labels(bg: &BlueGreenDeployment) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".into(), bg.name_any()),
        ("app.kubernetes.io/managed-by".into(), "nova".into()),
        (BLUEGREEN_LABEL.into(), bg.name_any()),
    ])
}

fn meta(bg: &BlueGreenDeployment, name: String) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: bg.namespace(),
        labels: Some(labels(bg)),
        owner_references: bg.controller_owner_ref(&()).map(|o| vec![o]),
        ..Default::default()
    }
}

fn pod_selector(bg: &BlueGreenDeployment, c: Color, revision: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (BLUEGREEN_LABEL.into(), bg.name_any()),
        (COLOR_LABEL.into(), c.as_str().into()),
        (REVISION_LABEL.into(), revision.into()),
    ])
}

/// The Deployment of one colour running `template` (of `revision`) with `replicas`.
pub fn deployment(
    bg: &BlueGreenDeployment,
    c: Color,
    template: &PodTemplateSpec,
    revision: &str,
    replicas: i32,
) -> Deployment {
    let mut template = template.clone();
    let md = template.metadata.get_or_insert_with(Default::default);
    let pod_labels = md.labels.get_or_insert_with(Default::default);
    pod_labels.extend(labels(bg));
    pod_labels.extend(pod_selector(bg, c, revision));
    md.annotations.get_or_insert_with(Default::default).insert(REVISION_ANNOTATION.into(), revision.into());
    let mut metadata = meta(bg, deployment_name(bg, c));
    metadata.annotations = Some(BTreeMap::from([(REVISION_ANNOTATION.into(), revision.into())]));
    metadata.labels.get_or_insert_with(Default::default).insert(COLOR_LABEL.into(), c.as_str().into());
    Deployment {
        metadata,
        spec: Some(DeploymentSpec {
            replicas: Some(replicas),
            selector: LabelSelector {
                match_labels: Some(BTreeMap::from([
                    (BLUEGREEN_LABEL.into(), bg.name_any()),
                    (COLOR_LABEL.into(), c.as_str().into()),
                ])),
                ..Default::default()
            },
            // A colour changes revision only while it takes no traffic: replace its pods at once
            // rather than mixing two revisions in the preview.
            strategy: Some(DeploymentStrategy { type_: Some("Recreate".into()), rolling_update: None }),
            template,
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A Service selecting the pods of `revision` on colour `c`.
pub fn service(bg: &BlueGreenDeployment, name: String, c: Color, revision: &str, port: i32) -> Service {
    Service {
        metadata: meta(bg, name),
        spec: Some(ServiceSpec {
            selector: Some(pod_selector(bg, c, revision)),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: SERVICE_PORT,
                target_port: Some(IntOrString::Int(port)),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The colour and revision a Service built by [`service`] selects.
pub fn selected(svc: &Service) -> Option<(Color, String)> {
    let sel = svc.spec.as_ref()?.selector.as_ref()?;
    let color = match sel.get(COLOR_LABEL)?.as_str() {
        "blue" => Color::Blue,
        "green" => Color::Green,
        _ => return None,
    };
    Some((color, sel.get(REVISION_LABEL)?.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn bg(extra: serde_json::Value) -> BlueGreenDeployment {
        let mut spec = json!({"template": {"metadata": {"labels": {"tier": "web"}},
                              "spec": {"containers": [{"name": "app", "image": "a:1", "ports": [{"containerPort": 9000}]}]}}});
        for (k, v) in extra.as_object().unwrap() {
            spec[k] = v.clone();
        }
        let mut b: BlueGreenDeployment = serde_json::from_value(json!({
            "apiVersion": "nova.infra.dev/v1alpha1", "kind": "BlueGreenDeployment",
            "metadata": {"name": "shop", "namespace": "prod"}, "spec": spec,
        }))
        .unwrap();
        b.meta_mut().uid = Some("u-1".into());
        b
    }

    #[test]
    fn colour_deployments_select_by_colour_and_label_pods_with_revision() {
        let b = bg(json!({}));
        let t = b.spec.template.clone().unwrap();
        let d = deployment(&b, Color::Green, &t, "abc", 2);
        assert_eq!(d.metadata.name.as_deref(), Some("shop-green"));
        let spec = d.spec.unwrap();
        let sel = spec.selector.match_labels.unwrap();
        assert_eq!(sel.get(COLOR_LABEL).map(String::as_str), Some("green"));
        assert!(!sel.contains_key(REVISION_LABEL), "the selector is immutable; the revision changes");
        let pod_labels = spec.template.metadata.unwrap().labels.unwrap();
        assert_eq!(pod_labels.get(REVISION_LABEL).map(String::as_str), Some("abc"));
        assert_eq!(pod_labels.get("tier").map(String::as_str), Some("web"), "user labels kept");
        assert_eq!(spec.strategy.unwrap().type_.as_deref(), Some("Recreate"));
    }

    #[test]
    fn services_select_colour_and_revision() {
        let b = bg(json!({"activeService": "shop-live"}));
        let t = b.spec.template.clone().unwrap();
        let port = app_port(&t).unwrap();
        let s = service(&b, active_service(&b), Color::Blue, "r1", port);
        assert_eq!(s.metadata.name.as_deref(), Some("shop-live"));
        assert_eq!(selected(&s), Some((Color::Blue, "r1".into())));
        assert_eq!(s.spec.unwrap().ports.unwrap()[0].target_port, Some(IntOrString::Int(9000)));
        assert_eq!(preview_service(&b), "shop-preview");
    }

    #[test]
    fn bad_names_and_ports_are_refused_with_the_field() {
        let b = bg(json!({"activeService": "x", "previewService": "x"}));
        assert!(check_names(&b).unwrap_err().contains("must differ"));
        let t: PodTemplateSpec =
            serde_json::from_value(json!({"spec": {"containers": [{"name": "a"}]}})).unwrap();
        assert!(app_port(&t).unwrap_err().contains("containers[0].ports"));
    }
}
