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
use kube::{Api, ResourceExt};

use super::controller::{Ctx, to_time};
use super::schedule::Schedule;
use super::{hostcli, volume};
use crate::api::backup::{Backup, BackupStatus};
use crate::conditions::{Cond, CondType};
use crate::context::{Blocked, Call, Error};

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
}

/// Creates the config Secret and the Job of the run of `slot`, and claims the slot.
pub async fn start(
    b: &Backup,
    ctx: &Ctx,
    schedule: &Schedule,
    slot: DateTime<Utc>,
    request: Option<String>,
) -> Result<Action, Error> {
    volume::check(&b.spec).map_err(Blocked::invalid)?;
    let ns = b.namespace().unwrap_or_default();
    let mut values = std::collections::BTreeMap::new();
    for (name, keys, field) in hostcli::secret_keys(&b.spec) {
        for k in keys {
            let v = ctx.secret_value(&ns, &name, &k, field).await?;
            values.insert((name.clone(), k), v);
        }
    }
    let config = hostcli::config(b, None, |name, key, _| {
        Ok(values.get(&(name.to_owned(), key.to_owned())).cloned().unwrap_or_default())
    })
    .map_err(|e| Blocked::invalid(e.to_string()))?;
    let secret = volume::config_secret(b, &config);
    let pp = PatchParams::apply(crate::kit::FIELD_MANAGER).force();
    Api::<Secret>::namespaced(ctx.client.clone(), &ns)
        .patch(&secret.name_any(), &pp, &Patch::Apply(&secret))
        .await
        .call(|| format!("writing Secret {ns}/{}", secret.name_any()))?;
    let name = volume::job_name(&b.name_any(), slot.timestamp());
    let job = volume::job(b, &name, &ctx.families.image);
    match Api::<Job>::namespaced(ctx.client.clone(), &ns).create(&PostParams::default(), &job).await {
        Ok(_) => {}
        // Made by a run cut off before it claimed the slot: the same run.
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => return Err(e).call(|| format!("creating Job {ns}/{name}")),
    }
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

/// The Job named in `status.job`: None once it has finished and its outcome is in status
/// (the caller goes on); Some(action) while it runs.
pub async fn follow(b: &Backup, ctx: &Ctx) -> Result<Option<Action>, Error> {
    let old = ctx.status.current(b);
    let Some(name) = old.job.clone() else { return Ok(None) };
    let ns = b.namespace().unwrap_or_default();
    let job = Api::<Job>::namespaced(ctx.client.clone(), &ns)
        .get_opt(&name)
        .await
        .call(|| format!("reading Job {ns}/{name}"))?;
    let st = job.as_ref().and_then(|j| j.status.clone()).unwrap_or_default();
    let done = st.succeeded.unwrap_or(0) > 0 || st.failed.unwrap_or(0) > 0;
    if job.is_some() && !done {
        return Ok(Some(Action::requeue(POLL)));
    }
    let report = match &job {
        Some(_) => termination(ctx, &ns, &name).await?,
        None => Report { error: Some(format!("Job {name} is gone before it finished")), ..Report::default() },
    };
    let (ns, bn) = (ns.as_str(), b.name_any());
    let mut new = BackupStatus { job: None, ..old.clone() };
    let failed = st.failed.unwrap_or(0) > 0 || job.is_none();
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
    let idle = Cond::new(CondType::Reconciling, false, "Idle", "no run in progress");
    ctx.status.write(&ctx.kit, b, new, &[idle, cond]).await?;
    Ok(None)
}

/// The report in the termination message of the Job's pod.
async fn termination(ctx: &Ctx, ns: &str, job: &str) -> Result<Report, Error> {
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
