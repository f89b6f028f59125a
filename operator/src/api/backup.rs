//! Backup and Restore: pg_dump and file backups on a schedule, GFS retention, integrity checks.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{CRON, Conditions, LocalRef, SecretKeyRef, SecretRef, abs_path_list, conditions_schema};

/// Scheduled backups of a database, files on a host, or a volume.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "nova.infra.dev",
    version = "v1alpha1",
    kind = "Backup",
    namespaced,
    status = "BackupStatus",
    shortname = "nbk",
    category = "nova",
    doc = "Scheduled backups with retention, checksums and verified restores.",
    printcolumn(name = "Schedule", type_ = "string", json_path = ".spec.schedule"),
    printcolumn(name = "Suspended", type_ = "boolean", json_path = ".spec.suspend"),
    printcolumn(name = "Last", type_ = "date", json_path = ".status.lastBackup.time"),
    printcolumn(name = "Verified", type_ = "boolean", json_path = ".status.lastBackup.verified"),
    printcolumn(name = "Size", type_ = "integer", json_path = ".status.lastBackup.size"),
    printcolumn(name = "Next", type_ = "date", json_path = ".status.nextScheduleTime"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct BackupSpec {
    /// What to back up.
    pub source: BackupSource,
    /// Cron schedule (five fields, or `@daily` and the like).
    #[schemars(length(min = 1, max = 128), regex(pattern = CRON))]
    pub schedule: String,
    /// IANA time zone for the schedule. Default UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64), regex(pattern = r"^[A-Za-z_]+(/[A-Za-z0-9_+-]+)*$"))]
    pub time_zone: Option<String>,
    /// Pause scheduling; a running backup finishes.
    #[serde(default)]
    pub suspend: bool,
    /// A run whose slot was missed (Nova was down) by more than this many seconds is skipped;
    /// without it the newest missed slot runs once when Nova is back, as a CronJob does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub starting_deadline_seconds: Option<i64>,
    /// How many backups to keep (grandfather-father-son).
    #[serde(default)]
    pub retention: Retention,
    /// Where backups go.
    pub destination: Destination,
    /// Signing of each artifact with HMAC-SHA256 (its SHA-256 is always recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub integrity: Option<Integrity>,
    /// Encrypt the stored data with age, so that a leaked destination leaks nothing. The
    /// SHA-256 and HMAC cover the ciphertext.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<Encryption>,
    /// Regular verification by test restores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify: Option<Verify>,
    /// Recovery objectives, checked on every reconcile: the ObjectivesMet condition and the
    /// nova_backup_objective_violated metric say when one is missed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub objectives: Option<Objectives>,
    /// Where the schedule fires. Default: where Nova runs (the operator). With `hostRef`, a
    /// systemd timer on that Host runs Nova's own binary (uploaded there by Nova) with this
    /// Backup and the Secrets it names in a root-only file, so backups go on while no operator
    /// or laptop is around. The source must be on that Host (`files` there, or `postgres`
    /// with `hostRef` to it or a URL it reaches) and the destination `s3` or a `hostPath` on it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_on: Option<RunOn>,
}

/// A Host whose own timer runs the Backup.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunOn {
    /// The Host.
    pub host_ref: LocalRef,
}

/// Annotation on a Backup asking for a run now: any new value is answered by one run (also
/// while suspended, as a Job made from a suspended CronJob runs), recorded in
/// `status.lastRequest`.
pub const RUN_REQUESTED: &str = "nova.infra.dev/run-requested";

/// Recovery point and recovery time objectives.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Objectives {
    /// The newest artifact may be at most this old (seconds): the data a failure may lose.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 60))]
    pub rpo_seconds: Option<i64>,
    /// A restore may take at most this long (seconds), as measured by the last restore drill.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub rto_seconds: Option<i64>,
}

/// The thing backed up. Exactly one.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("(has(self.postgres) ? 1 : 0) + (has(self.files) ? 1 : 0) + (has(self.volume) ? 1 : 0) == 1").message("source has exactly one of postgres, files or volume"))]
pub struct BackupSource {
    /// A PostgreSQL database, dumped with pg_dump.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres: Option<PostgresSource>,
    /// Files on a Host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<FilesSource>,
    /// A PersistentVolumeClaim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<VolumeSource>,
}

/// PostgreSQL source.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PostgresSource {
    /// Secret key holding a `postgres://` connection URL.
    pub connection_secret_ref: SecretKeyRef,
    /// Database to dump.
    #[schemars(length(min = 1, max = 63), regex(pattern = r"^[A-Za-z_][A-Za-z0-9_$-]*$"))]
    pub database: String,
    /// Run `pg_dump` (and the restore drills' and Restores' `pg_restore` and `psql`) on this
    /// Host over SSH, for a database on that machine; the URL is then as seen from the host,
    /// e.g. `postgres://backup:...@127.0.0.1/shop`. The host needs the PostgreSQL client
    /// (`postgresql-client`). Without it the tools run where Nova runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_ref: Option<LocalRef>,
}

/// Files on a host.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FilesSource {
    /// The Host.
    pub host_ref: LocalRef,
    /// Absolute paths to include.
    #[schemars(schema_with = "abs_path_list")]
    pub paths: Vec<String>,
}

/// A PVC source.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VolumeSource {
    /// Name of the PersistentVolumeClaim.
    #[schemars(length(min = 1, max = 253))]
    pub pvc: String,
}

/// GFS retention. A backup is kept if any rule keeps it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Retention {
    /// Most recent backups to keep. Default 7.
    #[serde(default = "seven")]
    #[schemars(range(min = 0, max = 10000))]
    pub keep_last: i32,
    /// Newest backup of each of the last N days.
    #[serde(default)]
    #[schemars(range(min = 0, max = 10000))]
    pub keep_daily: i32,
    /// Newest backup of each of the last N ISO weeks.
    #[serde(default)]
    #[schemars(range(min = 0, max = 10000))]
    pub keep_weekly: i32,
    /// Newest backup of each of the last N months.
    #[serde(default)]
    #[schemars(range(min = 0, max = 10000))]
    pub keep_monthly: i32,
    /// Newest backup of each of the last N years.
    #[serde(default)]
    #[schemars(range(min = 0, max = 1000))]
    pub keep_yearly: i32,
    /// Never delete below this many verified backups, whatever the rules say. Default 1.
    #[serde(default = "one_i")]
    #[schemars(range(min = 0, max = 1000))]
    pub min_verified: i32,
}

impl Default for Retention {
    fn default() -> Self {
        Self { keep_last: 7, keep_daily: 0, keep_weekly: 0, keep_monthly: 0, keep_yearly: 0, min_verified: 1 }
    }
}

fn seven() -> i32 {
    7
}
fn one_i() -> i32 {
    1
}

/// Backup destination. Exactly one.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("(has(self.s3) ? 1 : 0) + (has(self.pvc) ? 1 : 0) + (has(self.hostPath) ? 1 : 0) == 1").message("destination has exactly one of s3, pvc or hostPath"))]
pub struct Destination {
    /// An S3-compatible bucket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Destination>,
    /// A PersistentVolumeClaim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pvc: Option<VolumeSource>,
    /// A directory on a Host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_path: Option<HostPathDestination>,
}

/// S3 bucket.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct S3Destination {
    /// Endpoint URL; AWS when empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048), regex(pattern = r"^https?://[^\s]+$"))]
    pub endpoint: Option<String>,
    /// Region. Default us-east-1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub region: Option<String>,
    /// Bucket name.
    #[schemars(length(min = 3, max = 63), regex(pattern = r"^[a-z0-9][a-z0-9.-]+[a-z0-9]$"))]
    pub bucket: String,
    /// Key prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512), regex(pattern = r"^[A-Za-z0-9!_.*'()/-]*$"))]
    pub prefix: Option<String>,
    /// Secret with keys `accessKeyId` and `secretAccessKey`.
    pub credentials_secret_ref: SecretRef,
}

/// Directory on a host.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HostPathDestination {
    /// The Host.
    pub host_ref: LocalRef,
    /// Absolute directory.
    #[schemars(length(min = 1, max = 1024), regex(pattern = super::common::DIR_PATH))]
    pub path: String,
}

/// HMAC signing.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Integrity {
    /// Secret key holding the HMAC key.
    pub hmac_key_secret_ref: SecretKeyRef,
}

/// Encryption of the stored data with age (age-encryption.org/v1, X25519).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Encryption {
    /// Secret key holding the recipients, one `age1...` public key per line (`#` comments
    /// allowed): every artifact is encrypted to all of them.
    pub recipients_secret_ref: SecretKeyRef,
    /// Secret key holding the identities (`AGE-SECRET-KEY-1...` lines, as `age-keygen`
    /// writes them) that decrypt: restore drills and restores need one. Without it Nova writes
    /// artifacts it cannot read back (drills then fail, saying so): keep the identity elsewhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_secret_ref: Option<SecretKeyRef>,
}

/// Verification by test restore.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Verify {
    /// Cron schedule of restore drills (of the newest artifact), in spec.timeZone. Default:
    /// a drill after each backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128), regex(pattern = CRON))]
    pub schedule: Option<String>,
    /// Restore into a scratch target and check it (pg_restore into a temporary database,
    /// or extraction and checksum of files). Default true.
    #[serde(default = "super::common::yes")]
    pub restore_test: bool,
    /// SQL run in the scratch database after a PostgreSQL drill, such as
    /// `SELECT count(*) FROM orders`; its answer is recorded with the verification, and an
    /// error fails the drill.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 4096))]
    pub check_query: Option<String>,
}

/// One backup artifact.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupArtifact {
    /// Artifact ID.
    pub id: String,
    /// When it was taken.
    pub time: Time,
    /// Size in bytes.
    pub size: i64,
    /// SHA-256, hex.
    pub sha256: String,
    /// Whether a test restore succeeded.
    pub verified: bool,
}

/// Observed state of a Backup.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupStatus {
    /// The generation last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The newest artifact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_backup: Option<BackupArtifact>,
    /// Recent artifacts, newest first (the catalog is in Nova's state database).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recent: Vec<BackupArtifact>,
    /// Next scheduled run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_schedule_time: Option<Time>,
    /// The scheduled time of the last run (or skipped run): a slot is never run twice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_schedule_time: Option<Time>,
    /// The scheduled time of the last restore drill run on `spec.verify.schedule`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_verify_schedule_time: Option<Time>,
    /// How long the last restore drill took, in seconds: the measured recovery time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_restore_seconds: Option<f64>,
    /// The last run request (annotation `nova.infra.dev/run-requested`, set by a rollout's
    /// backup gate or by hand) that a run answered, whatever its outcome.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_request: Option<String>,
    /// The Job of the run in progress (a Backup of a PersistentVolumeClaim runs in a Job);
    /// cleared when its outcome is in status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    /// The Host whose systemd timer runs this Backup (`spec.runOn`), as installed there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timer_host: Option<String>,
    /// Digest of what that timer was given (Nova's binary, the Backup, its Secrets' values):
    /// installed again when it changes, nothing sent to the host while it does not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timer_digest: Option<String>,
    /// Artifacts whose manifest or verification record failed its check (id: why).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub corrupt: Vec<String>,
    /// Ready and Progressing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Conditions,
}

/// Restores one backup artifact.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "nova.infra.dev",
    version = "v1alpha1",
    kind = "Restore",
    namespaced,
    status = "RestoreStatus",
    shortname = "nrs",
    category = "nova",
    doc = "Restores a backup artifact into a target.",
    printcolumn(name = "Backup", type_ = "string", json_path = ".spec.backupRef.name"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[x_kube(validation = Rule::new("self == oldSelf").message("a Restore cannot be changed; create a new one"))]
#[serde(rename_all = "camelCase")]
pub struct RestoreSpec {
    /// The Backup whose catalog holds the artifact.
    pub backup_ref: LocalRef,
    /// Which artifact.
    #[serde(default)]
    pub artifact: ArtifactChoice,
    /// Where to restore; default: the Backup's own source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<BackupSource>,
    /// Files: the directory on the source's Host to restore below (the archive holds paths
    /// relative to `/`). Default `/`, the original places, which needs `overwrite`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024), regex(pattern = super::common::DIR_PATH))]
    pub directory: Option<String>,
    /// Write over an existing database, or over the original files. Without it a restore
    /// only writes into a new database or a separate directory.
    #[serde(default)]
    pub overwrite: bool,
}

/// Which artifact to restore.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.id) != self.latestVerified").message("artifact: give id, or latestVerified: true, not both"))]
pub struct ArtifactChoice {
    /// A specific artifact ID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128))]
    pub id: Option<String>,
    /// The newest verified artifact. Default true.
    #[serde(default)]
    pub latest_verified: bool,
}

impl Default for ArtifactChoice {
    fn default() -> Self {
        Self { id: None, latest_verified: true }
    }
}

/// Restore phases.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum RestorePhase {
    Pending,
    Running,
    Succeeded,
    Failed,
}

/// Observed state of a Restore.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreStatus {
    /// The generation last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Pending, Running, Succeeded or Failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<RestorePhase>,
    /// The artifact restored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_id: Option<String>,
    /// When the restore finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    /// Bytes of the artifact restored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<i64>,
    /// How long the restore took, seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_seconds: Option<f64>,
    /// The Job that restores into a PersistentVolumeClaim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    /// What was checked before anything was written (HMAC, SHA-256, archive entries).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checked: Vec<String>,
    /// Ready.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Conditions,
}
