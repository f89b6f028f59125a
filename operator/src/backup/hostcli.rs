//! The host timer from the CLI: `nova backup install|uninstall` put a Backup's schedule on its
//! Host (`spec.runOn`) or take it away; `nova backup tick` is what that timer runs there.

use std::path::Path;

use chrono::{DateTime, Utc};
use kube::ResourceExt;
use serde_json::json;

use super::cli::{Error, Loaded, time_zone};
use super::engine::Job;
use super::schedule::{Decision, Schedule, decide};
use super::timer;
use crate::api::backup::{Backup, BackupSpec};
use crate::api::host::Host;
use crate::state::State;

/// The Secrets a Backup names, with the keys it reads from each.
pub fn secret_keys(s: &BackupSpec) -> Vec<(String, Vec<String>, &'static str)> {
    let mut out = Vec::new();
    if let Some(p) = &s.source.postgres {
        let r = &p.connection_secret_ref;
        out.push((r.name.clone(), vec![r.key.clone()], "spec.source.postgres.connectionSecretRef"));
    }
    if let Some(d) = &s.destination.s3 {
        let keys = vec!["accessKeyId".into(), "secretAccessKey".into()];
        out.push((d.credentials_secret_ref.name.clone(), keys, "spec.destination.s3.credentialsSecretRef"));
    }
    if let Some(e) = &s.encryption {
        let r = &e.recipients_secret_ref;
        out.push((r.name.clone(), vec![r.key.clone()], "spec.encryption.recipientsSecretRef"));
        if let Some(r) = &e.identity_secret_ref {
            out.push((r.name.clone(), vec![r.key.clone()], "spec.encryption.identitySecretRef"));
        }
    }
    if let Some(i) = &s.integrity {
        let r = &i.hmac_key_secret_ref;
        out.push((r.name.clone(), vec![r.key.clone()], "spec.integrity.hmacKeySecretRef"));
    }
    out
}

/// The timer's configuration: the Backup, its Host, and the Secrets' keys it reads (values
/// from `value(name, key, field)`), as YAML documents `nova backup tick -f` loads.
pub fn config(
    b: &Backup,
    host: Option<&Host>,
    mut value: impl FnMut(&str, &str, &str) -> Result<Vec<u8>, Error>,
) -> Result<String, Error> {
    use base64::Engine as _;
    let ns = b.namespace().unwrap_or_else(|| "default".into());
    let mut docs = vec![json!({"apiVersion": "nova.infra.dev/v1alpha1", "kind": "Backup",
                               "metadata": {"name": b.name_any(), "namespace": ns}, "spec": b.spec})];
    if let Some(h) = host {
        docs.push(json!({"apiVersion": "nova.infra.dev/v1alpha1", "kind": "Host",
                         "metadata": {"name": h.name_any()}, "spec": h.spec}));
    }
    // One document per Secret, with every key read from it (several fields may name one).
    let mut secrets: std::collections::BTreeMap<String, serde_json::Map<String, serde_json::Value>> =
        Default::default();
    for (name, keys, field) in secret_keys(&b.spec) {
        for k in keys {
            let v = value(&name, &k, field)?;
            let data = secrets.entry(name.clone()).or_default();
            data.insert(k, json!(base64::engine::general_purpose::STANDARD.encode(v)));
        }
    }
    for (name, data) in secrets {
        docs.push(json!({"apiVersion": "v1", "kind": "Secret",
                         "metadata": {"name": name, "namespace": ns}, "data": data}));
    }
    let text: Result<Vec<String>, _> = docs.iter().map(serde_yaml::to_string).collect();
    let text = text.map_err(|e| Error::Input(format!("writing the timer's configuration: {e}")))?;
    Ok(format!("# Managed by Nova (Backup spec.runOn): holds secrets, root only.\n{}", text.join("---\n")))
}

/// `nova backup install` (or with `remove`, `uninstall`) for Backup `b` from the files.
pub async fn install(
    loaded: &Loaded,
    b: &Backup,
    identity: &Path,
    state: &State,
    remove: bool,
) -> Result<String, Error> {
    let Some(run_on) = &b.spec.run_on else {
        return Err(Error::Input("spec.runOn: not set; give it a hostRef to schedule on that Host".into()));
    };
    let h = loaded.host(&run_on.host_ref.name, "spec.runOn.hostRef")?;
    timer::check(&b.spec, &h.name_any()).map_err(Error::Input)?;
    let ns = b.namespace().unwrap_or_else(|| "default".into());
    let id = timer::id(&ns, &b.name_any()).map_err(|e| Error::Input(e.to_string()))?;
    let conn = crate::host::cli::connect(h, identity, state).await?;
    let unit = timer::unit(&id);
    if remove {
        timer::remove(&conn, &id).await.map_err(|e| Error::Input(e.to_string()))?;
        return Ok(format!("removed {unit}.timer from host {}", h.name_any()));
    }
    let cfg = config(b, Some(h), |name, key, field| loaded.secret(&ns, name, key, field))?;
    let bin = std::env::current_exe().map_err(|e| Error::Input(format!("Nova's own binary: {e}")))?;
    timer::install(&conn, &id, &b.name_any(), &h.name_any(), &cfg, &bin)
        .await
        .map_err(|e| Error::Input(e.to_string()))?;
    state
        .audit("Backup", &ns, &b.name_any(), "install", &format!("{unit}.timer on {}", h.name_any()))
        .await?;
    Ok(format!("installed {unit}.timer on host {} (schedule {:?})", h.name_any(), b.spec.schedule))
}

fn read_time(path: &Path) -> Option<DateTime<Utc>> {
    let text = std::fs::read_to_string(path).ok()?;
    DateTime::parse_from_rfc3339(text.trim()).ok().map(|d| d.to_utc())
}

/// One tick of the timer: the schedule decides (as the operator's does); a due slot is
/// claimed in `<slots>/<id>.last` before the cycle runs, so it never runs twice.
pub async fn tick(b: &Backup, job: &Job, state: &State, slots: &Path) -> Result<String, Error> {
    let ns = b.namespace().unwrap_or_else(|| "default".into());
    let id = timer::id(&ns, &b.name_any()).map_err(|e| Error::Input(e.to_string()))?;
    let s = &b.spec;
    let schedule = Schedule::parse(&s.schedule, s.time_zone.as_deref()).map_err(Error::Input)?;
    let now = Utc::now();
    let last_file = slots.join(format!("{id}.last"));
    let since = read_time(&slots.join(format!("{id}.since"))).unwrap_or(now);
    let deadline = s.starting_deadline_seconds.map(chrono::Duration::seconds);
    let claim = |slot: DateTime<Utc>| {
        std::fs::write(&last_file, format!("{}\n", slot.to_rfc3339()))
            .map_err(|e| Error::Input(format!("{}: {e}", last_file.display())))
    };
    match decide(&schedule, now, read_time(&last_file), since, s.suspend, deadline) {
        Decision::Run { slot } => {
            claim(slot)?;
            let out = super::cycle::cycle(b, job, state, time_zone(b)?).await?;
            Ok(format!("slot {}: {}", slot.to_rfc3339(), out.lines().join("; ")))
        }
        Decision::Skip { slot, .. } => {
            claim(slot)?;
            Ok(format!("slot {} skipped: older than spec.startingDeadlineSeconds", slot.to_rfc3339()))
        }
        Decision::Wait { next } => {
            Ok(format!("nothing due; next {}", next.map(|t| t.to_rfc3339()).unwrap_or_default()))
        }
        Decision::Suspended => Ok("suspended (spec.suspend)".into()),
    }
}
