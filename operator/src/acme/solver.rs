//! HTTP-01 answers: the key authorizations of pending challenges, served at
//! `/.well-known/acme-challenge/{token}` by the operator's HTTP port (the Ingress rule for a
//! challenged domain, or the host's nginx, sends the ACME server's request there).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

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
