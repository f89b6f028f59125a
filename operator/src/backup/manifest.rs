//! The manifest: the commit marker of an artifact, written after its data. It records what the
//! data is (size, SHA-256 of the compressed stream) and, when the Backup has an integrity key,
//! an HMAC-SHA256 over everything else in it. An artifact without a valid manifest does not
//! exist: the catalog is read back from manifests alone.

use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// The manifest format this Nova writes and reads.
pub const FORMAT: &str = "nova.infra.dev/backup-manifest/v1";

/// What kind of stream the data holds (how a restore must read it).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum Payload {
    /// `pg_dump -Fc` output: `pg_restore` reads it.
    PgDump,
    /// A tar archive of files (regular files, directories, symlinks stored as links).
    Tar,
}

/// One artifact's manifest.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub format: String,
    /// Unique within the Backup, sortable by time (`20261129T105000Z-1a2b3c`).
    pub id: String,
    /// `namespace/name` of the Backup that wrote it.
    pub backup: String,
    pub payload: Payload,
    /// A description of the source without secrets (`postgres database shop`, `files on web-1`).
    pub source: String,
    /// RFC 3339, UTC: when the run started.
    pub created: String,
    /// Bytes of the stored (compressed) data.
    pub size: u64,
    /// Bytes before compression.
    pub raw_size: u64,
    /// SHA-256 of the stored data, lower-case hex.
    pub sha256: String,
    /// `zstd`.
    pub compression: String,
    /// How the stored data is encrypted (`age (X25519), 2 recipient(s)`); absent: it is not.
    /// The SHA-256 and size are of the ciphertext, as stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<String>,
    /// Versions of the tools that wrote the data (`nova`, `pg_dump`, `tar`).
    pub tools: Vec<(String, String)>,
    /// HMAC-SHA256 of this manifest with this field absent, hex; absent when unsigned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hmac: Option<String>,
}

/// Why an artifact cannot be trusted. Messages never hold key material.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Integrity {
    #[error("manifest of {0} is not valid JSON of format {FORMAT}: {1}")]
    Unreadable(String, String),
    #[error(
        "artifact {0} is not signed but the Backup has an integrity key (spec.integrity): \
         refused, an unsigned artifact could have been written by anyone with bucket access"
    )]
    Unsigned(String),
    #[error(
        "artifact {0} is signed but no integrity key was given: set spec.integrity.hmacKeySecretRef \
         to the key it was written with"
    )]
    NoKey(String),
    #[error(
        "artifact {0}: the manifest's HMAC does not match: the manifest was changed, or the key in \
         spec.integrity.hmacKeySecretRef is not the one it was written with"
    )]
    BadHmac(String),
    #[error("artifact {id}: the data is {got} bytes, the manifest says {want}")]
    Size { id: String, want: u64, got: u64 },
    #[error("artifact {id}: the data's SHA-256 is {got}, the manifest says {want}: the data is corrupt")]
    Checksum { id: String, want: String, got: String },
}

/// The HMAC of a record's JSON; serde_json writes struct fields in declaration order, so the
/// bytes are canonical.
fn mac_of<T: Serialize>(unsigned: &T, key: &[u8]) -> Hmac<Sha256> {
    let bytes = serde_json::to_vec(unsigned).unwrap_or_default();
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(&bytes);
    mac
}

/// Checks a record's signature, fail-closed (see [`Manifest::parse_verified`]).
fn check_sig(
    id: &str,
    key: Option<&[u8]>,
    hmac: Option<&str>,
    mac: impl FnOnce(&[u8]) -> Hmac<Sha256>,
) -> Result<(), Integrity> {
    match (key, hmac) {
        (Some(_), None) => Err(Integrity::Unsigned(id.into())),
        (None, Some(_)) => Err(Integrity::NoKey(id.into())),
        (None, None) => Ok(()),
        (Some(k), Some(h)) => {
            // Nova writes lower-case hex: any other spelling is a changed manifest.
            if h.bytes().any(|b| b.is_ascii_uppercase()) {
                return Err(Integrity::BadHmac(id.into()));
            }
            let given = hex::decode(h).map_err(|_| Integrity::BadHmac(id.into()))?;
            mac(k).verify_slice(&given).map_err(|_| Integrity::BadHmac(id.into()))
        }
    }
}

/// The record of a restore drill that passed, stored beside the artifact (signed like it):
/// the catalog's "verified" is read back from these.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Verification {
    pub id: String,
    /// The artifact's SHA-256 that was restored.
    pub sha256: String,
    /// RFC 3339, UTC.
    pub verified_at: String,
    /// What the drill did (`pg_restore into a scratch database`, `extracted 12 files, checksums compared`).
    pub method: String,
    /// How long the restore took: the measured recovery time.
    pub restore_millis: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hmac: Option<String>,
}

impl Verification {
    fn mac(&self, key: &[u8]) -> Hmac<Sha256> {
        mac_of(&Verification { hmac: None, ..self.clone() }, key)
    }

    pub fn sign(&mut self, key: Option<&[u8]>) {
        self.hmac = key.map(|k| hex::encode(self.mac(k).finalize().into_bytes()));
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).unwrap_or_default();
        v.push(b'\n');
        v
    }

    /// Reads a record for the artifact `m`; one for other data, or badly signed, is refused.
    pub fn parse_verified(m: &Manifest, bytes: &[u8], key: Option<&[u8]>) -> Result<Self, Integrity> {
        let v: Verification =
            serde_json::from_slice(bytes).map_err(|e| Integrity::Unreadable(m.id.clone(), e.to_string()))?;
        check_sig(&m.id, key, v.hmac.as_deref(), |k| v.mac(k))?;
        if v.id != m.id || v.sha256 != m.sha256 {
            return Err(Integrity::Unreadable(
                m.id.clone(),
                "the verification record is for other data".into(),
            ));
        }
        Ok(v)
    }
}

impl Manifest {
    fn mac(&self, key: &[u8]) -> Hmac<Sha256> {
        mac_of(&Manifest { hmac: None, ..self.clone() }, key)
    }

    /// Signs the manifest with `key` (or leaves it unsigned without one).
    pub fn sign(&mut self, key: Option<&[u8]>) {
        self.hmac = key.map(|k| hex::encode(self.mac(k).finalize().into_bytes()));
    }

    /// The JSON written to the destination.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).unwrap_or_default();
        v.push(b'\n');
        v
    }

    /// Reads a manifest and checks its signature, fail-closed: with a key, an unsigned or
    /// wrongly signed manifest is refused; without one, a signed manifest is refused too (the
    /// caller lost the key that the artifact needs).
    pub fn parse_verified(id: &str, bytes: &[u8], key: Option<&[u8]>) -> Result<Self, Integrity> {
        let m: Manifest =
            serde_json::from_slice(bytes).map_err(|e| Integrity::Unreadable(id.into(), e.to_string()))?;
        if m.format != FORMAT || m.id != id {
            let why = format!("format {:?}, id {:?}", m.format, m.id);
            return Err(Integrity::Unreadable(id.into(), why));
        }
        check_sig(id, key, m.hmac.as_deref(), |k| m.mac(k))?;
        Ok(m)
    }

    /// Checks data read back against the manifest.
    pub fn check_data(&self, size: u64, sha256: &str) -> Result<(), Integrity> {
        if size != self.size {
            return Err(Integrity::Size { id: self.id.clone(), want: self.size, got: size });
        }
        if sha256 != self.sha256 {
            return Err(Integrity::Checksum {
                id: self.id.clone(),
                want: self.sha256.clone(),
                got: sha256.into(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Manifest {
        Manifest {
            format: FORMAT.into(),
            id: "20261129T105000Z-0001".into(),
            backup: "shop/db".into(),
            payload: Payload::PgDump,
            source: "postgres database shop".into(),
            created: "2026-11-29T10:50:00Z".into(),
            size: 1234,
            raw_size: 5678,
            sha256: "ab".repeat(32),
            compression: "zstd".into(),
            encryption: None,
            tools: vec![("nova".into(), "0.1.0".into())],
            hmac: None,
        }
    }

    #[test]
    fn signed_round_trip_and_fail_closed() {
        let mut m = sample();
        m.sign(Some(b"k1"));
        let bytes = m.to_bytes();
        let id = &m.id;
        assert_eq!(Manifest::parse_verified(id, &bytes, Some(b"k1")).unwrap(), m);
        assert_eq!(Manifest::parse_verified(id, &bytes, Some(b"k2")), Err(Integrity::BadHmac(id.clone())));
        assert_eq!(Manifest::parse_verified(id, &bytes, None), Err(Integrity::NoKey(id.clone())));
        let mut unsigned = sample();
        unsigned.sign(None);
        let u = unsigned.to_bytes();
        assert_eq!(Manifest::parse_verified(id, &u, Some(b"k1")), Err(Integrity::Unsigned(id.clone())));
        assert!(Manifest::parse_verified(id, &u, None).is_ok());
        assert!(matches!(
            Manifest::parse_verified("other", &bytes, Some(b"k1")),
            Err(Integrity::Unreadable(..))
        ));
    }

    #[test]
    fn every_single_bit_flip_of_a_signed_manifest_is_refused() {
        let mut m = sample();
        m.sign(Some(b"key"));
        let bytes = m.to_bytes();
        for bit in 0..bytes.len() * 8 {
            let mut b = bytes.clone();
            b[bit / 8] ^= 1 << (bit % 8);
            // Whitespace-only flips (a space to a tab inside pretty JSON, say) leave the same
            // manifest: that is no tampering. Anything else must be refused.
            if let Ok(parsed) = Manifest::parse_verified(&m.id, &b, Some(b"key")) {
                assert_eq!(parsed, m, "bit {bit} changed the manifest and passed");
            }
        }
    }

    #[test]
    fn data_checks_name_what_differs() {
        let m = sample();
        assert!(m.check_data(1234, &"ab".repeat(32)).is_ok());
        assert!(matches!(m.check_data(1233, &"ab".repeat(32)), Err(Integrity::Size { .. })));
        let e = m.check_data(1234, &"cd".repeat(32)).unwrap_err();
        assert!(e.to_string().contains("corrupt"), "{e}");
    }
}
