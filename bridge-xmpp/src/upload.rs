//! Attachments to XMPP: [XEP-0363](https://xmpp.org/extensions/xep-0363.html) HTTP File Upload
//! (`urn:xmpp:http:upload:0`), and the HTTP client that fetches a file from its source and
//! uploads it.
//!
//! The flow for a file bridged into XMPP:
//!
//! 1. find the upload service once per session: [`disco_items_query`] to the server's domain,
//!    then [`disco_info_query`] to each item until [`parse_upload_service`] recognises one (it
//!    also reads the service's `max-file-size`);
//! 2. [`Http::fetch`] the file from the source adapter's URL, bounded by that size;
//! 3. ask for a slot as the puppet ([`slot_request`], [`parse_slot`]): the server answers with a
//!    PUT URL (plus headers to send with it) and a GET URL;
//! 4. [`Http::put`] the bytes, then send the GET URL in the message body and in a
//!    `<x xmlns='jabber:x:oob'/>` so that clients show the file inline.
//!
//! Every failure is an [`UploadError`]; [`UploadError::is_transient`] says whether retrying
//! later may help (network trouble, 5xx, a quota) or not (4xx, too large, bad URL).
//!
//! Stanzas are built with minidom (never panics) in `jabber:client`; the disco#info answer is
//! read with xmpp-parsers' typed `DiscoInfoResult`. The slot is read by hand: xmpp-parsers'
//! `SlotResult` rejects the whole slot when a `<header/>` has a name outside the three the XEP
//! allows, where the XEP says to drop such headers.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use reqwest::Url;
use reqwest::header::{CONTENT_DISPOSITION, CONTENT_TYPE, HeaderValue};
use rxml::xml_ncname;
use xmpp_parsers::disco::DiscoInfoResult;
use xmpp_parsers::minidom::Element;
use xmpp_parsers::ns;

use crate::mam::{iq, stanza_error, text_suffix};
use crate::wire::NS_CLIENT;

/// The HTTP File Upload namespace.
pub const NS_HTTP_UPLOAD: &str = ns::HTTP_UPLOAD;
/// The disco#info namespace (XEP-0030).
pub const NS_DISCO_INFO: &str = ns::DISCO_INFO;
/// The disco#items namespace (XEP-0030).
pub const NS_DISCO_ITEMS: &str = ns::DISCO_ITEMS;

/// The only headers XEP-0363 lets a slot ask for; others are dropped.
const ALLOWED_PUT_HEADERS: [&str; 3] = ["Authorization", "Cookie", "Expires"];
/// Longest file name put in a slot request, in bytes.
const MAX_FILE_NAME_BYTES: usize = 200;

/// How long [`Http`] waits for a TCP (and TLS) connection by default.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long [`Http`] waits for each read from the server by default.
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a whole request (including the body) may take by default.
pub const DEFAULT_TOTAL_TIMEOUT: Duration = Duration::from_secs(300);

/// Why fetching or uploading a file failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UploadError {
    /// The URL is not an absolute `http`/`https` URL (permanent).
    #[error("not an http(s) URL: {reason}")]
    InvalidUrl {
        /// What is wrong with it.
        reason: String,
    },
    /// The HTTP client could not be built (permanent: a TLS setup problem).
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
    /// The request failed on the way: connection refused or reset, timeout, TLS… Transient,
    /// except for too many redirects.
    #[error("HTTP request failed: {0}")]
    Network(#[source] reqwest::Error),
    /// The server answered with a non-2xx status (transient for 5xx, 408 and 429).
    #[error("HTTP status {status}")]
    Status {
        /// The status code.
        status: u16,
    },
    /// The file is larger than the caller allows (permanent). `size` is the announced
    /// `Content-Length` when the refusal came from it, `None` when the body grew past the limit
    /// while being read.
    #[error("the file is larger than {limit} bytes{}", size.map(|s| format!(" ({s} bytes)")).unwrap_or_default())]
    TooLarge {
        /// The limit the caller set.
        limit: u64,
        /// The size the server announced, if it did.
        size: Option<u64>,
    },
    /// The upload service refused the slot because the file is too large (permanent).
    #[error("the upload service refused a file this large{}{}", max_file_size.map(|m| format!(" (max {m} bytes)")).unwrap_or_default(), text_suffix(.text))]
    FileTooLarge {
        /// The service's limit, if it said (`<file-too-large><max-file-size/>`).
        max_file_size: Option<u64>,
        /// The server's explanation, if it sent one.
        text: Option<String>,
    },
    /// The upload service refused the slot for another reason: `forbidden`, `not-acceptable`
    /// (file type), `resource-constraint` (quota, with `type='wait'`: transient)…
    #[error("the upload service refused the slot: {condition}{}", text_suffix(.text))]
    SlotRefused {
        /// The defined condition.
        condition: String,
        /// The error type (`wait`, `modify`, `cancel`, `auth`), if given.
        error_type: Option<String>,
        /// The server's explanation, if it sent one.
        text: Option<String>,
    },
    /// An answer we cannot use (a slot without URLs, a header value HTTP cannot carry…).
    #[error("unusable answer from the upload service: {0}")]
    Malformed(String),
}

impl UploadError {
    /// Whether trying again later may succeed: network errors, 5xx/408/429 answers and
    /// `type='wait'` refusals (quotas) are transient; a bad URL, 4xx answers, files too large
    /// and other refusals are permanent.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Network(e) => !(e.is_builder() || e.is_redirect()),
            Self::Status { status } => *status >= 500 || *status == 408 || *status == 429,
            Self::SlotRefused { error_type, .. } => error_type.as_deref() == Some("wait"),
            Self::InvalidUrl { .. }
            | Self::Client(_)
            | Self::TooLarge { .. }
            | Self::FileTooLarge { .. }
            | Self::Malformed(_) => false,
        }
    }
}

/// An upload service found through disco.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadService {
    /// Its JID, e.g. `upload.example.org`.
    pub jid: String,
    /// The largest file it accepts, in bytes, if it says.
    pub max_file_size: Option<u64>,
}

/// A slot: where to PUT the file, and where it can be fetched afterwards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    /// The URL to PUT the bytes to.
    pub put_url: String,
    /// Headers to send with the PUT (only `Authorization`, `Cookie` and `Expires`, as the XEP
    /// allows; newlines stripped from the values).
    pub put_headers: Vec<(String, String)>,
    /// The URL to share: where the file can be downloaded once uploaded.
    pub get_url: String,
}

/// A file fetched by [`Http::fetch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// The body.
    pub bytes: Bytes,
    /// The `Content-Type` the server sent, if any.
    pub content_type: Option<String>,
    /// A file name from `Content-Disposition` (`filename*` preferred over `filename`), else from
    /// the last segment of the URL's path (after redirects). Directory parts and control
    /// characters are removed.
    pub file_name: Option<String>,
}

fn query(ns: &str) -> Element {
    Element::builder("query", ns).build()
}

/// A disco#items query (`iq type='get'`) from `from` to the server's `domain`: the server lists
/// its services, among them the upload service.
pub fn disco_items_query(from: &str, domain: &str, iq_id: &str) -> Element {
    iq("get", from, domain, iq_id, query(NS_DISCO_ITEMS))
}

/// A disco#info query (`iq type='get'`) from `from` to `jid`, to learn whether it is an upload
/// service ([`parse_upload_service`]).
pub fn disco_info_query(from: &str, jid: &str, iq_id: &str) -> Element {
    iq("get", from, jid, iq_id, query(NS_DISCO_INFO))
}

/// The JIDs listed in a disco#items result, in order; empty for anything else (an error, a
/// malformed answer).
pub fn parse_disco_items(items_result: &Element) -> Vec<String> {
    if !items_result.is("iq", NS_CLIENT) || items_result.attr("type") != Some("result") {
        return Vec::new();
    }
    items_result
        .get_child("query", NS_DISCO_ITEMS)
        .map(|q| {
            q.children()
                .filter(|c| c.is("item", NS_DISCO_ITEMS))
                .filter_map(|c| c.attr("jid"))
                .filter(|jid| !jid.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// Recognises a disco#info result from an upload service: it advertises the
/// `urn:xmpp:http:upload:0` feature, and usually a data form (XEP-0128) with that `FORM_TYPE`
/// and a `max-file-size` field. The service's JID is the result's `from`. `None` for anything
/// else (another kind of service, an error, a malformed answer).
pub fn parse_upload_service(info_result: &Element) -> Option<UploadService> {
    if !info_result.is("iq", NS_CLIENT) || info_result.attr("type") != Some("result") {
        return None;
    }
    let jid = info_result
        .attr("from")
        .filter(|j| !j.is_empty())?
        .to_owned();
    let query = info_result.get_child("query", NS_DISCO_INFO)?;
    let info = DiscoInfoResult::try_from(query.clone()).ok()?;
    if !info.features.contains(NS_HTTP_UPLOAD) {
        return None;
    }
    let max_file_size = info
        .extensions
        .iter()
        .filter(|form| form.form_type() == Some(NS_HTTP_UPLOAD))
        .flat_map(|form| form.fields.iter())
        .find(|field| field.var.as_deref() == Some("max-file-size"))
        .and_then(|field| field.values.first())
        .and_then(|v| v.trim().parse().ok());
    Some(UploadService { jid, max_file_size })
}

/// Keeps a string safe for an XML attribute and a URL path segment: control characters and the
/// noncharacters XML forbids become `_`.
fn xml_safe(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_control() || c == '\u{FFFE}' || c == '\u{FFFF}' {
                '_'
            } else {
                c
            }
        })
        .collect()
}

/// A file name a server will accept: no directory separators (Prosody refuses `/` with
/// `bad-request`), no control characters, not empty, at most [`MAX_FILE_NAME_BYTES`] bytes
/// (the extension is kept when shortening).
fn slot_file_name(name: &str) -> String {
    let cleaned: String = xml_safe(name)
        .chars()
        .map(|c| if c == '/' || c == '\\' { '_' } else { c })
        .collect();
    let trimmed = cleaned.trim();
    let name = if trimmed.is_empty() || trimmed == "." || trimmed == ".." {
        "file"
    } else {
        trimmed
    };
    if name.len() <= MAX_FILE_NAME_BYTES {
        return name.to_owned();
    }
    let ext = name
        .rfind('.')
        .map(|i| &name[i..])
        .filter(|e| e.len() <= 16)
        .unwrap_or("");
    let mut stem_len = MAX_FILE_NAME_BYTES - ext.len();
    while !name.is_char_boundary(stem_len) {
        stem_len -= 1;
    }
    format!("{}{ext}", &name[..stem_len])
}

/// Asks `service` (from the puppet `from`) for a slot for `filename` of `size` bytes:
///
/// ```xml
/// <iq type='get' from='…' to='upload.example.org' id='iq_id'>
///   <request xmlns='urn:xmpp:http:upload:0' filename='a.png' size='1234' content-type='image/png'/>
/// </iq>
/// ```
///
/// The file name is cleaned (directory separators and control characters become `_`, empty
/// becomes `file`, long names are shortened keeping the extension). `size` must be exactly the
/// number of bytes later PUT (Prosody answers 413 otherwise).
pub fn slot_request(
    from: &str,
    service: &str,
    iq_id: &str,
    filename: &str,
    size: u64,
    content_type: Option<&str>,
) -> Element {
    let mut request = Element::builder("request", NS_HTTP_UPLOAD)
        .attr(xml_ncname!("filename").into(), slot_file_name(filename))
        .attr(xml_ncname!("size").into(), size.to_string());
    if let Some(ct) = content_type
        .map(|ct| xml_safe(ct.trim()))
        .filter(|ct| !ct.is_empty())
    {
        request = request.attr(xml_ncname!("content-type").into(), ct);
    }
    iq("get", from, service, iq_id, request.build())
}

/// Parses `url` and accepts it only if it is `http` or `https` with a host.
fn check_url(url: &str) -> Result<Url, UploadError> {
    let parsed = Url::parse(url.trim()).map_err(|e| UploadError::InvalidUrl {
        reason: e.to_string(),
    })?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(UploadError::InvalidUrl {
            reason: format!("scheme {:?}", parsed.scheme()),
        });
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(UploadError::InvalidUrl {
            reason: "no host".into(),
        });
    }
    Ok(parsed)
}

/// Reads the answer to a [`slot_request`]: the slot, or the refusal ([`UploadError::FileTooLarge`]
/// with the service's limit, [`UploadError::SlotRefused`] otherwise).
pub fn parse_slot(iq_result: &Element) -> Result<Slot, UploadError> {
    if !iq_result.is("iq", NS_CLIENT) {
        return Err(UploadError::Malformed(format!(
            "<{}> is not an iq",
            iq_result.name()
        )));
    }
    match iq_result.attr("type") {
        Some("result") => {}
        Some("error") => {
            let (error_type, condition, text) = stanza_error(iq_result);
            let too_large = iq_result
                .get_child("error", NS_CLIENT)
                .and_then(|e| e.get_child("file-too-large", NS_HTTP_UPLOAD));
            if let Some(too_large) = too_large {
                let max_file_size = too_large
                    .get_child("max-file-size", NS_HTTP_UPLOAD)
                    .and_then(|m| m.text().trim().parse().ok());
                return Err(UploadError::FileTooLarge {
                    max_file_size,
                    text,
                });
            }
            return Err(UploadError::SlotRefused {
                condition,
                error_type,
                text,
            });
        }
        other => return Err(UploadError::Malformed(format!("iq of type {other:?}"))),
    }
    let slot = iq_result
        .get_child("slot", NS_HTTP_UPLOAD)
        .ok_or_else(|| UploadError::Malformed("iq result without <slot/>".into()))?;
    let url_of = |name: &str| -> Result<(&Element, String), UploadError> {
        let el = slot
            .get_child(name, NS_HTTP_UPLOAD)
            .ok_or_else(|| UploadError::Malformed(format!("slot without <{name}/>")))?;
        let url = el
            .attr("url")
            .ok_or_else(|| UploadError::Malformed(format!("<{name}/> without url")))?;
        check_url(url).map_err(|e| UploadError::Malformed(format!("<{name}/> url: {e}")))?;
        Ok((el, url.trim().to_owned()))
    };
    let (put, put_url) = url_of("put")?;
    let (_, get_url) = url_of("get")?;
    let mut put_headers = Vec::new();
    for header in put.children().filter(|c| c.is("header", NS_HTTP_UPLOAD)) {
        let name = header.attr("name").unwrap_or_default().trim();
        let Some(canonical) = ALLOWED_PUT_HEADERS
            .iter()
            .find(|allowed| allowed.eq_ignore_ascii_case(name))
        else {
            tracing::debug!(
                header = name,
                "dropping a slot header XEP-0363 does not allow"
            );
            continue;
        };
        // The XEP: strip newlines from header values.
        let value: String = header
            .text()
            .chars()
            .filter(|c| *c != '\n' && *c != '\r')
            .collect();
        put_headers.push(((*canonical).to_owned(), value.trim().to_owned()));
    }
    Ok(Slot {
        put_url,
        put_headers,
        get_url,
    })
}

/// Decodes `%XX` escapes into bytes (invalid escapes are kept as they are).
fn percent_decode(s: &str) -> Vec<u8> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && let (Some(h), Some(l)) = (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            )
        {
            // Two hex digits: at most 255.
            out.push(u8::try_from(h * 16 + l).unwrap_or(b'?'));
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}

/// A file name safe to show and to use in a slot request: the last path component, without
/// control characters, trimmed, at most 255 bytes; `None` if nothing usable remains.
fn clean_file_name(name: &str) -> Option<String> {
    let last = name.rsplit(['/', '\\']).next().unwrap_or(name);
    let cleaned: String = last.chars().filter(|c| !c.is_control()).collect();
    let mut cleaned = cleaned.trim().to_owned();
    if cleaned.is_empty() || cleaned == "." || cleaned == ".." {
        return None;
    }
    if cleaned.len() > 255 {
        let mut end = 255;
        while !cleaned.is_char_boundary(end) {
            end -= 1;
        }
        cleaned.truncate(end);
    }
    Some(cleaned)
}

/// Splits a header value into `;`-separated parameters, respecting quoted strings.
fn split_params(value: &str) -> Vec<String> {
    let mut params = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    let mut escaped = false;
    for c in value.chars() {
        if escaped {
            current.push(c);
            escaped = false;
        } else if quoted && c == '\\' {
            current.push(c);
            escaped = true;
        } else if c == '"' {
            current.push(c);
            quoted = !quoted;
        } else if c == ';' && !quoted {
            params.push(std::mem::take(&mut current));
        } else {
            current.push(c);
        }
    }
    params.push(current);
    params
}

/// `"a \"b\""` → `a "b"`; unquoted values are returned as they are.
fn unquote(v: &str) -> String {
    let Some(inner) = v.strip_prefix('"').and_then(|v| v.strip_suffix('"')) else {
        return v.to_owned();
    };
    let mut out = String::with_capacity(inner.len());
    let mut escaped = false;
    for c in inner.chars() {
        if escaped || c != '\\' {
            out.push(c);
            escaped = false;
        } else {
            escaped = true;
        }
    }
    out
}

/// The file name in a `Content-Disposition` value (RFC 6266): `filename*` (RFC 8187
/// `charset'lang'pct-encoded`, UTF-8 or ISO-8859-1) is preferred over `filename`.
fn disposition_file_name(value: &str) -> Option<String> {
    let mut plain = None;
    let mut extended = None;
    for param in split_params(value).iter().skip(1) {
        let Some((key, v)) = param.split_once('=') else {
            continue;
        };
        let v = v.trim();
        match key.trim().to_ascii_lowercase().as_str() {
            "filename*" => {
                let mut parts = v.splitn(3, '\'');
                if let (Some(charset), Some(_lang), Some(encoded)) =
                    (parts.next(), parts.next(), parts.next())
                {
                    let bytes = percent_decode(encoded);
                    extended = if charset.eq_ignore_ascii_case("iso-8859-1") {
                        Some(bytes.iter().map(|&b| char::from(b)).collect())
                    } else {
                        Some(String::from_utf8_lossy(&bytes).into_owned())
                    };
                }
            }
            "filename" => plain = Some(unquote(v)),
            _ => {}
        }
    }
    extended
        .and_then(|n: String| clean_file_name(&n))
        .or_else(|| plain.and_then(|n| clean_file_name(&n)))
}

/// The last non-empty segment of the URL's path, percent-decoded.
fn url_file_name(url: &Url) -> Option<String> {
    let segment = url.path_segments()?.rev().find(|s| !s.is_empty())?;
    clean_file_name(&String::from_utf8_lossy(&percent_decode(segment)))
}

/// The HTTP client for attachments: fetches files from source URLs with a size limit, and PUTs
/// them to upload slots. Cheap to clone (one connection pool).
///
/// TLS is rustls with the `ring` provider and the platform's certificate verifier (the system's
/// roots on Linux). Only HTTP/1.1; no cookies, no decompression (sizes are bytes on the wire);
/// at most 5 redirects.
#[derive(Debug, Clone)]
pub struct Http {
    client: reqwest::Client,
}

impl Http {
    /// A client with the default timeouts ([`DEFAULT_CONNECT_TIMEOUT`],
    /// [`DEFAULT_READ_TIMEOUT`], [`DEFAULT_TOTAL_TIMEOUT`]).
    pub fn new() -> Result<Self, UploadError> {
        Self::with_timeouts(
            DEFAULT_CONNECT_TIMEOUT,
            DEFAULT_READ_TIMEOUT,
            DEFAULT_TOTAL_TIMEOUT,
        )
    }

    /// A client with the given timeouts: to connect, for each read, and for a whole request
    /// (body included).
    ///
    /// Installs rustls' `ring` provider as the process default if no provider is installed yet
    /// (reqwest is built without a provider of its own, to avoid aws-lc-rs).
    pub fn with_timeouts(
        connect: Duration,
        read: Duration,
        total: Duration,
    ) -> Result<Self, UploadError> {
        if rustls::crypto::CryptoProvider::get_default().is_none() {
            // An error means another thread installed one in the meantime: fine too.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let client = reqwest::Client::builder()
            .connect_timeout(connect)
            .read_timeout(read)
            .timeout(total)
            .redirect(reqwest::redirect::Policy::limited(5))
            .user_agent(concat!("bridge/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| UploadError::Client(e.to_string()))?;
        Ok(Self { client })
    }

    /// GETs `url` (http or https only) and returns its body, at most `max_bytes` long.
    ///
    /// A `Content-Length` over the limit is refused before reading the body; a body without
    /// one is read chunk by chunk and abandoned (the connection dropped) as soon as it exceeds
    /// the limit. Both are [`UploadError::TooLarge`]. A non-2xx answer is
    /// [`UploadError::Status`].
    pub async fn fetch(&self, url: &str, max_bytes: u64) -> Result<Fetched, UploadError> {
        let url = check_url(url)?;
        let mut response = self
            .client
            .get(url)
            .send()
            .await
            .map_err(UploadError::Network)?;
        let status = response.status();
        if !status.is_success() {
            return Err(UploadError::Status {
                status: status.as_u16(),
            });
        }
        let announced = response.content_length();
        if let Some(size) = announced
            && size > max_bytes
        {
            return Err(UploadError::TooLarge {
                limit: max_bytes,
                size: Some(size),
            });
        }
        let header = |name| {
            response
                .headers()
                .get(name)
                .and_then(|v: &HeaderValue| v.to_str().ok())
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
        };
        let content_type = header(CONTENT_TYPE);
        let file_name = header(CONTENT_DISPOSITION)
            .and_then(|d| disposition_file_name(&d))
            .or_else(|| url_file_name(response.url()));

        let capacity = announced.unwrap_or(0).min(max_bytes).min(1 << 20);
        let mut body = BytesMut::with_capacity(usize::try_from(capacity).unwrap_or(0));
        while let Some(chunk) = response.chunk().await.map_err(UploadError::Network)? {
            let len = u64::try_from(body.len().saturating_add(chunk.len())).unwrap_or(u64::MAX);
            if len > max_bytes {
                return Err(UploadError::TooLarge {
                    limit: max_bytes,
                    size: None,
                });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Fetched {
            bytes: body.freeze(),
            content_type,
            file_name,
        })
    }

    /// PUTs `bytes` to the slot, with the slot's headers and `content_type` (XEP-0363: the same
    /// as in the slot request). Success is any 2xx (Prosody answers 201 Created).
    pub async fn put(
        &self,
        slot: &Slot,
        bytes: Bytes,
        content_type: Option<&str>,
    ) -> Result<(), UploadError> {
        let url = check_url(&slot.put_url)?;
        let mut request = self.client.put(url);
        for (name, value) in &slot.put_headers {
            let value = HeaderValue::from_str(value).map_err(|_| {
                UploadError::Malformed(format!("the slot's {name} header is not a valid value"))
            })?;
            request = request.header(name.as_str(), value);
        }
        if let Some(ct) = content_type.and_then(|ct| HeaderValue::from_str(ct.trim()).ok()) {
            request = request.header(CONTENT_TYPE, ct);
        }
        let response = request
            .body(bytes)
            .send()
            .await
            .map_err(UploadError::Network)?;
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(UploadError::Status {
                status: status.as_u16(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use xmpp_parsers::http_upload::SlotRequest;

    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    const ME: &str = "up@bridge.localhost/x";

    fn el(xml: &str) -> Result<Element, Box<dyn std::error::Error>> {
        Ok(xml.parse()?)
    }

    #[test]
    fn disco_queries() {
        let items = disco_items_query(ME, "localhost", "d1");
        assert!(items.is("iq", NS_CLIENT));
        assert_eq!(items.attr("type"), Some("get"));
        assert_eq!(items.attr("to"), Some("localhost"));
        assert_eq!(items.attr("from"), Some(ME));
        assert_eq!(items.attr("id"), Some("d1"));
        assert!(items.get_child("query", NS_DISCO_ITEMS).is_some());
        let info = disco_info_query(ME, "upload.localhost", "d2");
        assert_eq!(info.attr("to"), Some("upload.localhost"));
        assert!(info.get_child("query", NS_DISCO_INFO).is_some());
    }

    #[test]
    fn disco_items_are_listed() -> TestResult {
        // XEP-0363 example 2's shape.
        let result = el(
            "<iq xmlns='jabber:client' from='montague.tld' id='step_01' \
            to='romeo@montague.tld/garden' type='result'>\
            <query xmlns='http://jabber.org/protocol/disco#items'>\
            <item jid='upload.montague.tld' name='HTTP File Upload'/>\
            <item jid='conference.montague.tld' name='Chatroom Service'/>\
            <item name='no jid'/></query></iq>",
        )?;
        assert_eq!(
            parse_disco_items(&result),
            ["upload.montague.tld", "conference.montague.tld"]
        );
        let error = el("<iq xmlns='jabber:client' type='error' id='x'>\
            <query xmlns='http://jabber.org/protocol/disco#items'><item jid='a'/></query></iq>")?;
        assert!(parse_disco_items(&error).is_empty());
        Ok(())
    }

    /// XEP-0363 example 4's shape (what Prosody's mod_http_file_share answers too).
    const SERVICE_INFO: &str = "<iq xmlns='jabber:client' from='upload.montague.tld' \
        id='step_02' to='romeo@montague.tld/garden' type='result'>\
        <query xmlns='http://jabber.org/protocol/disco#info'>\
        <identity category='store' type='file' name='HTTP File Upload'/>\
        <feature var='urn:xmpp:http:upload:0'/>\
        <x type='result' xmlns='jabber:x:data'>\
        <field var='FORM_TYPE' type='hidden'><value>urn:xmpp:http:upload:0</value></field>\
        <field var='max-file-size'><value>5242880</value></field></x></query></iq>";

    #[test]
    fn upload_service_with_max_size() -> TestResult {
        assert_eq!(
            parse_upload_service(&el(SERVICE_INFO)?),
            Some(UploadService {
                jid: "upload.montague.tld".into(),
                max_file_size: Some(5_242_880),
            })
        );
        Ok(())
    }

    #[test]
    fn upload_service_without_form_or_with_bad_size() -> TestResult {
        let no_form = SERVICE_INFO
            .split("<x type=")
            .next()
            .ok_or("split")?
            .to_owned()
            + "</query></iq>";
        let service = parse_upload_service(&el(&no_form)?).ok_or("not recognised")?;
        assert_eq!(service.max_file_size, None);
        let bad = SERVICE_INFO.replace("5242880", "lots");
        let service = parse_upload_service(&el(&bad)?).ok_or("not recognised")?;
        assert_eq!(service.max_file_size, None);
        // A max-file-size in another form type does not count.
        let other_form = SERVICE_INFO.replace(
            "<value>urn:xmpp:http:upload:0</value>",
            "<value>urn:example:other</value>",
        );
        let service = parse_upload_service(&el(&other_form)?).ok_or("not recognised")?;
        assert_eq!(service.max_file_size, None);
        Ok(())
    }

    #[test]
    fn other_entities_are_not_upload_services() -> TestResult {
        let muc = SERVICE_INFO.replace(
            "<feature var='urn:xmpp:http:upload:0'/>",
            "<feature var='http://jabber.org/protocol/muc'/>",
        );
        assert_eq!(parse_upload_service(&el(&muc)?), None);
        let no_from = SERVICE_INFO.replace("from='upload.montague.tld' ", "");
        assert_eq!(parse_upload_service(&el(&no_from)?), None);
        let error = SERVICE_INFO.replace("type='result'>", "type='error'>");
        assert_eq!(parse_upload_service(&el(&error)?), None);
        let not_iq = el("<message xmlns='jabber:client' from='upload.montague.tld'/>")?;
        assert_eq!(parse_upload_service(&not_iq), None);
        Ok(())
    }

    #[test]
    fn slot_request_parses_as_typed_request() -> TestResult {
        let iq = slot_request(
            ME,
            "upload.localhost",
            "s1",
            "très cool.jpg",
            23456,
            Some("image/jpeg"),
        );
        assert!(iq.is("iq", NS_CLIENT));
        assert_eq!(iq.attr("type"), Some("get"));
        assert_eq!(iq.attr("to"), Some("upload.localhost"));
        let request = iq
            .get_child("request", NS_HTTP_UPLOAD)
            .ok_or("no request")?
            .clone();
        let typed = SlotRequest::try_from(request)?;
        assert_eq!(typed.filename, "très cool.jpg");
        assert_eq!(typed.size, 23456);
        assert_eq!(typed.content_type.as_deref(), Some("image/jpeg"));

        let iq = slot_request(ME, "upload.localhost", "s2", "a.bin", 1, None);
        let request = iq
            .get_child("request", NS_HTTP_UPLOAD)
            .ok_or("no request")?;
        assert_eq!(request.attr("content-type"), None);
        Ok(())
    }

    #[test]
    fn slot_request_file_names_are_cleaned() -> TestResult {
        let name_of = |name: &str| {
            slot_request(ME, "u", "i", name, 1, Some("\u{1}"))
                .get_child("request", NS_HTTP_UPLOAD)
                .and_then(|r| r.attr("filename").map(str::to_owned))
        };
        assert_eq!(
            name_of("../../etc/passwd").as_deref(),
            Some(".._.._etc_passwd")
        );
        assert_eq!(
            name_of("a\\b\u{0}c\u{1b}.txt").as_deref(),
            Some("a_b_c_.txt")
        );
        assert_eq!(name_of("  ").as_deref(), Some("file"));
        assert_eq!(name_of("..").as_deref(), Some("file"));
        let long = format!("{}.tar.gz", "é".repeat(300));
        let cut = name_of(&long).ok_or("no name")?;
        assert!(cut.len() <= MAX_FILE_NAME_BYTES, "{}", cut.len());
        assert!(cut.ends_with(".gz") && cut.starts_with('é'), "{cut}");
        // The stanza still serialises to well-formed XML.
        let iq = slot_request(ME, "u", "i", "x\u{FFFF}\u{7}y", 1, Some("text/plain\u{0}"));
        let mut out = Vec::new();
        iq.write_to(&mut out)?;
        let back: Element = String::from_utf8(out)?.parse()?;
        let request = back
            .get_child("request", NS_HTTP_UPLOAD)
            .ok_or("no request")?;
        assert_eq!(request.attr("filename"), Some("x__y"));
        assert_eq!(request.attr("content-type"), Some("text/plain_"));
        Ok(())
    }

    #[test]
    fn slot_with_allowed_headers_only() -> TestResult {
        // XEP-0363 example 6's shape, plus a header the XEP does not allow and a newline.
        let slot = parse_slot(&el(
            "<iq xmlns='jabber:client' from='upload.montague.tld' \
            id='step_03' to='romeo@montague.tld/garden' type='result'>\
            <slot xmlns='urn:xmpp:http:upload:0'>\
            <put url='https://upload.montague.tld/4a771ac1-f0b2-4a4a-9700-f2a26fa2bb67/tr%C3%A8s%20cool.jpg'>\
            <header name='Authorization'>Basic Base64String==</header>\
            <header name='cookie'>foo=bar;\r\n user=romeo</header>\
            <header name='Expires'>Tue, 01 Jan 2030 00:00:00 GMT</header>\
            <header name='X-Evil'>1</header>\
            <header>no name</header>\
            </put>\
            <get url='https://download.montague.tld/4a771ac1-f0b2-4a4a-9700-f2a26fa2bb67/tr%C3%A8s%20cool.jpg'/>\
            </slot></iq>",
        )?)?;
        assert_eq!(
            slot.put_url,
            "https://upload.montague.tld/4a771ac1-f0b2-4a4a-9700-f2a26fa2bb67/tr%C3%A8s%20cool.jpg"
        );
        assert_eq!(
            slot.get_url,
            "https://download.montague.tld/4a771ac1-f0b2-4a4a-9700-f2a26fa2bb67/tr%C3%A8s%20cool.jpg"
        );
        assert_eq!(
            slot.put_headers,
            [
                (
                    "Authorization".to_owned(),
                    "Basic Base64String==".to_owned()
                ),
                ("Cookie".to_owned(), "foo=bar; user=romeo".to_owned()),
                (
                    "Expires".to_owned(),
                    "Tue, 01 Jan 2030 00:00:00 GMT".to_owned()
                ),
            ]
        );
        Ok(())
    }

    #[test]
    fn file_too_large_carries_the_limit() -> TestResult {
        // XEP-0363 example 7's shape (Prosody adds the same payload).
        let err = parse_slot(&el("<iq xmlns='jabber:client' from='upload.montague.tld' \
            id='step_03' type='error'>\
            <request xmlns='urn:xmpp:http:upload:0' filename='très cool.jpg' size='23456' \
            content-type='image/jpeg'/>\
            <error type='modify'>\
            <not-acceptable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>\
            <text xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'>File too large. The maximum file size is 20000 bytes</text>\
            <file-too-large xmlns='urn:xmpp:http:upload:0'><max-file-size>20000</max-file-size></file-too-large>\
            </error></iq>")?)
        .err()
        .ok_or("must fail")?;
        match &err {
            UploadError::FileTooLarge {
                max_file_size,
                text,
            } => {
                assert_eq!(*max_file_size, Some(20000));
                assert!(
                    text.as_deref()
                        .is_some_and(|t| t.starts_with("File too large"))
                );
            }
            other => panic!("expected FileTooLarge, got {other:?}"),
        }
        assert!(!err.is_transient());
        assert!(err.to_string().contains("max 20000 bytes"), "{err}");
        Ok(())
    }

    #[test]
    fn other_refusals() -> TestResult {
        let quota = parse_slot(&el("<iq xmlns='jabber:client' type='error' id='s'>\
            <error type='wait'><resource-constraint xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>\
            <text xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'>Quota reached</text>\
            <retry xmlns='urn:xmpp:http:upload:0' stamp='2017-12-03T23:42:05Z'/></error></iq>")?)
        .err()
        .ok_or("must fail")?;
        assert!(
            matches!(&quota, UploadError::SlotRefused { condition, error_type: Some(t), .. }
                if condition == "resource-constraint" && t == "wait"),
            "{quota:?}"
        );
        assert!(quota.is_transient());
        let forbidden = parse_slot(&el("<iq xmlns='jabber:client' type='error' id='s'>\
            <error type='auth'><forbidden xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>")?)
        .err()
        .ok_or("must fail")?;
        assert!(!forbidden.is_transient());
        assert_eq!(
            forbidden.to_string(),
            "the upload service refused the slot: forbidden"
        );
        Ok(())
    }

    #[test]
    fn unusable_slots_are_malformed() -> TestResult {
        for xml in [
            "<iq xmlns='jabber:client' type='result' id='s'/>",
            "<iq xmlns='jabber:client' type='set' id='s'/>",
            "<message xmlns='jabber:client'/>",
            "<iq xmlns='jabber:client' type='result' id='s'><slot xmlns='urn:xmpp:http:upload:0'>\
             <put url='https://u/x'/></slot></iq>",
            "<iq xmlns='jabber:client' type='result' id='s'><slot xmlns='urn:xmpp:http:upload:0'>\
             <put url='file:///etc/passwd'/><get url='https://u/x'/></slot></iq>",
            "<iq xmlns='jabber:client' type='result' id='s'><slot xmlns='urn:xmpp:http:upload:0'>\
             <put url='https://u/x'/><get/></slot></iq>",
            "<iq xmlns='jabber:client' type='result' id='s'><slot xmlns='urn:xmpp:http:upload:0'>\
             <put url='https://u/x'/><get url='not a url'/></slot></iq>",
        ] {
            let r = parse_slot(&el(xml)?);
            assert!(matches!(r, Err(UploadError::Malformed(_))), "{xml}: {r:?}");
        }
        Ok(())
    }

    #[test]
    fn content_disposition_file_names() {
        let cases = [
            ("attachment; filename=\"a b.png\"", Some("a b.png")),
            ("attachment; filename=plain.txt", Some("plain.txt")),
            (
                "inline; filename*=UTF-8''caf%C3%A9%20au%20lait.png",
                Some("café au lait.png"),
            ),
            (
                "attachment; filename=\"fallback.png\"; filename*=utf-8''%E2%82%AC.png",
                Some("€.png"),
            ),
            (
                "attachment; filename*=iso-8859-1'en'%A3%20rates.txt",
                Some("£ rates.txt"),
            ),
            (
                "attachment; filename=\"semi;colon \\\"q\\\".txt\"",
                Some("semi;colon \"q\".txt"),
            ),
            ("attachment; filename=\"../../etc/passwd\"", Some("passwd")),
            ("attachment; filename=\"C:\\\\dir\\\\x.doc\"", Some("x.doc")),
            ("attachment; filename*=UTF-8''%2e%2e", None),
            ("attachment; filename=\"\"", None),
            ("attachment", None),
            ("attachment; filename*=broken%", None),
            ("attachment; filename*=UTF-8''%ZZ%4", Some("%ZZ%4")),
        ];
        for (header, want) in cases {
            assert_eq!(disposition_file_name(header).as_deref(), want, "{header}");
        }
    }

    #[test]
    fn url_file_names() -> TestResult {
        for (url, want) in [
            ("https://h/files/report%20v2.pdf", Some("report v2.pdf")),
            ("https://h/files/dir/", Some("dir")),
            ("https://h/", None),
            ("https://h/a%2F..%2Fb", Some("b")),
        ] {
            assert_eq!(url_file_name(&Url::parse(url)?).as_deref(), want, "{url}");
        }
        Ok(())
    }

    #[test]
    fn transience() {
        let status = |status| UploadError::Status { status };
        assert!(status(500).is_transient());
        assert!(status(503).is_transient());
        assert!(status(429).is_transient());
        assert!(status(408).is_transient());
        assert!(!status(404).is_transient());
        assert!(!status(413).is_transient());
        assert!(!status(401).is_transient());
        assert!(
            !UploadError::TooLarge {
                limit: 1,
                size: None
            }
            .is_transient()
        );
        assert!(
            !UploadError::InvalidUrl {
                reason: String::new()
            }
            .is_transient()
        );
        assert!(!UploadError::Malformed(String::new()).is_transient());
    }

    // ---- HTTP against a hand-rolled local server ----

    /// Reads one request (head, and the body if it has a Content-Length); returns both.
    async fn read_request(sock: &mut TcpStream) -> io::Result<(String, Vec<u8>)> {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 8192];
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let n = sock.read(&mut chunk).await?;
            if n == 0 {
                return Err(io::Error::other("EOF in request head"));
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let length = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse::<usize>().ok())
                    .flatten()
            })
            .unwrap_or(0);
        let mut body = buf[head_end..].to_vec();
        while body.len() < length {
            let n = sock.read(&mut chunk).await?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
        Ok((head, body))
    }

    /// Serves one connection: reads the request, writes `response`, closes. Returns the URL
    /// base and a handle yielding the request.
    async fn serve_once(
        response: Vec<u8>,
    ) -> io::Result<(
        String,
        tokio::task::JoinHandle<io::Result<(String, Vec<u8>)>>,
    )> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}", listener.local_addr()?);
        let task = tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await?;
            let request = read_request(&mut sock).await?;
            sock.write_all(&response).await?;
            sock.shutdown().await?;
            Ok(request)
        });
        Ok((base, task))
    }

    async fn fetch_within(
        http: &Http,
        url: &str,
        max: u64,
    ) -> Result<Result<Fetched, UploadError>, Box<dyn std::error::Error>> {
        Ok(tokio::time::timeout(Duration::from_secs(10), http.fetch(url, max)).await?)
    }

    #[tokio::test]
    async fn fetch_ok_with_type_and_name() -> TestResult {
        let (base, server) = serve_once(
            b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\n\
              Content-Disposition: inline; filename*=UTF-8''caf%C3%A9.png\r\n\
              Content-Length: 5\r\nConnection: close\r\n\r\nhello"
                .to_vec(),
        )
        .await?;
        let http = Http::new()?;
        // Exactly at the limit is fine.
        let fetched = fetch_within(&http, &format!("{base}/x/ignored.bin"), 5).await??;
        assert_eq!(&fetched.bytes[..], b"hello");
        assert_eq!(fetched.content_type.as_deref(), Some("image/png"));
        assert_eq!(fetched.file_name.as_deref(), Some("café.png"));
        let (head, _) = server.await??;
        assert!(
            head.starts_with("GET /x/ignored.bin HTTP/1.1\r\n"),
            "{head}"
        );
        Ok(())
    }

    #[tokio::test]
    async fn fetch_names_the_file_after_the_url_without_disposition() -> TestResult {
        let (base, server) = serve_once(
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok".to_vec(),
        )
        .await?;
        let fetched =
            fetch_within(&Http::new()?, &format!("{base}/f/report%20v2.pdf"), 100).await??;
        assert_eq!(fetched.file_name.as_deref(), Some("report v2.pdf"));
        assert_eq!(fetched.content_type, None);
        server.await??;
        Ok(())
    }

    #[tokio::test]
    async fn fetch_refuses_a_content_length_over_the_limit_before_the_body() -> TestResult {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/big", listener.local_addr()?);
        let server = tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await?;
            read_request(&mut sock).await?;
            sock.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n")
                .await?;
            // Never send the body: the client must give up on the header alone.
            tokio::time::sleep(Duration::from_secs(20)).await;
            Ok::<_, io::Error>(())
        });
        let err = fetch_within(&Http::new()?, &url, 1000)
            .await?
            .err()
            .ok_or("must fail")?;
        assert!(
            matches!(
                err,
                UploadError::TooLarge {
                    limit: 1000,
                    size: Some(1_000_000)
                }
            ),
            "{err:?}"
        );
        assert!(!err.is_transient());
        server.abort();
        Ok(())
    }

    #[tokio::test]
    async fn fetch_stops_an_endless_chunked_body_at_the_limit() -> TestResult {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/stream", listener.local_addr()?);
        let server = tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await?;
            read_request(&mut sock).await?;
            sock.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                .await?;
            let chunk = format!("400\r\n{}\r\n", "x".repeat(0x400));
            let mut sent = 0u64;
            // Until the client hangs up (bounded, in case it never does).
            while sent < 100 << 20 {
                if sock.write_all(chunk.as_bytes()).await.is_err() {
                    return Ok::<_, io::Error>(sent);
                }
                sent += 0x400;
            }
            Ok(sent)
        });
        let err = fetch_within(&Http::new()?, &url, 64 * 1024)
            .await?
            .err()
            .ok_or("must fail")?;
        assert!(
            matches!(
                err,
                UploadError::TooLarge {
                    limit: 65536,
                    size: None
                }
            ),
            "{err:?}"
        );
        let sent = server.await??;
        assert!(sent < 100 << 20, "the client read the whole endless body");
        Ok(())
    }

    #[tokio::test]
    async fn fetch_chunked_body_within_the_limit() -> TestResult {
        let (base, server) = serve_once(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: text/plain\r\n\r\n\
              3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n"
                .to_vec(),
        )
        .await?;
        let fetched = fetch_within(&Http::new()?, &format!("{base}/t.txt"), 7).await??;
        assert_eq!(&fetched.bytes[..], b"abcdefg");
        assert_eq!(fetched.file_name.as_deref(), Some("t.txt"));
        server.await??;
        Ok(())
    }

    #[tokio::test]
    async fn fetch_http_errors_are_typed() -> TestResult {
        for (status, transient) in [(404u16, false), (403, false), (503, true), (500, true)] {
            let (base, server) = serve_once(
                format!("HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    .into_bytes(),
            )
            .await?;
            let err = fetch_within(&Http::new()?, &format!("{base}/x"), 10)
                .await?
                .err()
                .ok_or("must fail")?;
            assert!(
                matches!(err, UploadError::Status { status: s } if s == status),
                "{err:?}"
            );
            assert_eq!(err.is_transient(), transient, "{status}");
            server.await??;
        }
        Ok(())
    }

    #[tokio::test]
    async fn fetch_refuses_other_schemes() -> TestResult {
        let http = Http::new()?;
        for url in [
            "ftp://example.org/a",
            "file:///etc/passwd",
            "mxc://matrix.org/abc",
            "not a url",
            "",
            "http://",
        ] {
            let err = fetch_within(&http, url, 10)
                .await?
                .err()
                .ok_or("must fail")?;
            assert!(
                matches!(err, UploadError::InvalidUrl { .. }),
                "{url}: {err:?}"
            );
            assert!(!err.is_transient());
        }
        Ok(())
    }

    #[tokio::test]
    async fn fetch_connection_refused_is_transient() -> TestResult {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/x", listener.local_addr()?);
        drop(listener);
        let err = fetch_within(&Http::new()?, &url, 10)
            .await?
            .err()
            .ok_or("must fail")?;
        assert!(matches!(err, UploadError::Network(_)), "{err:?}");
        assert!(err.is_transient());
        Ok(())
    }

    #[tokio::test]
    async fn https_goes_through_rustls_and_fails_cleanly_on_a_plain_server() -> TestResult {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("https://{}/x", listener.local_addr()?);
        let server = tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await?;
            let mut hello = [0u8; 5];
            sock.read_exact(&mut hello).await?;
            sock.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").await?;
            Ok::<_, io::Error>(hello)
        });
        let err = fetch_within(&Http::new()?, &url, 10)
            .await?
            .err()
            .ok_or("must fail")?;
        assert!(matches!(err, UploadError::Network(_)), "{err:?}");
        // A TLS handshake record (content type 22) was sent: rustls with our provider.
        assert_eq!(server.await??[0], 22);
        Ok(())
    }

    #[tokio::test]
    async fn fetch_read_timeout_is_transient() -> TestResult {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/slow", listener.local_addr()?);
        let server = tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await?;
            read_request(&mut sock).await?;
            sock.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
                .await?;
            tokio::time::sleep(Duration::from_secs(20)).await;
            Ok::<_, io::Error>(())
        });
        let http = Http::with_timeouts(
            Duration::from_secs(2),
            Duration::from_millis(300),
            Duration::from_secs(10),
        )?;
        let err = fetch_within(&http, &url, 100)
            .await?
            .err()
            .ok_or("must fail")?;
        assert!(matches!(err, UploadError::Network(_)), "{err:?}");
        assert!(err.is_transient());
        server.abort();
        Ok(())
    }

    fn local_slot(base: &str) -> Slot {
        Slot {
            put_url: format!("{base}/upload/slot1/a.bin"),
            put_headers: vec![
                ("Authorization".into(), "Bearer t0k3n".into()),
                ("Expires".into(), "Tue, 01 Jan 2030 00:00:00 GMT".into()),
            ],
            get_url: format!("{base}/upload/slot1/a.bin"),
        }
    }

    #[tokio::test]
    async fn put_sends_the_slot_headers_and_body() -> TestResult {
        let (base, server) = serve_once(
            b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_vec(),
        )
        .await?;
        let body = Bytes::from(vec![7u8; 100]);
        Http::new()?
            .put(
                &local_slot(&base),
                body.clone(),
                Some("application/octet-stream"),
            )
            .await?;
        let (head, got) = server.await??;
        let lower = head.to_ascii_lowercase();
        assert!(
            head.starts_with("PUT /upload/slot1/a.bin HTTP/1.1\r\n"),
            "{head}"
        );
        assert!(
            lower.contains("\r\nauthorization: bearer t0k3n\r\n"),
            "{head}"
        );
        assert!(
            lower.contains("\r\nexpires: tue, 01 jan 2030 00:00:00 gmt\r\n"),
            "{head}"
        );
        assert!(
            lower.contains("\r\ncontent-type: application/octet-stream\r\n"),
            "{head}"
        );
        assert!(lower.contains("\r\ncontent-length: 100\r\n"), "{head}");
        assert_eq!(got, body);
        Ok(())
    }

    #[tokio::test]
    async fn put_refused_is_a_status_error() -> TestResult {
        let (base, server) = serve_once(
            b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                .to_vec(),
        )
        .await?;
        let err = Http::new()?
            .put(&local_slot(&base), Bytes::from_static(b"abc"), None)
            .await
            .err()
            .ok_or("must fail")?;
        assert!(
            matches!(err, UploadError::Status { status: 413 }),
            "{err:?}"
        );
        assert!(!err.is_transient());
        server.await??;
        // A header value HTTP cannot carry is refused before sending.
        let mut slot = local_slot("http://127.0.0.1:9");
        slot.put_headers = vec![("Cookie".into(), "a\u{7f}b".into())];
        let err = Http::new()?
            .put(&slot, Bytes::new(), None)
            .await
            .err()
            .ok_or("must fail")?;
        assert!(matches!(err, UploadError::Malformed(_)), "{err:?}");
        Ok(())
    }
}
