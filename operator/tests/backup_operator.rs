//! The Backup and Restore controllers on the real apiserver, with a test host for the files and
//! the destination directory. A Backup waits for its slot; slots missed while the operator was
//! down run once when it is back (not once per slot); the artifact is verified by a drill, its
//! status and metrics say so; a Restore checks everything and restores the same files.

use std::time::Duration;

use anyhow::{Context as _, Result};
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::wait::await_condition;
use nova::api::backup::{Backup, Restore, RestorePhase};
use serde_json::json;
use test_cluster::{Mode, shared};

mod common;

const WAIT: Duration = Duration::from_secs(60);

fn ready(b: Option<&Backup>, reason: &str) -> bool {
    b.and_then(|b| b.status.as_ref())
        .is_some_and(|s| s.conditions.iter().any(|c| c.type_ == "Ready" && c.reason == reason))
}

#[tokio::test]
async fn a_missed_slot_runs_once_after_a_restart_and_a_restore_brings_the_files_back() -> Result<()> {
    let cp = shared(Mode::ApiServer).await?;
    let client = cp.client().await?;
    common::install_crds(&client).await?;
    let ns = cp.namespace(&client, "backup").await?;
    let (th, host) = common::app_host(&client, &ns, "bk").await?;
    th.ssh(
        "set -e; mkdir -p /srv/site/img; echo hello > /srv/site/index.html; ln -s index.html /srv/site/home",
    )?;
    let s: Secret = serde_json::from_value(json!({"metadata": {"name": "backup-key"},
        "stringData": {"hmac": "an-hmac-key-for-the-test-0123456789"}}))?;
    Api::<Secret>::namespaced(client.clone(), &ns).create(&PostParams::default(), &s).await?;
    let backups: Api<Backup> = Api::namespaced(client.clone(), &ns);
    let b: Backup = serde_json::from_value(json!({
        "apiVersion": "nova.infra.dev/v1alpha1", "kind": "Backup", "metadata": {"name": "site"},
        "spec": {"schedule": "0 3 * * *",
                 "source": {"files": {"hostRef": {"name": host}, "paths": ["/srv/site"]}},
                 "destination": {"hostPath": {"hostRef": {"name": host}, "path": "/var/backups/nova"}},
                 "integrity": {"hmacKeySecretRef": {"name": "backup-key", "key": "hmac"}},
                 "verify": {"restoreTest": true},
                 "objectives": {"rpoSeconds": 7200, "rtoSeconds": 600}}}))?;
    backups.create(&PostParams::default(), &b).await?;

    // Created after today's slot: it waits for the next one and runs nothing.
    let op = common::Operator::start(client.clone(), &ns).await?;
    let scheduled = |b: Option<&Backup>| {
        ready(b, "Scheduled")
            && b.and_then(|b| b.status.as_ref()).is_some_and(|s| s.next_schedule_time.is_some())
    };
    tokio::time::timeout(WAIT, await_condition(backups.clone(), "site", scheduled))
        .await
        .context("scheduled")??;
    assert_eq!(th.ssh("ls -A /var/backups 2>/dev/null | wc -l")?.trim(), "0", "ran before its slot");
    let state = op.stop_keeping_state().await?;

    // While the operator was down, three daily slots passed.
    let three_days_ago = chrono::Utc::now() - chrono::Duration::days(3);
    let patch = json!({"status": {"lastScheduleTime": three_days_ago.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)}});
    backups.patch_status("site", &PatchParams::default(), &Patch::Merge(patch)).await?;
    let op = common::Operator::start_with_state(client.clone(), &ns, state).await?;
    let prom = common::dashboards::scraping(op.port())?;
    let verified = |b: Option<&Backup>| ready(b, "Verified");
    let b = tokio::time::timeout(WAIT, await_condition(backups.clone(), "site", verified))
        .await
        .context("the missed slot to run")??
        .context("the Backup")?;
    let st = b.status.clone().context("status")?;
    assert_eq!(st.recent.len(), 1, "one run for three missed slots: {:?}", st.recent);
    let last = st.last_backup.clone().context("lastBackup")?;
    assert!(last.verified && last.size > 0, "{last:?}");
    assert!(st.last_restore_seconds.is_some(), "{st:?}");
    let slot = st.last_schedule_time.clone().context("lastScheduleTime")?;
    assert!(slot.0.as_second() > three_days_ago.timestamp() + 2 * 86400, "the newest missed slot: {slot:?}");
    let metrics = op.metrics().await?;
    let series = format!("nova_backup_last_verified_timestamp_seconds{{backup=\"site\",namespace=\"{ns}\"}}");
    assert!(metrics.contains(&series), "{series} missing");
    common::dashboards::assert_every_panel_has_data("backups", prom.url(), WAIT).await?;
    let met = st.conditions.iter().find(|c| c.type_ == "ObjectivesMet").context("ObjectivesMet")?;
    assert_eq!((met.status.as_str(), met.reason.as_str()), ("True", "WithinObjectives"), "{met:?}");
    let rpo =
        format!("nova_backup_objective_violated{{backup=\"site\",namespace=\"{ns}\",objective=\"rpo\"}} 0");
    assert!(metrics.contains(&rpo), "{rpo} missing");

    // A Restore into a separate directory: checked, restored, the same files.
    let restores: Api<Restore> = Api::namespaced(client.clone(), &ns);
    let r: Restore = serde_json::from_value(json!({
        "apiVersion": "nova.infra.dev/v1alpha1", "kind": "Restore", "metadata": {"name": "back"},
        "spec": {"backupRef": {"name": "site"}, "directory": "/restore"}}))?;
    restores.create(&PostParams::default(), &r).await?;
    let done = |r: Option<&Restore>| {
        r.and_then(|r| r.status.as_ref())
            .is_some_and(|s| matches!(s.phase, Some(RestorePhase::Succeeded | RestorePhase::Failed)))
    };
    let r = tokio::time::timeout(WAIT, await_condition(restores, "back", done))
        .await
        .context("restore")??
        .context("r")?;
    let rs = r.status.clone().context("status")?;
    assert_eq!(rs.phase, Some(RestorePhase::Succeeded), "{rs:?}");
    assert_eq!(rs.artifact_id.as_deref(), Some(last.id.as_str()));
    assert!(rs.checked.iter().any(|c| c.contains("HMAC")), "{:?}", rs.checked);
    let listing = |root: &str| th.ssh(&format!("cd {root} && find . -printf '%p %m %y %l\\n' | sort"));
    assert_eq!(listing("/restore/srv/site")?, listing("/srv/site")?);
    assert_eq!(th.ssh("cat /restore/srv/site/index.html")?.trim(), "hello");
    // Still one artifact: the claimed slot did not run again while all this happened.
    let again = backups.get("site").await?.status.context("status")?;
    assert_eq!(again.recent.len(), 1, "the slot ran again: {:?}", again.recent);
    op.stop().await?;
    Ok(())
}

/// examples/backup.yaml passes the CLI's validation and the real apiserver's (server-side dry
/// run, strict), in a namespace of the test's own.
#[tokio::test]
async fn the_example_is_admitted() -> Result<()> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/backup.yaml");
    let loaded = nova::backup::cli::load(std::path::Path::new(path))?;
    assert_eq!(loaded.backups.len(), 2);
    let cp = shared(Mode::ApiServer).await?;
    let client = cp.client().await?;
    common::install_crds(&client).await?;
    let ns = cp.namespace(&client, "backup-example").await?;
    let text = std::fs::read_to_string(path)?.replace("namespace: shop", &format!("namespace: {ns}"));
    let out = common::dry_run(cp, text.as_bytes())?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 6);
    Ok(())
}

/// With `verify.schedule`, backups are not drilled after each run; the drill of the newest
/// artifact runs on its own slot (here one missed while the operator was down).
#[tokio::test]
async fn drills_run_on_their_own_schedule() -> Result<()> {
    let cp = shared(Mode::ApiServer).await?;
    let client = cp.client().await?;
    common::install_crds(&client).await?;
    let ns = cp.namespace(&client, "backup-drill").await?;
    let (th, host) = common::app_host(&client, &ns, "bd").await?;
    th.ssh("mkdir -p /srv/site && echo hello > /srv/site/index.html")?;
    let backups: Api<Backup> = Api::namespaced(client.clone(), &ns);
    let b: Backup = serde_json::from_value(json!({
        "apiVersion": "nova.infra.dev/v1alpha1", "kind": "Backup", "metadata": {"name": "site"},
        "spec": {"schedule": "0 3 * * *",
                 "source": {"files": {"hostRef": {"name": host}, "paths": ["/srv/site"]}},
                 "destination": {"hostPath": {"hostRef": {"name": host}, "path": "/var/backups/nova"}},
                 "verify": {"restoreTest": true, "schedule": "0 4 * * *"}}}))?;
    backups.create(&PostParams::default(), &b).await?;
    let long_ago =
        (chrono::Utc::now() - chrono::Duration::days(3)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let patch = json!({"status": {"lastScheduleTime": long_ago, "lastVerifyScheduleTime": long_ago}});
    backups.patch_status("site", &PatchParams::default(), &Patch::Merge(patch)).await?;
    let op = common::Operator::start(client.clone(), &ns).await?;
    let verified = |b: Option<&Backup>| ready(b, "Verified");
    let Ok(b) = tokio::time::timeout(WAIT, await_condition(backups.clone(), "site", verified)).await else {
        let now = backups.get("site").await?;
        anyhow::bail!("no scheduled drill; the status is {:#?}", now.status);
    };
    let b = b?.context("the Backup")?;
    let st = b.status.context("status")?;
    assert_eq!(st.recent.len(), 1, "{:?}", st.recent);
    assert!(st.last_backup.as_ref().is_some_and(|l| l.verified), "{st:?}");
    let drilled = st.last_verify_schedule_time.context("lastVerifyScheduleTime")?;
    assert!(drilled.0.as_second() > chrono::Utc::now().timestamp() - 2 * 86400, "{drilled:?}");
    op.stop().await?;
    Ok(())
}

/// `spec.runOn`: the operator installs the timer on the Host, and backups go on with the
/// operator stopped; started again it reads them back from the destination (status shows the
/// host's artifact); the finalizer takes the timer off the host when the Backup is deleted.
#[tokio::test]
async fn a_backup_scheduled_on_its_host_runs_while_the_operator_is_down() -> Result<()> {
    use kube::api::DeleteParams;
    let cp = shared(Mode::ApiServer).await?;
    let client = cp.client().await?;
    common::install_crds(&client).await?;
    let ns = cp.namespace(&client, "backup-timer").await?;
    let (th, host) = common::app_host(&client, &ns, "bkt").await?;
    th.ssh("set -e; mkdir -p /srv/site; echo hello > /srv/site/index.html")?;
    let s: Secret = serde_json::from_value(json!({"metadata": {"name": "backup-key"},
        "stringData": {"hmac": "timer-hmac-s3cr3t-0123456789"}}))?;
    Api::<Secret>::namespaced(client.clone(), &ns).create(&PostParams::default(), &s).await?;
    let backups: Api<Backup> = Api::namespaced(client.clone(), &ns);
    let b: Backup = serde_json::from_value(json!({
        "apiVersion": "nova.infra.dev/v1alpha1", "kind": "Backup", "metadata": {"name": "site"},
        "spec": {"schedule": "* * * * *", "runOn": {"hostRef": {"name": host}},
                 "source": {"files": {"hostRef": {"name": host}, "paths": ["/srv/site"]}},
                 "destination": {"hostPath": {"hostRef": {"name": host}, "path": "/var/backups/nova"}},
                 "integrity": {"hmacKeySecretRef": {"name": "backup-key", "key": "hmac"}},
                 "verify": {"restoreTest": true}}}))?;
    backups.create(&PostParams::default(), &b).await?;
    let unit = format!("nova-backup-{ns}--site");

    let op = common::Operator::start(client.clone(), &ns).await?;
    let installed = |b: Option<&Backup>| {
        ready(b, "ScheduledOnHost")
            && b.and_then(|b| b.status.as_ref())
                .is_some_and(|s| s.timer_host.is_some() && s.timer_digest.is_some())
    };
    tokio::time::timeout(Duration::from_secs(120), await_condition(backups.clone(), "site", installed))
        .await
        .context("the timer installed")??;
    assert_eq!(th.ssh(&format!("systemctl is-enabled {unit}.timer"))?.trim(), "enabled");
    op.stop().await?;

    // No Nova anywhere: the host's timer takes the backup and its drill.
    let store = th.root().join(format!("var/backups/nova/{ns}/site"));
    let verified = || {
        std::fs::read_dir(&store)
            .map(|d| d.flatten().any(|e| e.file_name().to_string_lossy().ends_with(".verified.json")))
            .unwrap_or(false)
    };
    test_cluster::eventually("a backup by the host alone", Duration::from_secs(150), || async {
        anyhow::Ok(verified())
    })
    .await
    .with_context(|| {
        th.ssh(&format!("journalctl -u {unit}.service --no-pager | tail -n 20")).unwrap_or_default()
    })?;

    // Back: the artifact is in status, read from the destination.
    let op = common::Operator::start(client.clone(), &ns).await?;
    let seen = |b: Option<&Backup>| {
        b.and_then(|b| b.status.as_ref()).and_then(|s| s.last_backup.as_ref()).is_some_and(|a| a.verified)
    };
    tokio::time::timeout(WAIT, await_condition(backups.clone(), "site", seen))
        .await
        .context("read back")??;
    let st = backups.get("site").await?.status.unwrap_or_default();
    assert!(!serde_json::to_string(&st)?.contains("s3cr3t"), "{st:?}");

    backups.delete("site", &DeleteParams::default()).await?;
    test_cluster::eventually("the Backup gone", WAIT, || async {
        anyhow::Ok(backups.get_opt("site").await?.is_none())
    })
    .await?;
    let left = th.ssh(&format!(
        "(ls -d /etc/systemd/system/{unit}.*; ls -A /etc/nova/backups) 2>/dev/null | grep -c . || true"
    ))?;
    assert_eq!(left.trim(), "0", "the finalizer left the timer on the host");
    assert!(store.exists(), "the artifacts stay");
    op.stop().await
}

/// A Backup of a PersistentVolumeClaim on the simulated cluster (real apiserver, Job controller
/// and scheduler; kwok's nodes run no container — the container itself runs in
/// `tests/image.rs`): a requested run makes the config Secret and a Job as its pod spec says,
/// owned by the Backup; status names the Job while it runs; a pod that ends without a report
/// is not taken for a backup.
#[tokio::test]
async fn a_claims_backup_runs_as_a_job() -> Result<()> {
    use k8s_openapi::api::batch::v1::Job;
    let cp = shared(Mode::Simulated).await?;
    let client = cp.client().await?;
    common::install_crds(&client).await?;
    let ns = cp.namespace(&client, "backup-pvc").await?;
    let s: Secret = serde_json::from_value(json!({"metadata": {"name": "s3"},
        "stringData": {"accessKeyId": "AKIA-TEST", "secretAccessKey": "pvc-s3cr3t"}}))?;
    Api::<Secret>::namespaced(client.clone(), &ns).create(&PostParams::default(), &s).await?;
    // The claim, bound to a volume by the controller manager, so the pod can be scheduled.
    use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
    let pv: PersistentVolume = serde_json::from_value(json!({"metadata": {"name": format!("{ns}-data")},
        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"], "storageClassName": "manual",
                 "hostPath": {"path": "/srv/data"}}}))?;
    Api::<PersistentVolume>::all(client.clone()).create(&PostParams::default(), &pv).await?;
    let pvc: PersistentVolumeClaim = serde_json::from_value(json!({"metadata": {"name": "shop-data"},
        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "manual", "volumeName": format!("{ns}-data"),
                 "resources": {"requests": {"storage": "1Gi"}}}}))?;
    Api::<PersistentVolumeClaim>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &pvc)
        .await?;
    let backups: Api<Backup> = Api::namespaced(client.clone(), &ns);
    let b: Backup = serde_json::from_value(json!({
        "apiVersion": "nova.infra.dev/v1alpha1", "kind": "Backup",
        "metadata": {"name": "data", "annotations": {"nova.infra.dev/run-requested": "r1"}},
        "spec": {"schedule": "0 3 * * *", "source": {"volume": {"pvc": "shop-data"}},
                 "destination": {"s3": {"endpoint": "http://192.0.2.1:9000", "bucket": "backups",
                                        "credentialsSecretRef": {"name": "s3"}}}}}))?;
    backups.create(&PostParams::default(), &b).await?;
    let op = common::Operator::start(client.clone(), &ns).await?;

    let jobs: Api<Job> = Api::namespaced(client.clone(), &ns);
    test_cluster::eventually("the run's Job", WAIT, || async {
        anyhow::Ok(!jobs.list(&Default::default()).await?.items.is_empty())
    })
    .await?;
    let job = jobs.list(&Default::default()).await?.items.remove(0);
    let owner = job.metadata.owner_references.clone().unwrap_or_default();
    assert!(owner.iter().any(|o| o.kind == "Backup" && o.name == "data" && o.controller == Some(true)));
    let pod = job.spec.as_ref().and_then(|s| s.template.spec.clone()).context("pod spec")?;
    let args = pod.containers[0].args.clone().unwrap_or_default();
    assert!(args.windows(2).any(|w| w == ["--volume-at", "/data"]), "{args:?}");
    let claim = pod.volumes.unwrap_or_default().into_iter().find_map(|v| v.persistent_volume_claim);
    assert_eq!(claim.map(|c| (c.claim_name, c.read_only)), Some(("shop-data".into(), Some(true))));
    let config = Api::<Secret>::namespaced(client.clone(), &ns).get("data-nova-backup").await?;
    assert!(config.metadata.owner_references.unwrap_or_default().iter().any(|o| o.name == "data"));

    // kwok ends the pod at once, without a termination message: no artifact is claimed.
    let judged = |b: Option<&Backup>| {
        b.and_then(|b| b.status.as_ref()).is_some_and(|s| {
            s.job.is_none()
                && s.last_request.as_deref() == Some("r1")
                && s.conditions.iter().any(|c| c.type_ == "Ready" && c.reason == "NoReport")
        })
    };
    if tokio::time::timeout(WAIT, await_condition(backups.clone(), "data", judged)).await.is_err() {
        let st = backups.get("data").await?.status;
        let pods = Api::<k8s_openapi::api::core::v1::Pod>::namespaced(client.clone(), &ns)
            .list(&Default::default())
            .await?;
        let phases: Vec<_> =
            pods.items.iter().map(|p| p.status.as_ref().and_then(|s| s.phase.clone())).collect();
        anyhow::bail!("not judged: {st:?}; pods {phases:?}");
    }
    let st = backups.get("data").await?.status.unwrap_or_default();
    assert!(st.last_backup.is_none(), "{st:?}");
    assert!(!serde_json::to_string(&st)?.contains("s3cr3t"));

    // A Restore of it: a Job of its own (owned by the Restore) with the claim writable; a pod
    // that ends without a report fails the Restore.
    let restores: Api<Restore> = Api::namespaced(client.clone(), &ns);
    let r: Restore =
        serde_json::from_value(json!({"apiVersion": "nova.infra.dev/v1alpha1", "kind": "Restore",
        "metadata": {"name": "back"},
        "spec": {"backupRef": {"name": "data"}, "artifact": {"id": "20261130T030000Z-abc123"},
                 "directory": "/restored"}}))?;
    restores.create(&PostParams::default(), &r).await?;
    let failed = |r: Option<&Restore>| {
        r.and_then(|r| r.status.as_ref()).is_some_and(|s| s.phase == Some(RestorePhase::Failed))
    };
    tokio::time::timeout(WAIT, await_condition(restores.clone(), "back", failed))
        .await
        .context("restore judged")??;
    let job = jobs.get("back-restore").await?;
    let owner = job.metadata.owner_references.clone().unwrap_or_default();
    assert!(owner.iter().any(|o| o.kind == "Restore" && o.name == "back"), "{owner:?}");
    let pod = job.spec.and_then(|s| s.template.spec).context("pod spec")?;
    let args = pod.containers[0].args.clone().unwrap_or_default();
    assert!(args.windows(2).any(|w| w == ["--dir", "/data/restored"]), "{args:?}");
    let claim = pod.volumes.unwrap_or_default().into_iter().find_map(|v| v.persistent_volume_claim);
    let claim = claim.context("the claim")?;
    assert!(claim.claim_name == "shop-data" && claim.read_only != Some(true), "{claim:?}");
    let st = restores.get("back").await?.status.unwrap_or_default();
    assert!(
        st.conditions.iter().any(|c| c.reason == "RestoreFailed" && c.message.contains("no report")),
        "{st:?}"
    );
    // The pods' own audit rows die with them: the operator keeps one per Job.
    let state = nova::state::State::connect(&op.state_url()).await?;
    let actions: Vec<String> =
        state.audit_log("Backup", &ns, "data").await?.into_iter().map(|e| e.action).collect();
    assert_eq!(actions, ["job-failed", "restore-failed"]);
    op.stop().await
}
