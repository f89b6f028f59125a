//! Finalizers for what owner references cannot remove (units, sites and files on hosts): the
//! object stays until Cleanup succeeded, or until a person lets it go with
//! [`SKIP_CLEANUP_ANNOTATION`] when the machine is gone for good.

use std::future::Future;
use std::sync::Arc;

use kube::Api;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Error as FinalizerError, Event, finalizer};
use serde_json::json;

use super::error::Error;
use super::kinds::Reconciled;

/// The finalizer Nova puts on objects whose deletion needs work on hosts.
pub const FINALIZER: &str = "nova.infra.dev/cleanup";

/// Set to "true" on an object being deleted to let it go without cleaning up (the host is
/// unreachable for good). What Nova put on the host stays there.
pub const SKIP_CLEANUP_ANNOTATION: &str = "nova.infra.dev/skip-cleanup";

/// Apply or Cleanup, as kube's finalizer helper calls them.
pub type Finalized<K> = Event<K>;

/// Runs `body` with Apply (the finalizer is in place) or Cleanup (the object is being deleted;
/// the finalizer goes once it returns Ok). A new object gets the finalizer and is applied in
/// the same reconcile: kube's helper stops after adding it and waits for the watch to bring the
/// object back, one more round trip before a new object's first apply.
pub async fn finalized<K, Fut>(
    api: &Api<K>,
    obj: Arc<K>,
    body: impl FnOnce(Event<K>) -> Fut,
) -> Result<Action, Error>
where
    K: Reconciled,
    Fut: Future<Output = Result<Action, Error>>,
{
    let obj = match add_patch(&*obj) {
        Some(patch) => {
            let name =
                obj.meta().name.clone().ok_or_else(|| Error::Bug(format!("a {} without a name", K::KIND)))?;
            let added = api.patch(&name, &PatchParams::default(), &Patch::Json::<()>(patch)).await;
            let what = || format!("adding finalizer {FINALIZER} to a {}", K::KIND);
            Arc::new(added.map_err(|source| Error::Kube { what: what(), source })?)
        }
        None => obj,
    };
    finalizer(api, FINALIZER, obj, body).await.map_err(|e| match e {
        FinalizerError::ApplyFailed(e) | FinalizerError::CleanupFailed(e) => e,
        FinalizerError::AddFinalizer(source) => {
            Error::Kube { what: format!("adding finalizer {FINALIZER} to a {}", K::KIND), source }
        }
        FinalizerError::RemoveFinalizer(source) => {
            Error::Kube { what: format!("removing finalizer {FINALIZER} from a {}", K::KIND), source }
        }
        FinalizerError::UnnamedObject => Error::Bug(format!("a {} without a name", K::KIND)),
        FinalizerError::InvalidFinalizer => Error::Bug(format!("finalizer name {FINALIZER} refused")),
    })
}

/// The JSON patch that adds Nova's finalizer to `obj`, when it lacks it and is not being
/// deleted — kube's own: a `test` of the list as read first, so that a concurrent change to
/// the finalizers fails the patch (and the reconcile is retried) instead of duplicating one.
fn add_patch<K: kube::Resource>(obj: &K) -> Option<json_patch::Patch> {
    let meta = obj.meta();
    let have = meta.finalizers.clone().unwrap_or_default();
    if meta.deletion_timestamp.is_some() || have.iter().any(|f| f == FINALIZER) {
        return None;
    }
    let ops = if have.is_empty() {
        json!([{"op": "test", "path": "/metadata/finalizers", "value": null},
               {"op": "add", "path": "/metadata/finalizers", "value": [FINALIZER]}])
    } else {
        json!([{"op": "test", "path": "/metadata/finalizers", "value": have},
               {"op": "add", "path": "/metadata/finalizers/-", "value": FINALIZER}])
    };
    serde_json::from_value(ops).ok()
}

/// Whether a person asked to let `obj` go without cleanup.
pub fn skip_cleanup<K: kube::Resource>(obj: &K) -> bool {
    obj.meta().annotations.as_ref().and_then(|a| a.get(SKIP_CLEANUP_ANNOTATION)).is_some_and(|v| v == "true")
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn cm(finalizers: Option<Vec<&str>>, deleting: bool) -> ConfigMap {
        let mut c = ConfigMap::default();
        c.metadata.name = Some("x".into());
        c.metadata.finalizers = finalizers.map(|f| f.into_iter().map(str::to_owned).collect());
        if deleting {
            c.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::now()));
        }
        c
    }

    /// A new object: one PATCH adds the finalizer and the same reconcile applies the object as
    /// patched; nothing else is asked of the apiserver.
    #[tokio::test]
    async fn a_new_object_gets_the_finalizer_and_is_applied_in_one_reconcile() {
        use crate::api::AlertRule;
        use crate::kit::verifier::{self, Expect};
        use kube::ResourceExt;
        let (client, fake) = verifier::client();
        let api: Api<AlertRule> = Api::namespaced(client, "default");
        let new: AlertRule = serde_json::from_value(json!({
            "apiVersion": "nova.infra.dev/v1alpha1", "kind": "AlertRule",
            "metadata": {"name": "x", "namespace": "default", "resourceVersion": "1"},
            "spec": {"groups": []}}))
        .unwrap();
        let mut patched = serde_json::to_value(&new).unwrap();
        patched["metadata"]["finalizers"] = json!([FINALIZER]);
        patched["metadata"]["resourceVersion"] = json!("2");
        let path = "/apis/nova.infra.dev/v1alpha1/namespaces/default/alertrules/x";
        let run = fake.run(vec![Expect::patch(path, patched)]);
        let action = finalized(&api, Arc::new(new), |event| async move {
            let Event::Apply(o) = event else { panic!("Cleanup of a new object") };
            assert_eq!(o.finalizers(), [FINALIZER], "applied as patched");
            Ok(Action::requeue(std::time::Duration::from_secs(7)))
        })
        .await
        .unwrap();
        assert_eq!(action, Action::requeue(std::time::Duration::from_secs(7)));
        let (seen, fake) = run.await.unwrap();
        assert_eq!(seen[0][1]["value"], json!([FINALIZER]));
        fake.no_more_calls(std::time::Duration::from_millis(200)).await;
    }

    #[test]
    fn the_finalizer_is_added_once_and_never_to_an_object_being_deleted() {
        let p = serde_json::to_value(add_patch(&cm(None, false)).unwrap()).unwrap();
        assert_eq!(p[0], json!({"op": "test", "path": "/metadata/finalizers", "value": null}));
        assert_eq!(p[1]["value"], json!([FINALIZER]));
        let p = serde_json::to_value(add_patch(&cm(Some(vec!["other"]), false)).unwrap()).unwrap();
        assert_eq!(p[0]["value"], json!(["other"]));
        assert_eq!(p[1], json!({"op": "add", "path": "/metadata/finalizers/-", "value": FINALIZER}));
        assert!(add_patch(&cm(Some(vec![FINALIZER]), false)).is_none());
        assert!(add_patch(&cm(None, true)).is_none());
    }
}
