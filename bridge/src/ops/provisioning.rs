//! The provisioning API, under `/api/v1`, for tools that link rooms while the bridge runs:
//!
//! | request | does |
//! |---|---|
//! | `GET /rooms` | every room with its links and the events waiting in each outbox |
//! | `POST /rooms/{room}/links` `{"adapter": …, "remote": …}` | links a native room (201; 200 if it already is, in this room) |
//! | `DELETE /links/{adapter}/{remote}` | unlinks it (204) |
//! | `GET /dead-letters` | the events given up on, with the last error |
//! | `POST /dead-letters/retry` | puts every dead letter back into its outbox |
//!
//! Every request needs `Authorization: Bearer <provisioning_token>` (401 otherwise); without a
//! token in the configuration the API answers 404. Errors are JSON: `{"error": "…"}`. Changes
//! go through the core, which persists them before answering.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{ConnectInfo, FromRequestParts, Path, State};
use axum::http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use bridge_config::SecretRef;
use bridge_core::{AdapterId, RemoteRoomId, RoomId};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::Ops;
use crate::manage::ManageError;

/// The routes.
pub(super) fn router() -> Router<Arc<Ops>> {
    Router::new()
        .route("/api/v1/rooms", get(list_rooms))
        .route("/api/v1/rooms/{room}/links", post(add_link))
        .route("/api/v1/links/{adapter}/{*remote}", delete(remove_link))
        .route("/api/v1/dead-letters", get(dead_letters))
        .route("/api/v1/dead-letters/retry", post(retry_dead_letters))
}

/// The bearer token. Never printed.
pub(super) struct Token(Vec<u8>);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl Token {
    /// Reads the configured secret (from the environment or a file when it says so).
    pub(super) fn resolve(secret: &SecretRef) -> anyhow::Result<Self> {
        let path = "bridge.provisioning_token";
        let token = secret
            .resolve(path)
            .map_err(|d| anyhow::anyhow!("{}: {}", d.path, d.message))?;
        let min = bridge_config::BridgeSection::MIN_TOKEN_LEN;
        anyhow::ensure!(
            token.len() >= min,
            "{path}: the token is too short ({} bytes); use at least {min} random characters, \
             e.g. the output of `openssl rand -hex 32`",
            token.len()
        );
        Ok(Self(token.into_bytes()))
    }

    /// Compares in a time that depends on the length of `given` only, never on where it
    /// differs from the token (so the token cannot be guessed byte by byte).
    fn matches(&self, given: &[u8]) -> bool {
        let expected = &self.0;
        if expected.is_empty() {
            return false;
        }
        let mut diff = u8::from(given.len() != expected.len());
        for (i, byte) in given.iter().enumerate() {
            diff |= byte ^ expected[i % expected.len()];
        }
        std::hint::black_box(diff) == 0
    }
}

/// A JSON error: `{"error": message}` with a status.
#[derive(Debug)]
pub(super) struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    pub(super) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    fn path(rejection: PathRejection) -> Self {
        Self::bad_request(rejection.body_text())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let unauthorized = self.status == StatusCode::UNAUTHORIZED;
        let mut response = (self.status, Json(json!({ "error": self.message }))).into_response();
        if unauthorized {
            response.headers_mut().insert(
                WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"bridge\""),
            );
        }
        response
    }
}

/// The request carries the right bearer token (an extractor: put it first).
pub(super) struct Authorized;

impl FromRequestParts<Arc<Ops>> for Authorized {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, ops: &Arc<Ops>) -> Result<Self, ApiError> {
        let Some(token) = &ops.token else {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "the provisioning API is off: set provisioning_token in [bridge]",
            ));
        };
        let given = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, credentials)| credentials.trim());
        match given {
            Some(given) if token.matches(given.as_bytes()) => Ok(Self),
            _ => {
                let peer = parts
                    .extensions
                    .get::<ConnectInfo<SocketAddr>>()
                    .map(|info| info.0.to_string())
                    .unwrap_or_default();
                tracing::warn!(
                    %peer,
                    method = %parts.method,
                    path = parts.uri.path(),
                    token_given = given.is_some(),
                    "provisioning API: request without the right bearer token refused"
                );
                Err(ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "missing or wrong bearer token (Authorization: Bearer <provisioning_token>)",
                ))
            }
        }
    }
}

impl From<ManageError> for ApiError {
    fn from(e: ManageError) -> Self {
        let status = match &e {
            ManageError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ManageError::NotFound(_) => StatusCode::NOT_FOUND,
            ManageError::Conflict(_) => StatusCode::CONFLICT,
            ManageError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Self::new(status, e.message())
    }
}

/// A room in `GET /rooms`.
#[derive(Debug, Serialize)]
struct RoomView {
    room: RoomId,
    name: Option<String>,
    links: Vec<LinkView>,
}

/// A link in `GET /rooms`.
#[derive(Debug, Serialize)]
struct LinkView {
    adapter: AdapterId,
    remote: RemoteRoomId,
    /// Events waiting in its outbox.
    outbox: u64,
    /// Declared in the configuration file (the API does not remove it).
    from_config: bool,
}

/// The answer of `GET /rooms`.
#[derive(Debug, Serialize)]
struct Rooms {
    rooms: Vec<RoomView>,
}

/// `GET /rooms`.
async fn list_rooms(_: Authorized, State(ops): State<Arc<Ops>>) -> Json<Rooms> {
    let rooms: Vec<RoomView> = ops
        .manager
        .rooms()
        .into_iter()
        .map(|room| RoomView {
            links: room
                .links
                .into_iter()
                .map(|l| LinkView {
                    adapter: l.link.adapter,
                    remote: l.link.remote,
                    outbox: l.outbox,
                    from_config: l.from_config,
                })
                .collect(),
            room: room.room,
            name: room.name,
        })
        .collect();
    Json(Rooms { rooms })
}

/// The body of `POST /rooms/{room}/links`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewLink {
    adapter: String,
    remote: String,
}

/// The answer of `POST /rooms/{room}/links`.
#[derive(Debug, Serialize)]
struct LinkAnswer {
    room: RoomId,
    adapter: AdapterId,
    remote: RemoteRoomId,
    /// False when it was already linked to this room.
    created: bool,
}

/// `POST /rooms/{room}/links`: 201 linked; 200 already linked to this room; 400 bad room ID or
/// body; 404 unknown adapter; 409 linked to another room.
async fn add_link(
    _: Authorized,
    State(ops): State<Arc<Ops>>,
    room: Result<Path<String>, PathRejection>,
    body: Bytes,
) -> Result<(StatusCode, Json<LinkAnswer>), ApiError> {
    let Path(room) = room.map_err(ApiError::path)?;
    let new: NewLink = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(format!(
            "expected a JSON object {{\"adapter\": \"…\", \"remote\": \"…\"}}: {e}"
        ))
    })?;
    let (room, link, created) = ops.manager.link(&room, &new.adapter, &new.remote).await?;
    if created {
        tracing::info!(%link, %room, "provisioning API: linked");
    }
    let answer = Json(LinkAnswer {
        room,
        adapter: link.adapter,
        remote: link.remote,
        created,
    });
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, answer))
}

/// `DELETE /links/{adapter}/{remote}`: 204 unlinked; 404 not linked; 409 declared in the
/// configuration file.
async fn remove_link(
    _: Authorized,
    State(ops): State<Arc<Ops>>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    let Path((adapter, remote)) = path.map_err(ApiError::path)?;
    let room = ops.manager.unlink(&adapter, &remote).await?;
    tracing::info!(%adapter, %remote, %room, "provisioning API: unlinked");
    Ok(StatusCode::NO_CONTENT)
}

/// A dead letter in `GET /dead-letters`.
#[derive(Debug, Serialize)]
struct DeadLetterView {
    adapter: AdapterId,
    remote: RemoteRoomId,
    /// The neutral room of the event (unknown if the event is gone).
    room: Option<RoomId>,
    event: String,
    kind: Option<&'static str>,
    error: String,
    attempts: u32,
    /// When it was given up, in milliseconds since the Unix epoch.
    at_ms: u64,
}

/// The answer of `GET /dead-letters`.
#[derive(Debug, Serialize)]
struct DeadLetters {
    dead_letters: Vec<DeadLetterView>,
}

/// `GET /dead-letters`.
async fn dead_letters(
    _: Authorized,
    State(ops): State<Arc<Ops>>,
) -> Result<Json<DeadLetters>, ApiError> {
    let letters: Vec<DeadLetterView> = ops
        .manager
        .dead_letters()?
        .into_iter()
        .map(|info| DeadLetterView {
            adapter: info.letter.link.adapter,
            remote: info.letter.link.remote,
            room: info.room,
            event: info.letter.event.to_string(),
            kind: info.kind,
            error: info.letter.error,
            attempts: info.letter.attempts,
            at_ms: info.letter.at_ms,
        })
        .collect();
    Ok(Json(DeadLetters {
        dead_letters: letters,
    }))
}

/// `POST /dead-letters/retry`.
async fn retry_dead_letters(
    _: Authorized,
    State(ops): State<Arc<Ops>>,
) -> Result<Json<Value>, ApiError> {
    let retried = ops.manager.retry_dead_letters(None).await?;
    tracing::info!(
        retried,
        "provisioning API: dead letters put back into their outboxes"
    );
    Ok(Json(json!({ "retried": retried })))
}

#[cfg(test)]
mod tests {
    use super::Token;

    #[test]
    fn the_token_matches_exactly() {
        let token = Token(b"0123456789abcdef".to_vec());
        assert!(token.matches(b"0123456789abcdef"));
        for wrong in [
            &b""[..],
            b"0123456789abcde",
            b"0123456789abcdef0",
            b"0123456789abcdeF",
            b"1123456789abcdef",
            b"0123456789abcdef0123456789abcdef",
        ] {
            assert!(!token.matches(wrong), "{wrong:?}");
        }
        assert!(!Token(Vec::new()).matches(b""));
    }
}
