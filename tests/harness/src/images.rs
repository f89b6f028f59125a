//! Container images for tests, made without a registry: a static Go program in a root file
//! system of its own, as a tarball for `docker import` on a test host.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{Error, Result};

const APP: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../images/app");

/// Builds `tests/images/app` (static, no cgo) into `dir` and returns the path of a tarball
/// holding `/app`. Import it with `docker import -c 'ENTRYPOINT ["/app"]' <tar> <name:tag>`.
pub fn test_app_tarball(dir: &Path) -> Result<PathBuf> {
    let rootfs = dir.join("rootfs");
    std::fs::create_dir_all(&rootfs).map_err(|e| Error::io("image root file system", e))?;
    let status = Command::new("go")
        .args(["build", "-trimpath", "-ldflags=-s -w", "-o"])
        .arg(rootfs.join("app"))
        .arg(".")
        .current_dir(APP)
        .env("CGO_ENABLED", "0")
        .env("GOTOOLCHAIN", "local")
        .env("GOFLAGS", "-mod=mod")
        .status()
        .map_err(|e| Error::io("go build of the test image", e))?;
    if !status.success() {
        return Err(Error::Build(format!("go build in {APP} failed with {status}")));
    }
    let tar = dir.join("app.tar");
    let status = Command::new("tar")
        .arg("-C")
        .arg(&rootfs)
        .arg("-cf")
        .arg(&tar)
        .arg(".")
        .status()
        .map_err(|e| Error::io("tar of the test image", e))?;
    if !status.success() {
        return Err(Error::Other(format!("tar failed with {status}")));
    }
    Ok(tar)
}
