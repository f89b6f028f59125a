//! YAML documents read from a file, from every `*.yaml`/`*.yml` of a directory (in name order),
//! or from standard input (`-`): what every command that takes `-f` reads. Empty documents are
//! skipped; each document comes with where it was, `<file> (document N)`, for messages.

use std::path::{Path, PathBuf};

use serde::Deserialize;

fn files(path: &Path) -> Result<Vec<PathBuf>, String> {
    if !path.is_dir() {
        return Ok(vec![path.to_owned()]);
    }
    let rd = std::fs::read_dir(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut files: Vec<PathBuf> = rd
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    Ok(files)
}

fn text(file: &Path) -> Result<String, String> {
    let read = if file.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin())
    } else {
        std::fs::read_to_string(file)
    };
    read.map_err(|e| format!("{}: {e}", file.display()))
}

/// Every non-empty document under `path`, with where it was.
pub fn read(path: &Path) -> Result<Vec<(String, serde_yaml::Value)>, String> {
    let mut out = Vec::new();
    for file in files(path)? {
        let text = text(&file)?;
        for (i, doc) in serde_yaml::Deserializer::from_str(&text).enumerate() {
            let at = format!("{} (document {})", file.display(), i + 1);
            let v = serde_yaml::Value::deserialize(doc).map_err(|e| format!("{at}: {e}"))?;
            if !v.is_null() {
                out.push((at, v));
            }
        }
    }
    Ok(out)
}
