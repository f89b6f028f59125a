//! Training runs in the state database: one row per attempt of a TrainingJob's gang, opened when
//! its workers are created and closed with how it ended — the history `kubectl get` cannot keep.

use crate::state::{Error, State};

/// One attempt. Times are RFC 3339 text.
#[derive(Clone, Debug, PartialEq, sqlx::FromRow)]
pub struct TrainingRun {
    pub run: i64,
    pub started_at: String,
    pub finished_at: Option<String>,
    /// How it ended: `GangRestart`, `GangUnschedulable`, `Succeeded`, `WorkerFailed`, …
    pub outcome: Option<String>,
    pub last_step: Option<i64>,
    pub last_loss: Option<f64>,
}

impl State {
    /// Opens attempt `run` of TrainingJob `ns/job` (again: nothing changes).
    pub async fn start_training_run(&self, ns: &str, job: &str, run: i64) -> Result<(), Error> {
        sqlx::query(
            "INSERT INTO training_runs (namespace, job, run, started_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (namespace, job, run) DO NOTHING",
        )
        .bind(ns)
        .bind(job)
        .bind(run)
        .bind(crate::state::now())
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Closes attempt `run` with its outcome and where it stood.
    pub async fn end_training_run(
        &self,
        ns: &str,
        job: &str,
        run: i64,
        outcome: &str,
        last_step: Option<i64>,
        last_loss: Option<f64>,
    ) -> Result<(), Error> {
        sqlx::query(
            "UPDATE training_runs SET finished_at = $1, outcome = $2, last_step = $3, last_loss = $4 \
             WHERE namespace = $5 AND job = $6 AND run = $7 AND finished_at IS NULL",
        )
        .bind(crate::state::now())
        .bind(outcome)
        .bind(last_step)
        .bind(last_loss)
        .bind(ns)
        .bind(job)
        .bind(run)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Every attempt of `ns/job`, oldest first.
    pub async fn training_runs(&self, ns: &str, job: &str) -> Result<Vec<TrainingRun>, Error> {
        Ok(sqlx::query_as(
            "SELECT run, started_at, finished_at, outcome, last_step, last_loss FROM training_runs \
             WHERE namespace = $1 AND job = $2 ORDER BY run",
        )
        .bind(ns)
        .bind(job)
        .fetch_all(self.pool())
        .await?)
    }
}
