//! Every value that goes into a rendered nginx, systemd or compose file passes through here
//! first. Each check accepts a narrow, documented shape, so no input can close a directive,
//! start a new line or unit section, or reach a shell.

use std::sync::LazyLock;

use regex::Regex;

/// A value refused for a rendered config: which field, and what would be accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}; accepted: {accepted}")]
pub struct Invalid {
    pub field: String,
    pub problem: String,
    pub accepted: &'static str,
}

fn invalid(field: &str, problem: impl Into<String>, accepted: &'static str) -> Invalid {
    Invalid { field: field.to_owned(), problem: problem.into(), accepted }
}

/// Shows a refused value without echoing anything long or unprintable back into logs.
fn shown(value: &str) -> String {
    let printable: String = value.chars().take(40).map(|c| if c.is_control() { '?' } else { c }).collect();
    format!("{printable:?}{}", if value.chars().count() > 40 { "…" } else { "" })
}

fn check(
    field: &str,
    value: &str,
    re: &Regex,
    max: usize,
    accepted: &'static str,
) -> Result<String, Invalid> {
    if value.is_empty() || value.len() > max || !re.is_match(value) {
        return Err(invalid(field, format!("{} is not allowed", shown(value)), accepted));
    }
    Ok(value.to_owned())
}

macro_rules! re {
    ($name:ident, $pattern:expr) => {
        static $name: LazyLock<Regex> = LazyLock::new(|| Regex::new($pattern).expect("valid pattern"));
    };
}

re!(NAME, r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$");
re!(DOMAIN, r"^([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\.)+[a-z]([-a-z0-9]{0,61}[a-z0-9])?$");
re!(PATH, r"^(/[A-Za-z0-9._@+-]+)+/?$");
re!(URL_PATH, r"^/[A-Za-z0-9._~/-]*$");
re!(ENV_KEY, r"^[A-Za-z_][A-Za-z0-9_]{0,255}$");
re!(USER, r"^[a-z_][a-z0-9_-]{0,31}$");
re!(SIZE, r"^[0-9]{1,6}[kmg]?$");
// registry[:port]/path[:tag][@digest]
re!(
    IMAGE,
    r"^[a-z0-9]([a-z0-9._-]*[a-z0-9])?(:[0-9]{1,5})?(/[a-z0-9]([a-z0-9._-]*[a-z0-9])?)*(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(@sha256:[a-f0-9]{64})?$"
);
re!(CALENDAR, r"^[A-Za-z0-9*:/,. -]{1,64}$");

/// A name used in file names, unit names and nginx identifiers.
pub fn name(field: &str, v: &str) -> Result<String, Invalid> {
    check(field, v, &NAME, 63, "lowercase letters, digits and '-', at most 63, e.g. shop-api")
}

/// A served domain (no wildcard, no port).
pub fn domain(field: &str, v: &str) -> Result<String, Invalid> {
    check(field, v, &DOMAIN, 253, "a lowercase DNS name such as shop.example.com")
}

/// An absolute path without `..`, spaces, quotes or shell characters.
pub fn abs_path(field: &str, v: &str) -> Result<String, Invalid> {
    if v.split('/').any(|part| part == ".." || part == ".") {
        return Err(invalid(
            field,
            format!("{} has a '.' or '..' component", shown(v)),
            "an absolute path without . or ..",
        ));
    }
    check(field, v, &PATH, 1024, "an absolute path of letters, digits and ._@+- such as /srv/shop")
}

/// The path part of a URL (health checks).
pub fn url_path(field: &str, v: &str) -> Result<String, Invalid> {
    check(field, v, &URL_PATH, 1024, "a path such as /healthz (letters, digits, ._~/-)")
}

pub fn port(field: &str, v: i64) -> Result<u16, Invalid> {
    u16::try_from(v)
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| invalid(field, format!("{v} is not a port"), "an integer from 1 to 65535"))
}

pub fn user(field: &str, v: &str) -> Result<String, Invalid> {
    check(field, v, &USER, 32, "a Unix user name such as app or www-data")
}

/// nginx size (`client_max_body_size`): digits with an optional k, m or g.
pub fn size(field: &str, v: &str) -> Result<String, Invalid> {
    check(field, v, &SIZE, 7, "digits with an optional k, m or g, e.g. 10m")
}

pub fn image(field: &str, v: &str) -> Result<String, Invalid> {
    check(field, v, &IMAGE, 512, "an image reference such as ghcr.io/acme/shop:1.4 or ...@sha256:<64 hex>")
}

/// systemd `OnCalendar=` expression.
pub fn calendar(field: &str, v: &str) -> Result<String, Invalid> {
    check(field, v, &CALENDAR, 64, "a systemd calendar expression such as daily or *-*-* 03:00:00")
}

pub fn env_key(field: &str, v: &str) -> Result<String, Invalid> {
    check(field, v, &ENV_KEY, 256, "letters, digits and '_', not starting with a digit")
}

/// One line of a systemd EnvironmentFile (also read by docker compose's env_file): the value
/// is double-quoted with `\` and `"` escaped; line breaks and NUL cannot be represented and are
/// refused.
pub fn env_line(field: &str, key: &str, value: &str) -> Result<String, Invalid> {
    let key = env_key(&format!("{field}.name"), key)?;
    env_value(&format!("{field}.value"), value)?;
    let escaped = value.replace('\\', "\\\\").replace('"', "\\\"");
    Ok(format!("{key}=\"{escaped}\""))
}

/// An environment value: one line (systemd's EnvironmentFile cannot hold more, and the same
/// application runs under both runtimes).
pub fn env_value(field: &str, value: &str) -> Result<(), Invalid> {
    if value.contains(['\n', '\r', '\0']) {
        return Err(invalid(field, "contains a line break or NUL", "a single line of text"));
    }
    Ok(())
}

/// `ExecStart=` from an argument vector: each argument double-quoted, with systemd's specifier
/// (`%`) and variable (`$`) expansion disabled. No shell is involved.
pub fn exec_start(field: &str, argv: &[String]) -> Result<String, Invalid> {
    let Some(program) = argv.first() else {
        return Err(invalid(field, "is empty", "a program and its arguments"));
    };
    abs_path(&format!("{field}[0]"), program)?;
    let mut out = Vec::with_capacity(argv.len());
    for (i, arg) in argv.iter().enumerate() {
        if arg.contains(['\n', '\r', '\0']) || arg.len() > 4096 {
            return Err(invalid(
                &format!("{field}[{i}]"),
                "contains a line break or NUL, or is too long",
                "one line, at most 4096 bytes",
            ));
        }
        let quoted = arg.replace('\\', "\\\\").replace('"', "\\\"").replace('%', "%%").replace('$', "$$");
        out.push(format!("\"{quoted}\""));
    }
    Ok(out.join(" "))
}

/// Free text that ends up on one line of a unit (Description=): printable, one line.
pub fn one_line(field: &str, v: &str) -> Result<String, Invalid> {
    if v.is_empty() || v.len() > 256 || v.chars().any(char::is_control) {
        return Err(invalid(
            field,
            format!("{} is empty, too long or has control characters", shown(v)),
            "one line of printable text, at most 256",
        ));
    }
    // A specifier would be expanded by systemd.
    Ok(v.replace('%', "%%"))
}
