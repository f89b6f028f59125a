//! A fake apiserver for unit tests of reconcile branches, in the style of kube-rs
//! controller-rs's `ApiServerVerifier`: a test lists the requests it expects, in order, with
//! the answers to give; a request it did not expect fails the test, and so does one it expected
//! but that never came. The real-apiserver tests stay; this covers branches they reach slowly
//! (backoff windows, races with the cache) and proves what a reconcile does *not* call.

use http::{Method, Request, Response, StatusCode};
use kube::Client;
use kube::client::Body;
use tower_test::mock::{self, Handle};

pub struct Verifier {
    handle: Handle<Request<Body>, Response<Body>>,
}

/// One expected request: method, path (without the query) and the answer.
pub struct Expect {
    pub method: Method,
    pub path: String,
    pub status: StatusCode,
    pub body: serde_json::Value,
}

impl Expect {
    pub fn get(path: &str, status: StatusCode, body: serde_json::Value) -> Self {
        Self { method: Method::GET, path: path.into(), status, body }
    }

    pub fn patch(path: &str, body: serde_json::Value) -> Self {
        Self { method: Method::PATCH, path: path.into(), status: StatusCode::OK, body }
    }

    /// A create, answered with what was sent.
    pub fn post(path: &str) -> Self {
        Self {
            method: Method::POST,
            path: path.into(),
            status: StatusCode::CREATED,
            body: serde_json::Value::Null,
        }
    }
}

/// A `404 Not Found` Status body as the apiserver sends it.
pub fn not_found(kind: &str, name: &str) -> serde_json::Value {
    serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound",
                       "code": 404, "message": format!("{kind} \"{name}\" not found")})
}

/// The request's own body as the answer (what a create returns), with a name when it had none.
fn echo(mut body: serde_json::Value) -> serde_json::Value {
    if body.get("metadata").and_then(|m| m.get("name")).is_none() {
        body["metadata"]["name"] = "generated".into();
    }
    body
}

/// A client whose requests go to the returned verifier.
pub fn client() -> (Client, Verifier) {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    (Client::new(service, "default"), Verifier { handle })
}

impl Verifier {
    /// Answers `script` in order; returns the bodies of the requests it saw (patches, posts).
    /// Panics on a request out of script. Ends when the script is done.
    pub fn run(mut self, script: Vec<Expect>) -> tokio::task::JoinHandle<(Vec<serde_json::Value>, Self)> {
        tokio::spawn(async move {
            let mut seen = Vec::new();
            for e in script {
                // A reconcile that never makes the request fails the test instead of hanging it.
                let next =
                    tokio::time::timeout(std::time::Duration::from_secs(10), self.handle.next_request());
                let Ok(Some((req, send))) = next.await else {
                    panic!("expected {} {}, but no request came", e.method, e.path);
                };
                assert_eq!(
                    (req.method(), req.uri().path()),
                    (&e.method, e.path.as_str()),
                    "request out of script"
                );
                let bytes = req.into_body().collect_bytes().await.unwrap_or_default();
                seen.push(serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null));
                let answer =
                    if e.body.is_null() { echo(seen.last().cloned().unwrap_or_default()) } else { e.body };
                let body = serde_json::to_vec(&answer).expect("json");
                send.send_response(
                    Response::builder().status(e.status).body(Body::from(body)).expect("response"),
                );
            }
            (seen, self)
        })
    }

    /// Fails when any request arrives within `wait` (use after the reconcile returned).
    pub async fn no_more_calls(mut self, wait: std::time::Duration) {
        let next = tokio::time::timeout(wait, self.handle.next_request()).await;
        if let Ok(Some((req, _))) = next {
            panic!("unexpected request {} {}", req.method(), req.uri());
        }
    }
}
