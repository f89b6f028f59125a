//! What admission checks, without an apiserver: an object read from a file is checked against its
//! CRD's OpenAPI schema (types, patterns, lengths, ranges, enums, required fields, and unknown
//! fields as `kubectl apply`'s strict field validation refuses them) and its CEL rules
//! (`x-kubernetes-validations`, evaluated by kube's `cel` feature), so that the CLI refuses what
//! `kubectl apply` would be refused, with the field named. Nova's own checks come after this.

use serde_json::{Map, Value};

use crate::api;

/// Checks `doc` (a whole object: apiVersion, kind, metadata, spec) as the apiserver would on
/// create; every problem is one line naming the field.
pub fn check(doc: &Value) -> Result<(), Vec<String>> {
    let kind = doc.get("kind").and_then(Value::as_str).unwrap_or_default();
    let compiled = compiled(kind)?;
    let (schema, validator) = (&compiled.0, &compiled.1);
    let mut problems = Vec::new();
    for e in validator.iter_errors(doc) {
        let at = field(e.instance_path().as_str());
        problems.push(format!("{at}: {e}"));
    }
    // CEL rules only on a structurally valid object, as the apiserver orders them.
    if problems.is_empty()
        && let Err(errs) = kube::core::cel::Validator::new().validate(schema, doc, None)
    {
        for e in errs.into_vec() {
            let at = if e.field_path.is_empty() { "(object)".to_owned() } else { e.field_path };
            problems.push(format!("{at}: {}", e.message));
        }
    }
    if problems.is_empty() { Ok(()) } else { Err(problems) }
}

/// [`check`] for a document read from YAML; the refusal is one message, a line per problem.
pub fn check_yaml(doc: &serde_yaml::Value) -> Result<(), String> {
    let json = serde_json::to_value(doc).map_err(|e| e.to_string())?;
    check(&json)
        .map_err(|problems| format!("refused as admission would refuse it:\n  {}", problems.join("\n  ")))
}

/// A kind's schema and its compiled validator, built once per process: a file of many objects
/// (or a Backup with its Host and Secrets) pays for each kind once.
type Compiled = std::sync::Arc<(Value, jsonschema::Validator)>;

fn compiled(kind: &str) -> Result<Compiled, Vec<String>> {
    static CACHE: std::sync::LazyLock<std::sync::Mutex<std::collections::HashMap<String, Compiled>>> =
        std::sync::LazyLock::new(Default::default);
    if let Some(c) = CACHE.lock().unwrap_or_else(|p| p.into_inner()).get(kind) {
        return Ok(c.clone());
    }
    let Some(schema) = schema_of(kind) else {
        return Err(vec![format!("kind {kind:?} is not one of Nova's")]);
    };
    let validator = jsonschema::options()
        .build(&with_object_meta(as_json_schema(&schema)))
        .map_err(|e| vec![format!("the {kind} schema does not compile: {e}")])?;
    let c = std::sync::Arc::new((schema, validator));
    CACHE.lock().unwrap_or_else(|p| p.into_inner()).insert(kind.to_owned(), c.clone());
    Ok(c)
}

/// The OpenAPI schema of Nova's kind `kind` (its served version).
fn schema_of(kind: &str) -> Option<Value> {
    let crd = api::crd_of(kind)?;
    let version = crd.spec.versions.into_iter().next()?;
    serde_json::to_value(version.schema?.open_api_v3_schema?).ok()
}

/// The root's apiVersion, kind and metadata, checked as the apiserver checks them (a CRD's
/// schema leaves them out): a name that is a DNS subdomain, a namespace that is a DNS label,
/// string labels and annotations.
fn with_object_meta(mut root: Value) -> Value {
    let meta = serde_json::json!({
        "apiVersion": {"type": "string", "const": "nova.infra.dev/v1alpha1"},
        "kind": {"type": "string"},
        "metadata": {"type": "object", "required": ["name"], "properties": {
            "name": {"type": "string", "maxLength": 253,
                     "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"},
            "namespace": {"type": "string", "maxLength": 63, "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            "annotations": {"type": "object", "additionalProperties": {"type": "string"}}}},
    });
    if let (Some(props), Some(extra)) =
        (root.get_mut("properties").and_then(Value::as_object_mut), meta.as_object())
    {
        props.extend(extra.clone());
    }
    if let Some(m) = root.as_object_mut() {
        let required = m.entry("required").or_insert_with(|| Value::Array(Vec::new()));
        if let Some(r) = required.as_array_mut() {
            r.extend([Value::from("apiVersion"), Value::from("kind"), Value::from("metadata")]);
        }
    }
    root
}

/// `/spec/bootstrap/packages/0` → `spec.bootstrap.packages[0]`.
fn field(pointer: &str) -> String {
    let mut out = String::new();
    for part in pointer.split('/').filter(|p| !p.is_empty()) {
        let part = part.replace("~1", "/").replace("~0", "~");
        if part.parse::<usize>().is_ok() {
            out.push_str(&format!("[{part}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(&part);
        }
    }
    if out.is_empty() { "(object)".into() } else { out }
}

/// The CRD's OpenAPI dialect as JSON Schema: `nullable` becomes a `null` type, and an object
/// with declared properties takes no others (unless it preserves unknown fields), as strict
/// field validation does.
fn as_json_schema(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut out: Map<String, Value> = m
                .iter()
                .map(|(k, v)| (k.clone(), if k == "enum" { v.clone() } else { as_json_schema(v) }))
                .collect();
            if m.get("nullable") == Some(&Value::Bool(true))
                && let Some(Value::String(t)) = m.get("type")
            {
                out.insert("type".into(), serde_json::json!([t, "null"]));
            }
            let preserve = m.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
            if m.contains_key("properties") && !m.contains_key("additionalProperties") && !preserve {
                out.insert("additionalProperties".into(), Value::Bool(false));
            }
            Value::Object(out)
        }
        Value::Array(a) => Value::Array(a.iter().map(as_json_schema).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn field_paths_read_like_kubectl() {
        assert_eq!(field("/spec/bootstrap/packages/0"), "spec.bootstrap.packages[0]");
        assert_eq!(field(""), "(object)");
    }

    #[test]
    fn a_valid_host_passes_and_a_bad_one_names_the_field() {
        let host = json!({"apiVersion": "nova.infra.dev/v1alpha1", "kind": "Host", "metadata": {"name": "web-1"},
            "spec": {"address": "192.0.2.1", "hostKey": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA",
                     "sshKeySecretRef": {"name": "k", "key": "k"}}});
        assert_eq!(check(&host), Ok(()));
        let mut bad = host.clone();
        bad["spec"]["bootstrap"] = json!({"packages": ["-oAPT::Update::Pre-Invoke::=id"]});
        let errs = check(&bad).unwrap_err();
        assert!(errs.iter().any(|e| e.starts_with("spec.bootstrap.packages[0]:")), "{errs:?}");
        let mut cel = host;
        cel["spec"].as_object_mut().unwrap().remove("hostKey");
        let errs = check(&cel).unwrap_err();
        assert!(errs.iter().any(|e| e.contains("hostKey is required with hostKeyPolicy Pinned")), "{errs:?}");
    }
}
