//! A reader that counts and hashes what passes through it: the SHA-256 and size of an
//! artifact are taken from the very bytes written to (or read from) the destination.

use std::pin::Pin;
use std::task::{Context, Poll};

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, ReadBuf};

/// Wraps a reader; [`Tap::finish`] gives the bytes seen and their SHA-256.
pub struct Tap<R> {
    inner: R,
    hash: Option<Sha256>,
    bytes: u64,
    /// Also counted here, for whoever shows progress.
    shared: Option<Arc<AtomicU64>>,
}

impl<R> Tap<R> {
    /// Counts and hashes.
    pub fn hashing(inner: R) -> Self {
        Self { inner, hash: Some(Sha256::new()), bytes: 0, shared: None }
    }

    /// Adds every byte to `counter` as well (progress shown elsewhere).
    pub fn reporting(mut self, counter: Arc<AtomicU64>) -> Self {
        self.shared = Some(counter);
        self
    }

    /// Only counts.
    pub fn counting(inner: R) -> Self {
        Self { inner, hash: None, bytes: 0, shared: None }
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Bytes seen and the hex SHA-256 (empty when only counting).
    pub fn finish(self) -> (u64, String, R) {
        let hex = self.hash.map(|h| hex::encode(h.finalize())).unwrap_or_default();
        (self.bytes, hex, self.inner)
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for Tap<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = r {
            let new = &buf.filled()[before..];
            this.bytes += new.len() as u64;
            if let Some(c) = &this.shared {
                c.fetch_add(new.len() as u64, Ordering::Relaxed);
            }
            if let Some(h) = this.hash.as_mut() {
                h.update(new);
            }
        }
        r
    }
}
