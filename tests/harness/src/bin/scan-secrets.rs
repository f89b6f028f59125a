//! After the test suite (`scripts/test`): fails when any recorded log line, event or status
//! (under the directory given, see `test_cluster::record`) holds a secret a test registered.
//! Names the files and counts, never the values.

fn main() -> std::process::ExitCode {
    let Some(dir) = std::env::args_os().nth(1).map(std::path::PathBuf::from) else {
        eprintln!("usage: scan-secrets RECORD_DIR");
        return std::process::ExitCode::from(2);
    };
    match test_cluster::record::scan(&dir) {
        Ok((secrets, hits)) if hits.is_empty() => {
            println!("secret scan: {secrets} secret values, no hit in {}", dir.display());
            std::process::ExitCode::SUCCESS
        }
        Ok((secrets, hits)) => {
            eprintln!(
                "secret scan: {} file(s) hold some of the {secrets} secret values the tests made:",
                hits.len()
            );
            for h in hits {
                eprintln!("  {} ({} occurrence(s))", h.file.display(), h.count);
            }
            std::process::ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("secret scan: reading {}: {e}", dir.display());
            std::process::ExitCode::FAILURE
        }
    }
}
