//! Receivers for what a system under test sends out, on loopback: an HTTP sink (webhooks) and
//! an SMTP sink (mail), each keeping what arrived. They run on threads of their own and stop
//! when dropped (their listening socket is closed with them).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use crate::{Error, Result};

/// What arrived, shared with the thread that receives it.
pub type Inbox = Arc<Mutex<Vec<String>>>;

/// Listens on a free loopback port; each connection is handled by `handle` on a thread of its
/// own, keeping what arrived in the returned inbox.
fn serve(handle: fn(TcpStream, &Inbox)) -> Result<(u16, Inbox)> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| Error::io("binding a sink", e))?;
    let port = l.local_addr().map_err(|e| Error::io("sink address", e))?.port();
    let inbox = Inbox::default();
    let keep = inbox.clone();
    std::thread::spawn(move || {
        for conn in l.incoming().flatten() {
            let keep = keep.clone();
            std::thread::spawn(move || handle(conn, &keep));
        }
    });
    Ok((port, inbox))
}

/// Accepts POSTs and keeps their bodies; answers 200.
pub struct HttpSink {
    pub port: u16,
    pub inbox: Inbox,
}

impl HttpSink {
    pub fn start() -> Result<Self> {
        let (port, inbox) = serve(http_conn)?;
        Ok(Self { port, inbox })
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }

    pub fn received(&self) -> Vec<String> {
        self.inbox.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

fn http_conn(conn: TcpStream, keep: &Inbox) {
    let mut r = BufReader::new(conn);
    let mut len = 0usize;
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            len = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0; len];
    if r.read_exact(&mut body).is_ok() {
        keep.lock().unwrap_or_else(|p| p.into_inner()).push(String::from_utf8_lossy(&body).into_owned());
    }
    let _ = r.get_mut().write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
}

/// A minimal SMTP server (no TLS, no AUTH offered) that keeps each message's DATA.
pub struct SmtpSink {
    pub port: u16,
    pub inbox: Inbox,
}

impl SmtpSink {
    pub fn start() -> Result<Self> {
        let (port, inbox) = serve(|conn, keep| {
            let _ = smtp_conn(conn, keep);
        })?;
        Ok(Self { port, inbox })
    }

    /// `127.0.0.1:<port>`, a smarthost.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn received(&self) -> Vec<String> {
        self.inbox.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

fn smtp_conn(conn: TcpStream, keep: &Inbox) -> std::io::Result<()> {
    let mut w = conn.try_clone()?;
    let mut r = BufReader::new(conn);
    w.write_all(b"220 sink ESMTP\r\n")?;
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let verb = line.get(..4).unwrap_or_default().to_ascii_uppercase();
        match verb.as_str() {
            "EHLO" => w.write_all(b"250-sink\r\n250 8BITMIME\r\n")?,
            "DATA" => {
                w.write_all(b"354 go on\r\n")?;
                let mut data = String::new();
                loop {
                    let mut l = String::new();
                    if r.read_line(&mut l)? == 0 || l == ".\r\n" || l == ".\n" {
                        break;
                    }
                    data.push_str(&l);
                }
                keep.lock().unwrap_or_else(|p| p.into_inner()).push(data);
                w.write_all(b"250 kept\r\n")?;
            }
            "QUIT" => {
                w.write_all(b"221 bye\r\n")?;
                return Ok(());
            }
            _ => w.write_all(b"250 ok\r\n")?,
        }
    }
}
