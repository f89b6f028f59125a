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

/// The Job of the run named `name`: one pod, never retried (the next slot runs again, as the
/// operator's own runs), gone an hour after it finished. Root without capabilities but
/// DAC_READ_SEARCH (read every file of the claim; DAC_OVERRIDE too when it writes to one), a
/// read-only root file system, the source claim read-only.
pub fn job(b: &Backup, name: &str, image: &str) -> Job {
    let spec = &b.spec;
    let mut args = vec!["backup".to_owned(), "run".into(), "-f".into(), format!("{CONFIG_AT}/backup.yaml")];
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
    if let Some(v) = &spec.source.volume {
        args.extend(["--volume-at".into(), SOURCE_AT.into()]);
        mounts.push(json!({"name": "source", "mountPath": SOURCE_AT, "readOnly": true}));
        volumes
            .push(json!({"name": "source", "persistentVolumeClaim": {"claimName": v.pvc, "readOnly": true}}));
    }
    if let Some(d) = &spec.destination.pvc {
        args.extend(["--local-dir".into(), DEST_AT.into()]);
        mounts.push(json!({"name": "destination", "mountPath": DEST_AT}));
        volumes.push(json!({"name": "destination", "persistentVolumeClaim": {"claimName": d.pvc}}));
        caps.push("DAC_OVERRIDE");
    }
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
        let j = serde_json::to_value(job(&b, &job_name("data", 1_764_000_000), "nova:1")).unwrap();
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
        let j = serde_json::to_value(job(&b, "x", "nova:1")).unwrap();
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
}
