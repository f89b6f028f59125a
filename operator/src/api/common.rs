//! Types shared by several kinds.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The API group of every Nova kind.
pub const GROUP: &str = "nova.infra.dev";

/// A key in a Secret of the object's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key inside the Secret's data.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// A Secret of the object's namespace (or, for cluster-scoped kinds, of the operator's namespace).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretRef {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// A named object of the same namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LocalRef {
    /// Name of the referenced object.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// Which Host objects an object applies to: by label selector or by name, not both.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.selector) != (has(self.names) && size(self.names) > 0)").message("give exactly one of hosts.selector or hosts.names"))]
pub struct HostSelector {
    /// Selects Hosts by their labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
    /// Selects Hosts by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "dns_label_list")]
    pub names: Vec<String>,
}

/// An HTTP health check, used as a Kubernetes probe and as Nova's own health gate.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpCheck {
    /// Path to request, starting with `/`.
    #[serde(default = "default_health_path")]
    #[schemars(length(min = 1, max = 1024), regex(pattern = r"^/[A-Za-z0-9._~!$&'()*+,;=:@%/?-]*$"))]
    pub path: String,
    /// Port to request; defaults to the application's port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<i32>,
    /// Seconds to wait after start before the first check.
    #[serde(default)]
    #[schemars(range(min = 0, max = 3600))]
    pub initial_delay_seconds: i32,
    /// Seconds between checks.
    #[serde(default = "default_period")]
    #[schemars(range(min = 1, max = 3600))]
    pub period_seconds: i32,
    /// Seconds before one check times out.
    #[serde(default = "default_timeout")]
    #[schemars(range(min = 1, max = 600))]
    pub timeout_seconds: i32,
    /// Consecutive successes for healthy.
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 100))]
    pub success_threshold: i32,
    /// Consecutive failures for unhealthy.
    #[serde(default = "three")]
    #[schemars(range(min = 1, max = 100))]
    pub failure_threshold: i32,
}

impl Default for HttpCheck {
    fn default() -> Self {
        Self {
            path: default_health_path(),
            port: None,
            initial_delay_seconds: 0,
            period_seconds: default_period(),
            timeout_seconds: default_timeout(),
            success_threshold: 1,
            failure_threshold: 3,
        }
    }
}

fn default_health_path() -> String {
    "/".into()
}
fn default_period() -> i32 {
    10
}
fn default_timeout() -> i32 {
    1
}
pub(crate) fn one() -> i32 {
    1
}
pub(crate) fn three() -> i32 {
    3
}
pub(crate) fn yes() -> bool {
    true
}

/// Standard status conditions, as a list keyed by `type` (kstatus-compatible).
pub type Conditions = Vec<Condition>;

/// Schema of a `conditions` list: merge by `type`, so server-side apply and kstatus agree.
pub fn conditions_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let mut schema = generator.subschema_for::<Vec<Condition>>();
    let obj = schema.ensure_object();
    obj.insert("x-kubernetes-list-type".into(), json!("map"));
    obj.insert("x-kubernetes-list-map-keys".into(), json!(["type"]));
    obj.insert("maxItems".into(), json!(16));
    schema
}

fn schema_from(value: Value) -> schemars::Schema {
    schemars::Schema::try_from(value).expect("a JSON object")
}

/// RFC 1123 DNS label: what Kubernetes accepts as most object names.
pub const DNS_LABEL: &str = "^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$";

/// A DNS name as a domain or certificate name: lowercase labels, optionally a leading `*.`.
pub const DOMAIN: &str = r"^(\*\.)?([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\.)+[a-z]([-a-z0-9]{0,61}[a-z0-9])?$";

pub fn dns_label_list(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schema_from(json!({
        "type": "array",
        "maxItems": 100,
        "items": {"type": "string", "maxLength": 63, "pattern": DNS_LABEL},
    }))
}

/// Domains without wildcards (served names).
pub fn domain_list(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schema_from(json!({
        "type": "array",
        "maxItems": 100,
        "x-kubernetes-list-type": "set",
        "items": {"type": "string", "maxLength": 253, "pattern": DOMAIN.replace(r"(\*\.)?", "")},
    }))
}

/// Domains that may start with `*.` (certificate names).
pub fn wildcard_domain_list(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schema_from(json!({
        "type": "array",
        "minItems": 1,
        "maxItems": 100,
        "x-kubernetes-list-type": "set",
        "items": {"type": "string", "maxLength": 253, "pattern": DOMAIN},
    }))
}

/// A string map with bounded keys and values (labels, annotations, extra labels on alerts).
pub fn string_map(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schema_from(json!({
        "type": "object",
        "maxProperties": 64,
        "additionalProperties": {"type": "string", "maxLength": 4096},
    }))
}

/// Absolute file-system paths, no `.` or `..` segments and no characters a shell or config
/// would interpret.
pub fn abs_path_list(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schema_from(json!({
        "type": "array",
        "maxItems": 64,
        "items": {"type": "string", "maxLength": 1024, "pattern": ABS_PATH},
    }))
}

pub const ABS_PATH: &str = DIR_PATH;

/// An absolute path whose segments keep to `A-Za-z0-9._@+-` and are never `.` or `..` (a
/// segment may start with dots when something else follows: `.cache`, `..data`).
pub const DIR_PATH: &str =
    r"^(/([A-Za-z0-9_@+-][A-Za-z0-9._@+-]*|\.[A-Za-z0-9_@+-][A-Za-z0-9._@+-]*|\.\.[A-Za-z0-9._@+-]+))+$";

/// A duration as Prometheus and Go write it: `30s`, `5m`, `1h30m`.
pub const DURATION: &str = r"^([0-9]+(ms|s|m|h|d|w|y))+$";

/// Five-field cron schedule, or a macro such as `@daily`.
pub const CRON: &str = r"^(@(yearly|annually|monthly|weekly|daily|midnight|hourly)|(\S+\s+){4}\S+)$";
