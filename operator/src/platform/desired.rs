//! What a Platform should look like on Kubernetes: pure functions from the Platform to its
//! Deployment, Service and Ingress, testable without a cluster.

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{PodTemplateSpec, Service, ServicePort, ServiceSpec};
use k8s_openapi::api::networking::v1::{
    HTTPIngressPath, HTTPIngressRuleValue, Ingress, IngressBackend, IngressRule, IngressServiceBackend,
    IngressSpec, IngressTLS, ServiceBackendPort,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Resource, ResourceExt};

use crate::api::bluegreen::{BlueGreenDeployment, BlueGreenDeploymentSpec};
use crate::api::platform::{Platform, TlsMode};

pub use crate::workload::{PLATFORM_LABEL, REVISION_ANNOTATION, SERVICE_PORT, pod_template, revision_of};
use crate::workload::{labels, selector};

/// Everything a Rolling, Kubernetes-targeted Platform owns.
#[derive(Clone, Debug, PartialEq)]
pub struct Children {
    pub deployment: Deployment,
    pub service: Service,
    /// `None` when the Platform has no domains: an existing Ingress is then deleted.
    pub ingress: Option<Ingress>,
    pub revision: String,
}

pub fn children(p: &Platform) -> Children {
    let template = pod_template(p);
    let revision = revision_of(&template);
    let mut template = template;
    template
        .metadata
        .get_or_insert_with(Default::default)
        .annotations
        .get_or_insert_with(Default::default)
        .insert(REVISION_ANNOTATION.into(), revision.clone());
    Children { deployment: deployment(p, template), service: service(p), ingress: ingress(p), revision }
}

fn meta(p: &Platform) -> ObjectMeta {
    ObjectMeta {
        name: Some(p.name_any()),
        namespace: p.namespace(),
        labels: Some(labels(p)),
        owner_references: p.controller_owner_ref(&()).map(|o| vec![o]),
        ..Default::default()
    }
}

fn deployment(p: &Platform, template: PodTemplateSpec) -> Deployment {
    Deployment {
        metadata: meta(p),
        spec: Some(DeploymentSpec {
            replicas: Some(p.spec.replicas),
            selector: LabelSelector { match_labels: Some(selector(p)), ..Default::default() },
            template,
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn service(p: &Platform) -> Service {
    Service {
        metadata: meta(p),
        spec: Some(ServiceSpec {
            selector: Some(selector(p)),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: SERVICE_PORT,
                target_port: Some(IntOrString::String("http".into())),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The TlsCertificate for `tls.mode: Auto`: the Platform's domains, into the Secret the Ingress
/// serves (`<name>-tls`), from `issuer`. None without Auto or without domains.
pub fn certificate(p: &Platform, issuer: &str) -> Option<crate::api::TlsCertificate> {
    let tls = p.spec.tls.as_ref()?;
    if tls.mode != TlsMode::Auto || p.spec.domains.is_empty() {
        return None;
    }
    let mut spec = serde_json::json!({
        "dnsNames": p.spec.domains, "issuerRef": {"name": issuer}, "secretName": tls_secret(p)?,
    });
    // On hosts the certificate goes to the Platform's hosts, where its site serves it.
    if let Some(h) = p.spec.target.as_ref().and_then(|t| t.hosts.as_ref()) {
        spec["distributeTo"] = serde_json::json!({"hosts": h.hosts});
    }
    let mut cert = crate::api::TlsCertificate::new(&p.name_any(), serde_json::from_value(spec).ok()?);
    cert.metadata = ObjectMeta {
        name: Some(p.name_any()),
        namespace: p.namespace(),
        labels: Some(labels(p)),
        owner_references: p.controller_owner_ref(&()).map(|o| vec![o]),
        ..Default::default()
    };
    Some(cert)
}

/// Secret an Ingress serves TLS from, if any.
pub fn tls_secret(p: &Platform) -> Option<String> {
    let tls = p.spec.tls.as_ref()?;
    match tls.mode {
        TlsMode::None => None,
        TlsMode::Secret => tls.secret_name.clone(),
        // The TlsCertificate for mode Auto writes into this Secret.
        TlsMode::Auto => Some(format!("{}-tls", p.name_any())),
    }
}

fn ingress(p: &Platform) -> Option<Ingress> {
    if p.spec.domains.is_empty() {
        return None;
    }
    let backend = IngressBackend {
        service: Some(IngressServiceBackend {
            name: p.name_any(),
            port: Some(ServiceBackendPort { number: Some(SERVICE_PORT), ..Default::default() }),
        }),
        ..Default::default()
    };
    let rules = p
        .spec
        .domains
        .iter()
        .map(|host| IngressRule {
            host: Some(host.clone()),
            http: Some(HTTPIngressRuleValue {
                paths: vec![HTTPIngressPath {
                    path: Some("/".into()),
                    path_type: "Prefix".into(),
                    backend: backend.clone(),
                }],
            }),
        })
        .collect();
    let settings = p.spec.ingress.clone().unwrap_or_default();
    let mut metadata = meta(p);
    if !settings.annotations.is_empty() {
        metadata.annotations = Some(settings.annotations);
    }
    Some(Ingress {
        metadata,
        spec: Some(IngressSpec {
            ingress_class_name: settings.class_name,
            rules: Some(rules),
            tls: tls_secret(p).map(|secret| {
                vec![IngressTLS { hosts: Some(p.spec.domains.clone()), secret_name: Some(secret) }]
            }),
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// The BlueGreenDeployment a Platform with strategy BlueGreen owns: the Platform's template,
/// and its name on the active Service so the Ingress needs no change.
pub fn bluegreen(p: &Platform) -> BlueGreenDeployment {
    let mut strategy = p.spec.strategy.as_ref().and_then(|s| s.blue_green.clone()).unwrap_or_default();
    strategy.active_service = Some(p.name_any());
    if strategy.preview_service.is_none() {
        strategy.preview_service = Some(format!("{}-preview", p.name_any()));
    }
    BlueGreenDeployment {
        metadata: meta(p),
        spec: BlueGreenDeploymentSpec {
            template: Some(pod_template(p)),
            platform_ref: None,
            replicas: p.spec.replicas,
            strategy,
            abort: false,
            revision_history_limit: 10,
        },
        status: None,
    }
}

/// The BlueGreenDeployment of a Platform on hosts: it refers to the Platform (the application
/// is built from it on each host) and counts one instance per selected host, whatever
/// `replicas` says here.
pub fn bluegreen_on_hosts(p: &Platform) -> BlueGreenDeployment {
    BlueGreenDeployment { metadata: meta(p), spec: crate::hostapp::desired::rollout_spec(p, 1), status: None }
}

/// Where users reach the application.
pub fn url(p: &Platform) -> String {
    match p.spec.domains.first() {
        Some(domain) if tls_secret(p).is_some() => format!("https://{domain}"),
        Some(domain) => format!("http://{domain}"),
        None => format!("http://{}.{}.svc", p.name_any(), p.namespace().unwrap_or_default()),
    }
}

/// A Secret or ConfigMap the pods need, and the spec field that names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dependency {
    pub kind: &'static str,
    pub name: String,
    pub field: String,
}

/// Secrets and ConfigMaps that must exist before pods can start (optional ones excluded).
pub fn dependencies(p: &Platform) -> Vec<Dependency> {
    let mut deps = Vec::new();
    for (i, e) in p.spec.env.iter().enumerate() {
        let Some(from) = &e.value_from else { continue };
        if let Some(r) = &from.secret_key_ref
            && r.optional != Some(true)
        {
            deps.push(Dependency {
                kind: "Secret",
                name: r.name.clone(),
                field: format!("spec.env[{i}].valueFrom.secretKeyRef"),
            });
        }
        if let Some(r) = &from.config_map_key_ref
            && r.optional != Some(true)
        {
            deps.push(Dependency {
                kind: "ConfigMap",
                name: r.name.clone(),
                field: format!("spec.env[{i}].valueFrom.configMapKeyRef"),
            });
        }
    }
    for (i, e) in p.spec.env_from.iter().enumerate() {
        if let Some(r) = &e.secret_ref
            && r.optional != Some(true)
        {
            deps.push(Dependency {
                kind: "Secret",
                name: r.name.clone(),
                field: format!("spec.envFrom[{i}].secretRef"),
            });
        }
        if let Some(r) = &e.config_map_ref
            && r.optional != Some(true)
        {
            deps.push(Dependency {
                kind: "ConfigMap",
                name: r.name.clone(),
                field: format!("spec.envFrom[{i}].configMapRef"),
            });
        }
    }
    if let Some(tls) = &p.spec.tls
        && tls.mode == TlsMode::Secret
        && let Some(name) = &tls.secret_name
    {
        deps.push(Dependency { kind: "Secret", name: name.clone(), field: "spec.tls.secretName".into() });
    }
    deps
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn platform(spec: serde_json::Value) -> Platform {
        let mut p: Platform = serde_json::from_value(json!({
            "apiVersion": "nova.infra.dev/v1alpha1", "kind": "Platform",
            "metadata": {"name": "shop", "namespace": "prod", "uid": "u-1"},
            "spec": spec,
        }))
        .unwrap();
        p.meta_mut().uid = Some("u-1".into());
        p
    }

    #[test]
    fn deployment_service_and_ingress_follow_the_spec() {
        let p = platform(json!({
            "image": "ghcr.io/acme/shop:1.0", "replicas": 3, "port": 9000,
            "domains": ["shop.example.com", "www.shop.example.com"],
            "tls": {"mode": "Secret", "secretName": "shop-cert"},
            "health": {"path": "/healthz"},
            "ingress": {"className": "nginx", "annotations": {"a": "b"}},
        }));
        let c = children(&p);
        let d = c.deployment.spec.as_ref().unwrap();
        assert_eq!(d.replicas, Some(3));
        let container = &d.template.spec.as_ref().unwrap().containers[0];
        assert_eq!(container.image.as_deref(), Some("ghcr.io/acme/shop:1.0"));
        assert_eq!(container.ports.as_ref().unwrap()[0].container_port, 9000);
        let probe = container.readiness_probe.as_ref().unwrap().http_get.as_ref().unwrap();
        assert_eq!(probe.path.as_deref(), Some("/healthz"));
        assert_eq!(probe.port, IntOrString::Int(9000));
        let owner = &c.deployment.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!((owner.kind.as_str(), owner.controller), ("Platform", Some(true)));

        let ing = c.ingress.unwrap();
        let spec = ing.spec.unwrap();
        assert_eq!(spec.ingress_class_name.as_deref(), Some("nginx"));
        let hosts: Vec<_> = spec.rules.unwrap().into_iter().map(|r| r.host.unwrap()).collect();
        assert_eq!(hosts, ["shop.example.com", "www.shop.example.com"]);
        assert_eq!(spec.tls.unwrap()[0].secret_name.as_deref(), Some("shop-cert"));
        assert_eq!(url(&p), "https://shop.example.com");
    }

    #[test]
    fn no_domains_means_no_ingress_and_a_cluster_url() {
        let p = platform(json!({"image": "nginx"}));
        let c = children(&p);
        assert!(c.ingress.is_none());
        assert_eq!(url(&p), "http://shop.prod.svc");
    }

    #[test]
    fn revision_changes_with_the_template_only() {
        let a = children(&platform(json!({"image": "app:1", "replicas": 1})));
        let b = children(&platform(json!({"image": "app:1", "replicas": 5})));
        let c = children(&platform(json!({"image": "app:2", "replicas": 1})));
        assert_eq!(a.revision, b.revision, "scaling is not a new revision");
        assert_ne!(a.revision, c.revision);
        assert_eq!(a.revision.len(), 10);
    }

    #[test]
    fn auto_tls_asks_for_a_certificate_of_the_domains_into_the_ingress_secret() {
        let p: Platform = serde_json::from_value(json!({
            "apiVersion": "nova.infra.dev/v1alpha1", "kind": "Platform",
            "metadata": {"name": "shop", "namespace": "apps", "uid": "u1"},
            "spec": {"image": "shop:1", "domains": ["shop.example.com", "www.shop.example.com"],
                     "tls": {"mode": "Auto"}},
        }))
        .unwrap();
        let c = certificate(&p, "letsencrypt").unwrap();
        assert_eq!(c.spec.dns_names, ["shop.example.com", "www.shop.example.com"]);
        assert_eq!(c.spec.issuer_ref.name, "letsencrypt");
        assert_eq!(Some(c.spec.secret_name.clone()), tls_secret(&p));
        let ing = children(&p).ingress.unwrap();
        let served = ing.spec.unwrap().tls.unwrap()[0].secret_name.clone();
        assert_eq!(served, Some(c.spec.secret_name), "the Ingress serves what the certificate writes");
        assert_eq!(c.metadata.owner_references.unwrap()[0].name, "shop");
        let mut plain = p.clone();
        plain.spec.tls = None;
        assert!(certificate(&plain, "letsencrypt").is_none());
    }

    #[test]
    fn dependencies_name_the_field_and_skip_optional_ones() {
        let p = platform(json!({
            "image": "app:1",
            "env": [{"name": "DB", "valueFrom": {"secretKeyRef": {"name": "db", "key": "url"}}},
                    {"name": "X", "valueFrom": {"secretKeyRef": {"name": "opt", "key": "k", "optional": true}}}],
            "envFrom": [{"configMapRef": {"name": "settings"}}],
        }));
        let deps = dependencies(&p);
        assert_eq!(deps.len(), 2);
        assert_eq!(
            deps[0],
            Dependency {
                kind: "Secret",
                name: "db".into(),
                field: "spec.env[0].valueFrom.secretKeyRef".into()
            }
        );
        assert_eq!(deps[1].field, "spec.envFrom[0].configMapRef");
    }
}
