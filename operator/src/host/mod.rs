//! Hosts: what Nova does on a machine (facts, bootstrap steps — packages, users, sshd, firewall,
//! fail2ban, unattended upgrades, node_exporter, Docker, the monitoring stack), usable with or without a cluster, and
//! the Host controller (`controller`) that runs it from the cluster.

pub mod bootstrap;
pub mod cli;
pub mod controller;
pub mod facts;
pub mod monitoring;
pub mod services;

use std::sync::Arc;
use std::time::Duration;

use crate::api::host::{Host, HostKeyPolicy};
use crate::ssh;

/// Where and how to reach `h`: its address, the key to log in with, and the server key to
/// accept (pinned, or under AcceptNew the one `recorded` earlier).
pub fn target(
    h: &Host,
    key: russh::keys::PrivateKey,
    recorded: Option<String>,
) -> Result<ssh::Target, String> {
    let policy = match h.spec.host_key_policy {
        HostKeyPolicy::Pinned => match &h.spec.host_key {
            Some(k) => ssh::HostKeyPolicy::Pinned(k.clone()),
            None => return Err("spec.hostKey is required with hostKeyPolicy Pinned (the default)".into()),
        },
        HostKeyPolicy::AcceptNew => {
            ssh::HostKeyPolicy::AcceptNew(recorded.or_else(|| h.spec.host_key.clone()))
        }
    };
    Ok(ssh::Target {
        address: h.spec.address.clone(),
        port: u16::try_from(h.spec.port)
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("spec.port {} is not a port (1-65535)", h.spec.port))?,
        user: h.spec.user.clone(),
        key: Arc::new(key),
        host_key: policy,
        connect_timeout: Duration::from_secs(15),
    })
}
