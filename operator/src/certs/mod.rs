//! The TlsCertificate controller: read the certificate in the target Secret, decide whether
//! it must be issued ([`plan`]), order it from the AcmeIssuer's account with the issuer's
//! solvers, write the `kubernetes.io/tls` Secret, and say when it expires and renews.

pub mod distribute;
pub mod dns01;
pub mod ingress;
pub mod issuer;
pub mod metrics;
mod order;
pub mod plan;
#[cfg(test)]
mod verify;
pub mod webroot;
pub mod x509;

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Api, Resource, ResourceExt};
use serde_json::json;

use crate::api::tls::{AcmeIssuer, TlsCertificate, TlsCertificateStatus};
use crate::conditions::{self, Cond, CondType};
use crate::context::{Call, Error};
use crate::kit;
use plan::Current;

const KIND: &str = "TlsCertificate";
/// Annotations Nova puts on the Secret it writes.
pub const ISSUER_ANNOTATION: &str = "nova.infra.dev/issuer";
pub const CERTIFICATE_ANNOTATION: &str = "nova.infra.dev/certificate";
/// A valid certificate is looked at again at least this often (ARI, a Secret edited by hand).
const RECHECK: Duration = Duration::from_secs(8 * 3600);
/// How a message in backoff says when the next attempt is.
const NEXT_ATTEMPT: &str = "; next attempt at ";

pub use crate::acme::shared::{Settings, Shared, solver_endpoint};

/// The TlsCertificate controller's context: the shared one, its status writer and its
/// certificate metrics.
pub type Ctx = crate::context::Own<TlsCertificate, metrics::Certificates>;

pub async fn reconcile(c: Arc<TlsCertificate>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let cx = ctx.clone();
    kit::run(c, &ctx.kit, &ctx.status, &[], |c| async move { finalized(c, &cx).await }).await
}

/// A certificate distributed to hosts has files there that owner references cannot remove: a
/// finalizer takes them away on deletion (see [`distribute::remove`]).
async fn finalized(c: Arc<TlsCertificate>, ctx: &Ctx) -> Result<Action, Error> {
    let has_finalizer = c.finalizers().iter().any(|f| f == kit::finalizer::FINALIZER);
    if c.spec.distribute_to.is_none() && !has_finalizer {
        return reconcile_inner(&c, ctx).await;
    }
    let api = kit::Reconciled::api_for(&*c, ctx.client.clone());
    kit::finalized(&api, c, |event| async move {
        match event {
            kit::Finalized::Apply(c) => reconcile_inner(&c, ctx).await,
            kit::Finalized::Cleanup(c) => distribute::remove(&c, ctx).await,
        }
    })
    .await
}

/// The certificate and key found in the Secret, parsed.
struct Found {
    chain: String,
    current: Result<Current, String>,
    key_pem: Option<String>,
}

async fn read_secret(c: &TlsCertificate, ctx: &Ctx, ns: &str) -> Result<Option<Found>, Error> {
    let Some(s) = Api::<Secret>::namespaced(ctx.client.clone(), ns).get_opt(&c.spec.secret_name).await?
    else {
        return Ok(None);
    };
    let data = s.data.clone().unwrap_or_default();
    let text = |k: &str| data.get(k).map(|b| String::from_utf8_lossy(&b.0).into_owned());
    let Some(chain) = text("tls.crt").filter(|t| !t.trim().is_empty()) else { return Ok(None) };
    let key_pem = text("tls.key");
    let current = x509::leaf(&chain).map(|leaf| Current {
        key_matches: key_pem.as_deref().is_some_and(|k| x509::key_matches(&leaf, k)),
        issuer: s.annotations().get(ISSUER_ANNOTATION).cloned(),
        leaf,
    });
    Ok(Some(Found { chain, current, key_pem }))
}

/// What a reconcile saw: the Secret's certificate, the status to build on, and the
/// certificate that is being served (valid, and not to be replaced for a reason other than
/// renewal).
struct Seen {
    ns: String,
    now: Timestamp,
    old: TlsCertificateStatus,
    found: Option<Found>,
    status: TlsCertificateStatus,
    serving: Option<Current>,
}

impl Seen {
    fn ready(&self) -> Cond {
        ready_cond(self.serving.as_ref())
    }
}

fn ready_cond(serving: Option<&Current>) -> Cond {
    match serving {
        Some(cur) => Cond::new(CondType::Ready, true, "Valid", format!("valid until {}", cur.leaf.not_after)),
        None => Cond::new(CondType::Ready, false, "NotIssued", "no valid certificate in the Secret yet"),
    }
}

async fn reconcile_inner(c: &TlsCertificate, ctx: &Ctx) -> Result<Action, Error> {
    let (seen, reason) = observe(c, ctx).await?;
    match reason {
        None => up_to_date(c, ctx, seen).await,
        Some(reason) => match in_backoff(c, ctx, &seen).await? {
            Some(wait) => Ok(wait),
            None => issue(c, ctx, seen, reason).await,
        },
    }
}

/// Reads the Secret and decides whether to issue (pure: [`plan::reason_to_issue`]).
async fn observe(c: &TlsCertificate, ctx: &Ctx) -> Result<(Seen, Option<plan::Reason>), Error> {
    let ns = c.namespace().unwrap_or_default();
    let now = Timestamp::now();
    let old = ctx.status.current(c);
    let found = read_secret(c, ctx, &ns).await?;
    // The status keeps a renewal time moved forward by ARI for the certificate it describes.
    let known = |cur: &Current| old.serial_number.as_deref() == Some(cur.leaf.serial.as_str());
    let renewal = match found.as_ref().map(|f| &f.current) {
        Some(Ok(cur)) if known(cur) => old.renewal_time.as_ref().map(|t| t.0),
        _ => None,
    };
    let reason = plan::reason_to_issue(found.as_ref().map(|f| &f.current), &c.spec, renewal, now);
    let serving = found.as_ref().and_then(|f| f.current.as_ref().ok()).cloned().filter(|cur| {
        !matches!(reason, Some(ref r) if !matches!(r, plan::Reason::Due(_))) && now < cur.leaf.not_after
    });
    let mut status = old.clone();
    if let Some(cur) = &serving {
        describe(&mut status, cur, renewal.unwrap_or_else(|| plan::renewal_time(&cur.leaf, &c.spec)));
        let at = status.renewal_time.as_ref().map(|t| t.0);
        ctx.families.certificate(&ns, &c.name_any(), cur.leaf.not_after, at);
    }
    Ok((Seen { ns, now, old, found, status, serving }, reason))
}

/// Nothing to issue: ask ARI, keep the hosts' copies in shape, say so.
async fn up_to_date(c: &TlsCertificate, ctx: &Ctx, mut seen: Seen) -> Result<Action, Error> {
    let Some(cur) = seen.serving.clone() else {
        return Err(Error::Bug("no reason to issue, yet no certificate to serve".into()));
    };
    // The server's renewal information can move renewal forward at any time (a revoked or
    // mis-issued certificate): asked on each reconcile when the server offers it.
    if let Some(at) = ari_point(c, ctx, &cur).await? {
        describe(&mut seen.status, &cur, at);
        ctx.families.certificate(&seen.ns, &c.name_any(), cur.leaf.not_after, Some(at));
    }
    let mut conds =
        vec![seen.ready(), Cond::new(CondType::Issuing, false, "UpToDate", "the certificate is current")];
    if let Some(f) = seen.found.as_ref() {
        conds.extend(distributed(c, ctx, &f.chain, f.key_pem.as_deref().unwrap_or_default()).await?);
    }
    let at = seen.status.renewal_time.as_ref().map(|t| t.0).unwrap_or(seen.now);
    write_status(c, ctx, seen.status, &conds).await?;
    Ok(Action::requeue(until(seen.now, at).min(recheck(&conds))))
}

/// After failures the server is not asked again before the backoff is over: the wait, when
/// there is one.
async fn in_backoff(c: &TlsCertificate, ctx: &Ctx, seen: &Seen) -> Result<Option<Action>, Error> {
    let attempts = seen.old.failed_issuance_attempts.unwrap_or(0);
    let Some(last) = seen.old.last_failure_time.as_ref().map(|t| t.0).filter(|_| attempts > 0) else {
        return Ok(None);
    };
    let wait = plan::backoff(attempts, ctx.certs.settings.backoff_base, ctx.certs.settings.backoff_cap);
    let next = last + SignedDuration::try_from(wait).unwrap_or(SignedDuration::MAX);
    if seen.now >= next {
        return Ok(None);
    }
    // The failure as it was reported, without the "next attempt" this branch adds: the message
    // must come out the same on every reconcile of the window, or each write would trigger the
    // next reconcile and grow the message.
    let last = conditions_message(&seen.old, "Issuing");
    let failure = last.split(NEXT_ATTEMPT).next().unwrap_or_default();
    let msg = format!("{failure}{NEXT_ATTEMPT}{next}");
    let conds = [seen.ready(), Cond::new(CondType::Issuing, false, "Backoff", msg)];
    write_status(c, ctx, seen.status.clone(), &conds).await?;
    Ok(Some(Action::requeue(until(seen.now, next))))
}

/// The issuer and its account, or the wait when there is none to order with (said in status).
async fn ready_issuer(
    c: &TlsCertificate,
    ctx: &Ctx,
    seen: &Seen,
) -> Result<Result<(AcmeIssuer, issuer::Ready), Action>, Error> {
    let name = &c.spec.issuer_ref.name;
    let iss = Api::<AcmeIssuer>::all(ctx.client.clone())
        .get_opt(name)
        .await
        .call(|| format!("reading AcmeIssuer {name} (spec.issuerRef)"))?;
    let not_ready =
        |reason: &'static str, msg: String| [seen.ready(), Cond::new(CondType::Issuing, false, reason, msg)];
    let Some(iss) = iss else {
        let msg = format!("AcmeIssuer {name:?} named in spec.issuerRef does not exist");
        ctx.metrics.reconcile.blocked(KIND, "IssuerNotFound");
        write_status(c, ctx, seen.status.clone(), &not_ready("IssuerNotFound", msg)).await?;
        return Ok(Err(Action::requeue(Duration::from_secs(60))));
    };
    if let Some(msg) = unprovable(c, &iss) {
        write_status(c, ctx, seen.status.clone(), &not_ready("InvalidSpec", msg)).await?;
        return Ok(Err(Action::await_change()));
    }
    match issuer::account(&iss, ctx, false).await {
        Ok(a) => Ok(Ok((iss, a))),
        Err(e @ (Error::Blocked(_) | Error::Acme(_))) => {
            write_status(c, ctx, seen.status.clone(), &not_ready("IssuerNotReady", e.to_string())).await?;
            Ok(Err(Action::requeue(Duration::from_secs(30))))
        }
        Err(e) => Err(e),
    }
}

/// Orders a certificate and records what came of it.
async fn issue(c: &TlsCertificate, ctx: &Ctx, mut seen: Seen, reason: plan::Reason) -> Result<Action, Error> {
    let (iss, account) = match ready_issuer(c, ctx, &seen).await? {
        Ok(ready) => ready,
        Err(wait) => return Ok(wait),
    };
    // Issuing: say so first, so `kubectl get` shows it while the order runs.
    let why = reason.to_string();
    let conds = [seen.ready(), Cond::new(CondType::Issuing, true, "Ordering", format!("ordering: {why}"))];
    write_status(c, ctx, seen.status.clone(), &conds).await?;
    let started = Instant::now();
    // A renewal names the certificate it replaces (RFC 9773), when the server takes ARI.
    let replaces = match (&reason, seen.found.as_ref().map(|f| &f.current)) {
        (plan::Reason::Due(_), Some(Ok(cur))) => cur.leaf.ari_id.clone(),
        _ => None,
    };
    let outcome = order::order(c, ctx, &iss, &account, seen.found.as_ref(), replaces.as_deref()).await;
    ctx.families.issued(outcome.is_ok(), started.elapsed());
    seen.now = Timestamp::now();
    match outcome {
        Ok((chain, key)) => issued(c, ctx, seen, &account, &why, &chain, &key).await,
        Err(msg) => failed_issuance(c, ctx, seen, &msg).await,
    }
}

async fn issued(
    c: &TlsCertificate,
    ctx: &Ctx,
    mut seen: Seen,
    account: &issuer::Ready,
    why: &str,
    chain: &str,
    key: &str,
) -> Result<Action, Error> {
    let leaf = x509::leaf(chain)
        .map_err(|e| Error::Acme(format!("the ACME server sent an unreadable chain: {e}")))?;
    order::write_secret(c, ctx, &seen.ns, chain, key).await?;
    let cur = Current { leaf, key_matches: true, issuer: Some(c.spec.issuer_ref.name.clone()) };
    let at = ari_renewal(account, &cur, &c.spec).await;
    describe(&mut seen.status, &cur, at);
    seen.status.failed_issuance_attempts = None;
    seen.status.last_failure_time = None;
    ctx.families.certificate(&seen.ns, &c.name_any(), cur.leaf.not_after, Some(at));
    let msg = format!(
        "issued serial {} for {} ({why}); valid until {}, renewal at {at}",
        cur.leaf.serial,
        cur.leaf.dns_names.join(", "),
        cur.leaf.not_after
    );
    publish(ctx, c, EventType::Normal, "Issued", &msg).await;
    let mut conds = vec![ready_cond(Some(&cur)), Cond::new(CondType::Issuing, false, "Issued", msg)];
    conds.extend(distributed(c, ctx, chain, key).await?);
    write_status(c, ctx, seen.status, &conds).await?;
    Ok(Action::requeue(until(seen.now, at).min(recheck(&conds))))
}

async fn failed_issuance(c: &TlsCertificate, ctx: &Ctx, mut seen: Seen, msg: &str) -> Result<Action, Error> {
    let attempts = seen.old.failed_issuance_attempts.unwrap_or(0) + 1;
    let wait = plan::backoff(attempts, ctx.certs.settings.backoff_base, ctx.certs.settings.backoff_cap);
    seen.status.failed_issuance_attempts = Some(attempts);
    seen.status.last_failure_time = Some(Time(seen.now));
    let text = format!("attempt {attempts} failed: {msg}");
    publish(ctx, c, EventType::Warning, "IssuanceFailed", &text).await;
    let ready = match seen.serving {
        Some(_) => seen.ready(),
        None => Cond::new(CondType::Ready, false, "IssuanceFailed", &text),
    };
    write_status(c, ctx, seen.status, &[ready, Cond::new(CondType::Issuing, false, "Failed", text)]).await?;
    Ok(Action::requeue(wait))
}

/// The Distributed condition after installing on the hosts of `spec.distributeTo` (none
/// without it). Installing is idempotent: unchanged files are left alone and nginx is not
/// reloaded, so running it on every reconcile also repairs hosts that drifted.
async fn distributed(c: &TlsCertificate, ctx: &Ctx, chain: &str, key: &str) -> Result<Option<Cond>, Error> {
    let Some(d) = &c.spec.distribute_to else { return Ok(None) };
    let (done, failed) = distribute::run(c, ctx, d, chain, key).await?;
    if failed.is_empty() {
        return Ok(Some(Cond::new(
            CondType::Distributed,
            true,
            "Installed",
            format!("installed on {}", done.join(", ")),
        )));
    }
    let msg = failed.join("; ");
    if conditions::is_true(&ctx.status.current(c).conditions, "Distributed") != Some(false) {
        publish(ctx, c, EventType::Warning, "DistributionFailed", &msg).await;
    }
    Ok(Some(Cond::new(CondType::Distributed, false, "Failed", msg)))
}

/// Hosts that did not take the certificate are tried again within a minute.
fn recheck(conds: &[Cond]) -> Duration {
    if conds.iter().any(|c| c.type_ == CondType::Distributed && !c.status) {
        Duration::from_secs(60)
    } else {
        RECHECK
    }
}

fn until(now: Timestamp, at: Timestamp) -> Duration {
    Duration::try_from(at.duration_since(now)).unwrap_or(Duration::ZERO).max(Duration::from_secs(1))
}

fn conditions_message(s: &TlsCertificateStatus, type_: &str) -> String {
    s.conditions.iter().find(|c| c.type_ == type_).map(|c| c.message.clone()).unwrap_or_default()
}

fn describe(status: &mut TlsCertificateStatus, cur: &Current, renewal: Timestamp) {
    status.not_before = Some(Time(cur.leaf.not_before));
    status.not_after = Some(Time(cur.leaf.not_after));
    status.serial_number = Some(cur.leaf.serial.clone());
    status.renewal_time = Some(Time(renewal));
}

/// A name no solver of the issuer can prove, said naming the field; None when all can be.
fn unprovable(c: &TlsCertificate, iss: &AcmeIssuer) -> Option<String> {
    let has_dns = iss.spec.solvers.iter().any(|s| s.dns01.is_some());
    let has_http = iss.spec.solvers.iter().any(|s| s.http01.is_some());
    c.spec.dns_names.iter().enumerate().find_map(|(i, n)| {
        let wildcard = n.starts_with("*.");
        if wildcard && !has_dns {
            Some(format!(
                "spec.dnsNames[{i}] {n:?} is a wildcard, which only DNS-01 can prove; AcmeIssuer {} has no dns01 solver",
                iss.name_any()
            ))
        } else if !wildcard && !has_dns && !has_http {
            Some(format!("AcmeIssuer {} has no solver for spec.dnsNames[{i}] {n:?}", iss.name_any()))
        } else {
            None
        }
    })
}

/// The renewal time for a new certificate, moved forward when the server's ACME Renewal
/// Information suggests an earlier window.
async fn ari_renewal(
    account: &issuer::Ready,
    cur: &Current,
    spec: &crate::api::tls::TlsCertificateSpec,
) -> Timestamp {
    let at = plan::renewal_time(&cur.leaf, spec);
    let Some(id) = cur.leaf.ari_id.as_deref() else { return at };
    let quoted = json!(id).to_string();
    let Ok(id) = serde_json::from_str::<instant_acme::CertificateIdentifier>(&quoted) else { return at };
    match account.account.renewal_info(&id).await {
        Ok((info, _)) => {
            let ts = |t: time::OffsetDateTime| Timestamp::from_second(t.unix_timestamp()).ok();
            let w = &info.suggested_window;
            let window = ts(w.start).zip(ts(w.end));
            plan::with_suggested_window(at, window, &cur.leaf.serial)
        }
        // Servers without ARI (Pebble 2.4, many private CAs) leave the computed time.
        Err(_) => at,
    }
}

/// The renewal time with the server's ARI window applied, for a certificate whose issuer
/// account is at hand; None when there is no issuer, account or identifier to ask with.
async fn ari_point(c: &TlsCertificate, ctx: &Ctx, cur: &Current) -> Result<Option<Timestamp>, Error> {
    if cur.leaf.ari_id.is_none() {
        return Ok(None);
    }
    let name = &c.spec.issuer_ref.name;
    let iss = Api::<AcmeIssuer>::all(ctx.client.clone())
        .get_opt(name)
        .await
        .call(|| format!("reading AcmeIssuer {name} (spec.issuerRef)"))?;
    let Some(iss) = iss else { return Ok(None) };
    let account = match issuer::account(&iss, ctx, false).await {
        Ok(a) => a,
        Err(Error::Blocked(_) | Error::Acme(_)) => return Ok(None),
        Err(e) => return Err(e),
    };
    Ok(Some(ari_renewal(&account, cur, &c.spec).await))
}

/// Writes status through the kit (only when it changed against what this process last wrote).
async fn write_status(
    c: &TlsCertificate,
    ctx: &Ctx,
    new: TlsCertificateStatus,
    conds: &[Cond],
) -> Result<(), Error> {
    ctx.status.write(&ctx.kit, c, new, conds).await?;
    Ok(())
}

async fn publish(ctx: &Ctx, c: &TlsCertificate, type_: EventType, reason: &str, note: &str) {
    ctx.publish(&c.object_ref(&()), "Issue", type_, reason, note).await;
}
