//! BlueGreenDeployment: two colours, a preview, a health gate, promotion and instant rollback.

use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{Conditions, LocalRef, conditions_schema, one, three, yes};

/// How a release moves from the active colour to the preview colour. Shared by
/// BlueGreenDeployment and by Platform's `strategy.blueGreen`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.autoPromotionSeconds) || self.autoPromotionEnabled").message("autoPromotionSeconds needs autoPromotionEnabled: true"))]
pub struct BlueGreenStrategy {
    /// Service that carries production traffic; it selects the active colour.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63), regex(pattern = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"))]
    pub active_service: Option<String>,
    /// Service that selects the preview colour, for checks before promotion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63), regex(pattern = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"))]
    pub preview_service: Option<String>,
    /// Promote the preview automatically once it is healthy. Default true.
    #[serde(default = "yes")]
    pub auto_promotion_enabled: bool,
    /// Seconds to wait after the preview is healthy before promoting automatically.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 86400))]
    pub auto_promotion_seconds: Option<i32>,
    /// Replicas of the preview colour before promotion; default: the full replica count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub preview_replica_count: Option<i32>,
    /// Seconds the old colour keeps running after a switch, so that an abort is an instant
    /// selector flip back. Default 30.
    #[serde(default = "default_scale_down_delay")]
    #[schemars(range(min = 0, max = 86400))]
    pub scale_down_delay_seconds: i32,
    /// Seconds a preview may take to become healthy before the rollout is Degraded. Default 600.
    #[serde(default = "default_progress_deadline")]
    #[schemars(range(min = 1, max = 86400))]
    pub progress_deadline_seconds: i32,
    /// Abort automatically (traffic stays on the active colour) when the progress deadline passes.
    #[serde(default)]
    pub abort_on_progress_deadline: bool,
    /// Health gate: HTTP checks against the preview before it may take traffic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<GateCheck>,
    /// Optional metric analysis: a Prometheus query that must satisfy a condition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis: Option<Analysis>,
    /// Promote only after a fresh verified backup: on a new revision Nova asks the Backup for a
    /// run and promotes once an artifact of it, newer than the preview and than `maxAgeSeconds`,
    /// is written and verified. A failed run holds the rollout in Paused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_gate: Option<BackupGate>,
}

/// A Backup that must hold a fresh verified artifact before a promotion.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupGate {
    /// The Backup (same namespace); it must verify its artifacts (`spec.verify.restoreTest`).
    pub backup_ref: super::common::LocalRef,
    /// The artifact may be at most this old at promotion (seconds). Default 3600.
    #[serde(default = "default_backup_max_age")]
    #[schemars(range(min = 60))]
    pub max_age_seconds: i64,
}

fn default_backup_max_age() -> i64 {
    3600
}

impl Default for BlueGreenStrategy {
    fn default() -> Self {
        Self {
            active_service: None,
            preview_service: None,
            auto_promotion_enabled: true,
            auto_promotion_seconds: None,
            preview_replica_count: None,
            scale_down_delay_seconds: default_scale_down_delay(),
            progress_deadline_seconds: default_progress_deadline(),
            abort_on_progress_deadline: false,
            health_check: None,
            analysis: None,
            backup_gate: None,
        }
    }
}

fn default_scale_down_delay() -> i32 {
    30
}
fn default_progress_deadline() -> i32 {
    600
}

/// HTTP health gate run by Nova against the preview colour.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GateCheck {
    /// Path to request.
    #[serde(default = "root_path")]
    #[schemars(length(min = 1, max = 1024), regex(pattern = r"^/[A-Za-z0-9._~!$&'()*+,;=:@%/?-]*$"))]
    pub path: String,
    /// Port to request; defaults to the application's port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<i32>,
    /// HTTP status that counts as healthy. Default 200.
    #[serde(default = "ok_status")]
    #[schemars(range(min = 100, max = 599))]
    pub expected_status: i32,
    /// Seconds between checks. Default 5.
    #[serde(default = "five")]
    #[schemars(range(min = 1, max = 3600))]
    pub interval_seconds: i32,
    /// Seconds before a check times out. Default 2.
    #[serde(default = "two")]
    #[schemars(range(min = 1, max = 600))]
    pub timeout_seconds: i32,
    /// Consecutive successes needed to pass the gate. Default 1.
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 100))]
    pub successes: i32,
    /// Consecutive failures that fail the gate. Default 3.
    #[serde(default = "three")]
    #[schemars(range(min = 1, max = 100))]
    pub failures: i32,
}

fn root_path() -> String {
    "/".into()
}
fn ok_status() -> i32 {
    200
}
fn five() -> i32 {
    5
}
fn two() -> i32 {
    2
}

/// Metric analysis against Prometheus.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Analysis {
    /// Base URL of the Prometheus HTTP API, e.g. `http://prometheus.monitoring:9090`.
    #[schemars(length(min = 1, max = 2048), regex(pattern = r"^https?://[^\s]+$"))]
    pub prometheus_url: String,
    /// PromQL query; it must return one sample.
    #[schemars(length(min = 1, max = 4096))]
    pub query: String,
    /// Condition on the sample value `result`, e.g. `result < 0.01`.
    #[schemars(
        length(min = 1, max = 256),
        regex(pattern = r"^result\s*(<|<=|>|>=|==|!=)\s*-?[0-9]+(\.[0-9]+)?$")
    )]
    pub success_condition: String,
    /// Seconds between measurements. Default 30.
    #[serde(default = "thirty")]
    #[schemars(range(min = 1, max = 3600))]
    pub interval_seconds: i32,
    /// Measurements that must pass. Default 3.
    #[serde(default = "three")]
    #[schemars(range(min = 1, max = 100))]
    pub count: i32,
}

fn thirty() -> i32 {
    30
}

/// A zero-downtime release with two colours.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "nova.infra.dev",
    version = "v1alpha1",
    kind = "BlueGreenDeployment",
    namespaced,
    status = "BlueGreenDeploymentStatus",
    shortname = "bgd",
    category = "nova",
    doc = "A zero-downtime release: preview colour, health gate, promotion, instant rollback.",
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Active", type_ = "string", json_path = ".status.activeColor"),
    printcolumn(name = "Preview", type_ = "string", json_path = ".status.previewColor"),
    printcolumn(name = "Revision", type_ = "string", json_path = ".status.activeRevision", priority = 1),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[x_kube(validation = Rule::new("has(self.template) != has(self.platformRef)").message("give exactly one of template or platformRef"))]
#[serde(rename_all = "camelCase")]
pub struct BlueGreenDeploymentSpec {
    /// Pod template of the application (as in a Deployment). Exclusive with platformRef.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::platform::preserve_object")]
    pub template: Option<PodTemplateSpec>,
    /// Platform whose application this deploys. Exclusive with template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform_ref: Option<LocalRef>,
    /// Total replicas of the active colour.
    #[serde(default = "one")]
    #[schemars(range(min = 0, max = 1000))]
    pub replicas: i32,
    /// How the release moves between colours.
    #[serde(flatten)]
    pub strategy: BlueGreenStrategy,
    /// Set to true to send traffic back to the last stable colour at once and scale the preview down.
    #[serde(default)]
    pub abort: bool,
    /// Revisions kept in history for `nova rollout undo`. Default 10.
    #[serde(default = "ten")]
    #[schemars(range(min = 0, max = 100))]
    pub revision_history_limit: i32,
}

fn ten() -> i32 {
    10
}

/// Where the rollout stands.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Phase {
    Healthy,
    Progressing,
    Paused,
    Degraded,
    Aborted,
}

/// One of the two colours.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Color {
    Blue,
    Green,
}

impl Color {
    pub fn other(self) -> Self {
        match self {
            Color::Blue => Color::Green,
            Color::Green => Color::Blue,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Color::Blue => "blue",
            Color::Green => "green",
        }
    }
}

impl std::fmt::Display for Color {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Healthy => "Healthy",
            Phase::Progressing => "Progressing",
            Phase::Paused => "Paused",
            Phase::Degraded => "Degraded",
            Phase::Aborted => "Aborted",
        }
    }
}

/// A revision that once served traffic.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HistoryEntry {
    /// Revision (hash of the pod template).
    pub revision: String,
    /// Colour it ran as.
    pub color: Color,
    /// When it became active.
    pub activated_at: Time,
}

/// Where the health gate of a preview stands. Kept in status so that a restarted operator
/// resumes the count instead of starting over or promoting twice.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GateStatus {
    /// Consecutive HTTP check rounds that passed.
    #[serde(default)]
    pub successes: i32,
    /// Consecutive HTTP check rounds that failed.
    #[serde(default)]
    pub failures: i32,
    /// Prometheus measurements that satisfied the success condition.
    #[serde(default)]
    pub analysis_passes: i32,
    /// When the last HTTP check round ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_check_time: Option<Time>,
    /// When the last Prometheus measurement ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_analysis_time: Option<Time>,
    /// When the gate passed (automatic promotion waits `autoPromotionSeconds` from here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passed_at: Option<Time>,
    /// True once the gate failed: the preview will not be promoted.
    #[serde(default)]
    pub failed: bool,
    /// What the last check saw.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// Observed state of a BlueGreenDeployment.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BlueGreenDeploymentStatus {
    /// The generation last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Healthy, Progressing, Paused, Degraded or Aborted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// Colour the active Service selects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_color: Option<Color>,
    /// Colour of the preview, while there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview_color: Option<Color>,
    /// Revision serving traffic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_revision: Option<String>,
    /// Revision in preview.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview_revision: Option<String>,
    /// When traffic last switched colours.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_switch_time: Option<Time>,
    /// Revision the other colour still runs after a switch, until `scaleDownAt`: an abort
    /// before then flips traffic back to it at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_revision: Option<String>,
    /// When the previous colour is scaled to zero.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_down_at: Option<Time>,
    /// When the current preview was started (the progress deadline counts from here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview_started_at: Option<Time>,
    /// Progress of the health gate for the preview revision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate: Option<GateStatus>,
    /// Revision whose release was aborted; it is not started again until the template changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aborted_revision: Option<String>,
    /// Recent revisions, newest first (the full history is in Nova's state database).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<HistoryEntry>,
    /// On SSH hosts: the ports the colours listen on, per host (allocated on each host for this
    /// application, kept there in /var/lib/nova/ports, freed when it is deleted).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub host_ports: Vec<HostPorts>,
    /// Ready, Progressing and Degraded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Conditions,
}

/// One host's colour ports.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HostPorts {
    /// The Host's name.
    pub host: String,
    /// Port of the blue colour on 127.0.0.1.
    pub blue: i32,
    /// Port of the green colour on 127.0.0.1.
    pub green: i32,
}
