//! AlertRules on a Host (Kubernetes-free; the controller and `nova apply` share it): rule files
//! and the Alertmanager configuration written as the nginx site is — checked on the host by the
//! distribution's own tool (`promtool check rules`, `amtool check-config`) before they replace
//! anything, the server reloaded over HTTP, and the previous file put back when the server
//! refuses it. The servers listen on the host's loopback; Nova reaches them through its SSH
//! session.

use std::time::Duration;

use crate::host::monitoring::{ALERTMANAGER_FILE, ALERTMANAGER_PORT, PROMETHEUS_PORT, RULES_DIR};
use crate::ssh::{self, Connection, quote};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Ssh(#[from] ssh::Error),
    #[error("no {tool} on the host: set spec.bootstrap.monitoring: true on the Host")]
    NoMonitoring { tool: &'static str },
    #[error("{tool} refused {what}, which was not installed (the previous one stays): {output}")]
    Refused { tool: &'static str, what: String, output: String },
    #[error("{server} refused to reload {what} ({output}); the previous file is back")]
    ReloadRefused { server: &'static str, what: String, output: String },
    #[error("{server} on the host could not be reloaded: {reason}")]
    Reload { server: &'static str, reason: String },
}

const TIMEOUT: Duration = Duration::from_secs(60);

/// The rule file of AlertRule `namespace/name` on a host.
pub fn rules_path(namespace: &str, name: &str) -> String {
    format!("{RULES_DIR}/{namespace}--{name}.yml")
}

/// One configuration file and how to check and reload it.
struct Kind {
    server: &'static str,
    tool: &'static str,
    check: &'static str,
    port: u16,
    mode: &'static str,
    group: &'static str,
}

const RULES: Kind = Kind {
    server: "Prometheus",
    tool: "promtool",
    check: "promtool check rules",
    port: PROMETHEUS_PORT,
    mode: "0644",
    group: "root",
};

/// Readable by Alertmanager's user only: it holds receiver URLs and passwords.
const ALERTMANAGER: Kind = Kind {
    server: "Alertmanager",
    tool: "amtool",
    check: "amtool check-config",
    port: ALERTMANAGER_PORT,
    mode: "0640",
    group: "prometheus",
};

/// Shell, content on stdin: checks the new file beside the old one and moves it in place,
/// keeping the old one as `.<name>.previous`. Prints `unchanged` or `changed`; exits 30 when
/// the tool is missing, 20 with the tool's words when it refuses.
fn install_script(k: &Kind, path: &str) -> String {
    let f = quote(path);
    format!(
        "set -e; command -v {tool} >/dev/null || exit 30; f={f}; d=$(dirname \"$f\"); b=$(basename \"$f\"); \
         install -d \"$d\"; t=$(mktemp \"$d/.nova.XXXXXX\"); trap 'rm -f \"$t\"' EXIT; cat > \"$t\"; \
         if [ -f \"$f\" ] && cmp -s \"$t\" \"$f\"; then echo unchanged; exit 0; fi; \
         if ! out=$({check} \"$t\" 2>&1); then printf '%s\\n' \"$out\" | sed \"s|$t|$f|g\" | tail -n 20 >&2; exit 20; fi; \
         if [ -f \"$f\" ]; then cp -p \"$f\" \"$d/.$b.previous\"; else rm -f \"$d/.$b.previous\"; fi; \
         chmod {mode} \"$t\"; chgrp {group} \"$t\" 2>/dev/null || true; mv -f \"$t\" \"$f\"; trap - EXIT; echo changed",
        tool = k.tool,
        check = k.check,
        mode = k.mode,
        group = k.group,
    )
}

/// Shell: the previous file back (or none, when there was none before).
fn restore_script(path: &str) -> String {
    let f = quote(path);
    format!(
        "f={f}; p=\"$(dirname \"$f\")/.$(basename \"$f\").previous\"; \
         if [ -f \"$p\" ]; then mv -f \"$p\" \"$f\"; else rm -f \"$f\"; fi"
    )
}

/// Removes every occurrence of the `secrets` from a tool's words.
fn scrub(text: &str, secrets: &[String]) -> String {
    secrets.iter().filter(|s| !s.is_empty()).fold(text.to_owned(), |t, s| t.replace(s.as_str(), "<secret>"))
}

/// POST `/-/reload` to the server through a tunnel; Err carries the server's words.
async fn reload(conn: &Connection, k: &Kind) -> Result<Result<(), String>, Error> {
    let tunnel = conn.tunnel(k.port).await?;
    let fail = |reason: String| Error::Reload { server: k.server, reason };
    let resp = crate::rollouts::gate::client()
        .post(format!("{}/-/reload", tunnel.url()))
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .map_err(|e| fail(e.without_url().to_string()))?;
    if resp.status().is_success() {
        return Ok(Ok(()));
    }
    let status = resp.status();
    let body = resp.text().await.unwrap_or_default();
    Ok(Err(format!("HTTP {status}: {}", body.trim())))
}

/// POST `/-/reload` to the host's Prometheus; Err carries its words.
pub(super) async fn reload_rules(conn: &Connection) -> Result<Result<(), String>, Error> {
    reload(conn, &RULES).await
}

/// Installs `content` at `path` for `k`'s server; returns whether it changed.
async fn install(
    conn: &Connection,
    k: &Kind,
    path: &str,
    content: &str,
    secrets: &[String],
) -> Result<bool, Error> {
    let out = conn.exec(&install_script(k, path), Some(content.as_bytes()), TIMEOUT).await?;
    match out.code {
        0 if out.stdout.trim() == "unchanged" => return Ok(false),
        0 => {}
        30 => return Err(Error::NoMonitoring { tool: k.tool }),
        20 => {
            let output = scrub(out.stderr.trim(), secrets);
            return Err(Error::Refused { tool: k.tool, what: path.to_owned(), output });
        }
        code => {
            let output = scrub(out.stderr.trim(), secrets);
            return Err(ssh::Error::Failed {
                target: path.into(),
                command: "installing".into(),
                code,
                output,
            }
            .into());
        }
    }
    if let Err(output) = reload(conn, k).await? {
        conn.run(&restore_script(path), TIMEOUT).await?;
        // Back to what ran before; a second refusal would be reported by the next round.
        let _ = reload(conn, k).await?;
        return Err(Error::ReloadRefused {
            server: k.server,
            what: path.to_owned(),
            output: scrub(&output, secrets),
        });
    }
    Ok(true)
}

/// Installs an AlertRule's rule file; true when it changed (and Prometheus reloaded it).
pub async fn put_rules(conn: &Connection, path: &str, yaml: &str) -> Result<bool, Error> {
    install(conn, &RULES, path, yaml, &[]).await
}

/// Installs the Alertmanager configuration; `secrets` are kept out of any error.
pub async fn put_alertmanager(conn: &Connection, yaml: &str, secrets: &[String]) -> Result<bool, Error> {
    install(conn, &ALERTMANAGER, ALERTMANAGER_FILE, yaml, secrets).await
}

/// Removes an AlertRule's rule file and reloads Prometheus (nothing to do when it is gone).
pub async fn remove_rules(conn: &Connection, path: &str) -> Result<(), Error> {
    let f = quote(path);
    let script = format!(
        "f={f}; rm -f \"$(dirname \"$f\")/.$(basename \"$f\").previous\"; [ -f \"$f\" ] || exit 0; rm -f \"$f\"; echo removed"
    );
    if conn.run(&script, TIMEOUT).await?.trim() == "removed"
        && let Err(output) = reload(conn, &RULES).await?
    {
        return Err(Error::Reload { server: "Prometheus", reason: output });
    }
    Ok(())
}

/// Prometheus's answer on the host, through a tunnel.
pub async fn answer(conn: &Connection) -> Result<Result<super::prom::Answer, super::prom::PromError>, Error> {
    let tunnel = conn.tunnel(PROMETHEUS_PORT).await?;
    Ok(super::prom::answer(&tunnel.url()).await)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_reach_the_words_of_a_refusal() {
        let t = scrub(
            "bad url https://hooks.example/T0/SECRET in receiver",
            &["https://hooks.example/T0/SECRET".into()],
        );
        assert_eq!(t, "bad url <secret> in receiver");
    }
}
