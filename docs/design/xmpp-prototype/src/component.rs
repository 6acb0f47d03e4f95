//! XEP-0114 component connection on a minimal XML stream of our own:
//! rxml's namespace-aware async parser for reading, minidom for building and
//! serialising elements, xmpp-parsers (default `jabber:client` mode) for the
//! typed stanzas. Nothing here depends on tokio-xmpp's `component` feature.
//!
//! Why not tokio-xmpp's `xmlstream::initiate_stream`: its stream-header reader
//! rejects a header without `version='1.0'` unless tokio-xmpp's own
//! `component` feature is on, and XEP-0114 servers (Prosody included) answer
//! with a header without `version`. That feature also flips xmpp-parsers into
//! `jabber:component:accept` mode for the whole build (breaking `Client`).

use std::io;
use std::time::Duration;

use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use xmpp_parsers::component::Handshake;
use xmpp_parsers::minidom::Element;
use rxml::{AsyncReader, Event};
use xmpp_parsers::stanza::Stanza;

use crate::wire::{NS_ACCEPT, from_wire, to_wire};

const NS_STREAM: &str = "http://etherx.jabber.org/streams";

#[derive(Debug)]
pub enum ComponentError {
    Io(io::Error),
    /// `<stream:error/>` from the server (`not-authorized` for a bad secret,
    /// `conflict` if another process is connected as the same component,
    /// `host-unknown` for an unconfigured domain).
    Stream(String),
    /// The server closed the stream (`</stream:stream>` or EOF).
    Closed,
    Protocol(String),
    /// No data for `read_timeout` + `ping_timeout`.
    Timeout,
}

impl std::fmt::Display for ComponentError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Io(e) => write!(f, "i/o: {e}"),
            Self::Stream(s) => write!(f, "stream error: {s}"),
            Self::Closed => write!(f, "stream closed by server"),
            Self::Protocol(s) => write!(f, "protocol: {s}"),
            Self::Timeout => write!(f, "server silent (keepalive ping unanswered)"),
        }
    }
}
impl std::error::Error for ComponentError {}
impl From<io::Error> for ComponentError {
    fn from(e: io::Error) -> Self {
        Self::Io(e)
    }
}

fn stream_error_text(el: &Element) -> String {
    el.children()
        .map(|c| {
            if c.name() == "text" {
                format!("text={:?}", c.text())
            } else {
                c.name().to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// What came in, already translated to `jabber:client`.
#[derive(Debug)]
pub enum Incoming {
    Stanza(Stanza),
    /// A stanza xmpp-parsers refused (kept so the adapter can answer an IQ
    /// with an error instead of dropping it silently).
    Unparsed(Element, String),
}

#[derive(Debug, Clone, Copy)]
pub struct Keepalive {
    /// Silence after which we send an XEP-0199 ping to the server.
    pub idle: Duration,
    /// Further silence after the ping after which the connection is dead.
    pub ping_timeout: Duration,
}

impl Default for Keepalive {
    fn default() -> Self {
        Self {
            idle: Duration::from_secs(60),
            ping_timeout: Duration::from_secs(15),
        }
    }
}

/// Reads top-level elements (children of `<stream:stream>`) from the socket.
/// All parse state lives in this struct, so `next_element` is cancel-safe
/// (usable as a `tokio::select!` branch).
struct ElementReader {
    reader: AsyncReader<BufReader<OwnedReadHalf>>,
    /// Elements being built; `stack[0]` is the top-level stanza.
    stack: Vec<Element>,
}

impl ElementReader {
    /// Returns the stream header's attributes once.
    async fn read_header(&mut self) -> Result<rxml::AttrMap, ComponentError> {
        loop {
            match self.reader.read().await? {
                Some(Event::XmlDeclaration(..)) => continue,
                Some(Event::StartElement(_, (ns, name), attrs)) => {
                    if ns != NS_STREAM || name != "stream" {
                        return Err(ComponentError::Protocol(format!("bad stream header <{name}>")));
                    }
                    return Ok(attrs);
                }
                Some(_) => return Err(ComponentError::Protocol("data before stream header".into())),
                None => return Err(ComponentError::Closed),
            }
        }
    }

    async fn next_element(&mut self) -> Result<Element, ComponentError> {
        loop {
            let ev = self.reader.read().await?.ok_or(ComponentError::Closed)?;
            match ev {
                Event::XmlDeclaration(..) => {}
                Event::StartElement(_, (ns, name), attrs) => {
                    let mut b = Element::builder(name, ns);
                    for ((ans, aname), value) in attrs.into_iter() {
                        b = b.attr_ns(ans, aname, value);
                    }
                    self.stack.push(b.build());
                }
                Event::Text(_, text) => {
                    // depth 0 text = whitespace keepalive between stanzas: ignore
                    if let Some(top) = self.stack.last_mut() {
                        top.append_text_node(text);
                    }
                }
                Event::EndElement(_) => match self.stack.pop() {
                    None => return Err(ComponentError::Closed), // </stream:stream>
                    Some(done) => match self.stack.last_mut() {
                        Some(parent) => {
                            parent.append_child(done);
                        }
                        None => return Ok(done),
                    },
                },
            }
        }
    }
}

pub struct ComponentConn {
    reader: ElementReader,
    writer: OwnedWriteHalf,
    pub domain: String,
    keepalive: Keepalive,
    ping_seq: u64,
    ping_outstanding: bool,
}

impl ComponentConn {
    /// Connect and authenticate (`<handshake/>` = hex(SHA-1(stream id + secret))).
    pub async fn connect(
        addr: &str,
        domain: &str,
        secret: &str,
        keepalive: Keepalive,
    ) -> Result<Self, ComponentError> {
        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let (rd, wr) = tcp.into_split();
        let mut conn = Self {
            reader: ElementReader {
                reader: AsyncReader::new(BufReader::new(rd)),
                stack: Vec::new(),
            },
            writer: wr,
            domain: domain.to_string(),
            keepalive,
            ping_seq: 0,
            ping_outstanding: false,
        };
        // `domain` is a validated JID domain, but escape anyway.
        let header = format!(
            "<?xml version='1.0'?><stream:stream xmlns='{NS_ACCEPT}' xmlns:stream='{NS_STREAM}' to='{}'>",
            domain.replace('&', "&amp;").replace('\'', "&apos;").replace('<', "&lt;")
        );
        conn.writer.write_all(header.as_bytes()).await?;
        let attrs = conn.reader.read_header().await?;
        let stream_id = attrs
            .get(rxml::Namespace::none(), "id")
            .cloned()
            .ok_or_else(|| ComponentError::Protocol("no stream id in server header".into()))?;
        // XEP-0114 has no <stream:features/>: authenticate right away.
        let hs = Element::from(Handshake::from_stream_id_and_password(stream_id, secret));
        conn.write(&hs).await?;
        let reply = conn.reader.next_element().await?;
        if reply.is("handshake", NS_ACCEPT) {
            Ok(conn)
        } else if reply.is("error", NS_STREAM) {
            Err(ComponentError::Stream(stream_error_text(&reply)))
        } else {
            Err(ComponentError::Protocol(format!("unexpected <{}/> instead of handshake", reply.name())))
        }
    }

    async fn write(&mut self, el: &Element) -> Result<(), ComponentError> {
        let mut buf = Vec::with_capacity(256);
        el.write_to(&mut buf)
            .map_err(|e| ComponentError::Protocol(format!("serialise: {e}")))?;
        log::trace!("component SEND {}", String::from_utf8_lossy(&buf));
        self.writer.write_all(&buf).await?;
        Ok(())
    }

    /// Send a stanza built with xmpp-parsers (jabber:client). The caller sets
    /// `from` (a JID on the component's domain) and `to`.
    pub async fn send(&mut self, stanza: impl Into<Stanza>) -> Result<(), ComponentError> {
        self.send_element(Element::from(&stanza.into())).await
    }

    /// Send a raw element in jabber:client; translated to the wire namespace here.
    pub async fn send_element(&mut self, el: Element) -> Result<(), ComponentError> {
        self.write(&to_wire(el)).await
    }

    /// Next stanza (cancel-safe). Silence is answered with a ping; the ping's
    /// result (id `ka-N`) is swallowed. Errors are returned so the caller can
    /// reconnect; they are never turned into a silent end of stream.
    pub async fn next(&mut self) -> Result<Incoming, ComponentError> {
        loop {
            let limit = if self.ping_outstanding {
                self.keepalive.ping_timeout
            } else {
                self.keepalive.idle
            };
            let el = match tokio::time::timeout(limit, self.reader.next_element()).await {
                Ok(r) => r?,
                Err(_) if self.ping_outstanding => return Err(ComponentError::Timeout),
                Err(_) => {
                    self.ping_seq += 1;
                    self.ping_outstanding = true;
                    let server = self
                        .domain
                        .split_once('.')
                        .map(|(_, parent)| parent.to_string())
                        .unwrap_or_else(|| self.domain.clone());
                    let ping: Element = format!(
                        "<iq xmlns='jabber:client' type='get' id='ka-{}' from='{}' to='{}'><ping xmlns='urn:xmpp:ping'/></iq>",
                        self.ping_seq, self.domain, server
                    )
                    .parse()
                    .map_err(|e| ComponentError::Protocol(format!("{e}")))?;
                    self.send_element(ping).await?;
                    continue;
                }
            };
            self.ping_outstanding = false; // any data proves liveness
            if el.is("error", NS_STREAM) {
                return Err(ComponentError::Stream(stream_error_text(&el)));
            }
            if el.name() == "iq"
                && matches!(el.attr("type"), Some("result") | Some("error"))
                && el.attr("id").is_some_and(|id| id.starts_with("ka-"))
            {
                continue;
            }
            let el = from_wire(el);
            return Ok(match Stanza::try_from(el.clone()) {
                Ok(st) => Incoming::Stanza(st),
                Err(e) => Incoming::Unparsed(el, format!("{e:?}")),
            });
        }
    }

    /// Send `</stream:stream>` and shut the socket down.
    pub async fn close(mut self) {
        let _ = self.writer.write_all(b"</stream:stream>").await;
        let _ = self.writer.shutdown().await;
    }
}
