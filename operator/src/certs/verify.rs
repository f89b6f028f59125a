//! Reconcile branches of the certificate controller against the fake apiserver
//! (`kit::verifier`): which requests a reconcile makes, and which it does not.

use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use serde_json::json;

use crate::api::TlsCertificate;
use crate::context::Context;
use crate::kit::verifier::{self, Expect};

const SECRET: &str = "/api/v1/namespaces/shop/secrets/shop-tls";
const STATUS: &str = "/apis/nova.infra.dev/v1alpha1/namespaces/shop/tlscertificates/shop/status";

/// A certificate whose last issuance failed `ago` seconds ago (attempt 1: backoff 300 s).
fn failed_certificate(ago: i64, issuing_message: &str) -> TlsCertificate {
    let at = Timestamp::now() - SignedDuration::from_secs(ago);
    serde_json::from_value(json!({
        "apiVersion": "nova.infra.dev/v1alpha1", "kind": "TlsCertificate",
        "metadata": {"name": "shop", "namespace": "shop", "uid": "u-1", "generation": 1},
        "spec": {"secretName": "shop-tls", "dnsNames": ["shop.example.com"], "issuerRef": {"name": "le"}},
        "status": {"observedGeneration": 1, "failedIssuanceAttempts": 1, "lastFailureTime": at.to_string(),
                   "conditions": [
                       {"type": "Issuing", "status": "False", "reason": "Failed", "message": issuing_message,
                        "lastTransitionTime": at.to_string(), "observedGeneration": 1},
                       {"type": "Ready", "status": "False", "reason": "IssuanceFailed", "message": issuing_message,
                        "lastTransitionTime": at.to_string(), "observedGeneration": 1}]},
    }))
    .expect("a TlsCertificate")
}

async fn reconcile(c: &Arc<TlsCertificate>, ctx: &Arc<super::Ctx>) {
    let r = tokio::time::timeout(Duration::from_secs(10), super::reconcile(c.clone(), ctx.clone())).await;
    r.expect("the reconcile returns (a request out of script hangs it)").expect("the reconcile succeeds");
}

fn message(status_patch: &serde_json::Value) -> String {
    let conds = status_patch["status"]["conditions"].as_array().cloned().unwrap_or_default();
    let issuing = conds.iter().find(|c| c["type"] == "Issuing").cloned().unwrap_or_default();
    issuing["message"].as_str().unwrap_or_default().to_owned()
}

/// During a backoff window the status is written once; reconciles after that (triggered by
/// that very write, with the cache stale or fresh) read the Secret and write nothing. Before
/// the fix each reconcile appended "next attempt at" again and wrote, waking the next one.
#[tokio::test]
async fn a_backoff_window_writes_status_once() {
    let (client, verifier) = verifier::client();
    let ctx = certificates_ctx(client).await;
    let c = Arc::new(failed_certificate(10, "attempt 1 failed: the server said no"));
    let absent = || Expect::get(SECRET, StatusCode::NOT_FOUND, verifier::not_found("secrets", "shop-tls"));

    let echo = serde_json::to_value(&*c).expect("json");
    let script = vec![absent(), Expect::patch(STATUS, echo), absent()];
    let fake = verifier.run(script);
    reconcile(&c, &ctx).await;
    // The watch sends the same (stale) object again, then the one with the written status.
    reconcile(&c, &ctx).await;
    let (seen, verifier) = fake.await.expect("the fake apiserver");
    let written = message(&seen[1]);
    assert!(written.starts_with("attempt 1 failed: the server said no; next attempt at "), "{written}");
    assert_eq!(written.matches("next attempt").count(), 1, "{written}");

    let mut fresh = (*c).clone();
    let mut st = fresh.status.clone().unwrap_or_default();
    st.conditions = serde_json::from_value(seen[1]["status"]["conditions"].clone()).expect("conditions");
    fresh.status = Some(st);
    let fake = verifier.run(vec![absent()]);
    reconcile(&Arc::new(fresh), &ctx).await;
    let (_, verifier) = fake.await.expect("the fake apiserver");
    verifier.no_more_calls(Duration::from_millis(200)).await;
}

/// A status written by someone else with a message already carrying the suffix (an older Nova
/// wrote it so) comes out with one suffix, not two.
#[tokio::test]
async fn an_old_grown_message_is_not_grown_further() {
    let (client, verifier) = verifier::client();
    let ctx = certificates_ctx(client).await;
    let c = Arc::new(failed_certificate(10, "attempt 1 failed: no; next attempt at 2026-01-01T00:00:00Z"));
    let absent = Expect::get(SECRET, StatusCode::NOT_FOUND, verifier::not_found("secrets", "shop-tls"));
    let fake = verifier.run(vec![absent, Expect::patch(STATUS, serde_json::to_value(&*c).expect("json"))]);
    reconcile(&c, &ctx).await;
    let (seen, _) = fake.await.expect("the fake apiserver");
    assert_eq!(message(&seen[1]).matches("next attempt").count(), 1);
}

/// The certificate controller's context over a test client, its metric families registered.
async fn certificates_ctx(client: kube::Client) -> Arc<super::Ctx> {
    let shared = Context::for_test(client).await;
    let families = super::metrics::Certificates::register(&shared.metrics.registry).expect("register once");
    crate::context::Own::new(shared, families)
}
