//! `nova alerts check|render -f FILE`: AlertRules checked as admission and the controller check
//! them (schema, CEL, then every expression parsed and every name checked), and the Prometheus
//! rule file and Alertmanager routing Nova would write — for CI pipelines and for hand-run
//! Prometheus servers.

use std::path::PathBuf;

use super::{owner_key, routing, rules, validate};
use crate::api::AlertRule;

#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Check AlertRules: exit status 1 and one line per problem, naming the field.
    Check {
        /// YAML file with one or more AlertRules (`-` for standard input).
        #[arg(short, long)]
        file: PathBuf,
    },
    /// Print the Prometheus rule file of each AlertRule (valid rules only), as Nova applies it.
    Render {
        /// YAML file with one or more AlertRules (`-` for standard input).
        #[arg(short, long)]
        file: PathBuf,
    },
}

/// Every problem of the AlertRule `doc`: admission's first, then Nova's own.
pub fn problems(doc: &serde_yaml::Value) -> Result<AlertRule, Vec<String>> {
    let json = serde_json::to_value(doc).map_err(|e| vec![e.to_string()])?;
    if json.get("kind").and_then(|k| k.as_str()) != Some("AlertRule") {
        return Err(vec!["kind: not an AlertRule".into()]);
    }
    crate::admission::check(&json)?;
    let a: AlertRule = serde_json::from_value(json).map_err(|e| vec![e.to_string()])?;
    let mut p = validate::check(&a.spec).problems;
    p.extend(a.spec.routing.as_ref().map(routing::problems).unwrap_or_default());
    if p.is_empty() { Ok(a) } else { Err(p) }
}

/// Runs the command; Err holds what to print before exiting with status 1.
pub fn main(cmd: Command) -> Result<String, String> {
    match cmd {
        Command::Check { file } => {
            let mut failed = Vec::new();
            let mut lines = Vec::new();
            for (at, doc) in crate::documents::read(&file)? {
                match problems(&doc) {
                    Ok(a) => lines.push(format!(
                        "{at}: AlertRule {}: {} rules, valid",
                        kube::ResourceExt::name_any(&a),
                        validate::check(&a.spec).rules()
                    )),
                    Err(p) => failed.extend(p.into_iter().map(|p| format!("{at}: {p}"))),
                }
            }
            if failed.is_empty() { Ok(lines.join("\n")) } else { Err(failed.join("\n")) }
        }
        Command::Render { file } => {
            let mut out = Vec::new();
            for (at, doc) in crate::documents::read(&file)? {
                let json = serde_json::to_value(&doc).map_err(|e| format!("{at}: {e}"))?;
                let a: AlertRule = serde_json::from_value(json).map_err(|e| format!("{at}: {e}"))?;
                let owner = owner_key(
                    &kube::ResourceExt::namespace(&a).unwrap_or_else(|| "default".into()),
                    &kube::ResourceExt::name_any(&a),
                );
                out.push(format!("# {owner}\n{}", rules::yaml(&owner, &validate::check(&a.spec).groups)));
            }
            Ok(out.join("---\n"))
        }
    }
}
