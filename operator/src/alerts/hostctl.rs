//! The AlertRule controller's hosts target (`spec.target.hosts`): the Hosts it selects are
//! connected first — each must allow the namespace — then each gets the rule file and routing
//! and is read back ([`super::batch`], shared with `nova apply`): the objects of a Host that
//! arrive together share one round there — one `promtool check rules`, one reload, one
//! read-back. Hosts no longer selected lose the object's files; so do all of them when it is
//! deleted (finalizer).

use std::time::Duration;

use kube::api::ListParams;
use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};

use super::batch;
use super::controller::Ctx;
use super::hosts::{self, Object};
use super::onhost;
use super::validate::Checked;
use super::{observe, routing};
use crate::api::AlertRule;
use crate::api::alert::{AlertRuleStatus, Routing};
use crate::api::host::Host;
use crate::conditions::{Cond, CondType};
use crate::context::{Blocked, Call, Error};
use crate::{hostaccess, hostapp, ssh};

const PREFIX: &str = "Hosts ";

/// The Hosts named in `status.appliedTo` (where the files were last written).
fn applied_hosts(status: &AlertRuleStatus) -> Vec<String> {
    let to = status.applied_to.as_deref().unwrap_or_default();
    to.strip_prefix(PREFIX).map(|l| l.split(", ").map(str::to_owned).collect()).unwrap_or_default()
}

fn on_host(host: &str, e: onhost::Error) -> Error {
    match e {
        onhost::Error::Ssh(e) if e.transient() => Error::Host(format!("Host {host}: {e}")),
        onhost::Error::NoMonitoring { .. } => {
            Blocked::new("NoMonitoring", format!("Host {host}: {e}")).retry(Duration::from_secs(60)).into()
        }
        onhost::Error::Refused { .. } | onhost::Error::ReloadRefused { .. } => {
            Blocked::new("RefusedOnHost", format!("Host {host}: {e}")).retry(Duration::from_secs(300)).into()
        }
        e => Error::Host(format!("Host {host}: {e}")),
    }
}

async fn connect(ctx: &Ctx, hosts: &[&Host], ns: &str) -> Result<Vec<(String, ssh::Connection)>, Error> {
    let mut out = Vec::new();
    for h in hosts {
        out.push((h.name_any(), hostaccess::connect(h, ctx, ns).await?));
    }
    Ok(out)
}

async fn all_hosts(ctx: &Ctx) -> Result<Vec<Host>, Error> {
    Ok(Api::<Host>::all(ctx.client.clone())
        .list(&ListParams::default())
        .await
        .call(|| "listing Hosts".into())?
        .items)
}

/// One object's part of a round on a Host ([`crate::kit::rounds`]): what it asks of the host and
/// its status so far.
pub struct Job {
    namespace: String,
    name: String,
    owner: String,
    checked: Checked,
    routing: Option<(Routing, routing::Secrets)>,
    status: AlertRuleStatus,
}

/// A job's status read back, when to look again and its Ready/MetricsPresent conditions.
pub type Outcome = Result<(AlertRuleStatus, Duration, Vec<Cond>), onhost::Error>;

/// The jobs that arrived together, in one check and one reload on the host behind `conn` (each
/// job's own reconcile connected to it first: the host allows every job's namespace).
async fn round(conn: &ssh::Connection, jobs: Vec<Job>) -> Vec<Outcome> {
    let objects: Vec<Object> = jobs
        .iter()
        .map(|j| Object {
            namespace: &j.namespace,
            name: &j.name,
            owner: &j.owner,
            checked: &j.checked,
            routing: j.routing.as_ref().map(|(r, s)| (r, s)),
        })
        .collect();
    let mut statuses: Vec<AlertRuleStatus> = jobs.iter().map(|j| j.status.clone()).collect();
    let out = batch::apply_or_each(conn, &objects, &mut statuses).await;
    out.into_iter().zip(statuses).map(|(r, st)| r.map(|(after, conds)| (st, after, conds))).collect()
}

/// Applies `o` on its Hosts and writes its status.
pub async fn apply(
    o: &AlertRule,
    ctx: &Ctx,
    owner: &str,
    checked: &Checked,
    problems: &[String],
) -> Result<Action, Error> {
    let (ns, name) = (o.namespace().unwrap_or_default(), o.name_any());
    let all = all_hosts(ctx).await?;
    let sel = o
        .spec
        .target
        .as_ref()
        .and_then(|t| t.hosts.as_ref())
        .ok_or_else(|| Error::Bug("no spec.target.hosts".into()))?;
    let chosen = hostapp::select(&all, sel);
    if chosen.is_empty() {
        let msg = format!("spec.target.hosts of AlertRule {name} selects no Host");
        return Err(Blocked::missing(msg).retry(Duration::from_secs(30)).into());
    }
    let routing = o.spec.routing.as_ref().filter(|r| routing::problems(r).is_empty());
    let secrets = match routing {
        Some(r) => Some(observe::secrets(ctx, &ns, r).await?),
        None => None,
    };
    let conns = connect(ctx, &chosen, &ns).await?;
    let old = ctx.status.current(o);
    let names: Vec<String> = conns.iter().map(|(h, _)| h.clone()).collect();
    let gone: Vec<&Host> = all
        .iter()
        .filter(|h| applied_hosts(&old).contains(&h.name_any()) && !names.contains(&h.name_any()))
        .collect();
    for (h, conn) in connect(ctx, &gone, &ns).await? {
        hosts::remove(&conn, &ns, &name).await.map_err(|e| on_host(&h, e))?;
    }
    let mut new = AlertRuleStatus {
        rules_applied: Some(checked.rules() as i32),
        applied_to: Some(format!("{PREFIX}{}", names.join(", "))),
        ..old
    };
    let mut rounds = Vec::new();
    for (h, conn) in &conns {
        let job = Job {
            namespace: ns.clone(),
            name: name.clone(),
            owner: owner.to_owned(),
            checked: checked.clone(),
            routing: routing.cloned().zip(secrets.clone()),
            status: new.clone(),
        };
        let done = ctx.families.rounds.submit(h, job, |jobs| round(conn, jobs)).await;
        let (st, after, conds) = done
            .ok_or_else(|| {
                Error::Host(format!("Host {h}: the round on the host ended before this object's turn"))
            })?
            .map_err(|e| on_host(h, e))?;
        rounds.push((h, after, conds, st));
    }
    let after = rounds.iter().map(|r| r.1).min().unwrap_or(Duration::from_secs(300));
    // The first Host whose rules are not loaded speaks for the object (status and conditions).
    let not_ready = |c: &Vec<Cond>| c.iter().any(|c| c.type_ == CondType::Ready && !c.status);
    let pick = rounds.iter().position(|r| not_ready(&r.2)).unwrap_or(0);
    let (h, _, mut conds, st) = rounds.swap_remove(pick);
    new = st;
    if conns.len() > 1 {
        conds.iter_mut().for_each(|c| c.message = format!("Host {h}: {}", c.message));
    }
    if problems.is_empty() {
        conds.push(Cond::new(CondType::Degraded, false, "Valid", "every rule and route is valid"));
    } else {
        let msg = super::controller::invalid(problems, checked.rules());
        conds.retain(|c| c.type_ != CondType::Ready);
        conds.push(Cond::new(CondType::Ready, false, "InvalidRules", msg.clone()));
        conds.push(Cond::new(CondType::Degraded, true, "InvalidRules", msg));
    }
    ctx.status.write(&ctx.kit, o, new, &conds).await?;
    Ok(Action::requeue(after))
}

/// Removes `o`'s files from every Host it selects or was last applied to.
pub async fn cleanup(o: &AlertRule, ctx: &Ctx) -> Result<(), Error> {
    let (ns, name) = (o.namespace().unwrap_or_default(), o.name_any());
    let all = all_hosts(ctx).await?;
    let mut names = applied_hosts(&ctx.status.current(o));
    if let Some(sel) = o.spec.target.as_ref().and_then(|t| t.hosts.as_ref()) {
        names.extend(hostapp::select(&all, sel).into_iter().map(|h| h.name_any()));
    }
    let hosts: Vec<&Host> = all.iter().filter(|h| names.contains(&h.name_any())).collect();
    for (h, conn) in connect(ctx, &hosts, &ns).await? {
        hosts::remove(&conn, &ns, &name).await.map_err(|e| on_host(&h, e))?;
    }
    Ok(())
}
