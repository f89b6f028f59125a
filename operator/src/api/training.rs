//! TrainingJob: multi-worker GPU training with checkpoints and resume.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{Conditions, HostSelector, conditions_schema, one, string_map};

/// A training run on GPUs.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "nova.infra.dev",
    version = "v1alpha1",
    kind = "TrainingJob",
    namespaced,
    status = "TrainingJobStatus",
    shortname = "tj",
    category = "nova",
    doc = "Multi-worker GPU training with checkpoints and resume, on Kubernetes or on GPU hosts.",
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Workers", type_ = "integer", json_path = ".spec.workers"),
    printcolumn(name = "Epoch", type_ = "integer", json_path = ".status.epoch"),
    printcolumn(name = "Step", type_ = "integer", json_path = ".status.step"),
    printcolumn(name = "Loss", type_ = "number", json_path = ".status.loss"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status",
        priority = 1
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new("size(self.metadata.name) <= 52").message("metadata.name: at most 52 characters (each worker's host name is <name>-<index>, a DNS label of at most 63)")
)]
#[x_kube(validation = Rule::new("!(has(self.image) && has(self.trainer))").message("give exactly one of image (with command) or trainer"))]
#[x_kube(validation = Rule::new("has(self.image) || has(self.trainer) || (has(self.target) && has(self.target.hosts) && has(self.command) && size(self.command) > 0)").message("give exactly one of image (with command) or trainer; on target.hosts, command alone runs on the host"))]
#[x_kube(validation = Rule::new("!has(self.image) || (has(self.command) && size(self.command) > 0)").message("image needs a command"))]
#[x_kube(validation = Rule::new("!has(self.trainer) || self.workers == 1").message("the built-in trainer runs one worker (candle has no collective across workers): set workers to 1, or bring an image with a distributed trainer"))]
#[serde(rename_all = "camelCase")]
pub struct TrainingJobSpec {
    /// Where the workers run. Default: this Kubernetes cluster.
    #[serde(default)]
    pub target: TrainingTarget,
    /// Number of workers. Default 1.
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 1024))]
    pub workers: i32,
    /// GPUs per worker. Default 1; 0 trains on CPU.
    #[serde(default = "one")]
    #[schemars(range(min = 0, max = 16))]
    pub gpus_per_worker: i32,
    /// Container image of an own trainer. Exclusive with trainer. Not on target.hosts, where
    /// command runs directly on the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512), regex(pattern = r"^[a-zA-Z0-9][a-zA-Z0-9._/:@-]*$"))]
    pub image: Option<String>,
    /// Command of the own trainer: in the image, or on target.hosts an absolute program path
    /// on the host and its arguments (no shell).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub command: Vec<String>,
    /// Nova's built-in trainer (candle). Exclusive with image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trainer: Option<BuiltinTrainer>,
    /// Checkpointing.
    #[serde(default)]
    pub checkpoint: Checkpoint,
    /// latest (default): resume from the newest checkpoint. none: start over.
    #[serde(default)]
    pub resume: Resume,
    /// Retries, deadlines and clean-up.
    #[serde(default)]
    pub run_policy: RunPolicy,
    /// Pause when GPUs run hot.
    #[serde(default)]
    pub thermal: Thermal,
    /// Higher runs first when GPUs are short. Default 0.
    #[serde(default)]
    #[schemars(range(min = -1000, max = 1000))]
    pub priority: i32,
    /// Stop every worker and keep the job; set back to false, the workers start again from the
    /// newest checkpoint (not counted as a restart).
    #[serde(default)]
    pub suspend: bool,
    /// Environment of an own trainer's workers (added to Nova's contract; Nova's names win).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "string_map")]
    pub env: BTreeMap<String, String>,
}

/// Where training runs. At most one of kubernetes or hosts; kubernetes when neither.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!(has(self.kubernetes) && has(self.hosts))").message("give at most one of target.kubernetes or target.hosts"))]
pub struct TrainingTarget {
    /// Kubernetes pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes: Option<KubernetesTraining>,
    /// GPU hosts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hosts: Option<HostSelector>,
}

/// Kubernetes placement.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KubernetesTraining {
    /// Node selector for the worker pods.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "string_map")]
    pub node_selector: BTreeMap<String, String>,
    /// Extended resource name of a GPU. Default `nvidia.com/gpu`.
    #[serde(default = "gpu_resource")]
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^([a-z0-9.-]+/)?[a-z0-9]([-a-z0-9_.]*[a-z0-9])?$")
    )]
    pub gpu_resource_name: String,
}

fn gpu_resource() -> String {
    "nvidia.com/gpu".into()
}

/// The built-in trainer (`nova train`): one worker, CPU, or CUDA in a build with the `cuda` feature.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.model != 'cnn' || !self.dataset.startsWith('synthetic-')").message("model cnn needs images: use dataset fashion-mnist or a directory of IDX files"))]
pub struct BuiltinTrainer {
    /// Model preset: linear, mlp or cnn.
    pub model: ModelPreset,
    /// Data set: `fashion-mnist` (Debian's dataset-fashion-mnist, nothing is downloaded),
    /// `synthetic-classification`, `synthetic-regression`, or an absolute directory holding the
    /// four MNIST-format IDX files.
    #[schemars(
        length(min = 1, max = 1024),
        regex(
            pattern = r"^([a-z0-9-]+|(/([A-Za-z0-9_@+-][A-Za-z0-9._@+-]*|\.[A-Za-z0-9_@+-][A-Za-z0-9._@+-]*|\.\.[A-Za-z0-9._@+-]+))+)$"
        )
    )]
    pub dataset: String,
    /// Epochs. Default 1.
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 100000))]
    pub epochs: i32,
    /// Batch size per worker. Default 32.
    #[serde(default = "batch")]
    #[schemars(range(min = 1, max = 65536))]
    pub batch_size: i32,
    /// Learning rate, as a decimal string (`0.001`). Default 0.001.
    #[serde(default = "lr")]
    #[schemars(length(max = 32), regex(pattern = r"^[0-9]*\.?[0-9]+([eE]-?[0-9]+)?$"))]
    pub learning_rate: String,
    /// Seed of the initial weights and of the batch order: the same seed, the same run. Default 0.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub seed: i64,
    /// Stop after this many epochs without a better validation loss. Default: never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10000))]
    pub early_stopping_patience: Option<i32>,
}

fn batch() -> i32 {
    32
}
fn lr() -> String {
    "0.001".into()
}

/// Model presets of the built-in trainer.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ModelPreset {
    /// One linear layer (softmax or linear regression).
    Linear,
    /// One hidden layer of 256 ReLU units.
    Mlp,
    /// Two 3×3 convolutions with max pooling, then a linear layer (image data sets only).
    Cnn,
}

/// Checkpoint settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!(has(self.path) && has(self.pvc))").message("give checkpoint.path or checkpoint.pvc, not both"))]
pub struct Checkpoint {
    /// Directory on the worker (hosts) or inside the pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024), regex(pattern = super::common::DIR_PATH))]
    pub path: Option<String>,
    /// PersistentVolumeClaim for checkpoints (Kubernetes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub pvc: Option<String>,
    /// Steps between checkpoints. Default 500.
    #[serde(default = "every")]
    #[schemars(range(min = 1, max = 100000000))]
    pub every_steps: i32,
    /// Checkpoints kept. Default 3.
    #[serde(default = "super::common::three")]
    #[schemars(range(min = 1, max = 1000))]
    pub keep_last: i32,
}

impl Default for Checkpoint {
    fn default() -> Self {
        Self { path: None, pvc: None, every_steps: every(), keep_last: 3 }
    }
}

fn every() -> i32 {
    500
}

/// Resume behaviour.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Resume {
    #[default]
    Latest,
    None,
}

/// Run policy.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunPolicy {
    /// Restarts before the job fails. Default 3.
    #[serde(default = "super::common::three")]
    #[schemars(range(min = 0, max = 1000))]
    pub backoff_limit: i32,
    /// Wall-clock limit in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub active_deadline_seconds: Option<i64>,
    /// Delete the job's workers this long after it finishes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub ttl_seconds_after_finished: Option<i64>,
    /// gang (default): when one worker fails, all restart together from the last checkpoint.
    #[serde(default)]
    pub restart: RestartPolicy,
    /// A running job whose progress (the step in its progress lines) has not advanced for this
    /// long is taken as hung: all workers restart from the last checkpoint. Default: not watched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 10))]
    pub progress_deadline_seconds: Option<i64>,
    /// All workers must be placed (scheduled) within this long, or all are removed and placed
    /// again after a backoff (not counted as a restart). Default 300.
    #[serde(default = "scheduling_timeout")]
    #[schemars(range(min = 5, max = 86400))]
    pub scheduling_timeout_seconds: i64,
}

fn scheduling_timeout() -> i64 {
    300
}

impl Default for RunPolicy {
    fn default() -> Self {
        Self {
            backoff_limit: 3,
            active_deadline_seconds: None,
            ttl_seconds_after_finished: None,
            restart: RestartPolicy::Gang,
            progress_deadline_seconds: None,
            scheduling_timeout_seconds: scheduling_timeout(),
        }
    }
}

/// Restart policies.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RestartPolicy {
    #[default]
    Gang,
}

/// Thermal protection.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.resumeBelowCelsius < self.pauseAboveCelsius").message("resumeBelowCelsius must be below pauseAboveCelsius"))]
pub struct Thermal {
    /// Pause training when a GPU is hotter than this. Default 85.
    #[serde(default = "hot")]
    #[schemars(range(min = 40, max = 120))]
    pub pause_above_celsius: i32,
    /// Resume when all GPUs are cooler than this. Default 70.
    #[serde(default = "cool")]
    #[schemars(range(min = 20, max = 110))]
    pub resume_below_celsius: i32,
}

impl Default for Thermal {
    fn default() -> Self {
        Self { pause_above_celsius: hot(), resume_below_celsius: cool() }
    }
}

fn hot() -> i32 {
    85
}
fn cool() -> i32 {
    70
}

/// Training phases.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum TrainingPhase {
    /// Workers are being created or placed.
    Pending,
    /// Every worker is placed and running.
    Running,
    /// Frozen by the thermal guard.
    Paused,
    /// spec.suspend: no workers.
    Suspended,
    Succeeded,
    Failed,
}

/// Per-worker GPU readings.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkerStatus {
    /// Worker index.
    pub index: i32,
    /// The Host the worker runs on (host targets), or the node its GPUs were read on
    /// (Kubernetes, from the DCGM exporter).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// The GPUs given to the worker: its `CUDA_VISIBLE_DEVICES` on a Host; on Kubernetes the
    /// node's GPU indices the DCGM exporter reports for its pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpus: Option<String>,
    /// GPU utilisation in percent (the busiest of the worker's GPUs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_utilization_percent: Option<i32>,
    /// GPU memory used in MiB (all of the worker's GPUs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_memory_used_mib: Option<i64>,
    /// GPU temperature in °C (the hottest of the worker's GPUs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_temperature_celsius: Option<i32>,
}

/// Observed state of a TrainingJob.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TrainingJobStatus {
    /// The generation last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Pending, Running, Paused, Suspended, Succeeded or Failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<TrainingPhase>,
    /// The current gang of workers: 1 for the first, one more per restart or re-placement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<i32>,
    /// When the first workers were created (activeDeadlineSeconds counts from here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// When the current gang was created (schedulingTimeoutSeconds counts from here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt_start_time: Option<Time>,
    /// When the job succeeded or failed (ttlSecondsAfterFinished counts from here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    /// When the step last advanced (progressDeadlineSeconds counts from here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_progress_time: Option<Time>,
    /// Gangs removed in a row because not every worker could be placed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement_failures: Option<i32>,
    /// No new gang before this time (the backoff after a failed placement).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<Time>,
    /// Current epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<i32>,
    /// Current global step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<i64>,
    /// Last reported training loss.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss: Option<f64>,
    /// Samples per second over all workers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throughput: Option<f64>,
    /// Per-worker GPU readings.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub workers: Vec<WorkerStatus>,
    /// Gang restarts so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restarts: Option<i32>,
    /// Newest checkpoint: its step and when it was written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_checkpoint: Option<CheckpointRef>,
    /// Ready, Progressing and Degraded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Conditions,
}

/// A written checkpoint.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CheckpointRef {
    /// Global step.
    pub step: i64,
    /// Where it is.
    pub path: String,
    /// When it was written.
    pub time: Time,
    /// Host targets: the Hosts holding a copy at `path` (the writer's first). Nova copies the
    /// newest checkpoint to every selected Host it can reach, so a worker moved off a Host that
    /// went down resumes from it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
}
