//! The operator's side of Backups that run in a Job (see [`super::volume`]): at a slot it
//! claims the slot and creates the config Secret and the Job (`status.job` names it); while the
//! Job runs the Backup is Reconciling; when it ends, its container's termination message (the
//! report `nova backup run --report` writes) becomes status, and `status.job` is cleared.

use std::time::Duration;

use chrono::{DateTime, Utc};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::{Api, Resource, ResourceExt};

use super::controller::{Ctx, to_time};
use super::schedule::Schedule;
use super::volume;
use crate::api::backup::{Backup, BackupStatus, Restore, RestorePhase, RestoreStatus};
use crate::conditions::{Cond, CondType};
use crate::context::{Blocked, Call, Context, Error};

/// How often a running Job is looked at.
const POLL: Duration = Duration::from_secs(5);

/// What the Job's container reports (its termination message).
#[derive(serde::Serialize, serde::Deserialize, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// The catalog after the run, as status shows it.
    #[serde(default)]
    pub status: Option<BackupStatus>,
    /// One line per step (artifact written, verified, retention).
    #[serde(default)]
    pub lines: Vec<String>,
    /// Why the run failed.
    #[serde(default)]
    pub error: Option<String>,
    /// What a restore did and checked.
    #[serde(default)]
    pub restored: Option<super::restore::Report>,
}

/// Writes the Secret the Job reads (the Backup and the Secret keys it reads).
async fn put_config(b: &Backup, ctx: &Context) -> Result<(), Error> {
    let ns = b.namespace().unwrap_or_default();
    let config = super::hostctl::run_config(b, ctx, None).await?;
    let secret = volume::config_secret(b, &config);
    let pp = PatchParams::apply(crate::kit::FIELD_MANAGER).force();
    Api::<Secret>::namespaced(ctx.client.clone(), &ns)
        .patch(&secret.name_any(), &pp, &Patch::Apply(&secret))
        .await
        .call(|| format!("writing Secret {ns}/{}", secret.name_any()))?;
    Ok(())
}

/// Creates `job` (one made by a run cut off before it recorded it is the same run).
async fn create(ctx: &Context, job: &Job) -> Result<(), Error> {
    let (ns, name) = (job.namespace().unwrap_or_default(), job.name_any());
    match Api::<Job>::namespaced(ctx.client.clone(), &ns).create(&PostParams::default(), job).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(e).call(|| format!("creating Job {ns}/{name}")),
    }
}

/// The Job of a Backup's run (`verb` run or verify) for `slot`: config and Job created.
async fn launch(b: &Backup, ctx: &Ctx, run: &volume::Run, slot: DateTime<Utc>) -> Result<String, Error> {
    volume::check(&b.spec).map_err(Blocked::invalid)?;
    put_config(b, ctx).await?;
    let name = volume::job_name(
        &format!("{}{}", b.name_any(), if run.verb == "run" { "" } else { "-v" }),
        slot.timestamp(),
    );
    create(ctx, &volume::job(b, &name, &ctx.families.image, run)).await?;
    Ok(name)
}

/// Creates the Job of the run of `slot`, and claims the slot.
pub async fn start(
    b: &Backup,
    ctx: &Ctx,
    schedule: &Schedule,
    slot: DateTime<Utc>,
    request: Option<String>,
) -> Result<Action, Error> {
    let name = launch(b, ctx, &volume::Run::backup(&b.spec), slot).await?;
    let next = schedule.next_after(slot.max(Utc::now()));
    let claimed = BackupStatus {
        last_schedule_time: Some(to_time(slot)),
        next_schedule_time: next.map(to_time),
        job: Some(name.clone()),
        last_request: request.or(ctx.status.current(b).last_request),
        ..ctx.status.current(b)
    };
    let msg = format!("Job {name} backs up for the run of {slot}");
    ctx.status
        .write(&ctx.kit, b, claimed, &[Cond::new(CondType::Reconciling, true, "BackingUp", msg)])
        .await?;
    Ok(Action::requeue(POLL))
}

/// Creates the Job of the restore drill of `slot` (`spec.verify.schedule`), and claims it.
pub async fn start_drill(b: &Backup, ctx: &Ctx, slot: DateTime<Utc>) -> Result<Action, Error> {
    let name = launch(b, ctx, &volume::Run::verify(&b.spec), slot).await?;
    let claimed = BackupStatus {
        last_verify_schedule_time: Some(to_time(slot)),
        job: Some(name.clone()),
        ..ctx.status.current(b)
    };
    let msg = format!("Job {name} drills the newest artifact for the verification of {slot}");
    ctx.status
        .write(&ctx.kit, b, claimed, &[Cond::new(CondType::Reconciling, true, "Verifying", msg)])
        .await?;
    Ok(Action::requeue(POLL))
}

/// A Job's end: None while it runs; whether it failed and what its pod reported.
async fn ended(ctx: &Context, ns: &str, name: &str) -> Result<Option<(bool, Report)>, Error> {
    let job = Api::<Job>::namespaced(ctx.client.clone(), ns)
        .get_opt(name)
        .await
        .call(|| format!("reading Job {ns}/{name}"))?;
    let Some(job) = job else {
        let report =
            Report { error: Some(format!("Job {name} is gone before it finished")), ..Report::default() };
        return Ok(Some((true, report)));
    };
    let st = job.status.unwrap_or_default();
    if st.succeeded.unwrap_or(0) == 0 && st.failed.unwrap_or(0) == 0 {
        return Ok(None);
    }
    Ok(Some((st.failed.unwrap_or(0) > 0, termination(ctx, ns, name).await?)))
}

/// The Job named in `status.job`: None once it has finished and its outcome is in status
/// (the caller goes on); Some(action) while it runs.
pub async fn follow(b: &Backup, ctx: &Ctx) -> Result<Option<Action>, Error> {
    let old = ctx.status.current(b);
    let Some(name) = old.job.clone() else { return Ok(None) };
    let ns = b.namespace().unwrap_or_default();
    let Some((failed, report)) = ended(ctx, &ns, &name).await? else {
        return Ok(Some(Action::requeue(POLL)));
    };
    let (ns, bn) = (ns.as_str(), b.name_any());
    let mut new = BackupStatus { job: None, ..old.clone() };
    let cond = match (&report, failed) {
        (Report { error: Some(e), .. }, _) => {
            Cond::new(CondType::Ready, false, "BackupFailed", format!("Job {name}: {e}"))
        }
        (_, true) => {
            Cond::new(CondType::Ready, false, "BackupFailed", format!("Job {name} failed; see its pod's log"))
        }
        (Report { status: Some(s), .. }, false) => {
            new = BackupStatus {
                last_backup: s.last_backup.clone(),
                recent: s.recent.clone(),
                last_restore_seconds: s.last_restore_seconds.or(new.last_restore_seconds),
                corrupt: s.corrupt.clone(),
                ..new
            };
            let what = report.lines.join("; ");
            Cond::new(CondType::Ready, true, "Succeeded", format!("Job {name}: {what}"))
        }
        (_, false) => Cond::new(
            CondType::Ready,
            false,
            "NoReport",
            format!("Job {name} succeeded but its pod left no report (its termination message)"),
        ),
    };
    if cond.status {
        if let Some(a) = &new.last_backup {
            let when = a.time.0.as_second() as f64;
            ctx.families.succeeded(ns, &bn, when, u64::try_from(a.size).unwrap_or(0), 0.0);
        }
    } else {
        ctx.families.failed(ns, &bn, "backup");
    }
    // The pod's own audit rows went with its /tmp: the operator keeps the run's.
    let action = if cond.status { "job" } else { "job-failed" };
    ctx.state.audit("Backup", ns, &bn, action, &cond.message).await?;
    let idle = Cond::new(CondType::Reconciling, false, "Idle", "no run in progress");
    ctx.status.write(&ctx.kit, b, new, &[idle, cond]).await?;
    Ok(None)
}

/// The report in the termination message of the Job's pod.
async fn termination(ctx: &Context, ns: &str, job: &str) -> Result<Report, Error> {
    let pods = Api::<Pod>::namespaced(ctx.client.clone(), ns)
        .list(&ListParams::default().labels(&format!("job-name={job}")))
        .await
        .call(|| format!("listing the pods of Job {ns}/{job}"))?;
    let message = pods.items.iter().find_map(|p| {
        let cs = p.status.as_ref()?.container_statuses.as_ref()?;
        cs.iter().find_map(|c| c.state.as_ref()?.terminated.as_ref()?.message.clone())
    });
    Ok(match message {
        Some(m) => serde_json::from_str(&m).unwrap_or_else(|_| Report {
            error: Some(m.lines().last().unwrap_or_default().chars().take(512).collect()),
            ..Report::default()
        }),
        None => Report::default(),
    })
}

/// A Restore of a claim's Backup (or into a claim): a Job running `nova backup restore` with
/// the claim mounted read-write; its report becomes the Restore's status.
pub async fn restore(r: &Restore, b: &Backup, ctx: &super::restorer::Ctx) -> Result<Action, Error> {
    let old = ctx.status.current(r);
    let ns = r.namespace().unwrap_or_default();
    if let Some(name) = old.job.clone() {
        let Some((failed, report)) = ended(ctx, &ns, &name).await? else { return Ok(Action::requeue(POLL)) };
        let done = RestoreStatus { completion_time: Some(to_time(Utc::now())), ..old };
        let bn = &r.spec.backup_ref.name;
        let idle = Cond::new(CondType::Reconciling, false, "Finished", "the restore ran once");
        let (new, ready) = match (report.restored, report.error, failed) {
            (Some(rep), None, false) => {
                ctx.families.restored(&ns, bn, rep.millis as f64 / 1000.0);
                let msg = format!("Job {name} restored artifact {} ({} bytes)", rep.id, rep.bytes);
                let st = RestoreStatus {
                    phase: Some(RestorePhase::Succeeded),
                    artifact_id: Some(rep.id),
                    bytes: i64::try_from(rep.bytes).ok(),
                    duration_seconds: Some(rep.millis as f64 / 1000.0),
                    checked: rep.checked,
                    ..done
                };
                (st, Cond::new(CondType::Ready, true, "Restored", msg))
            }
            (_, error, _) => {
                ctx.families.failed(&ns, bn, "restore");
                let why = error.unwrap_or_else(|| "no report (see its pod's log)".into());
                let st = RestoreStatus { phase: Some(RestorePhase::Failed), ..done };
                (st, Cond::new(CondType::Ready, false, "RestoreFailed", format!("Job {name}: {why}")))
            }
        };
        let action = if ready.status { "restore" } else { "restore-failed" };
        ctx.state.audit("Backup", &ns, bn, action, &ready.message).await?;
        ctx.status.write(&ctx.kit, r, new, &[idle, ready]).await?;
        return Ok(Action::await_change());
    }
    let target = r.spec.target.as_ref().map_or(&b.spec.source, |t| t);
    let Some(claim) = target.volume.as_ref().map(|v| v.pvc.clone()) else {
        let msg = "spec.target: a Backup of a PersistentVolumeClaim restores into a claim (target.volume)";
        return Err(Blocked::invalid(msg).into());
    };
    let run = volume::Run::restore(
        r.spec.artifact.id.as_deref(),
        &claim,
        r.spec.directory.as_deref(),
        r.spec.overwrite,
    )
    .map_err(Blocked::invalid)?;
    volume::check(&b.spec).map_err(Blocked::invalid)?;
    put_config(b, ctx).await?;
    let name = format!("{}-restore", r.name_any().chars().take(55).collect::<String>());
    let mut job = volume::job(b, &name, &ctx.families.image, &run);
    // The Restore owns its Job (the Backup owns its runs').
    job.metadata.owner_references = r.controller_owner_ref(&()).map(|o| vec![o]);
    create(ctx, &job).await?;
    let running = RestoreStatus { phase: Some(RestorePhase::Running), job: Some(name.clone()), ..old };
    let msg = format!("Job {name} restores into PersistentVolumeClaim {claim}");
    ctx.status
        .write(&ctx.kit, r, running, &[Cond::new(CondType::Reconciling, true, "Restoring", msg)])
        .await?;
    Ok(Action::requeue(POLL))
}
