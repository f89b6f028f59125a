//! The TrainingJob controller on the simulated cluster (kwok runs the pods; the test fails them
//! as a kubelet would): the gang's pods, environment and headless Service; gang restart with a
//! new rendezvous; the backoff limit counted across attempts; a permanent exit code; placement
//! that times out and is retried; suspend and resume; the active deadline; the TTL; rank 0's
//! progress read from its log (kwok serves `pods/log` from a file the test appends to).

mod common;

use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::{Event, Pod, Service};
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use nova::api::TrainingJob;
use nova::api::training::TrainingPhase;
use serde_json::{Value, json};
use test_cluster::{Mode, eventually, shared};

const WAIT: Duration = Duration::from_secs(90);

struct Env {
    client: Client,
    ns: String,
    jobs: Api<TrainingJob>,
    pods: Api<Pod>,
    op: common::Operator,
}

async fn env(name: &str) -> Result<Env> {
    let cp = shared(Mode::Simulated).await?;
    let client = cp.client().await?;
    common::install_crds(&client).await?;
    let ns = cp.namespace(&client, name).await?;
    let op = common::Operator::start(client.clone(), &ns).await?;
    let jobs = Api::namespaced(client.clone(), &ns);
    let pods = Api::namespaced(client.clone(), &ns);
    Ok(Env { client, ns, jobs, pods, op })
}

impl Env {
    async fn create(&self, name: &str, spec: Value) -> Result<()> {
        let job: TrainingJob = serde_json::from_value(json!({
            "apiVersion": "nova.infra.dev/v1alpha1", "kind": "TrainingJob",
            "metadata": {"name": name}, "spec": spec}))?;
        self.jobs.create(&PostParams::default(), &job).await?;
        Ok(())
    }

    /// Creates a job of `workers` with an own trainer (and `extra` merged into its spec) and waits
    /// until its first gang is placed and running.
    async fn running(&self, name: &str, workers: usize, extra: Value) -> Result<()> {
        let mut spec = json!({"image": "trainer:1", "command": ["python", "t.py"], "workers": workers, "gpusPerWorker": 0});
        json_patch::merge(&mut spec, &extra);
        self.create(name, spec).await?;
        self.gang(name, 1, workers).await?;
        self.status_until(name, "Running", |s| s.phase == Some(TrainingPhase::Running)).await?;
        Ok(())
    }

    /// The job's live pods of `attempt`, once there are `n` of them and no others.
    async fn gang(&self, job: &str, attempt: i32, n: usize) -> Result<Vec<Pod>> {
        let what = format!("{n} pods of {job} attempt {attempt} and no others");
        eventually(&what, WAIT, || async {
            let all = self
                .pods
                .list(&ListParams::default().labels(&format!("nova.infra.dev/trainingjob={job}")))
                .await?;
            let ours = all
                .items
                .iter()
                .filter(|p| attempt_of(p) == Some(attempt) && p.metadata.deletion_timestamp.is_none());
            Ok::<_, kube::Error>(ours.count() == n && all.items.len() == n)
        })
        .await?;
        let all = self
            .pods
            .list(&ListParams::default().labels(&format!("nova.infra.dev/trainingjob={job}")))
            .await?;
        Ok(all.items)
    }

    async fn status_until(
        &self,
        job: &str,
        what: &str,
        f: impl Fn(&nova::api::training::TrainingJobStatus) -> bool,
    ) -> Result<TrainingJob> {
        eventually(what, WAIT, || async {
            let j = self.jobs.get(job).await?;
            Ok::<_, kube::Error>(j.status.as_ref().is_some_and(&f))
        })
        .await?;
        Ok(self.jobs.get(job).await?)
    }

    /// Marks the pod as a kubelet marks one whose container exited with `code`.
    async fn exit(&self, pod: &str, code: i32, reason: &str) -> Result<()> {
        let phase = if code == 0 { "Succeeded" } else { "Failed" };
        let status = json!({"status": {"phase": phase, "containerStatuses": [{
            "name": "trainer", "image": "t", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"terminated": {"exitCode": code, "reason": reason}}}]}});
        self.pods.patch_status(pod, &PatchParams::default(), &Patch::Merge(status)).await?;
        Ok(())
    }

    /// The job's events as (reason, note).
    async fn events(&self, job: &str) -> Result<Vec<(String, String)>> {
        let api: Api<Event> = Api::namespaced(self.client.clone(), &self.ns);
        let list = api.list(&ListParams::default().fields(&format!("involvedObject.name={job}"))).await?;
        Ok(list
            .items
            .into_iter()
            .map(|e| (e.reason.unwrap_or_default(), e.message.unwrap_or_default()))
            .collect())
    }
}

fn attempt_of(p: &Pod) -> Option<i32> {
    p.metadata.labels.as_ref()?.get("nova.infra.dev/attempt")?.parse().ok()
}

fn env_of(p: &Pod, name: &str) -> Option<String> {
    let c = &p.spec.as_ref()?.containers[0];
    c.env.as_ref()?.iter().find(|e| e.name == name)?.value.clone()
}

fn cond(j: &TrainingJob, type_: &str) -> Option<(String, String, String)> {
    let c = j.status.as_ref()?.conditions.iter().find(|c| c.type_ == type_)?;
    Some((c.status.clone(), c.reason.clone(), c.message.clone()))
}

#[tokio::test]
async fn one_failed_worker_restarts_the_gang_until_the_backoff_limit() -> Result<()> {
    let e = env("train-gang").await?;
    let spec = json!({"image": "trainer:1", "command": ["torchrun", "train.py"], "workers": 3,
                      "gpusPerWorker": 0, "runPolicy": {"backoffLimit": 1}, "env": {"EXTRA": "x"}});
    e.create("gang", spec).await?;
    let pods = e.gang("gang", 1, 3).await?;
    let one = pods.iter().find(|p| p.metadata.name.as_deref() == Some("gang-a1-1")).context("gang-a1-1")?;
    assert_eq!(env_of(one, "PET_NODE_RANK").as_deref(), Some("1"));
    assert_eq!(env_of(one, "MASTER_ADDR").as_deref(), Some("gang-0.gang"));
    assert_eq!(env_of(one, "EXTRA").as_deref(), Some("x"));
    let rdzv1 = env_of(one, "PET_RDZV_ID").context("PET_RDZV_ID")?;
    assert!(rdzv1.ends_with("-1"), "{rdzv1}");
    let svc: Service = Api::namespaced(e.client.clone(), &e.ns).get("gang").await?;
    assert_eq!(svc.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()), Some("None"));
    let j = e.status_until("gang", "Running", |s| s.phase == Some(TrainingPhase::Running)).await?;
    assert_eq!(cond(&j, "Ready").map(|c| c.0), Some("True".into()));

    // A worker killed (137, retriable): every worker stops, all come back in attempt 2.
    e.exit("gang-a1-1", 137, "OOMKilled").await?;
    let pods = e.gang("gang", 2, 3).await?;
    assert!(pods.iter().all(|p| env_of(p, "NOVA_RESTART_COUNT").as_deref() == Some("1")));
    assert!(pods.iter().all(|p| env_of(p, "PET_RDZV_ID").is_some_and(|r| r != rdzv1 && r.ends_with("-2"))));
    let j = e
        .status_until("gang", "restart 1 recorded", |s| s.restarts == Some(1) && s.attempt == Some(2))
        .await?;
    assert!(j.status.as_ref().unwrap().start_time.is_some());
    assert!(e.events("gang").await?.iter().any(|(r, _)| r == "GangRestart"));

    // Again: backoffLimit 1 is used up (counted across attempts), the job fails.
    e.exit("gang-a2-0", 137, "Error").await?;
    let j = e.status_until("gang", "Failed", |s| s.phase == Some(TrainingPhase::Failed)).await?;
    let (_, reason, msg) = cond(&j, "Stalled").context("Stalled")?;
    assert_eq!(reason, "BackoffLimitExceeded");
    assert!(msg.contains("worker 0 failed (Error)") && msg.contains("backoffLimit (1)"), "{msg}");
    let metrics = e.op.metrics().await?;
    let series = |m: &str, extra: &str| format!("{m}{{name=\"gang\",namespace=\"{}\"{extra}}}", e.ns);
    for want in [
        format!("{} 1", series("nova_training_restarts_total", "")),
        format!("{} 1", series("nova_training_phase", ",phase=\"Failed\"")),
        format!("{} 0", series("nova_training_phase", ",phase=\"Running\"")),
    ] {
        assert!(metrics.contains(&want), "{want} missing");
    }
    // The state database keeps each attempt and how it ended.
    let state = nova::state::State::connect(&e.op.state_url()).await?;
    let runs = state.training_runs(&e.ns, "gang").await?;
    let outcomes: Vec<_> = runs.iter().map(|r| (r.run, r.outcome.as_deref())).collect();
    assert_eq!(outcomes, [(1, Some("GangRestart")), (2, Some("BackoffLimitExceeded"))], "{runs:?}");
    eventually("the failed gang's pods to be gone", WAIT, || async {
        let n =
            e.pods.list(&ListParams::default().labels("nova.infra.dev/trainingjob=gang")).await?.items.len();
        Ok::<_, kube::Error>(n == 0)
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn a_permanent_exit_fails_the_job_and_a_deadline_ends_it() -> Result<()> {
    let e = env("train-exit").await?;
    e.running("perm", 2, json!({})).await?;
    e.exit("perm-a1-0", 2, "Error").await?;
    let j = e.status_until("perm", "Failed", |s| s.phase == Some(TrainingPhase::Failed)).await?;
    let (_, reason, msg) = cond(&j, "Ready").context("Ready")?;
    assert_eq!(reason, "WorkerFailed");
    assert!(msg.contains("worker 0 exited with 2") && msg.contains("not retried"), "{msg}");
    assert_eq!(j.status.as_ref().unwrap().attempt, Some(1));

    let spec = json!({"image": "trainer:1", "command": ["python", "t.py"], "gpusPerWorker": 0,
                      "runPolicy": {"activeDeadlineSeconds": 3}});
    e.create("late", spec).await?;
    let j = e.status_until("late", "Failed", |s| s.phase == Some(TrainingPhase::Failed)).await?;
    assert_eq!(cond(&j, "Ready").map(|c| c.1), Some("DeadlineExceeded".into()));
    Ok(())
}

/// A job for Hosts gets no pods; selecting no Host, it is Stalled naming the field.
#[tokio::test]
async fn a_job_for_hosts_gets_no_pods_and_without_hosts_is_stalled() -> Result<()> {
    let e = env("train-hosts").await?;
    let spec = json!({"command": ["/usr/bin/python3", "/opt/t.py"], "gpusPerWorker": 0,
                      "target": {"hosts": {"names": ["gpu-1"]}}});
    e.create("onhosts", spec).await?;
    let what = "Stalled NoHosts";
    eventually(what, WAIT, || async {
        let j = e.jobs.get("onhosts").await?;
        Ok::<_, kube::Error>(cond(&j, "Stalled").is_some_and(|c| c.0 == "True" && c.1 == "NoHosts"))
    })
    .await?;
    let j = e.jobs.get("onhosts").await?;
    let msg = cond(&j, "Stalled").map(|c| c.2).unwrap_or_default();
    assert!(msg.contains("spec.target.hosts selects no Host"), "{msg}");
    let pods = e.pods.list(&ListParams::default().labels("nova.infra.dev/trainingjob=onhosts")).await?;
    assert!(pods.items.is_empty(), "pods were made for a job on hosts");
    Ok(())
}

#[tokio::test]
async fn an_unplaceable_gang_is_removed_and_placed_again() -> Result<()> {
    let e = env("train-place").await?;
    let spec = json!({"image": "trainer:1", "command": ["python", "t.py"], "workers": 2, "gpusPerWorker": 0,
                      "target": {"kubernetes": {"nodeSelector": {"gpu": "none-such"}}},
                      "runPolicy": {"schedulingTimeoutSeconds": 5}});
    e.create("big", spec).await?;
    e.gang("big", 1, 2).await?;
    let j = e.status_until("big", "a placement failure", |s| s.placement_failures == Some(1)).await?;
    // The condition says what happens next (it moves on to "placing the workers again in …");
    // the Warning event keeps why.
    assert_eq!(cond(&j, "Ready").map(|c| c.1), Some("GangUnschedulable".into()));
    let events = e.events("big").await?;
    let why = events.iter().find(|(r, _)| r == "GangUnschedulable").context("no GangUnschedulable event")?;
    assert!(why.1.contains("not placed within spec.runPolicy.schedulingTimeoutSeconds (5)"), "{events:?}");
    assert_eq!(j.status.as_ref().unwrap().restarts, Some(0), "placement is not a restart");
    // After the backoff (10 s), a new gang.
    e.gang("big", 2, 2).await?;
    Ok(())
}

#[tokio::test]
async fn suspended_no_worker_runs_and_finished_the_ttl_removes_the_workers() -> Result<()> {
    let e = env("train-suspend").await?;
    e.running("sus", 2, json!({})).await?;
    e.jobs.patch("sus", &PatchParams::default(), &Patch::Merge(json!({"spec": {"suspend": true}}))).await?;
    e.gang("sus", 1, 0).await?;
    let j = e.status_until("sus", "Suspended", |s| s.phase == Some(TrainingPhase::Suspended)).await?;
    assert_eq!(cond(&j, "Ready").map(|c| (c.0, c.1)), Some(("True".into(), "Suspended".into())));
    e.jobs.patch("sus", &PatchParams::default(), &Patch::Merge(json!({"spec": {"suspend": false}}))).await?;
    e.gang("sus", 2, 2).await?;
    let j = e.status_until("sus", "Running again", |s| s.phase == Some(TrainingPhase::Running)).await?;
    assert_eq!(j.status.as_ref().unwrap().restarts, Some(0), "a resume is not a restart");

    e.running("ttl", 1, json!({"runPolicy": {"ttlSecondsAfterFinished": 2}})).await?;
    e.exit("ttl-a1-0", 0, "Completed").await?;
    let j = e.status_until("ttl", "Succeeded", |s| s.phase == Some(TrainingPhase::Succeeded)).await?;
    assert_eq!(cond(&j, "Ready").map(|c| c.1), Some("Succeeded".into()));
    e.gang("ttl", 1, 0).await?;
    assert!(e.events("ttl").await?.iter().any(|(r, _)| r == "Expired"));
    Ok(())
}

/// `spec.priority` reaches the scheduler: a PriorityClass of that value, named by every worker.
#[tokio::test]
async fn the_priority_becomes_a_priority_class_the_workers_name() -> Result<()> {
    use k8s_openapi::api::scheduling::v1::PriorityClass;
    use kube::ResourceExt;
    let e = env("training-priority").await?;
    e.running("urgent", 2, json!({"priority": 100})).await?;
    let pc = Api::<PriorityClass>::all(e.client.clone()).get("nova-training-100").await?;
    assert_eq!(pc.value, Some(100));
    assert_ne!(pc.global_default, Some(true), "never the cluster default");
    let pods = e.gang("urgent", 1, 2).await?;
    for p in &pods {
        let spec = p.spec.as_ref().context("spec")?;
        assert_eq!(spec.priority_class_name.as_deref(), Some("nova-training-100"), "{}", p.name_any());
    }
    e.op.stop().await
}

/// Rank 0's progress lines, read from its pod's log through the apiserver's kubelet proxy (kwok
/// serves the log as a kubelet would), reach the status and the metrics; once they stop
/// advancing, the progress deadline restarts the gang. Worker 1's log is never read.
#[tokio::test]
async fn rank_zeros_log_is_the_progress_and_a_silent_rank_zero_restarts_the_gang() -> Result<()> {
    let cp = shared(Mode::Simulated).await?;
    let e = env("train-log").await?;
    let log = cp.pod_log(&e.client, &e.ns, "prog-a1-0").await?;
    let other = cp.pod_log(&e.client, &e.ns, "prog-a1-1").await?;
    other.append(r#"{"kind":"step","time":1.0,"step":900,"epoch":9,"loss":9.0}"#)?;
    // Printed before Nova first looks: the first read already sees it.
    log.append("rank 0 starting")?;
    log.append(r#"{"kind":"step","time":1.0,"step":100,"epoch":0,"loss":0.9,"samplesPerSecond":512.0}"#)?;
    e.running("prog", 2, json!({"runPolicy": {"progressDeadlineSeconds": 10, "backoffLimit": 2}})).await?;
    let j = e.status_until("prog", "step 100 read from rank 0's log", |s| s.step == Some(100)).await?;
    let st = j.status.as_ref().context("status")?;
    assert_eq!((st.epoch, st.loss, st.throughput), (Some(0), Some(0.9), Some(512.0)));

    log.append(r#"{"kind":"step","time":2.0,"step":200,"epoch":1,"loss":0.5,"samplesPerSecond":640.0}"#)?;
    log.append(r#"{"kind":"checkpoint","time":2.5,"step":200,"epoch":1,"checkpoint":"/ckpt/step-0000000200.safetensors"}"#)?;
    let j =
        e.status_until("prog", "the checkpoint read from the log", |s| s.last_checkpoint.is_some()).await?;
    let st = j.status.as_ref().context("status")?;
    assert_eq!((st.step, st.loss, st.restarts.unwrap_or(0)), (Some(200), Some(0.5), 0));
    assert_eq!(
        st.last_checkpoint.as_ref().map(|c| (c.step, c.path.as_str())),
        Some((200, "/ckpt/step-0000000200.safetensors"))
    );
    let metrics = e.op.metrics().await?;
    let series = |m: &str| format!("{m}{{name=\"prog\",namespace=\"{}\"}}", e.ns);
    for want in [
        format!("{} 200", series("nova_training_steps_total")),
        format!("{} 0.5", series("nova_training_loss")),
        format!("{} 640", series("nova_training_samples_per_second")),
    ] {
        assert!(metrics.contains(&want), "{want} missing");
    }

    // Rank 0 goes quiet: after the deadline the whole gang restarts.
    e.gang("prog", 2, 2).await?;
    let j = e.status_until("prog", "restart 1 recorded", |s| s.restarts == Some(1)).await?;
    assert_eq!(j.status.as_ref().and_then(|s| s.step), Some(200), "the step read is kept");
    let events = e.events("prog").await?;
    assert!(
        events.iter().any(|(r, n)| r == "GangRestart"
            && n.contains("no progress for spec.runPolicy.progressDeadlineSeconds (10)")),
        "{events:?}"
    );
    Ok(())
}
