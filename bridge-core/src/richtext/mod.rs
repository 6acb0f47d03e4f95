//! Neutral formatted text for the bridge.
//!
//! # Model
//!
//! A [`RichText`] is a plain-text **body**, which is always present and is what a
//! client without formatting support shows, plus an optional small formatting
//! **tree** of [`Node`]s. The tree is stored only when it says more than the
//! body: for unformatted text [`RichText::nodes`] is `None` and the tree is
//! derived from the body (blank lines separate paragraphs, newlines are line
//! breaks), see [`RichText::tree`].
//!
//! The tree vocabulary is deliberately small: text, bold, italic,
//! strikethrough, inline code, code block (with optional language), block
//! quote, link, mention, line break, paragraph, bulleted and ordered lists.
//! Everything else a format can express is flattened to its text content.
//!
//! # Canonical form
//!
//! Every constructor normalises the tree, so equal meaning gives equal trees
//! whatever the source format:
//!
//! * a container (document, quote, list item) holds either only inline nodes or
//!   only blocks; mixed content has its inline runs wrapped in paragraphs, and a
//!   container whose only child is a paragraph holds the paragraph's children;
//!   a block found inside inline content is hoisted out, splitting the spans
//!   around it;
//! * adjacent texts (and adjacent spans of one kind) are merged, empty ones
//!   dropped, text holds no newline (those become [`Node::LineBreak`]);
//! * whitespace at the edges of bold/italic/strikethrough/link is moved
//!   outside, spans do not cross line breaks, spans of one kind do not nest,
//!   links do not nest, spaces/tabs at the edges of a line are dropped, a
//!   mention's display text is a single line, and a code block's line ends are
//!   line feeds;
//! * only links with an allowed scheme survive ([`ALLOWED_SCHEMES`]);
//! * containers nested deeper than [`MAX_DEPTH`] are flattened to text, so
//!   every tree operation is bounded in stack use, and the tree's JSON in
//!   nesting depth.
//!
//! # Formats and the specifications they follow
//!
//! * HTML ([`html`](RichText::from_html)): the `org.matrix.custom.html` subset of
//!   the Matrix Client-Server API (`m.room.message` formatted bodies, rich
//!   replies), tokenised with html5ever per the WHATWG HTML Living Standard and
//!   sanitised while the tree is built.
//! * Styling ([`styling`](RichText::from_styling)): XEP-0393 Message Styling
//!   1.1 (XMPP).
//! * Markdown ([`markdown`](RichText::from_markdown)): CommonMark with the GFM
//!   strikethrough extension, via pulldown-cmark, as used by MIMI's
//!   `text/markdown` (RFC 7763) content.
//!
//! What each format cannot express, and so how a round trip degrades, is
//! documented on the format's module.

mod builder;
pub mod html;
pub mod markdown;
mod normalize;
pub mod styling;

use serde::{Deserialize, Serialize};
use std::borrow::Cow;

/// Deepest container nesting kept in a tree; deeper content is flattened to text.
///
/// It also bounds the tree's JSON, which is how the store keeps events: serde_json refuses to
/// read anything nested deeper than 128 levels, and one container can take four (an ordered
/// list: its variant, its fields, its items, one item), so the JSON of any tree nests at most
/// `4 * MAX_DEPTH + 8` = 104 levels, leaving room for the event around it. (At 64, a Matrix
/// message of 62 nested quotes was stored but its event could never be read back.)
pub const MAX_DEPTH: usize = 24;

/// URI schemes a [`Node::Link`] may use; links with any other (or no) scheme
/// are reduced to their text.
pub const ALLOWED_SCHEMES: &[&str] = &[
    "http", "https", "ftp", "mailto", "magnet", "xmpp", "matrix", "mimi", "tel",
];

/// Prefix of a Matrix user permalink, as used for mentions.
const MATRIX_TO: &str = "https://matrix.to/#/";

/// Formatted text: a plain body plus an optional formatting tree.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(from = "Wire")]
pub struct RichText {
    body: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    nodes: Option<Vec<Node>>,
}

/// One element of the formatting tree.
///
/// Inline nodes are [`Text`](Node::Text), [`Bold`](Node::Bold),
/// [`Italic`](Node::Italic), [`Strikethrough`](Node::Strikethrough),
/// [`Code`](Node::Code), [`Link`](Node::Link), [`Mention`](Node::Mention) and
/// [`LineBreak`](Node::LineBreak); the others are blocks (see [`Node::is_block`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Node {
    /// Unformatted text.
    Text(String),
    /// Strong emphasis.
    Bold(Vec<Node>),
    /// Emphasis.
    Italic(Vec<Node>),
    /// Struck-through text.
    Strikethrough(Vec<Node>),
    /// Inline code (monospace, no formatting inside).
    Code(String),
    /// Preformatted code block, without trailing newline.
    CodeBlock {
        /// Language hint such as `rust`, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        language: Option<String>,
        /// The code, verbatim but for its line ends, which are line feeds.
        code: String,
    },
    /// Quotation of other content.
    BlockQuote(Vec<Node>),
    /// Hyperlink around some content.
    Link {
        /// Target URI (one of [`ALLOWED_SCHEMES`]).
        href: String,
        /// Link text.
        children: Vec<Node>,
    },
    /// Mention of a user.
    Mention {
        /// Matrix user ID (`@user:server`) or another URI naming the user (with
        /// one of [`ALLOWED_SCHEMES`]).
        id: String,
        /// Display text.
        text: String,
    },
    /// Line break inside a paragraph.
    LineBreak,
    /// Paragraph of inline content.
    Paragraph(Vec<Node>),
    /// Bulleted list; each item is a sequence of nodes.
    BulletList(Vec<Vec<Node>>),
    /// Numbered list counting from `start`.
    OrderedList {
        /// Number of the first item.
        start: u64,
        /// The items, each a sequence of nodes.
        items: Vec<Vec<Node>>,
    },
}

impl Node {
    /// Shorthand for [`Node::Text`].
    pub fn text(text: impl Into<String>) -> Self {
        Node::Text(text.into())
    }

    /// Whether this is a block (paragraph, quote, code block or list).
    pub fn is_block(&self) -> bool {
        matches!(
            self,
            Node::Paragraph(_)
                | Node::BlockQuote(_)
                | Node::CodeBlock { .. }
                | Node::BulletList(_)
                | Node::OrderedList { .. }
        )
    }
}

impl RichText {
    /// Unformatted text; the body is kept verbatim.
    pub fn plain(body: impl Into<String>) -> Self {
        RichText {
            body: body.into(),
            nodes: None,
        }
    }

    /// The plain-text rendering, always present: what a client without
    /// formatting support shows.
    pub fn body(&self) -> &str {
        &self.body
    }

    /// Whether the tree carries anything the body alone does not.
    pub fn is_formatted(&self) -> bool {
        self.nodes.is_some()
    }

    /// Builds rich text from a tree (normalised, see the module docs); the body
    /// is the tree's plain-text rendering.
    pub fn from_nodes(nodes: Vec<Node>) -> Self {
        let tree = normalize::document(nodes);
        Self::from_canonical(styling::render(&tree, false), tree)
    }

    /// The stored formatting tree, `None` when the text is unformatted.
    pub fn nodes(&self) -> Option<&[Node]> {
        self.nodes.as_deref()
    }

    /// The formatting tree, derived from the body when none is stored.
    pub fn tree(&self) -> Cow<'_, [Node]> {
        match &self.nodes {
            Some(nodes) => Cow::Borrowed(nodes),
            None => Cow::Owned(plain_tree(&self.body)),
        }
    }

    /// Parses (and sanitises) a Matrix `formatted_body` in
    /// `org.matrix.custom.html`; see [`html`] for the rules.
    pub fn from_html(html: &str) -> Self {
        Self::from_nodes(html::parse(html))
    }

    /// Renders the tree as safe, escaped HTML using only the tree vocabulary.
    pub fn to_html(&self) -> String {
        html::render(&self.tree())
    }

    /// Parses XEP-0393 Message Styling; the body keeps the text verbatim,
    /// styling directives included, as the XEP requires.
    pub fn from_styling(text: &str) -> Self {
        Self::from_parts(text.to_owned(), styling::parse(text, true))
    }

    /// Renders the tree with XEP-0393 styling directives; see [`styling`]
    /// for what cannot be expressed.
    pub fn to_styling(&self) -> String {
        match &self.nodes {
            Some(nodes) => styling::render(nodes, true),
            None => self.body.clone(),
        }
    }

    /// Parses CommonMark + GFM strikethrough (MIMI `text/markdown`); the body is
    /// the tree's plain-text rendering.
    pub fn from_markdown(md: &str) -> Self {
        Self::from_nodes(markdown::parse(md))
    }

    /// Renders the tree as markdown, escaping text so that
    /// [`from_markdown`](Self::from_markdown) gives the same tree back.
    pub fn to_markdown(&self) -> String {
        markdown::render(&self.tree())
    }

    /// Pairs a body with a tree, storing the tree only if the body alone does
    /// not already give it.
    fn from_parts(body: String, tree: Vec<Node>) -> Self {
        Self::from_canonical(body, normalize::document(tree))
    }

    /// [`from_parts`](Self::from_parts) for an already normalised tree.
    fn from_canonical(body: String, tree: Vec<Node>) -> Self {
        let nodes = (tree != plain_tree(&body)).then_some(tree);
        RichText { body, nodes }
    }
}

impl From<&str> for RichText {
    fn from(body: &str) -> Self {
        RichText::plain(body)
    }
}

impl From<String> for RichText {
    fn from(body: String) -> Self {
        RichText::plain(body)
    }
}

/// Serialised shape of [`RichText`]; deserialising re-establishes the invariants.
#[derive(Deserialize)]
struct Wire {
    body: String,
    #[serde(default)]
    nodes: Option<Vec<Node>>,
}

impl From<Wire> for RichText {
    fn from(wire: Wire) -> Self {
        match wire.nodes {
            Some(nodes) => RichText::from_parts(wire.body, nodes),
            None => RichText::plain(wire.body),
        }
    }
}

/// The canonical tree of unformatted text.
fn plain_tree(body: &str) -> Vec<Node> {
    normalize::document(styling::parse(body, false))
}

/// `href` if it is a link target the bridge passes on (see [`ALLOWED_SCHEMES`]).
pub(crate) fn safe_href(href: &str) -> Option<&str> {
    let href = href.trim_matches(|c: char| c.is_whitespace() || c.is_control());
    if href.chars().any(char::is_control) {
        return None;
    }
    let (scheme, _) = href.split_once(':')?;
    ALLOWED_SCHEMES
        .iter()
        .any(|allowed| allowed.eq_ignore_ascii_case(scheme))
        .then_some(href)
}

/// The Matrix user ID a `matrix.to` or `matrix:u/` link points at, if any.
pub(crate) fn mention_id(href: &str) -> Option<String> {
    // A MIMI user URI (`mimi://DOMAIN/u/NAME`) names its user as it is.
    if let Some(rest) = href.strip_prefix("mimi://")
        && rest.split_once('/').is_some_and(|(domain, path)| {
            !domain.is_empty() && path.len() > 2 && path.starts_with("u/")
        })
    {
        return Some(href.to_owned());
    }
    let id = if let Some(rest) = href.strip_prefix(MATRIX_TO) {
        percent_decode(rest.split('?').next().unwrap_or_default())
    } else {
        let rest = href.strip_prefix("matrix:u/")?;
        format!(
            "@{}",
            percent_decode(rest.split('?').next().unwrap_or_default())
        )
    };
    (id.len() > 1 && id.starts_with('@') && id.contains(':')).then_some(id)
}

/// The link target for a mention: a `matrix.to` permalink for Matrix IDs,
/// otherwise the ID itself if it is a safe URI.
pub(crate) fn mention_href(id: &str) -> Option<String> {
    if id.starts_with('@') {
        let mut href = String::from(MATRIX_TO);
        for byte in id.bytes() {
            if byte.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/".contains(&byte) {
                href.push(char::from(byte));
            } else {
                href.push_str(&format!("%{byte:02X}"));
            }
        }
        Some(href)
    } else {
        safe_href(id).map(str::to_owned)
    }
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .filter(|h| h.iter().all(u8::is_ascii_hexdigit));
        match hex.and_then(|h| u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok()) {
            Some(byte) if bytes[i] == b'%' => {
                out.push(byte);
                i += 3;
            }
            _ => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests;
