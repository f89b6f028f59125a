//! Where alerts go. Each AlertRule's routing is scoped to its own alerts (matched by
//! [`OWNER_LABEL`]): a route and receivers of its own, and inhibitions that only mute its own
//! alerts, so objects of different teams merge into one valid Alertmanager configuration
//! ([`merged`], for an Alertmanager Nova configures: a Secret, or a host's file) or become one
//! `AlertmanagerConfig` each ([`alertmanager_config`], when prometheus-operator is installed).
//! URLs and passwords are read from Secrets by the caller and only ever written into the
//! merged configuration, which is itself a Secret or a root-only file.

use std::collections::{BTreeMap, HashMap};

use serde_json::{Map, Value, json};

use super::OWNER_LABEL;
use crate::api::alert::{Receiver, Routing};

/// Secret values by (Secret name, key), of one namespace.
pub type Secrets = HashMap<(String, String), String>;

/// The receiver that gets what no object routes: nothing.
pub const NOBODY: &str = "nova-nobody";

/// The (Secret name, key) pairs `routing` reads.
pub fn secret_refs(routing: &Routing) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for r in &routing.receivers {
        if let Some(s) = &r.slack {
            out.push((s.url_secret_ref.name.clone(), s.url_secret_ref.key.clone()));
        }
        if let Some(w) = &r.webhook {
            out.push((w.url_secret_ref.name.clone(), w.url_secret_ref.key.clone()));
        }
        if let Some(a) = r.email.as_ref().and_then(|e| e.auth_secret_ref.as_ref()) {
            out.push((a.name.clone(), "username".into()));
            out.push((a.name.clone(), "password".into()));
        }
    }
    out
}

/// Problems the schema cannot see: routes naming receivers that do not exist, names twice.
pub fn problems(routing: &Routing) -> Vec<String> {
    let mut out = Vec::new();
    let mut names = std::collections::BTreeSet::new();
    for (i, r) in routing.receivers.iter().enumerate() {
        if !names.insert(r.name.as_str()) {
            out.push(format!("spec.routing.receivers[{i}].name: {:?} is used twice", r.name));
        }
    }
    for (i, r) in routing.routes.iter().enumerate() {
        if !names.contains(r.receiver.as_str()) {
            out.push(format!(
                "spec.routing.routes[{i}].receiver: no receiver is called {:?}; the receivers are {}",
                r.receiver,
                routing.receivers.iter().map(|r| r.name.as_str()).collect::<Vec<_>>().join(", ")
            ));
        }
    }
    out
}

/// An Alertmanager matcher `name="value"`.
fn matcher(name: &str, value: &str) -> String {
    format!("{name}={}", Value::from(value))
}

fn matchers(owner: &str, m: &BTreeMap<String, String>) -> Vec<String> {
    std::iter::once(matcher(OWNER_LABEL, owner)).chain(m.iter().map(|(k, v)| matcher(k, v))).collect()
}

/// One Alertmanager configuration (its YAML as JSON) for every object's routing. `objects`:
/// (owner key, routing, the Secrets of its namespace). Fails naming the Secret key missing.
pub fn merged(objects: &[(String, Routing, Secrets)]) -> Result<Value, String> {
    let mut routes = Vec::new();
    let mut receivers = vec![json!({"name": NOBODY})];
    let mut inhibit = Vec::new();
    for (owner, routing, secrets) in objects {
        let full = |name: &str| format!("{owner}/{name}");
        for r in &routing.receivers {
            receivers.push(receiver(&full(&r.name), r, secrets)?);
        }
        let Some(first) = routing.receivers.first() else { continue };
        let mut children: Vec<Value> = routing
            .routes
            .iter()
            .map(|r| {
                json!({"matchers": r.match_.iter().map(|(k, v)| matcher(k, v)).collect::<Vec<_>>(),
                       "receiver": full(&r.receiver), "continue": r.continue_})
            })
            .collect();
        if !children.is_empty() {
            // After a `continue`, the default receiver too: a parent's own receiver is used
            // only when no child matched.
            children.push(json!({"receiver": full(&first.name)}));
        }
        let mut route = timing(routing);
        route.insert("matchers".into(), json!([matcher(OWNER_LABEL, owner)]));
        route.insert("receiver".into(), full(&first.name).into());
        if !children.is_empty() {
            route.insert("routes".into(), children.into());
        }
        routes.push(Value::Object(route));
        for i in &routing.inhibit_rules {
            let mut rule = json!({
                "source_matchers": matchers(owner, &i.source_match),
                "target_matchers": matchers(owner, &i.target_match),
            });
            if !i.equal.is_empty() {
                rule["equal"] = json!(i.equal);
            }
            inhibit.push(rule);
        }
    }
    let mut config = json!({"route": {"receiver": NOBODY, "group_by": ["alertname"], "routes": routes},
                            "receivers": receivers});
    if !inhibit.is_empty() {
        config["inhibit_rules"] = inhibit.into();
    }
    Ok(config)
}

fn timing(routing: &Routing) -> Map<String, Value> {
    let mut route = Map::new();
    let group_by =
        if routing.group_by.is_empty() { vec!["alertname".to_owned()] } else { routing.group_by.clone() };
    route.insert("group_by".into(), json!(group_by));
    for (k, v) in [
        ("group_wait", &routing.group_wait),
        ("group_interval", &routing.group_interval),
        ("repeat_interval", &routing.repeat_interval),
    ] {
        if let Some(v) = v {
            route.insert(k.into(), v.clone().into());
        }
    }
    route
}

fn secret<'a>(secrets: &'a Secrets, name: &str, key: &str) -> Result<&'a str, String> {
    secrets
        .get(&(name.to_owned(), key.to_owned()))
        .map(String::as_str)
        .ok_or_else(|| format!("Secret {name:?} has no key {key:?}"))
}

fn receiver(name: &str, r: &Receiver, secrets: &Secrets) -> Result<Value, String> {
    let mut out = json!({"name": name});
    if let Some(s) = &r.slack {
        let url = secret(secrets, &s.url_secret_ref.name, &s.url_secret_ref.key)?;
        let mut c = json!({"api_url": url, "send_resolved": true});
        if let Some(ch) = &s.channel {
            c["channel"] = ch.clone().into();
        }
        out["slack_configs"] = json!([c]);
    }
    if let Some(w) = &r.webhook {
        let url = secret(secrets, &w.url_secret_ref.name, &w.url_secret_ref.key)?;
        out["webhook_configs"] = json!([{"url": url, "send_resolved": true}]);
    }
    if let Some(e) = &r.email {
        let mut c = json!({"to": e.to, "from": e.from, "smarthost": e.smarthost, "send_resolved": true});
        match &e.auth_secret_ref {
            Some(a) => {
                c["auth_username"] = secret(secrets, &a.name, "username")?.into();
                c["auth_password"] = secret(secrets, &a.name, "password")?.into();
            }
            // Without credentials, a local relay: no STARTTLS demanded of it.
            None => c["require_tls"] = false.into(),
        }
        out["email_configs"] = json!([c]);
    }
    Ok(out)
}

/// The spec of the `AlertmanagerConfig` (monitoring.coreos.com/v1alpha1) of one object: Secret
/// references stay references (prometheus-operator reads them), but for the SMTP user name,
/// which that API takes as a plain string (`username`, read from the Secret by the caller).
pub fn alertmanager_config(owner: &str, routing: &Routing, username: Option<&str>) -> Value {
    let eq = |k: &str, v: &str| json!({"name": k, "value": v, "matchType": "="});
    let mut route = json!({
        "receiver": routing.receivers.first().map(|r| r.name.clone()).unwrap_or_default(),
        "groupBy": if routing.group_by.is_empty() { vec!["alertname".to_owned()] } else { routing.group_by.clone() },
        "matchers": [eq(OWNER_LABEL, owner)],
    });
    for (k, v) in [
        ("groupWait", &routing.group_wait),
        ("groupInterval", &routing.group_interval),
        ("repeatInterval", &routing.repeat_interval),
    ] {
        if let Some(v) = v {
            route[k] = v.clone().into();
        }
    }
    if !routing.routes.is_empty() {
        let mut children: Vec<Value> = routing
            .routes
            .iter()
            .map(|r| {
                json!({"matchers": r.match_.iter().map(|(k, v)| eq(k, v)).collect::<Vec<_>>(),
                       "receiver": r.receiver, "continue": r.continue_})
            })
            .collect();
        children.push(json!({"receiver": route["receiver"].clone()}));
        route["routes"] = children.into();
    }
    let receivers: Vec<Value> = routing.receivers.iter().map(|r| crd_receiver(r, username)).collect();
    let inhibit: Vec<Value> = routing
        .inhibit_rules
        .iter()
        .map(|i| {
            let m = |x: &BTreeMap<String, String>| {
                std::iter::once(eq(OWNER_LABEL, owner))
                    .chain(x.iter().map(|(k, v)| eq(k, v)))
                    .collect::<Vec<_>>()
            };
            json!({"sourceMatch": m(&i.source_match), "targetMatch": m(&i.target_match), "equal": i.equal})
        })
        .collect();
    json!({"route": route, "receivers": receivers, "inhibitRules": inhibit})
}

fn crd_receiver(r: &Receiver, username: Option<&str>) -> Value {
    let key = |s: &crate::api::common::SecretKeyRef| json!({"name": s.name, "key": s.key});
    let mut out = json!({"name": r.name});
    if let Some(s) = &r.slack {
        let mut c = json!({"apiURL": key(&s.url_secret_ref), "sendResolved": true});
        if let Some(ch) = &s.channel {
            c["channel"] = ch.clone().into();
        }
        out["slackConfigs"] = json!([c]);
    }
    if let Some(w) = &r.webhook {
        out["webhookConfigs"] = json!([{"urlSecret": key(&w.url_secret_ref), "sendResolved": true}]);
    }
    if let Some(e) = &r.email {
        let mut c = json!({"to": e.to, "from": e.from, "smarthost": e.smarthost, "sendResolved": true});
        match (&e.auth_secret_ref, username) {
            (Some(a), Some(u)) => {
                c["authUsername"] = u.into();
                c["authPassword"] = json!({"name": a.name, "key": "password"});
            }
            _ => c["requireTLS"] = false.into(),
        }
        out["emailConfigs"] = json!([c]);
    }
    out
}
