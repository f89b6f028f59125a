//! What the test suite leaves for the secret scan that runs after it (`scripts/test`): the
//! secret values the tests made ([`secret`]), and every log line, event and status written —
//! the apiservers' audit logs (events and status writes with their bodies) and the operators'
//! logs go under `NOVA_TEST_RECORD_DIR` when it is set. [`scan`] then looks for every secret in
//! every recorded file; `scan-secrets` runs it and fails on any hit, naming the file and how
//! often, never the value.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// The record directory, when the suite runs under the scan (`scripts/test` sets it).
pub fn dir() -> Option<PathBuf> {
    std::env::var_os("NOVA_TEST_RECORD_DIR").filter(|d| !d.is_empty()).map(PathBuf::from)
}

/// Shorter values are too likely to occur by chance (a key id, a short word).
const MIN_LEN: usize = 12;

/// Registers a secret value a test made (a private key, a password, a TSIG key). Each line of
/// it of at least 12 characters (a PEM body line, say) is looked for on its own.
pub fn secret(value: &str) {
    let Some(d) = dir() else { return };
    let d = d.join("secrets");
    if std::fs::create_dir_all(&d).is_err() {
        return;
    }
    let path = d.join(format!("{}.txt", std::process::id()));
    // One write for all lines: tests of one binary register from several threads, and
    // `writeln!` writes a line and its newline apart, so two of them interleaved into a joined
    // line and an empty one (which then matched every file of the scan).
    let mut text = String::new();
    for line in value.lines().map(str::trim).filter(|l| l.len() >= MIN_LEN && !l.starts_with("-----")) {
        text.push_str(line);
        text.push('\n');
    }
    if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(path) {
        let _ = f.write_all(text.as_bytes());
    }
}

/// A fresh file for a recorded log of `kind` (`audit`, `operator`), when recording.
pub fn file(kind: &str) -> Option<PathBuf> {
    static N: AtomicUsize = AtomicUsize::new(0);
    let d = dir()?.join(kind);
    std::fs::create_dir_all(&d).ok()?;
    let n = N.fetch_add(1, Ordering::Relaxed);
    Some(d.join(format!("{}-{}-{n}.log", exe_name(), std::process::id())))
}

fn exe_name() -> String {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "test".into())
}

/// One hit: a recorded file that holds a registered secret, and how many times.
#[derive(Debug, PartialEq, Eq)]
pub struct Hit {
    pub file: PathBuf,
    pub count: usize,
}

/// Every recorded file (outside `secrets/`) holding any registered secret. Values escaped by
/// JSON (a newline as `\n`) are looked for as written there too.
pub fn scan(root: &Path) -> std::io::Result<(usize, Vec<Hit>)> {
    let mut secrets: Vec<String> = Vec::new();
    if let Ok(entries) = std::fs::read_dir(root.join("secrets")) {
        for e in entries.flatten() {
            let text = std::fs::read_to_string(e.path())?;
            secrets.extend(text.lines().filter(|l| l.len() >= MIN_LEN).map(str::to_owned));
        }
    }
    secrets.sort();
    secrets.dedup();
    let mut needles: Vec<String> = Vec::new();
    for s in &secrets {
        needles.push(s.clone());
        let escaped = serde_json::to_string(s).unwrap_or_default().trim_matches('"').to_owned();
        if escaped != *s {
            needles.push(escaped);
        }
    }
    let mut hits = Vec::new();
    let mut files = Vec::new();
    collect(root, &mut files)?;
    for f in files {
        let text = String::from_utf8_lossy(&std::fs::read(&f)?).into_owned();
        let count: usize = needles.iter().map(|n| text.matches(n.as_str()).count()).sum();
        if count > 0 {
            hits.push(Hit { file: f, count });
        }
    }
    Ok((secrets.len(), hits))
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let p = e.path();
        if e.file_type()?.is_dir() {
            if p.file_name().is_some_and(|n| n != "secrets") {
                collect(&p, out)?;
            }
        } else {
            out.push(p);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The scan finds a planted secret (as written and JSON-escaped) and nothing else.
    #[test]
    fn a_planted_secret_is_found_and_a_clean_log_is_not() {
        let root = tempfile::tempdir().expect("dir");
        let r = root.path();
        std::fs::create_dir_all(r.join("secrets")).expect("mkdir");
        std::fs::create_dir_all(r.join("audit")).expect("mkdir");
        // An empty or short line (two registrations interleaved) is no needle: it would match
        // every file.
        std::fs::write(r.join("secrets/1.txt"), "hunter2-but-longer\n\nshort\n").expect("write");
        std::fs::write(r.join("audit/a.log"), "{\"note\": \"nothing to see\"}\n").expect("write");
        assert_eq!(scan(r).expect("scan"), (1, vec![]));
        std::fs::write(r.join("audit/b.log"), "x hunter2-but-longer y hunter2-but-longer\n").expect("write");
        let (_, hits) = scan(r).expect("scan");
        assert_eq!(hits, vec![Hit { file: r.join("audit/b.log"), count: 2 }]);
    }
}
