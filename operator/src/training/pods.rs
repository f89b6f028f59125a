//! A TrainingJob's objects on Kubernetes, built (pure): the headless Service that gives workers
//! stable names, and one Pod per worker carrying the environment of torchrun and Kubeflow.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::scheduling::v1::PriorityClass;
use kube::ResourceExt;
use serde_json::json;

use crate::api::TrainingJob;

/// Labels on every worker: the job, the attempt, the index.
pub const JOB: &str = "nova.infra.dev/trainingjob";
pub const ATTEMPT: &str = "nova.infra.dev/attempt";
pub const INDEX: &str = "nova.infra.dev/worker";

/// torchrun's rendezvous (c10d) and the rank-0 store ports.
pub const RDZV_PORT: u16 = 29400;
pub const MASTER_PORT: u16 = 29500;
/// Where checkpoints live inside a worker when the spec names no path.
pub const CHECKPOINT_DIR: &str = "/checkpoints";

/// Where a worker finds what it needs.
#[derive(Clone, Debug)]
pub struct Worker<'a> {
    pub attempt: i32,
    pub index: u32,
    pub restarts: i32,
    /// The newest checkpoint known (status.lastCheckpoint.path).
    pub resume_from: Option<&'a str>,
    /// The image of the built-in trainer (Nova's own).
    pub trainer_image: &'a str,
}

fn checkpoint_dir(job: &TrainingJob) -> String {
    job.spec.checkpoint.path.clone().unwrap_or_else(|| CHECKPOINT_DIR.into())
}

/// The environment contract (docs/training.md); Nova's names win over spec.env.
pub fn env(job: &TrainingJob, w: &Worker) -> BTreeMap<String, String> {
    let name = job.name_any();
    let n = job.spec.workers.max(1);
    let master = format!("{name}-0.{name}");
    let mut env = job.spec.env.clone();
    let ours = [
        ("PET_NNODES", n.to_string()),
        ("PET_NODE_RANK", w.index.to_string()),
        ("PET_NPROC_PER_NODE", job.spec.gpus_per_worker.max(1).to_string()),
        ("PET_RDZV_BACKEND", "c10d".into()),
        ("PET_RDZV_ENDPOINT", format!("{master}:{RDZV_PORT}")),
        ("PET_RDZV_ID", format!("{}-{}", job.uid().unwrap_or_else(|| name.clone()), w.attempt)),
        ("MASTER_ADDR", master),
        ("MASTER_PORT", MASTER_PORT.to_string()),
        ("WORLD_SIZE", n.to_string()),
        ("RANK", w.index.to_string()),
        ("NOVA_CHECKPOINT_DIR", checkpoint_dir(job)),
        // Only a PVC outlives the pods: a checkpoint in an emptyDir is gone with its gang.
        (
            "NOVA_RESUME_FROM",
            w.resume_from.filter(|_| job.spec.checkpoint.pvc.is_some()).unwrap_or_default().into(),
        ),
        ("NOVA_RESTART_COUNT", w.restarts.to_string()),
        // Read back from the pod's log.
        ("NOVA_PROGRESS_FILE", "/dev/stdout".into()),
    ];
    env.extend(ours.into_iter().map(|(k, v)| (k.to_string(), v)));
    env
}

pub fn pod_name(job: &str, attempt: i32, index: u32) -> String {
    format!("{job}-a{attempt}-{index}")
}

/// Without blockOwnerDeletion, as Nova's other children: with it, clusters that enforce owner
/// reference permissions would ask for update on trainingjobs/finalizers too.
fn owner(job: &TrainingJob) -> serde_json::Value {
    json!([{
        "apiVersion": "nova.infra.dev/v1alpha1", "kind": "TrainingJob", "name": job.name_any(),
        "uid": job.uid().unwrap_or_default(), "controller": true,
    }])
}

/// The headless Service: `<job>-<index>.<job>` resolves to each worker, ready or not.
pub fn service(job: &TrainingJob) -> Service {
    let name = job.name_any();
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": job.namespace(), "labels": {JOB: name}, "ownerReferences": owner(job)},
        "spec": {
            "clusterIP": "None", "publishNotReadyAddresses": true, "selector": {JOB: name},
            "ports": [{"name": "rdzv", "port": RDZV_PORT}, {"name": "master", "port": MASTER_PORT}],
        },
    }))
    .expect("a valid Service")
}

/// The PriorityClass of `spec.priority` (none for 0, the cluster's default): one per value,
/// shared by every TrainingJob of that priority, so the scheduler orders and preempts by it.
pub fn priority_class_name(priority: i32) -> Option<String> {
    match priority {
        0 => None,
        p if p < 0 => Some(format!("nova-training-minus-{}", p.unsigned_abs())),
        p => Some(format!("nova-training-{p}")),
    }
}

/// The PriorityClass object for `priority` (not 0).
pub fn priority_class(priority: i32) -> Option<PriorityClass> {
    let name = priority_class_name(priority)?;
    serde_json::from_value(json!({
        "apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/managed-by": "nova"}},
        "value": priority, "globalDefault": false,
        "description": format!("TrainingJobs with spec.priority {priority} (made by Nova, shared by those jobs)"),
    }))
    .ok()
}

/// Worker `w`'s Pod. `restartPolicy: Never`: Nova restarts the gang, never one worker.
pub fn pod(job: &TrainingJob, w: &Worker) -> Result<Pod, String> {
    let name = job.name_any();
    let (image, command) = match (&job.spec.image, &job.spec.trainer) {
        (Some(image), _) => (image.clone(), job.spec.command.clone()),
        (None, Some(_)) => (w.trainer_image.to_string(), super::builtin::command(&job.spec)?),
        (None, None) => return Err("spec: give image (with command) or trainer".into()),
    };
    let env: Vec<_> = env(job, w).into_iter().map(|(k, v)| json!({"name": k, "value": v})).collect();
    let k8s = job.spec.target.kubernetes.as_ref();
    let mut resources = json!({});
    if job.spec.gpus_per_worker > 0 {
        let gpu = k8s.map_or("nvidia.com/gpu", |k| k.gpu_resource_name.as_str());
        resources = json!({"limits": {gpu: job.spec.gpus_per_worker}});
    }
    let dir = checkpoint_dir(job);
    let volume = match &job.spec.checkpoint.pvc {
        Some(pvc) => json!({"name": "checkpoints", "persistentVolumeClaim": {"claimName": pvc}}),
        None => json!({"name": "checkpoints", "emptyDir": {}}),
    };
    let labels = json!({JOB: name, ATTEMPT: w.attempt.to_string(), INDEX: w.index.to_string()});
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": pod_name(&name, w.attempt, w.index), "namespace": job.namespace(),
            "labels": labels, "ownerReferences": owner(job),
        },
        "spec": {
            "restartPolicy": "Never",
            "hostname": format!("{name}-{}", w.index),
            "subdomain": name,
            "nodeSelector": k8s.map(|k| k.node_selector.clone()).unwrap_or_default(),
            "priorityClassName": priority_class_name(job.spec.priority),
            "terminationGracePeriodSeconds": 30,
            "volumes": [volume],
            "containers": [{
                "name": "trainer", "image": image, "command": command, "env": env,
                "resources": resources,
                "volumeMounts": [{"name": "checkpoints", "mountPath": dir}],
                "ports": [{"name": "rdzv", "containerPort": RDZV_PORT}, {"name": "master", "containerPort": MASTER_PORT}],
            }],
        },
    }))
    .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(spec: serde_json::Value) -> TrainingJob {
        let mut j: TrainingJob = serde_json::from_value(json!({
            "apiVersion": "nova.infra.dev/v1alpha1", "kind": "TrainingJob",
            "metadata": {"name": "llm", "namespace": "ml", "uid": "u-1"}, "spec": spec,
        }))
        .unwrap();
        j.spec.workers = j.spec.workers.max(1);
        j
    }

    fn worker(attempt: i32, index: u32) -> Worker<'static> {
        Worker {
            attempt,
            index,
            restarts: attempt - 1,
            resume_from: Some("/checkpoints/step-0000000500.safetensors"),
            trainer_image: "nova:1",
        }
    }

    #[test]
    fn priorities_name_their_class_and_zero_names_none() {
        assert_eq!(priority_class_name(0), None);
        assert_eq!(priority_class_name(100).as_deref(), Some("nova-training-100"));
        assert_eq!(priority_class_name(-5).as_deref(), Some("nova-training-minus-5"));
        assert_eq!(priority_class(-5).and_then(|p| p.value), Some(-5));
    }

    #[test]
    fn the_environment_is_torchruns_and_kubeflows_and_the_rendezvous_changes_per_attempt() {
        let j = job(
            json!({"image": "t:1", "command": ["torchrun", "train.py"], "workers": 3, "gpusPerWorker": 2,
                           "env": {"RANK": "9", "EXTRA": "x"}, "checkpoint": {"pvc": "ckpt"}}),
        );
        let e = env(&j, &worker(2, 1));
        let want = [
            ("PET_NNODES", "3"),
            ("PET_NODE_RANK", "1"),
            ("PET_NPROC_PER_NODE", "2"),
            ("PET_RDZV_BACKEND", "c10d"),
            ("PET_RDZV_ENDPOINT", "llm-0.llm:29400"),
            ("PET_RDZV_ID", "u-1-2"),
            ("MASTER_ADDR", "llm-0.llm"),
            ("MASTER_PORT", "29500"),
            ("WORLD_SIZE", "3"),
            ("RANK", "1"),
            ("NOVA_CHECKPOINT_DIR", "/checkpoints"),
            ("NOVA_RESUME_FROM", "/checkpoints/step-0000000500.safetensors"),
            ("NOVA_RESTART_COUNT", "1"),
            ("EXTRA", "x"),
        ];
        for (k, v) in want {
            assert_eq!(e.get(k).map(String::as_str), Some(v), "{k}");
        }
        assert_ne!(env(&j, &worker(3, 1))["PET_RDZV_ID"], e["PET_RDZV_ID"]);
        // Without a PVC the checkpoint died with the last gang: nothing to resume from.
        let scratch = job(json!({"image": "t:1", "command": ["t"], "checkpoint": {"path": "/ckpt"}}));
        assert_eq!(env(&scratch, &worker(2, 0))["NOVA_RESUME_FROM"], "");
        assert_eq!(env(&scratch, &worker(2, 0))["NOVA_CHECKPOINT_DIR"], "/ckpt");
    }

    #[test]
    fn a_pod_has_its_stable_name_gpus_and_the_builtin_trainers_command() {
        let j = job(
            json!({"trainer": {"model": "mlp", "dataset": "fashion-mnist", "epochs": 2}, "gpusPerWorker": 1,
                           "target": {"kubernetes": {"nodeSelector": {"gpu": "h200"}}}, "checkpoint": {"pvc": "ckpt"}}),
        );
        let p = serde_json::to_value(pod(&j, &worker(1, 0)).unwrap()).unwrap();
        assert_eq!(p["metadata"]["name"], "llm-a1-0");
        assert_eq!((&p["spec"]["hostname"], &p["spec"]["subdomain"]), (&json!("llm-0"), &json!("llm")));
        assert_eq!(p["spec"]["restartPolicy"], "Never");
        assert_eq!(p["spec"]["nodeSelector"], json!({"gpu": "h200"}));
        let c = &p["spec"]["containers"][0];
        assert_eq!(c["image"], "nova:1");
        assert_eq!(c["resources"]["limits"]["nvidia.com/gpu"], "1");
        let cmd: Vec<String> = serde_json::from_value(c["command"].clone()).unwrap();
        assert_eq!(cmd[..6], ["nova", "train", "--model", "mlp", "--dataset", "fashion-mnist"]);
        assert!(cmd.ends_with(&["--device".into(), "cuda".into()]), "{cmd:?}");
        assert_eq!(p["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"], "ckpt");
        assert_eq!(p["metadata"]["ownerReferences"][0]["controller"], true);
    }
}
