//! Reconcile branches of the Platform controller against the fake apiserver
//! (`kit::verifier`).

use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use serde_json::json;

use crate::api::Platform;
use crate::context::Context;
use crate::kit::verifier::{self, Expect};

const SECRET: &str = "/api/v1/namespaces/shop/secrets/shop-db";
const CERT: &str = "/apis/nova.infra.dev/v1alpha1/namespaces/shop/tlscertificates/web";
const STATUS: &str = "/apis/nova.infra.dev/v1alpha1/namespaces/shop/platforms/web/status";
const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/shop/events";

fn platform() -> Platform {
    serde_json::from_value(json!({
        "apiVersion": "nova.infra.dev/v1alpha1", "kind": "Platform",
        "metadata": {"name": "web", "namespace": "shop", "uid": "u-2", "generation": 1},
        "spec": {"image": "nginx:1.27", "port": 8080, "envFrom": [{"secretRef": {"name": "shop-db"}}]},
    }))
    .expect("a Platform")
}

async fn reconcile(p: &Arc<Platform>, ctx: &Arc<super::Ctx>) -> kube::runtime::controller::Action {
    let r = tokio::time::timeout(Duration::from_secs(10), super::reconcile(p.clone(), ctx.clone())).await;
    r.expect("the reconcile returns (a request out of script hangs it)").expect("blocked is no error")
}

/// A Platform whose Secret is missing: nothing is applied, status says Stalled naming the
/// field, one warning is recorded (for Stalled and Degraded raised together), and it is counted as blocked, not as
/// failed. Looked at again, it makes the same two reads and writes nothing at all.
#[tokio::test]
async fn a_missing_secret_blocks_once_and_then_writes_nothing() {
    let (client, verifier) = verifier::client();
    let ctx = crate::context::Own::new(Context::for_test(client).await, ());
    let p = Arc::new(platform());
    let reads = || {
        vec![
            Expect::get(SECRET, StatusCode::NOT_FOUND, verifier::not_found("secrets", "shop-db")),
            Expect::get(CERT, StatusCode::NOT_FOUND, verifier::not_found("tlscertificates", "web")),
        ]
    };
    let mut script = reads();
    script.push(Expect::post(EVENTS));
    script.push(Expect::patch(STATUS, serde_json::to_value(&*p).expect("json")));
    let fake = verifier.run(script);
    let action = reconcile(&p, &ctx).await;
    assert_eq!(action, kube::runtime::controller::Action::requeue(Duration::from_secs(15)));
    let (seen, verifier) = fake.await.expect("the fake apiserver");
    let conds = seen[3]["status"]["conditions"].as_array().cloned().unwrap_or_default();
    let stalled = conds.iter().find(|c| c["type"] == "Stalled").expect("a Stalled condition");
    assert_eq!(
        (stalled["status"].as_str(), stalled["reason"].as_str()),
        (Some("True"), Some("MissingDependency"))
    );
    assert!(
        stalled["message"].as_str().unwrap_or_default().contains("spec.envFrom[0].secretRef"),
        "{stalled}"
    );
    let reasons: Vec<_> =
        seen[2..3].iter().map(|e| e["reason"].as_str().unwrap_or_default().to_owned()).collect();
    assert_eq!(reasons, ["MissingDependency"]);
    let metrics = ctx.metrics.render();
    assert!(
        metrics.contains(r#"nova_reconcile_blocked_total{kind="Platform",reason="MissingDependency"} 1"#),
        "{metrics}"
    );
    assert!(!metrics.contains("nova_reconcile_errors_total{"), "blocked is not a failure: {metrics}");

    let fake = verifier.run(reads());
    reconcile(&p, &ctx).await;
    let (_, verifier) = fake.await.expect("the fake apiserver");
    verifier.no_more_calls(Duration::from_millis(200)).await;
}
