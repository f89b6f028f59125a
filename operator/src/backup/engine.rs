//! The backup engine, the same from the operator, `nova backup` and a host's timer: a run
//! streams source → zstd → SHA-256 → store with flat memory; the manifest is written last;
//! the catalog is read back from the store; retention deletes the manifest first, so an
//! artifact is either whole and listed or gone.

use async_compression::Level;
use async_compression::tokio::bufread::ZstdEncoder;
use chrono::{DateTime, SecondsFormat, Utc};
use chrono_tz::Tz;
use tokio::io::{AsyncRead, BufReader};

use super::manifest::{FORMAT, Integrity, Manifest, Verification};
use super::retention::{self, Item, Plan};
use super::source::{Source, SourceError};
use super::store::{Store, StoreError, TEMP};
use super::tap::Tap;
use crate::api::backup::Retention;

/// The pipe between a source and the compressor: what bounds memory, whatever the size.
pub const PIPE: usize = 1 << 20;
/// zstd level 3, zstd's own default: near the floor's speed at a good ratio.
const LEVEL: i32 = 3;
const MANIFEST_CAP: usize = 1 << 20;

pub fn data_name(id: &str) -> String {
    format!("{id}.zst")
}
pub fn manifest_name(id: &str) -> String {
    format!("{id}.manifest.json")
}
pub fn verified_name(id: &str) -> String {
    format!("{id}.verified.json")
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Integrity(#[from] Integrity),
    #[error("no artifact {0} in the catalog")]
    NoSuchArtifact(String),
    #[error("{0}")]
    Refused(String),
}

/// One Backup's engine: its name, source, store and integrity key.
#[derive(Clone)]
pub struct Job {
    /// `namespace/name`.
    pub backup: String,
    pub source: Source,
    pub store: Store,
    pub key: Option<Vec<u8>>,
    /// `spec.encryption`: age recipients (and identities to read back); None: plain.
    pub encryption: Option<super::crypt::Keys>,
    /// Bytes read so far: from the source while backing up, from the store while restoring.
    pub progress: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

/// An artifact in the catalog, with its verification when a drill passed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub manifest: Manifest,
    pub verified: Option<Verification>,
}

/// The catalog read back from the store, newest first. Manifests that fail their check are
/// listed in `corrupt` (id and why), not in `entries`.
#[derive(Clone, Debug, Default)]
pub struct Catalog {
    pub entries: Vec<Entry>,
    pub corrupt: Vec<(String, String)>,
}

impl Catalog {
    pub fn latest_verified(&self) -> Option<&Entry> {
        self.entries.iter().find(|e| e.verified.is_some())
    }
    pub fn get(&self, id: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.manifest.id == id)
    }
}

fn new_id(now: DateTime<Utc>) -> String {
    let mut r = [0u8; 3];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut r);
    format!("{}-{}", now.format("%Y%m%dT%H%M%SZ"), hex::encode(r))
}

impl Job {
    fn key(&self) -> Option<&[u8]> {
        self.key.as_deref()
    }

    /// Takes one backup: data first, manifest last. Leftovers of killed runs (temporary files,
    /// data without a manifest) are removed first; one run at a time per Backup is the
    /// caller's duty (the controller's per-object lock, the timer's unit).
    pub async fn run(&self, now: DateTime<Utc>) -> Result<Manifest, EngineError> {
        self.sweep().await?;
        let id = new_id(now);
        let data = data_name(&id);
        let (w, r) = tokio::io::duplex(PIPE);
        let mut raw = Tap::counting(r).reporting(self.progress.clone());
        let zstd = ZstdEncoder::with_quality(BufReader::new(&mut raw), Level::Precise(LEVEL));
        // Encrypted: zstd → age in a stage of its own; what is hashed and stored is ciphertext.
        let (compressed, encrypt): (Box<dyn AsyncRead + Unpin + Send + '_>, _) = match &self.encryption {
            None => (Box::new(zstd), futures::future::Either::Left(async { Ok(()) })),
            Some(k) => {
                let (cw, cr) = tokio::io::duplex(PIPE);
                (Box::new(cr), futures::future::Either::Right(k.encrypt(zstd, cw)))
            }
        };
        let mut stored = Tap::hashing(compressed);
        let (dumped, encrypted, written) =
            tokio::join!(self.source.dump(w), encrypt, self.store.write(&data, &mut stored));
        let failed = match (dumped, encrypted, written) {
            (Ok(tools), Ok(()), Ok(())) => Ok(tools),
            (Err(e), _, _) => Err(EngineError::from(e)),
            (Ok(_), Err(e), _) => Err(EngineError::Refused(format!("encrypting the artifact: {e}"))),
            (Ok(_), Ok(()), Err(e)) => Err(e.into()),
        };
        let tools = match failed {
            Ok(t) => t,
            Err(e) => {
                let _ = self.store.delete(&data).await;
                return Err(e);
            }
        };
        let (size, sha256, _) = stored.finish();
        let mut m = Manifest {
            format: FORMAT.into(),
            id: id.clone(),
            backup: self.backup.clone(),
            payload: self.source.payload(),
            source: self.source.describe(),
            created: now.to_rfc3339_opts(SecondsFormat::Secs, true),
            size,
            raw_size: raw.bytes(),
            sha256,
            compression: "zstd".into(),
            encryption: self.encryption.as_ref().map(super::crypt::Keys::describe),
            tools: [vec![("nova".to_owned(), env!("CARGO_PKG_VERSION").to_owned())], tools].concat(),
            hmac: None,
        };
        m.sign(self.key());
        self.store.write(&manifest_name(&id), &m.to_bytes()[..]).await?;
        Ok(m)
    }

    /// Removes what killed runs left: temporary files and data without a manifest.
    async fn sweep(&self) -> Result<(), EngineError> {
        let names = self.store.list().await?;
        for n in &names {
            let orphan = n.strip_suffix(".zst").is_some_and(|id| !names.contains(&manifest_name(id)));
            if n.starts_with(TEMP) || orphan {
                self.store.delete(n).await?;
            }
        }
        Ok(())
    }

    /// Reads the catalog back from the store.
    pub async fn catalog(&self) -> Result<Catalog, EngineError> {
        let names = self.store.list().await?;
        let mut cat = Catalog::default();
        for n in &names {
            let Some(id) = n.strip_suffix(".manifest.json") else { continue };
            if !super::paths::valid_id(id) {
                continue;
            }
            let bytes = self.store.read_small(n, MANIFEST_CAP).await?;
            let m = match Manifest::parse_verified(id, &bytes, self.key()) {
                Ok(m) => m,
                Err(e) => {
                    cat.corrupt.push((id.to_owned(), e.to_string()));
                    continue;
                }
            };
            let mut verified = None;
            if names.contains(&verified_name(id)) {
                let v = self.store.read_small(&verified_name(id), MANIFEST_CAP).await?;
                verified = Verification::parse_verified(&m, &v, self.key()).ok();
            }
            cat.entries.push(Entry { manifest: m, verified });
        }
        cat.entries.sort_by(|a, b| b.manifest.id.cmp(&a.manifest.id));
        Ok(cat)
    }

    /// Applies retention; returns the plan carried out and the catalog as it now stands
    /// (derived, not listed again).
    pub async fn prune(&self, r: &Retention, tz: Tz) -> Result<(Plan, Catalog), EngineError> {
        let mut cat = self.catalog().await?;
        let items: Vec<Item> = cat
            .entries
            .iter()
            .map(|e| Item {
                id: e.manifest.id.clone(),
                time: DateTime::parse_from_rfc3339(&e.manifest.created)
                    .map(|t| t.to_utc())
                    .unwrap_or_default(),
                verified: e.verified.is_some(),
            })
            .collect();
        let plan = retention::plan(&items, r, tz);
        for id in &plan.delete {
            // The manifest first: from then on the artifact does not exist, whatever fails next.
            self.store.delete(&manifest_name(id)).await?;
            self.store.delete(&verified_name(id)).await?;
            self.store.delete(&data_name(id)).await?;
        }
        cat.entries.retain(|e| !plan.delete.contains(&e.manifest.id));
        Ok((plan, cat))
    }
}
