//! A TrainingJob's gang on Hosts, over the SSH engine: observe (each selected Host's worker
//! units and rank 0's progress file) and act (units stopped, written and started; the newest
//! checkpoint copied to every Host that can be reached). The decision is the same pure plan
//! the pods follow ([`super::plan`]); the caller keeps the status (the state database for
//! `nova apply`).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use nova_train::progress::Record;

use k8s_openapi::jiff::Timestamp;

use super::plan::{Observed, Plan, Policy};
use super::{pods, units};
use crate::api::TrainingJob;
use crate::api::training::{TrainingJobStatus, WorkerStatus};
use crate::ssh::{self, Connection, quote};

const T: Duration = Duration::from_secs(60);

/// A selected Host: its name, the address workers reach it by, and a session when it answered.
pub struct Site {
    pub name: String,
    pub address: String,
    pub conn: Option<Connection>,
}

/// Ends the sessions of a round.
pub async fn close(sites: Vec<Site>) {
    for c in sites.into_iter().filter_map(|s| s.conn) {
        c.close().await;
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Invalid(String),
    #[error("host/{host}: {source}")]
    Ssh { host: String, source: ssh::Error },
    #[error(transparent)]
    Binary(#[from] ssh::binary::BinaryError),
}

pub(super) fn on(host: &str) -> impl FnOnce(ssh::Error) -> Error + '_ {
    move |source| Error::Ssh { host: host.to_owned(), source }
}

/// The gang as the Hosts that answered show it. Workers on a Host that did not answer are
/// absent (the plan restarts the gang elsewhere); so are their units as leftovers, which
/// cannot be stopped until it answers again.
pub async fn observe(sites: &[Site], id: &str, attempt: Option<i32>) -> Result<Observed, Error> {
    let mut seen = Observed::default();
    for s in sites {
        let Some(c) = &s.conn else { continue };
        let out = c.run(&units::survey(id), T).await.map_err(on(&s.name))?;
        for (a, i, w) in units::parse_survey(id, &out) {
            if Some(a) == attempt {
                seen.workers.insert(i, w);
            } else {
                seen.leftovers += 1;
            }
        }
    }
    Ok(seen)
}

/// Reads rank 0's progress lines (on its Host) into `st`; Some(true) when the step advanced,
/// None when its Host did not answer (no evidence of a hang).
pub async fn progress(sites: &[Site], id: &str, st: &mut TrainingJobStatus) -> Result<Option<bool>, Error> {
    let rank0 = st.workers.iter().find(|w| w.index == 0).and_then(|w| w.host.clone());
    let Some(c) = sites.iter().find(|s| Some(&s.name) == rank0.as_ref()).and_then(|s| s.conn.as_ref()) else {
        return Ok(None);
    };
    let cmd = format!("tail -n 400 {} 2>/dev/null || true", quote(&units::progress_file(id)));
    let out = c.run(&cmd, T).await.map_err(on(rank0.as_deref().unwrap_or_default()))?;
    Ok(Some(super::observe::fold(out.lines().filter_map(Record::parse), st)))
}

/// Stops the job's units on every Host that answers (all of them, or those of attempts other
/// than `keep`) and removes their files. `systemctl stop` returns once each trainer exited
/// (SIGTERM, 30 s to write a checkpoint).
pub async fn stop(sites: &[Site], id: &str, keep: Option<i32>) -> Result<(), Error> {
    let keep = keep.map(|a| units::attempt_prefix(id, a));
    let script = format!(
        "cd /etc/systemd/system 2>/dev/null || exit 0; us=''; for u in {p}*-w*.service; do [ -e \"$u\" ] || continue; \
         case \"$u\" in {keep}) continue;; esac; us=\"$us $u\"; done; [ -n \"$us\" ] || exit 0; \
         systemctl stop $us; for u in $us; do b=${{u#{p}}}; b=${{b%.service}}; rm -f \"$u\" {dir}/a\"$b\".env {dir}/a\"$b\".exit; done; \
         systemctl daemon-reload; systemctl reset-failed $us 2>/dev/null || true",
        p = units::prefix(id),
        keep = keep.map_or_else(|| "''".to_owned(), |k| format!("{k}*")),
        dir = units::job_dir(id),
    );
    for s in sites {
        if let Some(c) = &s.conn {
            c.run(&script, Duration::from_secs(120)).await.map_err(on(&s.name))?;
        }
    }
    Ok(())
}

/// Creates the workers `plan.create` of the new attempt: placed on Hosts that answered, each
/// with the newest checkpoint, its environment and unit; started. The placement goes into
/// `plan.status.workers`.
pub async fn create(
    sites: &[Site],
    job: &TrainingJob,
    id: &str,
    plan: &mut Plan,
    binary: &Path,
) -> Result<(), Error> {
    let st = &mut plan.status;
    let attempt = st.attempt.unwrap_or(1);
    let up: Vec<String> = sites.iter().filter(|s| s.conn.is_some()).map(|s| s.name.clone()).collect();
    let before: BTreeMap<u32, String> =
        st.workers.iter().filter_map(|w| Some((w.index as u32, w.host.clone()?))).collect();
    let placed = units::place(job.spec.workers.max(1) as u32, &up, &before).map_err(Error::Invalid)?;
    let site = |h: &str| sites.iter().find(|s| s.name == h).expect("placed on a selected host");
    let master = site(&placed[&0]).address.clone();
    let resume = match (&job.spec.resume, &st.last_checkpoint) {
        (crate::api::training::Resume::Latest, Some(c)) => Some(c.clone()),
        _ => None,
    };
    let mut binary_on = std::collections::BTreeSet::new();
    for (&index, host) in placed.iter().filter(|(i, _)| plan.create.contains(i)) {
        let s = site(host);
        let c = s.conn.as_ref().expect("placed on a host that answered");
        let resume_from = match &resume {
            Some(ck) => carry(sites, ck, host).await?.then_some(ck.path.as_str()),
            None => None,
        };
        // Once per Host, not per worker: each check is two commands over SSH.
        if job.spec.trainer.is_some() && !binary_on.contains(host.as_str()) {
            ssh::binary::ensure(c, binary, "spec.target.hosts").await?;
            binary_on.insert(host.as_str());
        }
        let w = pods::Worker {
            attempt,
            index,
            restarts: st.restarts.unwrap_or(0),
            resume_from,
            trainer_image: "",
        };
        let mut vars = units::env(job, id, &w, &master);
        if let Some(g) = gpus(&placed, index, job) {
            vars.insert("CUDA_VISIBLE_DEVICES".into(), g);
        }
        let env = units::env_file(&vars).map_err(Error::Invalid)?;
        let unit = units::service(job, id, attempt, index).map_err(Error::Invalid)?;
        let dir = units::job_dir(id);
        // A new attempt's progress starts at the checkpoint: older lines would read as newer.
        let prep = format!(
            "set -e; install -d -m 0700 {d}; if [ {index} = 0 ] && [ -f {p} ]; then mv -f {p} {p}.prev; fi",
            d = quote(&dir),
            p = quote(&units::progress_file(id)),
        );
        c.run(&prep, T).await.map_err(on(host))?;
        let env_path = units::env_path(id, attempt, index);
        c.upload(&env_path, env.as_bytes(), 0o600, Some("root"), T).await.map_err(on(host))?;
        let name = units::unit(id, attempt, index);
        c.upload(&format!("/etc/systemd/system/{name}"), unit.as_bytes(), 0o644, None, T)
            .await
            .map_err(on(host))?;
        c.run(&format!("systemctl daemon-reload && systemctl start --no-block {name}"), T)
            .await
            .map_err(on(host))?;
    }
    st.workers = placed
        .iter()
        .map(|(&i, h)| WorkerStatus {
            index: i as i32,
            host: Some(h.clone()),
            gpus: gpus(&placed, i, job),
            ..WorkerStatus::default()
        })
        .collect();
    Ok(())
}

/// Worker `index`'s `CUDA_VISIBLE_DEVICES`; None for a job on CPUs.
fn gpus(placed: &BTreeMap<u32, String>, index: u32, job: &TrainingJob) -> Option<String> {
    let ids = units::gpus_of(placed, index, job.spec.gpus_per_worker.max(0) as u32);
    (!ids.is_empty()).then(|| ids.iter().map(u32::to_string).collect::<Vec<_>>().join(","))
}

/// Whether `host` has the checkpoint `ck` at its path, copying it there from a Host that
/// has it and answers. False when none can give it (the worker then starts without it).
async fn carry(sites: &[Site], ck: &crate::api::training::CheckpointRef, host: &str) -> Result<bool, Error> {
    let to = sites.iter().find(|s| s.name == host).and_then(|s| s.conn.as_ref());
    let Some(to) = to else { return Ok(false) };
    let path = quote(&ck.path);
    if to.exec(&format!("test -s {path}"), None, T).await.map_err(on(host))?.code == 0 {
        return Ok(true);
    }
    for from in ck.hosts.iter().filter(|h| *h != host) {
        let Some(src) = sites.iter().find(|s| s.name == *from).and_then(|s| s.conn.as_ref()) else {
            continue;
        };
        // Through a file here: a checkpoint can be larger than memory should hold.
        let tmp =
            tempfile::NamedTempFile::new().map_err(|e| Error::Invalid(format!("a temporary file: {e}")))?;
        let mut f = tokio::fs::File::create(tmp.path()).await.map_err(|e| Error::Invalid(e.to_string()))?;
        let long = Duration::from_secs(1800);
        src.run_with_output(&format!("cat {path}"), &mut f, long).await.map_err(on(from))?;
        let f = tokio::fs::File::open(tmp.path()).await.map_err(|e| Error::Invalid(e.to_string()))?;
        let put = format!(
            "set -e; install -d \"$(dirname {path})\"; t={path}.nova-part; cat > \"$t\"; mv -f \"$t\" {path}"
        );
        to.run_with_input(&put, f, long).await.map_err(on(host))?;
        return Ok(true);
    }
    Ok(false)
}

/// Copies the newest checkpoint to every selected Host that answers and lacks it, so a worker
/// moved off a Host that goes down later still resumes from it. `hosts` records who has it.
pub async fn spread(sites: &[Site], st: &mut TrainingJobStatus) -> Result<(), Error> {
    let rank0 = st.workers.iter().find(|w| w.index == 0).and_then(|w| w.host.clone());
    let Some(ck) = st.last_checkpoint.as_mut() else { return Ok(()) };
    if ck.hosts.is_empty() {
        ck.hosts.extend(rank0);
    }
    if ck.hosts.is_empty() {
        return Ok(());
    }
    let lacking: Vec<&Site> =
        sites.iter().filter(|s| s.conn.is_some() && !ck.hosts.contains(&s.name)).collect();
    for s in lacking {
        if carry(sites, ck, &s.name).await? {
            ck.hosts.push(s.name.clone());
        }
    }
    Ok(())
}

/// One round on the Hosts: what they show, the plan (pure, the pods' too), what it asks done.
/// `binary` is Nova's own, for the built-in trainer.
pub async fn round(
    sites: &[Site],
    job: &TrainingJob,
    old: &TrainingJobStatus,
    binary: &Path,
) -> Result<Plan, Error> {
    let id = units::id(job).map_err(Error::Invalid)?;
    let mut seen = observe(sites, &id, old.attempt).await?;
    let mut status = old.clone();
    if super::plan::reads_progress(old.phase) && seen.workers.contains_key(&0) {
        seen.progressed = progress(sites, &id, &mut status).await?;
    }
    let mut p = super::plan::decide(&Policy::of(&job.spec), &status, &seen, Timestamp::now());
    super::hostguard::guard(sites, job, &id, &mut p).await?;
    if p.stop_all || p.stop_leftovers {
        let keep = (!p.stop_all).then_some(p.status.attempt).flatten();
        stop(sites, &id, keep).await?;
    }
    if !p.create.is_empty() {
        create(sites, job, &id, &mut p, binary).await?;
    }
    spread(sites, &mut p.status).await?;
    Ok(p)
}
