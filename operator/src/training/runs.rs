//! The training-runs table kept as the gang changes: a row opened when a gang starts, closed
//! with how it ended when it stops — for the pods' controller, the Hosts' one and `nova apply`.

use super::plan::Plan;
use crate::api::training::TrainingJobStatus;
use crate::state::{Error, State};

pub async fn record(
    state: &State,
    ns: &str,
    name: &str,
    old: &TrainingJobStatus,
    p: &Plan,
) -> Result<(), Error> {
    let st = &p.status;
    if let Some(a) =
        old.attempt.filter(|_| old.attempt_start_time.is_some() && st.attempt_start_time.is_none())
    {
        state.end_training_run(ns, name, a.into(), p.reason, st.step, st.loss).await?;
    }
    if let (false, Some(a)) = (p.create.is_empty(), st.attempt) {
        state.start_training_run(ns, name, a.into()).await?;
    }
    Ok(())
}
