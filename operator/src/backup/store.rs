//! Where artifacts live: a local directory (what `nova backup` on a host, a PVC or a test uses)
//! or a directory on a Host over SSH. Every write lands in a temporary name first and is
//! renamed into place when whole, so a killed run leaves only a temporary file, which the next
//! run removes. The layout, below the root: `<namespace>/<backup>/<id>.zst` and
//! `<id>.manifest.json`.

use std::path::PathBuf;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::ssh::{Connection, quote};

/// Files whose name starts with this are unfinished writes.
pub const TEMP: &str = ".nova-tmp.";
/// Transfers of one artifact may take this long.
const TRANSFER: Duration = Duration::from_secs(24 * 3600);
const QUICK: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{what} {path}: {reason}")]
    Io { what: &'static str, path: String, reason: String },
    #[error(transparent)]
    Ssh(#[from] crate::ssh::Error),
    #[error("{0} is larger than {1} bytes: not a manifest")]
    TooLarge(String, usize),
    #[error("S3: {0}")]
    S3(String),
}

/// A destination directory for one Backup's artifacts.
#[derive(Clone)]
pub enum Store {
    Dir(PathBuf),
    Host { conn: Connection, dir: String },
    S3(Box<super::s3::S3Store>),
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Store::Dir(d) => write!(f, "directory {}", d.display()),
            Store::Host { dir, .. } => write!(f, "host directory {dir}"),
            Store::S3(s) => write!(f, "{s:?}"),
        }
    }
}

fn io<'a>(what: &'static str, path: &'a std::path::Path) -> impl Fn(std::io::Error) -> StoreError + 'a {
    move |e| StoreError::Io { what, path: path.display().to_string(), reason: e.to_string() }
}

/// What is written between two background flushes to disk.
const SYNC_EVERY: u64 = 64 << 20;

/// Writes `body` to `path` and makes it durable. The artifact must be on disk before its
/// manifest points at it; one fsync at the end would wait for the whole file at once, so every
/// [`SYNC_EVERY`] bytes a flush of what is written so far starts in the background (one at a
/// time) while writing goes on, and the last one waits only for the tail.
async fn write_synced<R: AsyncRead + Unpin + Send>(
    path: &std::path::Path,
    body: R,
) -> Result<(), StoreError> {
    use tokio::io::AsyncBufReadExt;
    let f = tokio::fs::File::create(path).await.map_err(io("creating", path))?;
    // tokio's File sends each write to a blocking thread: 1 MiB at a time, not 8 KiB.
    let mut w = tokio::io::BufWriter::with_capacity(1 << 20, f);
    let mut body = tokio::io::BufReader::with_capacity(1 << 20, body);
    let (mut unsynced, mut syncing) = (0u64, None::<tokio::task::JoinHandle<std::io::Result<()>>>);
    let wait = |h: tokio::task::JoinHandle<std::io::Result<()>>| async move {
        h.await.map_err(std::io::Error::other).and_then(|r| r).map_err(io("syncing", path))
    };
    loop {
        let buf = body.fill_buf().await.map_err(io("writing", path))?;
        if buf.is_empty() {
            break;
        }
        let n = buf.len();
        w.write_all(buf).await.map_err(io("writing", path))?;
        body.consume(n);
        unsynced += n as u64;
        if unsynced >= SYNC_EVERY {
            w.flush().await.map_err(io("writing", path))?;
            if let Some(h) = syncing.take() {
                wait(h).await?;
            }
            let f = w.get_ref().try_clone().await.map_err(io("syncing", path))?;
            syncing = Some(tokio::spawn(async move { f.sync_data().await }));
            unsynced = 0;
        }
    }
    w.flush().await.map_err(io("writing", path))?;
    if let Some(h) = syncing.take() {
        wait(h).await?;
    }
    w.get_ref().sync_all().await.map_err(io("syncing", path))
}

impl Store {
    /// Writes `body` as `name`, whole or not at all. Returns the bytes written.
    pub async fn write<R: AsyncRead + Unpin + Send>(&self, name: &str, body: R) -> Result<(), StoreError> {
        match self {
            Store::Dir(dir) => {
                tokio::fs::create_dir_all(dir).await.map_err(io("creating", dir))?;
                let tmp = dir.join(format!("{TEMP}{name}"));
                write_synced(&tmp, body).await?;
                let dest = dir.join(name);
                tokio::fs::rename(&tmp, &dest).await.map_err(io("renaming", &dest))?;
                Ok(())
            }
            Store::Host { conn, dir } => {
                let (d, final_) = (quote(dir), quote(&format!("{dir}/{name}")));
                let tmp = quote(&format!("{dir}/{TEMP}{name}"));
                let script = format!(
                    "set -e; mkdir -p -m 700 {d}; cat > {tmp}; \
                     dd if={tmp} of=/dev/null conv=fsync status=none 2>/dev/null || sync"
                );
                conn.run_with_input(&script, body, TRANSFER).await?;
                // Renamed by a second command, sent only once the whole body went through: a
                // client killed mid-upload closes the channel, which `cat` takes for the end.
                conn.run(&format!("mv -f {tmp} {final_}"), QUICK).await?;
                Ok(())
            }
            Store::S3(s) => s.write(name, body).await,
        }
    }

    /// Streams `name` into `out` (shut down at the end).
    pub async fn read<W: AsyncWrite + Unpin + Send>(
        &self,
        name: &str,
        out: &mut W,
    ) -> Result<u64, StoreError> {
        match self {
            Store::Dir(dir) => {
                let path = dir.join(name);
                let mut f = tokio::fs::File::open(&path).await.map_err(io("opening", &path))?;
                let n = tokio::io::copy(&mut f, out).await.map_err(io("reading", &path))?;
                out.shutdown().await.map_err(io("reading", &path))?;
                Ok(n)
            }
            Store::Host { conn, dir } => {
                let cmd = format!("cat -- {}", quote(&format!("{dir}/{name}")));
                Ok(conn.run_with_output(&cmd, out, TRANSFER).await?)
            }
            Store::S3(s) => s.read(name, out).await,
        }
    }

    /// Reads a small file whole (a manifest), refusing more than `cap` bytes.
    pub async fn read_small(&self, name: &str, cap: usize) -> Result<Vec<u8>, StoreError> {
        let (mut w, mut r) = tokio::io::duplex(64 * 1024);
        let reading = async {
            let mut buf = Vec::new();
            (&mut r).take(cap as u64 + 1).read_to_end(&mut buf).await.ok();
            buf
        };
        let (done, buf) = tokio::join!(self.read(name, &mut w), reading);
        done?;
        if buf.len() > cap {
            return Err(StoreError::TooLarge(name.into(), cap));
        }
        Ok(buf)
    }

    /// The names in the directory (none when it does not exist yet).
    pub async fn list(&self) -> Result<Vec<String>, StoreError> {
        match self {
            Store::Dir(dir) => {
                let mut out = Vec::new();
                let Ok(mut rd) = tokio::fs::read_dir(dir).await else { return Ok(out) };
                while let Some(e) = rd.next_entry().await.map_err(io("listing", dir))? {
                    out.push(e.file_name().to_string_lossy().into_owned());
                }
                out.sort();
                Ok(out)
            }
            Store::Host { conn, dir } => {
                let d = quote(dir);
                let text = conn.run(&format!("if [ -d {d} ]; then ls -1A -- {d}; fi"), QUICK).await?;
                let mut out: Vec<String> =
                    text.lines().filter(|l| !l.is_empty()).map(str::to_owned).collect();
                out.sort();
                Ok(out)
            }
            Store::S3(s) => s.list().await,
        }
    }

    /// Removes `name`; a name already gone is no error.
    pub async fn delete(&self, name: &str) -> Result<(), StoreError> {
        match self {
            Store::Dir(dir) => {
                let path = dir.join(name);
                match tokio::fs::remove_file(&path).await {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io("removing", &path)(e)),
                    _ => Ok(()),
                }
            }
            Store::Host { conn, dir } => {
                conn.run(&format!("rm -f -- {}", quote(&format!("{dir}/{name}"))), QUICK).await?;
                Ok(())
            }
            Store::S3(s) => s.delete(name).await,
        }
    }
}
