//! One ACME order with the issuer's solvers, and the Secret it fills.

use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde_json::json;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;

use super::{
    CERTIFICATE_ANNOTATION, Found, ISSUER_ANNOTATION, distribute, dns01, ingress, issuer, webroot, x509,
};
use crate::acme::{self, Challenger, keys};
use crate::api::tls::{AcmeIssuer, RotationPolicy, TlsCertificate};
use crate::context::{Context, Error, FIELD_MANAGER};

/// Runs one order; returns the chain and key, or what failed (for status; no key material).
pub(super) async fn order(
    c: &TlsCertificate,
    ctx: &Context,
    iss: &AcmeIssuer,
    account: &issuer::Ready,
    found: Option<&Found>,
    replaces: Option<&str>,
) -> Result<(String, String), String> {
    let reuse = c.spec.private_key.rotation_policy == RotationPolicy::Never;
    let key_pem = match found.and_then(|f| f.key_pem.clone()) {
        Some(k) if reuse && keys::shape(&k).ok() == Some(keys::Shape::of(&c.spec.private_key)) => k,
        _ => keys::generate(&c.spec.private_key).map_err(|e| e.to_string())?,
    };
    let mut solvers: Vec<Box<dyn Challenger>> = Vec::new();
    for s in &iss.spec.solvers {
        if let Some(h) = &s.http01
            && let Some(ing) = &h.ingress
        {
            solvers.push(Box::new(ingress::IngressHttp01::new(
                &ctx.certs.http01,
                ctx.client.clone(),
                c,
                ing.class_name.clone(),
                ctx.certs.settings.solver_endpoint,
            )));
        }
        if let Some(h) = &s.http01
            && let Some(w) = &h.webroot
        {
            let Some(d) = &c.spec.distribute_to else {
                return Err(
                    "the issuer's http01.webroot solver writes tokens on the hosts of spec.distributeTo, \
                            which this certificate does not have"
                        .into(),
                );
            };
            let hosts = distribute::selected_hosts(ctx, &d.hosts).await.map_err(|e| e.to_string())?;
            let mut conns = Vec::new();
            for h in &hosts {
                match crate::hostaccess::connect(h, ctx, &c.namespace().unwrap_or_default()).await {
                    Ok(conn) => conns.push((h.name_any(), conn)),
                    Err(e) => return Err(format!("webroot solver: {e}")),
                }
            }
            if conns.is_empty() {
                return Err("the webroot solver found no Host selected by spec.distributeTo.hosts".into());
            }
            solvers.push(Box::new(webroot::Webroot::new(&w.path, conns)));
        }
        if let Some(d) = &s.dns01 {
            let r = &d.rfc2136;
            let secret = issuer::secret_value(
                ctx,
                &r.tsig_secret_ref.name,
                &r.tsig_secret_ref.key,
                "spec.solvers[].dns01.rfc2136.tsigSecretRef",
            )
            .await
            .map_err(|e| e.to_string())?;
            use base64::Engine;
            let text = String::from_utf8_lossy(&secret);
            let key = base64::engine::general_purpose::STANDARD.decode(text.trim()).map_err(|_| {
                "spec.solvers[].dns01.rfc2136.tsigSecretRef: the TSIG secret is not base64".to_owned()
            })?;
            solvers.push(Box::new(dns01::Rfc2136::new(
                &r.nameserver,
                &r.tsig_key_name,
                r.tsig_algorithm,
                key,
            )?));
        }
    }
    let refs: Vec<&dyn Challenger> = solvers.iter().map(|b| b.as_ref()).collect();
    let quoted_replaces = json!(replaces.unwrap_or_default()).to_string();
    let req = acme::Request {
        names: &c.spec.dns_names,
        key_pem: &key_pem,
        profile: c.spec.profile.as_deref(),
        replaces: replaces
            .and_then(|id| serde_json::from_str(&quoted_replaces).ok().filter(|_| !id.is_empty())),
        timeout: ctx.certs.settings.order_timeout,
    };
    let issued = acme::issue_with(&account.directory, &account.account, &req, &refs)
        .await
        .map_err(|e| e.to_string())?;
    Ok((issued.chain_pem, issued.key_pem))
}

pub(super) async fn write_secret(
    c: &TlsCertificate,
    ctx: &Context,
    ns: &str,
    chain: &str,
    key: &str,
) -> Result<(), Error> {
    let certs = x509::chain_der(chain).unwrap_or_default();
    // ca.crt: the topmost CA certificate the server sent (ACME does not hand out the root).
    let ca = if certs.len() > 1 {
        chain
            .split_inclusive("-----END CERTIFICATE-----")
            .filter(|b| b.contains("BEGIN"))
            .last()
            .unwrap_or("")
            .trim()
            .to_owned()
            + "\n"
    } else {
        String::new()
    };
    let secret = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(c.spec.secret_name.clone()),
            namespace: Some(ns.to_owned()),
            labels: Some([("app.kubernetes.io/managed-by".to_owned(), "nova".to_owned())].into()),
            annotations: Some(
                [
                    (ISSUER_ANNOTATION.to_owned(), c.spec.issuer_ref.name.clone()),
                    (CERTIFICATE_ANNOTATION.to_owned(), c.name_any()),
                ]
                .into(),
            ),
            ..Default::default()
        },
        type_: Some("kubernetes.io/tls".into()),
        data: Some(
            [
                ("tls.crt".to_owned(), ByteString(chain.as_bytes().to_vec())),
                ("tls.key".to_owned(), ByteString(key.as_bytes().to_vec())),
                ("ca.crt".to_owned(), ByteString(ca.into_bytes())),
            ]
            .into(),
        ),
        ..Default::default()
    };
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    api.patch(&c.spec.secret_name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&secret))
        .await?;
    Ok(())
}
