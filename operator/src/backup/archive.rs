//! Tar archives of files, read entry by entry and judged before anything is written: only
//! relative paths without `..`, only regular files, directories and symbolic links (stored as
//! links, never followed), nothing placed under a link the archive made, and caps on size and
//! entry count. A restore checks the whole archive first, then extracts.

use std::collections::{BTreeMap, HashSet};
use std::io::Read;
use std::path::{Component, Path, PathBuf};

use sha2::{Digest, Sha256};
use tar::EntryType;

/// Caps on what one archive may hold.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_entries: u64,
    pub max_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_entries: 1_000_000, max_bytes: 1 << 40 }
    }
}

/// Why an archive is refused.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error("the archive is not a readable tar stream: {0}")]
    Unreadable(String),
    #[error("entry {0:?} has an absolute path: refused")]
    Absolute(String),
    #[error("entry {0:?} has a `..` segment: refused")]
    DotDot(String),
    #[error("entry {path:?} is a {kind}: only files, directories and symbolic links are restored")]
    Kind { path: String, kind: String },
    #[error(
        "entry {0:?} lies under a symbolic link the archive made: refused (it would write through the link)"
    )]
    ThroughLink(String),
    #[error("the archive holds more than {0} entries")]
    TooManyEntries(u64),
    #[error("the archive holds more than {0} bytes of files")]
    TooLarge(u64),
    #[error("writing {path}: {reason}")]
    Write { path: String, reason: String },
    #[error("{path} on disk does not match the archive after extraction")]
    Mismatch { path: String },
}

/// What an archive holds: each regular file's SHA-256, and totals.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub entries: u64,
    pub bytes: u64,
    pub files: BTreeMap<PathBuf, String>,
}

/// The entry's path as a safe relative path, or why not.
fn safe_path(raw: &Path, links: &HashSet<PathBuf>) -> Result<PathBuf, Refused> {
    let shown = raw.display().to_string();
    let mut out = PathBuf::new();
    for c in raw.components() {
        match c {
            Component::Normal(s) => {
                out.push(s);
            }
            Component::CurDir => {}
            Component::ParentDir => return Err(Refused::DotDot(shown)),
            Component::RootDir | Component::Prefix(_) => return Err(Refused::Absolute(shown)),
        }
    }
    // A path under a link made earlier would be written through it.
    if links.iter().any(|l| out.starts_with(l) && out != *l) {
        return Err(Refused::ThroughLink(shown));
    }
    Ok(out)
}

/// Whether this process runs as root (`/proc/self` belongs to the process's effective user).
fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// Walks the archive: every entry judged, every file hashed; with `into`, each entry is
/// written below that directory as it is judged (callers check the whole archive first).
fn walk<R: Read>(r: R, limits: Limits, into: Option<&Path>, owners: bool) -> Result<Summary, Refused> {
    let mut archive = tar::Archive::new(r);
    // A restore as root (a restore Job, a host timer) gives files their owners back, as GNU tar
    // does; a drill, or a user extracting for themselves, keeps them as the extractor's.
    archive.set_preserve_ownerships(into.is_some() && owners && running_as_root());
    let mut links = HashSet::new();
    let mut sum = Summary::default();
    let bad = |e: std::io::Error| Refused::Unreadable(e.to_string());
    for entry in archive.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        let raw = entry.path().map_err(bad)?.into_owned();
        let path = safe_path(&raw, &links)?;
        sum.entries += 1;
        if sum.entries > limits.max_entries {
            return Err(Refused::TooManyEntries(limits.max_entries));
        }
        let kind = entry.header().entry_type();
        match kind {
            EntryType::Regular | EntryType::Continuous => {
                sum.bytes += entry.size();
                if sum.bytes > limits.max_bytes {
                    return Err(Refused::TooLarge(limits.max_bytes));
                }
            }
            EntryType::Directory => {}
            EntryType::Symlink => {
                links.insert(path.clone());
            }
            other => {
                let kind = format!("{other:?}").to_lowercase();
                return Err(Refused::Kind { path: raw.display().to_string(), kind });
            }
        }
        if path.as_os_str().is_empty() {
            continue;
        }
        match into {
            Some(dir) => write(&mut entry, dir, &path, &mut sum)?,
            None if kind.is_file() => {
                let mut h = Sha256::new();
                std::io::copy(&mut entry, &mut HashWriter(&mut h)).map_err(bad)?;
                sum.files.insert(path, hex::encode(h.finalize()));
            }
            None => {}
        }
    }
    Ok(sum)
}

struct HashWriter<'a>(&'a mut Sha256);

impl std::io::Write for HashWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Writes one judged entry below `dir`. A link or file already at the path is replaced, never
/// written through; a directory on the way that is a link on disk is refused.
fn write<R: Read>(
    entry: &mut tar::Entry<R>,
    dir: &Path,
    rel: &Path,
    sum: &mut Summary,
) -> Result<(), Refused> {
    let failed =
        |e: std::io::Error| Refused::Write { path: rel.display().to_string(), reason: e.to_string() };
    let dest = dir.join(rel);
    let mut on_the_way = dir.to_path_buf();
    for c in rel.parent().into_iter().flat_map(|p| p.components()) {
        on_the_way.push(c);
        match std::fs::symlink_metadata(&on_the_way) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(Refused::ThroughLink(rel.display().to_string()));
            }
            Ok(_) => {}
            Err(_) => std::fs::create_dir_all(&on_the_way).map_err(failed)?,
        }
    }
    let is_dir = entry.header().entry_type().is_dir();
    if let Ok(m) = std::fs::symlink_metadata(&dest)
        && !(is_dir && m.is_dir())
    {
        if m.is_dir() {
            std::fs::remove_dir_all(&dest).map_err(failed)?;
        } else {
            std::fs::remove_file(&dest).map_err(failed)?;
        }
    }
    entry.set_preserve_mtime(true);
    entry.set_unpack_xattrs(false);
    entry.set_preserve_permissions(true);
    entry.unpack(&dest).map_err(failed)?;
    if entry.header().entry_type().is_file() {
        let mut h = Sha256::new();
        let mut f = std::fs::File::open(&dest).map_err(failed)?;
        std::io::copy(&mut f, &mut HashWriter(&mut h)).map_err(failed)?;
        sum.files.insert(rel.to_path_buf(), hex::encode(h.finalize()));
    }
    Ok(())
}

/// Judges a whole archive and hashes its files, writing nothing.
pub fn check<R: Read>(r: R, limits: Limits) -> Result<Summary, Refused> {
    walk(r, limits, None, false)
}

/// Extracts an archive already passed by [`check`] (whose summary is `checked`) below `dir`,
/// then compares every file written with the checksum the archive gave it.
pub fn extract<R: Read>(
    r: R,
    dir: &Path,
    limits: Limits,
    checked: &Summary,
    owners: bool,
) -> Result<Summary, Refused> {
    let done = walk(r, limits, Some(dir), owners)?;
    for (path, want) in &checked.files {
        if done.files.get(path) != Some(want) {
            return Err(Refused::Mismatch { path: path.display().to_string() });
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A raw ustar header, so that tests can write what the tar crate's builder refuses to.
    fn entry(out: &mut Vec<u8>, path: &str, kind: u8, link: &str, body: &[u8]) {
        let mut h = [0u8; 512];
        h[..path.len()].copy_from_slice(path.as_bytes());
        h[100..107].copy_from_slice(b"0000644");
        h[108..115].copy_from_slice(b"0000000");
        h[116..123].copy_from_slice(b"0000000");
        h[124..135].copy_from_slice(format!("{:011o}", body.len()).as_bytes());
        h[136..147].copy_from_slice(b"00000000000");
        h[156] = kind;
        h[157..157 + link.len()].copy_from_slice(link.as_bytes());
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
        out.extend_from_slice(&h);
        out.extend_from_slice(body);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }

    fn archive(entries: &[(&str, u8, &str, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        for (p, k, l, b) in entries {
            entry(&mut out, p, *k, l, b);
        }
        out.extend_from_slice(&[0u8; 1024]);
        out
    }

    #[test]
    fn hostile_archives_are_refused_and_nothing_is_written_outside() {
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("absolute", archive(&[("/etc/evil", b'0', "", b"x")])),
            ("dotdot", archive(&[("a/../../evil", b'0', "", b"x")])),
            ("through link", archive(&[("l", b'2', "/tmp", b""), ("l/evil", b'0', "", b"x")])),
            ("through link dir", archive(&[("d/l", b'2', "..", b""), ("d/l/x/evil", b'0', "", b"x")])),
            ("hard link", archive(&[("a", b'0', "", b"x"), ("h", b'1', "a", b"")])),
            ("char device", archive(&[("dev", b'3', "", b"")])),
            ("block device", archive(&[("blk", b'4', "", b"")])),
            ("fifo", archive(&[("fifo", b'6', "", b"")])),
        ];
        for (name, bytes) in cases {
            let root = tempfile::tempdir().unwrap();
            let target = root.path().join("target");
            std::fs::create_dir(&target).unwrap();
            assert!(check(&bytes[..], Limits::default()).is_err(), "{name}: check passed");
            // Even fed straight to extraction (skipping the check), nothing escapes.
            let r = walk(&bytes[..], Limits::default(), Some(&target), false);
            assert!(r.is_err(), "{name}: extraction passed");
            let outside: Vec<_> =
                std::fs::read_dir(root.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
            assert_eq!(outside, vec!["target"], "{name}: wrote outside the target");
            assert!(!Path::new("/tmp/evil").exists() && !Path::new("/etc/evil").exists(), "{name}");
        }
    }

    #[test]
    fn caps_hold() {
        let bytes = archive(&[("a", b'0', "", b"12345"), ("b", b'0', "", b"12345")]);
        let small = Limits { max_entries: 1, max_bytes: 100 };
        assert!(matches!(check(&bytes[..], small), Err(Refused::TooManyEntries(1))));
        let tiny = Limits { max_entries: 10, max_bytes: 8 };
        assert!(matches!(check(&bytes[..], tiny), Err(Refused::TooLarge(8))));
    }

    #[test]
    fn files_dirs_and_links_round_trip_with_modes() {
        use std::os::unix::fs::PermissionsExt;
        let src = tempfile::tempdir().unwrap();
        let p = src.path();
        std::fs::create_dir_all(p.join("site/static")).unwrap();
        std::fs::write(p.join("site/index.html"), b"<h1>hi</h1>").unwrap();
        std::fs::write(p.join("site/static/run.sh"), b"#!/bin/sh\n").unwrap();
        std::fs::set_permissions(p.join("site/static/run.sh"), std::fs::Permissions::from_mode(0o750))
            .unwrap();
        std::os::unix::fs::symlink("/etc/passwd", p.join("site/pw")).unwrap();
        let mut b = tar::Builder::new(Vec::new());
        b.follow_symlinks(false);
        b.append_dir_all("site", p.join("site")).unwrap();
        let bytes = b.into_inner().unwrap();
        let checked = check(&bytes[..], Limits::default()).unwrap();
        assert_eq!(checked.files.len(), 2);
        let out = tempfile::tempdir().unwrap();
        extract(&bytes[..], out.path(), Limits::default(), &checked, false).unwrap();
        let o = out.path();
        assert_eq!(std::fs::read(o.join("site/index.html")).unwrap(), b"<h1>hi</h1>");
        let mode = std::fs::metadata(o.join("site/static/run.sh")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o750);
        assert_eq!(std::fs::read_link(o.join("site/pw")).unwrap(), Path::new("/etc/passwd"));
    }

    #[test]
    fn a_link_already_in_the_target_is_replaced_not_followed() {
        let outside = tempfile::tempdir().unwrap();
        let out = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path().join("victim"), out.path().join("f")).unwrap();
        std::os::unix::fs::symlink(outside.path(), out.path().join("d")).unwrap();
        let bytes = archive(&[("f", b'0', "", b"new")]);
        let checked = check(&bytes[..], Limits::default()).unwrap();
        extract(&bytes[..], out.path(), Limits::default(), &checked, false).unwrap();
        assert!(!outside.path().join("victim").exists());
        assert_eq!(std::fs::read(out.path().join("f")).unwrap(), b"new");
        let under = archive(&[("d/x", b'0', "", b"new")]);
        assert!(extract(&under[..], out.path(), Limits::default(), &Summary::default(), false).is_err());
        assert!(!outside.path().join("x").exists());
    }
}
