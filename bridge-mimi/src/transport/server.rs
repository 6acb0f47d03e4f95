//! The MIMI HTTPS server: axum routes for the endpoints over mutually authenticated TLS.
//!
//! Every request is authenticated before its body is read: the `From: mimi@DOMAIN` header must
//! be a domain the TLS client certificate authenticates (else 403) and the `Host` header our
//! domain (else 421). Bodies over the endpoint's limit are refused with 413, undecodable ones
//! with 400 and the reason. Nothing a peer sends can panic the server.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use rustls::pki_types::CertificateDer;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn};

use super::provider::{
    DownloadedAsset, NotifyDedupe, NotifyDigest, PeerDomain, Provider, ProviderError,
    RecentNotifies,
};
use super::tls::certificate_names;
use crate::wire::directory::{Directory, WELL_KNOWN_PATH};
use crate::wire::{
    GroupInfoRequest, IdentifierUri, KeyMaterialRequest, NotifyBody, SubmitMessageRequest,
    UpdateRequest, WireBody,
};

/// The media type of our TLS-PL bodies: protocol-06 defines none (docs/mimi.md).
pub const BODY_CONTENT_TYPE: &str = "application/octet-stream";

/// How long a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a peer may take to send the request headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);

/// What the server needs besides the [`Provider`].
#[derive(Clone)]
pub struct ServerOptions {
    /// Our provider domain: the `Host` every request must name (`a.example`).
    pub local_domain: String,
    /// The origin our directory points at (`https://mimi.a.example:8443`).
    pub origin: String,
    /// Which notify bodies were already processed.
    pub dedupe: Arc<dyn NotifyDedupe>,
}

impl std::fmt::Debug for ServerOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerOptions")
            .field("local_domain", &self.local_domain)
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

impl ServerOptions {
    /// Options for `local_domain` served at `origin`, with an in-memory [`RecentNotifies`].
    pub fn new(local_domain: impl Into<String>, origin: impl Into<String>) -> Self {
        Self {
            local_domain: local_domain.into().to_ascii_lowercase(),
            origin: origin.into(),
            dedupe: Arc::new(RecentNotifies::default()),
        }
    }
}

/// The verified client certificate of the connection a request came on.
#[derive(Debug, Clone)]
pub struct PeerCertificate(pub Arc<CertificateDer<'static>>);

struct ServerState {
    provider: Arc<dyn Provider>,
    options: ServerOptions,
    directory: Vec<u8>,
    /// Notify bodies being processed: an identical one arriving meanwhile is told to retry.
    notifies_in_flight: parking_lot::Mutex<std::collections::HashSet<NotifyDigest>>,
}

/// Removes a digest from the in-flight set when the processing ends, however it ends.
struct InFlight<'a> {
    state: &'a ServerState,
    digest: NotifyDigest,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.state.notifies_in_flight.lock().remove(&self.digest);
    }
}

/// A refusal: status and reason, logged and sent as text.
struct Refusal(StatusCode, String, Option<Duration>);

impl Refusal {
    fn new(status: StatusCode, reason: impl Into<String>) -> Self {
        Self(status, reason.into(), None)
    }
}

impl From<ProviderError> for Refusal {
    fn from(error: ProviderError) -> Self {
        let status =
            StatusCode::from_u16(error.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let retry_after = match &error {
            ProviderError::Unavailable { retry_after, .. } => *retry_after,
            _ => None,
        };
        Self(status, error.to_string(), retry_after)
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let Refusal(status, reason, retry_after) = self;
        let mut response = (status, reason).into_response();
        if let Some(after) = retry_after {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(after.as_secs().max(1)),
            );
        }
        response
    }
}

/// The routes of the endpoints, dispatching to `provider`. Serve them with [`serve`] (which
/// attaches the [`PeerCertificate`] every route requires).
pub fn router(provider: Arc<dyn Provider>, options: ServerOptions) -> Router {
    let directory = serde_json::to_vec(&Directory::for_origin(&options.origin)).unwrap_or_default();
    let state = Arc::new(ServerState {
        provider,
        options,
        directory,
        notifies_in_flight: parking_lot::Mutex::new(std::collections::HashSet::new()),
    });
    Router::new()
        .route(WELL_KNOWN_PATH, get(directory_handler))
        .route("/keyMaterial/{*target}", post(key_material))
        .route("/update/{*room}", post(update))
        .route("/submitMessage/{*room}", post(submit_message))
        .route("/notify/{*room}", post(notify))
        .route("/groupInfo/{*room}", post(group_info))
        .route("/proxyDownload/{*url}", get(proxy_download))
        .route("/assets/{id}", get(asset))
        .with_state(state)
}

/// A path parameter as a URI: the percent-decoded `mimi://...` URI (our form, one segment), or
/// the draft examples' form without scheme (`a.example/r/clubhouse`).
fn path_uri(raw: String) -> IdentifierUri {
    if raw.contains("://") || raw.starts_with("mimi:") {
        IdentifierUri(raw)
    } else {
        IdentifierUri(format!("mimi://{raw}"))
    }
}

/// The domain of a `From: mimi@DOMAIN` header (addr-spec, optionally in angle brackets).
fn from_domain(headers: &HeaderMap) -> Result<String, Refusal> {
    let value = headers
        .get(header::FROM)
        .ok_or_else(|| {
            Refusal::new(
                StatusCode::BAD_REQUEST,
                "no From header (expected mimi@DOMAIN)",
            )
        })?
        .to_str()
        .map_err(|_| Refusal::new(StatusCode::BAD_REQUEST, "the From header is not text"))?
        .trim();
    let address = match (value.find('<'), value.rfind('>')) {
        (Some(start), Some(end)) if start < end => &value[start + 1..end],
        _ => value,
    };
    match address.split_once('@') {
        Some(("mimi", domain)) if !domain.is_empty() => Ok(domain.to_ascii_lowercase()),
        _ => Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            format!("the From header {value:?} is not mimi@DOMAIN"),
        )),
    }
}

/// Authenticates a request: Host is us, From is a domain the client certificate names.
fn authenticate(state: &ServerState, request: &Request) -> Result<PeerDomain, Refusal> {
    let headers = request.headers();
    let host = headers
        .get(header::HOST)
        .and_then(|host| host.to_str().ok())
        .ok_or_else(|| Refusal::new(StatusCode::BAD_REQUEST, "no Host header"))?;
    let host = host.rsplit_once(':').map_or(host, |(name, port)| {
        if port.bytes().all(|b| b.is_ascii_digit()) {
            name
        } else {
            host
        }
    });
    if !host.eq_ignore_ascii_case(&state.options.local_domain) {
        return Err(Refusal::new(
            StatusCode::MISDIRECTED_REQUEST,
            format!("this is {}, not {host}", state.options.local_domain),
        ));
    }
    let domain = from_domain(headers)?;
    let certificate = request
        .extensions()
        .get::<PeerCertificate>()
        .ok_or_else(|| Refusal::new(StatusCode::FORBIDDEN, "no client certificate"))?;
    certificate_names(&certificate.0, &domain).map_err(|reason| {
        Refusal::new(
            StatusCode::FORBIDDEN,
            format!("From: mimi@{domain} refused: client certificate: {reason}"),
        )
    })?;
    Ok(PeerDomain(domain))
}

/// Reads a body of at most `limit` bytes.
async fn read_body(request: Request, limit: usize) -> Result<bytes::Bytes, Refusal> {
    let too_large = || {
        Refusal::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is over the limit of {limit} bytes"),
        )
    };
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|length| length.to_str().ok())
        .and_then(|length| length.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return Err(too_large());
    }
    axum::body::to_bytes(request.into_body(), limit)
        .await
        .map_err(|error| {
            if error.into_inner().is::<http_body_util::LengthLimitError>() {
                too_large()
            } else {
                Refusal::new(StatusCode::BAD_REQUEST, "the body could not be read")
            }
        })
}

fn decode<T: WireBody>(bytes: &[u8]) -> Result<T, Refusal> {
    T::decode(bytes).map_err(|error| match error {
        crate::wire::WireError::TooLarge { .. } => {
            Refusal::new(StatusCode::PAYLOAD_TOO_LARGE, error.to_string())
        }
        _ => Refusal::new(
            StatusCode::BAD_REQUEST,
            format!("undecodable body: {error}"),
        ),
    })
}

fn body_response<T: WireBody>(value: &T) -> Result<Response, Refusal> {
    let bytes = value.encode().map_err(|error| {
        Refusal::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("our response cannot be encoded: {error}"),
        )
    })?;
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, BODY_CONTENT_TYPE)],
        bytes,
    )
        .into_response())
}

/// Authenticates the peer, reads the body (at most `T::MAX_LEN` bytes) and decodes it.
async fn take<T: WireBody>(
    state: &ServerState,
    request: Request,
) -> Result<(PeerDomain, T), Refusal> {
    let peer = authenticate(state, &request)?;
    let body = read_body(request, T::MAX_LEN).await?;
    Ok((peer, decode::<T>(&body)?))
}

/// Logs a refusal and turns the outcome into a response.
fn respond(endpoint: &str, outcome: Result<Response, Refusal>) -> Response {
    match outcome {
        Ok(response) => response,
        Err(refusal) => {
            if refusal.0.is_server_error() {
                warn!(endpoint, status = refusal.0.as_u16(), reason = %refusal.1, "MIMI request failed");
            } else {
                info!(endpoint, status = refusal.0.as_u16(), reason = %refusal.1, "MIMI request refused");
            }
            refusal.into_response()
        }
    }
}

async fn directory_handler(State(state): State<Arc<ServerState>>, request: Request) -> Response {
    let outcome = authenticate(&state, &request).map(|_| {
        (
            [(header::CONTENT_TYPE, "application/json")],
            state.directory.clone(),
        )
            .into_response()
    });
    respond("directory", outcome)
}

async fn key_material(
    State(state): State<Arc<ServerState>>,
    Path(target): Path<String>,
    request: Request,
) -> Response {
    let outcome = async {
        let (peer, decoded) = take::<KeyMaterialRequest>(&state, request).await?;
        let target = path_uri(target);
        if target != decoded.target_user {
            return Err(Refusal::new(
                StatusCode::BAD_REQUEST,
                format!(
                    "the path names {target}, the body's targetUser {}",
                    decoded.target_user
                ),
            ));
        }
        let response = state.provider.key_material(&peer, target, decoded).await?;
        body_response(&response)
    };
    respond("keyMaterial", outcome.await)
}

async fn update(
    State(state): State<Arc<ServerState>>,
    Path(room): Path<String>,
    request: Request,
) -> Response {
    let outcome = async {
        let (peer, decoded) = take::<UpdateRequest>(&state, request).await?;
        let response = state
            .provider
            .update(&peer, path_uri(room), decoded)
            .await?;
        body_response(&response)
    };
    respond("update", outcome.await)
}

async fn submit_message(
    State(state): State<Arc<ServerState>>,
    Path(room): Path<String>,
    request: Request,
) -> Response {
    let outcome = async {
        let (peer, decoded) = take::<SubmitMessageRequest>(&state, request).await?;
        let response = state
            .provider
            .submit_message(&peer, path_uri(room), decoded)
            .await?;
        body_response(&response)
    };
    respond("submitMessage", outcome.await)
}

async fn group_info(
    State(state): State<Arc<ServerState>>,
    Path(room): Path<String>,
    request: Request,
) -> Response {
    let outcome = async {
        let (peer, decoded) = take::<GroupInfoRequest>(&state, request).await?;
        let response = state
            .provider
            .group_info(&peer, path_uri(room), decoded)
            .await?;
        body_response(&response)
    };
    respond("groupInfo", outcome.await)
}

/// The digest of a notify body from `peer` for `room` (see [`NotifyDigest`]).
pub fn notify_digest(peer: &str, room: &IdentifierUri, body: &[u8]) -> NotifyDigest {
    let mut hash = Sha256::new();
    hash.update(peer.as_bytes());
    hash.update([0]);
    hash.update(room.as_str().as_bytes());
    hash.update([0]);
    hash.update(body);
    hash.finalize().into()
}

async fn notify(
    State(state): State<Arc<ServerState>>,
    Path(room): Path<String>,
    request: Request,
) -> Response {
    let outcome = async {
        let peer = authenticate(&state, &request)?;
        let room = path_uri(room);
        if room.domain().as_deref() != Some(peer.as_str()) {
            return Err(Refusal::new(
                StatusCode::FORBIDDEN,
                format!("{peer} is not the hub of {room}: only the room's provider may notify"),
            ));
        }
        let body = read_body(request, NotifyBody::MAX_LEN).await?;
        let digest = notify_digest(peer.as_str(), &room, &body);
        if state.options.dedupe.seen(&digest).await {
            debug!(%peer, %room, "a notify retry, already processed");
            return Ok(StatusCode::CREATED.into_response());
        }
        let decoded = decode::<NotifyBody>(&body)?;
        if !state.notifies_in_flight.lock().insert(digest) {
            return Err(Refusal(
                StatusCode::SERVICE_UNAVAILABLE,
                "the same body is being processed: retry".into(),
                Some(Duration::from_secs(1)),
            ));
        }
        let _in_flight = InFlight {
            state: &state,
            digest,
        };
        state.provider.notify(&peer, room, decoded).await?;
        state.options.dedupe.record(digest).await;
        Ok(StatusCode::CREATED.into_response())
    };
    respond("notify", outcome.await)
}

async fn proxy_download(
    State(state): State<Arc<ServerState>>,
    Path(url): Path<String>,
    request: Request,
) -> Response {
    let outcome = async {
        let peer = authenticate(&state, &request)?;
        drop(request);
        let asset = state.provider.proxy_download(&peer, url).await?;
        Ok(asset_response(asset))
    };
    respond("proxyDownload", outcome.await)
}

/// `GET /assets/{id}`: a file we host (encrypted; see [`Provider::asset`]).
async fn asset(
    State(state): State<Arc<ServerState>>,
    Path(id): Path<String>,
    request: Request,
) -> Response {
    let outcome = async {
        let peer = authenticate(&state, &request)?;
        drop(request);
        let asset = state.provider.asset(&peer, id).await?;
        Ok(asset_response(asset))
    };
    respond("assets", outcome.await)
}

fn asset_response(asset: DownloadedAsset) -> Response {
    let content_type = asset
        .content_type
        .unwrap_or_else(|| "application/octet-stream".into());
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, content_type)],
        Body::from(asset.body),
    )
        .into_response()
}

/// Serves `router` on `listener` over TLS with `tls` (which must require client certificates,
/// see [`super::tls::server_config`]) until `shutdown` completes; open connections are then
/// closed.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    router: Router,
    shutdown: impl Future<Output = ()> + Send,
) {
    let acceptor = TlsAcceptor::from(tls);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let (tcp, remote) = tokio::select! {
            () = &mut shutdown => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    warn!(%error, "MIMI listener: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let acceptor = acceptor.clone();
        let router = router.clone();
        connections.spawn(async move {
            let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(error)) => {
                    info!(%remote, %error, "MIMI TLS handshake failed");
                    return;
                }
                Err(_) => {
                    info!(%remote, "MIMI TLS handshake timed out");
                    return;
                }
            };
            let Some(certificate) = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .map(|certificate| certificate.clone().into_owned())
            else {
                info!(%remote, "MIMI peer without a client certificate");
                return;
            };
            let service = router.layer(axum::Extension(PeerCertificate(Arc::new(certificate))));
            let served = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service))
                .await;
            if let Err(error) = served {
                debug!(%remote, %error, "MIMI connection ended with an error");
            }
        });
    }
    connections.abort_all();
}
