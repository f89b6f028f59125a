//! Nova's state database: SQLite by default (a file), PostgreSQL when given a `postgres://` URL.
//! Holds what status cannot: release history, the audit trail, catalogs and logs.

use k8s_openapi::jiff::Timestamp;
use sqlx::AnyPool;
use sqlx::any::{AnyPoolOptions, install_default_drivers};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("state database {url}: {source}")]
    Connect { url: String, source: sqlx::Error },
    #[error("migrating the state database: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("state database query: {0}")]
    Query(#[from] sqlx::Error),
}

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

mod backups;
mod training;
pub use backups::CatalogRow;
pub use training::TrainingRun;

#[derive(Clone, Debug)]
pub struct State {
    pool: AnyPool,
}

/// One line of the audit trail.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct AuditEntry {
    pub at: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub action: String,
    pub detail: String,
}

/// One revision that was rolled out.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct Release {
    pub revision: String,
    pub image: String,
    pub first_applied_at: String,
    pub last_applied_at: String,
}

/// An object applied with `nova apply` (no cluster), with the status Nova keeps for it.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct LocalObject {
    pub kind: String,
    pub namespace: String,
    pub name: String,
    /// The object as last applied (JSON).
    pub spec: String,
    /// Its status (JSON).
    pub status: String,
    pub updated_at: String,
}

/// Turns a bare file path into an SQLite URL that creates the file when missing.
pub fn database_url(arg: &str) -> String {
    if arg.starts_with("postgres://") || arg.starts_with("postgresql://") || arg.starts_with("sqlite:") {
        arg.to_owned()
    } else {
        format!("sqlite://{arg}?mode=rwc")
    }
}

pub(crate) fn now() -> String {
    Timestamp::now().to_string()
}

impl State {
    /// Connects and brings the schema up to date.
    pub async fn connect(url: &str) -> Result<Self, Error> {
        install_default_drivers();
        let url = database_url(url);
        // SQLite allows one writer; more connections only queue on its lock.
        let max = if url.starts_with("sqlite:") { 1 } else { 8 };
        let sqlite = url.starts_with("sqlite:");
        let pool = AnyPoolOptions::new()
            .max_connections(max)
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if sqlite {
                        // WAL with synchronous=NORMAL: durable across process crashes, one
                        // fsync per checkpoint instead of one per write.
                        sqlx::query("PRAGMA journal_mode = WAL").execute(&mut *conn).await?;
                        sqlx::query("PRAGMA synchronous = NORMAL").execute(&mut *conn).await?;
                    }
                    Ok(())
                })
            })
            // Fail a start against an unreachable database within seconds, not half a minute.
            .acquire_timeout(std::time::Duration::from_secs(10))
            .connect(&url)
            .await
            .map_err(|source| Error::Connect { url: redact(&url), source })?;
        MIGRATOR.run(&pool).await?;
        Ok(Self { pool })
    }

    pub(crate) fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub async fn audit(
        &self,
        kind: &str,
        namespace: &str,
        name: &str,
        action: &str,
        detail: &str,
    ) -> Result<(), Error> {
        sqlx::query(
            "INSERT INTO audit (at, kind, namespace, name, action, detail) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(now())
        .bind(kind)
        .bind(namespace)
        .bind(name)
        .bind(action)
        .bind(detail)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn audit_log(&self, kind: &str, namespace: &str, name: &str) -> Result<Vec<AuditEntry>, Error> {
        Ok(sqlx::query_as(
            "SELECT at, kind, namespace, name, action, detail FROM audit \
             WHERE kind = $1 AND namespace = $2 AND name = $3 ORDER BY at",
        )
        .bind(kind)
        .bind(namespace)
        .bind(name)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Records that `revision` was applied; returns true when it is new for this object.
    pub async fn record_release(
        &self,
        kind: &str,
        namespace: &str,
        name: &str,
        revision: &str,
        image: &str,
    ) -> Result<bool, Error> {
        let at = now();
        let inserted = sqlx::query(
            "INSERT INTO releases (kind, namespace, name, revision, image, first_applied_at, last_applied_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (kind, namespace, name, revision) DO NOTHING",
        )
        .bind(kind)
        .bind(namespace)
        .bind(name)
        .bind(revision)
        .bind(image)
        .bind(at.clone())
        .bind(at.clone())
        .execute(&self.pool)
        .await?
        .rows_affected()
            == 1;
        if !inserted {
            sqlx::query(
                "UPDATE releases SET last_applied_at = $1 WHERE kind = $2 AND namespace = $3 AND name = $4 AND revision = $5",
            )
            .bind(at)
            .bind(kind)
            .bind(namespace)
            .bind(name)
            .bind(revision)
            .execute(&self.pool)
            .await?;
        }
        Ok(inserted)
    }

    /// Releases of one object, oldest first.
    pub async fn releases(&self, kind: &str, namespace: &str, name: &str) -> Result<Vec<Release>, Error> {
        Ok(sqlx::query_as(
            "SELECT revision, image, first_applied_at, last_applied_at FROM releases \
             WHERE kind = $1 AND namespace = $2 AND name = $3 ORDER BY first_applied_at, revision",
        )
        .bind(kind)
        .bind(namespace)
        .bind(name)
        .fetch_all(&self.pool)
        .await?)
    }
}

impl State {
    /// Keeps the latest facts of a Host (JSON), replacing earlier ones.
    pub async fn record_host_facts(&self, host: &str, facts: &str) -> Result<(), Error> {
        sqlx::query(
            "INSERT INTO host_facts (host, gathered_at, facts) VALUES ($1, $2, $3) \
             ON CONFLICT (host) DO UPDATE SET gathered_at = excluded.gathered_at, facts = excluded.facts",
        )
        .bind(host)
        .bind(now())
        .bind(facts)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The latest facts of a Host, as recorded.
    pub async fn host_facts(&self, host: &str) -> Result<Option<String>, Error> {
        Ok(sqlx::query_scalar("SELECT facts FROM host_facts WHERE host = $1")
            .bind(host)
            .fetch_optional(&self.pool)
            .await?)
    }

    /// The key the CLI recorded for `address:port` under AcceptNew, if any.
    pub async fn known_host(&self, address: &str, port: u16) -> Result<Option<String>, Error> {
        Ok(sqlx::query_scalar("SELECT host_key FROM known_hosts WHERE address = $1 AND port = $2")
            .bind(address)
            .bind(i64::from(port))
            .fetch_optional(&self.pool)
            .await?)
    }

    /// Records the first key seen at `address:port`; an existing record is kept (a changed key
    /// is refused before this is reached, never overwritten).
    pub async fn record_host_key(&self, address: &str, port: u16, key: &str) -> Result<(), Error> {
        sqlx::query(
            "INSERT INTO known_hosts (address, port, host_key, recorded_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (address, port) DO NOTHING",
        )
        .bind(address)
        .bind(i64::from(port))
        .bind(key)
        .bind(now())
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

impl State {
    /// Stores an object applied without a cluster and its status, replacing what was there.
    pub async fn save_local(
        &self,
        kind: &str,
        namespace: &str,
        name: &str,
        spec: &str,
        status: &str,
    ) -> Result<(), Error> {
        sqlx::query(
            "INSERT INTO local_objects (kind, namespace, name, spec, status, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (kind, namespace, name) DO UPDATE SET \
             spec = excluded.spec, status = excluded.status, updated_at = excluded.updated_at",
        )
        .bind(kind)
        .bind(namespace)
        .bind(name)
        .bind(spec)
        .bind(status)
        .bind(now())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn local(&self, kind: &str, namespace: &str, name: &str) -> Result<Option<LocalObject>, Error> {
        Ok(sqlx::query_as(
            "SELECT kind, namespace, name, spec, status, updated_at FROM local_objects \
             WHERE kind = $1 AND namespace = $2 AND name = $3",
        )
        .bind(kind)
        .bind(namespace)
        .bind(name)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Forgets an object applied without a cluster; true when there was one.
    pub async fn delete_local(&self, kind: &str, namespace: &str, name: &str) -> Result<bool, Error> {
        let done = sqlx::query("DELETE FROM local_objects WHERE kind = $1 AND namespace = $2 AND name = $3")
            .bind(kind)
            .bind(namespace)
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Every object applied without a cluster, by kind, namespace and name.
    pub async fn locals(&self) -> Result<Vec<LocalObject>, Error> {
        Ok(sqlx::query_as(
            "SELECT kind, namespace, name, spec, status, updated_at FROM local_objects \
             ORDER BY kind, namespace, name",
        )
        .fetch_all(&self.pool)
        .await?)
    }
}

/// A URL with any password replaced, for error text and logs: the one in the user information
/// and any query parameter whose name holds `password` (`?password=`, `sslpassword=`).
pub fn redact(url: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let mut out = match (base.find("://"), base.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &base[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{}://{user}:***@{}", &base[..scheme], &base[at + 1..])
        }
        _ => base.to_owned(),
    };
    if let Some(q) = query {
        let pairs: Vec<String> = q
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((k, _)) if k.to_ascii_lowercase().contains("password") => format!("{k}=***"),
                _ => pair.to_owned(),
            })
            .collect();
        out.push('?');
        out.push_str(&pairs.join("&"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_leave_redact() {
        assert_eq!(redact("postgres://nova:s3cret@db:5432/nova"), "postgres://nova:***@db:5432/nova");
        assert_eq!(redact("sqlite:///var/lib/nova/state.db"), "sqlite:///var/lib/nova/state.db");
        assert_eq!(
            redact("postgres://db/nova?user=nova&password=s3cret&sslmode=require"),
            "postgres://db/nova?user=nova&password=***&sslmode=require"
        );
        assert_eq!(redact("postgres://u:p@db/n?sslpassword=k3y"), "postgres://u:***@db/n?sslpassword=***");
        assert_eq!(redact("sqlite:///tmp/x.db?mode=rwc"), "sqlite:///tmp/x.db?mode=rwc");
    }

    #[test]
    fn bare_paths_become_sqlite_urls() {
        assert_eq!(database_url("/tmp/x.db"), "sqlite:///tmp/x.db?mode=rwc");
        assert_eq!(database_url("postgres://h/db"), "postgres://h/db");
    }
}
