//! Each test host's own cgroup (one per hierarchy): its systemd takes the cgroup it starts in as
//! its root, so hosts booted in cgroups of their own cannot see or kill each other's units.
//! The boot script (in [`crate::testhost`]) creates and joins them; [`remove`] takes them away
//! once the host is gone.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Where the cgroup `name` lies in each hierarchy this process is in (as the boot script
/// computes it: a child of this process's own cgroup there).
fn paths(name: &str) -> Vec<PathBuf> {
    let Ok(own) = std::fs::read_to_string("/proc/self/cgroup") else { return Vec::new() };
    let root = Path::new("/sys/fs/cgroup");
    own.lines()
        .filter_map(|line| {
            let mut f = line.splitn(3, ':');
            let (_, ctrl, path) = (f.next()?, f.next()?, f.next()?);
            let dir = match ctrl {
                "" if root.join("unified").is_dir() => root.join("unified"),
                "" => root.to_path_buf(),
                c => root.join(c.strip_prefix("name=").unwrap_or(c)),
            };
            dir.join("cgroup.procs").exists().then(|| dir.join(path.trim_start_matches('/')).join(name))
        })
        .filter(|p| p.is_dir())
        .collect()
}

/// Removes a dead host's cgroups, children first. The kernel may still be reaping its last
/// processes: a busy cgroup is retried for up to 5 s, then left (empty cgroups cost nothing).
pub fn remove(name: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    for p in paths(name) {
        while remove_tree(&p).is_err() && Instant::now() < deadline {
            // Poll interval while the kernel reaps the host's processes.
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn remove_tree(p: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(p)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            remove_tree(&entry.path())?;
        }
    }
    match std::fs::remove_dir(p) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        r => r,
    }
}
