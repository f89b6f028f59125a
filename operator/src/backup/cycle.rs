//! One scheduled cycle, the same from the operator and `nova backup run`: a backup, a restore
//! drill when `spec.verify` asks for one, then retention; an audit row for each step.

use chrono::Utc;
use chrono_tz::Tz;
use kube::ResourceExt;

use super::engine::{EngineError, Job};
use super::manifest::{Manifest, Verification};
use crate::api::backup::Backup;
use crate::state::{CatalogRow, State};

/// What a cycle did.
#[derive(Debug)]
pub struct Outcome {
    pub manifest: Manifest,
    pub verification: Option<Verification>,
    /// The drill's error, when it failed (the artifact stays, unverified).
    pub drill_failed: Option<String>,
    pub deleted: Vec<String>,
    /// The catalog after retention (what status and the index show).
    pub catalog: super::engine::Catalog,
}

impl Outcome {
    /// Lines for the user.
    pub fn lines(&self) -> Vec<String> {
        let m = &self.manifest;
        let mut out = vec![format!(
            "artifact {} written: {} bytes ({} raw), sha256 {}",
            m.id, m.size, m.raw_size, m.sha256
        )];
        if let Some(v) = &self.verification {
            out.push(format!("artifact {} verified in {} ms: {}", m.id, v.restore_millis, v.method));
        }
        if let Some(e) = &self.drill_failed {
            out.push(format!("artifact {} failed its restore drill: {e}", m.id));
        }
        if !self.deleted.is_empty() {
            out.push(format!("retention deleted {}", self.deleted.join(", ")));
        }
        out
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CycleError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    State(#[from] crate::state::Error),
}

/// Runs one cycle of Backup `b` with `job`; buckets of retention in `tz`.
pub async fn cycle(b: &Backup, job: &Job, state: &State, tz: Tz) -> Result<Outcome, CycleError> {
    let (ns, name) = (b.namespace().unwrap_or_else(|| "default".into()), b.name_any());
    let audit = async |action: &str, detail: &str| state.audit("Backup", &ns, &name, action, detail).await;
    let manifest = match job.run(Utc::now()).await {
        Ok(m) => m,
        Err(e) => {
            audit("backup-failed", &e.to_string()).await?;
            return Err(e.into());
        }
    };
    let mut out = Outcome {
        manifest,
        verification: None,
        drill_failed: None,
        deleted: Vec::new(),
        catalog: Default::default(),
    };
    let id = out.manifest.id.clone();
    audit("backup", &out.lines()[0]).await?;
    // With verify.schedule, drills run on their own schedule (the controller), not after each run.
    if let Some(v) = b.spec.verify.as_ref().filter(|v| v.restore_test && v.schedule.is_none()) {
        match job.drill(&id, v.check_query.as_deref(), Utc::now()).await {
            Ok(v) => out.verification = Some(v),
            Err(e) => out.drill_failed = Some(e.to_string()),
        }
        audit(if out.drill_failed.is_some() { "verify-failed" } else { "verify" }, &out.lines()[1]).await?;
    }
    // Retention after the drill: a new artifact that failed its drill is never counted as
    // verified, so minVerified keeps an older verified one.
    let (plan, catalog) = job.prune(&b.spec.retention, tz).await?;
    (out.deleted, out.catalog) = (plan.delete, catalog);
    if !out.deleted.is_empty() {
        audit("prune", &format!("deleted {}", out.deleted.join(", "))).await?;
    }
    index(state, job, &out.catalog).await?;
    Ok(out)
}

/// Makes the state database's index of the Backup say what the store holds.
pub async fn index(state: &State, job: &Job, cat: &super::engine::Catalog) -> Result<(), CycleError> {
    let (ns, name) = job.backup.split_once('/').unwrap_or(("", &job.backup));
    let location = format!("{:?}", job.store);
    let rows: Vec<CatalogRow> = cat
        .entries
        .iter()
        .map(|e| CatalogRow {
            id: e.manifest.id.clone(),
            taken_at: e.manifest.created.clone(),
            size_bytes: i64::try_from(e.manifest.size).unwrap_or(i64::MAX),
            sha256: e.manifest.sha256.clone(),
            hmac: e.manifest.hmac.clone(),
            location: location.clone(),
            verified_at: e.verified.as_ref().map(|v| v.verified_at.clone()),
            deleted_at: None,
        })
        .collect();
    state.index_backups(ns, name, &rows).await?;
    Ok(())
}
