//! The reconcile kit: what every controller is built on, so a controller is only
//! observe → decide (pure) → act → status.
//!
//! - [`run`] wraps a reconcile: a span with `kind`, `namespace` and `name`, the timer, the
//!   metrics, blocked objects turned into conditions, backoff reset on success;
//! - [`error_policy`] retries failures with per-object exponential backoff ([`backoff`]);
//! - [`Error`] says which call failed and splits *blocked* (the user must act) from *failed*;
//! - [`StatusWriter`] writes status only on change, against what this process last wrote;
//! - [`finalized`] runs Apply / Cleanup under a finalizer, for what owner references cannot
//!   remove (anything on a host);
//! - [`rounds::Rounds`] lets reconciles that each need the same costly step on one target
//!   share one round of it (group commit);
//! - events are cut to the apiserver's 1 KiB limit on a character boundary ([`events`]).

pub mod backoff;
pub mod error;
pub mod events;
pub mod fence;
pub mod finalizer;
pub mod kinds;
pub mod metrics;
pub mod rounds;
pub mod status;
#[cfg(test)]
pub mod verifier;

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::controller::Action;
use kube::runtime::events::{EventType, Recorder, Reporter};
use kube::{Client, ResourceExt};
use tracing::{Instrument, warn};

use crate::conditions::CondType;

pub use backoff::Backoff;
pub use error::{Blocked, Call, Category, Error};
pub use fence::Fence;
pub use finalizer::{Finalized, finalized};
pub use kinds::Reconciled;
pub use metrics::ReconcileMetrics;
pub use status::StatusWriter;

/// The one field manager Nova applies with.
pub const FIELD_MANAGER: &str = "nova";

/// What the kit needs of the process: the client, the event recorder, the reconcile metrics
/// and the failures-in-a-row of each object.
pub struct Shared {
    pub client: Client,
    pub recorder: Recorder,
    pub metrics: ReconcileMetrics,
    pub backoff: Backoff,
    /// Closed when this process may no longer hold the leader lease: nothing is written then.
    pub fence: Fence,
}

impl Shared {
    pub fn new(client: Client, metrics: ReconcileMetrics) -> Self {
        let reporter = Reporter { controller: "nova".into(), instance: std::env::var("POD_NAME").ok() };
        let recorder = Recorder::new(client.clone(), reporter);
        Self { client, recorder, metrics, backoff: Backoff::default(), fence: Fence::open() }
    }

    /// Fails when the fence is closed: called before a reconcile and before each write, so a
    /// leader that lost its lease (or was frozen past it) writes nothing more.
    pub fn fenced(&self) -> Result<(), Error> {
        if self.fence.is_open() { Ok(()) } else { Err(Error::Fenced) }
    }

    /// Records an event; best effort (see [`events::publish`]).
    pub async fn publish(&self, obj: &ObjectReference, action: &str, t: EventType, reason: &str, note: &str) {
        events::publish(&self.recorder, obj, action, t, reason, note).await;
    }
}

/// The key of an object's backoff: `Kind/namespace/name`.
pub fn key<K: Reconciled>(obj: &K) -> String {
    format!("{}/{}/{}", K::KIND, obj.namespace().unwrap_or_default(), obj.name_any())
}

/// Runs one reconcile of `obj` (`body`), with the span, timer and metrics. A [`Blocked`] error
/// is written as conditions (Ready False, Stalled True, and `extra`: Degraded True for the
/// kinds that have it) and requeued after its own delay; it is counted as blocked, not failed.
pub async fn run<K, Fut>(
    obj: Arc<K>,
    kit: &Shared,
    writer: &StatusWriter<K>,
    extra: &[CondType],
    body: impl FnOnce(Arc<K>) -> Fut,
) -> Result<Action, Error>
where
    K: Reconciled,
    Fut: Future<Output = Result<Action, Error>>,
{
    let span = tracing::info_span!(
        "reconcile",
        kind = K::KIND,
        namespace = obj.namespace().unwrap_or_default(),
        name = obj.name_any()
    );
    let started = Instant::now();
    let result = async {
        kit.fenced()?;
        match body(obj.clone()).await {
            Err(Error::Blocked(b)) => {
                kit.metrics.blocked(K::KIND, b.reason);
                writer.blocked(kit, &obj, &b, extra).await?;
                Ok(Action::requeue(b.retry))
            }
            other => other,
        }
    }
    .instrument(span)
    .await;
    kit.metrics.reconciled(K::KIND, started.elapsed());
    match &result {
        Ok(_) => kit.backoff.succeeded(&key(&*obj)),
        Err(e) => {
            if let Some(c) = e.category() {
                kit.metrics.failed(K::KIND, c);
            }
        }
    }
    result
}

/// Retries a failed reconcile after the object's backoff (5 s doubling to 5 min, reset by a
/// success). kube-runtime does not back off by itself.
pub fn error_policy<K: Reconciled>(obj: Arc<K>, err: &Error, kit: &Shared) -> Action {
    let wait = kit.backoff.failed(&key(&*obj));
    let category = err.category().map_or("blocked", Category::as_str);
    warn!(kind = K::KIND, namespace = obj.namespace().unwrap_or_default(), name = obj.name_any(),
          error = %err, category, retry_in_s = wait.as_secs(), "reconcile failed");
    Action::requeue(wait)
}
