//! The Backup controller for Backups scheduled on their Host (`spec.runOn`): the operator
//! installs the timer (see [`super::timer`]) and reads the results back from the destination,
//! the source of truth; it runs nothing itself. What it gave the host is summed up in
//! `status.timerDigest`, so a steady Backup costs no SSH command and no write. The finalizer
//! takes the timer off the host; so does moving `runOn` to another Host or removing it.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::Utc;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use sha2::{Digest, Sha256};

use super::controller::{Ctx, catalog_status, to_time};
use super::schedule::Schedule;
use super::{hostcli, timer};
use crate::api::backup::{Backup, BackupStatus};
use crate::conditions::{Cond, CondType};
use crate::context::{Blocked, Error};
use crate::kit::finalizer::{SKIP_CLEANUP_ANNOTATION, skip_cleanup};

/// How soon after a slot the catalog is read again (the run takes a while on the host).
const AFTER_SLOT: Duration = Duration::from_secs(90);
/// And at least this often, for drills, retention and a host that was off.
const REFRESH: Duration = Duration::from_secs(600);

fn host_err(what: &str, e: timer::TimerError) -> Error {
    match e {
        timer::TimerError::Invalid(msg) => Blocked::invalid(msg).into(),
        other => Error::Host(format!("{what}: {other}")),
    }
}

/// The binary to put on hosts: the configured one, or this process's.
fn binary(ctx: &Ctx) -> Result<std::path::PathBuf, Error> {
    match &ctx.families.host_binary {
        Some(p) => Ok(p.clone()),
        None => std::env::current_exe().map_err(|e| Error::Bug(format!("Nova's own binary: {e}"))),
    }
}

/// The timer's configuration, and the digest of it with the binary.
async fn configuration(
    b: &Backup,
    ctx: &Ctx,
    host: &crate::api::host::Host,
) -> Result<(String, String), Error> {
    let config = run_config(b, ctx, Some(host)).await?;
    let bin =
        crate::ssh::binary::sha256(&binary(ctx)?).await.map_err(|e| host_err("Nova's binary", e.into()))?;
    let digest = hex::encode(Sha256::digest(format!("{bin}\n{config}").as_bytes()));
    Ok((config, digest[..16].to_owned()))
}

/// What a run away from the operator reads (a Host's timer, a claim's Job): the Backup, its
/// Host, and the Secret keys it names, from the cluster's Secrets (see `hostcli::config`).
pub(super) async fn run_config(
    b: &Backup,
    ctx: &crate::context::Context,
    host: Option<&crate::api::host::Host>,
) -> Result<String, Error> {
    let ns = b.namespace().unwrap_or_default();
    let mut values = BTreeMap::new();
    for (name, keys, field) in hostcli::secret_keys(&b.spec) {
        for k in keys {
            let v = ctx.secret_value(&ns, &name, &k, field).await?;
            values.insert((name.clone(), k), v);
        }
    }
    let config = hostcli::config(b, host, |name, key, _| {
        Ok(values.get(&(name.to_owned(), key.to_owned())).cloned().unwrap_or_default())
    });
    Ok(config.map_err(|e| Blocked::invalid(e.to_string()))?)
}

/// Removes the timer from `host` (the status' record of where it was installed).
async fn remove_from(b: &Backup, ctx: &Ctx, host: &str) -> Result<(), Error> {
    let ns = b.namespace().unwrap_or_default();
    let h = super::controller::host(ctx, host, "status.timerHost").await?;
    let conn = crate::hostaccess::connect(&h, ctx, &ns).await?;
    let id = timer::id(&ns, &b.name_any()).map_err(|e| host_err("the timer", e))?;
    timer::remove(&conn, &id).await.map_err(|e| host_err(&format!("Host {host}: removing the timer"), e))
}

/// Apply: the timer on `spec.runOn`'s Host as the Backup says, then status from the catalog.
pub async fn apply(b: &Backup, ctx: &Ctx) -> Result<Action, Error> {
    let Some(run_on) = &b.spec.run_on else { return Err(Error::Bug("no spec.runOn".into())) };
    let host_name = run_on.host_ref.name.clone();
    timer::check(&b.spec, &host_name).map_err(Blocked::invalid)?;
    let schedule =
        Schedule::parse(&b.spec.schedule, b.spec.time_zone.as_deref()).map_err(Blocked::invalid)?;
    let old = ctx.status.current(b);
    if let Some(prev) = old.timer_host.as_deref().filter(|p| *p != host_name) {
        remove_from(b, ctx, prev).await?;
    }
    let h = super::controller::host(ctx, &host_name, "spec.runOn.hostRef").await?;
    let (config, digest) = configuration(b, ctx, &h).await?;
    let mut st = old.clone();
    if old.timer_host.as_deref() != Some(&host_name) || old.timer_digest.as_deref() != Some(&digest) {
        let ns = b.namespace().unwrap_or_default();
        let conn = crate::hostaccess::connect(&h, ctx, &ns).await?;
        let id = timer::id(&ns, &b.name_any()).map_err(|e| host_err("the timer", e))?;
        timer::install(&conn, &id, &b.name_any(), &host_name, &config, &binary(ctx)?)
            .await
            .map_err(|e| host_err(&format!("Host {host_name}: installing the timer"), e))?;
        let note = format!("the schedule runs on Host {host_name} ({}.timer)", timer::unit(&id));
        ctx.publish(&b.object_ref(&()), "Install", EventType::Normal, "TimerInstalled", &note).await;
        st = BackupStatus { timer_host: Some(host_name.clone()), timer_digest: Some(digest), ..st };
    }
    let job = super::controller::job(b, ctx).await?;
    let cat = job.catalog().await.map_err(|e| Error::Host(format!("reading the catalog: {e}")))?;
    let now = Utc::now();
    let next = schedule.next_after(now);
    let mut new = catalog_status(&cat, st);
    new.next_schedule_time = next.map(to_time);
    let unit = timer::unit(&timer::id(&b.namespace().unwrap_or_default(), &b.name_any()).unwrap_or_default());
    let msg = match &new.last_backup {
        Some(a) => format!("{unit}.timer on Host {host_name} runs the schedule; newest artifact {}", a.id),
        None => format!("{unit}.timer on Host {host_name} runs the schedule; no artifact yet"),
    };
    let mut conds = vec![Cond::new(CondType::Ready, true, "ScheduledOnHost", msg)];
    let (objective, deadline) = super::controller::objectives(b, ctx, &new, now);
    conds.extend(objective);
    ctx.status.write(&ctx.kit, b, new, &conds).await?;
    let after_slot = next.and_then(|n| (n - now).to_std().ok()).map(|d| d + AFTER_SLOT);
    let wait = [Some(REFRESH), after_slot, deadline.and_then(|d| (d - now).to_std().ok())];
    Ok(Action::requeue(wait.into_iter().flatten().min().unwrap_or(REFRESH)))
}

/// Deleted: the timer leaves the Host it was installed on (unless a person let the Backup go
/// with the skip-cleanup annotation).
pub async fn cleanup(b: &Backup, ctx: &Ctx) -> Result<Action, Error> {
    if skip_cleanup(b) {
        let note = format!(
            "{SKIP_CLEANUP_ANNOTATION} is \"true\": deleted without cleanup; the timer stays on its host"
        );
        ctx.publish(&b.object_ref(&()), "Delete", EventType::Warning, "CleanupSkipped", &note).await;
        return Ok(Action::await_change());
    }
    let old = ctx.status.current(b);
    let host = old.timer_host.clone().or_else(|| b.spec.run_on.as_ref().map(|r| r.host_ref.name.clone()));
    if let Some(h) = host {
        remove_from(b, ctx, &h).await?;
    }
    Ok(Action::await_change())
}

/// `spec.runOn` removed: the timer leaves its Host and the operator schedules again.
pub async fn taken_back(b: &Backup, ctx: &Ctx) -> Result<(), Error> {
    let old = ctx.status.current(b);
    let Some(h) = old.timer_host.clone() else { return Ok(()) };
    remove_from(b, ctx, &h).await?;
    let new = BackupStatus { timer_host: None, timer_digest: None, ..old };
    ctx.status.write(&ctx.kit, b, new, &[]).await.map(drop)
}
