//! HTTP-01 on Kubernetes: the operator answers on its own HTTP port; while a challenge is
//! pending, an Ingress in the certificate's namespace routes
//! `/.well-known/acme-challenge/<token>` for the challenged name to a selector-less Service
//! whose EndpointSlice points at the operator. All three are owned by the TlsCertificate and
//! deleted when the issuance ends, however it ends.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Mutex;

use futures::future::BoxFuture;
use instant_acme::ChallengeType;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::json;

use crate::acme::solver::{Http01, Http01Session};
use crate::acme::{Challenger, Presentation};
use crate::api::tls::TlsCertificate;
use crate::context::FIELD_MANAGER;

/// Label on every challenge object, naming the certificate.
pub const LABEL: &str = "nova.infra.dev/acme-challenge-for";

pub struct IngressHttp01 {
    session: Http01Session,
    client: Client,
    namespace: String,
    name: String,
    owner: serde_json::Value,
    cert: String,
    class: Option<String>,
    endpoint: SocketAddr,
    rules: Mutex<Vec<(String, String)>>,
}

/// `nova-acme-<certificate>`, cut to fit a DNS label with a hash of the full name.
pub fn object_name(cert: &str) -> String {
    let full = format!("nova-acme-{cert}");
    if full.len() <= 63 {
        return full;
    }
    use sha2::Digest;
    let h = hex::encode(sha2::Sha256::digest(full.as_bytes()));
    format!("{}-{}", full[..52].trim_end_matches('-'), &h[..10])
}

impl IngressHttp01 {
    pub fn new(
        solver: &Http01,
        client: Client,
        cert: &TlsCertificate,
        class: Option<String>,
        endpoint: SocketAddr,
    ) -> Self {
        let owner = serde_json::to_value(cert.controller_owner_ref(&())).unwrap_or_default();
        Self {
            session: solver.session(),
            client,
            namespace: cert.namespace().unwrap_or_default(),
            name: object_name(&cert.name_any()),
            owner,
            cert: cert.name_any(),
            class,
            endpoint,
            rules: Mutex::new(Vec::new()),
        }
    }

    fn meta(&self) -> serde_json::Value {
        json!({
            "name": self.name, "namespace": self.namespace,
            "labels": {"app.kubernetes.io/managed-by": "nova", LABEL: self.cert},
            "ownerReferences": [self.owner],
        })
    }

    async fn apply(&self) -> Result<(), kube::Error> {
        let pp = PatchParams::apply(FIELD_MANAGER).force();
        let port = self.endpoint.port();
        let svc = json!({
            "apiVersion": "v1", "kind": "Service", "metadata": self.meta(),
            "spec": {"ports": [{"name": "http", "port": 80, "targetPort": port, "protocol": "TCP"}]},
        });
        Api::<Service>::namespaced(self.client.clone(), &self.namespace)
            .patch(&self.name, &pp, &Patch::Apply(svc))
            .await?;
        let mut meta = self.meta();
        meta["labels"]["kubernetes.io/service-name"] = json!(self.name);
        meta["labels"]["endpointslice.kubernetes.io/managed-by"] = json!("nova.infra.dev");
        let family = if self.endpoint.is_ipv4() { "IPv4" } else { "IPv6" };
        let slice = json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "metadata": meta,
            "addressType": family,
            "endpoints": [{"addresses": [self.endpoint.ip().to_string()], "conditions": {"ready": true}}],
            "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
        });
        Api::<EndpointSlice>::namespaced(self.client.clone(), &self.namespace)
            .patch(&self.name, &pp, &Patch::Apply(slice))
            .await?;
        let mut by_host: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (host, token) in self.rules.lock().expect("rules").iter() {
            by_host.entry(host.clone()).or_default().push(token.clone());
        }
        let rules: Vec<serde_json::Value> = by_host
            .into_iter()
            .map(|(host, tokens)| {
                let paths: Vec<serde_json::Value> = tokens
                    .iter()
                    .map(|t| {
                        json!({"path": format!("/.well-known/acme-challenge/{t}"), "pathType": "Exact",
                               "backend": {"service": {"name": self.name, "port": {"number": 80}}}})
                    })
                    .collect();
                json!({"host": host, "http": {"paths": paths}})
            })
            .collect();
        let mut spec = json!({"rules": rules});
        if let Some(c) = &self.class {
            spec["ingressClassName"] = json!(c);
        }
        let ing = json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": self.meta(), "spec": spec});
        Api::<Ingress>::namespaced(self.client.clone(), &self.namespace)
            .patch(&self.name, &pp, &Patch::Apply(ing))
            .await?;
        Ok(())
    }
}

/// Deletes the challenge objects of `cert` in `ns` (none there is fine).
pub async fn remove(client: &Client, ns: &str, cert: &str) -> Result<(), kube::Error> {
    let name = object_name(cert);
    let dp = DeleteParams::background();
    let gone = |r: Result<_, kube::Error>| match r {
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        other => other.map(drop),
    };
    gone(Api::<Ingress>::namespaced(client.clone(), ns).delete(&name, &dp).await.map(drop))?;
    gone(Api::<EndpointSlice>::namespaced(client.clone(), ns).delete(&name, &dp).await.map(drop))?;
    gone(Api::<Service>::namespaced(client.clone(), ns).delete(&name, &dp).await.map(drop))
}

impl Challenger for IngressHttp01 {
    fn kind(&self) -> ChallengeType {
        ChallengeType::Http01
    }

    fn covers(&self, name: &str, wildcard: bool) -> bool {
        self.session.covers(name, wildcard)
    }

    fn present<'a>(&'a self, p: &'a Presentation) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            self.session.present(p).await?;
            self.rules.lock().expect("rules").push((p.name.clone(), p.token.clone()));
            self.apply().await.map_err(|e| format!("routing the challenge to Nova: {e}"))
        })
    }

    fn cleanup(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            self.session.cleanup().await;
            if let Err(e) = remove(&self.client, &self.namespace, &self.cert).await {
                tracing::warn!(error = %e, certificate = %self.cert, "could not delete the challenge objects");
            }
        })
    }
}
