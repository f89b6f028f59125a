//! Writing a tar archive of local files without a `tar` program (Nova's image is distroless):
//! the same archive GNU tar makes over SSH for a Host's files — paths relative to `/`, modes and
//! numeric owners kept, symbolic links stored as links and never followed.

use std::io::Write;
use std::path::Path;

/// Writes `paths` (absolute, checked by the caller) into `out` as one tar stream.
pub fn create<W: Write>(out: W, paths: &[String]) -> std::io::Result<W> {
    let mut b = tar::Builder::new(out);
    b.follow_symlinks(false);
    b.mode(tar::HeaderMode::Complete);
    for p in paths {
        let name = p.trim_start_matches('/');
        let meta = std::fs::symlink_metadata(p)?;
        if meta.is_dir() {
            b.append_dir_all(name, p)?;
        } else {
            b.append_path_with_name(Path::new(p), name)?;
        }
    }
    b.into_inner()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// What GNU tar lists of the archive: names, modes, links kept as links.
    #[test]
    fn gnu_tar_reads_it_with_modes_and_links() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("site");
        std::fs::create_dir_all(root.join("private")).unwrap();
        std::fs::write(root.join("index.html"), "hello").unwrap();
        std::fs::write(root.join("private/key"), "k").unwrap();
        std::fs::set_permissions(root.join("private/key"), std::fs::Permissions::from_mode(0o600)).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", root.join("link")).unwrap();
        let file = dir.path().join("a.tar");
        create(std::fs::File::create(&file).unwrap(), &[root.display().to_string()]).unwrap();
        let out = std::process::Command::new("tar").arg("-tvf").arg(&file).output().unwrap();
        let list = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let rel = root.display().to_string();
        let rel = rel.trim_start_matches('/');
        assert!(
            list.lines().any(|l| l.starts_with("-rw-------") && l.ends_with(&format!("{rel}/private/key"))),
            "{list}"
        );
        assert!(
            list.lines().any(|l| l.starts_with('l') && l.ends_with(&format!("{rel}/link -> /etc/passwd"))),
            "{list}"
        );
        assert!(list.lines().any(|l| l.ends_with(&format!("{rel}/index.html"))), "{list}");
    }
}
