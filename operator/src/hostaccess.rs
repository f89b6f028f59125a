//! Reaching a Host from the cluster, for every controller that works on hosts: its private key
//! from the Secret it names, its address and host-key policy, a pooled SSH session.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::{Api, ResourceExt};

use crate::api::host::{Host, HostKeyPolicy};
use crate::context::{Blocked, Call, Context, Error};
use crate::{ssh, tenancy};

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

/// Refuses work from namespace `ns` on `h` unless the Host allows it (see [`crate::tenancy`]);
/// the namespace's labels are read only when the Host selects namespaces by label.
pub async fn allowed(h: &Host, ctx: &Context, ns: &str) -> Result<(), Error> {
    let labels = if tenancy::needs_labels(h) {
        let namespace = Api::<Namespace>::all(ctx.client.clone()).get_opt(ns).await.call(|| {
            format!("reading Namespace {ns} (for Host {}'s spec.allowedNamespaces)", h.name_any())
        })?;
        namespace.map(|n| n.labels().clone()).unwrap_or_default()
    } else {
        Default::default()
    };
    tenancy::admits(h, ns, &labels, &ctx.trusted_namespaces)
        .map_err(|msg| Blocked::new(NOT_ALLOWED, msg).retry(Duration::from_secs(30)).into())
}

/// The reason of a refusal by [`allowed`].
pub const NOT_ALLOWED: &str = "HostNotAllowed";

/// Connects to `h` for work from namespace `ns`, as the Host controller does: refused when the
/// Host does not allow the namespace; blocked when its key or host-key settings are missing, or
/// when under AcceptNew its key is not recorded yet (only the Host controller records it); a
/// Host error (counted, retried) when it cannot be reached. Messages never hold key material.
pub async fn connect(h: &Host, ctx: &Context, ns: &str) -> Result<ssh::Connection, Error> {
    allowed(h, ctx, ns).await?;
    let recorded = h.status.as_ref().and_then(|s| s.recorded_host_key.clone());
    if h.spec.host_key_policy == HostKeyPolicy::AcceptNew && recorded.is_none() && h.spec.host_key.is_none() {
        let msg = format!(
            "Host {}: its host key is not recorded yet (hostKeyPolicy AcceptNew): the Host controller records it \
             on its first connection (status.recordedHostKey); nothing else connects before that",
            h.name_any()
        );
        return Err(Blocked::new("HostKeyNotRecorded", msg).retry(Duration::from_secs(15)).into());
    }
    let key = private_key(h, ctx).await?;
    let target = crate::host::target(h, key, recorded)
        .map_err(|msg| Blocked::invalid(format!("Host {}: {msg}", h.name_any())))?;
    ctx.ssh.get(&target, 3).await.map_err(|e| Error::Host(format!("Host {}: {e}", h.name_any())))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use http::StatusCode;
    use serde_json::json;

    use super::*;
    use crate::kit::verifier::{self, Expect};

    fn host(spec: serde_json::Value) -> Host {
        let mut s = json!({"address": "192.0.2.1", "sshKeySecretRef": {"name": "key", "key": "k"}});
        s.as_object_mut().expect("object").extend(spec.as_object().cloned().unwrap_or_default());
        serde_json::from_value(json!({"apiVersion": "nova.infra.dev/v1alpha1", "kind": "Host",
            "metadata": {"name": "web-1"}, "spec": s}))
        .expect("a Host")
    }

    fn reason(r: Result<ssh::Connection, Error>) -> (&'static str, String) {
        match r {
            Err(Error::Blocked(b)) => (b.reason, b.message),
            Err(e) => panic!("not blocked: {e}"),
            Ok(_) => panic!("connected"),
        }
    }

    /// A namespace the Host does not allow, and an AcceptNew Host whose key is not recorded yet:
    /// refused before anything is read (not even the key's Secret) or connected.
    #[tokio::test]
    async fn refusals_come_before_any_call_or_connection() {
        let (client, verifier) = verifier::client();
        let ctx = Context::for_test(client).await;
        let (why, msg) = reason(connect(&host(json!({})), &ctx, "team-b").await);
        assert_eq!(why, NOT_ALLOWED);
        assert!(msg.contains("Host web-1 does not allow namespace team-b"), "{msg}");
        let tofu = host(json!({"hostKeyPolicy": "AcceptNew"}));
        let (why, msg) = reason(connect(&tofu, &ctx, "nova-system").await);
        assert_eq!(why, "HostKeyNotRecorded");
        assert!(msg.contains("status.recordedHostKey"), "{msg}");
        verifier.no_more_calls(Duration::from_millis(200)).await;
    }

    /// A Host selecting namespaces by label: the namespace is read, and its labels decide.
    #[tokio::test]
    async fn a_selector_reads_the_namespace_labels() {
        let (client, verifier) = verifier::client();
        let ctx = Context::for_test(client).await;
        let h = host(json!({"allowedNamespaces": {"selector": {"matchLabels": {"team": "b"}}}}));
        let ns = |labels: serde_json::Value| json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-b", "labels": labels}});
        let fake = verifier.run(vec![
            Expect::get("/api/v1/namespaces/team-b", StatusCode::OK, ns(json!({"team": "a"}))),
            Expect::get("/api/v1/namespaces/team-b", StatusCode::OK, ns(json!({"team": "b"}))),
        ]);
        let refused = allowed(&h, &ctx, "team-b").await;
        assert!(matches!(refused, Err(Error::Blocked(ref b)) if b.reason == NOT_ALLOWED), "{refused:?}");
        assert!(allowed(&h, &ctx, "team-b").await.is_ok());
        fake.await.expect("the fake apiserver");
    }
}
