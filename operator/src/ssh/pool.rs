//! Connections kept open between reconciles, one per target: a Host re-checked every few
//! minutes, or a Platform's round on its hosts, reuses the authenticated connection instead of
//! a TCP + key exchange + login each time. The key of an entry is everything that decides
//! whether a connection may be used (address, port, user, the client key, the host-key
//! policy), so a rotated key or a changed pin opens a new one.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use russh::keys::HashAlg;

use super::{Connection, Error, HostKeyPolicy, Target, open_with_retry};

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct Key {
    address: String,
    port: u16,
    user: String,
    client_key: String,
    host_key: HostKeyPolicy,
}

impl Key {
    fn of(t: &Target) -> Self {
        Key {
            address: t.address.clone(),
            port: t.port,
            user: t.user.clone(),
            client_key: t.key.public_key().fingerprint(HashAlg::Sha256).to_string(),
            host_key: t.host_key.clone(),
        }
    }
}

struct Entry {
    conn: Connection,
    last_used: Instant,
}

pub struct Pool {
    idle: Duration,
    entries: tokio::sync::Mutex<HashMap<Key, Entry>>,
    opened: AtomicU64,
}

/// How long a reused connection may take to answer a ping before it counts as gone.
const PING: Duration = Duration::from_secs(3);

impl Pool {
    /// A pool closing connections unused for `idle`.
    pub fn new(idle: Duration) -> Self {
        Pool { idle, entries: tokio::sync::Mutex::new(HashMap::new()), opened: AtomicU64::new(0) }
    }

    /// An open connection to `t`: the pooled one when it still answers, else a new one (opened
    /// with `attempts` tries, as [`open_with_retry`]). Its `close` leaves the session to the pool.
    pub async fn get(&self, t: &Target, attempts: u32) -> Result<Connection, Error> {
        let key = Key::of(t);
        let pooled = {
            let mut entries = self.entries.lock().await;
            // Dropping the last handle of an idle connection ends its session.
            entries.retain(|_, e| !e.conn.is_closed() && e.last_used.elapsed() < self.idle);
            entries.get(&key).map(|e| e.conn.clone())
        };
        // A host that rebooted or a NAT that forgot the connection leaves it looking open until
        // the keepalives give up; one round trip tells.
        if let Some(c) = pooled
            && c.alive(PING).await
        {
            if let Some(e) = self.entries.lock().await.get_mut(&key) {
                e.last_used = Instant::now();
            }
            return Ok(c);
        }
        let conn = open_with_retry(t, attempts).await?;
        self.opened.fetch_add(1, Ordering::Relaxed);
        self.entries.lock().await.insert(key, Entry { conn: conn.clone(), last_used: Instant::now() });
        Ok(conn)
    }

    /// How many connections this pool has opened (a reused one does not count).
    pub fn opened(&self) -> u64 {
        self.opened.load(Ordering::Relaxed)
    }
}
