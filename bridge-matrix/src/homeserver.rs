//! The client-server API as the bridge uses it: ruma's typed requests, sent with reqwest, as the
//! appservice itself, as one of its ghosts (`?user_id=` identity assertion) or as a logged-in
//! relay bot. Media (upload and authenticated download) is streamed by hand, since ruma's media
//! requests hold the whole file in memory.

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bridge_core::{AdapterError, AttachmentBody};
use futures::TryStreamExt as _;
use ruma::api::auth_scheme::{AuthScheme, SendAccessToken};
use ruma::api::path_builder::PathBuilder;
use ruma::api::{
    AppserviceUserIdentity, IncomingResponse, OutgoingRequest, OutgoingRequestAppserviceExt as _,
    SupportedVersions,
};
use ruma::{OwnedMxcUri, UserId};
use serde::Deserialize;

/// How long one request may take (media transfers excepted: they have their own limit).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a media transfer may take.
const MEDIA_TIMEOUT: Duration = Duration::from_secs(300);

/// What went wrong talking to the homeserver.
#[derive(Debug, Clone, thiserror::Error)]
pub enum HsError {
    /// The request never got an answer (connection refused, reset, timed out).
    #[error("cannot reach the homeserver: {0}")]
    Network(String),
    /// The homeserver answered with a Matrix error.
    #[error("{status} {errcode}: {message}")]
    Matrix {
        /// The HTTP status.
        status: u16,
        /// The Matrix error code, e.g. `M_FORBIDDEN`.
        errcode: String,
        /// The homeserver's explanation.
        message: String,
        /// How long to wait before retrying (429 `retry_after_ms` or `Retry-After`).
        retry_after: Option<Duration>,
    },
    /// The request could not be built, or the answer not understood.
    #[error("{0}")]
    Invalid(String),
}

impl HsError {
    /// The Matrix error code, if the homeserver gave one.
    pub fn errcode(&self) -> Option<&str> {
        match self {
            Self::Matrix { errcode, .. } => Some(errcode),
            _ => None,
        }
    }

    /// The HTTP status, if the homeserver answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Matrix { status, .. } => Some(*status),
            _ => None,
        }
    }
}

impl From<HsError> for AdapterError {
    fn from(e: HsError) -> Self {
        match &e {
            HsError::Network(_) => AdapterError::transient(e.to_string()),
            HsError::Matrix {
                status,
                errcode,
                retry_after,
                ..
            } => match (*status, errcode.as_str()) {
                (429, _) | (_, "M_LIMIT_EXCEEDED") => AdapterError::Transient {
                    message: e.to_string(),
                    retry_after: *retry_after,
                },
                (401, _) | (_, "M_UNKNOWN_TOKEN" | "M_MISSING_TOKEN") => {
                    AdapterError::Auth(e.to_string())
                }
                (500.., _) => AdapterError::transient(e.to_string()),
                _ => AdapterError::Permanent(e.to_string()),
            },
            HsError::Invalid(_) => AdapterError::Permanent(e.to_string()),
        }
    }
}

/// Who a request is sent as.
#[derive(Debug, Clone, Copy)]
pub enum As<'a> {
    /// The appservice's own user (its `sender_localpart`), or the logged-in relay bot.
    Bot,
    /// A ghost, through identity assertion (appservice mode only).
    Ghost(&'a UserId),
}

/// A connection to one homeserver with one access token.
#[derive(Debug, Clone)]
pub struct Homeserver {
    http: reqwest::Client,
    base: String,
    token: String,
    /// Whether `token` is an appservice token (may assert identities).
    appservice: bool,
    versions: SupportedVersions,
    /// Requests that found the homeserver unreachable or unavailable so far (shared by the
    /// clones): see [`Homeserver::outages`].
    outages: Arc<AtomicU64>,
}

/// The body of a Matrix error answer.
#[derive(Deserialize, Default)]
struct ErrorBody {
    #[serde(default)]
    errcode: String,
    #[serde(default)]
    error: String,
    #[serde(default)]
    retry_after_ms: Option<u64>,
}

impl Homeserver {
    /// A client for `base` (e.g. `https://matrix.example.org`), authenticating with `token`
    /// (the registration's `as_token` when `appservice`, else a user's access token).
    pub fn new(base: &str, token: &str, appservice: bool) -> Result<Self, HsError> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .pool_idle_timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| HsError::Invalid(format!("cannot build the HTTP client: {e}")))?;
        // The versions this bridge speaks; every endpoint it uses exists since v1.11.
        let versions = SupportedVersions::from_parts(
            &["v1.11".to_owned(), "v1.12".to_owned()],
            &Default::default(),
        );
        Ok(Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
            token: token.to_owned(),
            appservice,
            versions,
            outages: Arc::new(AtomicU64::new(0)),
        })
    }

    /// The homeserver's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// How many requests so far found the homeserver unreachable (no answer) or unavailable
    /// (502, 503 or 504 without a Matrix error: a proxy in front of a stopped homeserver). A
    /// change means the homeserver may have restarted meanwhile, and may have lost what it had
    /// not yet pushed to the appservice.
    pub fn outages(&self) -> u64 {
        self.outages.load(Ordering::Relaxed)
    }

    /// Counts `e` when it is an outage (see [`Homeserver::outages`]).
    fn noted(&self, e: HsError) -> HsError {
        let outage = match &e {
            HsError::Network(_) => true,
            HsError::Matrix {
                status: 502..=504,
                errcode,
                ..
            } => errcode == "M_UNKNOWN",
            _ => false,
        };
        if outage {
            self.outages.fetch_add(1, Ordering::Relaxed);
        }
        e
    }

    /// Sends a typed request as `who` and parses the answer.
    pub async fn call<R>(&self, request: R, who: As<'_>) -> Result<R::IncomingResponse, HsError>
    where
        R: OutgoingRequest,
        for<'a> R::Authentication: AuthScheme<Input<'a> = SendAccessToken<'a>>,
        for<'a> R::PathBuilder: PathBuilder<Input<'a> = Cow<'a, SupportedVersions>>,
    {
        let token = if self.appservice {
            SendAccessToken::Appservice(&self.token)
        } else {
            SendAccessToken::IfRequired(&self.token)
        };
        let identity = match who {
            As::Ghost(user) if self.appservice => AppserviceUserIdentity::new(user),
            As::Ghost(_) => {
                return Err(HsError::Invalid(
                    "only an appservice can act as a ghost".into(),
                ));
            }
            As::Bot => AppserviceUserIdentity::default(),
        };
        let request: http::Request<Vec<u8>> = request
            .try_into_http_request_with_identity(
                &self.base,
                token,
                identity,
                Cow::Borrowed(&self.versions),
            )
            .map_err(|e| HsError::Invalid(format!("cannot build the request: {e}")))?;
        let mut request = reqwest::Request::try_from(request)
            .map_err(|e| HsError::Invalid(format!("cannot build the request: {e}")))?;
        *request.timeout_mut() = Some(REQUEST_TIMEOUT);
        let response = self
            .http
            .execute(request)
            .await
            .map_err(|e| self.noted(HsError::Network(error_chain(&e))))?;
        let response = check(response).await.map_err(|e| self.noted(e))?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response
            .bytes()
            .await
            .map_err(|e| self.noted(HsError::Network(error_chain(&e))))?;
        let mut answer = http::Response::builder().status(status);
        if let Some(h) = answer.headers_mut() {
            *h = headers;
        }
        let answer = answer
            .body(body)
            .map_err(|e| HsError::Invalid(e.to_string()))?;
        R::IncomingResponse::try_from_http_response(answer)
            .map_err(|e| HsError::Invalid(format!("cannot read the homeserver's answer: {e}")))
    }

    /// Uploads a file to the media repository as `who` (streamed, with its length announced);
    /// returns its `mxc://` URI.
    pub async fn upload(
        &self,
        body: AttachmentBody,
        length: u64,
        name: &str,
        who: As<'_>,
    ) -> Result<OwnedMxcUri, HsError> {
        #[derive(Deserialize)]
        struct Uploaded {
            content_uri: OwnedMxcUri,
        }
        let mut url = self.url(&["_matrix", "media", "v3", "upload"])?;
        url.query_pairs_mut().append_pair("filename", name);
        self.assert_identity(&mut url, who);
        let stream = body
            .chunks
            .map_err(|e| std::io::Error::other(e.to_string()));
        let mime = body
            .mime
            .unwrap_or_else(|| "application/octet-stream".to_owned());
        let response = self
            .http
            .post(url)
            .bearer_auth(&self.token)
            .header(reqwest::header::CONTENT_TYPE, mime)
            .header(reqwest::header::CONTENT_LENGTH, length)
            .body(reqwest::Body::wrap_stream(stream))
            .timeout(MEDIA_TIMEOUT)
            .send()
            .await
            .map_err(|e| HsError::Network(error_chain(&e)))?;
        let response = check(response).await?;
        let body = response
            .bytes()
            .await
            .map_err(|e| HsError::Network(error_chain(&e)))?;
        let uploaded: Uploaded = serde_json::from_slice(&body)
            .map_err(|e| HsError::Invalid(format!("cannot read the upload answer: {e}")))?;
        Ok(uploaded.content_uri)
    }

    /// Downloads a file from the media repository through the authenticated media endpoint
    /// (`/_matrix/client/v1/media/download`, spec v1.11), as a stream; refuses at once a file
    /// the homeserver announces as longer than `limit` (the caller counts what arrives).
    pub async fn download(&self, mxc: &str, limit: u64) -> Result<AttachmentBody, HsError> {
        let (server, media) = mxc
            .strip_prefix("mxc://")
            .and_then(|rest| rest.split_once('/'))
            .filter(|(s, m)| !s.is_empty() && !m.is_empty() && !m.contains('/'))
            .ok_or_else(|| HsError::Invalid(format!("not an mxc:// URI: {mxc}")))?;
        let url = self.url(&[
            "_matrix", "client", "v1", "media", "download", server, media,
        ])?;
        let response = self
            .http
            .get(url)
            .bearer_auth(&self.token)
            .timeout(MEDIA_TIMEOUT)
            .send()
            .await
            .map_err(|e| HsError::Network(error_chain(&e)))?;
        let response = check(response).await?;
        body_of(response, limit, mxc)
    }

    /// `POST /_matrix/client/v1/appservice/{id}/ping` (spec v1.7): the homeserver pings the
    /// appservice `id` and answers with the round trip. This proves that it reaches the
    /// appservice with the right token, and Synapse then retries at once the pushes it had
    /// queued after failures (instead of waiting out its backoff, up to 8.5 minutes).
    ///
    /// Synapse answers 502 while its own retry of a queued push is under way (it cannot
    /// reschedule a retry already started); that retry can take seconds on a loaded machine, and
    /// giving up then left our events waiting for its next one. So a 502 is asked again, after
    /// 25 ms at first (that push usually takes milliseconds) and at most 2 s apart, for up to
    /// `patience`; any other error is returned at once.
    pub async fn ping_appservice(&self, id: &str, patience: Duration) -> Result<Duration, HsError> {
        let started = tokio::time::Instant::now();
        let mut wait = Duration::from_millis(25);
        loop {
            let request =
                ruma::api::client::appservice::request_ping::v1::Request::new(id.to_owned());
            match self.call(request, As::Bot).await {
                Ok(answer) => return Ok(answer.duration),
                Err(e) if e.status() == Some(502) && started.elapsed() + wait < patience => {
                    tracing::debug!(error = %e, ?wait, "ping refused; asking again");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(2));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// `GET /_matrix/client/versions`: whether the homeserver is up (no authentication).
    pub async fn ping(&self) -> Result<(), HsError> {
        let url = self.url(&["_matrix", "client", "versions"])?;
        let response = self
            .http
            .get(url)
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .map_err(|e| self.noted(HsError::Network(error_chain(&e))))?;
        check(response).await.map(|_| ()).map_err(|e| self.noted(e))
    }

    fn url(&self, segments: &[&str]) -> Result<reqwest::Url, HsError> {
        let mut url = reqwest::Url::parse(&self.base)
            .map_err(|e| HsError::Invalid(format!("bad homeserver URL {}: {e}", self.base)))?;
        url.path_segments_mut()
            .map_err(|()| HsError::Invalid(format!("bad homeserver URL {}", self.base)))?
            .pop_if_empty()
            .extend(segments);
        Ok(url)
    }

    fn assert_identity(&self, url: &mut reqwest::Url, who: As<'_>) {
        if let (true, As::Ghost(user)) = (self.appservice, who) {
            url.query_pairs_mut().append_pair("user_id", user.as_str());
        }
    }
}

/// A successful answer's body as a stream, refused at once when announced over `limit` bytes
/// (the reader counts what arrives: [`AttachmentBody::collect`]).
pub(crate) fn body_of(
    response: reqwest::Response,
    limit: u64,
    what: &str,
) -> Result<AttachmentBody, HsError> {
    let length = response.content_length();
    if let Some(n) = length.filter(|&n| n > limit) {
        return Err(HsError::Invalid(format!(
            "{what} is {n} bytes, over the limit of {limit}"
        )));
    }
    let mime = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let chunks = response
        .bytes_stream()
        .map_err(|e| AdapterError::transient(format!("download interrupted: {e}")));
    Ok(AttachmentBody {
        length,
        mime,
        chunks: Box::pin(chunks),
    })
}

/// Passes a successful answer through; turns any other into [`HsError::Matrix`].
async fn check(response: reqwest::Response) -> Result<reqwest::Response, HsError> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let header_wait = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let text = response.text().await.unwrap_or_default();
    let body: ErrorBody = serde_json::from_str(&text).unwrap_or_default();
    let message = if body.error.is_empty() {
        text.chars().take(200).collect()
    } else {
        body.error
    };
    Err(HsError::Matrix {
        status: status.as_u16(),
        errcode: if body.errcode.is_empty() {
            "M_UNKNOWN".into()
        } else {
            body.errcode
        },
        message,
        retry_after: body
            .retry_after_ms
            .map(Duration::from_millis)
            .or(header_wait),
    })
}

/// An error with its causes, for logs ("error sending request: connection refused").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matrix(status: u16, errcode: &str, retry_after: Option<Duration>) -> HsError {
        HsError::Matrix {
            status,
            errcode: errcode.into(),
            message: "x".into(),
            retry_after,
        }
    }

    #[test]
    fn errors_map_to_what_the_core_should_do() {
        let wait = Some(Duration::from_millis(1500));
        assert!(matches!(
            AdapterError::from(matrix(429, "M_LIMIT_EXCEEDED", wait)),
            AdapterError::Transient { retry_after, .. } if retry_after == wait
        ));
        assert!(matches!(
            AdapterError::from(matrix(401, "M_UNKNOWN_TOKEN", None)),
            AdapterError::Auth(_)
        ));
        assert!(matches!(
            AdapterError::from(matrix(502, "M_UNKNOWN", None)),
            AdapterError::Transient { .. }
        ));
        assert!(matches!(
            AdapterError::from(matrix(403, "M_FORBIDDEN", None)),
            AdapterError::Permanent(_)
        ));
        assert!(matches!(
            AdapterError::from(HsError::Network("refused".into())),
            AdapterError::Transient { .. }
        ));
    }

    #[test]
    fn urls_escape_their_segments() {
        let hs = Homeserver::new("http://127.0.0.1:8008/", "t", true).expect("client");
        let url = hs
            .url(&["_matrix", "client", "v1", "media", "download", "a b", "c?d"])
            .expect("url");
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:8008/_matrix/client/v1/media/download/a%20b/c%3Fd"
        );
    }

    /// A homeserver that answers each request with the next canned response.
    async fn fake(answers: Vec<(u16, &'static str, &'static str)>) -> String {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            for (status, extra, body) in answers {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                let mut buf = vec![0u8; 65536];
                let _ = stream.read(&mut buf).await;
                let head = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n{extra}content-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(head.as_bytes()).await;
                let _ = stream.write_all(body.as_bytes()).await;
            }
        });
        format!("http://{addr}")
    }

    fn send_request() -> ruma::api::client::message::send_message_event::v3::Request {
        let content =
            serde_json::value::to_raw_value(&serde_json::json!({"msgtype": "m.text", "body": "x"}))
                .expect("json");
        ruma::api::client::message::send_message_event::v3::Request::new_raw(
            ruma::owned_room_id!("!room:localhost"),
            "txn1".into(),
            "m.room.message".into(),
            ruma::serde::Raw::from_json(content),
        )
    }

    #[tokio::test]
    async fn rate_limits_carry_the_servers_wait() {
        let base = fake(vec![
            (
                429,
                "",
                r#"{"errcode":"M_LIMIT_EXCEEDED","error":"slow down","retry_after_ms":2500}"#,
            ),
            (
                429,
                "retry-after: 7\r\n",
                r#"{"errcode":"M_LIMIT_EXCEEDED","error":"slow down"}"#,
            ),
            (200, "", r#"{"event_id":"$abc"}"#),
        ])
        .await;
        let hs = Homeserver::new(&base, "token", true).expect("client");
        let first = hs.call(send_request(), As::Bot).await.expect_err("limited");
        assert!(matches!(
            AdapterError::from(first),
            AdapterError::Transient { retry_after: Some(d), .. } if d == Duration::from_millis(2500)
        ));
        let second = hs.call(send_request(), As::Bot).await.expect_err("limited");
        assert!(matches!(
            AdapterError::from(second),
            AdapterError::Transient { retry_after: Some(d), .. } if d == Duration::from_secs(7)
        ));
        let sent = hs.call(send_request(), As::Bot).await.expect("sent");
        assert_eq!(sent.event_id.as_str(), "$abc");
    }

    #[tokio::test]
    async fn a_ping_refused_while_the_homeserver_retries_is_asked_again() {
        let busy = r#"{"errcode":"M_AS_PING_CONNECTION_FAILED","error":"AlreadyCalled"}"#;
        let base = fake(vec![
            (502, "", busy),
            (502, "", busy),
            (200, "", r#"{"duration_ms":3}"#),
            (502, "", busy),
            (502, "", busy),
            (502, "", busy),
            (
                403,
                "",
                r#"{"errcode":"M_FORBIDDEN","error":"not your appservice"}"#,
            ),
        ])
        .await;
        let hs = Homeserver::new(&base, "token", true).expect("client");
        let round_trip = hs
            .ping_appservice("bridge", Duration::from_secs(5))
            .await
            .expect("answered after two refusals");
        assert_eq!(round_trip, Duration::from_millis(3));
        // Out of patience: after the third refusal, 75 ms of waiting are behind and the next
        // wait is 100 ms, which would end at or past 175 ms however fast the machine; the
        // second refusal is asked again as long as its request took under 100 ms.
        let refused = hs
            .ping_appservice("bridge", Duration::from_millis(175))
            .await
            .expect_err("still refused");
        assert_eq!(refused.status(), Some(502));
        // Anything but a 502 is not asked again.
        let forbidden = hs
            .ping_appservice("bridge", Duration::from_secs(5))
            .await
            .expect_err("forbidden");
        assert_eq!(forbidden.errcode(), Some("M_FORBIDDEN"));
    }

    #[tokio::test]
    async fn a_down_or_confused_homeserver_is_an_error_not_a_panic() {
        let base = fake(vec![
            (502, "", "<html>bad gateway</html>"),
            (200, "", "not json at all"),
            (
                401,
                "",
                r#"{"errcode":"M_UNKNOWN_TOKEN","error":"who are you"}"#,
            ),
        ])
        .await;
        let hs = Homeserver::new(&base, "token", true).expect("client");
        let gateway = hs.call(send_request(), As::Bot).await.expect_err("502");
        assert!(matches!(
            AdapterError::from(gateway),
            AdapterError::Transient { .. }
        ));
        let garbage = hs.call(send_request(), As::Bot).await.expect_err("garbage");
        assert!(matches!(garbage, HsError::Invalid(_)));
        let token = hs.call(send_request(), As::Bot).await.expect_err("401");
        assert!(matches!(AdapterError::from(token), AdapterError::Auth(_)));
        let nobody = Homeserver::new("http://127.0.0.1:9", "token", true).expect("client");
        let refused = nobody
            .call(send_request(), As::Bot)
            .await
            .expect_err("refused");
        assert!(matches!(refused, HsError::Network(_)));
    }
}
