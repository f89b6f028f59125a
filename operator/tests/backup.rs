//! The backup engine with real parts: PostgreSQL 15 with pgbench data, a test host over SSH
//! for files and host directories. Round trips compare data, not exit codes.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use chrono::Utc;
use nova::backup::engine::{EngineError, Job, data_name};
use nova::backup::manifest::Integrity;
use nova::backup::restore::Target;
use nova::backup::source::{PgTarget, Source};
use nova::backup::store::Store;
use nova::ssh::{self, Connection, HostKeyPolicy};
use test_cluster::postgres::Postgres;
use test_cluster::testhost::TestHost;

const KEY: &[u8] = b"test-hmac-key-0123456789";

fn pg_bin(tool: &str) -> String {
    let dir = std::env::var("NOVA_POSTGRES_BIN").unwrap_or_else(|_| {
        let mut v: Vec<u32> = std::fs::read_dir("/usr/lib/postgresql")
            .map(|d| d.flatten().filter_map(|e| e.file_name().to_str()?.parse().ok()).collect())
            .unwrap_or_default();
        v.sort();
        format!("/usr/lib/postgresql/{}/bin", v.last().copied().unwrap_or(15))
    });
    format!("{dir}/{tool}")
}

/// psql in `db`, one statement, the output trimmed.
fn psql(url: &str, db: &str, sql: &str) -> Result<String> {
    let t = url::Url::parse(url)?;
    let out = std::process::Command::new(pg_bin("psql"))
        .args(["-h", t.host_str().unwrap_or("127.0.0.1"), "-p", &t.port().unwrap_or(5432).to_string()])
        .args(["-U", t.username(), "-d", db, "-tAq", "-v", "ON_ERROR_STOP=1", "-c", sql])
        .output()?;
    anyhow::ensure!(out.status.success(), "psql {sql}: {}", String::from_utf8_lossy(&out.stderr));
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// A database `db` with pgbench's tables at `scale`.
fn pgbench(pg: &Postgres, db: &str, scale: u32) -> Result<()> {
    psql(pg.url(), "postgres", &format!("CREATE DATABASE {db}"))?;
    let t = url::Url::parse(pg.url())?;
    let out = std::process::Command::new(pg_bin("pgbench"))
        .args(["-i", "-q", "-s", &scale.to_string(), "-h", t.host_str().unwrap_or("127.0.0.1")])
        .args(["-p", &t.port().unwrap_or(5432).to_string(), "-U", t.username(), db])
        .output()?;
    anyhow::ensure!(out.status.success(), "pgbench: {}", String::from_utf8_lossy(&out.stderr));
    Ok(())
}

/// Row count and an order-independent checksum of every pgbench table.
fn fingerprint(pg: &Postgres, db: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for (table, key) in [("pgbench_accounts", "aid"), ("pgbench_branches", "bid"), ("pgbench_tellers", "tid")]
    {
        out.push(psql(
            pg.url(),
            db,
            &format!("SELECT count(*) || ' ' || md5(string_agg(t::text, ',' ORDER BY {key})) FROM {table} t"),
        )?);
    }
    Ok(out)
}

fn pg_job(pg: &Postgres, store: Store, key: Option<&[u8]>) -> Result<Job> {
    Ok(Job {
        backup: "shop/db".into(),
        source: Source::Postgres(PgTarget::from_url(pg.url(), "bench", "test")?),
        store,
        key: key.map(<[u8]>::to_vec),
        encryption: None,
        progress: Default::default(),
    })
}

#[tokio::test]
async fn postgres_round_trip_drill_and_refusals() -> Result<()> {
    let pg = tokio::task::spawn_blocking(Postgres::start).await??;
    pgbench(&pg, "bench", 1)?;
    let want = fingerprint(&pg, "bench")?;
    assert!(want[0].starts_with("100000 "), "{want:?}");
    let dir = tempfile::tempdir()?;
    let job = pg_job(&pg, Store::Dir(dir.path().join("shop/db")), Some(KEY))?;

    let m = job.run(Utc::now()).await?;
    assert!(m.hmac.is_some() && m.size > 0 && m.raw_size > m.size, "{m:?}");
    let server = PgTarget::from_url(pg.url(), "postgres", "test")?;
    let v = job.drill(&m.id, Some("SELECT count(*) FROM pgbench_accounts"), Utc::now()).await?;
    assert!(v.method.ends_with("returned 100000"), "{}", v.method);
    assert!(
        psql(pg.url(), "postgres", "SELECT count(*) FROM pg_database WHERE datname LIKE 'nova_drill_%'")?
            == "0"
    );
    let cat = job.catalog().await?;
    assert_eq!(cat.latest_verified().map(|e| e.manifest.id.as_str()), Some(m.id.as_str()));

    // Restore into a new database: the same rows, the same checksums.
    let into = Target::Postgres { target: server.with_database("restored"), overwrite: false };
    let report = job.restore(&m.id, &into).await?;
    assert_eq!(fingerprint(&pg, "restored")?, want);
    assert!(report.checked.iter().any(|c| c.contains("HMAC")), "{report:?}");
    // Over an existing database only with overwrite.
    let again = job.restore(&m.id, &into).await.unwrap_err();
    assert!(again.to_string().contains("overwrite: true"), "{again}");
    psql(pg.url(), "restored", "DELETE FROM pgbench_accounts WHERE aid < 500")?;
    let over = Target::Postgres { target: server.with_database("restored"), overwrite: true };
    job.restore(&m.id, &over).await?;
    assert_eq!(fingerprint(&pg, "restored")?, want);

    // The wrong key, and no key: refused with what to do, before anything is read.
    let wrong = Job { key: Some(b"another key".to_vec()), ..job.clone() };
    let e = wrong.restore(&m.id, &into).await.unwrap_err();
    assert!(
        e.to_string().contains("HMAC does not match") && e.to_string().contains("hmacKeySecretRef"),
        "{e}"
    );
    let keyless = Job { key: None, ..job.clone() };
    let e = keyless.restore(&m.id, &into).await.unwrap_err();
    assert!(e.to_string().contains("no integrity key"), "{e}");
    Ok(())
}

/// `spec.encryption`: the stored artifact is an age file — no plaintext in it, and the `age`
/// and `zstd` CLIs turn it back into a dump `pg_restore` reads; Nova's drill and restore
/// decrypt with the identity; without an identity, or with another one, a restore is refused
/// before the target is touched.
#[tokio::test]
async fn encrypted_artifacts_hold_no_plaintext_and_restore_with_the_identity() -> Result<()> {
    use age::secrecy::ExposeSecret;
    use nova::backup::crypt::Keys;
    let pg = tokio::task::spawn_blocking(Postgres::start).await??;
    pgbench(&pg, "bench", 1)?;
    psql(pg.url(), "bench", "CREATE TABLE notes AS SELECT 'plaintext-marker-7f3a' AS note")?;
    let want = fingerprint(&pg, "bench")?;
    let id = age::x25519::Identity::generate();
    let identity = id.to_string().expose_secret().to_owned();
    let keys = Keys::from_secrets(format!("{}\n", id.to_public()).as_bytes(), Some(identity.as_bytes()))
        .map_err(anyhow::Error::msg)?;
    let dir = tempfile::tempdir()?;
    let store_dir = dir.path().join("shop/db");
    let job =
        Job { encryption: Some(keys.clone()), ..pg_job(&pg, Store::Dir(store_dir.clone()), Some(KEY))? };
    let m = job.run(Utc::now()).await?;
    assert_eq!(m.encryption.as_deref(), Some("age (X25519), 1 recipient(s)"));
    let stored = std::fs::read(store_dir.join(data_name(&m.id)))?;
    assert!(stored.starts_with(b"age-encryption.org/v1\n"));
    assert!(!stored.windows(21).any(|w| w == b"plaintext-marker-7f3a"));

    // The age CLI reads it: age -d | zstd -d gives a dump pg_restore lists.
    let key_file = dir.path().join("identity.txt");
    std::fs::write(&key_file, format!("{identity}\n"))?;
    let dump = dir.path().join("dump");
    let sh = format!(
        "age -d -i {} < {} | zstd -dq > {} && {} --list {} | grep -c 'TABLE DATA'",
        key_file.display(),
        store_dir.join(data_name(&m.id)).display(),
        dump.display(),
        pg_bin("pg_restore"),
        dump.display()
    );
    let out = std::process::Command::new("sh").arg("-c").arg(&sh).output()?;
    assert!(out.status.success(), "{sh}: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "5", "pgbench's four tables and notes");

    let v = job.drill(&m.id, Some("SELECT note FROM notes"), Utc::now()).await?;
    assert!(v.method.ends_with("returned plaintext-marker-7f3a"), "{}", v.method);
    let server = PgTarget::from_url(pg.url(), "postgres", "test")?;
    job.restore(&m.id, &Target::Postgres { target: server.with_database("decrypted"), overwrite: false })
        .await?;
    assert_eq!(fingerprint(&pg, "decrypted")?, want);

    // No identity; another identity: refused, and the target database never made.
    let write_only = Job { encryption: Some(Keys { identities: Vec::new(), ..keys.clone() }), ..job.clone() };
    let into = Target::Postgres { target: server.with_database("never"), overwrite: false };
    let e = write_only.restore(&m.id, &into).await.unwrap_err().to_string();
    assert!(e.contains("identitySecretRef"), "{e}");
    let other = Keys { identities: vec![age::x25519::Identity::generate()], ..keys };
    let e =
        Job { encryption: Some(other), ..job.clone() }.restore(&m.id, &into).await.unwrap_err().to_string();
    assert!(e.contains("decryption refused") && !e.contains("AGE-SECRET-KEY"), "{e}");
    assert_eq!(psql(pg.url(), "postgres", "SELECT count(*) FROM pg_database WHERE datname = 'never'")?, "0");
    Ok(())
}

/// 1,000 random single-bit flips in the stored data: every one is caught by the checksum
/// before a restore touches anything.
#[tokio::test]
async fn every_flipped_bit_in_an_artifact_is_caught() -> Result<()> {
    let pg = tokio::task::spawn_blocking(Postgres::start).await??;
    psql(pg.url(), "postgres", "CREATE DATABASE bench")?;
    psql(
        pg.url(),
        "bench",
        "CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 2000) g",
    )?;
    let dir = tempfile::tempdir()?;
    let store_dir = dir.path().join("shop/db");
    let job = pg_job(&pg, Store::Dir(store_dir.clone()), Some(KEY))?;
    let m = job.run(Utc::now()).await?;
    let path = store_dir.join(data_name(&m.id));
    let good = std::fs::read(&path)?;
    job.check(&m.id).await?;
    let mut seed: u64 = 0x2545f4914f6cdd1d;
    for n in 0..1000 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let bit = (seed % (good.len() as u64 * 8)) as usize;
        let mut bad = good.clone();
        bad[bit / 8] ^= 1 << (bit % 8);
        std::fs::write(&path, &bad)?;
        match job.check(&m.id).await {
            Err(EngineError::Integrity(Integrity::Checksum { .. })) => {}
            other => panic!("flip {n} (bit {bit}) not caught as corrupt: {other:?}"),
        }
    }
    std::fs::write(&path, &good)?;
    job.check(&m.id).await?;
    // A changed manifest: the catalog lists the artifact as corrupt, a restore refuses it.
    let mpath = store_dir.join(format!("{}.manifest.json", m.id));
    let text = std::fs::read_to_string(&mpath)?;
    std::fs::write(
        &mpath,
        text.replace(&format!("\"size\": {}", m.size), &format!("\"size\": {}", m.size + 1)),
    )?;
    let cat = job.catalog().await?;
    assert!(cat.entries.is_empty() && cat.corrupt.len() == 1, "{cat:?}");
    let server = PgTarget::from_url(pg.url(), "x", "test")?;
    let e = job.restore(&m.id, &Target::Postgres { target: server, overwrite: false }).await.unwrap_err();
    assert!(e.to_string().contains("HMAC does not match"), "{e}");
    Ok(())
}

async fn connect(th: &TestHost) -> Result<Connection> {
    let t = ssh::Target {
        address: th.ssh_addr.ip().to_string(),
        port: th.ssh_addr.port(),
        user: "root".into(),
        key: Arc::new(ssh::private_key(&th.client_key, "the test key")?),
        host_key: HostKeyPolicy::Pinned(th.host_key.clone()),
        connect_timeout: Duration::from_secs(10),
    };
    Ok(ssh::open_with_retry(&t, 3).await?)
}

/// A signed backup of `path` on the test host into `store`.
fn files_job(conn: &Connection, th: &TestHost, path: &str, store: Store) -> Job {
    let source = Source::HostFiles { conn: conn.clone(), host: th.name.clone(), paths: vec![path.into()] };
    Job {
        backup: "shop/files".into(),
        source,
        store,
        key: Some(KEY.to_vec()),
        encryption: None,
        progress: Default::default(),
    }
}

/// Files on a host, stored in a directory on the same host, restored elsewhere on it: same
/// contents, modes and links; a link is stored as a link, never followed.
#[tokio::test]
async fn host_files_round_trip_with_modes_and_links() -> Result<()> {
    let th = tokio::task::spawn_blocking(|| TestHost::start("bk-files")).await??;
    th.ssh(
        "set -e; mkdir -p /srv/site/static /srv/secret; echo hello > /srv/site/index.html; \
         printf '#!/bin/sh\\n' > /srv/site/static/run.sh; chmod 750 /srv/site/static/run.sh; \
         chmod 700 /srv/site/static; echo private > /srv/secret/key; ln -s /srv/secret /srv/site/link; \
         head -c 3000000 /dev/urandom > /srv/site/blob",
    )?;
    let conn = connect(&th).await?;
    let job = files_job(
        &conn,
        &th,
        "/srv/site",
        Store::Host { conn: conn.clone(), dir: "/var/backups/nova/shop/files".into() },
    );
    let m = job.run(Utc::now()).await?;
    let v = job.drill(&m.id, None, Utc::now()).await?;
    assert!(v.method.contains("extracted 3 files"), "{}", v.method);
    let report = job.restore(&m.id, &Target::HostDir { conn: conn.clone(), dir: "/restore".into() }).await?;
    assert!(report.checked.iter().any(|c| c.contains("entries judged safe")), "{report:?}");
    let listing = |root: &str| {
        th.ssh(&format!("cd {root} && find . -printf '%p %m %y %l\\n' | sort && find . -type f -exec sha256sum {{}} + | sort"))
    };
    assert_eq!(listing("/restore/srv/site")?, listing("/srv/site")?);
    assert!(
        th.ssh("test -L /restore/srv/site/link && test ! -e /restore/srv/secret && echo ok")?.contains("ok")
    );
    // The store on the host holds only the artifact, its manifest and its verification.
    let stored = th.ssh("ls -1A /var/backups/nova/shop/files")?;
    assert_eq!(stored.lines().count(), 3, "{stored}");
    Ok(())
}

/// psql as the postgres superuser on the test host, in database `db`.
fn host_psql(th: &TestHost, db: &str, sql: &str) -> Result<String> {
    let cmd = format!("psql -X -q -t -A -d {db} -c {}", nova::ssh::quote(sql));
    Ok(th.ssh(&format!("runuser -u postgres -- {cmd}"))?.trim().to_owned())
}

/// A database on a VPS (`postgres.hostRef`): pg_dump, the drill's pg_restore and psql, and a
/// restore all run on the host over SSH, the password passed on stdin; the artifact streams
/// back to a store where Nova runs. Same rows after the restore; a wrong password is refused
/// without being shown.
#[tokio::test]
async fn postgres_on_a_host_round_trip_over_ssh() -> Result<()> {
    let th = tokio::task::spawn_blocking(|| TestHost::start("bk-pg")).await??;
    th.ssh("set -e; apt-get -qq update; DEBIAN_FRONTEND=noninteractive apt-get -qq install -y postgresql >/dev/null")?;
    host_psql(&th, "postgres", "CREATE ROLE backup LOGIN SUPERUSER PASSWORD 'pw-s3cr3t'")?;
    host_psql(&th, "postgres", "CREATE DATABASE shop")?;
    host_psql(
        &th,
        "shop",
        "CREATE TABLE orders AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 5000) g",
    )?;
    let sum = "SELECT count(*) || ' ' || md5(string_agg(id::text || v, ',' ORDER BY id)) FROM orders";
    let want = host_psql(&th, "shop", sum)?;
    let conn = connect(&th).await?;
    // Over TCP with a password (scram-sha-256 in Debian's pg_hba for 127.0.0.1).
    let url = "postgres://backup:pw-s3cr3t@127.0.0.1:5432/shop";
    let on_host = |url: &str, db: &str| -> Result<PgTarget> {
        Ok(PgTarget::from_url(url, db, "test")?.on_host(conn.clone(), th.name.clone(), "test")?)
    };
    let dir = tempfile::tempdir()?;
    let job = Job {
        backup: "shop/db".into(),
        source: Source::Postgres(on_host(url, "shop")?),
        store: Store::Dir(dir.path().join("shop/db")),
        key: Some(KEY.to_vec()),
        encryption: None,
        progress: Default::default(),
    };
    let m = job.run(Utc::now()).await?;
    assert!(m.source.contains("on host"), "{}", m.source);
    assert!(m.tools.iter().any(|(t, v)| t == "pg_dump" && v.contains("15")), "{:?}", m.tools);
    let v = job.drill(&m.id, Some("SELECT count(*) FROM orders"), Utc::now()).await?;
    assert!(v.method.ends_with("returned 5000"), "{}", v.method);
    let left = "SELECT count(*) FROM pg_database WHERE datname LIKE 'nova_drill_%'";
    assert_eq!(host_psql(&th, "postgres", left)?, "0");

    let into = Target::Postgres { target: on_host(url, "restored")?, overwrite: false };
    job.restore(&m.id, &into).await?;
    assert_eq!(host_psql(&th, "restored", sum)?, want);

    let wrong = Job {
        source: Source::Postgres(on_host("postgres://backup:nope-s3cr3t@127.0.0.1/shop", "shop")?),
        ..job.clone()
    };
    let e = wrong.run(Utc::now()).await.unwrap_err().to_string();
    assert!(e.contains("password authentication failed") && !e.contains("nope-s3cr3t"), "{e}");
    Ok(())
}

/// `nova backup <args>` on `dir`'s backup.yaml, key `id` and state database.
fn nova_backup(dir: &std::path::Path, args: &[&str]) -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_nova"));
    c.arg("backup").args(args).arg("-f").arg(dir.join("backup.yaml"));
    c.arg("-i").arg(dir.join("id")).arg("--state").arg(dir.join("state.db"));
    c
}

/// Host `web-1` (the test host), the HMAC key Secret, and Backup shop/site of `/srv/site` into
/// `/var/backups/nova` there, signed and drilled, with `spec` lines of its own.
fn site_docs(th: &TestHost, hmac: &str, spec: &str) -> String {
    format!(
        r#"apiVersion: nova.infra.dev/v1alpha1
kind: Host
metadata: {{name: web-1}}
spec:
  address: "{addr}"
  hostKey: "{key}"
  sshKeySecretRef: {{name: unused, key: k}}
---
apiVersion: v1
kind: Secret
metadata: {{name: backup-key, namespace: shop}}
stringData: {{hmac: "{hmac}"}}
---
apiVersion: nova.infra.dev/v1alpha1
kind: Backup
metadata: {{name: site, namespace: shop}}
spec:
  {spec}
  source: {{files: {{hostRef: {{name: web-1}}, paths: [/srv/site]}}}}
  destination: {{hostPath: {{hostRef: {{name: web-1}}, path: /var/backups/nova}}}}
  integrity: {{hmacKeySecretRef: {{name: backup-key, key: hmac}}}}
  verify: {{restoreTest: true}}
"#,
        addr = th.ssh_addr.ip(),
        key = th.host_key,
    )
}

/// `spec.runOn`: `nova backup install` puts Nova's binary, the Backup with its key and a
/// systemd timer on the host, then nothing of Nova runs here — the host's own timer takes the
/// backup at the next minute (and its drill), in the same format `nova backup list` reads back
/// over SSH; `nova backup uninstall` leaves no unit, configuration or binary, and the
/// artifacts.
#[tokio::test]
async fn a_host_timer_backs_up_with_no_nova_running() -> Result<()> {
    let th = tokio::task::spawn_blocking(|| TestHost::start("bk-timer")).await??;
    th.ssh("set -e; mkdir -p /srv/site; echo hello > /srv/site/index.html")?;
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("id"), &th.client_key)?;
    let docs =
        site_docs(&th, "timer-s3cr3t-key", "schedule: \"* * * * *\"\n  runOn: {hostRef: {name: web-1}}");
    std::fs::write(dir.path().join("backup.yaml"), docs)?;
    let run = |args: &[&str]| -> Result<String> {
        let out = nova_backup(dir.path(), args).output()?;
        let text =
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        anyhow::ensure!(out.status.success(), "nova backup {args:?}: {text}");
        Ok(text)
    };
    let out = run(&["install"])?;
    assert!(
        out.contains("installed nova-backup-shop--site.timer on host web-1") && !out.contains("s3cr3t"),
        "{out}"
    );
    assert_eq!(th.ssh("systemctl is-enabled nova-backup-shop--site.timer")?.trim(), "enabled");
    assert_eq!(th.ssh("stat -c '%a %U' /etc/nova/backups/shop--site.yaml")?.trim(), "600 root");
    // Installing again changes nothing and uploads no binary (same bytes).
    run(&["install"])?;

    let store = th.root().join("var/backups/nova/shop/site");
    let verified = || {
        std::fs::read_dir(&store)
            .map(|d| d.flatten().any(|e| e.file_name().to_string_lossy().ends_with(".verified.json")))
            .unwrap_or(false)
    };
    let journal =
        || th.ssh("journalctl -u nova-backup-shop--site.service --no-pager | tail -n 20").unwrap_or_default();
    test_cluster::eventually(
        "a backup by the host's timer, and its drill",
        Duration::from_secs(150),
        || async { anyhow::Ok(verified()) },
    )
    .await
    .with_context(journal)?;
    assert!(journal().contains("slot "), "{}", journal());
    let list = run(&["list"])?;
    assert!(list.lines().nth(1).is_some_and(|l| l.contains(" yes ")), "{list}");

    let out = run(&["uninstall"])?;
    assert!(out.contains("removed"), "{out}");
    let left = th.ssh(
        "ls /etc/systemd/system/nova-backup-* /etc/nova/backups/shop--site.yaml /usr/local/lib/nova/nova 2>/dev/null | wc -l",
    )?;
    assert_eq!(left.trim(), "0");
    assert!(store.exists(), "the artifacts stay");

    // `nova apply -f` does the same as install for a Backup with runOn; `nova delete -f` as
    // uninstall.
    let nova = |verb: &str| -> Result<String> {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_nova"))
            .args([verb, "-f"])
            .arg(dir.path().join("backup.yaml"))
            .arg("-i")
            .arg(dir.path().join("id"))
            .env("NOVA_STATE", dir.path().join("state.db"))
            .output()?;
        let text =
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        anyhow::ensure!(out.status.success(), "nova {verb}: {text}");
        Ok(text)
    };
    let out = nova("apply")?;
    assert!(out.contains("backup/site: scheduled by nova-backup-shop--site.timer on host web-1"), "{out}");
    assert!(!out.contains("s3cr3t"), "{out}");
    assert_eq!(th.ssh("systemctl is-enabled nova-backup-shop--site.timer")?.trim(), "enabled");
    let out = nova("delete")?;
    assert!(out.contains("backup/site: timer removed"), "{out}");
    assert_eq!(th.ssh("ls /etc/systemd/system/nova-backup-* 2>/dev/null | wc -l")?.trim(), "0");
    Ok(())
}

/// `nova backup` with no cluster: the Backup, its Host and its key Secret from YAML. Three runs
/// with retention keepLast 2; then the CLI is killed mid-upload: no artifact is counted, the
/// temporary file is swept by the next run, which succeeds.
#[tokio::test]
async fn cli_runs_retention_and_a_kill_mid_upload() -> Result<()> {
    let th = tokio::task::spawn_blocking(|| TestHost::start("bk-cli")).await??;
    th.ssh("set -e; mkdir -p /srv/site; echo hello > /srv/site/index.html")?;
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("id"), &th.client_key)?;
    let hmac = String::from_utf8_lossy(KEY);
    let docs = site_docs(&th, &hmac, "schedule: \"@daily\"\n  retention: {keepLast: 2, minVerified: 1}");
    std::fs::write(dir.path().join("backup.yaml"), docs)?;
    let nova = |args: &[&str]| nova_backup(dir.path(), args);
    let ok = |args: &[&str]| -> Result<String> {
        let out = nova(args).output()?;
        anyhow::ensure!(
            out.status.success(),
            "nova backup {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    for _ in 0..2 {
        let out = ok(&["run"])?;
        assert!(out.contains("written") && out.contains("verified"), "{out}");
    }
    // Asked for progress: stderr says how much was read and how fast; stdout is unchanged.
    let out = nova(&["run", "--progress"]).output()?;
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && stdout.contains("written") && !stdout.contains(" read in "), "{stdout}");
    assert!(
        stderr.contains("backup shop/site: ") && stderr.contains(" read in ") && stderr.contains("/s"),
        "{stderr}"
    );
    let listed = ok(&["list"])?;
    assert_eq!(listed.lines().filter(|l| l.contains(" yes ")).count(), 2, "{listed}");
    // The state database indexes what the store holds, and remembers what retention deleted.
    let state = nova::state::State::connect(&dir.path().join("state.db").display().to_string()).await?;
    let index = state.backup_index("shop", "site").await?;
    assert_eq!(index.len(), 3, "{index:?}");
    assert_eq!(index.iter().filter(|r| r.deleted_at.is_some()).count(), 1, "{index:?}");
    assert!(
        index.iter().filter(|r| r.deleted_at.is_none()).all(|r| r.verified_at.is_some() && r.hmac.is_some())
    );
    let audit = state.audit_log("Backup", "shop", "site").await?;
    for action in ["backup", "verify", "prune"] {
        assert!(audit.iter().any(|a| a.action == action), "no {action} audit row: {audit:?}");
    }

    // A big file makes the upload last; the CLI is killed while the temporary file grows.
    th.ssh("head -c 300000000 /dev/urandom > /srv/site/big")?;
    let mut child = nova(&["run"]).stdout(std::process::Stdio::null()).spawn()?;
    let store = "/var/backups/nova/shop/site";
    let grows = format!("stat -c %s {store}/.nova-tmp.* 2>/dev/null || echo 0");
    test_cluster::eventually("the upload to be under way", Duration::from_secs(120), || async {
        Ok::<_, anyhow::Error>(th.ssh(&grows)?.trim().parse::<u64>().unwrap_or(0) > 4 << 20)
    })
    .await?;
    child.kill()?;
    child.wait()?;
    let listed = ok(&["list"])?;
    let rows = |s: &str| s.lines().filter(|l| l.contains("Z-")).count();
    assert_eq!(rows(&listed), 2, "a killed run must not be counted: {listed}");
    assert!(
        th.ssh(&format!("ls -A {store}"))?.contains(".nova-tmp."),
        "the killed run left no temporary file?"
    );
    th.ssh("rm /srv/site/big")?;
    let out = ok(&["run"])?;
    assert!(out.contains("written"), "{out}");
    assert!(!th.ssh(&format!("ls -A {store}"))?.contains(".nova-tmp."), "the next run did not sweep");
    assert_eq!(rows(&ok(&["list"])?), 2);
    Ok(())
}

fn s3_store(s3: &test_cluster::s3::S3, backup: &str) -> Result<Store> {
    let creds = (s3.access_key.clone(), s3.secret_key.clone());
    let d: nova::api::backup::S3Destination = serde_json::from_value(serde_json::json!({
        "endpoint": s3.endpoint, "bucket": "nova-backups", "prefix": "team",
        "credentialsSecretRef": {"name": "unused"}}))?;
    Ok(Store::S3(Box::new(nova::backup::s3::S3Store::for_backup(&d, "shop", backup, creds)?)))
}

/// As [`s3_store`], with parts of 8 MiB in memory then 12 MiB spooled to a temporary file (the
/// way parts above 32 MiB go, reached here without uploading 100 GB first).
fn s3_spooling_store(s3: &test_cluster::s3::S3, backup: &str) -> Result<Store> {
    use nova::backup::parts::PartPlan;
    let Store::S3(st) = s3_store(s3, backup)? else { unreachable!() };
    let plan = PartPlan { size: |n| if n == 1 { 8 << 20 } else { 12 << 20 }, in_memory_up_to: 10 << 20 };
    Ok(Store::S3(Box::new(st.with_parts(plan))))
}

/// PostgreSQL to an S3-compatible server (SeaweedFS) and back: the same rows; a file archive
/// large enough for a multipart upload (its first part from memory, the others spooled
/// through temporary files), restored with the same bytes.
#[tokio::test]
async fn s3_round_trips_single_and_multipart() -> Result<()> {
    let s3 = tokio::task::spawn_blocking(test_cluster::s3::S3::start).await??;
    s3.create_bucket("nova-backups")?;
    let pg = tokio::task::spawn_blocking(Postgres::start).await??;
    pgbench(&pg, "bench", 1)?;
    let want = fingerprint(&pg, "bench")?;
    let job = pg_job(&pg, s3_store(&s3, "db")?, Some(KEY))?;
    let m = job.run(Utc::now()).await?;
    let v = job.drill(&m.id, Some("SELECT count(*) FROM pgbench_branches"), Utc::now()).await?;
    assert!(v.method.ends_with("returned 1"), "{}", v.method);
    let server = PgTarget::from_url(pg.url(), "postgres", "test")?;
    job.restore(&m.id, &Target::Postgres { target: server.with_database("from_s3"), overwrite: false })
        .await?;
    assert_eq!(fingerprint(&pg, "from_s3")?, want);

    let th = tokio::task::spawn_blocking(|| TestHost::start("bk-s3")).await??;
    th.ssh(
        "mkdir -p /srv/data && head -c 40000000 /dev/urandom > /srv/data/blob && echo x > /srv/data/small",
    )?;
    let conn = connect(&th).await?;
    let files = files_job(&conn, &th, "/srv/data", s3_spooling_store(&s3, "files")?);
    let m = files.run(Utc::now()).await?;
    assert!(m.size > 16 << 20, "large enough for several parts: {}", m.size);
    files.restore(&m.id, &Target::HostDir { conn, dir: "/back".into() }).await?;
    let sums = |root: &str| th.ssh(&format!("cd {root} && sha256sum blob small"));
    assert_eq!(sums("/back/srv/data")?, sums("/srv/data")?);
    Ok(())
}

/// The CLI killed in the middle of a multipart upload to S3: no artifact is counted; the next
/// run aborts the abandoned upload (S3 no longer knows it) and succeeds.
#[tokio::test]
async fn a_killed_multipart_upload_is_aborted_by_the_next_run() -> Result<()> {
    let s3 = tokio::task::spawn_blocking(test_cluster::s3::S3::start).await??;
    s3.create_bucket("nova-backups")?;
    let th = tokio::task::spawn_blocking(|| TestHost::start("bk-s3kill")).await??;
    th.ssh("mkdir -p /srv/site && head -c 300000000 /dev/urandom > /srv/site/big")?;
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("id"), &th.client_key)?;
    let docs = format!(
        r#"apiVersion: nova.infra.dev/v1alpha1
kind: Host
metadata: {{name: web-1}}
spec: {{address: "{addr}", hostKey: "{key}", sshKeySecretRef: {{name: unused, key: k}}}}
---
apiVersion: v1
kind: Secret
metadata: {{name: bucket, namespace: shop}}
stringData: {{accessKeyId: "{ak}", secretAccessKey: "{sk}"}}
---
apiVersion: nova.infra.dev/v1alpha1
kind: Backup
metadata: {{name: site, namespace: shop}}
spec:
  schedule: "@daily"
  source: {{files: {{hostRef: {{name: web-1}}, paths: [/srv/site]}}}}
  destination: {{s3: {{endpoint: "{ep}", bucket: nova-backups, prefix: team, credentialsSecretRef: {{name: bucket}}}}}}
"#,
        addr = th.ssh_addr.ip(),
        key = th.host_key,
        ak = s3.access_key,
        sk = s3.secret_key,
        ep = s3.endpoint,
    );
    std::fs::write(dir.path().join("backup.yaml"), docs)?;
    let nova = |args: &[&str]| nova_backup(dir.path(), args);
    let store = s3_store(&s3, "site")?;
    let mut child =
        nova(&["run"]).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).spawn()?;
    let marker = std::sync::Mutex::new(None::<String>);
    test_cluster::eventually("the multipart upload to be under way", Duration::from_secs(120), || async {
        let names = store.list().await?;
        *marker.lock().unwrap() = names.into_iter().find(|n| n.ends_with(".upload"));
        Ok::<_, anyhow::Error>(marker.lock().unwrap().is_some())
    })
    .await?;
    child.kill()?;
    child.wait()?;
    let marker = marker.into_inner().unwrap().unwrap();
    let mut text = Vec::new();
    store.read(&marker, &mut text).await?;
    let text = String::from_utf8(text)?;
    let (key, upload) = text.split_once('\n').map(|(k, u)| (k.to_owned(), u.trim().to_owned())).unwrap();
    let bucket =
        rusty_s3::Bucket::new(s3.endpoint.parse()?, rusty_s3::UrlStyle::Path, "nova-backups", "us-east-1")?;
    let creds = rusty_s3::Credentials::new(s3.access_key.clone(), s3.secret_key.clone());
    let parts_status = || async {
        use rusty_s3::S3Action;
        let url = bucket.list_parts(Some(&creds), &key, &upload).sign(Duration::from_secs(60));
        Ok::<_, anyhow::Error>(reqwest::get(url).await?.status().as_u16())
    };
    assert_eq!(parts_status().await?, 200, "the abandoned upload exists before the next run");
    let listed = nova(&["list"]).output()?;
    assert!(!String::from_utf8_lossy(&listed.stdout).contains("Z-"), "a killed run must not be counted");

    th.ssh("head -c 1000 /dev/urandom > /srv/site/big")?;
    let out = nova(&["run"]).output()?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(parts_status().await?, 404, "the next run aborts the abandoned upload");
    let names = store.list().await?;
    assert!(names.iter().all(|n| !n.starts_with(".nova-tmp.")), "{names:?}");
    assert_eq!(names.iter().filter(|n| n.ends_with(".manifest.json")).count(), 1, "{names:?}");
    Ok(())
}
