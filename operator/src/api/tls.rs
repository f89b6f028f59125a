//! AcmeIssuer and TlsCertificate: ACME certificates, auto-renewed.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{
    Conditions, HostSelector, LocalRef, SecretKeyRef, SecretRef, conditions_schema, wildcard_domain_list,
};

/// An ACME account at a directory (Let's Encrypt or any RFC 8555 server).
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "nova.infra.dev",
    version = "v1alpha1",
    kind = "AcmeIssuer",
    status = "AcmeIssuerStatus",
    shortname = "acme",
    category = "nova",
    doc = "An ACME account that issues certificates for TlsCertificates.",
    printcolumn(name = "Server", type_ = "string", json_path = ".spec.server"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[x_kube(validation = Rule::new("has(self.solvers) && size(self.solvers) > 0").message("give at least one solver"))]
#[serde(rename_all = "camelCase")]
pub struct AcmeIssuerSpec {
    /// Directory URL, or a preset: `letsencrypt` or `letsencrypt-staging`.
    #[schemars(
        length(min = 1, max = 2048),
        regex(pattern = r"^(letsencrypt|letsencrypt-staging|https://[^\s]+)$")
    )]
    pub server: String,
    /// Contact email registered with the account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 3, max = 254), regex(pattern = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"))]
    pub email: Option<String>,
    /// Secret for the account key (key `tls.key`); generated when absent. Never logged.
    pub account_key_secret_ref: SecretRef,
    /// External Account Binding, for CAs that require one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eab: Option<ExternalAccountBinding>,
    /// Challenge solvers, tried in order for the names they cover.
    #[serde(default)]
    #[schemars(length(max = 16))]
    pub solvers: Vec<Solver>,
    /// Extra PEM roots to trust when talking to the ACME server (for private CAs and Pebble).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle_secret_ref: Option<SecretKeyRef>,
}

/// External Account Binding credentials.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExternalAccountBinding {
    /// Key ID given by the CA.
    #[schemars(length(min = 1, max = 256))]
    pub key_id: String,
    /// Secret key holding the base64url HMAC key.
    pub hmac_key_secret_ref: SecretKeyRef,
}

/// One way of proving control of names.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.http01) != has(self.dns01)").message("a solver has exactly one of http01 or dns01"))]
pub struct Solver {
    /// HTTP-01 challenge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http01: Option<Http01>,
    /// DNS-01 challenge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns01: Option<Dns01>,
}

/// HTTP-01: on Kubernetes through an Ingress rule to Nova, on hosts through the nginx webroot.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.ingress) != has(self.webroot)").message("http01 has exactly one of ingress or webroot"))]
pub struct Http01 {
    /// Answer through a temporary Ingress rule pointing at the operator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<Http01Ingress>,
    /// Write the token into the nginx webroot on the hosts serving the name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webroot: Option<Http01Webroot>,
}

/// HTTP-01 over an Ingress.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Http01Ingress {
    /// IngressClass for the temporary rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub class_name: Option<String>,
}

/// HTTP-01 over SSH into a webroot.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Http01Webroot {
    /// Webroot directory. Default `/var/lib/nova/acme`, where the site Nova renders for a
    /// Platform on hosts serves `/.well-known/acme-challenge/` from.
    #[serde(default = "default_webroot")]
    #[schemars(length(min = 1, max = 1024), regex(pattern = super::common::DIR_PATH))]
    pub path: String,
}

/// Where the nginx site Nova renders on hosts serves `/.well-known/acme-challenge/` from.
pub const DEFAULT_WEBROOT: &str = "/var/lib/nova/acme";

fn default_webroot() -> String {
    DEFAULT_WEBROOT.into()
}

/// DNS-01 through RFC 2136 dynamic updates.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Dns01 {
    /// RFC 2136 server.
    pub rfc2136: Rfc2136,
}

/// An RFC 2136 name server with TSIG.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Rfc2136 {
    /// `host:port` of the primary name server.
    #[schemars(length(min = 1, max = 260), regex(pattern = r"^[A-Za-z0-9.:\[\]-]+:[0-9]{1,5}$"))]
    pub nameserver: String,
    /// TSIG key name.
    #[schemars(length(min = 1, max = 253))]
    pub tsig_key_name: String,
    /// TSIG algorithm. Default hmac-sha256.
    #[serde(default)]
    pub tsig_algorithm: TsigAlgorithm,
    /// Secret key holding the base64 TSIG secret.
    pub tsig_secret_ref: SecretKeyRef,
}

/// TSIG algorithms.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum TsigAlgorithm {
    #[default]
    HmacSha256,
    HmacSha384,
    HmacSha512,
}

/// Observed state of an AcmeIssuer.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AcmeIssuerStatus {
    /// The generation last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Account URL at the ACME server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_uri: Option<String>,
    /// Ready.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Conditions,
}

/// A certificate for some DNS names, kept valid.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "nova.infra.dev",
    version = "v1alpha1",
    kind = "TlsCertificate",
    namespaced,
    status = "TlsCertificateStatus",
    shortname = "tlscert",
    category = "nova",
    doc = "An ACME certificate for some DNS names, stored in a Secret and renewed before it expires.",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(name = "Secret", type_ = "string", json_path = ".spec.secretName"),
    printcolumn(name = "NotAfter", type_ = "date", json_path = ".status.notAfter"),
    printcolumn(name = "RenewalTime", type_ = "date", json_path = ".status.renewalTime"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[x_kube(validation = Rule::new("!(has(self.renewBefore) && has(self.renewBeforePercentage))").message("give renewBefore or renewBeforePercentage, not both"))]
#[serde(rename_all = "camelCase")]
pub struct TlsCertificateSpec {
    /// Names on the certificate. `*.example.com` needs a DNS-01 solver.
    #[schemars(schema_with = "wildcard_domain_list")]
    pub dns_names: Vec<String>,
    /// The AcmeIssuer that issues it.
    pub issuer_ref: LocalRef,
    /// Secret (type kubernetes.io/tls) that receives tls.crt (full chain), tls.key and ca.crt.
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"))]
    pub secret_name: String,
    /// The private key.
    #[serde(default)]
    pub private_key: PrivateKey,
    /// Renew this long before expiry, as a Go duration (`720h`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32), regex(pattern = r"^([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+$"))]
    pub renew_before: Option<String>,
    /// Renew when this share of the lifetime is left. Default: renew at 2/3 of the lifetime.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 5, max = 95))]
    pub renew_before_percentage: Option<i32>,
    /// ACME certificate profile to request, when the server offers profiles.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64), regex(pattern = r"^[A-Za-z0-9._-]+$"))]
    pub profile: Option<String>,
    /// Also install the certificate on SSH hosts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distribute_to: Option<Distribution>,
}

/// Private-key settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.algorithm == 'RSA' ? self.size in [2048, 3072, 4096] : (self.algorithm == 'ECDSA' ? self.size in [256, 384] : true)").message("size must be 256 or 384 for ECDSA, 2048, 3072 or 4096 for RSA"))]
pub struct PrivateKey {
    /// ECDSA (default) or RSA.
    #[serde(default)]
    pub algorithm: KeyAlgorithm,
    /// Key size: 256 (default) or 384 for ECDSA; 2048, 3072 or 4096 for RSA.
    #[serde(default = "p256")]
    pub size: i32,
    /// Always (default): a new key at each renewal. Never: keep the key.
    #[serde(default)]
    pub rotation_policy: RotationPolicy,
}

impl Default for PrivateKey {
    fn default() -> Self {
        Self { algorithm: KeyAlgorithm::Ecdsa, size: 256, rotation_policy: RotationPolicy::Always }
    }
}

fn p256() -> i32 {
    256
}

/// Key algorithms.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum KeyAlgorithm {
    #[default]
    #[serde(rename = "ECDSA")]
    Ecdsa,
    #[serde(rename = "RSA")]
    Rsa,
}

/// Key rotation policies.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum RotationPolicy {
    #[default]
    Always,
    Never,
}

/// Where on SSH hosts the certificate goes.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Distribution {
    /// Which hosts.
    pub hosts: HostSelector,
    /// Path of the full chain, under `/etc/nova/tls/` (Nova's directory: a namespaced object
    /// writes nowhere else on a host). Default `/etc/nova/tls/<secretName>/tls.crt` (where a
    /// Platform on hosts with `tls.mode: Secret` reads it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024), regex(pattern = r"^/etc/nova/tls(/[A-Za-z0-9_@+-][A-Za-z0-9._@+-]*)+$"))]
    pub certificate_path: Option<String>,
    /// Path of the key (mode 0600), under `/etc/nova/tls/`. Default
    /// `/etc/nova/tls/<secretName>/tls.key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024), regex(pattern = r"^/etc/nova/tls(/[A-Za-z0-9_@+-][A-Za-z0-9._@+-]*)+$"))]
    pub key_path: Option<String>,
    /// Other paths to copy the chain to, under `/etc/nova/tls/`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "nova_tls_path_list")]
    pub extra_paths: Vec<String>,
    /// Reload after install; nginx is tested with `nginx -t` first. Default nginx.
    #[serde(default)]
    pub reload: Reload,
}

fn nova_tls_path_list(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "array",
        "maxItems": 64,
        "items": {"type": "string", "maxLength": 1024, "pattern": NOVA_TLS_PATH},
    })
}

/// A file under Nova's TLS directory on hosts; no component starts with a dot (no `..`).
pub const NOVA_TLS_PATH: &str = r"^/etc/nova/tls(/[A-Za-z0-9_@+-][A-Za-z0-9._@+-]*)+$";

/// What to reload after installing a certificate.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum Reload {
    #[default]
    #[serde(rename = "nginx")]
    Nginx,
    #[serde(rename = "none")]
    None,
}

/// Observed state of a TlsCertificate.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TlsCertificateStatus {
    /// The generation last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Start of validity of the current certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<Time>,
    /// End of validity of the current certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_after: Option<Time>,
    /// When Nova will renew it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renewal_time: Option<Time>,
    /// Serial number, hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial_number: Option<String>,
    /// Failed issuance attempts since the last success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_issuance_attempts: Option<i32>,
    /// When the last attempt failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure_time: Option<Time>,
    /// Ready and Issuing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Conditions,
}
