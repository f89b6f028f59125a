//! Network namespaces for tests: a namespace joined to this one by a veth pair with a /30 of
//! its own, so a server inside has an address that is neither loopback nor reachable from
//! anywhere else. Needs CAP_NET_ADMIN and CAP_SYS_ADMIN (root in CI) and `ip` from iproute2.

use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};
use std::process::Command;

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

/// The /30s handed out: 10.100.0.0 to 10.249.255.252.
const SUBNETS: u32 = 150 * 256 * 64;

/// Addresses configured on this namespace's interfaces now (`ip -4 -o addr`).
fn addresses_in_use() -> String {
    Command::new("ip")
        .args(["-4", "-o", "addr"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

impl NetNs {
    /// A namespace on the first /30 that no interface here uses. The host-side interface is
    /// named after the subnet, so two processes that pick the same one at once collide on the
    /// name (the kernel refuses the second) instead of sharing a route; a namespace left over
    /// by a killed test keeps its subnet and is stepped over.
    pub fn create() -> Result<Self, Error> {
        let in_use = addresses_in_use();
        let mut last = None;
        for idx in 0..SUBNETS {
            let [_, second, third, fourth] = (idx * 4).to_be_bytes();
            let host_ip = Ipv4Addr::new(10, 100 + second, third, fourth + 1);
            if in_use.contains(&format!(" {host_ip}/")) {
                continue;
            }
            let ns = Self {
                name: format!("nova-test-{idx:x}"),
                host_if: format!("nvh{idx:x}"),
                host_ip,
                ip: Ipv4Addr::new(10, 100 + second, third, fourth + 2),
            };
            // Dropping a value that was never set up would remove another's names.
            let ns = std::mem::ManuallyDrop::new(ns);
            match ns.set_up(&format!("nvn{idx:x}")) {
                Ok(()) => return Ok(std::mem::ManuallyDrop::into_inner(ns)),
                Err(e) if e.to_string().contains("exists") => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| Error::Other("no free test subnet in 10.100.0.0/8".into())))
    }

    /// Creates the namespace and the pair; on failure removes only what it made (a name that
    /// exists is another's).
    fn set_up(&self, peer_if: &str) -> Result<(), Error> {
        ip(&["netns", "add", &self.name])?;
        let pair =
            ["link", "add", &self.host_if, "type", "veth", "peer", "name", peer_if, "netns", &self.name];
        if let Err(e) = ip(&pair) {
            let _ = ip(&["netns", "del", &self.name]);
            return Err(e);
        }
        let configured = ip(&["addr", "add", &format!("{}/30", self.host_ip), "dev", &self.host_if])
            .and_then(|()| ip(&["link", "set", &self.host_if, "up"]))
            .and_then(|()| ip(&["-n", &self.name, "addr", "add", &format!("{}/30", self.ip), "dev", peer_if]))
            .and_then(|()| ip(&["-n", &self.name, "link", "set", peer_if, "up"]))
            .and_then(|()| ip(&["-n", &self.name, "link", "set", "lo", "up"]));
        if configured.is_err() {
            self.remove();
        }
        configured
    }

    fn remove(&self) {
        // Deleting the namespace does not always take the host end of the pair along.
        let _ = ip(&["link", "del", &self.host_if]);
        let _ = ip(&["netns", "del", &self.name]);
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Joins this namespace and `other` by a veth pair of their own, with a route to each
    /// other's address over it: two machines on one LAN, with no forwarding in this namespace
    /// (which would change a sysctl of the machine the tests run on). The pair lives inside
    /// the two namespaces and goes with them.
    pub fn link(&self, other: &NetNs) -> Result<(), Error> {
        let suffix = |n: &str| n.trim_start_matches("nova-test-").to_owned();
        let (a, b) = (suffix(&self.name), suffix(&other.name));
        // Unique here while both ends pass through this namespace (15 characters at most).
        let (here, there) = (format!("nl{a}x{b}"), format!("nm{a}x{b}"));
        ip(&["link", "add", &here, "type", "veth", "peer", "name", &there])?;
        let moved = ip(&["link", "set", &here, "netns", &self.name])
            .and_then(|()| ip(&["link", "set", &there, "netns", &other.name]));
        if let Err(e) = moved {
            let _ = ip(&["link", "del", &here]);
            let _ = ip(&["link", "del", &there]);
            return Err(e);
        }
        for (ns, dev, to) in [(self, &here, other.ip), (other, &there, self.ip)] {
            ip(&["-n", &ns.name, "link", "set", dev, "up"])?;
            ip(&["-n", &ns.name, "route", "add", &format!("{to}/32"), "dev", dev])?;
        }
        Ok(())
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
        self.remove();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    /// A link left by a killed test (another naming scheme, its namespace gone) keeps its
    /// subnet: routing to it would reach nothing (seen in CI as an sshd never answering).
    #[test]
    fn a_subnet_in_use_by_another_interface_is_stepped_over() {
        let first = NetNs::create().unwrap();
        let taken = first.host_ip;
        drop(first);
        // A veth pair both of whose ends stay here (no dummy driver on every kernel).
        let leftover = format!("nvleft{}", std::process::id() % 100_000);
        let peer = format!("nvpeer{}", std::process::id() % 100_000);
        ip(&["link", "add", &leftover, "type", "veth", "peer", "name", &peer]).unwrap();
        let added = ip(&["addr", "add", &format!("{taken}/30"), "dev", &leftover]);
        let next = added.and_then(|()| NetNs::create());
        let _ = ip(&["link", "del", &leftover]);
        let next = next.unwrap();
        assert_ne!(next.host_ip, taken, "the leftover's subnet was handed out again");
        let subnet = |a: Ipv4Addr| u32::from(a) & !3;
        assert_ne!(subnet(next.ip), subnet(taken), "{} shares {taken}'s /30", next.ip);
    }

    /// Two linked namespaces reach each other's address; a third, not linked, reaches neither.
    #[test]
    fn linked_namespaces_reach_each_other_and_no_one_else_does() {
        let (a, b, c) = (NetNs::create().unwrap(), NetNs::create().unwrap(), NetNs::create().unwrap());
        a.link(&b).unwrap();
        // A connection from inside `from` to a server listening in `to`.
        let reaches = |from: &NetNs, to: &NetNs| {
            let l = to.listen(0).unwrap();
            let addr = l.local_addr().unwrap();
            let path = format!("/var/run/netns/{}", from.name());
            std::thread::spawn(move || {
                let fd = std::fs::File::open(&path).unwrap();
                setns(&fd, CloneFlags::CLONE_NEWNET).unwrap();
                std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(2)).is_ok()
            })
            .join()
            .unwrap()
        };
        assert!(reaches(&a, &b) && reaches(&b, &a), "the linked namespaces do not reach each other");
        assert!(!reaches(&c, &a) && !reaches(&a, &c), "a namespace not linked reaches the others");
    }

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
        // The name may be handed out again at once (tests run in parallel): compare the
        // namespace itself, which nsfs names by inode.
        use std::os::unix::fs::MetadataExt;
        let path = format!("/run/netns/{}", ns.name());
        let inode = std::fs::metadata(&path).unwrap().ino();
        drop(ns);
        let now = std::fs::metadata(&path).map(|m| m.ino()).ok();
        assert_ne!(now, Some(inode), "namespace removed on drop");
    }
}
