//! The Restore controller: a Restore runs once. Its artifact (by id, or the newest verified)
//! is checked whole — HMAC, SHA-256, archive entries — before the target is touched; then it
//! is restored, and the status says what was checked, how many bytes and how long it took.
//! A finished Restore (Succeeded or Failed) is never run again: create a new one.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};

use super::controller::{job, source, to_time};
use super::engine::EngineError;
use super::metrics::Backups;
use super::restore::Target;
use super::source::Source;
use crate::api::backup::{Backup, Restore, RestorePhase, RestoreStatus};
use crate::conditions::{Cond, CondType};
use crate::context::{Blocked, Call, Error};
use crate::kit;

/// The Restore controller's context (it shares the backup metric families).
pub type Ctx = crate::context::Own<Restore, Backups>;

pub async fn reconcile(r: Arc<Restore>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let c = ctx.clone();
    kit::run(r, &ctx.kit, &ctx.status, &[], |r| async move { reconcile_inner(&r, &c).await }).await
}

async fn reconcile_inner(r: &Restore, ctx: &Ctx) -> Result<Action, Error> {
    let old = ctx.status.current(r);
    if matches!(old.phase, Some(RestorePhase::Succeeded | RestorePhase::Failed)) {
        return Ok(Action::await_change());
    }
    let ns = r.namespace().unwrap_or_default();
    let name = &r.spec.backup_ref.name;
    let b = Api::<Backup>::namespaced(ctx.client.clone(), &ns)
        .get_opt(name)
        .await
        .call(|| format!("reading Backup {ns}/{name} (spec.backupRef)"))?
        .ok_or_else(|| {
            Blocked::new("BackupNotFound", format!("spec.backupRef: Backup {ns}/{name} does not exist"))
        })?;
    let into_claim = r.spec.target.as_ref().is_some_and(|t| t.volume.is_some());
    if super::volume::needs_job(&b.spec) || into_claim {
        return super::jobs::restore(r, &b, ctx).await;
    }
    let job = job(&b, ctx).await?;
    let into = match &r.spec.target {
        Some(t) => source(t, &ns, ctx, "spec.target").await?,
        None => job.source.clone(),
    };
    let target = target(&into, r)?;
    let cat = job.catalog().await.map_err(|e| Error::Host(e.to_string()))?;
    let id = match &r.spec.artifact.id {
        Some(id) => id.clone(),
        None => cat.latest_verified().map(|e| e.manifest.id.clone()).ok_or_else(|| {
            let msg = format!(
                "Backup {name} has no verified artifact yet (spec.artifact.latestVerified); waiting for one"
            );
            Blocked::new("NoVerifiedArtifact", msg).retry(Duration::from_secs(60))
        })?,
    };
    let running = RestoreStatus { phase: Some(RestorePhase::Running), artifact_id: Some(id.clone()), ..old };
    let msg = format!("restoring artifact {id}");
    ctx.status
        .write(&ctx.kit, r, running, &[Cond::new(CondType::Reconciling, true, "Restoring", msg)])
        .await?;
    let result = job.restore(&id, &target).await;
    let done = ctx.status.current(r);
    let idle = Cond::new(CondType::Reconciling, false, "Finished", "the restore ran once");
    let (new, ready) = match result {
        Ok(rep) => {
            ctx.families.restored(&ns, name, rep.millis as f64 / 1000.0);
            let msg = format!(
                "artifact {id} restored ({} bytes in {:.1} s)",
                rep.bytes,
                rep.millis as f64 / 1000.0
            );
            let st = RestoreStatus {
                phase: Some(RestorePhase::Succeeded),
                completion_time: Some(to_time(Utc::now())),
                bytes: i64::try_from(rep.bytes).ok(),
                duration_seconds: Some(rep.millis as f64 / 1000.0),
                checked: rep.checked,
                ..done
            };
            (st, Cond::new(CondType::Ready, true, "Restored", msg))
        }
        Err(e) => {
            ctx.families.failed(&ns, name, "restore");
            let reason =
                if matches!(e, EngineError::Integrity(_)) { "ArtifactCorrupt" } else { "RestoreFailed" };
            let st = RestoreStatus {
                phase: Some(RestorePhase::Failed),
                completion_time: Some(to_time(Utc::now())),
                ..done
            };
            (st, Cond::new(CondType::Ready, false, reason, format!("artifact {id}: {e}")))
        }
    };
    ctx.status.write(&ctx.kit, r, new, &[idle, ready]).await?;
    Ok(Action::await_change())
}

/// Where the restore writes, from the target source and the Restore's directory and overwrite.
fn target(into: &Source, r: &Restore) -> Result<Target, Error> {
    Ok(match into {
        Source::Postgres(t) => Target::Postgres { target: t.clone(), overwrite: r.spec.overwrite },
        Source::HostFiles { conn, .. } => {
            let dir = r.spec.directory.clone().unwrap_or_else(|| "/".into());
            if dir == "/" && !r.spec.overwrite {
                let msg = "spec.directory: restoring files over their originals (no directory) needs spec.overwrite: true";
                return Err(Blocked::invalid(msg).into());
            }
            Target::HostDir { conn: conn.clone(), dir }
        }
        // The controller reaches hosts over SSH; local files are only a host timer's.
        Source::LocalFiles { .. } => return Err(Error::Bug("a local files source in the controller".into())),
    })
}
