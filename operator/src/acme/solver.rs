//! HTTP-01 answers: the key authorizations of pending challenges, served at
//! `/.well-known/acme-challenge/{token}` by the operator's HTTP port (the Ingress rule for a
//! challenged domain, or the host's nginx, sends the ACME server's request there).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use futures::future::BoxFuture;
use instant_acme::ChallengeType;

use super::{Challenger, Presentation};

/// Tokens and their key authorizations. Cheap to clone; clones share the tokens.
#[derive(Clone, Default)]
pub struct Http01 {
    tokens: Arc<RwLock<HashMap<String, String>>>,
}

impl Http01 {
    pub fn put(&self, token: &str, key_authorization: &str) {
        self.tokens.write().expect("tokens").insert(token.to_owned(), key_authorization.to_owned());
    }

    pub fn remove(&self, token: &str) {
        self.tokens.write().expect("tokens").remove(token);
    }

    /// How many challenges are being answered (none once an issuance has ended, whatever way).
    pub fn pending(&self) -> usize {
        self.tokens.read().expect("tokens").len()
    }

    /// A [`Challenger`] for one issuance: it answers through this map and removes, at
    /// cleanup, the tokens it put.
    pub fn session(&self) -> Http01Session {
        Http01Session { solver: self.clone(), tokens: Mutex::new(Vec::new()) }
    }

    pub fn router(&self) -> Router {
        Router::new().route("/.well-known/acme-challenge/{token}", get(answer)).with_state(self.clone())
    }
}

async fn answer(State(s): State<Http01>, Path(token): Path<String>) -> impl IntoResponse {
    match s.tokens.read().expect("tokens").get(&token) {
        Some(ka) => {
            (StatusCode::OK, [(header::CONTENT_TYPE, "application/octet-stream")], ka.clone()).into_response()
        }
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// HTTP-01 answers for one issuance.
pub struct Http01Session {
    solver: Http01,
    tokens: Mutex<Vec<String>>,
}

impl Challenger for Http01Session {
    fn kind(&self) -> ChallengeType {
        ChallengeType::Http01
    }

    fn covers(&self, _name: &str, wildcard: bool) -> bool {
        !wildcard
    }

    fn present<'a>(&'a self, p: &'a Presentation) -> BoxFuture<'a, Result<(), String>> {
        self.solver.put(&p.token, &p.value);
        self.tokens.lock().expect("tokens").push(p.token.clone());
        Box::pin(async { Ok(()) })
    }

    fn cleanup(&self) -> BoxFuture<'_, ()> {
        for t in self.tokens.lock().expect("tokens").drain(..) {
            self.solver.remove(&t);
        }
        Box::pin(async {})
    }
}
