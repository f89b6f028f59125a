//! Many AlertRules on one Host in one round — `nova apply -f` with many objects, and the
//! operator's reconciles that arrive together ([`crate::kit::rounds`]): every rule
//! file that changed is checked by one `promtool check rules` and loaded by one reload, every
//! routing part is read by one command and merged once, and Prometheus is asked once. Object by
//! object ([`super::hosts::apply`]) the same work is one check, one reload and one question per
//! object. When a step of the round is refused, what that step changed is put back and the
//! caller goes object by object, so that each refusal is told to the object it belongs to.

use std::time::Duration;

use super::hosts::{self, Object};
use super::onhost::{self, Error};
use super::{observe, rules};
use crate::api::alert::AlertRuleStatus;
use crate::conditions::Cond;
use crate::host::monitoring::RULES_DIR;
use crate::ssh::Connection;

const TIMEOUT: Duration = Duration::from_secs(120);

/// Shell, a tar of rule files on stdin: unpacks them beside the installed ones, keeps those
/// that differ, checks them with one promtool call, and moves them in (the old ones kept as
/// `.<name>.previous`), their names listed in [`CHANGED`] for a rollback. Prints how many
/// changed; exits 30 without promtool, 20 with its words.
fn install_script() -> String {
    format!(
        "set -e; command -v promtool >/dev/null || exit 30; d={RULES_DIR}; install -d \"$d\"; \
         s=$(mktemp -d \"$d/.nova.batch.XXXXXX\"); trap 'rm -rf \"$s\"' EXIT; \
         tar -x -C \"$s\" --no-same-owner --no-same-permissions -f -; changed=; \
         for t in \"$s\"/*.yml; do [ -f \"$t\" ] || continue; b=$(basename \"$t\"); \
           if [ -f \"$d/$b\" ] && cmp -s \"$t\" \"$d/$b\"; then continue; fi; changed=\"$changed $b\"; done; \
         [ -n \"$changed\" ] || {{ echo 0; exit 0; }}; \
         if ! out=$(cd \"$s\" && promtool check rules $changed 2>&1); then printf '%s\\n' \"$out\" | tail -n 40 >&2; exit 20; fi; \
         for b in $changed; do \
           if [ -f \"$d/$b\" ]; then cp -p \"$d/$b\" \"$d/.$b.previous\"; else rm -f \"$d/.$b.previous\"; fi; \
           chmod 0644 \"$s/$b\"; chgrp root \"$s/$b\" 2>/dev/null || true; mv -f \"$s/$b\" \"$d/$b\"; done; \
         printf '%s\\n' $changed > \"$d/{CHANGED}\"; set -- $changed; echo $#"
    )
}

/// Where the last batch listed the files it changed (not a `*.yml`: Prometheus skips it).
const CHANGED: &str = ".nova.batch.changed";

/// Shell: the files the last batch changed back as they were (or gone, where there was none).
fn restore_script() -> String {
    format!(
        "d={RULES_DIR}; while read -r b; do case \"$b\" in *.yml) ;; *) continue ;; esac; \
         if [ -f \"$d/.$b.previous\" ]; then mv -f \"$d/.$b.previous\" \"$d/$b\"; else rm -f \"$d/$b\"; fi; \
         done < \"$d/{CHANGED}\""
    )
}

/// The rule files as one tar, each under its installed name.
fn archive(files: &[(String, String)]) -> std::io::Result<Vec<u8>> {
    let mut tar = tar::Builder::new(Vec::new());
    for (name, yaml) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(yaml.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        tar.append_data(&mut h, name, yaml.as_bytes())?;
    }
    tar.into_inner()
}

/// Installs every file (`name`, YAML) in one check and one reload; returns how many changed.
/// On a refusal the files are as they were before.
async fn put_rules(conn: &Connection, files: &[(String, String)]) -> Result<usize, Error> {
    let tar = archive(files).map_err(|e| Error::Refused {
        tool: "nova",
        what: "the rule files".into(),
        output: e.to_string(),
    })?;
    let out = conn.exec(&install_script(), Some(&tar), TIMEOUT).await?;
    let what = format!("{} rule files", files.len());
    match out.code {
        0 => {}
        30 => return Err(Error::NoMonitoring { tool: "promtool" }),
        20 => return Err(Error::Refused { tool: "promtool", what, output: out.stderr.trim().to_owned() }),
        code => {
            let output = out.stderr.trim().to_owned();
            let command = "installing rule files".into();
            return Err(crate::ssh::Error::Failed { target: RULES_DIR.into(), command, code, output }.into());
        }
    }
    let changed: usize = out.stdout.trim().parse().unwrap_or(files.len());
    if changed == 0 {
        return Ok(0);
    }
    if let Err(output) = onhost::reload_rules(conn).await? {
        conn.run(&restore_script(), TIMEOUT).await?;
        let _ = onhost::reload_rules(conn).await?;
        return Err(Error::ReloadRefused { server: "Prometheus", what, output });
    }
    Ok(changed)
}

/// Applies every object on the host behind `conn` and reads their rules back into `statuses`
/// (in the same order); returns each one's conditions. Err: a step was refused and put back —
/// go object by object.
pub async fn apply(
    conn: &Connection,
    objects: &[Object<'_>],
    statuses: &mut [AlertRuleStatus],
) -> Result<Vec<(Duration, Vec<Cond>)>, Error> {
    let files: Vec<(String, String)> = objects
        .iter()
        .map(|o| (file_name(o.namespace, o.name), rules::yaml(o.owner, &o.checked.groups)))
        .collect();
    put_rules(conn, &files).await?;
    hosts::route_all(conn, objects).await?;
    let answer = onhost::answer(conn).await?;
    Ok(objects
        .iter()
        .zip(statuses.iter_mut())
        .map(|(o, st)| match &answer {
            Ok(a) => observe::fill(o.owner, o.checked, a, st),
            Err(e) => observe::unreachable(e),
        })
        .collect())
}

/// Every object on the host in one round ([`apply`]); object by object when the round is refused
/// and put back, so that each refusal is told to the object it belongs to. One result per
/// object, in order.
pub async fn apply_or_each(
    conn: &Connection,
    objects: &[Object<'_>],
    statuses: &mut [AlertRuleStatus],
) -> Vec<Result<(Duration, Vec<Cond>), Error>> {
    match apply(conn, objects, statuses).await {
        Ok(round) => round.into_iter().map(Ok).collect(),
        Err(_) => {
            let mut out = Vec::new();
            for (o, st) in objects.iter().zip(statuses.iter_mut()) {
                out.push(hosts::apply(conn, o, st).await);
            }
            out
        }
    }
}

/// The rule file's name in [`RULES_DIR`] (Kubernetes names: no blank, no quote, no slash).
fn file_name(namespace: &str, name: &str) -> String {
    let path = onhost::rules_path(namespace, name);
    path.rsplit('/').next().unwrap_or(&path).to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_archive_holds_each_file_under_its_installed_name() {
        let files =
            vec![("a--x.yml".to_owned(), "groups: []\n".to_owned()), ("b--y.yml".into(), "g\n".into())];
        let tar = archive(&files).unwrap();
        let mut read = tar::Archive::new(&tar[..]);
        let names: Vec<String> = read
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["a--x.yml", "b--y.yml"]);
        assert_eq!(file_name("default", "app"), "default--app.yml");
    }
}
