//! Path and name rules shared by admission, the CLI and the engine: a path that reaches a
//! shell or a tar command is absolute, has no `.`, `..` or empty segments, and keeps to a
//! conservative character set.

/// Checks an absolute path given in `field`; the error names the field and what is accepted.
pub fn check_abs(p: &str, field: &str) -> Result<(), String> {
    let accepted = "an absolute path of segments made of A-Z a-z 0-9 . _ @ + -, without `.` or `..` segments";
    let bad = |why: &str| Err(format!("{field}: {p:?} {why}; expected {accepted}"));
    if p.len() > 1024 {
        return bad("is longer than 1024 characters");
    }
    let Some(rest) = p.strip_prefix('/') else { return bad("is not absolute") };
    if rest.is_empty() {
        return bad("is the root directory");
    }
    for seg in rest.split('/') {
        match seg {
            "" => return bad("has an empty segment"),
            "." | ".." => return bad("has a `.` or `..` segment"),
            s if !s.bytes().all(|b| b.is_ascii_alphanumeric() || b"._@+-".contains(&b)) => {
                return bad("has a character outside the accepted set");
            }
            _ => {}
        }
    }
    Ok(())
}

/// Whether `id` has the shape of an artifact id Nova makes (`20261129T105000Z-1a2b3c`).
pub fn valid_id(id: &str) -> bool {
    let b = id.as_bytes();
    b.len() == 23
        && b[..8].iter().all(u8::is_ascii_digit)
        && b[8] == b'T'
        && b[9..15].iter().all(u8::is_ascii_digit)
        && &b[15..17] == b"Z-"
        && b[17..].iter().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        for ok in ["/var/backups", "/srv/app/data-1", "/a/.hidden", "/a/b..c"] {
            assert!(check_abs(ok, "f").is_ok(), "{ok}");
        }
        for bad in ["", "/", "b", "/b/../../etc", "/b/./c", "/b//c", "/b/", "/b/$(x)", "/b c"] {
            let e = check_abs(bad, "spec.destination.hostPath.path").unwrap_err();
            assert!(e.starts_with("spec.destination.hostPath.path: "), "{e}");
        }
    }

    /// The engine's check and the CRD's pattern (what admission and the CLI apply) agree.
    #[test]
    fn the_engine_and_the_schema_accept_the_same_paths() {
        let re = regex::Regex::new(crate::api::common::DIR_PATH).unwrap();
        let segs = ["a", ".", "..", "...", ".a", "..a", "a.", "a..b", "", "@x", "a b", "$", "-"];
        for x in segs {
            for y in segs {
                for p in [format!("/{x}"), format!("/{x}/{y}"), format!("{x}/{y}"), format!("/{x}/{y}/")] {
                    assert_eq!(check_abs(&p, "f").is_ok(), re.is_match(&p), "{p:?}");
                }
            }
        }
    }

    #[test]
    fn ids() {
        assert!(valid_id("20261129T105000Z-1a2b3c"));
        for bad in [
            "",
            "20261129T105000Z-1a2b3",
            "x0261129T105000Z-1a2b3c",
            "20261129T105000Z-1A2B3C",
            "../../../../../etc/pw",
        ] {
            assert!(!valid_id(bad), "{bad}");
        }
    }
}
