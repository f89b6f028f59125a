//! Test hosts: a minimal Debian with real systemd and OpenSSH, booted in namespaces of its own.
//!
//! The root file system is made once with `debootstrap --variant=minbase` and cached outside
//! git (`NOVA_TESTHOST_DIR`, default `~/.cache/nova/testhost`). Each host gets a copy-on-write
//! root (overlayfs over the cached one), its own network namespace joined by a veth pair (see
//! [`NetNs`]), a fresh SSH host key, and a root login for a fresh client key. `/lib/systemd/systemd`
//! runs as PID 1 in new PID, mount and UTS namespaces; journald, dbus and sshd come up as on a
//! machine. Dropping the host kills its PID 1, which ends every process in it.
//!
//! Needs root (namespaces, mounts), `debootstrap` the first time, `ssh-keygen`, and `ip`.

use std::ffi::OsString;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::netns::NetNs;
use crate::process::Process;
use crate::{Error, Result};

/// Debian release and packages of the cached root file system; part of its directory name, so
/// changing them builds a new one.
const SUITE: &str = "bookworm";
// python3 and python3-apt: what Ansible needs on a target, for the side-by-side benchmark.
const PACKAGES: &str = "systemd,systemd-sysv,dbus,openssh-server,iproute2,python3,python3-apt";
const MIRROR: &str = "http://deb.debian.org/debian";
/// Packages (with dependencies) in the hosts' local apt repository, for bootstrap tests.
pub const REPO_PACKAGES: &[&str] = &[
    "jq",
    "tree",
    "sudo",
    "nginx-light",
    "nftables",
    "fail2ban",
    "python3-systemd",
    "unattended-upgrades",
    "prometheus-node-exporter",
    "prometheus",
    "prometheus-alertmanager",
    "docker.io",
    "docker-compose",
    "postgresql",
];

/// The local apt repository that belongs to a root file system.
fn repo_dir(rootfs: &Path) -> PathBuf {
    rootfs.with_extension("repo")
}

pub struct TestHost {
    pub name: String,
    /// Where sshd listens.
    pub ssh_addr: SocketAddr,
    /// The host's SSH public key, `ssh-ed25519 AAAA...` (what a Host's `spec.hostKey` pins).
    pub host_key: String,
    /// A private key (OpenSSH format) that root accepts.
    pub client_key: String,
    /// Its public half.
    pub client_public_key: String,
    netns: NetNs,
    process: Option<Process>,
    root: PathBuf,
    dir: tempfile::TempDir,
}

fn cache_dir() -> PathBuf {
    std::env::var_os("NOVA_TESTHOST_DIR").map(PathBuf::from).unwrap_or_else(|| {
        let home = std::env::var_os("XDG_CACHE_HOME").map(PathBuf::from).unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into())).join(".cache")
        });
        home.join("nova").join("testhost")
    })
}

fn run(what: &str, cmd: &mut Command) -> Result<String> {
    let out = cmd.output().map_err(|e| Error::io(format!("running {what}"), e))?;
    if !out.status.success() {
        return Err(Error::Other(format!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// 64-bit FNV-1a: stable across Rust releases (std's hasher is not promised to be).
fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// The cached root file system, made on first use. Concurrent test processes wait on a lock.
pub fn base_rootfs() -> Result<PathBuf> {
    let dir = cache_dir();
    // A digest of the package lists: their names joined outgrew a file name (255 bytes).
    let tag = format!("{SUITE}-{:016x}", fnv1a(&format!("{PACKAGES};{}", REPO_PACKAGES.join(","))));
    let rootfs = dir.join(&tag);
    if rootfs.join("lib/systemd/systemd").exists() {
        return Ok(rootfs);
    }
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    let lock = std::fs::File::create(dir.join(".lock")).map_err(|e| Error::io("lock file", e))?;
    let _guard = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| Error::io("locking the test-host cache", e.into()))?;
    if rootfs.join("lib/systemd/systemd").exists() {
        return Ok(rootfs);
    }
    let tmp = dir.join(format!("{tag}.tmp"));
    let _ = std::fs::remove_dir_all(&tmp);
    eprintln!("building the test-host root file system with debootstrap (about a minute, once) ...");
    run(
        "debootstrap (apt-get install debootstrap)",
        Command::new("debootstrap")
            .args(["--variant=minbase", &format!("--include={PACKAGES}"), SUITE])
            .arg(&tmp)
            .arg(MIRROR),
    )?;
    // The hosts have no route out: the packages a bootstrap installs come from a local
    // repository, made here from what apt downloads (with their dependencies), and mounted
    // into every host at /srv/nova-apt.
    std::fs::copy("/etc/resolv.conf", tmp.join("etc/resolv.conf"))
        .map_err(|e| Error::io("resolv.conf", e))?;
    run(
        "apt-get update in the new root",
        Command::new("chroot").arg(&tmp).args(["apt-get", "-qq", "update"]),
    )?;
    run(
        "apt-get install --download-only in the new root",
        Command::new("chroot")
            .arg(&tmp)
            .args(["apt-get", "-qq", "install", "--download-only", "-y"])
            .args(REPO_PACKAGES),
    )?;
    let repo = dir.join(format!("{tag}.repo"));
    let _ = std::fs::remove_dir_all(&repo);
    std::fs::create_dir_all(&repo).map_err(|e| Error::io("repository directory", e))?;
    let archives = tmp.join("var/cache/apt/archives");
    for entry in std::fs::read_dir(&archives).map_err(|e| Error::io("apt archives", e))?.flatten() {
        if entry.path().extension().is_some_and(|e| e == "deb") {
            std::fs::rename(entry.path(), repo.join(entry.file_name()))
                .map_err(|e| Error::io("moving a .deb", e))?;
        }
    }
    let index = run(
        "dpkg-scanpackages (apt-get install dpkg-dev)",
        Command::new("dpkg-scanpackages").arg("-m").arg(".").current_dir(&repo),
    )?;
    std::fs::write(repo.join("Packages"), index).map_err(|e| Error::io("Packages index", e))?;
    let _ = std::fs::remove_dir_all(tmp.join("var/lib/apt/lists"));
    std::fs::create_dir_all(tmp.join("var/lib/apt/lists/partial")).map_err(|e| Error::io("apt lists", e))?;
    std::fs::create_dir_all(tmp.join("srv/nova-apt")).map_err(|e| Error::io("mount point", e))?;
    std::fs::write(tmp.join("etc/apt/sources.list"), "deb [trusted=yes] file:/srv/nova-apt ./\n")
        .map_err(|e| Error::io("sources.list", e))?;
    std::fs::rename(&repo, repo_dir(&rootfs)).map_err(|e| Error::io("moving the repository in place", e))?;
    // Host keys made by the package scripts would be shared by every host: each host gets its own.
    for entry in std::fs::read_dir(tmp.join("etc/ssh")).map_err(|e| Error::io("etc/ssh", e))?.flatten() {
        if entry.file_name().to_string_lossy().starts_with("ssh_host_") {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    std::fs::rename(&tmp, &rootfs).map_err(|e| Error::io("moving the root file system in place", e))?;
    Ok(rootfs)
}

fn keypair(dir: &Path, name: &str) -> Result<(String, String)> {
    let path = dir.join(name);
    run(
        "ssh-keygen",
        Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"]).arg(&path),
    )?;
    let private = std::fs::read_to_string(&path).map_err(|e| Error::io("reading a key", e))?;
    let public =
        std::fs::read_to_string(path.with_extension("pub")).map_err(|e| Error::io("reading a key", e))?;
    Ok((private, public.trim().to_owned()))
}

fn write(path: &Path, text: &str, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| Error::io(format!("creating {}", parent.display()), e))?;
    }
    std::fs::write(path, text).map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| Error::io(format!("chmod {}", path.display()), e))
}

/// Joins a cgroup of its own in every hierarchy (`$1`, see [`crate::cgroup`]), then execs the
/// rest of its arguments. systemd takes the cgroup it starts in as its root: hosts started from
/// one cgroup shared every unit's cgroup, so stopping `nginx.service` on one host killed the
/// nginx (or a compose run) of every host running beside it. Before `ip netns exec`, which
/// mounts a /sys of its own without the cgroup file systems.
const JOIN: &str = r#"set -e
cg=$1; shift
while IFS=: read -r _ ctrl path; do
  case $ctrl in
    '') d=/sys/fs/cgroup/unified; [ -d "$d" ] || d=/sys/fs/cgroup ;;
    name=*) d=/sys/fs/cgroup/${ctrl#name=} ;;
    *) d=/sys/fs/cgroup/$ctrl ;;
  esac
  [ -f "$d/cgroup.procs" ] || continue
  parent=$d${path%/}; p=$parent/$cg
  mkdir -p "$p" || continue
  for f in cpuset.cpus cpuset.mems; do [ -f "$p/$f" ] && cat "$parent/$f" > "$p/$f" || true; done
  echo $$ > "$p/cgroup.procs" || true
done < /proc/self/cgroup
exec "$@"
"#;

/// Mounts what systemd needs and becomes it, inside the new namespaces.
/// After the root and the repository, `<dir>=<path in the host>` pairs bound read-only.
const BOOT: &str = r#"set -e
R=$1; REPO=$2; shift 2
mount -t proc proc "$R/proc"
mount --rbind /sys "$R/sys"
mount -t tmpfs -o mode=755 tmpfs "$R/run"
mount --rbind /dev "$R/dev"
mount --bind -o ro "$REPO" "$R/srv/nova-apt"
for b in "$@"; do mkdir -p "$R${b#*=}"; mount --bind -o ro "${b%%=*}" "$R${b#*=}"; done
exec chroot "$R" /lib/systemd/systemd
"#;

/// How this namespace reaches `addr` (`ip route get`), for an error about a host not answering.
fn route_to(addr: std::net::IpAddr) -> String {
    Command::new("ip")
        .args(["route", "get", &addr.to_string()])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|e| e.to_string())
}

/// The host's cgroup name: its directory's, unique among the hosts alive.
fn cgroup_name(dir: &Path) -> String {
    dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "nova-host".into())
}

impl TestHost {
    /// Boots a host and waits until its sshd accepts connections.
    pub fn start(name: &str) -> Result<Self> {
        Self::start_with(name, &[])
    }

    /// As [`Self::start`], with directories of this machine bound read-only into the host
    /// (`(here, path in the host)`): large test inputs that would be slow to copy.
    pub fn start_with(name: &str, binds: &[(&Path, &str)]) -> Result<Self> {
        let base = base_rootfs()?;
        let dir = tempfile::Builder::new()
            .prefix("nova-host-")
            .tempdir()
            .map_err(|e| Error::io("temporary directory", e))?;
        let (upper, work, root) =
            (dir.path().join("upper"), dir.path().join("work"), dir.path().join("root"));
        for d in [&upper, &work, &root] {
            std::fs::create_dir_all(d).map_err(|e| Error::io("creating overlay directories", e))?;
        }
        let opts =
            format!("lowerdir={},upperdir={},workdir={}", base.display(), upper.display(), work.display());
        run(
            "mount overlay",
            Command::new("mount").args(["-t", "overlay", "overlay", "-o", &opts]).arg(&root),
        )?;

        let keys = dir.path().join("keys");
        std::fs::create_dir_all(&keys).map_err(|e| Error::io("keys directory", e))?;
        let (host_private, host_key) = keypair(&keys, "ssh_host_ed25519_key")?;
        let (client_key, client_public_key) = keypair(&keys, "client")?;
        crate::record::secret(&client_key);
        write(&root.join("etc/ssh/ssh_host_ed25519_key"), &host_private, 0o600)?;
        write(&root.join("etc/ssh/ssh_host_ed25519_key.pub"), &format!("{host_key}\n"), 0o644)?;
        write(&root.join("root/.ssh/authorized_keys"), &format!("{client_public_key}\n"), 0o600)?;
        write(&root.join("etc/hostname"), &format!("{name}\n"), 0o644)?;
        // These hosts run in a sandbox that may not create user namespaces: units that ask for
        // them (Debian's prometheus.service: PrivateUsers=true) would fail with 217/USER. A
        // drop-in for every service, as a machine without that restriction would not need.
        write(
            &root.join("etc/systemd/system/service.d/10-nova-test-host.conf"),
            "[Service]\nPrivateUsers=no\n",
            0o644,
        )?;
        write(
            &root.join("etc/ssh/sshd_config.d/nova-test.conf"),
            "HostKey /etc/ssh/ssh_host_ed25519_key\nPermitRootLogin prohibit-password\n",
            0o644,
        )?;
        let boot = dir.path().join("boot.sh");
        write(&boot, BOOT, 0o755)?;

        let netns = NetNs::create()?;
        let ip = ["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"]
            .into_iter()
            .map(Path::new)
            .find(|p| p.exists())
            .ok_or_else(|| Error::Other("`ip` not found (apt-get install iproute2)".into()))?;
        let join = dir.path().join("join.sh");
        write(&join, JOIN, 0o755)?;
        let args: Vec<OsString> = vec![
            join.into(),
            cgroup_name(dir.path()).into(),
            ip.into(),
            "netns".into(),
            "exec".into(),
            netns.name().into(),
            "unshare".into(),
            "--kill-child".into(),
            "--pid".into(),
            "--fork".into(),
            "--mount".into(),
            "--uts".into(),
            "sh".into(),
            boot.into(),
            root.clone().into(),
            repo_dir(&base).into(),
        ];
        let mut args = args;
        for (here, there) in binds {
            if here.as_os_str().to_string_lossy().contains('=') || !there.starts_with('/') {
                return Err(Error::Other(format!(
                    "bind {}={there}: no '=' here, an absolute path there",
                    here.display()
                )));
            }
            let mut pair = here.as_os_str().to_owned();
            pair.push(format!("={there}"));
            args.push(pair);
        }
        let process = Process::start("testhost", Path::new("/bin/sh"), args, dir.path())?;
        let ssh_addr = SocketAddr::from((netns.ip, 22));
        let mut host = Self {
            name: name.to_owned(),
            ssh_addr,
            host_key,
            client_key,
            client_public_key,
            netns,
            process: Some(process),
            root,
            dir,
        };
        // Generous: CI boots a dozen hosts at once on two loaded cores.
        host.wait_for_sshd(Duration::from_secs(120))?;
        Ok(host)
    }

    /// What runs in this host (its cgroup), for an error that must say where a boot stands.
    fn processes(&self) -> String {
        let cg = format!("/{}", cgroup_name(self.dir.path()));
        let Ok(entries) = std::fs::read_dir("/proc") else { return String::new() };
        let mut found = Vec::new();
        for e in entries.flatten() {
            let pid = e.path();
            let inside = std::fs::read_to_string(pid.join("cgroup")).is_ok_and(|c| c.contains(&cg));
            if let (true, Ok(cmd)) = (inside, std::fs::read(pid.join("cmdline"))) {
                let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
                found.push(cmd.trim().chars().take(120).collect::<String>());
            }
        }
        found.join("; ")
    }

    fn wait_for_sshd(&mut self, timeout: Duration) -> Result<()> {
        use std::io::Read;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(p) = self.process.as_mut()
                && let Some(status) = p.exited()
            {
                return Err(p.died(status));
            }
            // sshd speaks first: its banner means it is up.
            if let Ok(mut s) = TcpStream::connect_timeout(&self.ssh_addr, Duration::from_millis(500)) {
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                let mut banner = [0u8; 4];
                if s.read_exact(&mut banner).is_ok() && &banner == b"SSH-" {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                return Err(Error::Timeout {
                    what: format!(
                        "sshd on test host {} (running there: {}; route to it: {})",
                        self.name,
                        self.processes(),
                        route_to(self.ssh_addr.ip())
                    ),
                    seconds: timeout.as_secs(),
                });
            }
            // Poll interval while the condition is awaited.
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Puts this host and `other` on one network: each reaches the other's address, and each
    /// one's name resolves (in /etc/hosts) to its address there, as on a LAN with DNS. Without
    /// it test hosts reach this machine only. The link goes with the hosts.
    pub fn link(&self, other: &TestHost) -> Result<()> {
        self.netns.link(&other.netns)?;
        for h in [self, other] {
            let path = h.root.join("etc/hosts");
            let mut hosts = std::fs::read_to_string(&path).unwrap_or_default();
            for t in [self, other] {
                let line = format!("{} {}\n", t.netns.ip, t.name);
                if !hosts.contains(&line) {
                    hosts.push_str(&line);
                }
            }
            write(&path, &hosts, 0o644)?;
        }
        Ok(())
    }

    /// This side's address on the host's link (where the host sees connections come from).
    pub fn gateway(&self) -> Ipv4Addr {
        self.netns.host_ip
    }

    /// The host's root directory as seen from outside (for assertions on files).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// PID (in this namespace) of the host's PID 1, systemd.
    pub fn pid1(&self) -> Option<u32> {
        let unshare = self.process.as_ref()?.pid();
        // sh execs ip, ip execs unshare; unshare forks the namespace's PID 1 (sh, which execs systemd).
        let children = std::fs::read_to_string(format!("/proc/{unshare}/task/{unshare}/children")).ok()?;
        children.split_whitespace().next()?.parse().ok()
    }

    /// Path of the client private key file (for `ssh -i`).
    pub fn client_key_path(&self) -> PathBuf {
        self.dir.path().join("keys/client")
    }

    /// Runs `cmd` on the host through the system's `ssh` client (for test assertions, so that
    /// what is checked does not depend on Nova's SSH engine).
    pub fn ssh(&self, cmd: &str) -> Result<String> {
        let key = self.dir.path().join("keys/client");
        run(
            &format!("ssh {} {cmd:?}", self.name),
            Command::new("ssh")
                .args([
                    "-o",
                    "BatchMode=yes",
                    "-o",
                    "StrictHostKeyChecking=no",
                    "-o",
                    "UserKnownHostsFile=/dev/null",
                    "-o",
                    "LogLevel=ERROR",
                    "-i",
                ])
                .arg(&key)
                .arg(format!("root@{}", self.ssh_addr.ip()))
                .arg(cmd),
        )
    }

    /// Kills every process of the host at once (as pulling the plug would).
    pub fn kill(&mut self) {
        if let Some(pid) = self.pid1().and_then(|p| i32::try_from(p).ok()) {
            let _ =
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
        if let Some(p) = self.process.take() {
            p.stop(Duration::from_secs(5));
        }
    }
}

impl Drop for TestHost {
    fn drop(&mut self) {
        self.kill();
        // The mounts inside the host went with its mount namespace; the overlay is out here.
        let _ = Command::new("umount").arg("-l").arg(&self.root).status();
        crate::cgroup::remove(&cgroup_name(self.dir.path()));
    }
}
