//! AlertRule: Prometheus alerting rules and Alertmanager routing that provably load and deliver.
//!
//! The core is Kubernetes-free and pure: [`packs`] (the built-in rule packs, tested by the real
//! `promtool test rules`), [`validate`] (every expression parsed, names checked, before anything
//! is applied), [`rules`] (the rule file every target gets), [`loaded`] (Prometheus's rules API
//! read back into status) and [`routing`] (one Alertmanager configuration from many objects).
//! The controller ([`controller`]) observes, decides with these, applies, and writes status.

pub mod batch;
pub mod cli;
pub mod controller;
pub mod hostctl;
pub mod hosts;
pub mod loaded;
pub mod loading;
pub mod memo;
pub mod observe;
pub mod onhost;
pub mod packs;
pub mod prom;
pub mod routing;
pub mod rules;
pub mod selection;
pub mod targets;
pub mod validate;

/// The label Nova puts on every rule it renders: `<namespace>/<name>` of the AlertRule, so its
/// rules are found in Prometheus's answer whatever file they were loaded from, and its alerts
/// are routed to its own receivers.
pub const OWNER_LABEL: &str = "nova_alertrule";

/// `<namespace>/<name>`: the value of [`OWNER_LABEL`].
pub fn owner_key(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}
