//! The AcmeIssuer controller: the account key in a Secret of the operator's namespace
//! (generated when absent), the account registered (or found) at the directory, its URL in
//! status. Certificates borrow the account from [`account`], cached per key and spec.

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};
use serde_json::json;
use sha2::{Digest, Sha256};
use tracing::{instrument, warn};

use crate::acme::{self, Directory};
use crate::api::tls::{AcmeIssuer, AcmeIssuerStatus};
use crate::conditions::{self, Cond};
use crate::context::{Context, Error, FIELD_MANAGER, requeue_after_error};
use crate::telemetry::ErrorCategory;

const KIND: &str = "AcmeIssuer";
/// Key of the account key in its Secret.
pub const ACCOUNT_KEY: &str = "tls.key";
/// Registration is checked again this often (a key rotated by hand, a deactivated account).
const REFRESH: Duration = Duration::from_secs(3600);

/// An account ready to order with, and the directory it belongs to.
#[derive(Clone)]
pub struct Ready {
    pub account: instant_acme::Account,
    pub directory: Directory,
}

#[instrument(skip_all, fields(issuer = %i.name_any()))]
pub async fn reconcile(i: Arc<AcmeIssuer>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let result = reconcile_inner(&i, &ctx).await;
    ctx.metrics.reconciled(KIND, started.elapsed());
    if let Err(e) = &result {
        ctx.metrics.failed(KIND, e.category());
    }
    result
}

pub fn error_policy(i: Arc<AcmeIssuer>, err: &Error, _ctx: Arc<Context>) -> Action {
    warn!(issuer = %i.name_any(), error = %err, category = err.category().as_str(), "reconcile failed");
    requeue_after_error(err)
}

async fn reconcile_inner(i: &AcmeIssuer, ctx: &Context) -> Result<Action, Error> {
    let (conds, uri) = match account(i, ctx, true).await? {
        Ok(r) => {
            let uri = r.account.id().to_owned();
            let msg = format!("account {uri} registered at {}", r.directory.url);
            (vec![Cond::new("Ready", true, "Registered", msg)], Some(uri))
        }
        Err((reason, msg)) => {
            if reason == "MissingSecret" {
                ctx.metrics.failed(KIND, ErrorCategory::MissingDependency);
            }
            (vec![Cond::new("Ready", false, reason, msg)], None)
        }
    };
    let ok = conds[0].status;
    write_status(i, ctx, &conds, uri).await?;
    Ok(Action::requeue(if ok { REFRESH } else { Duration::from_secs(60) }))
}

async fn write_status(
    i: &AcmeIssuer,
    ctx: &Context,
    conds: &[Cond],
    uri: Option<String>,
) -> Result<(), Error> {
    let old = i.status.clone().unwrap_or_default();
    let generation = i.metadata.generation;
    let new = AcmeIssuerStatus {
        observed_generation: generation,
        account_uri: uri.or(old.account_uri.clone()),
        conditions: conditions::merge(&old.conditions, conds, generation, Timestamp::now()),
    };
    if new == old {
        return Ok(());
    }
    let api: Api<AcmeIssuer> = Api::all(ctx.client.clone());
    let patch = json!({"apiVersion": "nova.infra.dev/v1alpha1", "kind": KIND, "status": new});
    api.patch_status(&i.name_any(), &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(patch)).await?;
    Ok(())
}

/// A value from a Secret of the operator's namespace, or why there is none (never the value).
pub(crate) async fn secret_value(
    ctx: &Context,
    name: &str,
    key: &str,
    field: &str,
) -> Result<Result<Vec<u8>, String>, Error> {
    let ns = &ctx.namespace;
    let Some(s) = Api::<Secret>::namespaced(ctx.client.clone(), ns).get_opt(name).await? else {
        return Ok(Err(format!("Secret {ns}/{name} named in {field} does not exist")));
    };
    Ok(s.data
        .and_then(|mut d| d.remove(key))
        .map(|b| b.0)
        .ok_or_else(|| format!("Secret {ns}/{name} has no key {key:?} ({field})")))
}

/// The issuer's account: from the cache when its key and spec are unchanged, otherwise found
/// (or, with `register`, created) at the directory. The inner error is (reason, message) for a
/// condition; it never holds key material.
pub async fn account(
    i: &AcmeIssuer,
    ctx: &Context,
    register: bool,
) -> Result<Result<Ready, (&'static str, String)>, Error> {
    let spec = &i.spec;
    let url = acme::directory_url(&spec.server).to_owned();
    let mut bundle = Vec::new();
    let root_pem = match &spec.ca_bundle_secret_ref {
        None => None,
        Some(r) => match secret_value(ctx, &r.name, &r.key, "spec.caBundleSecretRef").await? {
            Ok(pem) => {
                let path = ctx.certs.root_file(&i.name_any(), &pem).map_err(|e| {
                    Error::InvalidSpec(format!("writing the CA bundle of AcmeIssuer {}: {e}", i.name_any()))
                })?;
                bundle = pem;
                Some(path)
            }
            Err(m) => return Ok(Err(("MissingSecret", m))),
        },
    };
    let directory = Directory { url, root_pem };
    let key_name = &spec.account_key_secret_ref.name;
    let key = match secret_value(ctx, key_name, ACCOUNT_KEY, "spec.accountKeySecretRef").await? {
        Ok(k) => Some(String::from_utf8_lossy(&k).into_owned()),
        Err(_) if register => None,
        Err(m) => {
            return Ok(Err((
                "NotRegistered",
                format!("AcmeIssuer {} has no account yet: {m}", i.name_any()),
            )));
        }
    };
    if let Some(r) =
        ctx.certs.cached(&i.name_any(), &fingerprint(spec, key.as_deref().unwrap_or_default(), &bundle))
    {
        return Ok(Ok(r));
    }
    let eab = match &spec.eab {
        None => None,
        Some(e) => match secret_value(
            ctx,
            &e.hmac_key_secret_ref.name,
            &e.hmac_key_secret_ref.key,
            "spec.eab.hmacKeySecretRef",
        )
        .await?
        {
            Ok(raw) => {
                use base64::Engine;
                let text = String::from_utf8_lossy(&raw);
                let Ok(hmac) = base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(text.trim().trim_end_matches('='))
                else {
                    return Ok(Err((
                        "InvalidSpec",
                        "spec.eab.hmacKeySecretRef: the key is not base64url".into(),
                    )));
                };
                Some(instant_acme::ExternalAccountKey::new(e.key_id.clone(), &hmac))
            }
            Err(m) => return Ok(Err(("MissingSecret", m))),
        },
    };
    let contact: Vec<String> = spec.email.iter().map(|e| format!("mailto:{e}")).collect();
    let (account, key_pem) =
        match acme::account_for_key(&directory, key.as_deref(), &contact, eab.as_ref()).await {
            Ok(a) => a,
            Err(e) => return Ok(Err(("RegistrationFailed", e.to_string()))),
        };
    if key.is_none() {
        store_key(i, ctx, &key_pem).await?;
    }
    let ready = Ready { account, directory };
    ctx.certs.remember(&i.name_any(), &fingerprint(spec, &key_pem, &bundle), ready.clone());
    Ok(Ok(ready))
}

/// What the cached account depends on: the issuer's spec, its key and the CA bundle its HTTP
/// client trusts.
fn fingerprint(spec: &crate::api::tls::AcmeIssuerSpec, key_pem: &str, bundle: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(serde_json::to_vec(spec).unwrap_or_default());
    h.update(key_pem);
    h.update(bundle);
    hex::encode(h.finalize())
}

async fn store_key(i: &AcmeIssuer, ctx: &Context, key_pem: &str) -> Result<(), Error> {
    let name = &i.spec.account_key_secret_ref.name;
    let secret = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(ctx.namespace.clone()),
            labels: Some([("app.kubernetes.io/managed-by".to_owned(), "nova".to_owned())].into()),
            annotations: Some([("nova.infra.dev/acme-issuer".to_owned(), i.name_any())].into()),
            ..Default::default()
        },
        type_: Some("Opaque".into()),
        data: Some([(ACCOUNT_KEY.to_owned(), ByteString(key_pem.as_bytes().to_vec()))].into()),
        ..Default::default()
    };
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    api.patch(name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&secret)).await?;
    Ok(())
}
