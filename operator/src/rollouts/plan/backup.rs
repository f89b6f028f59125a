//! The backup gate (`spec.strategy.backupGate`): a preview that passed its health gate is
//! promoted only once the Backup holds a verified artifact taken after the preview started and
//! younger than `maxAgeSeconds`. Nova asks the Backup for a run (a new request value per ask);
//! a run that fails holds the rollout Paused, saying why.

use std::time::Duration;

use k8s_openapi::jiff::{SignedDuration, Timestamp};

use super::{Input, Plan, progressing};
use crate::api::bluegreen::{BackupGate, BlueGreenDeploymentStatus, Phase};

/// While waiting for the run, look again this often (the Backup's changes do not wake a rollout).
pub const WAIT: Duration = Duration::from_secs(5);

fn fresh(input: &Input, g: &BackupGate, st: &BlueGreenDeploymentStatus, at: Timestamp) -> bool {
    let oldest = input.now.checked_sub(SignedDuration::from_secs(g.max_age_seconds)).unwrap_or(input.now);
    let started = st.preview_started_at.as_ref().map_or(input.now, |t| t.0);
    // Whole seconds: an artifact's time is stored to the second, and a run asked in the
    // second the preview started must count.
    at >= oldest && at.as_second() >= started.as_second()
}

/// Whether the gate holds the promotion; when it does, `p` says why (and what to ask).
pub fn backup_holds(input: &Input, g: &BackupGate, st: &BlueGreenDeploymentStatus, p: &mut Plan) -> bool {
    let d = input.desired;
    let name = &g.backup_ref.name;
    let b = input.backup.clone().unwrap_or_default();
    if b.newest_verified.is_some_and(|t| fresh(input, g, st, t)) {
        return false;
    }
    // Paused as a rollout waiting for `nova rollout promote` is: held, not failed.
    let paused = |p: &mut Plan, reason: &'static str, msg: String| {
        p.events.push((true, reason, msg.clone()));
        p.set(Phase::Paused, progressing(reason, &msg));
    };
    if !b.exists {
        let msg = format!(
            "spec.strategy.backupGate.backupRef: Backup {name} does not exist; revision {d} waits for it"
        );
        paused(p, "BackupGateInvalid", msg);
        return true;
    }
    if !b.verifies {
        let msg = format!(
            "spec.strategy.backupGate: Backup {name} does not verify its artifacts; set its spec.verify.restoreTest to true (revision {d} waits)"
        );
        paused(p, "BackupGateInvalid", msg);
        return true;
    }
    let mine = b.requested.clone().filter(|r| r.starts_with(&format!("{d}@")));
    match mine {
        Some(r) if b.answered.as_ref() == Some(&r) => {
            if let Some(why) = &b.failure {
                let msg = format!(
                    "revision {d} waits for a verified backup: the run of Backup {name} failed: {why}; fix the Backup (a new run is asked when its annotation changes) or abort"
                );
                paused(p, "BackupFailed", msg);
                return true;
            }
            // Answered and fine, yet nothing fresh: it aged past maxAgeSeconds. Ask again.
            ask(input, p, name)
        }
        Some(_) => {
            let msg = format!("revision {d} waits for the run of Backup {name} asked for its promotion");
            p.set(Phase::Progressing, progressing("AwaitingBackup", &msg));
            p.requeue = Some(p.requeue.map_or(WAIT, |r| r.min(WAIT)));
            true
        }
        None => ask(input, p, name),
    }
}

fn ask(input: &Input, p: &mut Plan, name: &str) -> bool {
    let d = input.desired;
    p.backup_request = Some(format!("{d}@{}", input.now.as_second()));
    let msg =
        format!("revision {d} passed the health gate; a run of Backup {name} is asked before promotion");
    p.events.push((false, "BackupRequested", msg.clone()));
    p.set(Phase::Progressing, progressing("AwaitingBackup", &msg));
    p.requeue = Some(p.requeue.map_or(WAIT, |r| r.min(WAIT)));
    true
}
