//! A TrainingJob's workers on Hosts, built (pure): where each worker runs, its systemd unit
//! and environment file, and what `systemctl show` says of a unit, classified for the plan.
//!
//! Every unit name carries the attempt (`nova-train-<ns>--<job>-a<attempt>-w<index>`), as the
//! pods' names do: units of an earlier attempt are leftovers the gang waits for.

use std::collections::BTreeMap;

use kube::ResourceExt;

use super::plan::Worker;
use super::pods;
use crate::api::TrainingJob;
use crate::render::{self, validate};

/// Where a job keeps its files on a host: progress lines, environment files, checkpoints.
pub const STATE_DIR: &str = "/var/lib/nova/training";
/// Nova's binary on a host (shared with the backup timers).
pub const BIN: &str = crate::ssh::binary::BIN;

/// `<namespace>--<name>`: Kubernetes names, so safe in unit and file names.
pub fn id(job: &TrainingJob) -> Result<String, String> {
    let (ns, name) = (job.namespace().unwrap_or_else(|| "default".into()), job.name_any());
    let ok = |s: &str| {
        !s.is_empty() && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-.".contains(&b))
    };
    if !ok(&ns) || !ok(&name) {
        return Err(format!("metadata.name: {ns}/{name} is not a Kubernetes name"));
    }
    Ok(format!("{ns}--{name}"))
}

/// The unit prefix of every worker of the job (a glob for `systemctl` and `ls`).
pub fn prefix(id: &str) -> String {
    format!("nova-train-{id}-a")
}

pub fn unit(id: &str, attempt: i32, index: u32) -> String {
    format!("{}{index}.service", attempt_prefix(id, attempt))
}

/// The unit prefix of an attempt's workers (a glob with `*`).
pub fn attempt_prefix(id: &str, attempt: i32) -> String {
    format!("{}{attempt}-w", prefix(id))
}

/// The attempt and index a unit name of the job carries.
pub fn parse_unit(id: &str, unit: &str) -> Option<(i32, u32)> {
    let rest = unit.strip_prefix(&prefix(id))?.strip_suffix(".service")?;
    let (a, w) = rest.split_once("-w")?;
    Some((a.parse().ok()?, w.parse().ok()?))
}

pub fn job_dir(id: &str) -> String {
    format!("{STATE_DIR}/{id}")
}

/// Rank 0 appends its progress lines here; Nova reads them over SSH.
pub fn progress_file(id: &str) -> String {
    format!("{}/progress.jsonl", job_dir(id))
}

pub fn checkpoint_dir(job: &TrainingJob, id: &str) -> String {
    job.spec.checkpoint.path.clone().unwrap_or_else(|| format!("{}/checkpoints", job_dir(id)))
}

/// Admission for host targets: what a host can run. The error names the field.
pub fn check(job: &TrainingJob) -> Result<(), String> {
    id(job)?;
    if job.spec.image.is_some() {
        return Err("spec.image: on hosts the workers run spec.command directly (no container runtime); \
                    remove spec.image or target Kubernetes"
            .into());
    }
    if job.spec.trainer.is_none() {
        validate::exec_start("spec.command", &job.spec.command).map_err(|e| e.to_string())?;
    }
    if let Some(p) = &job.spec.checkpoint.path {
        validate::abs_path("spec.checkpoint.path", p).map_err(|e| e.to_string())?;
    }
    if job.spec.checkpoint.pvc.is_some() {
        return Err("spec.checkpoint.pvc: a PVC is not on a host; use spec.checkpoint.path".into());
    }
    Ok(())
}

/// Places workers on the Hosts that are up: a worker stays where it was while its host is up;
/// the others go, in turn, to the least loaded host (by name on a tie). Err when none is up.
pub fn place(
    workers: u32,
    up: &[String],
    before: &BTreeMap<u32, String>,
) -> Result<BTreeMap<u32, String>, String> {
    if up.is_empty() {
        return Err("no selected Host can be reached".into());
    }
    let mut load: BTreeMap<&str, usize> = up.iter().map(|h| (h.as_str(), 0)).collect();
    let mut out = BTreeMap::new();
    for i in 0..workers {
        if let Some(h) = before.get(&i).filter(|h| load.contains_key(h.as_str())) {
            *load.entry(h.as_str()).or_default() += 1;
            out.insert(i, h.clone());
        }
    }
    let unplaced: Vec<u32> = (0..workers).filter(|i| !out.contains_key(i)).collect();
    for i in unplaced {
        let (h, n) = load.iter_mut().min_by_key(|(h, n)| (**n, **h)).expect("a host is up");
        *n += 1;
        out.insert(i, (*h).to_owned());
    }
    Ok(out)
}

/// The environment of worker `w` on a host: the pods' contract, with rank 0's address for
/// the rendezvous, the host's checkpoint directory and progress file.
pub fn env(job: &TrainingJob, id: &str, w: &pods::Worker, master: &str) -> BTreeMap<String, String> {
    let mut e = pods::env(job, w);
    let set = [
        ("MASTER_ADDR", master.to_owned()),
        ("PET_RDZV_ENDPOINT", format!("{master}:{}", pods::RDZV_PORT)),
        ("NOVA_CHECKPOINT_DIR", checkpoint_dir(job, id)),
        // A host keeps its files: the newest checkpoint (carried here if need be) is there.
        ("NOVA_RESUME_FROM", w.resume_from.unwrap_or_default().to_owned()),
        ("NOVA_PROGRESS_FILE", progress_file(id)),
        ("NOVA_TRAININGJOB", job.name_any()),
    ];
    e.extend(set.into_iter().map(|(k, v)| (k.to_owned(), v)));
    e
}

pub fn env_path(id: &str, attempt: i32, index: u32) -> String {
    format!("{}/a{attempt}-w{index}.env", job_dir(id))
}

/// The command a worker runs: the built-in trainer is Nova's own binary on the host.
pub fn exec(job: &TrainingJob) -> Result<Vec<String>, String> {
    if job.spec.trainer.is_some() {
        let mut c = super::builtin::command(&job.spec)?;
        c[0] = BIN.to_owned();
        return Ok(c);
    }
    Ok(job.spec.command.clone())
}

/// The worker's unit. `Restart=no`: Nova restarts the gang, never one worker. On stop the
/// trainer gets SIGTERM and 30 s to write a checkpoint, as a pod's grace period.
pub fn service(job: &TrainingJob, id: &str, attempt: i32, index: u32) -> Result<String, String> {
    let exec = validate::exec_start("spec.command", &exec(job)?).map_err(|e| e.to_string())?;
    let name = job.name_any();
    Ok(format!(
        "# Managed by Nova (TrainingJob {id}); changes are overwritten.\n[Unit]\n\
         Description=Nova training {name} attempt {attempt} worker {index}\n\
         Wants=network-online.target\nAfter=network-online.target\n\n[Service]\nType=exec\n\
         EnvironmentFile={env}\nWorkingDirectory={dir}\nExecStart={exec}\nRestart=no\n\
         KillMode=mixed\nKillSignal=SIGTERM\nTimeoutStopSec=30s\nLimitNOFILE=65536\n{hook}",
        env = env_path(id, attempt, index),
        dir = job_dir(id),
        hook = exit_hook(&exit_path(id, attempt, index)),
    ))
}

/// The environment file of a worker.
pub fn env_file(vars: &BTreeMap<String, String>) -> Result<String, String> {
    let pairs: Vec<(String, String)> = vars.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    render::environment_file(&pairs).map_err(|e| format!("spec.env: {e}"))
}

/// The GPUs of worker `index` on its host (`CUDA_VISIBLE_DEVICES`): the workers placed on one
/// host share its GPUs in index order, `per_worker` each.
pub fn gpus_of(placed: &BTreeMap<u32, String>, index: u32, per_worker: u32) -> Vec<u32> {
    let Some(host) = placed.get(&index) else { return Vec::new() };
    let slot = placed.iter().filter(|(i, h)| **i < index && *h == host).count() as u32;
    (slot * per_worker..(slot + 1) * per_worker).collect()
}

/// The readings asked of a host: `index, temperature, utilization %, memory used MiB` per GPU,
/// then, after a `# thresholds` line, `nvidia-smi -q -d TEMPERATURE` for each GPU's own slowdown
/// threshold (the query interface has no field for it).
pub const GPU_QUERY: &str = "command -v nvidia-smi >/dev/null 2>&1 || exit 0; \
    nvidia-smi --query-gpu=index,temperature.gpu,utilization.gpu,memory.used --format=csv,noheader,nounits; \
    echo '# thresholds'; nvidia-smi -q -d TEMPERATURE || true";

/// One GPU's readings from [`GPU_QUERY`].
#[derive(Clone, Debug, PartialEq)]
pub struct Gpu {
    pub index: u32,
    pub celsius: i32,
    pub utilization: Option<i32>,
    pub memory_mib: Option<i64>,
    /// Where the GPU starts slowing itself down ("GPU Slowdown Temp"), when the driver says.
    pub slowdown_celsius: Option<i32>,
}

/// The output of [`GPU_QUERY`]; a CSV line that does not parse (`[N/A]`, a driver message) is
/// skipped, and a threshold the driver does not give (`N/A`, another layout) is None.
pub fn parse_gpus(out: &str) -> Vec<Gpu> {
    let (csv, temps) = out.split_once("# thresholds\n").unwrap_or((out, ""));
    let slowdown = slowdowns(temps);
    csv.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(',').map(str::trim).collect();
            let index = f.first()?.parse().ok()?;
            Some(Gpu {
                index,
                celsius: f.get(1)?.parse().ok()?,
                utilization: f.get(2).and_then(|v| v.parse().ok()),
                memory_mib: f.get(3).and_then(|v| v.parse().ok()),
                slowdown_celsius: slowdown.get(&index).copied(),
            })
        })
        .collect()
}

/// "GPU Slowdown Temp : 93 C" per GPU of `nvidia-smi -q -d TEMPERATURE`, whose GPUs
/// ("GPU 00000000:01:00.0") come in PCI bus order, the order of nvidia-smi's indices.
fn slowdowns(text: &str) -> BTreeMap<u32, i32> {
    let mut out = BTreeMap::new();
    let mut gpu: Option<u32> = None;
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with("GPU ") && !t.contains(" : ") && t.contains(':') {
            gpu = Some(gpu.map_or(0, |g| g + 1));
        } else if let (Some(g), Some((key, value))) = (gpu, t.split_once(':')) {
            let celsius = value.trim().strip_suffix(" C").and_then(|v| v.trim().parse().ok());
            if let ("GPU Slowdown Temp", Some(c)) = (key.trim(), celsius) {
                out.insert(g, c);
            }
        }
    }
    out
}

pub fn exit_path(id: &str, attempt: i32, index: u32) -> String {
    format!("{}/a{attempt}-w{index}.exit", job_dir(id))
}

/// How a worker ended, kept in a file by `ExecStopPost=`: systemd forgets a finished unit
/// that nothing references, and with it the exit status.
fn exit_hook(path: &str) -> String {
    format!("ExecStopPost=/bin/sh -c 'echo ${{SERVICE_RESULT}} ${{EXIT_CODE}} ${{EXIT_STATUS}} > {path}'\n")
}

/// Signal numbers of the names systemd puts in `$EXIT_STATUS` (x86-64 and arm64 Linux).
fn signal_number(name: &str) -> i32 {
    const SIGNALS: [&str; 16] = [
        "HUP", "INT", "QUIT", "ILL", "TRAP", "ABRT", "BUS", "FPE", "KILL", "USR1", "SEGV", "USR2", "PIPE",
        "ALRM", "TERM", "STKFLT",
    ];
    let n = name.trim_start_matches("SIG");
    SIGNALS.iter().position(|s| *s == n).map_or_else(|| n.parse().unwrap_or(0), |i| i as i32 + 1)
}

/// A worker as its host shows it: the unit's `ActiveState` and the exit file's line
/// (`<result> <exited|killed|dumped> <status or signal>`), when there is one.
pub fn classify(active: &str, exit: Option<&str>) -> Worker {
    let Some(line) = exit.map(str::trim).filter(|l| !l.is_empty()) else {
        return match active {
            "active" | "activating" | "deactivating" | "reloading" => Worker::Running,
            // Written but not started yet: as a pod not placed.
            _ => Worker::Unplaced,
        };
    };
    let mut parts = line.split_whitespace();
    let (result, how, status) =
        (parts.next().unwrap_or(""), parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    match how {
        "exited" if status == "0" => Worker::Succeeded,
        "exited" => {
            let code = status.parse().unwrap_or(1);
            Worker::Failed { code: Some(code), why: format!("exited with {code}") }
        }
        "killed" | "dumped" => {
            Worker::Failed { code: Some(128 + signal_number(status)), why: format!("killed by SIG{status}") }
        }
        _ => Worker::Failed { code: None, why: format!("the unit ended: {result}") },
    }
}

/// One line per unit file of the job on a host: `<unit>|<ActiveState>|<exit line>`.
pub fn survey(id: &str) -> String {
    format!(
        "cd /etc/systemd/system 2>/dev/null || exit 0; for u in {p}*-w*.service; do [ -e \"$u\" ] || continue; \
         b=${{u#{p}}}; b=${{b%.service}}; s=$(systemctl show -p ActiveState --value \"$u\"); \
         x=$(cat {dir}/a\"$b\".exit 2>/dev/null); echo \"$u|$s|$x\"; done",
        p = prefix(id),
        dir = job_dir(id),
    )
}

/// The lines of [`survey`]: (attempt, index, worker).
pub fn parse_survey(id: &str, out: &str) -> Vec<(i32, u32, Worker)> {
    out.lines()
        .filter_map(|l| {
            let mut f = l.splitn(3, '|');
            let (u, active, exit) = (f.next()?, f.next()?, f.next());
            let (a, i) = parse_unit(id, u)?;
            Some((a, i, classify(active, exit)))
        })
        .collect()
}

#[cfg(test)]
#[path = "units_tests.rs"]
mod tests;
