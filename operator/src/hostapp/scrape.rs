//! A Platform's metrics on a host with the monitoring stack: a `file_sd` target file that
//! points the host's Prometheus at the colour serving traffic. Prometheus watches the
//! directory, so writing the file is the whole change (no reload). Hosts without the stack
//! (no targets directory) are left alone.

use std::time::Duration;

use serde_json::json;

use super::desired::App;
use super::engine::{Error, HostConn, step_err};
use crate::api::bluegreen::Color;
use crate::host::monitoring::TARGETS_DIR;
use crate::ssh::quote;

/// The target file of application `id`; the `platform` scrape job reads `platform-*.json`.
pub fn file(id: &str) -> String {
    format!("{TARGETS_DIR}/platform-{id}.json")
}

/// The target list for the serving colour. `instance` is the application, not the colour's
/// port: a switch must not start new series (an alert's `for` would begin again).
pub fn targets(app: &App, serving: Color) -> Option<String> {
    let m = app.metrics.as_ref()?;
    let list = json!([{
        "targets": [format!("127.0.0.1:{}", app.port(serving))],
        "labels": {
            "__metrics_path__": m.path,
            "instance": format!("{}/{}", m.namespace, m.name),
            "namespace": m.namespace,
            "platform": m.name,
        },
    }]);
    Some(format!("{list}\n"))
}

/// Shell: the file as `targets` says (written beside and renamed, only when it differs), or
/// removed when the application has no metrics; nothing where the directory does not exist.
pub fn script(app: &App, serving: Color) -> String {
    let f = quote(&file(&app.id));
    let body = match targets(app, serving) {
        Some(t) => {
            let t = quote(&t);
            format!("printf %s {t} | cmp -s - {f} || {{ printf %s {t} > {f}.new && mv -f {f}.new {f}; }}")
        }
        None => format!("rm -f {f}"),
    };
    format!("if [ -d {} ]; then {body}; fi", quote(TARGETS_DIR))
}

/// Points the host's Prometheus at colour `serving` (see [`script`]).
pub async fn ensure(h: &HostConn, app: &App, serving: Color) -> Result<(), Error> {
    h.conn
        .run(&script(app, serving), Duration::from_secs(30))
        .await
        .map_err(|e| step_err(h, "writing the scrape target", e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hostapp::desired::Metrics;

    fn platform(metrics: serde_json::Value) -> crate::api::Platform {
        serde_json::from_value(json!({
            "apiVersion": "nova.infra.dev/v1alpha1", "kind": "Platform",
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {"image": "web:1", "command": ["/usr/bin/web"], "domains": ["web.test"],
                     "metrics": metrics, "target": {"hosts": {"names": ["a"]}}},
        }))
        .unwrap()
    }

    fn app(metrics: bool) -> App {
        let m = if metrics { json!({}) } else { serde_json::Value::Null };
        crate::hostapp::desired::app(&platform(m)).unwrap()
    }

    #[test]
    fn the_path_defaults_and_a_bad_one_is_named() {
        let a = app(true);
        let want = Metrics { path: "/metrics".into(), namespace: "shop".into(), name: "web".into() };
        assert_eq!(a.metrics, Some(want));
        let err = crate::hostapp::desired::app(&platform(json!({"path": "/m'; rm -rf /"}))).unwrap_err();
        assert!(err.contains("spec.metrics.path"), "{err}");
    }

    #[test]
    fn the_target_follows_the_serving_colour_with_stable_labels() {
        let a = app(true);
        let blue: serde_json::Value = serde_json::from_str(&targets(&a, Color::Blue).unwrap()).unwrap();
        let green: serde_json::Value = serde_json::from_str(&targets(&a, Color::Green).unwrap()).unwrap();
        assert_eq!(blue[0]["targets"], json!([format!("127.0.0.1:{}", a.port(Color::Blue))]));
        assert_eq!(green[0]["targets"], json!([format!("127.0.0.1:{}", a.port(Color::Green))]));
        assert_eq!(blue[0]["labels"], green[0]["labels"]);
        assert_eq!(blue[0]["labels"]["instance"], "shop/web");
        assert_eq!(file(&a.id), "/etc/prometheus/nova/targets/platform-shop-web.json");
    }

    #[test]
    fn without_metrics_the_file_is_removed_and_hosts_without_the_stack_untouched() {
        let s = script(&app(false), Color::Blue);
        assert_eq!(
            s,
            "if [ -d /etc/prometheus/nova/targets ]; then rm -f /etc/prometheus/nova/targets/platform-shop-web.json; fi"
        );
        assert!(script(&app(true), Color::Green).contains("mv -f"));
    }
}
