//! Kinds whose API exists but whose controller is not built yet (TrainingJob). Each
//! object is told so — Ready False, Stalled True, reason `NotImplemented` — so kstatus (Flux,
//! `kubectl wait`) reports Failed and Argo CD Degraded at once, instead of an object nothing
//! acts on looking healthy. Replaced kind by kind as their controllers land.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::watcher;
use kube::{Api, Client};

use crate::api::TrainingJob;
use crate::context::{Blocked, Context, Error, Own};
use crate::kit::{self, Reconciled};

/// The message of the Stalled condition; it names the kind and where to look.
pub fn message(kind: &str) -> String {
    format!(
        "Nova {} has no controller for {kind} yet, so nothing acts on this object; \
         the README's table \"What works today\" says which kinds are reconciled",
        env!("CARGO_PKG_VERSION")
    )
}

/// The reason of the Stalled condition.
pub const REASON: &str = "NotImplemented";

/// Looked at again only on a change, or after this long.
const RETRY: Duration = Duration::from_secs(3600);

pub async fn reconcile<K: Reconciled>(obj: Arc<K>, ctx: Arc<Own<K>>) -> Result<Action, Error> {
    kit::run(obj, &ctx.kit, &ctx.status, &[], |_| async move {
        Err(Blocked::new(REASON, message(K::KIND)).retry(RETRY).into())
    })
    .await
}

/// Runs the stand-in controller of every unserved kind until `stop`.
pub async fn run(
    client: &Client,
    ns: Option<&str>,
    ctx: Arc<Context>,
    stop: impl Future<Output = ()> + Clone + Send + Sync + 'static,
) {
    serve(api::<TrainingJob>(client, ns), ctx, stop).await;
}

async fn serve<K>(api: Api<K>, ctx: Arc<Context>, stop: impl Future<Output = ()> + Send + Sync + 'static)
where
    K: Reconciled + kube::Resource<DynamicType = ()>,
{
    let own = Own::<K>::new(ctx, ());
    Controller::new(api, watcher::Config::default())
        .with_config(controller::Config::default().concurrency(1))
        .graceful_shutdown_on(stop)
        .run(reconcile, crate::context::error_policy, own)
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::warn!(error = %e, "controller");
            }
        })
        .await;
}

fn api<K>(client: &Client, ns: Option<&str>) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match ns {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}
