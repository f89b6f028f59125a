//! The SSH engine: one authenticated connection per host (russh), with the server's key checked
//! against what the Host pins before anything is sent, commands with timeouts and captured
//! output, and atomic file uploads.

pub mod binary;
pub mod pool;
pub mod quote;
mod stream;
pub mod tunnel;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use russh::client::{self, Handle};
use russh::keys::{HashAlg, PrivateKey, PrivateKeyWithHashAlg, PublicKey};
use russh::{ChannelMsg, Disconnect};

pub use pool::Pool;
pub use quote::{quote, valid_remote_path};

/// Which server keys a connection accepts.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum HostKeyPolicy {
    /// Exactly this key (`ssh-ed25519 AAAA...`, as in `known_hosts` or `*.pub`).
    Pinned(String),
    /// Whatever key the server shows the first time (the caller records it and pins it from
    /// then on); `Some` once recorded.
    AcceptNew(Option<String>),
}

#[derive(Clone)]
pub struct Target {
    /// Host name or address.
    pub address: String,
    pub port: u16,
    pub user: String,
    pub key: Arc<PrivateKey>,
    pub host_key: HostKeyPolicy,
    /// For the TCP connection and the SSH handshake together.
    pub connect_timeout: Duration,
}

impl std::fmt::Debug for Target {
    // The private key never reaches a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}:{}", self.user, self.address, self.port)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the private key in {0} is not a usable OpenSSH private key")]
    BadKey(String),
    #[error("the pinned host key is not an OpenSSH public key line (`ssh-ed25519 AAAA...`)")]
    BadPinnedKey,
    #[error(
        "host key mismatch for {target}: expected {expected}, the server presented {presented}; refusing to connect"
    )]
    HostKeyMismatch { target: String, expected: String, presented: String },
    #[error("could not reach {target}: {reason}")]
    Unreachable { target: String, reason: String },
    #[error("{target} refused the key for user {user}")]
    AuthRefused { target: String, user: String },
    #[error("{what} on {target} did not finish within {seconds}s")]
    Timeout { target: String, what: String, seconds: u64 },
    #[error("the SSH connection to {target} failed: {reason}")]
    Lost { target: String, reason: String },
    #[error("`{command}` on {target} exited with {code}: {output}")]
    Failed { target: String, command: String, code: u32, output: String },
    #[error("{0}")]
    Invalid(String),
}

impl Error {
    /// Worth another try later (the network or the host), as opposed to a refusal.
    pub fn transient(&self) -> bool {
        matches!(self, Error::Unreachable { .. } | Error::Lost { .. } | Error::Timeout { .. })
    }
}

/// Reads an OpenSSH private key (as stored in a Host's Secret).
pub fn private_key(pem: &str, source: &str) -> Result<PrivateKey, Error> {
    russh::keys::decode_secret_key(pem, None).map_err(|_| Error::BadKey(source.to_owned()))
}

fn public_key(line: &str) -> Result<PublicKey, Error> {
    PublicKey::from_openssh(line.trim()).map_err(|_| Error::BadPinnedKey)
}

/// `SHA256:...`, as `ssh-keygen -l` prints it.
pub fn fingerprint(line: &str) -> Result<String, Error> {
    Ok(public_key(line)?.fingerprint(HashAlg::Sha256).to_string())
}

struct Checker {
    expected: Option<PublicKey>,
    /// The key the server presented, for AcceptNew and for the mismatch message.
    seen: Arc<Mutex<Option<PublicKey>>>,
}

impl client::Handler for Checker {
    type Error = russh::Error;

    async fn check_server_key(&mut self, key: &PublicKey) -> Result<bool, Self::Error> {
        *self.seen.lock().unwrap_or_else(|p| p.into_inner()) = Some(key.clone());
        Ok(self.expected.as_ref().is_none_or(|want| want.key_data() == key.key_data()))
    }
}

/// What a command printed and how it ended. Output is trimmed to the last 4 KiB of each stream.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Output {
    pub code: u32,
    pub stdout: String,
    pub stderr: String,
}

const KEEP: usize = 4096;

fn tail(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let t = text.trim_end();
    if t.len() <= KEEP {
        return t.to_owned();
    }
    let mut cut = t.len() - KEEP;
    while !t.is_char_boundary(cut) {
        cut += 1;
    }
    format!("...{}", &t[cut..])
}

/// An authenticated session. Clones share it (a [`Pool`] keeps one); the session ends when
/// the last clone is closed or dropped.
#[derive(Clone)]
pub struct Connection {
    handle: Arc<Handle<Checker>>,
    target: String,
    host_key: String,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SSH connection to {}", self.target)
    }
}

impl Connection {
    /// Connects, checks the server's key against the policy, and logs in with the key.
    pub async fn open(t: &Target) -> Result<Self, Error> {
        let name = format!("{}:{}", t.address, t.port);
        let expected = match &t.host_key {
            HostKeyPolicy::Pinned(line) | HostKeyPolicy::AcceptNew(Some(line)) => Some(public_key(line)?),
            HostKeyPolicy::AcceptNew(None) => None,
        };
        let seen = Arc::new(Mutex::new(None));
        let checker = Checker { expected: expected.clone(), seen: seen.clone() };
        let config = Arc::new(client::Config {
            inactivity_timeout: Some(Duration::from_secs(300)),
            keepalive_interval: Some(Duration::from_secs(15)),
            ..Default::default()
        });
        let seconds = t.connect_timeout.as_secs();
        let connect = client::connect(config, (t.address.as_str(), t.port), checker);
        let mut handle = match tokio::time::timeout(t.connect_timeout, connect).await {
            Err(_) => return Err(Error::Timeout { target: name, what: "connecting".into(), seconds }),
            Ok(Ok(h)) => h,
            Ok(Err(russh::Error::UnknownKey)) => {
                let presented = seen
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .as_ref()
                    .map(|k| k.fingerprint(HashAlg::Sha256).to_string());
                return Err(Error::HostKeyMismatch {
                    target: name,
                    expected: expected
                        .map(|k| k.fingerprint(HashAlg::Sha256).to_string())
                        .unwrap_or_default(),
                    presented: presented.unwrap_or_else(|| "no key".into()),
                });
            }
            Ok(Err(russh::Error::IO(e))) => {
                return Err(Error::Unreachable { target: name, reason: e.to_string() });
            }
            Ok(Err(e)) => return Err(Error::Lost { target: name, reason: e.to_string() }),
        };
        let host_key = seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .and_then(|k| k.to_openssh().ok())
            .ok_or_else(|| Error::Lost { target: name.clone(), reason: "no host key seen".into() })?;
        let hash = handle.best_supported_rsa_hash().await.ok().flatten().flatten();
        let auth = PrivateKeyWithHashAlg::new(t.key.clone(), hash);
        let login =
            tokio::time::timeout(t.connect_timeout, handle.authenticate_publickey(t.user.clone(), auth));
        match login.await {
            Err(_) => return Err(Error::Timeout { target: name, what: "logging in".into(), seconds }),
            Ok(Err(e)) => return Err(Error::Lost { target: name, reason: e.to_string() }),
            Ok(Ok(r)) if !r.success() => {
                return Err(Error::AuthRefused { target: name, user: t.user.clone() });
            }
            Ok(Ok(_)) => {}
        }
        Ok(Self { handle: Arc::new(handle), target: name, host_key })
    }

    /// The server's key as an OpenSSH public key line (to record under AcceptNew).
    pub fn host_key(&self) -> &str {
        &self.host_key
    }

    /// Runs `command` (a shell command line: quote what goes into it with [`quote`]), feeding
    /// `stdin` when given, and returns how it ended whatever the exit code.
    pub async fn exec(
        &self,
        command: &str,
        stdin: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<Output, Error> {
        let run = async {
            let lost = |e: russh::Error| Error::Lost { target: self.target.clone(), reason: e.to_string() };
            let mut ch = self.handle.channel_open_session().await.map_err(lost)?;
            ch.exec(true, command).await.map_err(lost)?;
            if let Some(input) = stdin {
                ch.data(input).await.map_err(lost)?;
            }
            ch.eof().await.map_err(lost)?;
            let (mut out, mut err, mut code) = (Vec::new(), Vec::new(), None);
            while let Some(msg) = ch.wait().await {
                match msg {
                    ChannelMsg::Data { data } => out.extend_from_slice(&data),
                    ChannelMsg::ExtendedData { data, ext: 1 } => err.extend_from_slice(&data),
                    ChannelMsg::ExitStatus { exit_status } => code = Some(exit_status),
                    ChannelMsg::ExitSignal { signal_name, .. } => {
                        return Err(Error::Lost {
                            target: self.target.clone(),
                            reason: format!("the command was killed by signal {signal_name:?}"),
                        });
                    }
                    _ => {}
                }
            }
            let code = code.ok_or_else(|| Error::Lost {
                target: self.target.clone(),
                reason: "the channel closed before the command's exit status".into(),
            })?;
            Ok(Output { code, stdout: tail(&out), stderr: tail(&err) })
        };
        tokio::time::timeout(timeout, run).await.unwrap_or_else(|_| {
            Err(Error::Timeout {
                target: self.target.clone(),
                what: format!("`{}`", first_words(command)),
                seconds: timeout.as_secs(),
            })
        })
    }

    /// Like [`Connection::exec`], but a non-zero exit is an error naming the command.
    pub async fn run(&self, command: &str, timeout: Duration) -> Result<String, Error> {
        let out = self.exec(command, None, timeout).await?;
        if out.code != 0 {
            let output = if out.stderr.is_empty() { out.stdout } else { out.stderr };
            return Err(Error::Failed {
                target: self.target.clone(),
                command: first_words(command),
                code: out.code,
                output,
            });
        }
        Ok(out.stdout)
    }

    /// Writes `content` to `path` atomically: a temporary file in the same directory, fsync,
    /// owner and mode set, then rename over the old file. A reader sees the old or the new
    /// file, never half of one. Returns true when the file changed.
    pub async fn upload(
        &self,
        path: &str,
        content: &[u8],
        mode: u32,
        owner: Option<&str>,
        timeout: Duration,
    ) -> Result<bool, Error> {
        valid_remote_path(path).map_err(Error::Invalid)?;
        if mode > 0o7777 {
            return Err(Error::Invalid(format!("file mode {mode:o} is not a permission mode")));
        }
        if let Some(o) = owner {
            quote::valid_owner(o).map_err(Error::Invalid)?;
        }
        let p = quote(path);
        let chown = owner.map(|o| format!(" && chown {} \"$tmp\"", quote(o))).unwrap_or_default();
        // cmp first: an unchanged file is left alone (and reported as such).
        let script = format!(
            "set -e; d=$(dirname {p}); mkdir -p \"$d\"; tmp=$(mktemp \"$d/.nova.XXXXXX\"); \
             trap 'rm -f \"$tmp\"' EXIT; cat > \"$tmp\"; \
             if [ -f {p} ] && cmp -s \"$tmp\" {p} && [ \"$(stat -c %a {p})\" = {m} ]{same_owner}; then echo unchanged; exit 0; fi; \
             chmod {m} \"$tmp\"{chown}; dd if=\"$tmp\" of=/dev/null conv=fsync status=none 2>/dev/null || sync; \
             mv -f \"$tmp\" {p}; trap - EXIT; echo changed",
            m = format!("{mode:o}"),
            same_owner = owner
                .map(|o| {
                    let fmt = if o.contains(':') { "%U:%G" } else { "%U" };
                    format!(" && [ \"$(stat -c {fmt} {p})\" = {} ]", quote(o))
                })
                .unwrap_or_default(),
        );
        let out = self.exec(&script, Some(content), timeout).await?;
        if out.code != 0 {
            return Err(Error::Failed {
                target: self.target.clone(),
                command: format!("upload of {path}"),
                code: out.code,
                output: out.stderr,
            });
        }
        Ok(out.stdout.trim() == "changed")
    }

    /// Whether the session is still up and the server answers a ping within `timeout`.
    pub async fn alive(&self, timeout: Duration) -> bool {
        if self.handle.is_closed() {
            return false;
        }
        let ping = tokio::time::timeout(timeout, self.handle.send_ping()).await;
        matches!(ping, Ok(Ok(()))) && !self.handle.is_closed()
    }

    /// Whether the session has ended (the server closed it, or it was lost).
    pub fn is_closed(&self) -> bool {
        self.handle.is_closed()
    }

    /// Ends the session politely when this is its last user; a pooled session stays open.
    pub async fn close(self) {
        if let Ok(handle) = Arc::try_unwrap(self.handle) {
            let _ = handle.disconnect(Disconnect::ByApplication, "", "en").await;
        }
    }
}

fn first_words(command: &str) -> String {
    let one_line = command.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.len() > 80 {
        let mut cut = 80;
        while !one_line.is_char_boundary(cut) {
            cut -= 1;
        }
        format!("{}...", &one_line[..cut])
    } else {
        one_line
    }
}

/// Opens a connection, retrying transient failures with exponential backoff (0.5 s, 1 s, 2 s, ...).
pub async fn open_with_retry(t: &Target, attempts: u32) -> Result<Connection, Error> {
    let mut delay = Duration::from_millis(500);
    let mut last = None;
    for _ in 0..attempts.max(1) {
        match Connection::open(t).await {
            Ok(c) => return Ok(c),
            Err(e) if e.transient() => {
                last = Some(e);
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(10));
            }
            Err(e) => return Err(e),
        }
    }
    Err(last
        .unwrap_or_else(|| Error::Lost { target: t.address.clone(), reason: "no attempt was made".into() }))
}
