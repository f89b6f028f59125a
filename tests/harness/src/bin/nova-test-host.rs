//! A test host for people: `scripts/test-host <name>` runs this in the foreground.
//! Boots the host (see `test_cluster::testhost`), prints how to reach it, and on SIGTERM or
//! SIGINT (Ctrl-C) kills it and removes everything it made.

use test_cluster::testhost::TestHost;

fn main() {
    let name = std::env::args().nth(1).unwrap_or_else(|| "host-1".into());
    let host = match TestHost::start(&name) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("the test host did not start: {e}");
            std::process::exit(1);
        }
    };
    println!("test host {name} is up");
    println!("  address:  {}", host.ssh_addr);
    println!("  host key: {}", host.host_key);
    println!(
        "  ssh -i {} -o UserKnownHostsFile=/dev/null root@{}",
        host.client_key_path().display(),
        host.ssh_addr.ip()
    );
    println!("Ctrl-C stops it.");
    let mut signals = nix::sys::signal::SigSet::empty();
    signals.add(nix::sys::signal::Signal::SIGINT);
    signals.add(nix::sys::signal::Signal::SIGTERM);
    // Block both, then wait for one: the host is dropped (and cleaned up) on the way out.
    let _ = signals.thread_block();
    let _ = signals.wait();
    drop(host);
}
