//! Bootstrap of fresh test hosts: Nova against ansible-playbook doing the same tasks, side by
//! side in one run; then Nova alone on 1, 10 and 25 hosts. See docs/benchmarks.md.
//!
//!     cargo bench -p nova --bench hosts -- [--hosts 10] [--runs 3] [--sizes 1,10,25|none] [--ansible PATH]
//!
//! Needs root (test hosts), and ansible-playbook (ansible-core from PyPI) for the comparison:
//! `python3 -m venv ~/.cache/nova/ansible-venv && ~/.cache/nova/ansible-venv/bin/pip install ansible-core`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{StreamExt, stream};
use nova::api::host::HostSpec;
use nova::host::bootstrap;
use nova::ssh;
use serde_json::json;
use test_cluster::testhost::TestHost;

mod common;
use common::{arg, median, quiesce};

const DEPLOY_KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFx4mJ0z3OLr4D0T2l3oCqL6tWcG5dU0m3X3Yk3Yk3Yk deploy@ci";

/// The same three tasks for both tools: packages, a sudo user with a key, sshd hardening.
fn spec(h: &TestHost) -> HostSpec {
    serde_json::from_value(json!({
        "address": h.ssh_addr.ip().to_string(), "hostKey": h.host_key,
        "sshKeySecretRef": {"name": "unused", "key": "unused"},
        "bootstrap": {"packages": ["jq", "tree"],
                      "users": [{"name": "deploy", "sudo": true, "authorizedKeys": [DEPLOY_KEY]}],
                      "sshHardening": {"permitRootLogin": true}},
    }))
    .expect("spec")
}

const PLAYBOOK: &str = r#"- hosts: all
  gather_facts: false
  tasks:
    - name: packages
      ansible.builtin.apt:
        name: [jq, tree, sudo]
        update_cache: true
        install_recommends: false
    - name: user
      ansible.builtin.user:
        name: deploy
        shell: /bin/bash
    - name: ssh directory
      ansible.builtin.file:
        path: /home/deploy/.ssh
        state: directory
        owner: deploy
        group: deploy
        mode: "0700"
    - name: authorized keys
      ansible.builtin.copy:
        dest: /home/deploy/.ssh/authorized_keys
        content: "{{ deploy_key }}\n"
        owner: deploy
        group: deploy
        mode: "0600"
    - name: sudo
      ansible.builtin.copy:
        dest: /etc/sudoers.d/nova-deploy
        content: "deploy ALL=(ALL) NOPASSWD:ALL\n"
        mode: "0440"
        validate: visudo -cf %s
    - name: sshd hardening
      ansible.builtin.copy:
        dest: /etc/ssh/sshd_config.d/50-nova-hardening.conf
        content: |
          PasswordAuthentication no
          KbdInteractiveAuthentication no
          PermitEmptyPasswords no
          PermitRootLogin prohibit-password
        mode: "0644"
        validate: sshd -t -f %s
      notify: reload sshd
  handlers:
    - name: reload sshd
      ansible.builtin.systemd:
        name: ssh
        state: reloaded
"#;

/// Boots `n` hosts, 5 at a time: 25 systemd boots at once on two cores outlast sshd's wait.
fn boot(n: usize, prefix: &str) -> Vec<TestHost> {
    let mut hosts = Vec::with_capacity(n);
    for chunk in (0..n).collect::<Vec<_>>().chunks(5) {
        std::thread::scope(|s| {
            let handles: Vec<_> =
                chunk.iter().map(|i| s.spawn(move || TestHost::start(&format!("{prefix}-{i}")))).collect();
            hosts.extend(handles.into_iter().map(|h| h.join().expect("thread").expect("test host")));
        });
    }
    hosts
}

/// Seconds for Nova to bootstrap every host (all in parallel), and whether all converged.
async fn nova(hosts: &[TestHost]) -> f64 {
    quiesce();
    let started = Instant::now();
    let results: Vec<_> = stream::iter(hosts)
        .map(|h| async move {
            let t = ssh::Target {
                address: h.ssh_addr.ip().to_string(),
                port: 22,
                user: "root".into(),
                key: Arc::new(ssh::private_key(&h.client_key, "bench").expect("key")),
                host_key: ssh::HostKeyPolicy::Pinned(h.host_key.clone()),
                connect_timeout: Duration::from_secs(15),
            };
            let c = ssh::Connection::open(&t).await.expect("connect");
            let steps = bootstrap::steps(&spec(h)).expect("steps");
            let r = bootstrap::run(&c, &steps, false).await.expect("bootstrap");
            c.close().await;
            r
        })
        .buffer_unordered(64)
        .collect()
        .await;
    let took = started.elapsed().as_secs_f64();
    assert!(results.iter().all(|r| r.len() == 3), "every host ran three steps");
    took
}

fn ansible(bin: &Path, hosts: &[TestHost], dir: &Path) -> f64 {
    let mut inventory = String::from("[all]\n");
    let mut known = String::new();
    for h in hosts {
        let key = dir.join(format!("{}.key", h.name));
        std::fs::write(&key, &h.client_key).expect("key");
        let mut perm = std::fs::metadata(&key).expect("meta").permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o600);
        std::fs::set_permissions(&key, perm).expect("chmod");
        inventory.push_str(&format!(
            "{} ansible_host={} ansible_user=root ansible_ssh_private_key_file={}\n",
            h.name,
            h.ssh_addr.ip(),
            key.display()
        ));
        known.push_str(&format!("{} {}\n", h.ssh_addr.ip(), h.host_key));
    }
    std::fs::write(dir.join("inventory"), inventory).expect("inventory");
    std::fs::write(dir.join("known_hosts"), known).expect("known_hosts");
    std::fs::write(dir.join("playbook.yml"), PLAYBOOK).expect("playbook");
    // Ansible at its best: as many forks as hosts, pipelining, host keys checked against a file.
    let cfg = format!(
        "[defaults]\nforks = {}\nhost_key_checking = True\ninterpreter_python = /usr/bin/python3\n\
         [ssh_connection]\npipelining = True\nssh_args = -o ControlMaster=auto -o ControlPersist=60s -o UserKnownHostsFile={}\n",
        hosts.len().max(5),
        dir.join("known_hosts").display()
    );
    std::fs::write(dir.join("ansible.cfg"), cfg).expect("ansible.cfg");
    quiesce();
    let started = Instant::now();
    let out = Command::new(bin)
        .args(["-i", "inventory", "playbook.yml", "-e"])
        .arg(format!("deploy_key='{DEPLOY_KEY}'"))
        .current_dir(dir)
        .env("ANSIBLE_CONFIG", dir.join("ansible.cfg"))
        .output()
        .expect("ansible-playbook");
    let took = started.elapsed().as_secs_f64();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "ansible-playbook failed:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("failed=0"), "{text}");
    took
}

#[tokio::main]
async fn main() {
    let n: usize = arg("--hosts").and_then(|v| v.parse().ok()).unwrap_or(10);
    let runs: usize = arg("--runs").and_then(|v| v.parse().ok()).unwrap_or(3);
    let sizes: Vec<usize> = arg("--sizes")
        .unwrap_or_else(|| "1,10,25".into())
        .split(',')
        .filter_map(|s| s.parse().ok())
        .collect();
    let default_ansible = PathBuf::from(std::env::var("HOME").unwrap_or_default())
        .join(".cache/nova/ansible-venv/bin/ansible-playbook");
    let ansible_bin = arg("--ansible").map(PathBuf::from).unwrap_or(default_ansible);
    if !ansible_bin.exists() {
        eprintln!("{} not found: see the header of operator/benches/hosts.rs", ansible_bin.display());
        std::process::exit(2);
    }

    // Every test host's systemd takes inotify instances; the kernel's default of 128 per user
    // runs out near 20 hosts (sshd never comes up). kind documents the same limit.
    let limit = "/proc/sys/fs/inotify/max_user_instances";
    if std::fs::read_to_string(limit)
        .ok()
        .and_then(|v| v.trim().parse::<u32>().ok())
        .is_some_and(|v| v < 1024)
    {
        eprintln!("raising {limit} to 1024 for {} test hosts", sizes.iter().max().unwrap_or(&n).max(&n));
        std::fs::write(limit, "1024").expect("raising the inotify limit needs root");
    }
    if runs > 0 {
        compare(&ansible_bin, n, runs).await;
    }
    if !sizes.is_empty() {
        println!("| hosts | Nova: fresh bootstrap | Nova: nothing to do |");
        println!("|---|---|---|");
    }
    for size in sizes {
        let hosts = boot(size, "scale");
        let fresh = nova(&hosts).await;
        let again = nova(&hosts).await;
        println!("| {size} | {fresh:.2} s | {again:.2} s |");
    }
}

/// Nova and ansible-playbook on `n` fresh hosts each, `runs` times; a Markdown table.
async fn compare(ansible_bin: &Path, n: usize, runs: usize) {
    println!(
        "| run | Nova: {n} fresh hosts | Nova again (nothing to do) | ansible-playbook: {n} fresh hosts | ansible again | ansible / Nova (fresh) |"
    );
    println!("|---|---|---|---|---|---|");
    let (mut nf, mut na, mut af, mut aa) = (vec![], vec![], vec![], vec![]);
    for run in 1..=runs {
        let run_nova = async || {
            let hosts = boot(n, "nova");
            (nova(&hosts).await, nova(&hosts).await)
        };
        let run_ansible = || {
            let hosts = boot(n, "ans");
            let dir = tempfile::tempdir().expect("dir");
            (ansible(ansible_bin, &hosts, dir.path()), ansible(ansible_bin, &hosts, dir.path()))
        };
        // Alternating which tool goes first evens out any drift of the machine during a run.
        let ((fresh, again), (a_fresh, a_again)) = if run % 2 == 1 {
            let n = run_nova().await;
            (n, run_ansible())
        } else {
            let a = run_ansible();
            (run_nova().await, a)
        };
        println!(
            "| {run} | {fresh:.2} s | {again:.2} s | {a_fresh:.2} s | {a_again:.2} s | {:.1}× |",
            a_fresh / fresh
        );
        nf.push(fresh);
        na.push(again);
        af.push(a_fresh);
        aa.push(a_again);
    }
    let (nf, na, af, aa) = (median(nf), median(na), median(af), median(aa));
    println!(
        "| **median** | **{nf:.2} s** | **{na:.2} s** | **{af:.2} s** | **{aa:.2} s** | **{:.1}×** |",
        af / nf
    );
    println!();
}
