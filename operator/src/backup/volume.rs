//! Backups that touch a PersistentVolumeClaim (`source.volume`, `destination.pvc`): the
//! operator cannot open a volume, so each run is a Job in the Backup's namespace running
//! `nova backup run` in Nova's own image with the claim mounted — the same engine, the same
//! artifacts. What the run needs (the Backup and the Secret keys it reads) is a Secret owned
//! by the Backup, mounted read-only; the outcome comes back in the container's termination
//! message. Pure: the Job and the Secret from the Backup.

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Secret;
use kube::{Resource, ResourceExt};
use serde_json::json;

use crate::api::backup::{Backup, BackupSpec};

/// Where the source claim is mounted (read-only) in the Job's pod.
pub const SOURCE_AT: &str = "/data";
/// Where the destination claim is mounted.
pub const DEST_AT: &str = "/backups";
const CONFIG_AT: &str = "/etc/nova/backup";
/// Label on the Jobs (and their config Secret) of a Backup.
pub const BACKUP_LABEL: &str = "nova.infra.dev/backup";

/// Whether runs of `spec` must happen in a Job.
pub fn needs_job(spec: &BackupSpec) -> bool {
    spec.source.volume.is_some() || spec.destination.pvc.is_some()
}

/// What a Job can reach: claims, S3, a database by URL; not a Host over SSH (the pod holds no
/// SSH key). The error names the field.
pub fn check(spec: &BackupSpec) -> Result<(), String> {
    if spec.run_on.is_some() {
        return Err("spec.runOn: a Backup of a PersistentVolumeClaim runs in a Job, not on a Host".into());
    }
    let s = &spec.source;
    if s.files.is_some() {
        return Err(
            "spec.source.files: a Job cannot reach a Host; back files up with a Host destination or the CLI"
                .into(),
        );
    }
    if s.postgres.as_ref().is_some_and(|p| p.host_ref.is_some()) {
        return Err(
            "spec.source.postgres.hostRef: a Job cannot reach a Host; give a URL the pod reaches".into()
        );
    }
    if spec.destination.host_path.is_some() {
        return Err(
            "spec.destination.hostPath: a Job cannot reach a Host; use s3 or pvc with a volume source".into(),
        );
    }
    Ok(())
}

/// The Job's name for the run of `slot` (Unix seconds): `<backup>-<slot in base 36>`, cut so
/// the Job controller's labels (63 characters) hold it.
pub fn job_name(backup: &str, slot: i64) -> String {
    let mut n = slot.max(0) as u64;
    let mut digits = Vec::new();
    loop {
        digits.push(b"0123456789abcdefghijklmnopqrstuvwxyz"[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    digits.reverse();
    let suffix = String::from_utf8(digits).unwrap_or_default();
    let base: String = backup.chars().take(62 - suffix.len()).collect();
    format!("{}-{suffix}", base.trim_end_matches('-'))
}

pub fn config_name(backup: &str) -> String {
    format!("{}-nova-backup", backup.chars().take(240).collect::<String>())
}

fn owner(b: &Backup) -> serde_json::Value {
    json!(b.controller_owner_ref(&()).map(|o| vec![o]).unwrap_or_default())
}

/// The Secret holding the run's configuration (see `hostcli::config`).
pub fn config_secret(b: &Backup, config: &str) -> Secret {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": config_name(&b.name_any()), "namespace": b.namespace(),
                     "labels": {BACKUP_LABEL: b.name_any()}, "ownerReferences": owner(b)},
        "stringData": {"backup.yaml": config},
    }))
    .unwrap_or_default()
}

/// What a Job runs: `nova backup <verb> <extra>` with the Backup's claims mounted (the source
/// claim — or a Restore's target claim — read-only unless `source_writable`).
#[derive(Clone, Debug, PartialEq)]
pub struct Run {
    pub verb: &'static str,
    pub extra: Vec<String>,
    pub source_claim: Option<String>,
    pub source_writable: bool,
}

impl Run {
    /// A scheduled (or requested) backup cycle.
    pub fn backup(spec: &BackupSpec) -> Self {
        let source_claim = spec.source.volume.as_ref().map(|v| v.pvc.clone());
        Self { verb: "run", extra: Vec::new(), source_claim, source_writable: false }
    }

    /// A restore drill of the newest artifact (`spec.verify.schedule`).
    pub fn verify(spec: &BackupSpec) -> Self {
        Self { verb: "verify", ..Self::backup(spec) }
    }

    /// A Restore: artifact `id` (the newest verified when None) into `claim`, below
    /// `directory` of it (the archive holds `data/...`: the original places when None, which
    /// needs `overwrite`).
    pub fn restore(
        id: Option<&str>,
        claim: &str,
        directory: Option<&str>,
        overwrite: bool,
    ) -> Result<Self, String> {
        let mut extra = Vec::new();
        if let Some(id) = id {
            extra.extend(["--id".into(), id.to_owned()]);
        }
        let dir = match directory.map(|d| d.trim_matches('/')).filter(|d| !d.is_empty()) {
            Some(d) => {
                super::paths::check_abs(&format!("/{d}"), "spec.directory")?;
                format!("{SOURCE_AT}/{d}")
            }
            None if overwrite => "/".into(),
            None => {
                return Err("spec.directory: restoring a claim's files over their originals (no directory) needs spec.overwrite: true".into());
            }
        };
        extra.extend(["--dir".into(), dir]);
        if overwrite {
            extra.push("--overwrite".into());
        }
        Ok(Self { verb: "restore", extra, source_claim: Some(claim.to_owned()), source_writable: true })
    }
}

/// The Job `name` for `run`: one pod, never retried (the next slot runs again, as the
/// operator's own runs), gone an hour after it finished. Root without capabilities but
/// DAC_READ_SEARCH (read every file of the claim; DAC_OVERRIDE and CHOWN/FOWNER too when it
/// writes to one), a read-only root file system, no service-account token.
pub fn job(b: &Backup, name: &str, image: &str, run: &Run) -> Job {
    let spec = &b.spec;
    let mut args =
        vec!["backup".to_owned(), run.verb.into(), "-f".into(), format!("{CONFIG_AT}/backup.yaml")];
    args.extend(["--state".into(), "/tmp/state.db".into(), "--report".into(), "/dev/termination-log".into()]);
    let mut mounts = vec![
        json!({"name": "config", "mountPath": CONFIG_AT, "readOnly": true}),
        json!({"name": "tmp", "mountPath": "/tmp"}),
    ];
    let mut volumes = vec![
        json!({"name": "config", "secret": {"secretName": config_name(&b.name_any()), "defaultMode": 0o400}}),
        json!({"name": "tmp", "emptyDir": {}}),
    ];
    let mut caps = vec!["DAC_READ_SEARCH"];
    if let Some(claim) = &run.source_claim {
        args.extend(["--volume-at".into(), SOURCE_AT.into()]);
        let ro = !run.source_writable;
        mounts.push(json!({"name": "source", "mountPath": SOURCE_AT, "readOnly": ro}));
        volumes
            .push(json!({"name": "source", "persistentVolumeClaim": {"claimName": claim, "readOnly": ro}}));
    }
    if let Some(d) = &spec.destination.pvc {
        args.extend(["--local-dir".into(), DEST_AT.into()]);
        mounts.push(json!({"name": "destination", "mountPath": DEST_AT}));
        volumes.push(json!({"name": "destination", "persistentVolumeClaim": {"claimName": d.pvc}}));
    }
    if spec.destination.pvc.is_some() || run.source_writable {
        caps.push("DAC_OVERRIDE");
    }
    if run.source_writable {
        // Restored files get their owners and modes back.
        caps.extend(["CHOWN", "FOWNER"]);
    }
    args.extend(run.extra.iter().cloned());
    serde_json::from_value(json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name, "namespace": b.namespace(),
                     "labels": {BACKUP_LABEL: b.name_any()}, "ownerReferences": owner(b)},
        "spec": {
            "backoffLimit": 0,
            "ttlSecondsAfterFinished": 3600,
            "template": {
                "metadata": {"labels": {BACKUP_LABEL: b.name_any()}},
                "spec": {
                    "restartPolicy": "Never",
                    "automountServiceAccountToken": false,
                    "containers": [{
                        "name": "backup", "image": image, "args": args,
                        "volumeMounts": mounts,
                        "terminationMessagePolicy": "FallbackToLogsOnError",
                        "securityContext": {
                            "runAsUser": 0, "runAsNonRoot": false, "readOnlyRootFilesystem": true,
                            "allowPrivilegeEscalation": false,
                            "capabilities": {"drop": ["ALL"], "add": caps},
                        },
                    }],
                    "volumes": volumes,
                },
            },
        },
    }))
    .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backup(dest: serde_json::Value) -> Backup {
        serde_json::from_value(json!({
            "apiVersion": "nova.infra.dev/v1alpha1", "kind": "Backup",
            "metadata": {"name": "data", "namespace": "shop", "uid": "u-1"},
            "spec": {"schedule": "@daily", "source": {"volume": {"pvc": "shop-data"}}, "destination": dest},
        }))
        .unwrap()
    }

    #[test]
    fn the_job_mounts_the_claim_read_only_and_runs_the_engine_with_one_capability() {
        let b = backup(json!({"s3": {"bucket": "bk", "credentialsSecretRef": {"name": "s3"}}}));
        let j =
            serde_json::to_value(job(&b, &job_name("data", 1_764_000_000), "nova:1", &Run::backup(&b.spec)))
                .unwrap();
        assert_eq!(j["metadata"]["name"], "data-t68n40");
        assert_eq!(j["metadata"]["ownerReferences"][0]["name"], "data");
        let pod = &j["spec"]["template"]["spec"];
        let c = &pod["containers"][0];
        let args: Vec<&str> = c["args"].as_array().unwrap().iter().filter_map(|a| a.as_str()).collect();
        assert_eq!(
            args,
            [
                "backup",
                "run",
                "-f",
                "/etc/nova/backup/backup.yaml",
                "--state",
                "/tmp/state.db",
                "--report",
                "/dev/termination-log",
                "--volume-at",
                "/data"
            ]
        );
        assert_eq!(
            c["securityContext"]["capabilities"],
            json!({"drop": ["ALL"], "add": ["DAC_READ_SEARCH"]})
        );
        assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
        let source = pod["volumes"].as_array().unwrap().iter().find(|v| v["name"] == "source").unwrap();
        assert_eq!(source["persistentVolumeClaim"], json!({"claimName": "shop-data", "readOnly": true}));
        assert_eq!(j["spec"]["backoffLimit"], 0);
    }

    #[test]
    fn a_claim_destination_is_written_through_local_dir_and_hosts_are_refused() {
        let b = backup(json!({"pvc": {"pvc": "vault"}}));
        let j = serde_json::to_value(job(&b, "x", "nova:1", &Run::backup(&b.spec))).unwrap();
        let c = &j["spec"]["template"]["spec"]["containers"][0];
        assert!(
            c["args"].as_array().unwrap().windows(2).any(|w| w == [json!("--local-dir"), json!("/backups")])
        );
        assert!(
            c["securityContext"]["capabilities"]["add"].as_array().unwrap().contains(&json!("DAC_OVERRIDE"))
        );
        let mut spec = b.spec.clone();
        assert_eq!(check(&spec), Ok(()));
        spec.destination =
            serde_json::from_value(json!({"hostPath": {"hostRef": {"name": "h"}, "path": "/b"}})).unwrap();
        assert!(check(&spec).unwrap_err().starts_with("spec.destination.hostPath"));
        assert!(job_name(&"x".repeat(80), 0).len() <= 63);
    }

    #[test]
    fn a_restore_writes_into_its_claim_below_a_directory_or_over_the_originals_when_asked() {
        let r = Run::restore(Some("20261130T030000Z-abc123"), "other", Some("restored"), false).unwrap();
        assert_eq!(r.extra, ["--id", "20261130T030000Z-abc123", "--dir", "/data/restored"]);
        assert!(r.source_writable);
        let b = backup(json!({"s3": {"bucket": "bk", "credentialsSecretRef": {"name": "s3"}}}));
        let j = serde_json::to_value(job(&b, "r", "nova:1", &r)).unwrap();
        let pod = &j["spec"]["template"]["spec"];
        let claim = pod["volumes"].as_array().unwrap().iter().find(|v| v["name"] == "source").unwrap();
        assert_eq!(claim["persistentVolumeClaim"], json!({"claimName": "other", "readOnly": false}));
        let e = Run::restore(None, "c", None, false).unwrap_err();
        assert!(e.starts_with("spec.directory:") && e.contains("spec.overwrite"), "{e}");
        assert_eq!(Run::restore(None, "c", None, true).unwrap().extra, ["--dir", "/", "--overwrite"]);
        assert!(Run::restore(None, "c", Some("../etc"), false).is_err());
    }
}
