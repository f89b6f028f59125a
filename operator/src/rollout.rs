//! `nova rollout status|promote|abort|history|undo`: the user's side of a BlueGreenDeployment.
//! Requests go through annotations the controller reads (as `kubectl rollout restart` does),
//! so a GitOps tool that owns the spec never sees them as drift.

use std::fmt::Write as _;

use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use crate::api::bluegreen::{BlueGreenDeployment, Phase};
use crate::bluegreen::{ABORT_ANNOTATION, PROMOTE_ANNOTATION, revisions};
use crate::conditions;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("{0}")]
    Refused(String),
}

/// Field manager of the CLI's patches, so they are told apart from the operator's.
const MANAGER: &str = "nova-cli";

async fn get(api: &Api<BlueGreenDeployment>, name: &str) -> Result<BlueGreenDeployment, Error> {
    api.get_opt(name).await?.ok_or_else(|| {
        Error::Refused(format!(
            "BlueGreenDeployment {name:?} not found in namespace {:?}",
            api_namespace(api)
        ))
    })
}

fn api_namespace(api: &Api<BlueGreenDeployment>) -> String {
    api.resource_url().split('/').skip_while(|s| *s != "namespaces").nth(1).unwrap_or("").to_owned()
}

/// A few lines a person reads: phase, colours, revisions, the gate, conditions.
pub fn describe(bg: &BlueGreenDeployment) -> String {
    let st = bg.status.clone().unwrap_or_default();
    let mut out = String::new();
    let phase = st.phase.map_or("Unknown", Phase::as_str);
    let _ = writeln!(out, "Name:     {}", bg.name_any());
    let _ = writeln!(out, "Phase:    {phase}");
    if let (Some(c), Some(r)) = (st.active_color, &st.active_revision) {
        let _ = writeln!(out, "Active:   {c} (revision {r})");
    }
    if let (Some(c), Some(r)) = (st.preview_color, &st.preview_revision) {
        let _ = writeln!(out, "Preview:  {c} (revision {r})");
    }
    if let Some(g) = &st.gate {
        let state = if g.failed {
            "failed"
        } else if g.passed_at.is_some() {
            "passed"
        } else {
            "checking"
        };
        let _ = writeln!(
            out,
            "Gate:     {state}: {} ok / {} failed checks, {} analysis passes; {}",
            g.successes, g.failures, g.analysis_passes, g.message
        );
    }
    if let (Some(prev), Some(at)) = (&st.previous_revision, &st.scale_down_at) {
        let _ = writeln!(out, "Previous: revision {prev}, kept until {}", at.0);
    }
    if let Some(a) = &st.aborted_revision {
        let _ = writeln!(out, "Aborted:  revision {a}");
    }
    for c in &st.conditions {
        let _ = writeln!(out, "{:<9} {} {}: {}", format!("{}:", c.type_), c.status, c.reason, c.message);
    }
    out
}

/// True once the rollout needs nothing more from the controller or waits on a person.
pub fn settled(bg: &BlueGreenDeployment) -> bool {
    let st = bg.status.clone().unwrap_or_default();
    let fresh = st.observed_generation == bg.metadata.generation;
    // A promotion was asked for and not acted on yet: the pause is about to end.
    let promoting = st.preview_revision.is_some()
        && bg.annotations().get(PROMOTE_ANNOTATION) == st.preview_revision.as_ref();
    if promoting {
        return false;
    }
    fresh
        && matches!(st.phase, Some(Phase::Healthy | Phase::Degraded | Phase::Aborted | Phase::Paused))
        && (st.phase != Some(Phase::Healthy) || conditions::is_true(&st.conditions, "Ready") == Some(true))
}

pub async fn status(client: &Client, ns: &str, name: &str) -> Result<String, Error> {
    let api: Api<BlueGreenDeployment> = Api::namespaced(client.clone(), ns);
    Ok(describe(&get(&api, name).await?))
}

/// Prints the status each time it changes until the rollout settles; returns the last one.
pub async fn watch(
    client: &Client,
    ns: &str,
    name: &str,
    mut print: impl FnMut(&str),
) -> Result<BlueGreenDeployment, Error> {
    use futures::StreamExt;
    use kube::runtime::{WatchStreamExt, watcher};
    let api: Api<BlueGreenDeployment> = Api::namespaced(client.clone(), ns);
    get(&api, name).await?;
    let cfg = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut stream = std::pin::pin!(watcher(api, cfg).applied_objects());
    let mut last = String::new();
    while let Some(bg) = stream.next().await {
        let bg = bg.map_err(|e| Error::Refused(format!("watch failed: {e}")))?;
        let text = describe(&bg);
        if text != last {
            print(&format!("[{}]\n{text}", Timestamp::now()));
            last = text;
        }
        if settled(&bg) {
            return Ok(bg);
        }
    }
    Err(Error::Refused("the watch ended".into()))
}

async fn annotate(api: &Api<BlueGreenDeployment>, name: &str, key: &str, value: &str) -> Result<(), Error> {
    let patch = json!({"metadata": {"annotations": {key: value}}});
    api.patch(
        name,
        &PatchParams { field_manager: Some(MANAGER.into()), ..Default::default() },
        &Patch::Merge(&patch),
    )
    .await?;
    Ok(())
}

/// Promotes the preview now (it must have passed its gate).
pub async fn promote(client: &Client, ns: &str, name: &str) -> Result<String, Error> {
    let api: Api<BlueGreenDeployment> = Api::namespaced(client.clone(), ns);
    let bg = get(&api, name).await?;
    let st = bg.status.unwrap_or_default();
    let Some(rev) = st.preview_revision else {
        return Err(Error::Refused(format!(
            "{name} has no preview to promote (phase {})",
            st.phase.map_or("Unknown", Phase::as_str)
        )));
    };
    if st.gate.as_ref().is_some_and(|g| g.failed) {
        return Err(Error::Refused(format!(
            "preview revision {rev} failed its health gate; release a fixed template or abort"
        )));
    }
    annotate(&api, name, PROMOTE_ANNOTATION, &rev).await?;
    Ok(format!("promotion of revision {rev} requested"))
}

/// Sends traffic back to the stable colour: stops a preview, or flips back inside the
/// scale-down delay after a promotion.
pub async fn abort(client: &Client, ns: &str, name: &str) -> Result<String, Error> {
    let api: Api<BlueGreenDeployment> = Api::namespaced(client.clone(), ns);
    let bg = get(&api, name).await?;
    let st = bg.status.unwrap_or_default();
    let in_window =
        st.scale_down_at.as_ref().is_some_and(|t| t.0 > Timestamp::now()) && st.previous_revision.is_some();
    let rev = match (&st.preview_revision, in_window) {
        (Some(r), _) => r.clone(),
        (None, true) => st.active_revision.clone().unwrap_or_default(),
        (None, false) => {
            return Err(Error::Refused(format!(
                "{name} has nothing to abort: no preview, and the previous colour is already scaled down; use `nova rollout undo`"
            )));
        }
    };
    annotate(&api, name, ABORT_ANNOTATION, &rev).await?;
    Ok(format!("abort of revision {rev} requested"))
}

/// Revisions stored for undo, oldest first, the active one marked.
pub async fn history(client: &Client, ns: &str, name: &str) -> Result<String, Error> {
    let api: Api<BlueGreenDeployment> = Api::namespaced(client.clone(), ns);
    let bg = get(&api, name).await?;
    let st = bg.status.unwrap_or_default();
    let mut out = String::from("REVISION  HASH        IMAGE                                     ACTIVATED\n");
    for r in revisions::list(client, ns, name).await? {
        let hash = r.labels().get(crate::bluegreen::desired::REVISION_LABEL).cloned().unwrap_or_default();
        let image = revisions::template(&r)
            .and_then(|t| t.spec)
            .and_then(|s| s.containers.first().and_then(|c| c.image.clone()))
            .unwrap_or_default();
        let activated = st
            .history
            .iter()
            .find(|h| h.revision == hash)
            .map_or("-".to_owned(), |h| h.activated_at.0.to_string());
        let mark = if st.active_revision.as_deref() == Some(hash.as_str()) { " (active)" } else { "" };
        let _ = writeln!(out, "{:<9} {hash:<11} {image:<41} {activated}{mark}", r.revision);
    }
    Ok(out)
}

/// Puts an older template back: the one before the active revision, or `to` (a revision
/// number from `history` or a hash). Inside the scale-down delay this is an instant switch.
pub async fn undo(client: &Client, ns: &str, name: &str, to: Option<&str>) -> Result<String, Error> {
    let api: Api<BlueGreenDeployment> = Api::namespaced(client.clone(), ns);
    let bg = get(&api, name).await?;
    if let Some(owner) = bg.owner_references().iter().find(|o| o.controller == Some(true)) {
        return Err(Error::Refused(format!(
            "{name} is managed by {} {}: change its spec (the image, say) instead, or the owner would undo the undo",
            owner.kind, owner.name
        )));
    }
    if bg.spec.template.is_none() {
        return Err(Error::Refused(format!(
            "{name} takes its template from spec.platformRef; change that Platform instead"
        )));
    }
    let st = bg.status.unwrap_or_default();
    let all = revisions::list(client, ns, name).await?;
    let hash_of = |r: &k8s_openapi::api::apps::v1::ControllerRevision| {
        r.labels().get(crate::bluegreen::desired::REVISION_LABEL).cloned().unwrap_or_default()
    };
    let target = match to {
        Some(t) => all.iter().find(|r| r.revision.to_string() == t || hash_of(r) == t),
        None => {
            let prev = st.history.iter().find(|h| Some(&h.revision) != st.active_revision.as_ref());
            prev.and_then(|h| all.iter().find(|r| hash_of(r) == h.revision))
        }
    };
    let Some(target) = target else {
        return Err(Error::Refused(match to {
            Some(t) => {
                format!("revision {t} is not in the history of {name}; see `nova rollout history {name}`")
            }
            None => format!("{name} has no earlier revision to go back to"),
        }));
    };
    let template = revisions::template(target)
        .ok_or_else(|| Error::Refused(format!("revision {} holds no readable template", target.revision)))?;
    let patch: json_patch::Patch = serde_json::from_value(json!([
        {"op": "replace", "path": "/spec/template", "value": template}
    ]))
    .map_err(|e| Error::Refused(e.to_string()))?;
    api.patch(
        name,
        &PatchParams { field_manager: Some(MANAGER.into()), ..Default::default() },
        &Patch::<()>::Json(patch),
    )
    .await?;
    Ok(format!("rolling back to revision {} ({})", target.revision, hash_of(target)))
}
