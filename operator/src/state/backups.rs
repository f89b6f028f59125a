//! The backup catalog's index in the state database: what the store holds, rebuildable from
//! it at any time (the store's manifests are the truth; this only makes queries cheap and
//! keeps the history of deletions).

use crate::state::{Error, State};

/// One artifact as the index keeps it. Times are RFC 3339 text.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct CatalogRow {
    pub id: String,
    pub taken_at: String,
    pub size_bytes: i64,
    pub sha256: String,
    pub hmac: Option<String>,
    pub location: String,
    pub verified_at: Option<String>,
    pub deleted_at: Option<String>,
}

impl State {
    /// Makes the index of Backup `ns/backup` say what the store holds: `rows` upserted, rows no
    /// longer in the store marked deleted (kept as history).
    pub async fn index_backups(&self, ns: &str, backup: &str, rows: &[CatalogRow]) -> Result<(), Error> {
        for r in rows {
            sqlx::query(
                "INSERT INTO backup_catalog (namespace, backup, id, taken_at, size_bytes, sha256, hmac, location, verified_at, deleted_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, NULL) \
                 ON CONFLICT (namespace, backup, id) DO UPDATE SET verified_at = excluded.verified_at, deleted_at = NULL",
            )
            .bind(ns)
            .bind(backup)
            .bind(&r.id)
            .bind(&r.taken_at)
            .bind(r.size_bytes)
            .bind(&r.sha256)
            .bind(&r.hmac)
            .bind(&r.location)
            .bind(&r.verified_at)
            .execute(self.pool())
            .await?;
        }
        let now = crate::state::now();
        for old in self.backup_index(ns, backup).await? {
            if old.deleted_at.is_none() && !rows.iter().any(|r| r.id == old.id) {
                sqlx::query("UPDATE backup_catalog SET deleted_at = $1 WHERE namespace = $2 AND backup = $3 AND id = $4")
                    .bind(&now)
                    .bind(ns)
                    .bind(backup)
                    .bind(&old.id)
                    .execute(self.pool())
                    .await?;
            }
        }
        Ok(())
    }

    /// Every artifact the index knows for `ns/backup`, deleted ones included, oldest first.
    pub async fn backup_index(&self, ns: &str, backup: &str) -> Result<Vec<CatalogRow>, Error> {
        Ok(sqlx::query_as(
            "SELECT id, taken_at, size_bytes, sha256, hmac, location, verified_at, deleted_at FROM backup_catalog \
             WHERE namespace = $1 AND backup = $2 ORDER BY id",
        )
        .bind(ns)
        .bind(backup)
        .fetch_all(self.pool())
        .await?)
    }
}
