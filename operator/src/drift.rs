//! Is an object already as Nova wants it? A field-by-field check of the desired object against
//! the live one, so that reconciles with nothing to change write nothing.

use serde::Serialize;
use serde_json::Value;

/// True when every field set in `desired` has the same value in `actual`. Fields only `actual`
/// has (defaults, other managers' fields, status) do not matter: server-side apply would leave
/// them alone too.
pub fn matches(desired: &impl Serialize, actual: &impl Serialize) -> bool {
    match (serde_json::to_value(desired), serde_json::to_value(actual)) {
        (Ok(d), Ok(a)) => subset(&d, &a),
        _ => false,
    }
}

fn subset(desired: &Value, actual: &Value) -> bool {
    match (desired, actual) {
        (Value::Object(d), Value::Object(a)) => {
            d.iter().all(|(k, dv)| dv.is_null() || a.get(k).is_some_and(|av| subset(dv, av)))
        }
        // Lists are owned whole (containers, ports, rules): same length, item by item.
        (Value::Array(d), Value::Array(a)) => {
            d.len() == a.len() && d.iter().zip(a).all(|(dv, av)| subset(dv, av))
        }
        (d, a) => d == a,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn extra_fields_in_the_live_object_are_fine() {
        let desired =
            json!({"spec": {"replicas": 2, "template": {"containers": [{"name": "app", "image": "a:1"}]}}});
        let live = json!({"spec": {"replicas": 2, "paused": false,
            "template": {"containers": [{"name": "app", "image": "a:1", "imagePullPolicy": "IfNotPresent"}]}},
            "status": {"readyReplicas": 2}});
        assert!(matches(&desired, &live));
    }

    #[test]
    fn a_changed_or_missing_field_is_drift() {
        let desired = json!({"spec": {"replicas": 2, "labels": {"a": "b"}}});
        assert!(!matches(&desired, &json!({"spec": {"replicas": 5, "labels": {"a": "b"}}})));
        assert!(!matches(&desired, &json!({"spec": {"replicas": 2, "labels": {}}})));
        assert!(!matches(&desired, &json!({"spec": {"replicas": 2}})));
    }

    #[test]
    fn lists_must_have_the_same_items() {
        let desired = json!({"ports": [{"port": 80}]});
        assert!(!matches(&desired, &json!({"ports": [{"port": 80}, {"port": 443}]})));
        assert!(!matches(&desired, &json!({"ports": [{"port": 8080}]})));
        assert!(matches(&desired, &json!({"ports": [{"port": 80, "protocol": "TCP"}]})));
    }
}
