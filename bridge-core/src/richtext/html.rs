//! Matrix `org.matrix.custom.html` formatted bodies.
//!
//! Follows the HTML subset of the Matrix Client-Server API (`m.room.message`
//! formatted bodies and the rich-reply fallback) on top of the WHATWG HTML
//! tokeniser, as implemented by html5ever. No DOM is built: tokens feed the
//! depth-capped builder directly, so any input is parsed in linear time and
//! bounded stack.
//!
//! # Parsing and sanitising
//!
//! * `b`/`strong`, `i`/`em`, `s`/`del`/`strike`, `code`, `pre` (language from
//!   `<code class="language-x">`), `blockquote`, `a href`, `br`, `p`, `ul`,
//!   `ol start`, `li` map to the tree; `a href="https://matrix.to/#/@user:server"`
//!   becomes a [`Node::Mention`]. Headings become bold paragraphs, `div`-like
//!   blocks become paragraphs, `hr` a line break.
//! * `script`, `style`, `mx-reply` (the reply fallback) and other non-content
//!   elements are dropped with their content; every other tag keeps only its
//!   text. No attribute survives except a link's `href`, an ordered list's
//!   `start` and a code block's language; hrefs must use one of
//!   [`ALLOWED_SCHEMES`](super::ALLOWED_SCHEMES) (so `javascript:`, `data:`,
//!   `vbscript:` and relative links are reduced to their text).
//! * Whitespace outside `pre` collapses as in a browser; missing end tags are
//!   implied; stray end tags are ignored.
//!
//! # Degradations in a round trip
//!
//! * Runs of spaces in text collapse to one space.
//! * Mentions whose id is not a Matrix user ID come back as plain links.

use super::builder::{Builder, Kind};
use super::{MAX_DEPTH, Node, mention_href, safe_href};
use html5ever::LocalName;
use html5ever::tokenizer::states::RawKind;
use html5ever::tokenizer::{BufferQueue, Tag, TagKind, Token, TokenSink, TokenSinkResult};
use html5ever::tokenizer::{Tokenizer, TokenizerOpts};
use std::cell::RefCell;
use std::collections::HashMap;

/// Elements dropped together with everything inside them.
const DROPPED: &[&str] = &[
    "script", "style", "mx-reply", "template", "iframe", "object", "noscript", "noembed",
    "noframes", "title", "svg", "xmp",
];
/// Elements without end tag.
const VOID: &[&str] = &[
    "area", "base", "col", "embed", "img", "input", "keygen", "link", "meta", "param", "source",
    "track", "wbr",
];
/// Generic blocks, kept as paragraphs.
const DIVS: &[&str] = &[
    "div", "section", "article", "aside", "header", "footer", "main", "nav", "figure", "details",
    "summary", "address", "center", "dl", "dt", "dd", "table", "caption", "tr", "fieldset",
    "hgroup",
];
const HEADINGS: &[&str] = &["h1", "h2", "h3", "h4", "h5", "h6"];

/// Parses HTML into an unnormalised tree.
pub(super) fn parse(html: &str) -> Vec<Node> {
    let input = BufferQueue::default();
    input.push_back(html.into());
    // The document starts like a block: leading whitespace is collapsible.
    let state = State {
        space: true,
        ..State::default()
    };
    let tokenizer = Tokenizer::new(Sink(RefCell::new(state)), TokenizerOpts::default());
    // The sink never asks to run scripts, so feeding always runs to the end.
    let _ = tokenizer.feed(&input);
    tokenizer.end();
    tokenizer.sink.0.into_inner().builder.finish()
}

struct Sink(RefCell<State>);

impl TokenSink for Sink {
    type Handle = ();

    fn process_token(&self, token: Token, _line: u64) -> TokenSinkResult<()> {
        let mut state = self.0.borrow_mut();
        match token {
            Token::TagToken(tag) if tag.kind == TagKind::StartTag => return state.start(tag),
            Token::TagToken(tag) => state.end(&tag.name),
            Token::CharacterTokens(text) => state.text(&text),
            _ => {}
        }
        TokenSinkResult::Continue
    }
}

#[derive(Default)]
struct State {
    builder: Builder,
    /// Open elements: name, whether it opened a builder container, whether a block.
    open: Vec<(LocalName, bool, bool)>,
    /// How many elements of each name are open.
    counts: HashMap<LocalName, usize>,
    /// Element being dropped, and how many of that name are open inside it.
    skip: Option<(LocalName, usize)>,
    /// Whether collapsible whitespace would be redundant here.
    space: bool,
    /// Directly after `<pre>`, where one newline is ignored.
    pre_start: bool,
}

fn is_block(name: &str) -> bool {
    matches!(name, "p" | "blockquote" | "pre" | "ul" | "ol" | "li")
        || HEADINGS.contains(&name)
        || DIVS.contains(&name)
}

fn attr<'a>(tag: &'a Tag, name: &str) -> Option<&'a str> {
    let attr = tag.attrs.iter().find(|a| &*a.name.local == name)?;
    Some(&attr.value)
}

impl State {
    fn start(&mut self, tag: Tag) -> TokenSinkResult<()> {
        let raw = match &*tag.name {
            "script" => Some(RawKind::ScriptData),
            "style" | "xmp" | "iframe" | "noembed" | "noframes" | "noscript" => {
                Some(RawKind::Rawtext)
            }
            "title" | "textarea" => Some(RawKind::Rcdata),
            _ => None,
        };
        let result = raw.map_or(TokenSinkResult::Continue, TokenSinkResult::RawData);
        if let Some((skipped, depth)) = &mut self.skip {
            if *skipped == tag.name {
                *depth += 1;
            }
        } else if DROPPED.contains(&&*tag.name) && (raw.is_some() || !tag.self_closing) {
            self.skip = Some((tag.name, 1));
        } else {
            self.element(tag);
        }
        result
    }

    fn element(&mut self, tag: Tag) {
        let name = &*tag.name;
        self.pre_start = name == "pre";
        match name {
            "br" | "hr" => return self.line_break(),
            "td" | "th" => self.text(" "),
            _ if VOID.contains(&name) => return,
            _ => {}
        }
        let block = is_block(name);
        if block {
            self.close_implied(if name == "li" { "li" } else { "p" });
            self.space = true;
        }
        let real = self.kind(&tag).is_some_and(|kind| self.builder.open(kind));
        *self.counts.entry(tag.name.clone()).or_default() += 1;
        self.open.push((tag.name, real, block));
    }

    fn kind(&mut self, tag: &Tag) -> Option<Kind> {
        let name = &*tag.name;
        Some(match name {
            "b" | "strong" => Kind::Bold,
            "i" | "em" => Kind::Italic,
            "s" | "del" | "strike" => Kind::Strike,
            "code" => {
                if let Some(Kind::CodeBlock(language)) = self.builder.top()
                    && language.is_none()
                {
                    let class = attr(tag, "class").unwrap_or_default();
                    let found = class
                        .split_whitespace()
                        .find_map(|c| c.strip_prefix("language-"));
                    *language = found.map(str::to_owned);
                }
                if self.builder.inside(|k| matches!(k, Kind::CodeBlock(_))) {
                    return None;
                }
                Kind::Code
            }
            // Inside inline code, `pre` only contributes its text.
            "pre" if !self.builder.inside(|k| matches!(k, Kind::Code)) => Kind::CodeBlock(None),
            "blockquote" => Kind::Quote,
            "a" => Kind::Link(safe_href(attr(tag, "href")?)?.to_owned()),
            "p" => Kind::Paragraph,
            "ul" => Kind::List(None),
            "ol" => Kind::List(Some(
                attr(tag, "start")
                    .and_then(|s| s.trim().parse().ok())
                    .unwrap_or(1),
            )),
            "li" if matches!(self.builder.top(), Some(Kind::List(_))) => Kind::Item,
            _ if HEADINGS.contains(&name) => Kind::Heading,
            _ if DIVS.contains(&name) => Kind::Div,
            _ => return None,
        })
    }

    fn line_break(&mut self) {
        if self.builder.inside(|k| matches!(k, Kind::Code)) {
            // Inline code has no line breaks: a break there is whitespace.
            return self.text(" ");
        }
        self.builder.push(Node::LineBreak);
        self.space = true;
    }

    /// Closes an open `target` (`p` or `li`) that a new block implicitly ends.
    fn close_implied(&mut self, target: &str) {
        let target = LocalName::from(target);
        if self.counts.get(&target).is_none_or(|&n| n == 0) {
            return;
        }
        for index in (0..self.open.len()).rev().take(MAX_DEPTH) {
            let (name, _, block) = &self.open[index];
            if *name == target {
                return self.pop_to(index);
            }
            if *block && !(&*target == "li" && &**name == "p") {
                return;
            }
        }
    }

    fn end(&mut self, name: &LocalName) {
        if let Some((skipped, depth)) = &mut self.skip {
            if skipped == name {
                *depth -= 1;
                if *depth == 0 {
                    self.skip = None;
                }
            }
            return;
        }
        if &**name == "br" {
            return self.line_break();
        }
        if self.counts.get(name).is_some_and(|&n| n > 0)
            && let Some(index) = self.open.iter().rposition(|(open, ..)| open == name)
        {
            self.pop_to(index);
        }
    }

    fn pop_to(&mut self, index: usize) {
        while self.open.len() > index {
            let Some((name, real, block)) = self.open.pop() else {
                break;
            };
            if let Some(count) = self.counts.get_mut(&name) {
                *count = count.saturating_sub(1);
            }
            if real {
                // A link without text shows its target (a mention its ID): text is what
                // precedes whatever follows, so whitespace there is not collapsible.
                if self.builder.empty_link() {
                    self.space = false;
                }
                self.builder.close();
            }
            self.space |= block;
        }
    }

    fn text(&mut self, text: &str) {
        if self.skip.is_some() {
            return;
        }
        if self.builder.inside(|k| matches!(k, Kind::CodeBlock(_))) {
            let text = match std::mem::take(&mut self.pre_start) {
                true => text.strip_prefix('\n').unwrap_or(text),
                false => text,
            };
            return self.builder.text(text);
        }
        let mut collapsed = String::with_capacity(text.len());
        for c in text.chars() {
            if matches!(c, ' ' | '\t' | '\n' | '\r' | '\x0c') {
                if !self.space {
                    collapsed.push(' ');
                }
                self.space = true;
            } else {
                collapsed.push(c);
                self.space = false;
            }
        }
        self.builder.text(&collapsed);
    }
}

/// Renders a canonical tree as HTML.
pub(super) fn render(nodes: &[Node]) -> String {
    let mut out = String::new();
    write(&mut out, nodes);
    out
}

fn write(out: &mut String, nodes: &[Node]) {
    for node in nodes {
        match node {
            Node::Text(text) => escape(out, text),
            Node::LineBreak => out.push_str("<br>"),
            Node::Bold(c) => element(out, "strong", c),
            Node::Italic(c) => element(out, "em", c),
            Node::Strikethrough(c) => element(out, "del", c),
            Node::Code(code) => {
                out.push_str("<code>");
                escape(out, code);
                out.push_str("</code>");
            }
            Node::CodeBlock { language, code } => {
                out.push_str("<pre><code");
                if let Some(language) = language {
                    out.push_str(" class=\"language-");
                    escape(out, language);
                    out.push('"');
                }
                out.push('>');
                escape(out, code);
                out.push_str("\n</code></pre>");
            }
            Node::BlockQuote(c) => element(out, "blockquote", c),
            Node::Link { href, children } => {
                anchor(out, safe_href(href), |out| write(out, children))
            }
            Node::Mention { id, text } => {
                anchor(out, mention_href(id).as_deref(), |out| escape(out, text));
            }
            Node::Paragraph(c) => element(out, "p", c),
            Node::BulletList(items) => list(out, "<ul>", "</ul>", items),
            Node::OrderedList { start: 1, items } => list(out, "<ol>", "</ol>", items),
            Node::OrderedList { start, items } => {
                list(out, &format!("<ol start=\"{start}\">"), "</ol>", items);
            }
        }
    }
}

fn element(out: &mut String, name: &str, children: &[Node]) {
    out.push_str(&format!("<{name}>"));
    write(out, children);
    out.push_str(&format!("</{name}>"));
}

fn anchor(out: &mut String, href: Option<&str>, content: impl FnOnce(&mut String)) {
    let Some(href) = href else {
        return content(out);
    };
    out.push_str("<a href=\"");
    escape(out, href);
    out.push_str("\">");
    content(out);
    out.push_str("</a>");
}

fn list(out: &mut String, open: &str, close: &str, items: &[Vec<Node>]) {
    out.push_str(open);
    for item in items {
        element(out, "li", item);
    }
    out.push_str(close);
}

/// Appends `text` escaped for HTML or XML: safe as element content and as an attribute value in
/// either kind of quotes.
pub fn escape(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::RichText;
    use super::super::tests::*;
    use super::*;

    fn tree(html: &str) -> Vec<Node> {
        RichText::from_html(html).tree().into_owned()
    }

    #[test]
    fn round_trips() {
        let mut trees = common_trees();
        trees.extend([
            vec![
                t("see "),
                link("https://example.org/?a=1&b=\"2\"", vec![b(vec![t("docs")])]),
            ],
            vec![mention("@alice:example.org", "Alice"), t(": hi")],
            vec![Node::BulletList(vec![
                vec![t("one")],
                vec![t("two "), i(vec![t("2")])],
            ])],
            vec![Node::OrderedList {
                start: 7,
                items: vec![
                    vec![
                        p(vec![t("seven")]),
                        Node::BulletList(vec![vec![t("nested")]]),
                    ],
                    vec![p(vec![t("a")]), p(vec![t("b")])],
                ],
            }],
            vec![code_block(Some("html"), "\n<b>&amp;</b>\n")],
            vec![t("<script>alert('x')</script> & \"quotes\"")],
        ]);
        for nodes in trees {
            let text = RichText::from_nodes(nodes);
            let html = text.to_html();
            assert_eq!(RichText::from_html(&html).tree(), text.tree(), "{html}");
        }
    }

    #[test]
    fn random_round_trips() {
        for seed in 0..300 {
            let text = RichText::from_nodes(Gen::new(seed, false).blocks(0));
            let out = text.to_html();
            assert_eq!(
                RichText::from_html(&out).tree(),
                text.tree(),
                "seed {seed}: {out}"
            );
        }
    }

    #[test]
    fn documented_degradations() {
        let spaced = RichText::from_nodes(vec![t("a   b")]);
        assert_eq!(tree(&spaced.to_html()), [t("a b")]);
        let xmpp = RichText::from_nodes(vec![mention("xmpp:bob@example.org", "Bob")]);
        assert_eq!(
            tree(&xmpp.to_html()),
            [link("xmpp:bob@example.org", vec![t("Bob")])]
        );
    }

    #[test]
    fn body_is_natural_plain_text() {
        let cases = [
            ("Hello <b>world</b>", "Hello world"),
            ("Hello <strong>world</strong>!", "Hello world!"),
            (
                "<p>Hello <em>world</em></p>\n<p>Second   line</p>",
                "Hello world\n\nSecond line",
            ),
            ("a<br>b<br/>c", "a\nb\nc"),
            (
                "I <del>hate</del> love <code>rust</code>",
                "I hate love rust",
            ),
            (
                "<a href=\"https://matrix.to/#/@bob:example.org\">Bob</a>: hi",
                "Bob: hi",
            ),
            (
                "read <a href=\"https://example.org\">this</a>",
                "read this <https://example.org>",
            ),
            ("<h1>Title</h1><div>text</div>", "Title\n\ntext"),
            ("<ul><li>a</li><li>b</li></ul>", "- a\n- b"),
            ("<blockquote>quoted</blockquote>reply", "> quoted\n\nreply"),
        ];
        for (html, body) in cases {
            assert_eq!(RichText::from_html(html).body(), body, "{html}");
        }
    }

    #[test]
    fn parses_matrix_html() {
        let html = "<mx-reply><blockquote><a href=\"https://matrix.to/#/!r:x/$e\">In reply to</a> \
            <a href=\"https://matrix.to/#/@a:x\">@a:x</a><br>orig</blockquote></mx-reply>answer";
        assert_eq!(tree(html), [t("answer")]);
        let code = "<pre><code class=\"language-rust\">let x = 1;\n</code></pre>";
        assert_eq!(tree(code), [code_block(Some("rust"), "let x = 1;")]);
        assert_eq!(
            tree("<pre>\nkeep  spaces\n\n</pre>"),
            [code_block(None, "keep  spaces\n")]
        );
        assert_eq!(
            tree("<ol start=\"3\"><li>x<li>y</ol>"),
            [Node::OrderedList {
                start: 3,
                items: vec![vec![t("x")], vec![t("y")]]
            }]
        );
        assert_eq!(tree("<p>a<p>b"), [p(vec![t("a")]), p(vec![t("b")])]);
        assert_eq!(
            tree("<b>a <i>b</b> c"),
            [b(vec![t("a "), i(vec![t("b")])]), t(" c")]
        );
        assert_eq!(tree("x &lt;&amp;&gt; <span>y</span>"), [t("x <&> y")]);
        // A block inside a span is hoisted out of it; inline code stays one line.
        let hoisted = [
            p(vec![b(vec![t("a")])]),
            code_block(None, "x"),
            p(vec![b(vec![t("b")])]),
        ];
        assert_eq!(tree("<b>a<pre>x</pre>b</b>"), hoisted);
        assert_eq!(
            tree("<code>a<br>b <pre>c\n d</pre></code>"),
            [Node::Code("a b c d".into())]
        );
    }

    #[test]
    fn hostile_input_is_sanitised() {
        let cases = [
            ("<script>alert(1)</script>ok", vec![t("ok")]),
            (
                "<a href=\"javascript:alert(1)\" onclick=\"steal()\">click</a>",
                vec![t("click")],
            ),
            ("<a href=\" JAVA&#x09;SCRIPT:alert(1)\">x</a>", vec![t("x")]),
            (
                "<a href=\"data:text/html,<script>\">d</a><a href=\"vbscript:x\">v</a>",
                vec![t("dv")],
            ),
            ("<img src=x onerror=\"alert(1)\">pic", vec![t("pic")]),
            ("<b onmouseover=\"x()\">bold", vec![b(vec![t("bold")])]),
            ("<style>body{}</style><p>p</p>", vec![t("p")]),
            (
                "<script>document.write('</b>')</script><b>b",
                vec![b(vec![t("b")])],
            ),
            (
                "<iframe src=\"https://evil\">x</iframe><unknown-tag x=1>text</unknown-tag>",
                vec![t("text")],
            ),
            (
                "<b><i>unclosed <a href=\"https://x.org\">link",
                vec![b(vec![i(vec![
                    t("unclosed "),
                    link("https://x.org", vec![t("link")]),
                ])])],
            ),
            ("</b></p></li>stray</ul>", vec![t("stray")]),
            ("<!-- comment --><!DOCTYPE html>a", vec![t("a")]),
        ];
        for (html, expected) in cases {
            let text = RichText::from_html(html);
            assert_eq!(&*text.tree(), expected.as_slice(), "{html}");
            let out = text.to_html();
            for bad in [
                "script",
                "onclick",
                "onerror",
                "javascript",
                "<img",
                "style",
            ] {
                assert!(!out.to_lowercase().contains(bad), "{html} -> {out}");
            }
        }
    }

    #[test]
    fn one_megabyte_converts() {
        let html = "<p>Lorem ipsum dolor sit amet, <b>consectetur</b> adipiscing elit, sed do \
            <a href=\"https://example.org/x\">eiusmod</a> tempor incididunt ut labore.</p>\n";
        let html = html.repeat(1_000_000 / html.len() + 1);
        let text = RichText::from_html(&html);
        let body = "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod <https";
        assert!(text.body().starts_with(body));
        assert!(text.to_html().len() > 1_000_000);
    }

    #[test]
    fn dense_and_deep_input_is_bounded() {
        on_2mb_stack(|| {
            let dense = "Hello <b>world</b> &amp; <i>more</i> text. ".repeat(24_000);
            let text = RichText::from_html(&dense);
            assert!(text.body().starts_with("Hello world & more text. Hello"));
            let opens = [
                "<b>",
                "<blockquote>",
                "<ul><li>",
                "<ol><li><p>",
                "<a href=\"https://x.org\">",
                "<pre>",
                "<div>",
                "<p><b>",
                "<b><i><s><code>",
            ];
            for open in opens {
                // 100,000 nested elements in all.
                let count = 100_000 / open.matches('<').count();
                let deep = format!("{}core", open.repeat(count));
                let text = RichText::from_html(&deep);
                assert!(text.body().contains("core"), "{open}");
                assert!(RichText::from_html(&text.to_html()).body().contains("core"));
                let _ = (text.to_markdown(), text.to_styling());
            }
            let mismatched = "<b><i>".repeat(50_000) + &"</u></b>".repeat(50_000);
            assert_eq!(RichText::from_html(&mismatched).body(), "");
        });
    }
}
