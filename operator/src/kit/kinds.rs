//! The kinds Nova reconciles, as the kit sees them: a name for labels and where their status
//! keeps conditions and the observed generation.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::runtime::events::EventType;

use crate::api::{
    AcmeIssuer, AlertRule, Backup, BlueGreenDeployment, Host, Platform, Restore, TlsCertificate, TrainingJob,
};
use crate::conditions::{Cond, CondType};

pub trait Reconciled:
    kube::Resource<DynamicType = ()>
    + Clone
    + serde::Serialize
    + serde::de::DeserializeOwned
    + std::fmt::Debug
    + Send
    + Sync
    + 'static
{
    const KIND: &'static str;
    /// The `action` of this kind's events.
    const ACTION: &'static str;
    type Status: Clone + Default + PartialEq + serde::Serialize + std::fmt::Debug + Send + Sync + 'static;

    /// The API of this kind for `obj`'s namespace (or cluster-wide).
    fn api_for(&self, client: kube::Client) -> kube::Api<Self>;
    fn status(&self) -> Option<&Self::Status>;
    fn conditions(s: &Self::Status) -> &Vec<Condition>;
    fn conditions_mut(s: &mut Self::Status) -> &mut Vec<Condition>;
    fn observed_generation_mut(s: &mut Self::Status) -> &mut Option<i64>;

    /// Which condition changes are worth an event (`was`: the condition's status before).
    /// Kinds whose decisions emit their own events narrow this.
    fn condition_event(c: &Cond, was: Option<bool>) -> Option<EventType> {
        default_event(c, was)
    }
}

/// Ready becoming True is news; Ready lost, or Degraded / Stalled raised, is a warning.
pub fn default_event(c: &Cond, was: Option<bool>) -> Option<EventType> {
    match (c.type_, c.status) {
        (CondType::Ready, true) if was != Some(true) => Some(EventType::Normal),
        (CondType::Ready, false) if was == Some(true) => Some(EventType::Warning),
        (CondType::Degraded | CondType::Stalled, true) if was != Some(true) => Some(EventType::Warning),
        _ => None,
    }
}

macro_rules! reconciled {
    (@api namespaced, $obj:expr, $client:expr) => {
        kube::Api::namespaced($client, &kube::ResourceExt::namespace($obj).unwrap_or_default())
    };
    (@api cluster, $obj:expr, $client:expr) => {
        kube::Api::all($client)
    };
    ($scope:ident, $kind:ty, $status:ty, $name:literal, $action:literal) => {
        reconciled!($scope, $kind, $status, $name, $action, default_event);
    };
    ($scope:ident, $kind:ty, $status:ty, $name:literal, $action:literal, $event:path) => {
        impl Reconciled for $kind {
            const KIND: &'static str = $name;
            const ACTION: &'static str = $action;
            type Status = $status;

            fn api_for(&self, client: kube::Client) -> kube::Api<Self> {
                reconciled!(@api $scope, self, client)
            }
            fn status(&self) -> Option<&Self::Status> {
                self.status.as_ref()
            }
            fn conditions(s: &Self::Status) -> &Vec<Condition> {
                &s.conditions
            }
            fn conditions_mut(s: &mut Self::Status) -> &mut Vec<Condition> {
                &mut s.conditions
            }
            fn observed_generation_mut(s: &mut Self::Status) -> &mut Option<i64> {
                &mut s.observed_generation
            }
            fn condition_event(c: &Cond, was: Option<bool>) -> Option<EventType> {
                $event(c, was)
            }
        }
    };
}

/// The rollout's plan emits its own events; only a stall is the writer's to announce.
fn rollout_event(c: &Cond, was: Option<bool>) -> Option<EventType> {
    (c.type_ == CondType::Stalled && c.status && was != Some(true)).then_some(EventType::Warning)
}

/// A Host becoming reachable is news too.
fn host_event(c: &Cond, was: Option<bool>) -> Option<EventType> {
    match (c.type_, c.status) {
        (CondType::Reachable, true) if was != Some(true) => Some(EventType::Normal),
        (CondType::Reachable, _) => None,
        _ => default_event(c, was),
    }
}

reconciled!(namespaced, Platform, crate::api::platform::PlatformStatus, "Platform", "Reconcile");
reconciled!(
    namespaced,
    BlueGreenDeployment,
    crate::api::bluegreen::BlueGreenDeploymentStatus,
    "BlueGreenDeployment",
    "Rollout",
    rollout_event
);
reconciled!(cluster, Host, crate::api::host::HostStatus, "Host", "Connect", host_event);
reconciled!(cluster, AcmeIssuer, crate::api::tls::AcmeIssuerStatus, "AcmeIssuer", "Register");
reconciled!(namespaced, TlsCertificate, crate::api::tls::TlsCertificateStatus, "TlsCertificate", "Issue");
/// A missed recovery objective is a warning too.
fn backup_event(c: &Cond, was: Option<bool>) -> Option<EventType> {
    match (c.type_, c.status) {
        (CondType::ObjectivesMet, false) if was != Some(false) => Some(EventType::Warning),
        (CondType::ObjectivesMet, _) => None,
        _ => default_event(c, was),
    }
}

reconciled!(namespaced, Backup, crate::api::backup::BackupStatus, "Backup", "Backup", backup_event);
reconciled!(namespaced, Restore, crate::api::backup::RestoreStatus, "Restore", "Restore");
/// A rule reading metrics that have no series is a warning too.
fn alert_event(c: &Cond, was: Option<bool>) -> Option<EventType> {
    match (c.type_, c.status) {
        (CondType::MetricsPresent | CondType::Selected, false) if was != Some(false) => {
            Some(EventType::Warning)
        }
        (CondType::MetricsPresent | CondType::Selected, _) => None,
        _ => default_event(c, was),
    }
}

reconciled!(namespaced, AlertRule, crate::api::alert::AlertRuleStatus, "AlertRule", "Load", alert_event);
reconciled!(namespaced, TrainingJob, crate::api::training::TrainingJobStatus, "TrainingJob", "Reconcile");
