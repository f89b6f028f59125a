//! The monitoring stack on a Host (`spec.bootstrap.monitoring`): Prometheus, Alertmanager and
//! node_exporter from the distribution, configured by Nova. Both servers listen on the host's
//! loopback only; Nova reaches them through its SSH session (see `ssh::tunnel`). AlertRules put
//! their rule files in [`RULES_DIR`] and the Alertmanager configuration in [`ALERTMANAGER_FILE`].

use crate::host::bootstrap::{Order, Step};
use crate::host::services::{same_file, write_file};

pub const PACKAGES: [&str; 3] = ["prometheus", "prometheus-alertmanager", "prometheus-node-exporter"];
/// Where AlertRules' rule files go; Prometheus loads `*.yml` there.
pub const RULES_DIR: &str = "/etc/prometheus/nova/rules";
/// File-based service discovery: a JSON target list per Platform with `spec.metrics`.
pub const TARGETS_DIR: &str = "/etc/prometheus/nova/targets";
pub const PROMETHEUS_FILE: &str = "/etc/prometheus/prometheus.yml";
pub const ALERTMANAGER_FILE: &str = "/etc/prometheus/alertmanager.yml";
pub const PROMETHEUS_PORT: u16 = 9090;
pub const ALERTMANAGER_PORT: u16 = 9093;

/// The seed plan's settings: a 10 s scrape and evaluation interval, 15 days kept.
pub const PROMETHEUS_CONFIG: &str = "# Managed by Nova (Host spec.bootstrap.monitoring).
global:
  scrape_interval: 10s
  evaluation_interval: 10s
rule_files:
  - /etc/prometheus/nova/rules/*.yml
alerting:
  alertmanagers:
    - static_configs:
        - targets: ['127.0.0.1:9093']
scrape_configs:
  - job_name: prometheus
    static_configs:
      - targets: ['127.0.0.1:9090']
  - job_name: alertmanager
    static_configs:
      - targets: ['127.0.0.1:9093']
  - job_name: node
    static_configs:
      - targets: ['127.0.0.1:9100']
  - job_name: platform
    file_sd_configs:
      - files: ['/etc/prometheus/nova/targets/platform-*.json']
";

const PROMETHEUS_DEFAULTS: &str = "# Managed by Nova (Host spec.bootstrap.monitoring).
ARGS=\"--web.listen-address=127.0.0.1:9090 --web.enable-lifecycle --storage.tsdb.retention.time=15d\"
";

/// One Alertmanager, not a cluster: no gossip port opened.
const ALERTMANAGER_DEFAULTS: &str = "# Managed by Nova (Host spec.bootstrap.monitoring).
ARGS=\"--web.listen-address=127.0.0.1:9093 --cluster.listen-address=\"
";

/// Until an AlertRule routes alerts here: everything to a receiver that sends nothing.
pub const ALERTMANAGER_EMPTY: &str =
    "# Managed by Nova: written again from the AlertRules that target this Host.
route:
  receiver: nova-null
receivers:
  - name: nova-null
";

/// Shell: exits 0 once `port` on loopback answers `GET /-/ready` with 200, within `seconds`.
pub fn ready(port: u16, seconds: u32) -> String {
    format!(
        "for i in $(seq 1 {n}); do timeout 1 bash -c 'exec 3<>/dev/tcp/127.0.0.1/{port} && printf \"GET /-/ready HTTP/1.0\\r\\n\\r\\n\" >&3 && read -r _ c _ <&3 && [ \"$c\" = 200 ]' 2>/dev/null && exit 0; sleep 0.2; done; exit 1",
        n = seconds * 5
    )
}

/// The bootstrap step. The Alertmanager configuration is the AlertRules' once written: the
/// check only asks that it be Nova's, so a bootstrap never undoes their routing.
pub fn step() -> Step {
    let check = format!(
        "{}{}{}grep -qs 'Managed by Nova' {am} || {{ echo 'alertmanager: configuration not written by Nova'; exit 10; }}; \
         for u in prometheus prometheus-alertmanager; do systemctl is-enabled -q $u 2>/dev/null || {{ echo \"$u: not enabled\"; exit 10; }}; done; \
         ( {} ) || {{ echo 'prometheus: not ready on 127.0.0.1:9090'; exit 10; }}; \
         ( {} ) || {{ echo 'alertmanager: not ready on 127.0.0.1:9093'; exit 10; }}",
        same_file(PROMETHEUS_FILE, PROMETHEUS_CONFIG, "prometheus: configuration differs"),
        same_file("/etc/default/prometheus", PROMETHEUS_DEFAULTS, "prometheus: arguments differ"),
        same_file(
            "/etc/default/prometheus-alertmanager",
            ALERTMANAGER_DEFAULTS,
            "alertmanager: arguments differ"
        ),
        ready(PROMETHEUS_PORT, 1),
        ready(ALERTMANAGER_PORT, 1),
        am = ALERTMANAGER_FILE,
    );
    let apply = format!(
        "set -e; install -d {RULES_DIR} {TARGETS_DIR}; {}{}{}grep -qs 'Managed by Nova' {am} || {{ {} }}; \
         systemctl enable -q prometheus prometheus-alertmanager; \
         systemctl restart prometheus prometheus-alertmanager; \
         ( {} ) || {{ echo 'prometheus: not ready on 127.0.0.1:9090 after a minute' >&2; exit 1; }}; \
         ( {} ) || {{ echo 'alertmanager: not ready on 127.0.0.1:9093 after a minute' >&2; exit 1; }}",
        write_file(PROMETHEUS_FILE, PROMETHEUS_CONFIG, "0644"),
        write_file("/etc/default/prometheus", PROMETHEUS_DEFAULTS, "0644"),
        write_file("/etc/default/prometheus-alertmanager", ALERTMANAGER_DEFAULTS, "0644"),
        write_file(ALERTMANAGER_FILE, ALERTMANAGER_EMPTY, "0644"),
        ready(PROMETHEUS_PORT, 60),
        ready(ALERTMANAGER_PORT, 60),
        am = ALERTMANAGER_FILE,
    );
    Step { name: "monitoring".into(), check, apply, order: Order::AfterPackages }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The configuration Nova writes is one Debian's promtool accepts (where promtool is
    /// installed, as in CI).
    #[test]
    fn promtool_accepts_the_prometheus_configuration() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("prometheus.yml");
        std::fs::write(&path, PROMETHEUS_CONFIG).unwrap();
        let am = dir.path().join("alertmanager.yml");
        std::fs::write(&am, ALERTMANAGER_EMPTY).unwrap();
        let run = |cmd: &str, args: &[&std::path::Path]| std::process::Command::new(cmd).args(args).output();
        let out = run("promtool", &[std::path::Path::new("check"), std::path::Path::new("config"), &path])
            .expect("promtool (apt-get install prometheus)");
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let out = run("amtool", &[std::path::Path::new("check-config"), &am]).expect("amtool");
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
