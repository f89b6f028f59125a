//! Bootstrap as declarative steps. Each step is a pair of shell scripts built from the spec
//! (every value quoted or validated): `check` exits 0 when the host is already in shape and
//! otherwise prints what differs; `apply` brings it there. A run checks, applies only what
//! needs it, then checks again to verify. Every script is idempotent, so a run cut off half-way
//! completes on the next one.
//!
//! Steps that do not need the packages (sshd hardening, a user without sudo or groups) run
//! alongside the package step instead of after it, and a step's apply and its verifying check
//! go in one round trip.

use std::time::Duration;

use crate::api::host::HostSpec;
use crate::host::services;
use crate::ssh::{self, quote};

/// One step, as built for a host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    pub name: String,
    pub check: String,
    pub apply: String,
    pub order: Order,
}

/// When a step may be applied relative to the package step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Order {
    /// The package step itself.
    Packages,
    /// Needs what the package step installs: applied after it, in spec order.
    AfterPackages,
    /// Needs nothing installed: applied alongside the package step.
    Anytime,
}

/// What happened to a step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Unchanged,
    /// Changed (or, in a dry run, would change); the text says what differed.
    Changed(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StepReport {
    pub name: String,
    pub outcome: Outcome,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Ssh(#[from] ssh::Error),
    #[error("step {step}: applied, but the check still fails: {output}")]
    NotConverged { step: String, output: String },
    #[error("step {step}: {output}")]
    ApplyFailed { step: String, output: String },
    #[error("{0}")]
    Invalid(String),
}

const TIMEOUT: Duration = Duration::from_secs(600);

/// The steps for `spec`, in order. Refuses a spec that would lock Nova out.
pub fn steps(spec: &HostSpec) -> Result<Vec<Step>, Error> {
    let Some(b) = &spec.bootstrap else { return Ok(Vec::new()) };
    let mut out = Vec::new();
    let mut packages = b.packages.clone();
    if b.users.iter().any(|u| u.sudo) && !packages.iter().any(|p| p == "sudo") {
        // A sudo user needs sudo: installed with the other packages rather than failing later.
        packages.push("sudo".into());
    }
    for p in services::packages(b) {
        if !packages.iter().any(|q| q == p) {
            packages.push(p.into());
        }
    }
    if !packages.is_empty() {
        out.push(packages_step(&packages));
    }
    for u in &b.users {
        out.push(user_step(u)?);
    }
    if let Some(h) = &b.ssh_hardening {
        if spec.user == "root" && !h.permit_root_login {
            return Err(Error::Invalid(
                "spec.bootstrap.sshHardening.permitRootLogin is false while Nova logs in as root (spec.user): \
                 that would lock Nova out; add a sudo user in bootstrap.users and log in as it, or allow root"
                    .into(),
            ));
        }
        out.push(sshd_step(h.permit_root_login));
    }
    if let Some(fw) = &b.firewall {
        out.push(services::firewall_step(fw, spec.port)?);
    }
    if b.fail2ban {
        out.push(services::fail2ban_step());
    }
    if b.unattended_upgrades {
        out.push(services::unattended_upgrades_step());
    }
    if b.node_exporter || b.monitoring {
        out.push(services::node_exporter_step());
    }
    if b.monitoring {
        out.push(crate::host::monitoring::step());
    }
    if b.docker {
        out.push(services::docker_step());
    }
    if b.nvidia {
        out.push(services::nvidia_step(b.docker));
    }
    Ok(out)
}

/// Shell prelude of every package installation: waits for any other package-manager run (an
/// unattended upgrade, or one of ours cut off half-way that is still finishing), completes an
/// interrupted dpkg, and refreshes the index. `/proc` rather than pgrep: minimal images lack procps.
pub const APT_PREPARE: &str = "export DEBIAN_FRONTEND=noninteractive; \
     while grep -qsx -e apt-get -e dpkg /proc/[0-9]*/comm; do sleep 1; done; \
     dpkg --configure -a && apt-get -qq -o DPkg::Lock::Timeout=300 update";

pub fn packages_step(packages: &[String]) -> Step {
    let list = packages.iter().map(|p| quote(p)).collect::<Vec<_>>().join(" ");
    // `name=version` pins compare the installed version too.
    let check = format!(
        "missing=''; for p in {list}; do n=${{p%%=*}}; v=${{p#*=}}; \
         s=$(dpkg-query -W -f='${{Status}} ${{Version}}' \"$n\" 2>/dev/null || true); \
         case \"$s\" in 'install ok installed'*) [ \"$n\" = \"$p\" ] || [ \"${{s##* }}\" = \"$v\" ] || missing=\"$missing $p\";; \
         *) missing=\"$missing $p\";; esac; done; \
         if [ -n \"$missing\" ]; then echo \"to install:$missing\"; exit 10; fi"
    );
    let apply = format!(
        "{APT_PREPARE} && apt-get -qq -o DPkg::Lock::Timeout=300 install -y -f --no-install-recommends \
         -o Dpkg::Options::=--force-confold {list}"
    );
    Step { name: "packages".into(), check, apply, order: Order::Packages }
}

fn user_step(u: &crate::api::host::HostUser) -> Result<Step, Error> {
    ssh::quote::valid_owner(&u.name).map_err(Error::Invalid)?;
    for k in &u.authorized_keys {
        if k.contains('\n') || k.contains('\r') {
            return Err(Error::Invalid(format!(
                "bootstrap.users[{}].authorizedKeys: one key per entry, no newlines",
                u.name
            )));
        }
    }
    let name = quote(&u.name);
    let keys = u.authorized_keys.iter().map(|k| format!("{k}\n")).collect::<String>();
    let keys_q = quote(&keys);
    let groups = u.groups.iter().map(|g| quote(g)).collect::<Vec<_>>().join(",");
    let sudoers = format!("/etc/sudoers.d/nova-{}", u.name);
    let sudo_line = quote(&format!("{} ALL=(ALL) NOPASSWD:ALL\n", u.name));
    let sudo_check = if u.sudo {
        format!(
            "[ \"$(cat {s} 2>/dev/null)\" = \"$(printf %s {sudo_line})\" ] || d=\"$d sudo\"; ",
            s = quote(&sudoers)
        )
    } else {
        format!("[ ! -e {s} ] || d=\"$d no-sudo\"; ", s = quote(&sudoers))
    };
    let group_check = if groups.is_empty() {
        String::new()
    } else {
        format!(
            "for g in $(echo {groups} | tr , ' '); do id -nG {name} 2>/dev/null | tr ' ' '\\n' | grep -qx \"$g\" || d=\"$d group:$g\"; done; "
        )
    };
    let check = format!(
        "d=''; id -u {name} >/dev/null 2>&1 || d=\"$d user\"; \
         h=$(getent passwd {name} | cut -d: -f6); \
         [ -n \"$h\" ] && [ \"$(cat \"$h/.ssh/authorized_keys\" 2>/dev/null)\" = \"$(printf %s {keys_q})\" ] || d=\"$d authorized_keys\"; \
         {group_check}{sudo_check}\
         if [ -n \"$d\" ]; then echo \"user {user}:$d\"; exit 10; fi",
        user = u.name,
    );
    let add_groups = if groups.is_empty() {
        String::new()
    } else {
        format!(
            "for g in $(echo {groups} | tr , ' '); do getent group \"$g\" >/dev/null || groupadd \"$g\"; done; usermod -aG {groups} {name}; "
        )
    };
    let sudo_apply = if u.sudo {
        format!(
            "t=$(mktemp); printf %s {sudo_line} > \"$t\"; visudo -cqf \"$t\"; chmod 0440 \"$t\"; mv -f \"$t\" {s}; ",
            s = quote(&sudoers)
        )
    } else {
        format!("rm -f {s}; ", s = quote(&sudoers))
    };
    let apply = format!(
        "set -e; id -u {name} >/dev/null 2>&1 || useradd -m -s /bin/bash {name}; {add_groups}\
         h=$(getent passwd {name} | cut -d: -f6); install -d -m 0700 -o {name} -g {name} \"$h/.ssh\"; \
         t=$(mktemp \"$h/.ssh/.nova.XXXXXX\"); printf %s {keys_q} > \"$t\"; chmod 0600 \"$t\"; chown {name}:{name} \"$t\"; \
         mv -f \"$t\" \"$h/.ssh/authorized_keys\"; {sudo_apply}"
    );
    // visudo comes with sudo, and groups may come with packages (docker's, for one).
    let order = if u.sudo || !u.groups.is_empty() { Order::AfterPackages } else { Order::Anytime };
    Ok(Step { name: format!("user {}", u.name), check, apply, order })
}

const SSHD_DROP_IN: &str = "/etc/ssh/sshd_config.d/50-nova-hardening.conf";

fn sshd_step(permit_root: bool) -> Step {
    let conf = format!(
        "# Managed by Nova (Host bootstrap.sshHardening).\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nPermitEmptyPasswords no\nPermitRootLogin {}\n",
        if permit_root { "prohibit-password" } else { "no" }
    );
    let c = quote(&conf);
    let check = format!(
        "[ \"$(cat {f} 2>/dev/null)\" = \"$(printf %s {c})\" ] || {{ echo 'sshd: hardening drop-in differs'; exit 10; }}; \
         sshd -T 2>/dev/null | grep -qx 'passwordauthentication no' || {{ echo 'sshd: the running config allows passwords'; exit 10; }}",
        f = quote(SSHD_DROP_IN)
    );
    // sshd -t first: a config that does not parse is never left in place.
    let apply = format!(
        "set -e; t=$(mktemp /etc/ssh/sshd_config.d/.nova.XXXXXX); printf %s {c} > \"$t\"; chmod 0644 \"$t\"; \
         mv -f \"$t\" {f}; if ! sshd -t; then rm -f {f}; echo 'sshd -t refused the config; removed' >&2; exit 1; fi; \
         systemctl reload ssh",
        f = quote(SSHD_DROP_IN)
    );
    Step { name: "sshd hardening".into(), check, apply, order: Order::Anytime }
}

/// Runs the steps on `conn`: check, apply if needed (not in a dry run), verify. Steps that do
/// not need the packages run alongside the package step and those after it. Reports come in
/// step order; when steps fail, the error is the first failing step's.
pub async fn run(conn: &ssh::Connection, steps: &[Step], dry_run: bool) -> Result<Vec<StepReport>, Error> {
    let chain = |anytime: bool| -> Vec<(usize, &Step)> {
        steps.iter().enumerate().filter(|(_, s)| (s.order == Order::Anytime) == anytime).collect()
    };
    // `steps` puts the package step first, so the first chain starts with it.
    let (after, alongside) = (chain(false), chain(true));
    let (a, b) = tokio::join!(run_chain(conn, &after, dry_run), run_chain(conn, &alongside, dry_run));
    let mut reports: Vec<(usize, StepReport)> = Vec::with_capacity(steps.len());
    let mut failed: Option<(usize, Error)> = None;
    for r in [a, b] {
        match r {
            Ok(done) => reports.extend(done),
            Err((i, e)) if failed.as_ref().is_none_or(|(j, _)| i < *j) => failed = Some((i, e)),
            Err(_) => {}
        }
    }
    if let Some((_, e)) = failed {
        return Err(e);
    }
    reports.sort_by_key(|(i, _)| *i);
    Ok(reports.into_iter().map(|(_, r)| r).collect())
}

/// Checks and (unless a dry run) applies the steps one after another; on failure, the index of
/// the failing step and why.
async fn run_chain(
    conn: &ssh::Connection,
    steps: &[(usize, &Step)],
    dry_run: bool,
) -> Result<Vec<(usize, StepReport)>, (usize, Error)> {
    let mut done = Vec::with_capacity(steps.len());
    for &(i, step) in steps {
        let checked = conn.exec(&step.check, None, TIMEOUT).await.map_err(|e| (i, e.into()))?;
        let outcome = if checked.code == 0 {
            Outcome::Unchanged
        } else {
            if !dry_run {
                apply_verified(conn, step).await.map_err(|e| (i, e))?;
            }
            Outcome::Changed(if checked.stdout.is_empty() { checked.stderr } else { checked.stdout })
        };
        done.push((i, StepReport { name: step.name.clone(), outcome }));
    }
    Ok(done)
}

/// Separates a step's apply output from its verifying check's in the one round trip.
const VERIFY_MARK: &str = "--- nova: verify ---";

/// Applies a step and checks it again, in one round trip.
async fn apply_verified(conn: &ssh::Connection, step: &Step) -> Result<(), Error> {
    let script = format!(
        "( {apply}\n) </dev/null; rc=$?; [ $rc -eq 0 ] || exit $rc; echo {mark}; {check}",
        apply = step.apply,
        mark = quote(VERIFY_MARK),
        check = step.check,
    );
    let out = conn.exec(&script, None, TIMEOUT).await?;
    match out.stdout.split_once(VERIFY_MARK) {
        None => {
            let output = if out.stderr.is_empty() { out.stdout } else { out.stderr };
            Err(Error::ApplyFailed { step: step.name.clone(), output })
        }
        Some((_, verified)) if out.code != 0 => {
            Err(Error::NotConverged { step: step.name.clone(), output: verified.trim().to_owned() })
        }
        Some(_) => Ok(()),
    }
}

/// `name: changed (what)` / `name: unchanged`, one per line.
pub fn describe(report: &[StepReport], dry_run: bool) -> String {
    report
        .iter()
        .map(|r| match &r.outcome {
            Outcome::Unchanged => format!("{}: unchanged", r.name),
            Outcome::Changed(d) if dry_run => format!("{}: would change ({})", r.name, d.trim()),
            Outcome::Changed(d) => format!("{}: changed ({})", r.name, d.trim()),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(b: serde_json::Value) -> HostSpec {
        serde_json::from_value(
            json!({"address": "h", "sshKeySecretRef": {"name": "k", "key": "k"}, "bootstrap": b}),
        )
        .unwrap()
    }

    #[test]
    fn steps_follow_the_spec_and_sudo_brings_its_package() {
        let s = steps(&spec(json!({"packages": ["jq"], "users": [{"name": "deploy", "sudo": true}],
                                    "sshHardening": {"permitRootLogin": true}})))
        .unwrap();
        let names: Vec<_> = s.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["packages", "user deploy", "sshd hardening"]);
        assert!(s[0].apply.contains("jq sudo"), "{}", s[0].apply);
    }

    #[test]
    fn a_spec_that_would_lock_nova_out_is_refused() {
        let err = steps(&spec(json!({"sshHardening": {"permitRootLogin": false}}))).unwrap_err();
        assert!(err.to_string().contains("lock Nova out"), "{err}");
    }

    #[test]
    fn hostile_values_stay_data() {
        let s = steps(&spec(
            json!({"users": [{"name": "ok", "authorizedKeys": ["ssh-ed25519 AAAA x'; rm -rf / #"]}]}),
        ))
        .unwrap();
        // The key is inside single quotes, its own quote escaped.
        assert!(s[0].apply.contains(r"x'\''; rm -rf / #"), "{}", s[0].apply);
        let bad = steps(&spec(json!({"users": [{"name": "ok", "authorizedKeys": ["a\nb"]}]}))).unwrap_err();
        assert!(bad.to_string().contains("no newlines"));
    }
}
