//! Bootstrap steps for the services a host runs beside the application: the nftables
//! allow-list, fail2ban, unattended upgrades and node_exporter. Same contract as the steps in
//! `bootstrap`: `check` exits 0 when in shape and otherwise prints what differs, `apply` is
//! idempotent, every value is validated or quoted.

use std::net::IpAddr;

use crate::api::host::{Firewall, Protocol};
use crate::host::bootstrap::{Error, Order, Step};
use crate::ssh::quote;

/// Debian's engine and compose (12 has compose v1 only; `docker compose`, the plugin, is used
/// instead when Docker's own packages put it there).
pub const DOCKER_PACKAGES: [&str; 2] = ["docker.io", "docker-compose"];

/// Packages the requested services need (added to the packages step).
pub fn packages(b: &crate::api::host::Bootstrap) -> Vec<&'static str> {
    let mut p = Vec::new();
    if b.firewall.is_some() {
        p.push("nftables");
    }
    if b.fail2ban {
        // The systemd backend reads the journal: no syslog daemon needed.
        p.extend(["fail2ban", "python3-systemd"]);
    }
    if b.unattended_upgrades {
        p.push("unattended-upgrades");
    }
    if b.node_exporter && !b.monitoring {
        p.push("prometheus-node-exporter");
    }
    if b.monitoring {
        p.extend(crate::host::monitoring::PACKAGES);
    }
    if b.docker {
        p.extend(DOCKER_PACKAGES);
    }
    p
}

/// Shell: exits 10 with `msg` unless the file at `path` holds exactly `content`.
pub(crate) fn same_file(path: &str, content: &str, msg: &str) -> String {
    format!(
        "[ \"$(cat {p} 2>/dev/null; echo x)\" = \"$(printf '%s' {c}; echo x)\" ] || {{ echo {m}; exit 10; }}; ",
        p = quote(path),
        c = quote(content),
        m = quote(msg)
    )
}

/// Shell: writes `content` to `path` atomically with `mode`.
pub(crate) fn write_file(path: &str, content: &str, mode: &str) -> String {
    format!(
        "install -d \"$(dirname {p})\"; t=$(mktemp \"$(dirname {p})/.nova.XXXXXX\"); printf '%s' {c} > \"$t\"; \
         chmod {mode} \"$t\"; mv -f \"$t\" {p}; ",
        p = quote(path),
        c = quote(content)
    )
}

const FIREWALL_FILE: &str = "/etc/nova/firewall.nft";
const FIREWALL_UNIT: &str = "/etc/systemd/system/nova-firewall.service";
/// What `nft list table inet nova` printed right after the last apply: a later listing that
/// differs means someone changed the rules (drift).
const FIREWALL_LOADED: &str = "/var/lib/nova/state/firewall.loaded";

/// The nftables ruleset: inbound dropped except established traffic, loopback, ICMP, the SSH
/// port Nova uses (always, so it never locks itself out) and the allowed ports. ICMP by number:
/// minimal images have no /etc/protocols to resolve names from.
pub fn firewall_rules(fw: &Firewall, ssh_port: i32) -> Result<String, Error> {
    let mut rules = vec![format!("tcp dport {ssh_port} accept")];
    for (i, r) in fw.allow.iter().enumerate() {
        if !(1..=65535).contains(&r.port) {
            return Err(Error::Invalid(format!(
                "bootstrap.firewall.allow[{i}].port: {} is not a port (1-65535)",
                r.port
            )));
        }
        let proto = match r.protocol {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        };
        if r.from.is_empty() {
            rules.push(format!("{proto} dport {} accept", r.port));
        }
        for (j, cidr) in r.from.iter().enumerate() {
            let family = cidr_family(cidr).ok_or_else(|| {
                Error::Invalid(format!(
                    "bootstrap.firewall.allow[{i}].from[{j}]: {cidr:?} is not a CIDR such as 203.0.113.0/24 or 2001:db8::/32"
                ))
            })?;
            rules.push(format!("{family} saddr {cidr} {proto} dport {} accept", r.port));
        }
    }
    let body: String = rules.iter().map(|r| format!("        {r}\n")).collect();
    Ok(format!(
        "#!/usr/sbin/nft -f\n# Managed by Nova (Host spec.bootstrap.firewall); changes are overwritten.\n\
         table inet nova\ndelete table inet nova\ntable inet nova {{\n    chain input {{\n\
         \x20       type filter hook input priority filter; policy drop;\n\
         \x20       ct state established,related accept\n        ct state invalid drop\n\
         \x20       iif \"lo\" accept\n        meta l4proto {{ 1, 58 }} accept comment \"icmp, ipv6-icmp\"\n{body}    }}\n}}\n"
    ))
}

/// `ip` or `ip6` for a valid CIDR; `None` otherwise (nothing else may reach the ruleset).
fn cidr_family(cidr: &str) -> Option<&'static str> {
    let (addr, len) = cidr.split_once('/')?;
    let len: u8 = len.parse().ok()?;
    match addr.parse::<IpAddr>().ok()? {
        IpAddr::V4(_) if len <= 32 => Some("ip"),
        IpAddr::V6(_) if len <= 128 => Some("ip6"),
        _ => None,
    }
}

const FIREWALL_UNIT_TEXT: &str = "# Managed by Nova; loads the Host's firewall at boot.\n[Unit]\n\
Description=Nova firewall (Host spec.bootstrap.firewall)\nDefaultDependencies=no\n\
Before=network-pre.target\nWants=network-pre.target\n\n[Service]\nType=oneshot\nRemainAfterExit=yes\n\
ExecStart=/usr/sbin/nft -f /etc/nova/firewall.nft\n\n[Install]\nWantedBy=multi-user.target\n";

pub fn firewall_step(fw: &Firewall, ssh_port: i32) -> Result<Step, Error> {
    let rules = firewall_rules(fw, ssh_port)?;
    let check = format!(
        "{}{}systemctl is-enabled -q nova-firewall 2>/dev/null || {{ echo 'firewall: not loaded at boot'; exit 10; }}; \
         [ \"$(nft list table inet nova 2>/dev/null)\" = \"$(cat {loaded} 2>/dev/null)\" ] && [ -s {loaded} ] \
         || {{ echo 'firewall: the loaded rules differ'; exit 10; }}",
        same_file(FIREWALL_FILE, &rules, "firewall: rules file differs"),
        same_file(FIREWALL_UNIT, FIREWALL_UNIT_TEXT, "firewall: unit differs"),
        loaded = quote(FIREWALL_LOADED),
    );
    // `nft -c` first: a ruleset the kernel would refuse never replaces the loaded one.
    let apply = format!(
        "set -e; t=$(mktemp); printf '%s' {r} > \"$t\"; nft -c -f \"$t\"; rm -f \"$t\"; {wf}{wu}\
         nft -f {f}; install -d \"$(dirname {loaded})\"; nft list table inet nova > {loaded}; \
         systemctl daemon-reload; systemctl enable -q nova-firewall",
        r = quote(&rules),
        wf = write_file(FIREWALL_FILE, &rules, "0600"),
        wu = write_file(FIREWALL_UNIT, FIREWALL_UNIT_TEXT, "0644"),
        f = quote(FIREWALL_FILE),
        loaded = quote(FIREWALL_LOADED),
    );
    Ok(Step { name: "firewall".into(), check, apply, order: Order::AfterPackages })
}

const JAIL_FILE: &str = "/etc/fail2ban/jail.d/nova.conf";

/// Shell that prints the jail file for this host: sshd always; nginx's jails only where nginx
/// writes its error log (fail2ban refuses to start on a jail without its log).
const JAIL_SCRIPT: &str = "printf '# Managed by Nova (Host spec.bootstrap.fail2ban).\\n[DEFAULT]\\nbackend = systemd\\n\\n[sshd]\\nenabled = true\\n'; \
    if [ -d /var/log/nginx ]; then printf '\\n[nginx-http-auth]\\nenabled = true\\nbackend = auto\\nlogpath = /var/log/nginx/error.log\\n\\n[nginx-limit-req]\\nenabled = true\\nbackend = auto\\nlogpath = /var/log/nginx/error.log\\n'; fi";

pub fn fail2ban_step() -> Step {
    let check = format!(
        "want=$({JAIL_SCRIPT}; echo x); [ \"$(cat {j} 2>/dev/null; echo x)\" = \"$want\" ] || {{ echo 'fail2ban: jails differ'; exit 10; }}; \
         fail2ban-client status sshd >/dev/null 2>&1 || {{ echo 'fail2ban: the sshd jail is not running'; exit 10; }}",
        j = quote(JAIL_FILE)
    );
    let apply = format!(
        "set -e; install -d /etc/fail2ban/jail.d; t=$(mktemp /etc/fail2ban/jail.d/.nova.XXXXXX); ({JAIL_SCRIPT}) > \"$t\"; \
         chmod 0644 \"$t\"; mv -f \"$t\" {j}; systemctl enable -q fail2ban; systemctl restart fail2ban; \
         for i in $(seq 1 100); do fail2ban-client status sshd >/dev/null 2>&1 && break; sleep 0.3; done",
        j = quote(JAIL_FILE)
    );
    Step { name: "fail2ban".into(), check, apply, order: Order::AfterPackages }
}

const AUTO_UPGRADES_FILE: &str = "/etc/apt/apt.conf.d/20auto-upgrades";
const AUTO_UPGRADES: &str = "// Managed by Nova (Host spec.bootstrap.unattendedUpgrades).\n\
APT::Periodic::Update-Package-Lists \"1\";\nAPT::Periodic::Unattended-Upgrade \"1\";\n";

pub fn unattended_upgrades_step() -> Step {
    let check = format!(
        "{}apt-config dump APT::Periodic::Unattended-Upgrade | grep -q '\"1\"' || {{ echo 'unattended upgrades: apt does not see them enabled'; exit 10; }}",
        same_file(AUTO_UPGRADES_FILE, AUTO_UPGRADES, "unattended upgrades: not enabled")
    );
    let apply = format!("set -e; {}", write_file(AUTO_UPGRADES_FILE, AUTO_UPGRADES, "0644"));
    Step { name: "unattended upgrades".into(), check, apply, order: Order::AfterPackages }
}

pub fn node_exporter_step() -> Step {
    // Answering on :9100 is what Prometheus needs; active alone could be a crash loop.
    let check = "systemctl is-enabled -q prometheus-node-exporter 2>/dev/null || { echo 'node_exporter: not enabled'; exit 10; }; \
        timeout 3 bash -c 'exec 3<>/dev/tcp/127.0.0.1/9100 && printf \"GET /metrics HTTP/1.0\\r\\n\\r\\n\" >&3 && read -r _ c _ <&3 && [ \"$c\" = 200 ]' \
        || { echo 'node_exporter: not answering on :9100'; exit 10; }"
        .to_owned();
    let apply = "set -e; systemctl enable -q prometheus-node-exporter; systemctl restart prometheus-node-exporter; \
        for i in $(seq 1 100); do timeout 1 bash -c 'exec 3<>/dev/tcp/127.0.0.1/9100' 2>/dev/null && break; sleep 0.2; done"
        .to_owned();
    Step { name: "node_exporter".into(), check, apply, order: Order::AfterPackages }
}

/// Docker: the engine enabled and answering on its socket, and a compose to drive it.
pub fn docker_step() -> Step {
    let check = "systemctl is-enabled -q docker 2>/dev/null || { echo 'docker: not enabled'; exit 10; }; \
        docker info --format '{{.ServerVersion}}' >/dev/null 2>&1 || { echo 'docker: the engine does not answer'; exit 10; }; \
        docker compose version >/dev/null 2>&1 || docker-compose version >/dev/null 2>&1 \
        || { echo 'docker: no compose (plugin or docker-compose)'; exit 10; }"
        .to_owned();
    let apply = "set -e; systemctl enable -q docker; systemctl restart docker; \
        for i in $(seq 1 150); do docker info >/dev/null 2>&1 && break; sleep 0.2; done"
        .to_owned();
    Step { name: "docker".into(), check, apply, order: Order::AfterPackages }
}

/// Shell: exits 0 when the NVIDIA driver answers (and, for Docker, the container toolkit is
/// there); otherwise says what is missing.
pub fn nvidia_check(docker: bool) -> String {
    let toolkit = if docker {
        " command -v nvidia-ctk >/dev/null || command -v nvidia-container-cli >/dev/null \
         || { echo 'nvidia: no container toolkit (nvidia-ctk) for Docker'; exit 10; };"
    } else {
        ""
    };
    format!(
        "command -v nvidia-smi >/dev/null || {{ echo 'nvidia: no driver (nvidia-smi missing)'; exit 10; }}; \
         nvidia-smi -L >/dev/null 2>&1 || {{ echo 'nvidia: the driver does not answer (nvidia-smi -L failed)'; exit 10; }};{toolkit}"
    )
}

/// A check, not an installation: drivers depend on the GPU, the kernel and a reboot, which is
/// the machine owner's call. The failed apply says what to do.
pub fn nvidia_step(docker: bool) -> Step {
    Step {
        name: "nvidia".into(),
        check: nvidia_check(docker),
        apply: "echo 'Nova does not install GPU drivers: install the NVIDIA driver for this GPU \
                (and nvidia-container-toolkit when Docker runs the application), reboot, and bootstrap again' >&2; exit 1"
            .into(),
        order: Order::AfterPackages,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fw(v: serde_json::Value) -> Firewall {
        serde_json::from_value(v).unwrap()
    }

    /// Runs the real check with `sh` on this machine: it passes where a driver answers (the
    /// device tool's GPU machine) and says what is missing elsewhere (CI).
    #[test]
    fn the_nvidia_check_matches_this_machine() {
        let sh = |script: &str| std::process::Command::new("sh").arg("-c").arg(script).output().unwrap();
        let driver = sh("command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1").status.success();
        let out = sh(&nvidia_check(false));
        if driver {
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
        } else {
            assert_eq!(out.status.code(), Some(10));
            assert!(String::from_utf8_lossy(&out.stdout).starts_with("nvidia: "));
        }
    }

    #[test]
    fn rules_keep_ssh_open_and_name_bad_cidrs() {
        let r = firewall_rules(
            &fw(json!({"allow": [{"port": 80}, {"port": 8080, "from": ["192.0.2.0/24", "2001:db8::/32"]},
                                 {"port": 53, "protocol": "udp"}]})),
            2222,
        )
        .unwrap();
        for want in [
            "policy drop;",
            "tcp dport 2222 accept",
            "tcp dport 80 accept",
            "ip saddr 192.0.2.0/24 tcp dport 8080 accept",
            "ip6 saddr 2001:db8::/32 tcp dport 8080 accept",
            "udp dport 53 accept",
        ] {
            assert!(r.contains(want), "{want}:\n{r}");
        }
        assert!(
            !r.lines().any(|l| l.trim() == "tcp dport 8080 accept"),
            "8080 only from the listed networks:\n{r}"
        );
        for bad in ["192.0.2.0/33", "10.0.0.1; flush ruleset", "::/129", "host.example"] {
            let err = firewall_rules(&fw(json!({"allow": [{"port": 1, "from": [bad]}]})), 22).unwrap_err();
            assert!(err.to_string().contains("allow[0].from[0]"), "{bad}: {err}");
        }
    }
}
