//! A byte-level guard in front of tokio-xmpp's XML parser (client mode).
//!
//! tokio-xmpp builds every incoming stanza into a tree by recursion, one stack frame per
//! level: a stanza nested a few thousand levels deep (tens of kB, under any server's size
//! limit) overflows a thread's stack and aborts the process, which nothing can catch. The
//! component connection reads with the bridge's own parser and skips such stanzas
//! ([`crate::component::MAX_DEPTH`]); client mode reads through tokio-xmpp, so its connection
//! is wrapped in [`DepthGuard`], which passes the stream through unchanged except for elements
//! nested deeper than [`crate::component::MAX_DEPTH`] below the stanza: those are cut out,
//! whole, with what they contain. What is left is well-formed and still the same stanza (a
//! payload that deep is nothing the bridge reads). Prosody itself refuses stanzas deeper than
//! about 130 levels, so with Prosody nothing is ever cut; other servers may pass them.
//!
//! The guard understands as much XML as an XMPP stream may hold (RFC 6120 §11: no comments,
//! processing instructions or DTDs from a well-behaved server, but it steps over them too):
//! start, end and empty-element tags with quoted attribute values (which may hold `>`), text,
//! CDATA sections, comments, the XML declaration, and stream restarts (a new
//! `<stream:stream>` after STARTTLS or SASL, without the old one closed).

use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The deepest element passed on, counted from the stream's root element (1): the stanza is at
/// 2, so a stanza keeps [`crate::component::MAX_DEPTH`] levels, as in component mode.
const MAX_STREAM_DEPTH: usize = crate::component::MAX_DEPTH + 1;
/// How much is read from the connection at a time.
const READ_CHUNK: usize = 8 * 1024;
/// Tag names longer than this are not compared with `stream:stream` (and are not one).
const NAME_KEPT: usize = 16;

/// Where the scanner is in the XML.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Character data between tags.
    Text,
    /// Just after `<` (held back until the next byte tells what it opens).
    Open,
    /// In a start tag; `quote` while in an attribute value, `slash` when the last byte outside
    /// quotes was `/` (so `>` closes an empty element).
    Start { quote: Option<u8>, slash: bool },
    /// In an end tag.
    End,
    /// After `<!`: which of `--` or `[CDATA[` the bytes so far begin (none yet at first), and
    /// how many of its bytes matched.
    Bang {
        pattern: Option<&'static [u8]>,
        matched: usize,
    },
    /// In a comment (`end` is `-`) or a CDATA section (`]`), which ends at two `end` bytes and
    /// `>`; `run`: how many `end` bytes were just seen.
    Until { end: u8, run: u8 },
    /// In `<?…?>`; whether the last byte was `?`.
    Pi { question: bool },
    /// In another `<!…>` declaration.
    Declaration,
}

/// The scanner: feeds bytes, passes on all but the elements nested too deep.
#[derive(Debug)]
pub struct Cutter {
    state: State,
    /// Elements open, counting the stream's root.
    depth: usize,
    /// While cutting: the depth the cut element was opened at (its parent's depth).
    cutting: Option<usize>,
    /// The start of the current tag's name (to tell `stream:stream`).
    name: Vec<u8>,
    /// Whether the current tag's name is complete.
    name_done: bool,
    /// Elements cut out so far.
    cut: u64,
}

impl Default for Cutter {
    fn default() -> Self {
        Self {
            state: State::Text,
            depth: 0,
            cutting: None,
            name: Vec::with_capacity(NAME_KEPT),
            name_done: false,
            cut: 0,
        }
    }
}

impl Cutter {
    /// How many elements were cut out so far.
    pub fn cut(&self) -> u64 {
        self.cut
    }

    /// Scans `input`, appending what passes to `out`.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) {
        for &b in input {
            self.step(b, out);
        }
    }

    fn emit(&self, b: u8, out: &mut Vec<u8>) {
        if self.cutting.is_none() {
            out.push(b);
        }
    }

    fn step(&mut self, b: u8, out: &mut Vec<u8>) {
        match self.state {
            State::Text => {
                if b == b'<' {
                    // Held: a start tag that opens too deep is cut with its `<`.
                    self.state = State::Open;
                } else {
                    self.emit(b, out);
                }
                return;
            }
            State::Open => {
                self.name.clear();
                self.name_done = false;
                match b {
                    b'/' => self.state = State::End,
                    b'!' => {
                        self.state = State::Bang {
                            pattern: None,
                            matched: 0,
                        };
                    }
                    b'?' => self.state = State::Pi { question: false },
                    _ => {
                        self.state = State::Start {
                            quote: None,
                            slash: false,
                        };
                        if self.cutting.is_none() && self.depth >= MAX_STREAM_DEPTH {
                            self.cutting = Some(self.depth);
                            self.cut += 1;
                        }
                        self.name.push(b);
                    }
                }
                self.emit(b'<', out);
                self.emit(b, out);
                return;
            }
            State::Start { quote, slash } => {
                self.emit(b, out);
                self.state = match (quote, b) {
                    (Some(q), _) if b == q => State::Start {
                        quote: None,
                        slash: false,
                    },
                    (Some(_), _) => State::Start { quote, slash },
                    (None, b'"' | b'\'') => State::Start {
                        quote: Some(b),
                        slash: false,
                    },
                    (None, b'>') => {
                        self.start_tag_closed(slash);
                        State::Text
                    }
                    (None, _) => {
                        self.note_name(b);
                        State::Start {
                            quote: None,
                            slash: b == b'/',
                        }
                    }
                };
                return;
            }
            State::End => {
                if b == b'>' {
                    self.emit(b, out);
                    if self.name.as_slice() == b"stream:stream" {
                        self.depth = 0;
                    } else {
                        self.depth = self.depth.saturating_sub(1);
                    }
                    if self.cutting == Some(self.depth) {
                        self.cutting = None;
                    }
                    self.state = State::Text;
                    return;
                }
                self.note_name(b);
            }
            State::Bang { pattern, matched } => {
                const COMMENT: &[u8] = b"--";
                const CDATA: &[u8] = b"[CDATA[";
                let pattern = pattern.or(match b {
                    b'-' => Some(COMMENT),
                    b'[' => Some(CDATA),
                    _ => None,
                });
                self.state = match pattern {
                    Some(p) if p.get(matched) == Some(&b) => {
                        if matched + 1 < p.len() {
                            State::Bang {
                                pattern,
                                matched: matched + 1,
                            }
                        } else {
                            State::Until {
                                end: if p == COMMENT { b'-' } else { b']' },
                                run: 0,
                            }
                        }
                    }
                    _ if b == b'>' => State::Text,
                    // `<!DOCTYPE…` and the like (not in a well-formed XMPP stream).
                    _ => State::Declaration,
                };
            }
            State::Until { end, run } => {
                self.state = match b {
                    _ if b == end => State::Until {
                        end,
                        run: run.saturating_add(1),
                    },
                    b'>' if run >= 2 => State::Text,
                    _ => State::Until { end, run: 0 },
                };
            }
            State::Pi { question } => {
                self.state = match b {
                    b'>' if question => State::Text,
                    _ => State::Pi {
                        question: b == b'?',
                    },
                };
            }
            State::Declaration => {
                if b == b'>' {
                    self.state = State::Text;
                }
            }
        }
        self.emit(b, out);
    }

    /// Keeps the first bytes of a tag's name, up to the first byte that cannot be in one.
    fn note_name(&mut self, b: u8) {
        if self.name_done {
            return;
        }
        if b.is_ascii_whitespace() || b == b'/' || b == b'>' {
            self.name_done = true;
        } else if self.name.len() < NAME_KEPT {
            self.name.push(b);
        } else {
            self.name_done = true;
            self.name.clear();
        }
    }

    fn start_tag_closed(&mut self, empty: bool) {
        if self.name.as_slice() == b"stream:stream" {
            // A new stream (also a restart, the old one never closed): the root again.
            self.depth = 1;
        } else if !empty {
            self.depth += 1;
        } else if self.cutting == Some(self.depth) {
            // The cut element was empty: it ends here.
            self.cutting = None;
        }
    }
}

/// A connection whose incoming bytes pass through a [`Cutter`]; writes go through unchanged.
#[derive(Debug)]
pub struct DepthGuard<S> {
    inner: S,
    cutter: Cutter,
    /// Bytes that passed and were not yet handed to the reader.
    ready: Vec<u8>,
    /// How many of `ready` were handed over.
    taken: usize,
    /// Elements cut out that were not logged yet.
    logged: u64,
}

impl<S> DepthGuard<S> {
    /// Guards `inner`.
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            cutter: Cutter::default(),
            ready: Vec::new(),
            taken: 0,
            logged: 0,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for DepthGuard<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        loop {
            if this.taken < this.ready.len() {
                let n = buf.remaining().min(this.ready.len() - this.taken);
                buf.put_slice(&this.ready[this.taken..this.taken + n]);
                this.taken += n;
                if this.taken == this.ready.len() {
                    this.ready.clear();
                    this.taken = 0;
                }
                return Poll::Ready(Ok(()));
            }
            let mut chunk = [0u8; READ_CHUNK];
            let mut raw = ReadBuf::new(&mut chunk);
            match Pin::new(&mut this.inner).poll_read(cx, &mut raw) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) if raw.filled().is_empty() => return Poll::Ready(Ok(())),
                Poll::Ready(Ok(())) => {
                    this.cutter.feed(raw.filled(), &mut this.ready);
                    if this.cutter.cut() > this.logged {
                        this.logged = this.cutter.cut();
                        tracing::warn!(
                            max_depth = crate::component::MAX_DEPTH,
                            "a stanza from the server was nested too deep; its deepest elements were cut out"
                        );
                    }
                    // All of it may have been cut (or held back): read on.
                }
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for DepthGuard<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pass(chunks: &[&[u8]]) -> (String, u64) {
        let mut cutter = Cutter::default();
        let mut out = Vec::new();
        for chunk in chunks {
            cutter.feed(chunk, &mut out);
        }
        (String::from_utf8(out).expect("UTF-8"), cutter.cut())
    }

    fn nested(levels: usize) -> String {
        format!("{}{}", "<d>".repeat(levels), "</d>".repeat(levels))
    }

    const HEADER: &str = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
                          xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>";

    #[test]
    fn an_ordinary_stream_passes_byte_for_byte() {
        let stream = format!(
            "{HEADER}<stream:features><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/>\
             </stream:features><message to='a@b' type='chat'><body>1 &lt; 2 &amp; 3 > 2</body>\
             <x a='>' b=\"/>\"/><![CDATA[<not a tag>]]></message><!-- a comment <x> -->\
             <presence/>{}</stream:stream>",
            nested(crate::component::MAX_DEPTH - 1)
        );
        assert_eq!(pass(&[stream.as_bytes()]), (stream.clone(), 0));
        // However it is split into reads.
        let bytes = stream.as_bytes();
        let singles: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(pass(&singles), (stream.clone(), 0));
    }

    #[test]
    fn elements_nested_too_deep_are_cut_out_whole_and_the_rest_goes_on() {
        let limit = crate::component::MAX_DEPTH;
        let inner = format!("<deep a='>'>{}<e/>text</deep>", nested(5000));
        let stanza = format!(
            "<message><body>deep</body>{}{inner}{}<after/></message>",
            "<d>".repeat(limit - 1),
            "</d>".repeat(limit - 1)
        );
        let stream = format!("{HEADER}{stanza}<message><body>next</body></message>");
        let expected = format!(
            "{HEADER}<message><body>deep</body>{}{}<after/></message>\
             <message><body>next</body></message>",
            "<d>".repeat(limit - 1),
            "</d>".repeat(limit - 1)
        );
        assert_eq!(pass(&[stream.as_bytes()]), (expected.clone(), 1));
        let singles: Vec<&[u8]> = stream.as_bytes().chunks(7).collect();
        assert_eq!(pass(&singles), (expected, 1));
        // An empty element that deep is cut too.
        let empty = format!(
            "{HEADER}<m>{}<x/><y></y>{}</m><n/>",
            "<d>".repeat(limit - 1),
            "</d>".repeat(limit - 1)
        );
        let kept = format!(
            "{HEADER}<m>{}{}</m><n/>",
            "<d>".repeat(limit - 1),
            "</d>".repeat(limit - 1)
        );
        assert_eq!(pass(&[empty.as_bytes()]), (kept, 2));
    }

    #[test]
    fn a_stream_restart_counts_from_the_root_again() {
        let limit = crate::component::MAX_DEPTH;
        let stanza = format!(
            "<m>{}{}</m>",
            "<d>".repeat(limit - 1),
            "</d>".repeat(limit - 1)
        );
        // After STARTTLS and SASL the server opens a new stream without closing the old one.
        let stream = format!("{HEADER}<stream:features/>{HEADER}{HEADER}{stanza}");
        assert_eq!(pass(&[stream.as_bytes()]), (stream.clone(), 0));
    }

    #[tokio::test]
    async fn the_guard_reads_through_and_cuts() {
        use tokio::io::AsyncReadExt as _;
        let limit = crate::component::MAX_DEPTH;
        let stream = format!(
            "{HEADER}<m>{}{}{}</m>",
            "<d>".repeat(limit - 1),
            nested(100_000),
            "</d>".repeat(limit - 1)
        );
        let mut guard = DepthGuard::new(stream.as_bytes());
        let mut out = String::new();
        guard.read_to_string(&mut out).await.expect("read");
        assert_eq!(
            out,
            format!(
                "{HEADER}<m>{}{}</m>",
                "<d>".repeat(limit - 1),
                "</d>".repeat(limit - 1)
            )
        );
    }
}
