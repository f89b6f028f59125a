//! Revision history as ControllerRevisions (as StatefulSets and DaemonSets keep theirs): one
//! per released template, so `nova rollout undo` can put an old template back.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::json;

use super::desired::{BLUEGREEN_LABEL, REVISION_LABEL};
use crate::api::bluegreen::BlueGreenDeployment;
use crate::context::Error;

pub fn name(bg: &BlueGreenDeployment, revision: &str) -> String {
    format!("{}-{revision}", bg.name_any())
}

/// Revisions of `bg`, oldest first.
pub async fn list(client: &Client, ns: &str, bg_name: &str) -> Result<Vec<ControllerRevision>, kube::Error> {
    let api: Api<ControllerRevision> = Api::namespaced(client.clone(), ns);
    let mut items =
        api.list(&ListParams::default().labels(&format!("{BLUEGREEN_LABEL}={bg_name}"))).await?.items;
    items.sort_by_key(|r| r.revision);
    Ok(items)
}

/// The template a revision stored.
pub fn template(r: &ControllerRevision) -> Option<PodTemplateSpec> {
    let data = r.data.as_ref()?;
    serde_json::from_value(data.0.get("template")?.clone()).ok()
}

/// Stores `template` as `revision` unless it is stored already, then keeps only the newest
/// `revisionHistoryLimit` (never fewer than two: the active and the one to undo to).
pub async fn save(
    client: &Client,
    bg: &BlueGreenDeployment,
    revision: &str,
    template: &PodTemplateSpec,
) -> Result<(), Error> {
    let ns = bg.namespace().unwrap_or_default();
    let api: Api<ControllerRevision> = Api::namespaced(client.clone(), &ns);
    let existing = list(client, &ns, &bg.name_any()).await?;
    let wanted = name(bg, revision);
    if existing.iter().any(|r| r.name_any() == wanted) {
        return Ok(());
    }
    let number = existing.last().map_or(1, |r| r.revision + 1);
    let cr = ControllerRevision {
        metadata: ObjectMeta {
            name: Some(wanted),
            namespace: Some(ns.clone()),
            labels: Some(BTreeMap::from([
                (BLUEGREEN_LABEL.into(), bg.name_any()),
                (REVISION_LABEL.into(), revision.into()),
                ("app.kubernetes.io/managed-by".into(), "nova".into()),
            ])),
            owner_references: bg.controller_owner_ref(&()).map(|o| vec![o]),
            ..Default::default()
        },
        data: Some(RawExtension(json!({"template": template}))),
        revision: number,
    };
    match api.create(&PostParams::default(), &cr).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => return Err(e.into()),
    }
    let keep = usize::try_from(bg.spec.revision_history_limit.max(2)).unwrap_or(2);
    let total = existing.len() + 1;
    let active = bg.status.as_ref().and_then(|s| s.active_revision.clone());
    for old in existing.iter().take(total.saturating_sub(keep)) {
        if old.labels().get(REVISION_LABEL) == active.as_ref() {
            continue;
        }
        match api.delete(&old.name_any(), &DeleteParams::background()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
