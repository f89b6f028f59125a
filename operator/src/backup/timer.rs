//! A Backup's schedule on its Host (`spec.runOn`): Nova's own binary, the Backup with the
//! Secrets it names in a root-only file, and a systemd timer that asks every minute whether a
//! slot is due (`nova backup tick`, the same pure schedule as the operator's, so cron, time
//! zone, suspend and the starting deadline mean the same; `Persistent=` catches up once after
//! the host was off). A oneshot service never runs twice at once.

use std::path::Path;
use std::time::Duration;

use crate::api::backup::BackupSpec;
use crate::ssh::{Connection, quote};

/// Nova's binary on a host.
pub const BIN: &str = crate::ssh::binary::BIN;
/// Configuration files (the Backup and its Secrets), mode 0600.
pub const CONFIG_DIR: &str = "/etc/nova/backups";
/// The timer's state: the last slot run (`<id>.last`), when it was installed (`<id>.since`),
/// the audit database.
pub const STATE_DIR: &str = "/var/lib/nova/backups";

#[derive(Debug, thiserror::Error)]
pub enum TimerError {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Ssh(#[from] crate::ssh::Error),
    #[error(transparent)]
    Binary(#[from] crate::ssh::binary::BinaryError),
}

/// `<namespace>--<name>`, the name of everything the timer has on the host.
pub fn id(ns: &str, name: &str) -> Result<String, TimerError> {
    if !name_ok(ns) || !name_ok(name) {
        return Err(TimerError::Invalid(format!("{ns}/{name} is not a Kubernetes name")));
    }
    Ok(format!("{ns}--{name}"))
}

/// Whether a timer on `host` can run a Backup of `spec`: what it reads and where it writes
/// must be on that host (or reached by URL: PostgreSQL without `hostRef`, S3). The error names
/// the field.
pub fn check(spec: &BackupSpec, host: &str) -> Result<(), String> {
    let other = |field: &str, name: &str| {
        Err(format!(
            "{field}: Host {name:?} is not spec.runOn.hostRef {host:?}: a host's timer reaches only its own host"
        ))
    };
    let src = &spec.source;
    if let Some(r) = src.postgres.as_ref().and_then(|p| p.host_ref.as_ref()).filter(|r| r.name != host) {
        return other("spec.source.postgres.hostRef", &r.name);
    }
    if let Some(f) = src.files.as_ref().filter(|f| f.host_ref.name != host) {
        return other("spec.source.files.hostRef", &f.host_ref.name);
    }
    if src.volume.is_some() {
        return Err("spec.source.volume: a PVC is not on a host; spec.runOn needs postgres or files".into());
    }
    if let Some(d) = spec.destination.host_path.as_ref().filter(|d| d.host_ref.name != host) {
        return other("spec.destination.hostPath.hostRef", &d.host_ref.name);
    }
    if spec.destination.pvc.is_some() {
        return Err("spec.destination.pvc: a PVC is not on a host; spec.runOn needs s3 or hostPath".into());
    }
    if !name_ok(host) {
        return Err(format!("spec.runOn.hostRef: {host:?} is not a Host name"));
    }
    Ok(())
}

fn name_ok(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-.".contains(&b))
}

pub fn unit(id: &str) -> String {
    format!("nova-backup-{id}")
}

pub fn config_path(id: &str) -> String {
    format!("{CONFIG_DIR}/{id}.yaml")
}

/// The oneshot service: one tick of the schedule for the Backup in the configuration.
pub fn service(id: &str, name: &str, host: &str) -> String {
    format!(
        "# Managed by Nova (Backup spec.runOn).\n[Unit]\nDescription=Nova backup {id}\nWants=network-online.target\nAfter=network-online.target\n\n\
         [Service]\nType=oneshot\nExecStart={BIN} backup tick -f {cfg} --backup {name} --on-host {host} --state {STATE_DIR}/state.db --slots {STATE_DIR}\n\
         Nice=10\nIOSchedulingClass=idle\n",
        cfg = config_path(id),
    )
}

/// Every minute; a minute missed while the host was off runs at boot (the tick then decides).
pub fn timer(id: &str) -> String {
    format!(
        "# Managed by Nova (Backup spec.runOn).\n[Unit]\nDescription=Nova backup {id}: its schedule\n\n\
         [Timer]\nOnCalendar=minutely\nAccuracySec=1s\nPersistent=true\n\n[Install]\nWantedBy=timers.target\n"
    )
}

/// Installs (or brings up to date) the timer of Backup `name` (id `id`) on `host`:
/// the binary, the configuration `config` (YAML with its Secrets, 0600), the units, enabled.
pub async fn install(
    conn: &Connection,
    id: &str,
    name: &str,
    host: &str,
    config: &str,
    binary: &Path,
) -> Result<(), TimerError> {
    let t = Duration::from_secs(60);
    crate::ssh::binary::ensure(conn, binary, "spec.runOn.hostRef").await?;
    conn.upload(&config_path(id), config.as_bytes(), 0o600, Some("root"), t).await?;
    let u = unit(id);
    conn.upload(
        &format!("/etc/systemd/system/{u}.service"),
        service(id, name, host).as_bytes(),
        0o644,
        None,
        t,
    )
    .await?;
    conn.upload(&format!("/etc/systemd/system/{u}.timer"), timer(id).as_bytes(), 0o644, None, t).await?;
    let since = quote(&format!("{STATE_DIR}/{id}.since"));
    let cmd = format!(
        "set -e; install -d -m 0700 {s}; [ -s {since} ] || date -u +%Y-%m-%dT%H:%M:%SZ > {since}; \
         systemctl daemon-reload; systemctl enable -q --now {t}",
        s = quote(STATE_DIR),
        t = quote(&format!("{u}.timer")),
    );
    conn.run(&cmd, t).await?;
    Ok(())
}

/// Removes the timer of `id` and its files; the binary too when no other Backup's timer is
/// left on the host. Idempotent.
pub async fn remove(conn: &Connection, id: &str) -> Result<(), TimerError> {
    let u = unit(id);
    let cmd = format!(
        "systemctl disable -q --now {t} 2>/dev/null || true; systemctl stop {s} 2>/dev/null || true; \
         rm -f /etc/systemd/system/{t} /etc/systemd/system/{s} {cfg} {st}/{id}.last {st}/{id}.since; \
         systemctl daemon-reload; ls /etc/systemd/system/nova-backup-*.timer >/dev/null 2>&1 || rm -f {b}",
        t = quote(&format!("{u}.timer")),
        s = quote(&format!("{u}.service")),
        cfg = quote(&config_path(id)),
        st = quote(STATE_DIR),
        id = quote(id),
        b = quote(BIN),
    );
    conn.run(&cmd, Duration::from_secs(120)).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_name_the_backup_and_only_checked_values() {
        let id = id("shop", "db").unwrap();
        assert_eq!(unit(&id), "nova-backup-shop--db");
        let s = service(&id, "db", "vps-1");
        assert!(s.contains(
            "ExecStart=/usr/local/lib/nova/nova backup tick -f /etc/nova/backups/shop--db.yaml --backup db --on-host vps-1"
        ));
        assert!(timer(&id).contains("OnCalendar=minutely") && timer(&id).contains("Persistent=true"));
        assert!(super::id("shop", "db; rm -rf /").is_err());
        assert!(super::id("Shop", "db").is_err());
    }

    /// JSON merge patch: a null removes the key.
    fn merge(t: &mut serde_json::Value, p: serde_json::Value) {
        match (t, p) {
            (serde_json::Value::Object(t), serde_json::Value::Object(p)) => {
                for (k, v) in p {
                    if v.is_null() {
                        t.remove(&k);
                    } else {
                        merge(t.entry(k).or_insert(serde_json::Value::Null), v);
                    }
                }
            }
            (t, p) => *t = p,
        }
    }

    #[test]
    fn a_timer_reaches_only_its_own_host() {
        let spec = |v: serde_json::Value| -> BackupSpec {
            let mut base = serde_json::json!({"schedule": "@daily",
                "source": {"files": {"hostRef": {"name": "vps-1"}, "paths": ["/srv"]}},
                "destination": {"hostPath": {"hostRef": {"name": "vps-1"}, "path": "/var/backups"}}});
            merge(&mut base, v);
            serde_json::from_value(base).unwrap()
        };
        assert_eq!(check(&spec(serde_json::json!({})), "vps-1"), Ok(()));
        let e = check(&spec(serde_json::json!({})), "vps-2").unwrap_err();
        assert!(e.starts_with("spec.source.files.hostRef: Host \"vps-1\""), "{e}");
        let s3 = serde_json::json!({"destination": {"hostPath": null, "s3": {"bucket": "b", "credentialsSecretRef": {"name": "c"}}}});
        let e = check(&spec(s3.clone()), "vps-2").unwrap_err();
        assert!(e.starts_with("spec.source.files.hostRef"), "{e}");
        assert_eq!(check(&spec(s3), "vps-1"), Ok(()));
        let dest = serde_json::json!({"destination": {"hostPath": {"hostRef": {"name": "nas"}}}});
        let e = check(&spec(dest), "vps-1").unwrap_err();
        assert!(e.starts_with("spec.destination.hostPath.hostRef"), "{e}");
    }
}
