//! Our own [XEP-0114](https://xmpp.org/extensions/xep-0114.html) (Jabber Component Protocol)
//! connection.
//!
//! The connection runs over any `AsyncRead + AsyncWrite` transport
//! ([`ComponentConnection::handshake`]), so tests drive it over [`tokio::io::duplex`];
//! [`connect`] is the TCP helper.
//!
//! 1. We send the stream header (`xmlns='jabber:component:accept'`, `to=` the component domain).
//! 2. We read the server's header and its `id` (XEP-0114 servers answer without `version`,
//!    which is why tokio-xmpp's stream code cannot be used without its `component` feature).
//! 3. We send `<handshake>` with the lowercase hex SHA-1 of `id + secret`.
//! 4. An empty `<handshake/>` means success; a `<stream:error/>` (`not-authorized` for a wrong
//!    secret) becomes a typed [`ComponentError`].
//!
//! Afterwards [`ComponentConnection::next_element`] yields each stanza as a minidom
//! [`Element`] already rewritten to `jabber:client` (see [`crate::wire`]), ready for
//! xmpp-parsers' default types, and [`ComponentConnection::send`] writes stanzas back in
//! `jabber:component:accept`.
//!
//! Malformed input never panics. Invalid XML ends the stream with an error. A stanza larger
//! than the configured limit or nested too deeply is skipped ([`ComponentError::Skipped`]: read
//! to its end without being kept, the stream goes on), since any room occupant can send one
//! and the server passes it on; only one over [`HARD_LIMIT_FACTOR`] times the limit ends the
//! stream.

use std::io;

use bridge_core::richtext::html::escape;
use rxml::{AsyncReader, Event};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufReader, ReadHalf, WriteHalf};
use tokio::net::{TcpStream, ToSocketAddrs};
use xmpp_parsers::component::Handshake;
use xmpp_parsers::minidom::Element;

use crate::wire::{NS_ACCEPT, NS_CLIENT, to_wire};

/// The namespace of the `<stream:stream>` element and of `<stream:error/>`.
pub const NS_STREAM: &str = "http://etherx.jabber.org/streams";
/// The namespace of stream error conditions and their `<text/>`.
pub const NS_STREAM_ERRORS: &str = "urn:ietf:params:xml:ns:xmpp-streams";

/// Default limit on the size of one incoming stanza, in bytes of XML.
pub const DEFAULT_MAX_STANZA_BYTES: usize = 1024 * 1024;
/// Maximum nesting depth of an incoming stanza (the stanza itself is depth 1); deeper ones are
/// skipped.
pub const MAX_DEPTH: usize = 64;
/// A stanza being skipped ends the stream once it exceeds this many times the size limit: the
/// XML parser still tracks the names of the open elements, so skipping is not free forever.
pub const HARD_LIMIT_FACTOR: usize = 16;

/// How long [`ComponentConnection::close`] waits for the server to end its stream.
pub const CLOSE_DRAIN: std::time::Duration = std::time::Duration::from_secs(3);

/// Why the component connection failed or ended.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ComponentError {
    /// The transport failed (connection refused, reset…).
    #[error("i/o error on the component connection: {0}")]
    Io(#[from] io::Error),
    /// The server sent XML we cannot parse (not well-formed, not namespace-valid…).
    #[error("invalid XML on the component stream: {0}")]
    Xml(String),
    /// An incoming stanza exceeded a limit (size or nesting depth) and was skipped: read to its
    /// end and dropped. Not fatal: the stream goes on with the next stanza.
    #[error("incoming stanza skipped: {0}")]
    Skipped(String),
    /// An incoming stanza exceeded [`HARD_LIMIT_FACTOR`] times the size limit: the stream ends.
    #[error("incoming stanza too large: {0}")]
    TooLarge(String),
    /// The server sent something XEP-0114 does not allow at that point.
    #[error("component protocol violation: {0}")]
    Protocol(String),
    /// The server refused our handshake (`not-authorized`: wrong secret, or a domain the
    /// server does not know as a component).
    #[error("the server refused the component handshake (wrong secret?){}", text_suffix(.text))]
    HandshakeRefused {
        /// The server's explanation, if it sent one.
        text: Option<String>,
    },
    /// The server ended the stream with a `<stream:error/>`.
    #[error("stream error from the server: {condition}{}", text_suffix(.text))]
    Stream {
        /// The defined condition, e.g. `conflict`, `host-unknown`, `invalid-from`.
        condition: String,
        /// The server's explanation, if it sent one.
        text: Option<String>,
    },
    /// The server closed the stream (`</stream:stream>` or end of file), or it was already
    /// ended by an earlier error.
    #[error("the component stream was closed")]
    Closed,
}

fn text_suffix(text: &Option<String>) -> String {
    text.as_deref()
        .map(|t| format!(": {t}"))
        .unwrap_or_default()
}

/// Turns the reader's I/O errors into [`ComponentError`]s: rxml reports XML errors as
/// [`io::ErrorKind::InvalidData`], the end of the transport inside the open stream as
/// [`rxml::Error::InvalidEof`].
fn read_error(e: io::Error) -> ComponentError {
    let inner = e.get_ref().and_then(|i| i.downcast_ref::<rxml::Error>());
    if matches!(inner, Some(rxml::Error::InvalidEof(_))) {
        return ComponentError::Closed;
    }
    match e.kind() {
        io::ErrorKind::InvalidData => ComponentError::Xml(e.to_string()),
        io::ErrorKind::UnexpectedEof => ComponentError::Closed,
        _ => ComponentError::Io(e),
    }
}

/// Reads `(condition, text)` from a `<stream:error/>` element.
fn stream_error_parts(el: &Element) -> (String, Option<String>) {
    let condition = el
        .children()
        .find(|c| c.ns() == NS_STREAM_ERRORS && c.name() != "text")
        .map_or_else(|| "undefined-condition".to_owned(), |c| c.name().to_owned());
    let text = el
        .get_child("text", NS_STREAM_ERRORS)
        .map(Element::text)
        .filter(|t| !t.is_empty());
    (condition, text)
}

fn stream_error(el: &Element) -> ComponentError {
    let (condition, text) = stream_error_parts(el);
    ComponentError::Stream { condition, text }
}

/// Reads the children of `<stream:stream>` as elements. All parse state lives in this struct
/// (rxml's reader keeps its own buffer and state), so a pending read can be dropped and
/// restarted, e.g. as a `tokio::select!` branch.
struct ElementReader<R> {
    reader: AsyncReader<BufReader<R>>,
    /// Elements being built; `stack[0]` is the top-level stanza.
    stack: Vec<Element>,
    /// Bytes of XML read for the stanza being built.
    size: usize,
    max_size: usize,
    /// Set after an error or the end of the stream: nothing more will be read.
    done: bool,
    /// While skipping a stanza over a limit: how many of its elements are open, and why.
    skipping: Option<(usize, String)>,
}

impl<R: AsyncRead + Unpin> ElementReader<R> {
    fn new(inner: R, max_size: usize) -> Self {
        Self {
            reader: AsyncReader::new(BufReader::new(inner)),
            stack: Vec::new(),
            size: 0,
            max_size,
            done: false,
            skipping: None,
        }
    }

    async fn event(&mut self) -> Result<Event, ComponentError> {
        if self.done {
            return Err(ComponentError::Closed);
        }
        match self.reader.read().await {
            Ok(Some(ev)) => Ok(ev),
            Ok(None) => {
                self.done = true;
                Err(ComponentError::Closed)
            }
            Err(e) => {
                self.done = true;
                Err(read_error(e))
            }
        }
    }

    /// Reads up to the server's `<stream:stream>` and returns its `id` attribute.
    async fn read_header(&mut self) -> Result<String, ComponentError> {
        loop {
            match self.event().await? {
                Event::XmlDeclaration(..) => {}
                Event::StartElement(_, (ns, name), attrs) => {
                    if ns.as_str() != NS_STREAM || name.as_str() != "stream" {
                        self.done = true;
                        return Err(ComponentError::Protocol(format!(
                            "expected <stream:stream>, got <{name}> in namespace {ns:?}"
                        )));
                    }
                    return attrs
                        .get(rxml::Namespace::none(), "id")
                        .filter(|id| !id.is_empty())
                        .cloned()
                        .ok_or_else(|| {
                            self.done = true;
                            ComponentError::Protocol("the server's stream header has no id".into())
                        });
                }
                Event::Text(..) | Event::EndElement(..) => {
                    self.done = true;
                    return Err(ComponentError::Protocol(
                        "data before the server's stream header".into(),
                    ));
                }
            }
        }
    }

    /// Counts `bytes` of the current stanza; false when it is now over the limit.
    fn account(&mut self, bytes: usize) -> bool {
        self.size = self.size.saturating_add(bytes);
        self.size <= self.max_size
    }

    /// Starts skipping the current stanza, `open` of whose elements are open.
    fn skip(&mut self, open: usize, why: String) {
        self.stack.clear();
        self.skipping = Some((open, why));
    }

    /// Reads past one event of a stanza being skipped; `Some` when the stanza is over (or the
    /// skipping went on for too long).
    fn skip_event(&mut self, event: &Event) -> Option<ComponentError> {
        let (open, _) = self.skipping.as_mut()?;
        match event {
            Event::StartElement(..) => *open += 1,
            Event::EndElement(..) => *open -= 1,
            Event::Text(..) | Event::XmlDeclaration(..) => {}
        }
        let over = *open == 0;
        let bytes = match event {
            Event::StartElement(m, ..) | Event::EndElement(m) | Event::Text(m, _) => m.len(),
            Event::XmlDeclaration(m, _) => m.len(),
        };
        self.size = self.size.saturating_add(bytes);
        if self.size > self.max_size.saturating_mul(HARD_LIMIT_FACTOR) {
            self.done = true;
            self.skipping = None;
            return Some(ComponentError::TooLarge(format!(
                "more than {} bytes",
                self.max_size.saturating_mul(HARD_LIMIT_FACTOR)
            )));
        }
        if over {
            let (_, why) = self.skipping.take()?;
            return Some(ComponentError::Skipped(why));
        }
        None
    }

    /// The next complete child of `<stream:stream>`, exactly as received (no namespace
    /// rewriting).
    async fn next_raw(&mut self) -> Result<Element, ComponentError> {
        let too_big = |max: usize| format!("more than {max} bytes");
        loop {
            let event = self.event().await?;
            if self.skipping.is_some() {
                match self.skip_event(&event) {
                    Some(e) => return Err(e),
                    None => continue,
                }
            }
            match event {
                Event::XmlDeclaration(..) => {}
                Event::StartElement(metrics, (ns, name), attrs) => {
                    if self.stack.is_empty() {
                        self.size = 0;
                    }
                    if !self.account(metrics.len()) {
                        self.skip(self.stack.len() + 1, too_big(self.max_size));
                        continue;
                    }
                    if self.stack.len() >= MAX_DEPTH {
                        let why = format!("nested deeper than {MAX_DEPTH} elements");
                        self.skip(self.stack.len() + 1, why);
                        continue;
                    }
                    // The stream's namespace becomes `jabber:client` as the element is built
                    // (what `wire::from_wire` does, without rebuilding the tree afterwards).
                    let ns = if ns.as_str() == NS_ACCEPT {
                        NS_CLIENT
                    } else {
                        ns.as_str()
                    };
                    let mut el = Element::builder(name.as_str(), ns).build();
                    *el.attrs_mut() = attrs;
                    self.stack.push(el);
                }
                Event::Text(metrics, text) => {
                    // Text between stanzas is whitespace keepalive: ignored.
                    if !self.stack.is_empty() {
                        if !self.account(metrics.len()) {
                            self.skip(self.stack.len(), too_big(self.max_size));
                            continue;
                        }
                        if let Some(top) = self.stack.last_mut() {
                            top.append_text_node(text);
                        }
                    }
                }
                Event::EndElement(metrics) => match self.stack.pop() {
                    // The end of <stream:stream>.
                    None => {
                        self.done = true;
                        return Err(ComponentError::Closed);
                    }
                    Some(done) => {
                        if !self.account(metrics.len()) {
                            if self.stack.is_empty() {
                                return Err(ComponentError::Skipped(too_big(self.max_size)));
                            }
                            self.skip(self.stack.len(), too_big(self.max_size));
                            continue;
                        }
                        match self.stack.last_mut() {
                            Some(parent) => {
                                parent.append_child(done);
                            }
                            None => return Ok(done),
                        }
                    }
                },
            }
        }
    }
}

/// An authenticated XEP-0114 component stream over `S`.
///
/// Stanzas come out of [`next_element`](Self::next_element) in `jabber:client` and go into
/// [`send`](Self::send) in `jabber:client`; the wire uses `jabber:component:accept`.
pub struct ComponentConnection<S> {
    reader: ElementReader<ReadHalf<S>>,
    writer: WriteHalf<S>,
    domain: String,
    stream_id: String,
}

impl<S> std::fmt::Debug for ComponentConnection<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ComponentConnection")
            .field("domain", &self.domain)
            .field("stream_id", &self.stream_id)
            .finish_non_exhaustive()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> ComponentConnection<S> {
    /// Opens the component stream for `domain` over `io` and authenticates with `secret`,
    /// accepting incoming stanzas up to [`DEFAULT_MAX_STANZA_BYTES`].
    pub async fn handshake(io: S, domain: &str, secret: &str) -> Result<Self, ComponentError> {
        Self::handshake_with_limit(io, domain, secret, DEFAULT_MAX_STANZA_BYTES).await
    }

    /// Like [`handshake`](Self::handshake), with a limit on the size (in bytes of XML) of each
    /// incoming stanza; a larger one is skipped ([`ComponentError::Skipped`]), and one over
    /// [`HARD_LIMIT_FACTOR`] times the limit ends the stream ([`ComponentError::TooLarge`]).
    pub async fn handshake_with_limit(
        io: S,
        domain: &str,
        secret: &str,
        max_stanza_bytes: usize,
    ) -> Result<Self, ComponentError> {
        let (rd, wr) = tokio::io::split(io);
        let mut conn = Self {
            reader: ElementReader::new(rd, max_stanza_bytes),
            writer: wr,
            domain: domain.to_owned(),
            stream_id: String::new(),
        };
        let mut header = format!(
            "<?xml version='1.0'?><stream:stream xmlns='{NS_ACCEPT}' \
             xmlns:stream='{NS_STREAM}' to='"
        );
        escape(&mut header, domain);
        header.push_str("'>");
        conn.writer.write_all(header.as_bytes()).await?;
        conn.writer.flush().await?;
        conn.stream_id = conn.reader.read_header().await?;
        tracing::debug!(domain, stream_id = %conn.stream_id, "component stream opened");

        // XEP-0114 has no <stream:features/>: authenticate right away.
        let hs = Element::from(Handshake::from_stream_id_and_password(
            conn.stream_id.clone(),
            secret,
        ));
        conn.write(&hs).await?;
        let reply = conn.reader.next_raw().await?;
        if reply.is("handshake", NS_CLIENT) {
            if reply.children().next().is_some() || !reply.text().trim().is_empty() {
                return Err(ComponentError::Protocol(
                    "the server's <handshake/> reply is not empty".into(),
                ));
            }
            tracing::info!(domain, "component handshake accepted");
            Ok(conn)
        } else if reply.is("error", NS_STREAM) {
            conn.reader.done = true;
            let (condition, text) = stream_error_parts(&reply);
            tracing::warn!(domain, condition, ?text, "component handshake failed");
            if condition == "not-authorized" {
                Err(ComponentError::HandshakeRefused { text })
            } else {
                Err(ComponentError::Stream { condition, text })
            }
        } else {
            Err(ComponentError::Protocol(format!(
                "expected <handshake/>, got <{}> in namespace {:?}",
                reply.name(),
                reply.ns()
            )))
        }
    }

    /// The component domain this stream serves.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The stream ID the server chose.
    pub fn stream_id(&self) -> &str {
        &self.stream_id
    }

    /// The next incoming stanza, rewritten from `jabber:component:accept` to `jabber:client`
    /// so that `xmpp_parsers` types (`Message`, `Presence`, `Iq`) parse it.
    ///
    /// A `<stream:error/>` becomes [`ComponentError::Stream`], the end of the stream
    /// [`ComponentError::Closed`]. After any error but [`ComponentError::Skipped`] the stream is
    /// over: later calls return [`ComponentError::Closed`].
    pub async fn next_element(&mut self) -> Result<Element, ComponentError> {
        let el = self.reader.next_raw().await?;
        if el.is("error", NS_STREAM) {
            self.reader.done = true;
            let err = stream_error(&el);
            tracing::warn!(domain = %self.domain, error = %err, "component stream ended");
            return Err(err);
        }
        Ok(el)
    }

    /// Sends a stanza built in `jabber:client` (e.g. an `xmpp_parsers::message::Message`); it
    /// goes out in `jabber:component:accept`, its payload namespaces untouched. The caller sets
    /// `from` (a JID on the component domain) and `to`.
    pub async fn send(&mut self, stanza: impl Into<Element>) -> Result<(), ComponentError> {
        let mut stanza = to_wire(stanza.into());
        // minidom panics on characters XML cannot carry; text from other networks may hold them.
        crate::xml::sanitize(&mut stanza);
        self.write(&stanza).await
    }

    async fn write(&mut self, el: &Element) -> Result<(), ComponentError> {
        let mut buf = Vec::with_capacity(256);
        el.write_to(&mut buf)
            .map_err(|e| ComponentError::Xml(format!("cannot serialise <{}>: {e}", el.name())))?;
        tracing::trace!(domain = %self.domain, len = buf.len(), "component send <{}>", el.name());
        self.writer.write_all(&buf).await?;
        self.writer.flush().await?;
        Ok(())
    }

    /// Ends our side of the stream (`</stream:stream>`), shuts our sending side down, and
    /// reads (discarding it) what the server still sends until it ends its side too, at most
    /// [`CLOSE_DRAIN`]. Closing with the server's data unread makes the kernel reset the
    /// connection, and a server may then lose what we wrote that it had not read yet: seen
    /// with Prosody, which dropped the last messages a component wrote before a clean restart.
    pub async fn close(mut self) -> Result<(), ComponentError> {
        self.writer.write_all(b"</stream:stream>").await?;
        self.writer.shutdown().await?;
        let drain = async {
            while let Ok(_) | Err(ComponentError::Skipped(_)) = self.next_element().await {}
        };
        if tokio::time::timeout(CLOSE_DRAIN, drain).await.is_err() {
            tracing::debug!(domain = %self.domain, "the server did not end its stream in time");
        }
        Ok(())
    }
}

/// Connects over TCP to the server's component port at `addr` (Prosody: 5347) and
/// authenticates as `domain` with `secret`.
pub async fn connect(
    addr: impl ToSocketAddrs,
    domain: &str,
    secret: &str,
) -> Result<ComponentConnection<TcpStream>, ComponentError> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    ComponentConnection::handshake(tcp, domain, secret).await
}

#[cfg(test)]
pub(crate) mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, DuplexStream};
    use xmpp_parsers::message::{Message, MessageType};

    use super::*;
    use crate::wire::NS_CLIENT;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    const DOMAIN: &str = "bridge.localhost";
    const SECRET: &str = "s3cr3t";
    const STREAM_ID: &str = "3BF96D32";
    /// `printf '%s' '3BF96D32s3cr3t' | sha1sum`
    const DIGEST: &str = "ba33290100f616a33656a931798d6c9011cfa840";
    const SERVER_HEADER: &str = "<?xml version='1.0'?><stream:stream \
        xmlns:stream='http://etherx.jabber.org/streams' xmlns='jabber:component:accept' \
        from='bridge.localhost' id='3BF96D32'>";

    /// Reads from the fake server's side until `needle` has arrived; returns what was read.
    pub(crate) async fn read_until<T: AsyncRead + Unpin>(
        server: &mut T,
        needle: &str,
    ) -> Result<String, io::Error> {
        let mut got = Vec::new();
        let mut chunk = [0u8; 4096];
        while !String::from_utf8_lossy(&got).contains(needle) {
            let n = tokio::time::timeout(Duration::from_secs(5), server.read(&mut chunk))
                .await
                .map_err(|_| io::Error::other(format!("timed out waiting for {needle:?}")))??;
            if n == 0 {
                return Err(io::Error::other(format!("EOF before {needle:?}")));
            }
            got.extend_from_slice(&chunk[..n]);
        }
        Ok(String::from_utf8_lossy(&got).into_owned())
    }

    /// Plays the server's side of a handshake; returns what the client wrote.
    pub(crate) async fn fake_server_handshake<T: AsyncRead + AsyncWrite + Unpin>(
        server: &mut T,
        reply: &str,
    ) -> Result<String, io::Error> {
        let mut wrote = read_until(server, "'>").await?;
        server.write_all(SERVER_HEADER.as_bytes()).await?;
        wrote += &read_until(server, "</handshake>").await?;
        server.write_all(reply.as_bytes()).await?;
        Ok(wrote)
    }

    async fn established()
    -> Result<(ComponentConnection<DuplexStream>, DuplexStream), Box<dyn std::error::Error>> {
        established_with_limit(DEFAULT_MAX_STANZA_BYTES).await
    }

    async fn established_with_limit(
        limit: usize,
    ) -> Result<(ComponentConnection<DuplexStream>, DuplexStream), Box<dyn std::error::Error>> {
        let (client, mut server) = tokio::io::duplex(64 * 1024);
        let (conn, wrote) = tokio::join!(
            ComponentConnection::handshake_with_limit(client, DOMAIN, SECRET, limit),
            fake_server_handshake(&mut server, "<handshake/>"),
        );
        wrote?;
        Ok((conn?, server))
    }

    async fn next(conn: &mut ComponentConnection<DuplexStream>) -> Result<Element, ComponentError> {
        tokio::time::timeout(Duration::from_secs(5), conn.next_element())
            .await
            .map_err(|_| ComponentError::Protocol("test timed out".into()))?
    }

    #[tokio::test]
    async fn successful_handshake_sends_header_and_sha1_digest() -> TestResult {
        let (client, mut server) = tokio::io::duplex(64 * 1024);
        let (conn, wrote) = tokio::join!(
            ComponentConnection::handshake(client, DOMAIN, SECRET),
            fake_server_handshake(&mut server, "<handshake/>"),
        );
        let conn = conn?;
        let wrote = wrote?;
        assert_eq!(conn.stream_id(), STREAM_ID);
        assert_eq!(conn.domain(), DOMAIN);

        let header_end = wrote.find("'>").ok_or("no header")? + 2;
        let header = &wrote[..header_end];
        assert!(header.contains("<stream:stream"), "{header}");
        assert!(
            header.contains("xmlns='jabber:component:accept'"),
            "{header}"
        );
        assert!(
            header.contains("xmlns:stream='http://etherx.jabber.org/streams'"),
            "{header}"
        );
        assert!(header.contains("to='bridge.localhost'"), "{header}");

        let hs: Element = wrote[header_end..].parse()?;
        assert!(hs.is("handshake", NS_ACCEPT), "{hs:?}");
        assert_eq!(hs.text(), DIGEST);
        Ok(())
    }

    #[tokio::test]
    async fn refused_handshake_is_a_typed_error() -> TestResult {
        let (client, mut server) = tokio::io::duplex(64 * 1024);
        let (conn, wrote) = tokio::join!(
            ComponentConnection::handshake(client, DOMAIN, "wrong"),
            fake_server_handshake(
                &mut server,
                "<stream:error><not-authorized xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>\
                 <text xmlns='urn:ietf:params:xml:ns:xmpp-streams'>Invalid secret</text>\
                 </stream:error></stream:stream>",
            ),
        );
        wrote?;
        match conn {
            Err(ComponentError::HandshakeRefused { text }) => {
                assert_eq!(text.as_deref(), Some("Invalid secret"));
            }
            other => panic!("expected HandshakeRefused, got {other:?}"),
        }
        Ok(())
    }

    #[tokio::test]
    async fn other_stream_error_during_handshake() -> TestResult {
        let (client, mut server) = tokio::io::duplex(64 * 1024);
        let (conn, wrote) = tokio::join!(
            ComponentConnection::handshake(client, DOMAIN, SECRET),
            fake_server_handshake(
                &mut server,
                "<stream:error><conflict xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>\
                 </stream:error>",
            ),
        );
        wrote?;
        let err = conn.err().ok_or("handshake must fail")?;
        assert!(
            matches!(&err, ComponentError::Stream { condition, text: None } if condition == "conflict"),
            "{err:?}"
        );
        assert_eq!(err.to_string(), "stream error from the server: conflict");
        Ok(())
    }

    #[tokio::test]
    async fn header_without_id_is_a_protocol_error() -> TestResult {
        let (client, mut server) = tokio::io::duplex(64 * 1024);
        let server_side = async {
            read_until(&mut server, "'>").await?;
            server
                .write_all(
                    b"<stream:stream xmlns:stream='http://etherx.jabber.org/streams' \
                      xmlns='jabber:component:accept'>",
                )
                .await
        };
        let (conn, wrote) = tokio::join!(
            ComponentConnection::handshake(client, DOMAIN, SECRET),
            server_side
        );
        wrote?;
        assert!(matches!(conn, Err(ComponentError::Protocol(_))), "{conn:?}");
        Ok(())
    }

    #[tokio::test]
    async fn incoming_message_parses_as_client_message() -> TestResult {
        let (mut conn, mut server) = established().await?;
        server
            .write_all(
                b" \n<message from='bob@localhost/res' to='alice@bridge.localhost' type='chat' \
                  id='m1'><body>hello &amp; bye</body>\
                  <origin-id xmlns='urn:xmpp:sid:0' id='o1'/></message>",
            )
            .await?;
        let el = next(&mut conn).await?;
        assert_eq!(el.ns(), NS_CLIENT);
        assert!(el.get_child("origin-id", "urn:xmpp:sid:0").is_some());
        let msg = Message::try_from(el)?;
        assert_eq!(msg.type_, MessageType::Chat);
        assert_eq!(msg.id.as_ref().map(|id| id.0.as_str()), Some("m1"));
        assert_eq!(
            msg.from.as_ref().map(ToString::to_string).as_deref(),
            Some("bob@localhost/res")
        );
        assert_eq!(
            msg.bodies.values().next().map(String::as_str),
            Some("hello & bye")
        );
        Ok(())
    }

    #[tokio::test]
    async fn sent_message_uses_component_namespace_and_keeps_payloads() -> TestResult {
        let (mut conn, mut server) = established().await?;
        let msg = Message::try_from(
            "<message xmlns='jabber:client' from='alice@bridge.localhost/x' \
             to='lobby@conference.localhost' type='groupchat' id='s1'>\
             <body>hi</body><origin-id xmlns='urn:xmpp:sid:0' id='o1'/>\
             <x xmlns='jabber:x:oob'><url>https://example.org/a.png</url></x></message>"
                .parse::<Element>()?,
        )?;
        conn.send(msg).await?;
        let wrote = read_until(&mut server, "</message>").await?;
        let el: Element = wrote.parse()?;
        assert!(el.is("message", NS_ACCEPT), "{wrote}");
        assert_eq!(el.attr("to"), Some("lobby@conference.localhost"));
        assert_eq!(el.attr("type"), Some("groupchat"));
        assert_eq!(
            el.get_child("body", NS_ACCEPT)
                .map(Element::text)
                .as_deref(),
            Some("hi"),
            "{wrote}"
        );
        assert!(el.get_child("body", NS_CLIENT).is_none(), "{wrote}");
        assert!(
            el.get_child("origin-id", "urn:xmpp:sid:0").is_some(),
            "{wrote}"
        );
        let oob = el
            .get_child("x", "jabber:x:oob")
            .ok_or("oob payload lost")?;
        assert!(oob.get_child("url", "jabber:x:oob").is_some(), "{wrote}");
        assert!(!wrote.contains("jabber:client"), "{wrote}");
        Ok(())
    }

    #[tokio::test]
    async fn malformed_xml_is_an_error_not_a_panic() -> TestResult {
        let (mut conn, mut server) = established().await?;
        server
            .write_all(b"<message><body>unclosed</message>")
            .await?;
        let err = next(&mut conn).await.err().ok_or("must fail")?;
        assert!(matches!(err, ComponentError::Xml(_)), "{err:?}");
        // the stream is over afterwards
        assert!(matches!(next(&mut conn).await, Err(ComponentError::Closed)));
        Ok(())
    }

    #[tokio::test]
    async fn garbage_is_an_error_not_a_panic() -> TestResult {
        let (mut conn, mut server) = established().await?;
        server.write_all(b"<<<\x00\xff>>>").await?;
        let err = next(&mut conn).await.err().ok_or("must fail")?;
        assert!(matches!(err, ComponentError::Xml(_)), "{err:?}");
        Ok(())
    }

    #[tokio::test]
    async fn oversize_stanza_is_skipped_and_the_stream_goes_on() -> TestResult {
        let (mut conn, mut server) = established_with_limit(1024).await?;
        for (tag, text) in [("body", "x".repeat(4096)), ("x", "<y/>".repeat(1024))] {
            let big = format!(
                "<message to='a@bridge.localhost'><{tag}>{text}</{tag}></message>\
                 <message to='a@bridge.localhost' id='next'/>"
            );
            server.write_all(big.as_bytes()).await?;
            let err = next(&mut conn).await.err().ok_or("must fail")?;
            assert!(matches!(err, ComponentError::Skipped(_)), "{err:?}");
            let el = next(&mut conn).await?;
            assert_eq!(el.attr("id"), Some("next"));
        }
        Ok(())
    }

    #[tokio::test]
    async fn deeply_nested_stanza_is_skipped_and_the_stream_goes_on() -> TestResult {
        let (mut conn, mut server) = established().await?;
        let deep = format!(
            "<message to='a@bridge.localhost'>{}{}</message><message id='next'/>",
            "<a>".repeat(1000),
            "</a>".repeat(1000)
        );
        server.write_all(deep.as_bytes()).await?;
        let err = next(&mut conn).await.err().ok_or("must fail")?;
        assert!(matches!(err, ComponentError::Skipped(_)), "{err:?}");
        let el = next(&mut conn).await?;
        assert_eq!(el.attr("id"), Some("next"));
        Ok(())
    }

    #[tokio::test]
    async fn a_stanza_far_over_the_limit_ends_the_stream() -> TestResult {
        let (mut conn, mut server) = established_with_limit(1024).await?;
        let deep = "<a>".repeat(1024 * HARD_LIMIT_FACTOR);
        server.write_all(deep.as_bytes()).await?;
        let err = next(&mut conn).await.err().ok_or("must fail")?;
        assert!(matches!(err, ComponentError::TooLarge(_)), "{err:?}");
        assert!(matches!(next(&mut conn).await, Err(ComponentError::Closed)));
        Ok(())
    }

    #[tokio::test]
    async fn stream_error_and_close_after_handshake() -> TestResult {
        let (mut conn, mut server) = established().await?;
        server
            .write_all(
                b"<stream:error><system-shutdown xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>\
                  </stream:error></stream:stream>",
            )
            .await?;
        let err = next(&mut conn).await.err().ok_or("must fail")?;
        assert!(
            matches!(&err, ComponentError::Stream { condition, .. } if condition == "system-shutdown"),
            "{err:?}"
        );

        let (mut conn, mut server) = established().await?;
        server.write_all(b"</stream:stream>").await?;
        assert!(matches!(next(&mut conn).await, Err(ComponentError::Closed)));

        let (mut conn, server) = established().await?;
        drop(server);
        let r = next(&mut conn).await;
        assert!(matches!(r, Err(ComponentError::Closed)), "{r:?}");
        Ok(())
    }

    #[tokio::test]
    async fn close_ends_our_stream() -> TestResult {
        let (conn, mut server) = established().await?;
        // The server reads everything up to our end of stream, still sends a stanza, then ends
        // its own stream; `close` reads until then.
        let server_side = tokio::spawn(async move {
            let mut rest = String::new();
            server.read_to_string(&mut rest).await?;
            server
                .write_all(b"<message from='a@b' to='c@bridge.example'/>")
                .await?;
            server.write_all(b"</stream:stream>").await?;
            Ok::<_, std::io::Error>(rest)
        });
        conn.close().await?;
        let rest = server_side.await??;
        assert!(rest.ends_with("</stream:stream>"), "{rest}");
        Ok(())
    }

    #[tokio::test]
    async fn connect_over_tcp() -> TestResult {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let server = tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await?;
            fake_server_handshake(&mut sock, "<handshake/>").await?;
            Ok::<_, io::Error>(sock)
        });
        let conn = connect(addr, DOMAIN, SECRET).await?;
        assert_eq!(conn.stream_id(), STREAM_ID);
        let _sock = server.await??;
        Ok(())
    }
}
