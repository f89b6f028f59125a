//! Every built-in rule pack is checked by the real `promtool check rules` and unit-tested by
//! `promtool test rules` (Debian's prometheus package): each alert of a pack has a case where it
//! fires, with its labels and rendered annotations, and one where it does not.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use nova::alerts::packs;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src/alerts/packs")
}

fn promtool(args: &[&str], file: &Path) -> Result<String> {
    let out = Command::new("promtool")
        .args(args)
        .arg(file)
        .current_dir(file.parent().unwrap())
        .output()
        .context("running promtool (apt-get install prometheus)")?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if !out.status.success() {
        bail!("promtool {args:?} {}: {text}", file.display());
    }
    Ok(text)
}

#[test]
fn every_pack_passes_promtool_and_each_alert_is_tested_firing_and_silent() -> Result<()> {
    for p in packs::ALL {
        let name = packs::name(p);
        let file = dir().join(format!("{name}.yaml"));
        promtool(&["check", "rules"], &file)?;
        let test = dir().join(format!("tests/{name}.test.yaml"));
        promtool(&["test", "rules"], &test)?;
        let doc: serde_yaml::Value = serde_yaml::from_str(&std::fs::read_to_string(&test)?)?;
        let (mut firing, mut silent) = (BTreeSet::new(), BTreeSet::new());
        for t in doc["tests"].as_sequence().into_iter().flatten() {
            for case in t["alert_rule_test"].as_sequence().into_iter().flatten() {
                let alert = case["alertname"].as_str().unwrap_or_default().to_owned();
                match case["exp_alerts"].as_sequence() {
                    Some(a) if !a.is_empty() => firing.insert(alert),
                    _ => silent.insert(alert),
                };
            }
        }
        for g in packs::groups(p) {
            for r in g.rules {
                assert!(firing.contains(&r.alert), "{name}: no case where {} fires", r.alert);
                assert!(silent.contains(&r.alert), "{name}: no case where {} stays silent", r.alert);
            }
        }
    }
    Ok(())
}

#[test]
fn promtool_refuses_a_pack_rule_broken_on_purpose() -> Result<()> {
    // The check above can fail: a template error in an annotation is caught by promtool.
    let dir = tempfile::tempdir()?;
    let broken =
        packs::source(nova::api::alert::Pack::Backups).replace("{{ $labels.backup }}", "{{ $labels.backup ");
    let file = dir.path().join("broken.yaml");
    std::fs::write(&file, broken)?;
    let err = promtool(&["check", "rules"], &file).unwrap_err().to_string();
    assert!(err.contains("template"), "{err}");
    Ok(())
}

fn nova(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_nova")).args(args).output().expect("nova runs")
}

#[test]
fn nova_alerts_check_names_the_field_and_render_writes_what_promtool_accepts() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "apiVersion: nova.infra.dev/v1alpha1\nkind: AlertRule\nmetadata: {name: a, namespace: x}\n\
         spec:\n  groups:\n    - name: g\n      rules:\n        - {alert: Fine, expr: up == 0}\n        \
         - {alert: Broken, expr: 'rate(x[5m]'}\n  routing:\n    receivers: [{name: team, webhook: {urlSecretRef: {name: s, key: u}}}]\n    \
         routes: [{match: {severity: critical}, receiver: pager}]\n",
    )?;
    let out = nova(&["alerts", "check", "-f", bad.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("spec.groups[0].rules[1].expr: not valid PromQL"), "{err}");
    assert!(err.contains("spec.routing.routes[0].receiver: no receiver is called \"pager\""), "{err}");
    // Schema problems come first, as admission reports them.
    let schema = dir.path().join("schema.yaml");
    std::fs::write(
        &schema,
        "apiVersion: nova.infra.dev/v1alpha1\nkind: AlertRule\nmetadata: {name: a}\nspec: {packs: [nodes]}\n",
    )?;
    let out = nova(&["alerts", "check", "-f", schema.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("spec.packs[0]"), "{out:?}");

    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/alertrule.yaml");
    let out = nova(&["alerts", "check", "-f", example.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    let out = nova(&["alerts", "render", "-f", example.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    let file = dir.path().join("rendered.yaml");
    std::fs::write(&file, &out.stdout)?;
    let checked = promtool(&["check", "rules"], &file)?;
    assert!(checked.contains("SUCCESS: 20 rules found"), "{checked}");
    Ok(())
}
