//! Deleting a Platform that ran on hosts: everything of it goes from each Host it selects
//! (units, compose projects, files, the nginx site), other applications untouched. A Host that
//! cannot be reached keeps the Platform (a condition says why) until it can, or until a person
//! annotates the Platform with `nova.infra.dev/skip-cleanup: "true"`.

use std::time::Duration;

use kube::api::ListParams;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Api, Resource, ResourceExt};

use crate::api::Platform;
use crate::api::host::Host;
use crate::context::{Blocked, Call, Context, Error};
use crate::hostapp::{self, HostConn};
use crate::kit::finalizer::{SKIP_CLEANUP_ANNOTATION, skip_cleanup};

/// How often a cleanup waiting for an unreachable Host tries again.
const UNREACHABLE_RETRY: Duration = Duration::from_secs(30);

pub async fn hosts(p: &Platform, ctx: &Context) -> Result<Action, Error> {
    let obj = p.object_ref(&());
    if skip_cleanup(p) {
        let note = format!(
            "{SKIP_CLEANUP_ANNOTATION} is \"true\": deleted without cleanup; what the Platform ran stays on its hosts"
        );
        ctx.publish(&obj, "Delete", EventType::Warning, "CleanupSkipped", &note).await;
        return Ok(Action::await_change());
    }
    let id = hostapp::desired::app_id(p).map_err(Error::Bug)?;
    let Some(sel) = p.spec.target.as_ref().and_then(|t| t.hosts.as_ref()).map(|h| &h.hosts) else {
        return Ok(Action::await_change());
    };
    let all = Api::<Host>::all(ctx.client.clone())
        .list(&ListParams::default())
        .await
        .call(|| "listing Hosts".into())?
        .items;
    // Waits for a rollout round in flight, and keeps any later one from starting.
    let lock = ctx.host_apps.get(&p.uid().unwrap_or_default());
    let mut removing = lock.lock().await;
    *removing = true;
    let mut done = Vec::new();
    let ns = p.namespace().unwrap_or_default();
    for h in hostapp::select(&all, sel) {
        let conn = match crate::hostaccess::connect(h, ctx, &ns).await {
            Ok(c) => c,
            // A Host that does not allow the namespace never ran anything of it.
            Err(Error::Blocked(b)) if b.reason == crate::hostaccess::NOT_ALLOWED => continue,
            Err(e) => {
                let why = format!(
                    "cleaning up on Host {} failed: {e}; the Platform stays until its application is removed \
                     there, or annotate it {SKIP_CLEANUP_ANNOTATION}=\"true\" to delete it and leave the application on the host",
                    h.name_any()
                );
                return Err(Blocked::new("CleanupBlocked", why).retry(UNREACHABLE_RETRY).into());
            }
        };
        let hc = HostConn { name: h.name_any(), conn };
        let removed = hostapp::engine::remove(&hc, &id).await;
        hc.conn.close().await;
        removed.map_err(|e| Error::Host(e.to_string()))?;
        done.push(h.name_any());
    }
    let note = format!("removed from {}", if done.is_empty() { "no host".into() } else { done.join(", ") });
    ctx.publish(&obj, "Delete", EventType::Normal, "CleanedUp", &note).await;
    Ok(Action::await_change())
}
