//! The Nova API: every kind of `nova.infra.dev/v1alpha1`.
//!
//! Types only; behaviour lives with each kind's controller. Doc comments become the
//! `kubectl explain` text, so they are written for users.

// Several `printcolumn(...)` entries repeat `type_ = "string"`; clippy reads them as duplicated
// attributes, but each belongs to a different column.
#![allow(clippy::duplicated_attributes)]

pub mod alert;
pub mod backup;
pub mod bluegreen;
pub mod common;
pub mod host;
pub mod platform;
pub mod tls;
pub mod training;

pub use alert::AlertRule;
pub use backup::{Backup, Restore};
pub use bluegreen::BlueGreenDeployment;
pub use host::Host;
pub use platform::Platform;
pub use tls::{AcmeIssuer, TlsCertificate};
pub use training::TrainingJob;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

/// Every CRD Nova defines, in a stable order.
pub fn crds() -> Vec<CustomResourceDefinition> {
    KINDS.iter().filter_map(|k| crd_of(k)).collect()
}

/// Nova's kinds, in the order their CRDs are generated.
pub const KINDS: [&str; 9] = [
    "Platform",
    "BlueGreenDeployment",
    "Host",
    "AcmeIssuer",
    "TlsCertificate",
    "Backup",
    "Restore",
    "AlertRule",
    "TrainingJob",
];

/// The CRD of one kind alone (generating a schema costs milliseconds: the CLI checks one kind
/// at a time and should not pay for all nine).
pub fn crd_of(kind: &str) -> Option<CustomResourceDefinition> {
    let mut crd = match kind {
        "Platform" => Platform::crd(),
        "BlueGreenDeployment" => BlueGreenDeployment::crd(),
        "Host" => Host::crd(),
        "AcmeIssuer" => AcmeIssuer::crd(),
        "TlsCertificate" => TlsCertificate::crd(),
        "Backup" => Backup::crd(),
        "Restore" => Restore::crd(),
        "AlertRule" => AlertRule::crd(),
        "TrainingJob" => TrainingJob::crd(),
        _ => return None,
    };
    default_status(&mut crd);
    Some(crd)
}

/// `status` defaults to `{observedGeneration: 0}`: the apiserver fills it in when it reads an
/// object no controller has written yet, so kstatus (Flux, `kubectl wait`, cli-utils) sees
/// generation 1 not yet observed and says InProgress instead of Current — an object nobody
/// reconciled never looks healthy (docs/gitops.md).
fn default_status(crd: &mut CustomResourceDefinition) {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSON;
    for v in &mut crd.spec.versions {
        let status = v
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
            .and_then(|s| s.properties.as_mut())
            .and_then(|p| p.get_mut("status"));
        if let Some(status) = status {
            status.default = Some(JSON(serde_json::json!({"observedGeneration": 0})));
        }
    }
}
