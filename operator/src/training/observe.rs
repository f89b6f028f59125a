//! What a TrainingJob's workers show on Kubernetes: their pods, classified for the plan, and the
//! progress lines rank 0 printed (its log).

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ListParams, LogParams};
use kube::{Api, ResourceExt};
use nova_train::progress::{Kind, Record};

use super::plan::{Observed, Worker};
use super::pods::{ATTEMPT, INDEX, JOB};
use crate::api::training::{CheckpointRef, TrainingJobStatus};
use crate::kit::Error;
use crate::kit::error::Call;

/// The job's pods: those of `attempt` by index, the others (older, or being deleted) counted.
pub async fn pods(api: &Api<Pod>, job: &str, attempt: Option<i32>) -> Result<Observed, Error> {
    let list = api
        .list(&ListParams::default().labels(&format!("{JOB}={job}")))
        .await
        .call(|| format!("listing the pods of TrainingJob {job}"))?;
    let mut seen = Observed::default();
    for p in list.items {
        let label = |k: &str| p.labels().get(k).and_then(|v| v.parse::<i64>().ok());
        let live = p.metadata.deletion_timestamp.is_none();
        match (label(ATTEMPT), label(INDEX)) {
            (Some(a), Some(i)) if live && Some(a) == attempt.map(i64::from) => {
                seen.workers.insert(i as u32, classify(&p));
            }
            _ => seen.leftovers += 1,
        }
    }
    Ok(seen)
}

/// A pod as the plan sees it.
pub fn classify(p: &Pod) -> Worker {
    let status = p.status.as_ref();
    let terminated = status
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|cs| cs.first())
        .and_then(|c| c.state.as_ref())
        .and_then(|s| s.terminated.as_ref());
    match status.and_then(|s| s.phase.as_deref()) {
        Some("Succeeded") => Worker::Succeeded,
        Some("Failed") => Worker::Failed {
            code: terminated.map(|t| t.exit_code),
            why: terminated
                .and_then(|t| t.reason.clone())
                .or_else(|| status.and_then(|s| s.reason.clone()))
                .unwrap_or_else(|| "Failed".into()),
        },
        _ if p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some() => Worker::Running,
        _ => Worker::Unplaced,
    }
}

/// Reads rank 0's progress lines into `st`; Some(true) when the step advanced. A log that
/// cannot be read (the kubelet unreachable, the container gone) says nothing either way: None.
/// Being refused the log is an error: a missing `pods/log` grant must not pass for a quiet job.
pub async fn progress(
    api: &Api<Pod>,
    rank0: &str,
    st: &mut TrainingJobStatus,
) -> Result<Option<bool>, Error> {
    let params = LogParams { tail_lines: Some(400), ..Default::default() };
    match api.logs(rank0, &params).await {
        Ok(log) => Ok(Some(fold(log.lines().filter_map(Record::parse), st))),
        Err(kube::Error::Api(e)) if e.code == 403 => {
            Err(kube::Error::Api(e)).call(|| format!("reading the log of {rank0}"))
        }
        Err(_) => Ok(None),
    }
}

/// Folds progress lines into the status: step, epoch, loss, throughput, the newest checkpoint.
pub fn fold(records: impl Iterator<Item = Record>, st: &mut TrainingJobStatus) -> bool {
    let before = st.step;
    for r in records {
        if st.step.is_some_and(|s| r.step < s as u64) {
            continue;
        }
        st.step = Some(r.step as i64);
        st.epoch = Some(r.epoch as i32);
        if let Some(l) = r.loss {
            st.loss = Some(l);
        }
        if let Some(t) = r.samples_per_second {
            st.throughput = Some(t);
        }
        if let (Kind::Checkpoint, Some(path)) = (r.kind, r.checkpoint) {
            let time = Timestamp::from_millisecond((r.time * 1000.0) as i64).unwrap_or_default();
            st.last_checkpoint =
                Some(CheckpointRef { step: r.step as i64, path, time: Time(time), hosts: Vec::new() });
        }
    }
    st.step > before
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_lines_fold_into_the_status_and_older_steps_are_ignored() {
        let lines = [
            r#"{"kind":"step","time":1.0,"step":100,"epoch":0,"loss":0.9,"samplesPerSecond":500.0}"#,
            "a trainer's own output",
            r#"{"kind":"checkpoint","time":2.0,"step":200,"epoch":1,"checkpoint":"/ckpt/step-0000000200.safetensors"}"#,
            r#"{"kind":"step","time":3.0,"step":150,"epoch":0,"loss":5.0}"#,
        ];
        let mut st = TrainingJobStatus::default();
        assert!(fold(lines.iter().filter_map(|l| Record::parse(l)), &mut st));
        assert_eq!((st.step, st.epoch, st.loss, st.throughput), (Some(200), Some(1), Some(0.9), Some(500.0)));
        assert_eq!(st.last_checkpoint.as_ref().unwrap().path, "/ckpt/step-0000000200.safetensors");
        assert!(!fold(lines.iter().filter_map(|l| Record::parse(l)), &mut st), "nothing newer");
    }

    #[test]
    fn pods_classify_as_a_kubelet_reports_them() {
        let pod = |v: serde_json::Value| -> Pod { serde_json::from_value(v).unwrap() };
        assert_eq!(classify(&pod(serde_json::json!({"status": {"phase": "Pending"}}))), Worker::Unplaced);
        assert_eq!(
            classify(&pod(
                serde_json::json!({"spec": {"nodeName": "n1", "containers": []}, "status": {"phase": "Pending"}})
            )),
            Worker::Running
        );
        let failed = pod(serde_json::json!({"status": {"phase": "Failed", "containerStatuses": [{
            "name": "trainer", "image": "t", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}]}}));
        assert_eq!(classify(&failed), Worker::Failed { code: Some(137), why: "OOMKilled".into() });
        let evicted = pod(serde_json::json!({"status": {"phase": "Failed", "reason": "Evicted"}}));
        assert_eq!(classify(&evicted), Worker::Failed { code: None, why: "Evicted".into() });
    }
}
