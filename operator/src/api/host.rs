//! Host: a bare VPS or GPU machine, provisioned and kept in shape over SSH.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{Conditions, SecretKeyRef, conditions_schema, dns_label_list, string_map};

/// A machine reached over SSH.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "nova.infra.dev",
    version = "v1alpha1",
    kind = "Host",
    status = "HostStatus",
    shortname = "nh",
    category = "nova",
    doc = "A bare VPS or GPU machine that Nova provisions and keeps in shape over SSH.",
    printcolumn(name = "Address", type_ = "string", json_path = ".spec.address"),
    printcolumn(name = "Roles", type_ = "string", json_path = ".spec.roles"),
    printcolumn(
        name = "Reachable",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Reachable\")].status"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(name = "OS", type_ = "string", json_path = ".status.facts.os", priority = 1),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[x_kube(validation = Rule::new("self.hostKeyPolicy != 'Pinned' || has(self.hostKey)").message("hostKey is required with hostKeyPolicy Pinned (the default); use AcceptNew to record the first key seen"))]
#[serde(rename_all = "camelCase")]
pub struct HostSpec {
    /// DNS name or IP address of the machine.
    #[schemars(
        length(min = 1, max = 253),
        regex(
            pattern = r"^([A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?)*$|^[0-9a-fA-F:.]+$"
        )
    )]
    pub address: String,
    /// SSH port. Default 22.
    #[serde(default = "ssh_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    /// User to log in as. Default root.
    #[serde(default = "root")]
    #[schemars(length(min = 1, max = 32), regex(pattern = r"^[a-z_][a-z0-9_-]*$"))]
    pub user: String,
    /// Secret key holding the private SSH key (OpenSSH format), in the operator's namespace.
    pub ssh_key_secret_ref: SecretKeyRef,
    /// The host's public key as in known_hosts: `ssh-ed25519 AAAA...`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 8192),
        regex(
            pattern = r"^(ssh-ed25519|ecdsa-sha2-nistp256|ecdsa-sha2-nistp384|ecdsa-sha2-nistp521|ssh-rsa) [A-Za-z0-9+/]+=*( .*)?$"
        )
    )]
    pub host_key: Option<String>,
    /// Pinned (default): refuse any key but hostKey. AcceptNew: record the first key seen in
    /// status and refuse any other from then on.
    #[serde(default)]
    pub host_key_policy: HostKeyPolicy,
    /// What the machine is for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 4))]
    pub roles: Vec<HostRole>,
    /// Labels for selection by Platforms, Backups and TrainingJobs (the object's own labels work too).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "string_map")]
    pub labels: BTreeMap<String, String>,
    /// The desired shape of the machine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootstrap: Option<Bootstrap>,
    /// Which namespaces may place work on this Host (Platforms, BlueGreenDeployments,
    /// TlsCertificate distributeTo, Backups, TrainingJobs). Absent: only the namespaces the
    /// operator trusts (its `--trusted-namespaces`, by default its own namespace). An object from
    /// any other namespace is refused with a condition naming the Host, and nothing is done on it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_namespaces: Option<AllowedNamespaces>,
}

/// Namespaces allowed on a Host: those named, and those whose labels the selector matches (an
/// empty selector, `{}`, matches every namespace).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AllowedNamespaces {
    /// Namespaces allowed by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "dns_label_list")]
    pub names: Vec<String>,
    /// Namespaces allowed by their labels; `{}` allows every namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
}

fn ssh_port() -> i32 {
    22
}
fn root() -> String {
    "root".into()
}

/// Host-key policies.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum HostKeyPolicy {
    #[default]
    Pinned,
    AcceptNew,
}

/// Host roles.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum HostRole {
    Vps,
    Gpu,
}

/// Declarative bootstrap steps; each is checked, applied only if needed, then verified.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Bootstrap {
    /// Debian/Ubuntu packages to install.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "package_list")]
    pub packages: Vec<String>,
    /// Login users and their authorized keys.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub users: Vec<HostUser>,
    /// sshd hardening: no password login, no root login unless allowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh_hardening: Option<SshHardening>,
    /// Firewall allow-list; everything else inbound is dropped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firewall: Option<Firewall>,
    /// fail2ban jails for sshd and nginx.
    #[serde(default)]
    pub fail2ban: bool,
    /// Unattended security upgrades.
    #[serde(default)]
    pub unattended_upgrades: bool,
    /// Docker engine and the compose plugin.
    #[serde(default)]
    pub docker: bool,
    /// Prometheus node_exporter.
    #[serde(default)]
    pub node_exporter: bool,
    /// Prometheus, Alertmanager and node_exporter from the distribution, listening on the
    /// host's loopback (Nova reaches them over SSH): scraping every 10 s, 15 days kept. AlertRules
    /// with `spec.target.hosts` load their rules and routing here.
    #[serde(default)]
    pub monitoring: bool,
    /// Check the NVIDIA driver and container toolkit (role gpu).
    #[serde(default)]
    pub nvidia: bool,
}

fn package_list(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::Schema::try_from(serde_json::json!({
        "type": "array",
        "maxItems": 256,
        "items": {"type": "string", "maxLength": 128, "pattern": r"^[a-z0-9][a-z0-9+.-]+(=[A-Za-z0-9.+~:-]+)?$"},
    }))
    .expect("object")
}

/// A login user.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HostUser {
    /// User name.
    #[schemars(length(min = 1, max = 32), regex(pattern = r"^[a-z_][a-z0-9_-]*$"))]
    pub name: String,
    /// Public keys for ~/.ssh/authorized_keys.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub authorized_keys: Vec<String>,
    /// Passwordless sudo.
    #[serde(default)]
    pub sudo: bool,
    /// Supplementary groups.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "dns_label_list")]
    pub groups: Vec<String>,
}

/// sshd settings.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SshHardening {
    /// Allow root to log in (with a key). Default false.
    #[serde(default)]
    pub permit_root_login: bool,
}

/// Inbound firewall allow-list.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Firewall {
    /// Allowed inbound ports (22 stays open whatever is listed, so Nova never locks itself out).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 128))]
    pub allow: Vec<FirewallRule>,
}

/// One allowed inbound port.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FirewallRule {
    /// Port number.
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    /// tcp (default) or udp.
    #[serde(default)]
    pub protocol: Protocol,
    /// Source networks in CIDR notation; everyone when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "cidr_list")]
    pub from: Vec<String>,
}

fn cidr_list(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::Schema::try_from(serde_json::json!({
        "type": "array",
        "maxItems": 64,
        "items": {"type": "string", "maxLength": 64, "x-kubernetes-validations": [
            {"rule": "isCIDR(self)", "message": "must be a CIDR such as 203.0.113.0/24 or 2001:db8::/32"}
        ]},
    }))
    .expect("object")
}

/// Transport protocols.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
}

/// Observed state of a Host.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HostStatus {
    /// The generation last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// What the machine reported about itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub facts: Option<HostFacts>,
    /// SHA256 fingerprint of the host key Nova trusts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_key_fingerprint: Option<String>,
    /// The host key recorded under AcceptNew.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recorded_host_key: Option<String>,
    /// When the bootstrap last ran to completion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_bootstrap_time: Option<Time>,
    /// Bootstrap steps found out of shape on the last check (and corrected).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drift: Vec<String>,
    /// Reachable, Bootstrapped and Ready.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Conditions,
}

/// Facts gathered from a host.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HostFacts {
    /// OS release, e.g. `Debian GNU/Linux 12 (bookworm)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os: Option<String>,
    /// Kernel release.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<String>,
    /// Logical CPUs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<i32>,
    /// Memory in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<i64>,
    /// Size of the root file system in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_bytes: Option<i64>,
    /// Whether Docker is installed.
    #[serde(default)]
    pub docker: bool,
    /// GPUs found by nvidia-smi.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gpus: Vec<GpuFacts>,
}

/// One GPU.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GpuFacts {
    /// Model name.
    pub name: String,
    /// Memory in MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mib: Option<i64>,
    /// Driver version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    /// Temperature in °C at the last check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature_celsius: Option<i32>,
}
