//! The one status writer: conditions merged against the status this process last wrote (the
//! watch cache may not hold that write yet, and deciding from it would re-stamp
//! `lastTransitionTime` or repeat a step), a write only when something changed, and an event
//! for each condition change worth one.

use std::collections::{HashMap, HashSet};
use std::marker::PhantomData;
use std::sync::Mutex;

use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde_json::json;

use super::Shared;
use super::error::{Blocked, Call, Error};
use super::kinds::Reconciled;
use crate::conditions::{self, Cond, CondType};

pub struct StatusWriter<K: Reconciled> {
    written: Mutex<HashMap<String, K::Status>>,
    _kind: PhantomData<fn() -> K>,
}

impl<K: Reconciled> Default for StatusWriter<K> {
    fn default() -> Self {
        Self { written: Mutex::new(HashMap::new()), _kind: PhantomData }
    }
}

impl<K: Reconciled> StatusWriter<K> {
    /// The newest status there is: what this process last wrote for the object, else the
    /// object's own. Only the leader writes status, so its last write is the newest.
    pub fn current(&self, obj: &K) -> K::Status {
        let uid = obj.uid().unwrap_or_default();
        let map = self.written.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&uid).cloned().unwrap_or_else(|| obj.status().cloned().unwrap_or_default())
    }

    /// Writes `new` with `conds` merged in, when that differs from [`current`](Self::current).
    /// A Stalled condition left True earlier is set False by a write that says Ready and does
    /// not raise Stalled again. Returns whether it wrote.
    pub async fn write(
        &self,
        kit: &Shared,
        obj: &K,
        mut new: K::Status,
        conds: &[Cond],
    ) -> Result<bool, Error> {
        let base = self.current(obj);
        let generation = obj.meta().generation;
        *K::observed_generation_mut(&mut new) = generation;
        let mut wanted = conditions::with_kstatus(conds.to_vec());
        let was_stalled = conditions::is_true(K::conditions(&base), CondType::Stalled.as_str()) == Some(true);
        // Only a write that judges readiness again can clear a stall: a backup's write of its
        // objectives alone says nothing about the failed run that stalled it.
        let judged = wanted.iter().any(|c| c.type_ == CondType::Ready);
        if was_stalled && judged && !wanted.iter().any(|c| c.type_ == CondType::Stalled) {
            wanted.push(Cond::new(CondType::Stalled, false, "Unblocked", "nothing is waiting for a change"));
        }
        *K::conditions_mut(&mut new) =
            conditions::merge(K::conditions(&base), &wanted, generation, Timestamp::now());
        if new == base {
            return Ok(false);
        }
        kit.fenced()?;
        // Events before the write: whoever sees the new status finds its events already (a write
        // that fails is retried and may announce again; the recorder counts a repeat as a series).
        // Conditions raised together for one cause (Stalled and Degraded) make one event.
        let mut told = Vec::new();
        for c in &wanted {
            let was = conditions::is_true(K::conditions(&base), c.type_.as_str());
            if was == Some(c.status) || told.contains(&(c.reason, &c.message)) {
                continue;
            }
            if let Some(t) = K::condition_event(c, was) {
                kit.publish(&obj.object_ref(&()), K::ACTION, t, c.reason, &c.message).await;
                told.push((c.reason, &c.message));
            }
        }
        let api: Api<K> = obj.api_for(kit.client.clone());
        let patch = json!({"apiVersion": K::api_version(&()), "kind": K::KIND, "status": new});
        api.patch_status(
            &obj.name_any(),
            &PatchParams::apply(super::FIELD_MANAGER).force(),
            &Patch::Apply(patch),
        )
        .await
        .call(|| format!("writing the status of {} {}", K::KIND, describe(obj)))?;
        let uid = obj.uid().unwrap_or_default();
        self.written.lock().unwrap_or_else(|p| p.into_inner()).insert(uid, new);
        Ok(true)
    }

    /// A blocked object: Ready False and Stalled True with the reason and message, and the
    /// kind's own `extra` conditions; the rest of the status as it was.
    pub async fn blocked(
        &self,
        kit: &Shared,
        obj: &K,
        b: &Blocked,
        extra: &[CondType],
    ) -> Result<bool, Error> {
        let mut conds = vec![
            Cond::new(CondType::Ready, false, b.reason, &b.message),
            Cond::new(CondType::Stalled, true, b.reason, &b.message),
        ];
        for t in extra {
            let status = *t == CondType::Degraded;
            conds.push(Cond::new(*t, status, b.reason, &b.message));
        }
        self.write(kit, obj, self.current(obj), &conds).await
    }

    /// Forgets every object whose UID is not in `live` (deleted objects).
    pub fn retain(&self, live: &HashSet<String>) {
        self.written.lock().unwrap_or_else(|p| p.into_inner()).retain(|uid, _| live.contains(uid));
    }

    pub fn forget(&self, obj: &K) {
        if let Some(uid) = obj.uid() {
            self.written.lock().unwrap_or_else(|p| p.into_inner()).remove(&uid);
        }
    }

    pub fn len(&self) -> usize {
        self.written.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// `namespace/name`, or `name` for cluster-scoped objects.
pub fn describe<K: kube::Resource>(obj: &K) -> String {
    match obj.namespace() {
        Some(ns) => format!("{ns}/{}", obj.name_any()),
        None => obj.name_any(),
    }
}
