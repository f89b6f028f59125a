//! Test hosts boot systemd and sshd, side by side, each with its own address and host key, and
//! stop entirely when killed, each in cgroups of its own.

use std::net::TcpStream;
use std::time::Duration;

use test_cluster::testhost::TestHost;

#[test]
fn two_hosts_boot_side_by_side_and_die_with_their_pid1() {
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| TestHost::start("alpha"));
        let b = s.spawn(|| TestHost::start("beta"));
        (a.join().unwrap(), b.join().unwrap())
    });
    let (mut a, b) = (a.unwrap(), b.unwrap());
    assert_ne!(a.ssh_addr, b.ssh_addr);
    assert_ne!(a.host_key, b.host_key, "every host has its own key");
    assert_eq!(a.ssh("hostname").unwrap().trim(), "alpha");
    assert_eq!(b.ssh("hostname").unwrap().trim(), "beta");
    // systemd is PID 1 and manages sshd.
    assert_eq!(a.ssh("cat /proc/1/comm").unwrap().trim(), "systemd");
    assert_eq!(a.ssh("systemctl is-active ssh").unwrap().trim(), "active");
    // A file written on one host is not on the other (copy-on-write roots).
    a.ssh("echo hi > /root/only-here").unwrap();
    assert!(a.root().join("root/only-here").exists());
    assert!(b.ssh("test -e /root/only-here && echo yes || echo no").unwrap().trim() == "no");

    // apt works with no route out: the local repository is mounted in.
    let policy = a.ssh("apt-get -qq update && apt-cache policy jq | grep Candidate").unwrap();
    assert!(policy.contains("Candidate: 1."), "{policy}");

    // Each host's units live in cgroups of its own: stopping a unit on one host leaves the
    // unit of the same name on the other running (they once shared one cgroup, and a stop on
    // one host killed the other's processes).
    for h in [&a, &b] {
        h.ssh("systemd-run --unit=nova-probe sleep 600").unwrap();
    }
    let pid = b.ssh("systemctl show -p MainPID --value nova-probe").unwrap();
    a.ssh("systemctl stop nova-probe").unwrap();
    assert_eq!(b.ssh("systemctl is-active nova-probe || true").unwrap().trim(), "active");
    assert_eq!(b.ssh("systemctl show -p MainPID --value nova-probe").unwrap(), pid, "b's sleep untouched");
    let own = std::fs::read_to_string(format!("/proc/{}/cgroup", a.pid1().unwrap())).unwrap();
    assert!(!own.contains(":/init.scope"), "a's systemd is not at the root: {own}");

    let addr = a.ssh_addr;
    a.kill();
    assert!(TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err(), "sshd went with PID 1");
    assert_eq!(b.ssh("hostname").unwrap().trim(), "beta", "the other host is untouched");
}
