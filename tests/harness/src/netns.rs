//! Network namespaces for tests: a namespace joined to this one by a veth pair with a /30 of
//! its own, so a server inside has an address that is neither loopback nor reachable from
//! anywhere else. Needs CAP_NET_ADMIN and CAP_SYS_ADMIN (root in CI) and `ip` from iproute2.

use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use nix::sched::{CloneFlags, setns};

use crate::Error;

/// A network namespace with a veth link to this process's namespace; removed on drop.
pub struct NetNs {
    name: String,
    host_if: String,
    /// This side's address on the link.
    pub host_ip: Ipv4Addr,
    /// The namespace's address on the link.
    pub ip: Ipv4Addr,
}

fn ip(args: &[&str]) -> Result<(), Error> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|source| Error::Io { what: "running ip (iproute2)".into(), source })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(Error::Io {
            what: format!("ip {}", args.join(" ")),
            source: std::io::Error::other(String::from_utf8_lossy(&out.stderr).trim().to_owned()),
        })
    }
}

impl NetNs {
    pub fn create() -> Result<Self, Error> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let name = format!("nova-test-{pid}-{n}");
        let host_if = format!("nvh{:x}x{n:x}", pid & 0xffff);
        let peer_if = format!("nvn{:x}x{n:x}", pid & 0xffff);
        // 10.<pid-derived>.<n>.0/30: distinct per test process and per namespace within it.
        let second = u8::try_from(100 + pid % 150).unwrap_or(100);
        let third = u8::try_from(n % 256).unwrap_or(0);
        let host_ip = Ipv4Addr::new(10, second, third, 1);
        let ns_ip = Ipv4Addr::new(10, second, third, 2);
        let ns = Self { name, host_if, host_ip, ip: ns_ip };
        ip(&["netns", "add", &ns.name])?;
        ip(&["link", "add", &ns.host_if, "type", "veth", "peer", "name", &peer_if, "netns", &ns.name])?;
        ip(&["addr", "add", &format!("{host_ip}/30"), "dev", &ns.host_if])?;
        ip(&["link", "set", &ns.host_if, "up"])?;
        ip(&["-n", &ns.name, "addr", "add", &format!("{ns_ip}/30"), "dev", &peer_if])?;
        ip(&["-n", &ns.name, "link", "set", &peer_if, "up"])?;
        ip(&["-n", &ns.name, "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// A listening socket on the namespace's address (port 0: any free one). The socket stays
    /// in the namespace; this process keeps serving it from its own.
    pub fn listen(&self, port: u16) -> Result<TcpListener, Error> {
        let path = format!("/var/run/netns/{}", self.name);
        let addr = SocketAddrV4::new(self.ip, port);
        // setns changes the calling thread only: do it on a thread of its own.
        std::thread::spawn(move || -> Result<TcpListener, Error> {
            let io = |what: &str, source| Error::Io { what: what.to_owned(), source };
            let fd = std::fs::File::open(&path).map_err(|e| io("opening the namespace", e))?;
            setns(&fd, CloneFlags::CLONE_NEWNET).map_err(|e| io("entering the namespace", e.into()))?;
            let l = TcpListener::bind(addr).map_err(|e| io("binding in the namespace", e))?;
            l.set_nonblocking(true).map_err(|e| io("making the socket non-blocking", e))?;
            Ok(l)
        })
        .join()
        .map_err(|_| Error::Io {
            what: "namespace thread".into(),
            source: std::io::Error::other("panicked"),
        })?
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        // Deleting the namespace does not always take the host end of the pair along.
        let _ = ip(&["link", "del", &self.host_if]);
        let _ = ip(&["netns", "del", &self.name]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn a_server_in_the_namespace_answers_on_its_address_only() {
        let ns = NetNs::create().unwrap();
        let l = ns.listen(0).unwrap();
        l.set_nonblocking(false).unwrap();
        let addr = l.local_addr().unwrap();
        assert_eq!(addr.ip(), std::net::IpAddr::V4(ns.ip));
        let server = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            s.write_all(b"hi").unwrap();
        });
        let mut c = std::net::TcpStream::connect(addr).unwrap();
        let mut got = String::new();
        c.read_to_string(&mut got).unwrap();
        assert_eq!(got, "hi");
        server.join().unwrap();
        // Nothing listens on that port on loopback: the socket is in the other namespace.
        assert!(std::net::TcpStream::connect(("127.0.0.1", addr.port())).is_err());
        let name = ns.name().to_owned();
        drop(ns);
        let list = Command::new("ip").args(["netns", "list"]).output().unwrap();
        assert!(!String::from_utf8_lossy(&list.stdout).contains(&name), "namespace removed on drop");
    }
}
