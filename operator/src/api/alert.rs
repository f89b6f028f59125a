//! AlertRule: Prometheus alerting rules and Alertmanager routing.

use std::collections::BTreeMap;

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{Conditions, DURATION, HostSelector, SecretKeyRef, conditions_schema, string_map};

/// Prometheus rules and where their alerts go.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "nova.infra.dev",
    version = "v1alpha1",
    kind = "AlertRule",
    namespaced,
    status = "AlertRuleStatus",
    shortname = "nar",
    category = "nova",
    doc = "Prometheus alerting rules (own groups and built-in packs) and Alertmanager routing.",
    printcolumn(name = "Rules", type_ = "integer", json_path = ".status.rulesLoaded"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[x_kube(validation = Rule::new("(has(self.groups) && size(self.groups) > 0) || (has(self.packs) && size(self.packs) > 0)").message("give at least one rule group or pack"))]
#[serde(rename_all = "camelCase")]
pub struct AlertRuleSpec {
    /// Rule groups, as in a Prometheus rule file.
    #[serde(default)]
    #[schemars(length(max = 64))]
    pub groups: Vec<RuleGroup>,
    /// Built-in rule packs.
    #[serde(default)]
    #[schemars(length(max = 16))]
    pub packs: Vec<Pack>,
    /// Alertmanager routing for these alerts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routing: Option<Routing>,
    /// Where the rules are loaded. Default: the cluster's Prometheus.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<AlertTarget>,
}

/// A Prometheus rule group.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RuleGroup {
    /// Group name, unique in this object.
    #[schemars(length(min = 1, max = 128), regex(pattern = r"^[A-Za-z0-9_.:-]+$"))]
    pub name: String,
    /// Evaluation interval, e.g. `30s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32), regex(pattern = DURATION))]
    pub interval: Option<String>,
    /// Alerting rules.
    #[schemars(length(min = 1, max = 256))]
    pub rules: Vec<AlertingRule>,
}

/// One alerting rule.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AlertingRule {
    /// Alert name.
    #[schemars(length(min = 1, max = 128), regex(pattern = r"^[A-Za-z_][A-Za-z0-9_]*$"))]
    pub alert: String,
    /// PromQL expression (parsed by Nova before loading).
    #[schemars(length(min = 1, max = 8192))]
    pub expr: String,
    /// How long the expression must hold before the alert fires.
    #[serde(default, rename = "for", skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32), regex(pattern = DURATION))]
    pub for_: Option<String>,
    /// How long the alert keeps firing after the expression stops holding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32), regex(pattern = DURATION))]
    pub keep_firing_for: Option<String>,
    /// Extra labels, e.g. severity.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "string_map")]
    pub labels: BTreeMap<String, String>,
    /// Annotations, e.g. summary and runbook_url.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "string_map")]
    pub annotations: BTreeMap<String, String>,
}

/// Built-in rule packs (docs/alerts.md lists their rules).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Pack {
    /// Host CPU, memory and disk (warning and critical), and node_exporter down.
    Host,
    /// A Platform's availability, latency and HTTP errors (scrape job `platform`).
    Platform,
    /// The seed's web application set: `host` and `platform`, plus PostgreSQL and Redis down.
    Webapp,
    /// Certificates close to expiry or past their renewal.
    Certificates,
    /// Backups missing their objectives, failing, or unverified.
    Backups,
    /// GPU temperature and stalled training.
    Training,
    /// Nova itself: down, reconciles failing or blocked.
    Operator,
    /// `NovaWatchdog`, an alert that always fires: route it (`alertname: NovaWatchdog`) to a
    /// dead man's switch, which raises the alarm when it stops arriving.
    Watchdog,
}

/// Alertmanager routing.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Routing {
    /// Receivers; the first is the default.
    #[schemars(length(min = 1, max = 32))]
    pub receivers: Vec<Receiver>,
    /// Labels to group alerts by. Default [alertname].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub group_by: Vec<String>,
    /// Wait before the first notification of a group. Default 30s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32), regex(pattern = DURATION))]
    pub group_wait: Option<String>,
    /// Wait before notifying about new alerts in a group. Default 5m.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32), regex(pattern = DURATION))]
    pub group_interval: Option<String>,
    /// Wait before repeating a notification. Default 4h.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32), regex(pattern = DURATION))]
    pub repeat_interval: Option<String>,
    /// Alerts matching a route go to its receiver instead of the default (first) one, e.g.
    /// `severity: critical` to email; with `continue`, they go on to the default as well.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub routes: Vec<Route>,
    /// Mute alerts matching targetMatch while an alert matching sourceMatch fires.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub inhibit_rules: Vec<InhibitRule>,
}

/// A route: alerts whose labels equal all of `match` go to `receiver`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Route {
    /// Labels and the values they must have, e.g. `severity: critical`.
    #[serde(rename = "match")]
    #[schemars(schema_with = "string_map")]
    pub match_: BTreeMap<String, String>,
    /// The name of one of `receivers`.
    #[schemars(length(min = 1, max = 128))]
    pub receiver: String,
    /// Also notify the default receiver.
    #[serde(default, rename = "continue")]
    pub continue_: bool,
}

/// A notification receiver; exactly one channel.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("(has(self.slack) ? 1 : 0) + (has(self.email) ? 1 : 0) + (has(self.webhook) ? 1 : 0) == 1").message("a receiver has exactly one of slack, email or webhook"))]
pub struct Receiver {
    /// Receiver name.
    #[schemars(length(min = 1, max = 128), regex(pattern = r"^[A-Za-z0-9_.-]+$"))]
    pub name: String,
    /// Slack incoming webhook.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slack: Option<SlackReceiver>,
    /// Email.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<EmailReceiver>,
    /// Generic webhook.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookReceiver>,
}

/// Slack settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SlackReceiver {
    /// Secret key holding the webhook URL.
    pub url_secret_ref: SecretKeyRef,
    /// Channel, e.g. `#alerts`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 80), regex(pattern = r"^[#@]?[A-Za-z0-9_.-]+$"))]
    pub channel: Option<String>,
}

/// Email settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EmailReceiver {
    /// Recipient.
    #[schemars(length(min = 3, max = 254), regex(pattern = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"))]
    pub to: String,
    /// Sender.
    #[schemars(length(min = 3, max = 254), regex(pattern = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"))]
    pub from: String,
    /// SMTP `host:port`.
    #[schemars(length(min = 3, max = 260), regex(pattern = r"^[A-Za-z0-9.\[\]:-]+:[0-9]{1,5}$"))]
    pub smarthost: String,
    /// Secret with keys `username` and `password`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_secret_ref: Option<super::common::SecretRef>,
}

/// Webhook settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookReceiver {
    /// Secret key holding the URL (it often carries a token).
    pub url_secret_ref: SecretKeyRef,
}

/// An inhibition rule.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InhibitRule {
    /// Labels an alert must have to inhibit.
    #[schemars(schema_with = "string_map")]
    pub source_match: BTreeMap<String, String>,
    /// Labels of the alerts muted.
    #[schemars(schema_with = "string_map")]
    pub target_match: BTreeMap<String, String>,
    /// Labels that must be equal in both.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub equal: Vec<String>,
}

/// Where rules are loaded: the cluster's Prometheus, or Prometheus on hosts.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AlertTarget {
    /// Prometheus on these hosts (rules written to its rule directory, then reloaded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hosts: Option<HostSelector>,
}

/// Observed state of an AlertRule.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AlertRuleStatus {
    /// The generation last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Rules Prometheus reports as loaded (read back from its rules API).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules_loaded: Option<i32>,
    /// Rules in this object (own groups and packs) that passed validation and were applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules_applied: Option<i32>,
    /// Where the rules went: a PrometheusRule, a ConfigMap, or hosts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512))]
    pub applied_to: Option<String>,
    /// The version of the Prometheus that was asked (from its build information).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub prometheus_version: Option<String>,
    /// Per group and per rule, what Prometheus says of it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 128))]
    pub groups: Vec<GroupStatus>,
    /// Ready.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Conditions,
}

/// What Prometheus says of one rule group.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GroupStatus {
    /// Group name.
    #[schemars(length(max = 128))]
    pub name: String,
    /// The group's rules.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    pub rules: Vec<RuleStatus>,
}

/// What Prometheus says of one rule.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RuleStatus {
    /// Alert name.
    #[schemars(length(max = 128))]
    pub alert: String,
    /// Whether Prometheus has the rule loaded.
    pub loaded: bool,
    /// Prometheus's health of the rule: ok, err or unknown (not evaluated yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 16))]
    pub health: Option<String>,
    /// The error of the last evaluation, when health is err.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub last_error: Option<String>,
    /// The evaluation at which this health was first seen (not refreshed on every evaluation,
    /// so a steady rule causes no status writes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub last_evaluation: Option<String>,
    /// Metrics the expression reads that have no series in Prometheus.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub absent_metrics: Vec<String>,
}
