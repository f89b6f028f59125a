//! A local port that leads, over the SSH session, to a port on the host's loopback: how Nova
//! talks HTTP to a service that listens on the host's 127.0.0.1 only (Prometheus, Alertmanager)
//! without opening it to the network. Any HTTP client works through it unchanged.

use std::net::SocketAddr;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::{Connection, Error};

/// Forwards connections to `127.0.0.1:<local>` here to `127.0.0.1:<remote>` on the host, each
/// through a `direct-tcpip` channel of the session. Forwarding stops when this is dropped.
pub struct Tunnel {
    local: SocketAddr,
    task: JoinHandle<()>,
}

impl Tunnel {
    /// The base URL to reach the host's port through the tunnel.
    pub fn url(&self) -> String {
        format!("http://{}", self.local)
    }
}

impl Drop for Tunnel {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Connection {
    /// Opens a tunnel to `remote_port` on the host's loopback.
    pub async fn tunnel(&self, remote_port: u16) -> Result<Tunnel, Error> {
        let io = |e: std::io::Error| Error::Invalid(format!("a local port for the tunnel: {e}"));
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.map_err(io)?;
        let local = listener.local_addr().map_err(io)?;
        let conn = self.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut socket, from)) = listener.accept().await {
                let conn = conn.clone();
                tokio::spawn(async move {
                    let channel = conn
                        .handle
                        .channel_open_direct_tcpip(
                            "127.0.0.1",
                            remote_port.into(),
                            from.ip().to_string(),
                            from.port().into(),
                        )
                        .await;
                    // A refused channel closes the local socket: the client sees the error.
                    if let Ok(channel) = channel {
                        let mut stream = channel.into_stream();
                        let _ = tokio::io::copy_bidirectional(&mut socket, &mut stream).await;
                    }
                });
            }
        });
        Ok(Tunnel { local, task })
    }
}
