//! Nova's own binary on a host (the Backup timers' `nova backup tick`, the built-in trainer's
//! `nova train`): put there once, checked by SHA-256, refused on another architecture.

use std::path::Path;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;

use super::{Connection, quote};

/// Nova's binary on a host.
pub const BIN: &str = "/usr/local/lib/nova/nova";

#[derive(Debug, thiserror::Error)]
pub enum BinaryError {
    /// The host cannot run it; the message names the field that chose the host.
    #[error("{0}")]
    Arch(String),
    #[error(transparent)]
    Ssh(#[from] super::Error),
    #[error("reading Nova's own binary {path}: {reason}")]
    Read { path: String, reason: String },
}

/// Hex SHA-256 of Nova's binary at `path`, computed once per process (it does not change
/// under a running Nova; the operator asks on every reconcile of a timer's Backup).
pub async fn sha256(path: &Path) -> Result<String, BinaryError> {
    static SEEN: std::sync::Mutex<Option<(std::path::PathBuf, String)>> = std::sync::Mutex::new(None);
    if let Some((p, h)) = SEEN.lock().ok().and_then(|g| g.clone())
        && p == path
    {
        return Ok(h);
    }
    let h = file_sha256(path).await?;
    if let Ok(mut g) = SEEN.lock() {
        *g = Some((path.to_owned(), h.clone()));
    }
    Ok(h)
}

/// Hex SHA-256 of a file, read in pieces.
async fn file_sha256(path: &Path) -> Result<String, BinaryError> {
    let bad =
        |e: std::io::Error| BinaryError::Read { path: path.display().to_string(), reason: e.to_string() };
    let mut f = tokio::fs::File::open(path).await.map_err(bad)?;
    let mut h = Sha256::new();
    let mut buf = vec![0; 1 << 20];
    loop {
        let n = f.read(&mut buf).await.map_err(bad)?;
        if n == 0 {
            return Ok(hex::encode(h.finalize()));
        }
        h.update(&buf[..n]);
    }
}

/// Puts `binary` at [`BIN`] unless the same bytes are there; refuses a host of another
/// architecture, naming `field` (what chose the host). Returns whether it was uploaded.
pub async fn ensure(conn: &Connection, binary: &Path, field: &str) -> Result<bool, BinaryError> {
    let t = Duration::from_secs(60);
    let arch = conn.run("uname -m", t).await?;
    if arch.trim() != std::env::consts::ARCH {
        let why =
            format!("the host is {}, Nova's binary is built for {}", arch.trim(), std::env::consts::ARCH);
        return Err(BinaryError::Arch(format!("{field}: {why}")));
    }
    let want = sha256(binary).await?;
    let have = conn.run(&format!("sha256sum {BIN} 2>/dev/null | cut -d' ' -f1 || true"), t).await?;
    if have.trim() == want {
        return Ok(false);
    }
    let f = tokio::fs::File::open(binary)
        .await
        .map_err(|e| BinaryError::Read { path: binary.display().to_string(), reason: e.to_string() })?;
    let cmd = format!(
        "set -e; d=$(dirname {b}); install -d \"$d\"; t=$(mktemp \"$d/.nova.XXXXXX\"); trap 'rm -f \"$t\"' EXIT; \
         cat > \"$t\"; [ \"$(sha256sum \"$t\" | cut -d' ' -f1)\" = {want} ]; chmod 755 \"$t\"; mv -f \"$t\" {b}; trap - EXIT",
        b = quote(BIN)
    );
    conn.run_with_input(&cmd, f, Duration::from_secs(1800)).await?;
    Ok(true)
}
