//! The AcmeIssuer controller: the account key in a Secret of the operator's namespace
//! (generated when absent), the account registered (or found) at the directory, its URL in
//! status. Certificates borrow the account from [`account`], cached per key and spec.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};
use sha2::{Digest, Sha256};

use crate::acme::{self, Directory};
use crate::api::tls::{AcmeIssuer, AcmeIssuerStatus};
use crate::conditions::{Cond, CondType};
use crate::context::{Blocked, Call, Context, Error, FIELD_MANAGER};
use crate::kit;

/// Key of the account key in its Secret.
pub const ACCOUNT_KEY: &str = "tls.key";
/// Registration is checked again this often (a key rotated by hand, a deactivated account).
const REFRESH: Duration = Duration::from_secs(3600);

pub use crate::acme::shared::Ready;

/// The AcmeIssuer controller's context: the shared one and its status writer.
pub type Ctx = crate::context::Own<AcmeIssuer>;

pub async fn reconcile(i: Arc<AcmeIssuer>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let c = ctx.clone();
    kit::run(i, &ctx.kit, &ctx.status, &[], |i| async move { reconcile_inner(&i, &c).await }).await
}

async fn reconcile_inner(i: &AcmeIssuer, ctx: &Ctx) -> Result<Action, Error> {
    match account(i, ctx, true).await {
        Ok(r) => {
            let uri = r.account.id().to_owned();
            let msg = format!("account {uri} registered at {}", r.directory.url);
            write_status(i, ctx, &[Cond::new(CondType::Ready, true, "Registered", msg)], Some(uri)).await?;
            Ok(Action::requeue(REFRESH))
        }
        // The directory refused or failed: say so, then count and retry it with backoff.
        Err(Error::Acme(msg)) => {
            write_status(i, ctx, &[Cond::new(CondType::Ready, false, "RegistrationFailed", &msg)], None)
                .await?;
            Err(Error::Acme(msg))
        }
        Err(e) => Err(e),
    }
}

async fn write_status(i: &AcmeIssuer, ctx: &Ctx, conds: &[Cond], uri: Option<String>) -> Result<(), Error> {
    let old = ctx.status.current(i);
    let new = AcmeIssuerStatus { account_uri: uri.or(old.account_uri.clone()), ..old };
    ctx.status.write(&ctx.kit, i, new, conds).await?;
    Ok(())
}

/// A value from a Secret of the operator's namespace; blocked, naming `field`, when there is
/// none (the message never holds the value).
pub(crate) async fn secret_value(
    ctx: &Context,
    name: &str,
    key: &str,
    field: &str,
) -> Result<Vec<u8>, Error> {
    ctx.secret_value(&ctx.namespace, name, key, field).await
}

/// The issuer's account: from the cache when its key and spec are unchanged, otherwise found
/// (or, with `register`, created) at the directory. Blocked when a Secret it names is missing or
/// unusable, an ACME error when the directory refuses; messages never hold key material.
pub async fn account(i: &AcmeIssuer, ctx: &Context, register: bool) -> Result<Ready, Error> {
    let spec = &i.spec;
    let url = acme::directory_url(&spec.server).to_owned();
    let mut bundle = Vec::new();
    let root_pem = match &spec.ca_bundle_secret_ref {
        None => None,
        Some(r) => {
            let pem = secret_value(ctx, &r.name, &r.key, "spec.caBundleSecretRef").await?;
            let path = ctx.certs.root_file(&i.name_any(), &pem).map_err(|e| {
                Error::Acme(format!("writing the CA bundle of AcmeIssuer {} to a file: {e}", i.name_any()))
            })?;
            bundle = pem;
            Some(path)
        }
    };
    let directory = Directory { url, root_pem };
    let key_name = &spec.account_key_secret_ref.name;
    let key = match secret_value(ctx, key_name, ACCOUNT_KEY, "spec.accountKeySecretRef").await {
        Ok(k) => Some(String::from_utf8_lossy(&k).into_owned()),
        Err(Error::Blocked(_)) if register => None,
        Err(Error::Blocked(b)) => {
            let msg = format!("AcmeIssuer {} has no account yet: {}", i.name_any(), b.message);
            return Err(Blocked::new("NotRegistered", msg).into());
        }
        Err(e) => return Err(e),
    };
    if let Some(r) =
        ctx.certs.cached(&i.name_any(), &fingerprint(spec, key.as_deref().unwrap_or_default(), &bundle))
    {
        return Ok(r);
    }
    let eab = match &spec.eab {
        None => None,
        Some(e) => {
            let r = &e.hmac_key_secret_ref;
            let raw = secret_value(ctx, &r.name, &r.key, "spec.eab.hmacKeySecretRef").await?;
            use base64::Engine;
            let text = String::from_utf8_lossy(&raw);
            let Ok(hmac) =
                base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(text.trim().trim_end_matches('='))
            else {
                return Err(Blocked::invalid("spec.eab.hmacKeySecretRef: the key is not base64url").into());
            };
            Some(instant_acme::ExternalAccountKey::new(e.key_id.clone(), &hmac))
        }
    };
    let contact: Vec<String> = spec.email.iter().map(|e| format!("mailto:{e}")).collect();
    let (account, key_pem) =
        match acme::account_for_key(&directory, key.as_deref(), &contact, eab.as_ref()).await {
            Ok(a) => a,
            Err(e) => return Err(Error::Acme(e.to_string())),
        };
    if key.is_none() {
        store_key(i, ctx, &key_pem).await?;
    }
    let ready = Ready { account, directory };
    ctx.certs.remember(&i.name_any(), &fingerprint(spec, &key_pem, &bundle), ready.clone());
    Ok(ready)
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
    api.patch(name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&secret)).await.call(|| {
        format!("writing Secret {}/{name} (the account key of AcmeIssuer {})", ctx.namespace, i.name_any())
    })?;
    Ok(())
}
