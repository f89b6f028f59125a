//! Reaching a Host from the cluster, for every controller that works on hosts: its private key
//! from the Secret it names, its address and host-key policy, a pooled SSH session.

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, ResourceExt};

use crate::api::host::Host;
use crate::context::{Blocked, Call, Context, Error};
use crate::ssh;

/// The private key from the Host's Secret; blocked, naming the field, when there is none (the
/// message never holds the key).
pub async fn private_key(h: &Host, ctx: &Context) -> Result<russh::keys::PrivateKey, Error> {
    let r = &h.spec.ssh_key_secret_ref;
    let ns = &ctx.namespace;
    let secret = Api::<Secret>::namespaced(ctx.client.clone(), ns)
        .get_opt(&r.name)
        .await
        .call(|| format!("reading Secret {ns}/{} (spec.sshKeySecretRef of Host {})", r.name, h.name_any()))?;
    let Some(secret) = secret else {
        return Err(Blocked::new(
            "MissingKey",
            format!(
                "Host {}: Secret {:?} named in spec.sshKeySecretRef does not exist in namespace {ns} (the operator's)",
                h.name_any(),
                r.name
            ),
        )
        .retry(Duration::from_secs(30))
        .into());
    };
    let Some(bytes) = secret.data.as_ref().and_then(|d| d.get(&r.key)) else {
        let msg = format!(
            "Host {}: Secret {ns}/{} has no key {:?} (spec.sshKeySecretRef.key)",
            h.name_any(),
            r.name,
            r.key
        );
        return Err(Blocked::new("MissingKey", msg).retry(Duration::from_secs(30)).into());
    };
    let source = format!("Secret {ns}/{} key {:?}", r.name, r.key);
    let pem = String::from_utf8_lossy(&bytes.0);
    ssh::private_key(&pem, &source).map_err(|e| {
        Blocked::new("MissingKey", format!("Host {}: {e}", h.name_any()))
            .retry(Duration::from_secs(30))
            .into()
    })
}

/// Connects to `h` as the Host controller does, for other controllers that deploy to it: blocked
/// when its key or host-key settings are missing, a Host error (counted, retried) when it cannot
/// be reached. Messages never hold key material.
pub async fn connect(h: &Host, ctx: &Context) -> Result<ssh::Connection, Error> {
    let key = private_key(h, ctx).await?;
    let recorded = h.status.as_ref().and_then(|s| s.recorded_host_key.clone());
    let target = crate::host::target(h, key, recorded)
        .map_err(|msg| Blocked::invalid(format!("Host {}: {msg}", h.name_any())))?;
    ctx.ssh.get(&target, 3).await.map_err(|e| Error::Host(format!("Host {}: {e}", h.name_any())))
}
