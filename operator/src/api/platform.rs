//! Platform: a web application, on Kubernetes or on SSH hosts.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{EnvFromSource, EnvVar, ResourceRequirements};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::bluegreen::BlueGreenStrategy;
use super::common::{Conditions, HostSelector, HttpCheck, conditions_schema, domain_list, one, string_map};

/// A web application: image, replicas, environment, domains, health and where it runs.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "nova.infra.dev",
    version = "v1alpha1",
    kind = "Platform",
    namespaced,
    status = "PlatformStatus",
    shortname = "plat",
    category = "nova",
    doc = "A web application run by Nova on Kubernetes or on SSH hosts.",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(name = "Replicas", type_ = "integer", json_path = ".spec.replicas"),
    printcolumn(name = "Available", type_ = "integer", json_path = ".status.readyReplicas"),
    printcolumn(name = "URL", type_ = "string", json_path = ".status.url"),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason",
        priority = 1
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[x_kube(validation = Rule::new("!has(self.tls) || self.tls.mode == 'None' || (has(self.domains) && size(self.domains) > 0)").message("tls needs at least one entry in domains"))]
#[serde(rename_all = "camelCase")]
pub struct PlatformSpec {
    /// Container image, e.g. `ghcr.io/acme/shop:1.4.2` (a digest pins it: `...@sha256:...`).
    #[schemars(length(min = 1, max = 512), regex(pattern = r"^[a-zA-Z0-9][a-zA-Z0-9._/:@-]*$"))]
    pub image: String,
    /// Number of instances. Default 1.
    #[serde(default = "one")]
    #[schemars(range(min = 0, max = 1000))]
    pub replicas: i32,
    /// Port the application listens on. Default 8080.
    #[serde(default = "default_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    /// Entrypoint override (the image's ENTRYPOINT when empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub command: Vec<String>,
    /// Arguments (the image's CMD when empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    pub args: Vec<String>,
    /// Environment variables, as in a Kubernetes container.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "env_schema")]
    pub env: Vec<EnvVar>,
    /// Whole Secrets or ConfigMaps to expose as environment variables.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "env_from_schema")]
    pub env_from: Vec<EnvFromSource>,
    /// CPU and memory requests and limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "resources_schema")]
    pub resources: Option<ResourceRequirements>,
    /// HTTP health check: readiness and liveness probes on Kubernetes, Nova's checks on hosts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<HttpCheck>,
    /// Where the application serves Prometheus metrics, on its port. On Hosts with
    /// `bootstrap.monitoring`, the host's Prometheus scrapes the colour that serves traffic
    /// (job `platform`, labels `namespace` and `platform`, what the `platform` alert pack
    /// reads); on Kubernetes the pods carry the `prometheus.io/scrape`, `/path` and `/port`
    /// annotations. Without it nothing scrapes the application: one without metrics would read
    /// as down.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<MetricsEndpoint>,
    /// Domains the application is served on (an Ingress on Kubernetes, nginx on hosts).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "domain_list")]
    pub domains: Vec<String>,
    /// TLS for the domains.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<PlatformTls>,
    /// Ingress settings on Kubernetes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<IngressSettings>,
    /// How new versions roll out. Default: Rolling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<Strategy>,
    /// Where the application runs. Default: this Kubernetes cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<Target>,
}

fn default_port() -> i32 {
    8080
}

/// A Prometheus metrics endpoint of the application.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MetricsEndpoint {
    /// Path that serves the metrics in Prometheus' text format. Default `/metrics`.
    #[serde(default = "default_metrics_path")]
    #[schemars(length(min = 1, max = 1024), regex(pattern = r"^/[A-Za-z0-9._~/-]*$"))]
    pub path: String,
}

fn default_metrics_path() -> String {
    "/metrics".into()
}

/// TLS for a Platform's domains.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("(self.mode == 'Secret') == has(self.secretName)").message("tls.secretName is required with mode Secret and allowed only then"))]
pub struct PlatformTls {
    /// None: plain HTTP. Secret: a `kubernetes.io/tls` Secret named by secretName.
    /// Auto: Nova requests a TlsCertificate for the domains.
    pub mode: TlsMode,
    /// Secret holding `tls.crt` and `tls.key`, with mode Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"))]
    pub secret_name: Option<String>,
    /// AcmeIssuer for mode Auto; default: the issuer annotated as default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub issuer: Option<String>,
}

/// TLS modes.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum TlsMode {
    None,
    Secret,
    Auto,
}

/// Ingress settings.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IngressSettings {
    /// IngressClass to use; the cluster default when empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub class_name: Option<String>,
    /// Extra annotations on the Ingress (controller-specific settings).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "string_map")]
    pub annotations: BTreeMap<String, String>,
}

/// Rollout strategy.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.type == 'BlueGreen' || !has(self.blueGreen)").message("strategy.blueGreen is only allowed with type BlueGreen"))]
pub struct Strategy {
    /// Rolling (a Deployment's rolling update) or BlueGreen (two colours, switch at once).
    #[serde(rename = "type")]
    pub type_: StrategyType,
    /// Blue-green settings, with type BlueGreen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blue_green: Option<BlueGreenStrategy>,
}

/// Strategy types.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum StrategyType {
    Rolling,
    BlueGreen,
}

/// Where a Platform runs: this cluster, or SSH hosts. Exactly one.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.kubernetes) != has(self.hosts)").message("give exactly one of target.kubernetes or target.hosts"))]
pub struct Target {
    /// Run on this Kubernetes cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes: Option<KubernetesTarget>,
    /// Run on SSH hosts (Host objects).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hosts: Option<HostsTarget>,
}

/// Kubernetes target (no settings yet).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct KubernetesTarget {}

/// SSH-host target.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HostsTarget {
    /// Which hosts.
    #[serde(flatten)]
    pub hosts: HostSelector,
    /// How the application runs on a host. `systemd`: `command` is a program on the host, run
    /// as a hardened unit (the image only names the release). `compose`: the image runs with
    /// Docker, one compose project per colour publishing `port` on the colour's loopback port
    /// (give the Hosts `bootstrap.docker`). Default systemd.
    #[serde(default)]
    pub runtime: HostRuntime,
}

/// Process managers on a host.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum HostRuntime {
    /// The program in `command` under systemd.
    #[default]
    Systemd,
    /// The image under Docker Compose.
    Compose,
}

/// Observed state of a Platform.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlatformStatus {
    /// The generation last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Where the application answers (first domain, or the in-cluster Service address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Instances ready to serve.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_replicas: Option<i32>,
    /// Revision serving traffic (hash of what was deployed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_revision: Option<String>,
    /// Ready, Progressing and Degraded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Conditions,
}

fn schema(value: serde_json::Value) -> schemars::Schema {
    schemars::Schema::try_from(value).expect("a JSON object")
}

/// Kubernetes types embedded as-is keep their full validation in the objects Nova creates from
/// them; in the CRD they are open objects so that its size stays small and CEL costs bounded.
pub fn preserve_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schema(json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}))
}

fn env_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schema(json!({
        "type": "array",
        "maxItems": 256,
        "items": {
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": {"type": "string", "minLength": 1, "maxLength": 256,
                          "pattern": "^[A-Za-z_][A-Za-z0-9_]*$",
                          "description": "Variable name: letters, digits and underscores, not starting with a digit."},
                "value": {"type": "string", "maxLength": 32768, "description": "Literal value."},
                "valueFrom": value_from(),
            },
            "x-kubernetes-validations": [{"rule": "!(has(self.value) && has(self.valueFrom))",
                                          "message": "env: give value or valueFrom, not both"}],
        },
    }))
}

/// `env[].valueFrom`: fully typed, so that every admitted Platform also deserializes in Nova
/// (one object that does not would stall the whole watch).
fn value_from() -> serde_json::Value {
    let key_ref = |what: &str| {
        json!({"type": "object", "required": ["name", "key"],
        "description": format!("A key of a {what} in the Platform's namespace."),
        "properties": {
            "name": {"type": "string", "minLength": 1, "maxLength": 253, "description": format!("Name of the {what}.")},
            "key": {"type": "string", "minLength": 1, "maxLength": 253, "description": "Key inside it."},
            "optional": {"type": "boolean", "description": "Start even when it is missing."},
        }})
    };
    json!({
        "type": "object",
        "description": "Where the value comes from: exactly one of secretKeyRef, configMapKeyRef or fieldRef.",
        "properties": {
            "secretKeyRef": key_ref("Secret"),
            "configMapKeyRef": key_ref("ConfigMap"),
            "fieldRef": {"type": "object", "required": ["fieldPath"],
                "description": "A field of the pod, e.g. metadata.name or status.podIP.",
                "properties": {
                    "apiVersion": {"type": "string", "maxLength": 64, "description": "Schema version of fieldPath (v1)."},
                    "fieldPath": {"type": "string", "minLength": 1, "maxLength": 256, "description": "Path of the field."},
                }},
        },
        "x-kubernetes-validations": [{
            "rule": "(has(self.secretKeyRef) ? 1 : 0) + (has(self.configMapKeyRef) ? 1 : 0) + (has(self.fieldRef) ? 1 : 0) == 1",
            "message": "env[].valueFrom needs exactly one of secretKeyRef, configMapKeyRef or fieldRef",
        }],
    })
}

fn env_from_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let reference = |what: &str| {
        json!({"type": "object", "required": ["name"],
        "description": format!("A {what} whose keys become variables."),
        "properties": {
            "name": {"type": "string", "minLength": 1, "maxLength": 253, "description": format!("Name of the {what}.")},
            "optional": {"type": "boolean", "description": format!("Start even when the {what} is missing.")},
        }})
    };
    schema(json!({
        "type": "array",
        "maxItems": 32,
        "items": {
            "type": "object",
            "properties": {
                "prefix": {"type": "string", "maxLength": 64, "pattern": "^[A-Za-z_][A-Za-z0-9_]*$",
                           "description": "Prefix added to every variable name."},
                "secretRef": reference("Secret"),
                "configMapRef": reference("ConfigMap"),
            },
            "x-kubernetes-validations": [{"rule": "has(self.secretRef) != has(self.configMapRef)",
                                          "message": "envFrom: give exactly one of secretRef or configMapRef"}],
        },
    }))
}

fn resources_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let quantities = json!({"type": "object", "maxProperties": 16, "additionalProperties": {
        "anyOf": [{"type": "integer"}, {"type": "string"}],
        "pattern": r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$",
        "x-kubernetes-int-or-string": true,
    }});
    schema(json!({
        "type": "object",
        "description": "Requests and limits, e.g. {requests: {cpu: 100m, memory: 128Mi}}.",
        "properties": {
            "requests": with_description(&quantities, "Resources reserved, e.g. {cpu: 100m, memory: 128Mi}."),
            "limits": with_description(&quantities, "Upper bounds, e.g. {memory: 256Mi}."),
        },
    }))
}

fn with_description(schema: &serde_json::Value, text: &str) -> serde_json::Value {
    let mut s = schema.clone();
    s["description"] = json!(text);
    s
}
