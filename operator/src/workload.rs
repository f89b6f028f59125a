//! What a Platform runs, as both the Platform controller (a Deployment) and the blue-green
//! controller (two colours) run it: the pod template, its revision hash, the labels. Pure.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, ContainerPort, HTTPGetAction, PodSpec, PodTemplateSpec, Probe};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;
use sha2::{Digest, Sha256};

use crate::api::platform::Platform;

/// Label selecting a Platform's pods; part of the immutable Deployment selector.
pub const PLATFORM_LABEL: &str = "nova.infra.dev/platform";
/// Annotation on the pod template naming the revision it belongs to.
pub const REVISION_ANNOTATION: &str = "nova.infra.dev/revision";
/// Port of the Service in front of the pods.
pub const SERVICE_PORT: i32 = 80;

pub fn labels(p: &Platform) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".into(), p.name_any()),
        ("app.kubernetes.io/managed-by".into(), "nova".into()),
        (PLATFORM_LABEL.into(), p.name_any()),
    ])
}

pub fn selector(p: &Platform) -> BTreeMap<String, String> {
    BTreeMap::from([(PLATFORM_LABEL.into(), p.name_any())])
}

pub fn none_if_empty<T>(v: Vec<T>) -> Option<Vec<T>> {
    if v.is_empty() { None } else { Some(v) }
}

/// The application's pod template, as both the Deployment and a blue-green colour run it.
pub fn pod_template(p: &Platform) -> PodTemplateSpec {
    let spec = &p.spec;
    let probe = spec.health.as_ref().map(|h| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(h.path.clone()),
            port: IntOrString::Int(h.port.unwrap_or(spec.port)),
            ..Default::default()
        }),
        initial_delay_seconds: Some(h.initial_delay_seconds),
        period_seconds: Some(h.period_seconds),
        timeout_seconds: Some(h.timeout_seconds),
        success_threshold: Some(h.success_threshold),
        failure_threshold: Some(h.failure_threshold),
        ..Default::default()
    });
    // Liveness must tolerate what readiness does not: success threshold 1 is required there.
    let liveness = probe.clone().map(|mut pr| {
        pr.success_threshold = Some(1);
        pr
    });
    // The convention Prometheus' own Kubernetes examples and Helm chart relabel on.
    let annotations = spec.metrics.as_ref().map(|m| {
        BTreeMap::from([
            ("prometheus.io/scrape".to_owned(), "true".to_owned()),
            ("prometheus.io/path".to_owned(), m.path.clone()),
            ("prometheus.io/port".to_owned(), spec.port.to_string()),
        ])
    });
    PodTemplateSpec {
        metadata: Some(ObjectMeta { labels: Some(labels(p)), annotations, ..Default::default() }),
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "app".into(),
                image: Some(spec.image.clone()),
                command: none_if_empty(spec.command.clone()),
                args: none_if_empty(spec.args.clone()),
                env: none_if_empty(spec.env.clone()),
                env_from: none_if_empty(spec.env_from.clone()),
                ports: Some(vec![ContainerPort {
                    name: Some("http".into()),
                    container_port: spec.port,
                    protocol: Some("TCP".into()),
                    ..Default::default()
                }]),
                resources: spec.resources.clone(),
                readiness_probe: probe,
                liveness_probe: liveness,
                ..Default::default()
            }],
            ..Default::default()
        }),
    }
}

/// A short, stable hash of the pod template: same template, same revision.
pub fn revision_of(template: &PodTemplateSpec) -> String {
    // A PodTemplateSpec is plain data: serializing it cannot fail; an empty hash would only
    // make every template one revision, which a test would see at once.
    let bytes = serde_json::to_vec(template).unwrap_or_default();
    let digest = Sha256::digest(&bytes);
    hex::encode(&digest[..5])
}
