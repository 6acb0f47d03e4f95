//! The application service API the homeserver calls (served with axum): transactions of
//! events, user and alias queries, and ping. This module is the HTTP edge only: it checks the
//! homeserver's token, the size and the JSON, then hands the work to a [`Handler`].
//!
//! Errors follow the spec: no token → 401 `M_UNAUTHORIZED`, a wrong one → 403 `M_FORBIDDEN`, a
//! body over the limit → 413 `M_TOO_LARGE`, a body that is not JSON → 400 `M_NOT_JSON`, JSON of
//! the wrong shape → 400 `M_BAD_JSON`, a handler that could not store the events → 500
//! `M_UNKNOWN` (the homeserver retries the transaction later). Every answer has a JSON body
//! with a Content-Length (Synapse retries a transaction whose answer has none).

use std::sync::Arc;

use async_trait::async_trait;
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde_json::{Value, json};

/// One transaction pushed by the homeserver.
#[derive(Debug, Clone, Default)]
pub struct Transaction {
    /// The homeserver's transaction ID (the key of idempotency).
    pub id: String,
    /// Timeline events, oldest first.
    pub events: Vec<Value>,
    /// Ephemeral events (typing, receipts), when the registration asks for them.
    pub ephemeral: Vec<Value>,
}

/// Why a transaction was not taken.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct TxnError(pub String);

/// What the server asks of the adapter.
#[async_trait]
pub trait Handler: Send + Sync + 'static {
    /// Takes a transaction: returns `Ok` only when every event in it that is to be bridged is
    /// durably stored (or the transaction was already taken: a retry).
    async fn transaction(&self, txn: Transaction) -> Result<(), TxnError>;
    /// Whether a user ID in the appservice's namespace is one of ours (the homeserver then
    /// considers it to exist).
    async fn user_exists(&self, user_id: &str) -> bool;
    /// Whether an alias in the appservice's namespace names a room we provide (a portal);
    /// when true, the room has been created with that alias before returning.
    async fn alias_exists(&self, alias: &str) -> bool;
}

struct ServerState {
    handler: Arc<dyn Handler>,
    hs_token: String,
    max_bytes: usize,
}

/// The routes of the appservice API (v1 paths, and the legacy unprefixed ones).
pub fn router(handler: Arc<dyn Handler>, hs_token: String, max_bytes: usize) -> Router {
    let state = Arc::new(ServerState {
        handler,
        hs_token,
        max_bytes,
    });
    Router::new()
        .route("/_matrix/app/v1/transactions/{txn}", put(transaction))
        .route("/transactions/{txn}", put(transaction))
        .route("/_matrix/app/v1/users/{user}", get(user))
        .route("/users/{user}", get(user))
        .route("/_matrix/app/v1/rooms/{alias}", get(alias))
        .route("/rooms/{alias}", get(alias))
        .route("/_matrix/app/v1/ping", post(ping))
        .fallback(unknown)
        .with_state(state)
}

/// A Matrix error answer.
fn error(status: StatusCode, errcode: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!({ "errcode": errcode, "error": message })),
    )
        .into_response()
}

fn ok() -> Response {
    (StatusCode::OK, axum::Json(json!({}))).into_response()
}

/// Checks the homeserver's token: `Authorization: Bearer …`, or the deprecated
/// `access_token` query parameter.
fn authorise(state: &ServerState, headers: &HeaderMap, uri: &Uri) -> Result<(), Box<Response>> {
    let from_header = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let from_query = uri.query().and_then(|q| {
        q.split('&')
            .find_map(|pair| pair.strip_prefix("access_token="))
    });
    match from_header.or(from_query) {
        None => {
            tracing::warn!(path = %uri.path(), "appservice request without the homeserver's token");
            Err(Box::new(error(
                StatusCode::UNAUTHORIZED,
                "M_UNAUTHORIZED",
                "missing the homeserver token",
            )))
        }
        Some(token) if constant_time_eq(token.as_bytes(), state.hs_token.as_bytes()) => Ok(()),
        Some(_) => {
            tracing::warn!(path = %uri.path(), "appservice request with a wrong token");
            Err(Box::new(error(
                StatusCode::FORBIDDEN,
                "M_FORBIDDEN",
                "the homeserver token is wrong",
            )))
        }
    }
}

/// Compares two secrets in time independent of where they differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn transaction(
    State(state): State<Arc<ServerState>>,
    Path(txn): Path<String>,
    headers: HeaderMap,
    uri: Uri,
    body: Body,
) -> Response {
    if let Err(refused) = authorise(&state, &headers, &uri) {
        return *refused;
    }
    let bytes = match axum::body::to_bytes(body, state.max_bytes).await {
        Ok(bytes) => bytes,
        Err(e) => {
            tracing::warn!(%txn, error = %e, limit = state.max_bytes, "transaction refused: too large or unreadable");
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "M_TOO_LARGE",
                &format!("transactions are limited to {} bytes", state.max_bytes),
            );
        }
    };
    let parsed = match parse_transaction(&txn, &bytes) {
        Ok(parsed) => parsed,
        Err((errcode, message)) => {
            tracing::warn!(%txn, %errcode, %message, "transaction refused");
            return error(StatusCode::BAD_REQUEST, errcode, &message);
        }
    };
    match state.handler.transaction(parsed).await {
        Ok(()) => ok(),
        Err(e) => {
            tracing::error!(%txn, error = %e, "transaction not stored; the homeserver will retry it");
            error(StatusCode::INTERNAL_SERVER_ERROR, "M_UNKNOWN", &e.0)
        }
    }
}

/// Reads a transaction body: `{"events": [...], "ephemeral": [...]}` (ephemeral also under its
/// MSC2409 name). Each event stays raw JSON, so that one malformed event fails only itself.
pub fn parse_transaction(id: &str, body: &[u8]) -> Result<Transaction, (&'static str, String)> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ("M_NOT_JSON", format!("the body is not JSON: {e}")))?;
    let Value::Object(mut object) = value else {
        return Err(("M_BAD_JSON", "the body is not a JSON object".into()));
    };
    let mut list = |key: &str| -> Result<Vec<Value>, (&'static str, String)> {
        match object.remove(key) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(items)) => Ok(items),
            Some(_) => Err(("M_BAD_JSON", format!("`{key}` is not a list"))),
        }
    };
    let events = list("events")?;
    let mut ephemeral = list("ephemeral")?;
    let unstable = list("de.sorunome.msc2409.ephemeral")?;
    // A homeserver told both keys sends both copies: read the stable one when it is there.
    if ephemeral.is_empty() {
        ephemeral = unstable;
    }
    if !object.is_empty() {
        // To-device messages and device lists (MSC2409, MSC3202): for end-to-end encryption,
        // which the bridge does not do.
        let keys: Vec<&String> = object.keys().collect();
        tracing::trace!(txn = %id, ?keys, "transaction fields not read");
    }
    Ok(Transaction {
        id: id.to_owned(),
        events,
        ephemeral,
    })
}

async fn user(
    State(state): State<Arc<ServerState>>,
    Path(user): Path<String>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    if let Err(refused) = authorise(&state, &headers, &uri) {
        return *refused;
    }
    if state.handler.user_exists(&user).await {
        ok()
    } else {
        error(StatusCode::NOT_FOUND, "M_NOT_FOUND", "no such user here")
    }
}

async fn alias(
    State(state): State<Arc<ServerState>>,
    Path(alias): Path<String>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    if let Err(refused) = authorise(&state, &headers, &uri) {
        return *refused;
    }
    if state.handler.alias_exists(&alias).await {
        ok()
    } else {
        error(StatusCode::NOT_FOUND, "M_NOT_FOUND", "no such room here")
    }
}

async fn ping(State(state): State<Arc<ServerState>>, headers: HeaderMap, uri: Uri) -> Response {
    if let Err(refused) = authorise(&state, &headers, &uri) {
        return *refused;
    }
    ok()
}

async fn unknown(uri: Uri) -> Response {
    tracing::debug!(path = %uri.path(), "unknown appservice endpoint");
    error(
        StatusCode::NOT_FOUND,
        "M_UNRECOGNIZED",
        "unrecognised request",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transactions_keep_each_event_raw() {
        let body = br#"{"events": [{"type": "m.room.message"}, 7, "x"],
                        "de.sorunome.msc2409.ephemeral": [{"type": "m.typing"}]}"#;
        let txn = parse_transaction("5", body).expect("parses");
        assert_eq!(txn.events.len(), 3);
        assert_eq!(txn.ephemeral.len(), 1);
        assert_eq!(
            parse_transaction("5", b"{").err().map(|e| e.0),
            Some("M_NOT_JSON")
        );
        assert_eq!(
            parse_transaction("5", b"[]").err().map(|e| e.0),
            Some("M_BAD_JSON")
        );
        assert_eq!(
            parse_transaction("5", br#"{"events": {}}"#)
                .err()
                .map(|e| e.0),
            Some("M_BAD_JSON")
        );
        assert!(parse_transaction("5", b"{}").is_ok_and(|t| t.events.is_empty()));
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
    }
}
