//! The rollout's side of `spec.strategy.backupGate`: what the Backup shows (observe) and the
//! run request the plan asks for (act: the Backup's run-requested annotation).

use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};

use crate::api::backup::{Backup, RUN_REQUESTED};
use crate::api::bluegreen::BlueGreenStrategy;
use crate::context::{Call, Context, Error};
use crate::rollouts::plan::BackupView;

/// The gate's Backup as the plan needs it; None without a gate.
pub async fn view(
    ctx: &Context,
    ns: &str,
    strategy: &BlueGreenStrategy,
) -> Result<Option<BackupView>, Error> {
    let Some(g) = &strategy.backup_gate else { return Ok(None) };
    let name = &g.backup_ref.name;
    let b = Api::<Backup>::namespaced(ctx.client.clone(), ns)
        .get_opt(name)
        .await
        .call(|| format!("reading Backup {ns}/{name} (spec.strategy.backupGate)"))?;
    let Some(b) = b else { return Ok(Some(BackupView::default())) };
    let st = b.status.clone().unwrap_or_default();
    let newest_verified: Option<Timestamp> =
        st.recent.iter().chain(st.last_backup.iter()).filter(|a| a.verified).map(|a| a.time.0).max();
    let failure = st
        .conditions
        .iter()
        .find(|c| {
            c.type_ == "Ready"
                && c.status == "False"
                && matches!(c.reason.as_str(), "BackupFailed" | "DrillFailed")
        })
        .map(|c| c.message.clone());
    Ok(Some(BackupView {
        exists: true,
        verifies: b.spec.verify.as_ref().is_some_and(|v| v.restore_test),
        newest_verified,
        requested: b.annotations().get(RUN_REQUESTED).cloned(),
        answered: st.last_request,
        failure,
    }))
}

/// Asks the gate's Backup for a run (`request`: the annotation's new value).
pub async fn request(
    ctx: &Context,
    ns: &str,
    strategy: &BlueGreenStrategy,
    request: &str,
) -> Result<(), Error> {
    let Some(g) = &strategy.backup_gate else { return Ok(()) };
    let name = &g.backup_ref.name;
    let patch = serde_json::json!({"metadata": {"annotations": {RUN_REQUESTED: request}}});
    Api::<Backup>::namespaced(ctx.client.clone(), ns)
        .patch(name, &PatchParams::default(), &Patch::Merge(patch))
        .await
        .call(|| format!("asking Backup {ns}/{name} for a run (spec.strategy.backupGate)"))?;
    Ok(())
}
