//! Commands whose input or output is a stream too large to hold: a backup's tar of a host's
//! files, an artifact written to or read from a host directory. Data moves through in SSH
//! window-sized pieces; nothing is buffered whole.

use std::time::Duration;

use russh::ChannelMsg;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::{Connection, Error, first_words, tail};

impl Connection {
    fn lost(&self) -> impl Fn(russh::Error) -> Error + '_ {
        |e| Error::Lost { target: self.target.clone(), reason: e.to_string() }
    }

    fn timed_out(&self, command: &str, timeout: Duration) -> Error {
        Error::Timeout {
            target: self.target.clone(),
            what: format!("`{}`", first_words(command)),
            seconds: timeout.as_secs(),
        }
    }

    fn check(&self, command: &str, code: Option<u32>, err: &[u8]) -> Result<(), Error> {
        match code {
            Some(0) => Ok(()),
            Some(code) => Err(Error::Failed {
                target: self.target.clone(),
                command: first_words(command),
                code,
                output: tail(err),
            }),
            None => Err(Error::Lost {
                target: self.target.clone(),
                reason: format!("`{}` ended without an exit status (killed?)", first_words(command)),
            }),
        }
    }

    /// Runs `command` with `input` streamed to its stdin; a non-zero exit is an error.
    pub async fn run_with_input<R>(&self, command: &str, input: R, timeout: Duration) -> Result<(), Error>
    where
        R: AsyncRead + Unpin + Send,
    {
        let run = async {
            let mut ch = self.handle.channel_open_session().await.map_err(self.lost())?;
            ch.exec(true, command).await.map_err(self.lost())?;
            ch.data(input).await.map_err(self.lost())?;
            ch.eof().await.map_err(self.lost())?;
            let (mut err, mut code) = (Vec::new(), None);
            while let Some(msg) = ch.wait().await {
                match msg {
                    ChannelMsg::ExtendedData { data, ext: 1 } => keep_tail(&mut err, &data),
                    ChannelMsg::ExitStatus { exit_status } => code = Some(exit_status),
                    _ => {}
                }
            }
            self.check(command, code, &err)
        };
        tokio::time::timeout(timeout, run).await.unwrap_or_else(|_| Err(self.timed_out(command, timeout)))
    }

    /// Runs `command` and streams its stdout into `out` (shut down at the end); a non-zero
    /// exit is an error. Returns the bytes written.
    pub async fn run_with_output<W>(
        &self,
        command: &str,
        out: &mut W,
        timeout: Duration,
    ) -> Result<u64, Error>
    where
        W: AsyncWrite + Unpin + Send,
    {
        self.run_with_input_output(command, &[], out, timeout).await
    }

    /// As [`Self::run_with_output`], with a small `input` (a line or two, written before the
    /// output is read) on the command's stdin.
    pub async fn run_with_input_output<W>(
        &self,
        command: &str,
        input: &[u8],
        out: &mut W,
        timeout: Duration,
    ) -> Result<u64, Error>
    where
        W: AsyncWrite + Unpin + Send,
    {
        let run = async {
            let mut ch = self.handle.channel_open_session().await.map_err(self.lost())?;
            ch.exec(true, command).await.map_err(self.lost())?;
            if !input.is_empty() {
                ch.data(input).await.map_err(self.lost())?;
            }
            ch.eof().await.map_err(self.lost())?;
            let (mut err, mut code, mut n) = (Vec::new(), None, 0u64);
            let broken = |e: std::io::Error| Error::Lost {
                target: self.target.clone(),
                reason: format!("the reader of `{}` stopped: {e}", first_words(command)),
            };
            while let Some(msg) = ch.wait().await {
                match msg {
                    ChannelMsg::Data { data } => {
                        out.write_all(&data).await.map_err(broken)?;
                        n += data.len() as u64;
                    }
                    ChannelMsg::ExtendedData { data, ext: 1 } => keep_tail(&mut err, &data),
                    ChannelMsg::ExitStatus { exit_status } => code = Some(exit_status),
                    _ => {}
                }
            }
            out.shutdown().await.map_err(broken)?;
            self.check(command, code, &err).map(|()| n)
        };
        tokio::time::timeout(timeout, run).await.unwrap_or_else(|_| Err(self.timed_out(command, timeout)))
    }
}

/// Keeps the last 8 KiB of a stream (stderr of a long command).
fn keep_tail(buf: &mut Vec<u8>, data: &[u8]) {
    buf.extend_from_slice(data);
    if buf.len() > 8192 {
        buf.drain(..buf.len() - 8192);
    }
}
