//! Values that go into remote shell commands: quoted, and checked where a wrong value would
//! do harm even when quoted (a relative path, a user name that is an option).

/// POSIX shell single-quoting: the result is one word whatever `s` holds.
pub fn quote(s: &str) -> String {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"/._-+=:@,".contains(&b)) {
        return s.to_owned();
    }
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// An absolute path without `..`, NUL, newlines or other control characters.
pub fn valid_remote_path(p: &str) -> Result<(), String> {
    if !p.starts_with('/') {
        return Err(format!("remote path {p:?} must be absolute"));
    }
    if p.len() > 1024 {
        return Err("remote path is longer than 1024 characters".into());
    }
    if p.chars().any(char::is_control) {
        return Err(format!("remote path {p:?} contains a control character"));
    }
    if p.split('/').any(|c| c == "..") {
        return Err(format!("remote path {p:?} must not contain `..`"));
    }
    if p.ends_with('/') {
        return Err(format!("remote path {p:?} names a directory, not a file"));
    }
    Ok(())
}

/// `user` or `user:group`, each a POSIX portable name.
pub fn valid_owner(o: &str) -> Result<(), String> {
    let ok = |n: &str| {
        !n.is_empty()
            && n.len() <= 32
            && !n.starts_with('-')
            && n.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    };
    let mut parts = o.split(':');
    let valid = match (parts.next(), parts.next(), parts.next()) {
        (Some(u), None, None) => ok(u),
        (Some(u), Some(g), None) => ok(u) && ok(g),
        _ => false,
    };
    if valid {
        Ok(())
    } else {
        Err(format!("owner {o:?} must be `user` or `user:group` (letters, digits, . _ -)"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `sh -c 'printf %s <quoted>'` prints must be the input, byte for byte.
    fn roundtrip(s: &str) -> String {
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("printf %s {}", quote(s)))
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap()
    }

    #[test]
    fn quoting_survives_a_real_shell() {
        for s in [
            "plain",
            "",
            "two words",
            "it's",
            "$(reboot)",
            "`id`",
            "a\nb",
            "; rm -rf / #",
            "\\'\"",
            "-n",
            "*",
            "ünïcødé",
        ] {
            assert_eq!(roundtrip(s), s, "{s:?} quoted as {}", quote(s));
        }
    }

    #[test]
    fn paths_and_owners_are_checked() {
        assert!(valid_remote_path("/etc/nginx/sites-enabled/shop.conf").is_ok());
        for bad in ["etc/x", "/a/../etc/shadow", "/a\nb", "/dir/", "/a\0b"] {
            assert!(valid_remote_path(bad).is_err(), "{bad:?}");
        }
        assert!(valid_owner("www-data").is_ok() && valid_owner("nova:nova").is_ok());
        for bad in ["-R", "a b", "root;id", "a:b:c", ""] {
            assert!(valid_owner(bad).is_err(), "{bad:?}");
        }
    }
}
