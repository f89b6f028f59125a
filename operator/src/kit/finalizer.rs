//! Finalizers for what owner references cannot remove (units, sites and files on hosts): the
//! object stays until Cleanup succeeded, or until a person lets it go with
//! [`SKIP_CLEANUP_ANNOTATION`] when the machine is gone for good.

use std::future::Future;
use std::sync::Arc;

use kube::Api;
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Error as FinalizerError, Event, finalizer};

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
/// the finalizer goes once it returns Ok).
pub async fn finalized<K, Fut>(
    api: &Api<K>,
    obj: Arc<K>,
    body: impl FnOnce(Event<K>) -> Fut,
) -> Result<Action, Error>
where
    K: Reconciled,
    Fut: Future<Output = Result<Action, Error>>,
{
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

/// Whether a person asked to let `obj` go without cleanup.
pub fn skip_cleanup<K: kube::Resource>(obj: &K) -> bool {
    obj.meta().annotations.as_ref().and_then(|a| a.get(SKIP_CLEANUP_ANNOTATION)).is_some_and(|v| v == "true")
}
