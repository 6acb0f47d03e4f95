//! The MIMI HTTPS client: calls a peer provider's endpoints over mutually authenticated TLS,
//! with `Host: PEER` and `From: mimi@US` (protocol-06 §4.1), and retries notify fan-out with
//! backoff, honouring `Retry-After`.

use std::net::SocketAddr;
use std::time::Duration;

use bridge_core::Backoff;
use reqwest::header::{self, HeaderValue};
use tracing::{debug, warn};

use rustls::pki_types::CertificateDer;

use super::server::BODY_CONTENT_TYPE;
use super::tls::certificate_names;
use crate::wire::directory::{Directory, DirectoryError, WELL_KNOWN_PATH};
use crate::wire::{
    GroupInfoRequest, GroupInfoResponse, IdentifierUri, KeyMaterialRequest, KeyMaterialResponse,
    NotifyBody, SubmitMessageRequest, SubmitMessageResponse, UpdateRequest, UpdateRoomResponse,
    WireBody, WireError,
};

/// The longest directory document or downloaded asset we read.
const MAX_DIRECTORY_LEN: usize = 64 << 10;
const MAX_ASSET_LEN: usize = 100 << 20;

/// Why a call to a peer failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// No answer: connection, TLS handshake (for example our certificate refused) or timeout.
    #[error("transport: {0}")]
    Transport(String),
    /// The server's certificate does not name the provider we meant to call (not retried).
    #[error("server identity: {0}")]
    ServerIdentity(String),
    /// The peer answered with an error status.
    #[error("HTTP {status}: {reason}")]
    Status {
        /// The status code.
        status: u16,
        /// The body of the answer (the server's reason), cut to 512 bytes.
        reason: String,
        /// The `Retry-After` delay, when given in seconds.
        retry_after: Option<Duration>,
    },
    /// The answer is not a valid body.
    #[error("undecodable response: {0}")]
    Decode(WireError),
    /// Our request cannot be encoded.
    #[error("cannot encode the request: {0}")]
    Encode(WireError),
    /// The peer's directory is unusable.
    #[error("directory: {0}")]
    Directory(#[from] DirectoryError),
    /// The peer does not offer the endpoint (not in its directory).
    #[error("the peer's directory has no {0} endpoint")]
    NoEndpoint(&'static str),
}

impl ClientError {
    /// Whether trying again later may succeed: no answer, 408, 425, 429 and 5xx but 501.
    pub fn is_retryable(&self) -> bool {
        match self {
            ClientError::Transport(_) => true,
            ClientError::Status { status, .. } => {
                matches!(status, 408 | 425 | 429) || (*status >= 500 && *status != 501)
            }
            _ => false,
        }
    }

    /// The delay the peer asked for.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ClientError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

fn transport(error: reqwest::Error) -> ClientError {
    // The chain holds the useful part (for example the TLS alert).
    let mut text = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    ClientError::Transport(text)
}

/// How notify fan-out retries: up to `attempts` tries, waiting a jittered exponential backoff
/// from `min_delay` to `max_delay`, or the peer's `Retry-After` (giving up at once when that is
/// longer than `max_delay`: the caller's queue tries again later).
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Tries in all (at least one).
    pub attempts: u32,
    /// The first backoff step.
    pub min_delay: Duration,
    /// The longest wait.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 6,
            min_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// Runs `call` until it succeeds, fails for good, or the attempts are spent.
    pub async fn run<T, F, Fut>(&self, mut call: F) -> Result<T, ClientError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, ClientError>>,
    {
        let mut backoff = Backoff::new(self.min_delay, self.max_delay);
        let mut attempt = 1;
        loop {
            match call().await {
                Ok(value) => return Ok(value),
                Err(error) if error.is_retryable() && attempt < self.attempts.max(1) => {
                    let delay = match error.retry_after() {
                        Some(asked) if asked > self.max_delay => return Err(error),
                        Some(asked) => asked,
                        None => backoff.next_delay(),
                    };
                    debug!(%error, attempt, ?delay, "MIMI call failed, retrying");
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                Err(error) => return Err(error),
            }
        }
    }
}

/// A peer provider: its domain (the `Host` of our requests) and its directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// The provider domain (`b.example`).
    pub domain: String,
    /// Its endpoints.
    pub directory: Directory,
}

/// What [`MimiClient::new`] needs.
#[derive(Debug)]
pub struct ClientOptions {
    /// Our provider domain (`From: mimi@DOMAIN`).
    pub local_domain: String,
    /// TLS: the CA roots and our client certificate ([`super::tls::client_config`]).
    pub tls: rustls::ClientConfig,
    /// Timeout of one call.
    pub timeout: Duration,
    /// Fixed addresses for domains (tests on loopback); the port of the URL is used.
    pub resolve: Vec<(String, SocketAddr)>,
}

/// Calls peers' MIMI endpoints.
#[derive(Debug, Clone)]
pub struct MimiClient {
    http: reqwest::Client,
    from: HeaderValue,
}

impl MimiClient {
    /// A client speaking for `options.local_domain`.
    pub fn new(options: ClientOptions) -> Result<Self, ClientError> {
        let from = HeaderValue::from_str(&format!("mimi@{}", options.local_domain))
            .map_err(|_| ClientError::Transport("the local domain is not a header value".into()))?;
        let mut builder = reqwest::Client::builder()
            .tls_backend_preconfigured(options.tls)
            .timeout(options.timeout)
            .tls_info(true)
            .redirect(reqwest::redirect::Policy::none());
        for (domain, address) in &options.resolve {
            builder = builder.resolve(domain, *address);
        }
        let http = builder.build().map_err(transport)?;
        Ok(Self { http, from })
    }

    /// Sends `request` to `peer_domain` and checks that the server's certificate authenticates
    /// that domain (protocol-06 §4.1), not only the host of the directory's URL.
    async fn send(
        &self,
        request: reqwest::RequestBuilder,
        peer_domain: &str,
    ) -> Result<reqwest::Response, ClientError> {
        let response = request.send().await.map_err(transport)?;
        let certificate = response
            .extensions()
            .get::<reqwest::tls::TlsInfo>()
            .and_then(|info| info.peer_certificate())
            .ok_or_else(|| ClientError::ServerIdentity("no server certificate".into()))?;
        certificate_names(&CertificateDer::from(certificate), peer_domain).map_err(|reason| {
            ClientError::ServerIdentity(format!("the server is not {peer_domain}: {reason}"))
        })?;
        Ok(response)
    }

    fn request(
        &self,
        method: reqwest::Method,
        peer_domain: &str,
        url: &str,
    ) -> reqwest::RequestBuilder {
        let mut request = self
            .http
            .request(method, url)
            .header(header::FROM, self.from.clone());
        if let Ok(host) = HeaderValue::from_str(peer_domain) {
            request = request.header(header::HOST, host);
        }
        request
    }

    /// Fetches and checks the directory of `peer_domain`, served at `origin`
    /// (`https://b.example`, or with a port).
    pub async fn fetch_directory(
        &self,
        peer_domain: &str,
        origin: &str,
    ) -> Result<Peer, ClientError> {
        let url = format!("{}{WELL_KNOWN_PATH}", origin.trim_end_matches('/'));
        let request = self.request(reqwest::Method::GET, peer_domain, &url);
        let response = self.send(request, peer_domain).await?;
        let body = read_success(response, MAX_DIRECTORY_LEN).await?;
        Ok(Peer {
            domain: peer_domain.to_ascii_lowercase(),
            directory: Directory::parse(&body)?,
        })
    }

    async fn post<Req: WireBody, Resp: WireBody>(
        &self,
        peer: &Peer,
        url: &str,
        body: &Req,
    ) -> Result<Resp, ClientError> {
        let bytes = body.encode().map_err(ClientError::Encode)?;
        let request = self
            .request(reqwest::Method::POST, &peer.domain, url)
            .header(header::CONTENT_TYPE, BODY_CONTENT_TYPE)
            .body(bytes);
        let response = self.send(request, &peer.domain).await?;
        let answer = read_success(response, Resp::MAX_LEN).await?;
        Resp::decode(&answer).map_err(ClientError::Decode)
    }

    /// `POST /keyMaterial/{targetUser}` (§5.2).
    pub async fn key_material(
        &self,
        peer: &Peer,
        target_user: &IdentifierUri,
        request: &KeyMaterialRequest,
    ) -> Result<KeyMaterialResponse, ClientError> {
        self.post(peer, &peer.directory.key_material_url(target_user), request)
            .await
    }

    /// `POST /update/{roomId}` (§5.3).
    pub async fn update(
        &self,
        peer: &Peer,
        room: &IdentifierUri,
        request: &UpdateRequest,
    ) -> Result<UpdateRoomResponse, ClientError> {
        self.post(peer, &peer.directory.update_url(room), request)
            .await
    }

    /// `POST /submitMessage/{roomId}` (§5.4).
    pub async fn submit_message(
        &self,
        peer: &Peer,
        room: &IdentifierUri,
        request: &SubmitMessageRequest,
    ) -> Result<SubmitMessageResponse, ClientError> {
        self.post(peer, &peer.directory.submit_message_url(room), request)
            .await
    }

    /// `POST /groupInfo/{roomId}` (§5.6).
    pub async fn group_info(
        &self,
        peer: &Peer,
        room: &IdentifierUri,
        request: &GroupInfoRequest,
    ) -> Result<GroupInfoResponse, ClientError> {
        self.post(peer, &peer.directory.group_info_url(room), request)
            .await
    }

    /// `POST /notify/{roomId}` (§5.5), once: success is 201.
    pub async fn notify(
        &self,
        peer: &Peer,
        room: &IdentifierUri,
        body: &NotifyBody,
    ) -> Result<(), ClientError> {
        let bytes = body.encode().map_err(ClientError::Encode)?;
        self.notify_bytes(peer, room, bytes).await
    }

    async fn notify_bytes(
        &self,
        peer: &Peer,
        room: &IdentifierUri,
        bytes: Vec<u8>,
    ) -> Result<(), ClientError> {
        let request = self
            .request(
                reqwest::Method::POST,
                &peer.domain,
                &peer.directory.notify_url(room),
            )
            .header(header::CONTENT_TYPE, BODY_CONTENT_TYPE)
            .body(bytes);
        let response = self.send(request, &peer.domain).await?;
        if response.status() == reqwest::StatusCode::CREATED {
            Ok(())
        } else {
            Err(status_error(response).await)
        }
    }

    /// `POST /notify/{roomId}` with retries under `policy`: every try sends the same bytes, so
    /// the follower recognises a retry of a body it already processed.
    pub async fn notify_with_retry(
        &self,
        peer: &Peer,
        room: &IdentifierUri,
        body: &NotifyBody,
        policy: &RetryPolicy,
    ) -> Result<(), ClientError> {
        let bytes = body.encode().map_err(ClientError::Encode)?;
        self.notify_encoded_with_retry(peer, room, bytes, policy)
            .await
    }

    /// [`MimiClient::notify_with_retry`] with a body already encoded (for example the
    /// concatenation of several encoded bodies about `room`, which is one body too).
    pub async fn notify_encoded_with_retry(
        &self,
        peer: &Peer,
        room: &IdentifierUri,
        bytes: Vec<u8>,
        policy: &RetryPolicy,
    ) -> Result<(), ClientError> {
        let outcome = policy
            .run(|| self.notify_bytes(peer, room, bytes.clone()))
            .await;
        if let Err(error) = &outcome {
            warn!(peer = %peer.domain, %room, %error, "MIMI notify failed");
        }
        outcome
    }

    /// `GET url` from provider `peer_domain` (its certificate must name it): an asset it
    /// hosts, at most `limit` bytes.
    pub async fn download(
        &self,
        peer_domain: &str,
        url: &str,
        limit: usize,
    ) -> Result<Vec<u8>, ClientError> {
        let request = self.request(reqwest::Method::GET, peer_domain, url);
        let response = self.send(request, peer_domain).await?;
        read_success(response, limit).await
    }

    /// `GET /proxyDownload/{downloadUrl}` (§5.10.2): the asset bytes.
    pub async fn proxy_download(
        &self,
        peer: &Peer,
        download_url: &str,
    ) -> Result<Vec<u8>, ClientError> {
        let url = peer
            .directory
            .proxy_download_url(download_url)
            .ok_or(ClientError::NoEndpoint("proxyDownload"))?;
        let request = self.request(reqwest::Method::GET, &peer.domain, &url);
        let response = self.send(request, &peer.domain).await?;
        read_success(response, MAX_ASSET_LEN).await
    }
}

/// The `Retry-After` delay, when given in seconds (an HTTP date is ignored: backoff applies).
fn retry_after(response: &reqwest::Response) -> Option<Duration> {
    response
        .headers()
        .get(header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

async fn status_error(response: reqwest::Response) -> ClientError {
    let status = response.status().as_u16();
    let retry_after = retry_after(&response);
    let reason = match read_limited(response, 512).await {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(_) => String::new(),
    };
    ClientError::Status {
        status,
        reason,
        retry_after,
    }
}

/// The body of a 200 answer, at most `limit` bytes; an error for any other status.
async fn read_success(response: reqwest::Response, limit: usize) -> Result<Vec<u8>, ClientError> {
    if response.status() != reqwest::StatusCode::OK {
        return Err(status_error(response).await);
    }
    let body = read_limited(response, limit + 1).await?;
    if body.len() > limit {
        return Err(ClientError::Decode(WireError::TooLarge {
            len: body.len(),
            max: limit,
        }));
    }
    Ok(body)
}

/// Reads up to `limit` bytes of the body (stopping there).
async fn read_limited(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<Vec<u8>, ClientError> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(transport)? {
        let room = limit.saturating_sub(body.len());
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() >= limit {
            break;
        }
    }
    Ok(body)
}
