//! The Backup controller: observe (the schedule, the status) → decide ([`schedule::decide`],
//! pure) → act (one cycle: backup, drill, retention) → status read back from the store's
//! catalog. The slot is claimed in status before the run, so a slot never runs twice — not
//! after a crash, not across a leader failover; a killed run's leftovers are swept by the next.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::controller::Action;
use kube::runtime::finalizer::Event;
use kube::{Api, ResourceExt};

use super::cycle::{Outcome, cycle};
use super::engine::{Catalog, Job};
use super::metrics::Backups;
use super::s3::S3Store;
use super::schedule::{Decision, Schedule, decide};
use super::source::{PgTarget, Source};
use super::store::Store;
use crate::api::backup::{Backup, BackupArtifact, BackupSource, BackupStatus, RUN_REQUESTED};
use crate::api::host::Host;
use crate::conditions::{Cond, CondType};
use crate::context::{Blocked, Call, Context, Error};
use crate::kit;
use crate::kit::kinds::Reconciled;

/// The Backup controller's context: the shared one, its status writer, its metrics.
pub type Ctx = crate::context::Own<Backup, Backups>;

/// Artifacts listed in status (the whole catalog is in the store and `nova backup list`).
const RECENT: usize = 10;

pub fn to_time(t: DateTime<Utc>) -> Time {
    Time(Timestamp::from_second(t.timestamp()).unwrap_or_default())
}

fn from_time(t: &Time) -> DateTime<Utc> {
    DateTime::from_timestamp(t.0.as_second(), 0).unwrap_or_default()
}

pub async fn reconcile(b: Arc<Backup>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let c = ctx.clone();
    kit::run(b, &ctx.kit, &ctx.status, &[], |b| async move {
        // Only a Backup that has (or had) its schedule on a Host needs the finalizer.
        if b.spec.run_on.is_none() && !b.finalizers().iter().any(|f| f == kit::finalizer::FINALIZER) {
            return reconcile_inner(&b, &c).await;
        }
        let api = b.api_for(c.client.clone());
        kit::finalized(&api, b, |event| async {
            match event {
                Event::Apply(b) if b.spec.run_on.is_some() => super::hostctl::apply(&b, &c).await,
                Event::Apply(b) => {
                    super::hostctl::taken_back(&b, &c).await?;
                    reconcile_inner(&b, &c).await
                }
                Event::Cleanup(b) => super::hostctl::cleanup(&b, &c).await,
            }
        })
        .await
    })
    .await
}

async fn reconcile_inner(b: &Backup, ctx: &Ctx) -> Result<Action, Error> {
    let schedule =
        Schedule::parse(&b.spec.schedule, b.spec.time_zone.as_deref()).map_err(Blocked::invalid)?;
    let now = Utc::now();
    let old = ctx.status.current(b);
    let last_slot = old.last_schedule_time.as_ref().map(from_time);
    let created = b.metadata.creation_timestamp.as_ref().map_or(now, from_time);
    let deadline = b.spec.starting_deadline_seconds.map(chrono::Duration::seconds);
    // A run in a Job (a PersistentVolumeClaim's) is followed until its outcome is in status.
    if let Some(wait) = super::jobs::follow(b, ctx).await? {
        return Ok(wait);
    }
    let old = ctx.status.current(b);
    let request = b.annotations().get(RUN_REQUESTED).filter(|r| old.last_request.as_ref() != Some(*r));
    if let Some(r) = request {
        return run(b, ctx, &schedule, now, Some(r.clone())).await;
    }
    match decide(&schedule, now, last_slot, created, b.spec.suspend, deadline) {
        Decision::Suspended => {
            let new = BackupStatus { next_schedule_time: None, ..old };
            let c = Cond::new(
                CondType::Ready,
                true,
                "Suspended",
                "spec.suspend is true: no runs until it is false",
            );
            ctx.status.write(&ctx.kit, b, new, &[c]).await?;
            Ok(Action::await_change())
        }
        Decision::Wait { next } => {
            let drill_next = match scheduled_drill(b, ctx, now, created).await? {
                Drill::Ran => return Ok(Action::requeue(Duration::from_secs(1))),
                Drill::Next(n) => n,
            };
            let (mut conds, deadline) = objectives(b, ctx, &old, now);
            if old.conditions.is_empty() || old.next_schedule_time.is_none() {
                let msg = format!("the first run is at {}", next.map(|n| n.to_rfc3339()).unwrap_or_default());
                if old.last_backup.is_none() {
                    conds.push(Cond::new(CondType::Ready, true, "Scheduled", msg));
                }
            }
            let new = BackupStatus { next_schedule_time: next.map(to_time), ..old };
            ctx.status.write(&ctx.kit, b, new, &conds).await?;
            Ok(requeue_at(earliest(earliest(next, deadline), drill_next), now))
        }
        Decision::Skip { slot, next } => {
            let msg =
                format!("the run of {slot} was missed by more than spec.startingDeadlineSeconds: skipped");
            let new = BackupStatus {
                last_schedule_time: Some(to_time(slot)),
                next_schedule_time: next.map(to_time),
                ..old
            };
            ctx.status
                .write(&ctx.kit, b, new, &[Cond::new(CondType::Ready, false, "MissedSchedule", msg)])
                .await?;
            Ok(requeue_at(next, now))
        }
        Decision::Run { slot } => run(b, ctx, &schedule, slot, None).await,
    }
}

enum Drill {
    Ran,
    Next(Option<DateTime<Utc>>),
}

/// With `spec.verify.schedule`, restore drills of the newest artifact run on their own cron;
/// the slot is claimed in status first, as a backup's is.
async fn scheduled_drill(
    b: &Backup,
    ctx: &Ctx,
    now: DateTime<Utc>,
    created: DateTime<Utc>,
) -> Result<Drill, Error> {
    let verify = b.spec.verify.as_ref().filter(|v| v.restore_test);
    let Some(expr) = verify.and_then(|v| v.schedule.as_deref()) else { return Ok(Drill::Next(None)) };
    let sched = Schedule::parse(expr, b.spec.time_zone.as_deref())
        .map_err(|e| Blocked::invalid(e.replacen("spec.schedule", "spec.verify.schedule", 1)))?;
    let old = ctx.status.current(b);
    let last = old.last_verify_schedule_time.as_ref().map(from_time);
    let Decision::Run { slot } = decide(&sched, now, last, created, b.spec.suspend, None) else {
        return Ok(Drill::Next(sched.next_after(now)));
    };
    // A claim's Backup is drilled in a Job of its own, as it is backed up.
    if super::volume::needs_job(&b.spec) {
        super::jobs::start_drill(b, ctx, slot).await?;
        return Ok(Drill::Ran);
    }
    let job = job(b, ctx).await?;
    let claimed = BackupStatus { last_verify_schedule_time: Some(to_time(slot)), ..old };
    let msg = format!("restore drill for the verification of {slot}");
    ctx.status
        .write(&ctx.kit, b, claimed, &[Cond::new(CondType::Reconciling, true, "Verifying", msg)])
        .await?;
    let (ns, name) = (b.namespace().unwrap_or_default(), b.name_any());
    let mut conds = vec![Cond::new(CondType::Reconciling, false, "Idle", "no run in progress")];
    let newest = job.catalog().await.ok().and_then(|c| c.entries.first().map(|e| e.manifest.id.clone()));
    if let Some(id) = newest {
        let query = verify.and_then(|v| v.check_query.as_deref());
        let (action, line, cond) = match job.drill(&id, query, Utc::now()).await {
            Ok(v) => {
                let secs = v.restore_millis as f64 / 1000.0;
                ctx.families.verified(&ns, &name, Utc::now().timestamp() as f64, secs);
                let msg = format!("artifact {id} restored in a scheduled drill in {secs:.1} s: {}", v.method);
                ("verify", msg.clone(), Cond::new(CondType::Ready, true, "Verified", msg))
            }
            Err(e) => {
                ctx.families.failed(&ns, &name, "drill");
                let msg = format!("artifact {id} failed its scheduled restore drill: {e}");
                ("verify-failed", msg.clone(), Cond::new(CondType::Ready, false, "DrillFailed", msg))
            }
        };
        ctx.state.audit("Backup", &ns, &name, action, &line).await?;
        conds.push(cond);
    }
    let cat = job.catalog().await.unwrap_or_default();
    let new = catalog_status(&cat, ctx.status.current(b));
    ctx.status.write(&ctx.kit, b, new, &conds).await?;
    Ok(Drill::Ran)
}

fn requeue_at(next: Option<DateTime<Utc>>, now: DateTime<Utc>) -> Action {
    match next {
        // A second late rather than early: the slot must have passed when we look again.
        Some(n) => Action::requeue((n - now).to_std().unwrap_or_default() + Duration::from_secs(1)),
        None => Action::await_change(),
    }
}

/// Claims `slot`, runs one cycle, writes what the store now holds (and, for a run asked for by
/// annotation, that `request` was answered).
async fn run(
    b: &Backup,
    ctx: &Ctx,
    schedule: &Schedule,
    slot: DateTime<Utc>,
    request: Option<String>,
) -> Result<Action, Error> {
    if super::volume::needs_job(&b.spec) {
        return super::jobs::start(b, ctx, schedule, slot, request).await;
    }
    let job = job(b, ctx).await?;
    let (ns, name) = (b.namespace().unwrap_or_default(), b.name_any());
    let next = schedule.next_after(slot.max(Utc::now()));
    let claimed = BackupStatus {
        last_schedule_time: Some(to_time(slot)),
        next_schedule_time: next.map(to_time),
        ..ctx.status.current(b)
    };
    let msg = format!("backing up for the run of {slot}");
    ctx.status
        .write(&ctx.kit, b, claimed, &[Cond::new(CondType::Reconciling, true, "BackingUp", msg)])
        .await?;
    let started = Instant::now();
    let result = cycle(b, &job, &ctx.state, schedule.tz()).await;
    let seconds = started.elapsed().as_secs_f64();
    // A successful cycle already holds the catalog; after a failure, list what is there.
    let cat = match &result {
        Ok(out) => out.catalog.clone(),
        Err(_) => job.catalog().await.unwrap_or_default(),
    };
    let mut conds = vec![Cond::new(CondType::Reconciling, false, "Idle", "no run in progress")];
    match &result {
        Ok(out) => {
            let m = &out.manifest;
            ctx.families.succeeded(&ns, &name, Utc::now().timestamp() as f64, m.size, seconds);
            if let Some(v) = &out.verification {
                ctx.families.verified(
                    &ns,
                    &name,
                    Utc::now().timestamp() as f64,
                    v.restore_millis as f64 / 1000.0,
                );
            }
            conds.push(ready(out));
            if out.drill_failed.is_some() {
                ctx.families.failed(&ns, &name, "drill");
            }
        }
        Err(e) => {
            ctx.families.failed(&ns, &name, "backup");
            conds.push(Cond::new(
                CondType::Ready,
                false,
                "BackupFailed",
                format!("the run of {slot} failed: {e}"),
            ));
        }
    }
    let mut new = catalog_status(&cat, ctx.status.current(b));
    new.last_request = request.or(new.last_request);
    let (objective, deadline) = objectives(b, ctx, &new, Utc::now());
    conds.extend(objective);
    ctx.status.write(&ctx.kit, b, new, &conds).await?;
    // Drills on their own schedule are decided by the next reconcile: have it at once.
    let drills = b.spec.verify.as_ref().and_then(|v| v.schedule.as_ref()).map(|_| Utc::now());
    Ok(requeue_at(earliest(earliest(next, deadline), drills), Utc::now()))
}

fn earliest(a: Option<DateTime<Utc>>, b: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The ObjectivesMet condition (when the Backup has objectives), the metric, and when the RPO
/// will be missed if nothing new arrives.
pub(super) fn objectives(
    b: &Backup,
    ctx: &Ctx,
    st: &BackupStatus,
    now: DateTime<Utc>,
) -> (Vec<Cond>, Option<DateTime<Utc>>) {
    let Some(o) = &b.spec.objectives else { return (Vec::new(), None) };
    let newest = st.last_backup.as_ref().map(|a| from_time(&a.time));
    let created = b.metadata.creation_timestamp.as_ref().map_or(now, from_time);
    let v = super::objectives::judge(o, now, newest, st.last_restore_seconds, created);
    ctx.families.objectives(
        &b.namespace().unwrap_or_default(),
        &b.name_any(),
        v.rpo_violated,
        v.rto_violated,
    );
    (vec![v.cond], v.rpo_deadline)
}

fn ready(out: &Outcome) -> Cond {
    let m = &out.manifest;
    match (&out.verification, &out.drill_failed) {
        (_, Some(e)) => Cond::new(
            CondType::Ready,
            false,
            "DrillFailed",
            format!("artifact {} was written but its restore drill failed: {e}", m.id),
        ),
        (Some(v), _) => Cond::new(
            CondType::Ready,
            true,
            "Verified",
            format!(
                "artifact {} ({} bytes) written and restored in a drill in {:.1} s",
                m.id,
                m.size,
                v.restore_millis as f64 / 1000.0
            ),
        ),
        (None, None) => Cond::new(
            CondType::Ready,
            true,
            "Succeeded",
            format!("artifact {} ({} bytes) written", m.id, m.size),
        ),
    }
}

/// The status fields read back from the catalog.
pub fn catalog_status(cat: &Catalog, old: BackupStatus) -> BackupStatus {
    let artifact = |e: &super::engine::Entry| BackupArtifact {
        id: e.manifest.id.clone(),
        time: to_time(
            DateTime::parse_from_rfc3339(&e.manifest.created).map(|t| t.to_utc()).unwrap_or_default(),
        ),
        size: i64::try_from(e.manifest.size).unwrap_or(i64::MAX),
        sha256: e.manifest.sha256.clone(),
        verified: e.verified.is_some(),
    };
    let last_restore_seconds =
        cat.entries.iter().find_map(|e| e.verified.as_ref()).map(|v| v.restore_millis as f64 / 1000.0);
    BackupStatus {
        last_backup: cat.entries.first().map(artifact),
        recent: cat.entries.iter().take(RECENT).map(artifact).collect(),
        last_restore_seconds: last_restore_seconds.or(old.last_restore_seconds),
        corrupt: cat.corrupt.iter().map(|(id, why)| format!("{id}: {why}")).collect(),
        ..old
    }
}

pub(super) async fn host(ctx: &Context, name: &str, field: &str) -> Result<Host, Error> {
    let h = Api::<Host>::all(ctx.client.clone())
        .get_opt(name)
        .await
        .call(|| format!("reading Host {name} ({field})"))?;
    h.ok_or_else(|| Blocked::new("HostNotFound", format!("{field}: Host {name} does not exist")).into())
}

/// The source described by `s`, with secrets from namespace `ns` and Hosts through the
/// tenancy gate.
pub async fn source(s: &BackupSource, ns: &str, ctx: &Context, at: &str) -> Result<Source, Error> {
    if let Some(pg) = &s.postgres {
        let (r, field) = (&pg.connection_secret_ref, format!("{at}.postgres.connectionSecretRef"));
        let url = ctx.secret_value(ns, &r.name, &r.key, &field).await?;
        let url =
            String::from_utf8(url).map_err(|_| Blocked::invalid(format!("{field}: the URL is not UTF-8")))?;
        let mut t =
            PgTarget::from_url(&url, &pg.database, &field).map_err(|e| Blocked::invalid(e.to_string()))?;
        if let Some(r) = &pg.host_ref {
            let hf = format!("{at}.postgres.hostRef");
            let h = host(ctx, &r.name, &hf).await?;
            let conn = crate::hostaccess::connect(&h, ctx, ns).await?;
            t = t.on_host(conn, h.name_any(), &field).map_err(|e| Blocked::invalid(e.to_string()))?;
        }
        return Ok(Source::Postgres(t));
    }
    if let Some(f) = &s.files {
        let h = host(ctx, &f.host_ref.name, &format!("{at}.files.hostRef")).await?;
        let conn = crate::hostaccess::connect(&h, ctx, ns).await?;
        return Ok(Source::HostFiles { conn, host: h.name_any(), paths: f.paths.clone() });
    }
    Err(Blocked::invalid(format!(
        "{at}.volume: PVC sources are not supported by this Nova yet; use postgres or files"
    ))
    .into())
}

/// The engine for `b`: its source, store and integrity key resolved.
pub async fn job(b: &Backup, ctx: &Context) -> Result<Job, Error> {
    let ns = b.namespace().unwrap_or_default();
    let s = &b.spec;
    let source = source(&s.source, &ns, ctx, "spec.source").await?;
    let store = if let Some(d) = &s.destination.s3 {
        let r = &d.credentials_secret_ref.name;
        let field = "spec.destination.s3.credentialsSecretRef";
        let id = ctx.secret_value(&ns, r, "accessKeyId", field).await?;
        let secret = ctx.secret_value(&ns, r, "secretAccessKey", field).await?;
        let creds =
            (String::from_utf8_lossy(&id).into_owned(), String::from_utf8_lossy(&secret).into_owned());
        let s3 =
            S3Store::for_backup(d, &ns, &b.name_any(), creds).map_err(|e| Blocked::invalid(e.to_string()))?;
        Store::S3(Box::new(s3))
    } else if let Some(d) = &s.destination.host_path {
        super::paths::check_abs(&d.path, "spec.destination.hostPath.path").map_err(Blocked::invalid)?;
        let h = host(ctx, &d.host_ref.name, "spec.destination.hostPath.hostRef").await?;
        let conn = crate::hostaccess::connect(&h, ctx, &ns).await?;
        Store::Host { conn, dir: format!("{}/{ns}/{}", d.path, b.name_any()) }
    } else {
        let msg = "spec.destination.pvc: not supported by this Nova yet; use s3 or hostPath";
        return Err(Blocked::invalid(msg).into());
    };
    let key = match &s.integrity {
        Some(i) => {
            let r = &i.hmac_key_secret_ref;
            Some(ctx.secret_value(&ns, &r.name, &r.key, "spec.integrity.hmacKeySecretRef").await?)
        }
        None => None,
    };
    let encryption = match &s.encryption {
        Some(e) => {
            let r = &e.recipients_secret_ref;
            let rec = ctx.secret_value(&ns, &r.name, &r.key, "spec.encryption.recipientsSecretRef").await?;
            let id = match &e.identity_secret_ref {
                Some(r) => {
                    Some(ctx.secret_value(&ns, &r.name, &r.key, "spec.encryption.identitySecretRef").await?)
                }
                None => None,
            };
            Some(super::crypt::Keys::from_secrets(&rec, id.as_deref()).map_err(Blocked::invalid)?)
        }
        None => None,
    };
    let backup = format!("{ns}/{}", b.name_any());
    Ok(Job { backup, source, store, key, encryption, progress: Default::default() })
}
