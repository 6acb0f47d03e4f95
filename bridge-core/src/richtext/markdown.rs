//! Markdown as used by MIMI `text/markdown` (RFC 7763): CommonMark with the
//! GFM strikethrough extension, parsed with pulldown-cmark.
//!
//! # Parsing
//!
//! Emphasis, strong emphasis, strikethrough, code spans, fenced and indented
//! code blocks, block quotes, lists, links and autolinks map to the tree; a
//! `https://matrix.to/#/@user:server` link becomes a [`Node::Mention`]. Soft
//! and hard line breaks both become [`Node::LineBreak`] (chat semantics).
//! Headings become bold paragraphs, images their alt text; raw HTML is kept as
//! literal text (never interpreted), thematic breaks are dropped. Links must
//! use one of [`ALLOWED_SCHEMES`](super::ALLOWED_SCHEMES).
//!
//! # Rendering
//!
//! Text is escaped (backslash escapes for ``\ ` * _ ~ [ ] < > &``, plus
//! line-start markers `# - + =` and `1.`/`1)`), so `from_markdown(to_markdown(x))`
//! gives `x` back. Line breaks are written as hard breaks (`\` + newline);
//! consecutive and nested lists alternate their markers (`-`/`*`, `.`/`)`) so
//! they stay separate and never read as a thematic break.
//!
//! # Degradations in a round trip
//!
//! * Emphasis whose content starts or ends with punctuation and that touches a
//!   letter on that side (`a` + bold `(b)`) cannot satisfy CommonMark's
//!   flanking rules: it is written, and comes back, without the formatting.
//! * Mentions whose id is not a Matrix user ID come back as plain links.

use super::builder::{Builder, Kind};
use super::styling::indent;
use super::{Node, mention_href};
use pulldown_cmark::{CodeBlockKind, Event, LinkType, Options, Parser, Tag};

/// Parses markdown into an unnormalised tree.
pub(super) fn parse(md: &str) -> Vec<Node> {
    let mut builder = Builder::default();
    let mut opened = Vec::new();
    for event in Parser::new_ext(md, Options::ENABLE_STRIKETHROUGH) {
        match event {
            Event::Start(tag) => opened.push(kind(tag).is_some_and(|k| builder.open(k))),
            Event::End(_) if opened.pop() == Some(true) => builder.close(),
            Event::Text(text) | Event::Html(text) | Event::InlineHtml(text) => builder.text(&text),
            Event::Code(code) => builder.push(Node::Code(code.into_string())),
            Event::SoftBreak | Event::HardBreak => builder.push(Node::LineBreak),
            _ => {}
        }
    }
    builder.finish()
}

fn kind(tag: Tag<'_>) -> Option<Kind> {
    Some(match tag {
        Tag::Paragraph | Tag::HtmlBlock => Kind::Paragraph,
        Tag::Heading { .. } => Kind::Heading,
        Tag::BlockQuote(_) => Kind::Quote,
        Tag::CodeBlock(CodeBlockKind::Fenced(info)) => {
            Kind::CodeBlock(info.split_whitespace().next().map(str::to_owned))
        }
        Tag::CodeBlock(CodeBlockKind::Indented) => Kind::CodeBlock(None),
        Tag::List(start) => Kind::List(start),
        Tag::Item => Kind::Item,
        Tag::Emphasis => Kind::Italic,
        Tag::Strong => Kind::Bold,
        Tag::Strikethrough => Kind::Strike,
        Tag::Link {
            link_type: LinkType::Email,
            dest_url,
            ..
        } => Kind::Link(format!("mailto:{dest_url}")),
        Tag::Link { dest_url, .. } => Kind::Link(dest_url.into_string()),
        _ => return None,
    })
}

/// Renders a canonical tree as markdown.
pub(super) fn render(nodes: &[Node]) -> String {
    render_in(nodes, 0)
}

/// Renders nodes enclosed in `lists` lists.
fn render_in(nodes: &[Node], lists: usize) -> String {
    let mut out = String::new();
    write_blocks(&mut out, nodes, lists);
    out
}

fn write_blocks(out: &mut String, nodes: &[Node], lists: usize) {
    if !nodes.iter().any(Node::is_block) {
        return write_inlines(out, nodes);
    }
    let mut alternate = false;
    for (i, node) in nodes.iter().enumerate() {
        if i > 0 {
            out.push_str("\n\n");
        }
        let same_list = matches!(
            (i.checked_sub(1).map(|p| &nodes[p]), node),
            (Some(Node::BulletList(_)), Node::BulletList(_))
                | (Some(Node::OrderedList { .. }), Node::OrderedList { .. })
        );
        alternate = same_list && !alternate;
        // Alternating markers by depth too keeps `- - -` (a thematic break) away.
        let flip = alternate != (lists % 2 == 1);
        match node {
            Node::Paragraph(c) => write_inlines(out, c),
            Node::BlockQuote(c) => indent(out, &render_in(c, lists), "> ", "> "),
            Node::CodeBlock { language, code } => {
                let fence = "`".repeat(longest_run(code, '`').max(2) + 1);
                out.push_str(&fence);
                out.push_str(language.as_deref().unwrap_or_default());
                out.push('\n');
                if !code.is_empty() {
                    out.push_str(code);
                    out.push('\n');
                }
                out.push_str(&fence);
            }
            Node::BulletList(items) => list(out, items, None, flip, lists),
            Node::OrderedList { start, items } => list(out, items, Some(*start), flip, lists),
            inline => write_inlines(out, std::slice::from_ref(inline)),
        }
    }
}

fn list(out: &mut String, items: &[Vec<Node>], start: Option<u64>, flip: bool, lists: usize) {
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let marker = match start {
            None if flip => "* ".to_owned(),
            None => "- ".to_owned(),
            Some(start) => {
                let number = start.saturating_add(i as u64);
                format!("{number}{} ", if flip { ')' } else { '.' })
            }
        };
        let content = render_in(item, lists + 1);
        indent(out, &content, &marker, &" ".repeat(marker.len()));
    }
}

fn write_inlines(out: &mut String, nodes: &[Node]) {
    for (i, node) in nodes.iter().enumerate() {
        let next = nodes.get(i + 1);
        match node {
            Node::Text(text) => escape(out, text),
            Node::LineBreak => out.push_str("\\\n"),
            // `_` first: it avoids `***` runs next to bold; `*` works inside words.
            Node::Bold(c) => delimit(out, &["**"], c, next),
            Node::Italic(c) => delimit(out, &["_", "*"], c, next),
            Node::Strikethrough(c) => delimit(out, &["~~"], c, next),
            Node::Code(code) => {
                let ticks = "`".repeat(longest_run(code, '`') + 1);
                let pad = code.starts_with('`')
                    || code.ends_with('`')
                    || (code.starts_with(' ') && code.ends_with(' ') && code.trim() != "");
                let pad = if pad { " " } else { "" };
                out.push_str(&format!("{ticks}{pad}{code}{pad}{ticks}"));
            }
            Node::Link { href, children } => link(out, href, |out| write_inlines(out, children)),
            Node::Mention { id, text } => match mention_href(id) {
                Some(href) => link(out, &href, |out| escape(out, text)),
                None => escape(out, text),
            },
            block => write_blocks(out, std::slice::from_ref(block), 0),
        }
    }
}

/// Writes a span with the first of `delimiters` that CommonMark's flanking
/// rules accept here, or without formatting if none does.
fn delimit(out: &mut String, delimiters: &[&str], children: &[Node], next: Option<&Node>) {
    let mut content = String::new();
    write_inlines(&mut content, children);
    let (before, after) = (out.chars().next_back(), next.and_then(first_char));
    let (first, last) = (content.chars().next(), content.chars().next_back());
    let fits = |d: &&str| flanks(d.starts_with('_'), before, first, last, after);
    let delimiter = delimiters.iter().copied().find(fits).unwrap_or_default();
    out.push_str(delimiter);
    out.push_str(&content);
    out.push_str(delimiter);
}

/// Whether a delimiter run can open between `before` and `first` and close
/// between `last` and `after` (`None`, a line end or container edge, counts
/// as whitespace: the rules treat it like the punctuation really there).
fn flanks(
    underscore: bool,
    before: Option<char>,
    first: Option<char>,
    last: Option<char>,
    after: Option<char>,
) -> bool {
    let space = |c: Option<char>| c.is_none_or(char::is_whitespace);
    let punct = |c: Option<char>| c.is_some_and(is_punctuation);
    let left = |b, a| !space(a) && (!punct(a) || space(b) || punct(b));
    let right = |b, a| !space(b) && (!punct(b) || space(a) || punct(a));
    let opens = left(before, first) && (!underscore || !right(before, first) || punct(before));
    let closes = right(last, after) && (!underscore || !left(last, after) || punct(after));
    opens && closes
}

/// Whether the flanking rules count `c` as punctuation: CommonMark's Unicode punctuation, the P
/// and S general categories, as pulldown-cmark reads it. Marks, controls and format characters
/// (a combining accent, U+FE0F after an emoji, a zero-width joiner) are not, so they must not
/// be taken for punctuation: `é**(x)**` with a combining accent is no emphasis, and was once
/// written for bold `(x)` after `é`, its asterisks then read as text.
fn is_punctuation(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_punctuation();
    }
    if c.is_alphanumeric() || c.is_whitespace() {
        return false;
    }
    // A symbol, a mark, a control…: the parser itself says which. `a*Xb*` is emphasis exactly
    // when X can open it after a letter, that is when X is not punctuation.
    let probe = format!("a*{c}b*");
    !Parser::new(&probe).any(|event| matches!(event, Event::Start(Tag::Emphasis)))
}

/// The first character `node` renders as (escaping included).
fn first_char(node: &Node) -> Option<char> {
    match node {
        Node::Text(text) => text
            .chars()
            .next()
            .map(|c| if ESCAPED.contains(&c) { '\\' } else { c }),
        Node::LineBreak => Some('\\'),
        Node::Code(_) => Some('`'),
        Node::Link { .. } | Node::Mention { .. } => Some('['),
        // A span starts with its delimiter (or, if it has none, is rare enough).
        _ => Some('*'),
    }
}

fn link(out: &mut String, href: &str, text: impl FnOnce(&mut String)) {
    // An unescaped `!` right before `[` would make an image.
    if let Some(rest) = out.strip_suffix('!')
        && rest.chars().rev().take_while(|&c| c == '\\').count() % 2 == 0
    {
        out.pop();
        out.push_str("\\!");
    }
    out.push('[');
    text(out);
    out.push_str("](");
    let angle = href
        .chars()
        .any(|c| c.is_whitespace() || matches!(c, '(' | ')' | '<' | '>'));
    if angle {
        out.push('<');
    }
    for c in href.chars() {
        if matches!(c, '\\' | '&' | '<' | '>') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push_str(if angle { ">)" } else { ")" });
}

/// Characters escaped wherever they appear in text.
const ESCAPED: [char; 10] = ['\\', '`', '*', '_', '~', '[', ']', '<', '>', '&'];

/// Writes text with every markdown-significant character escaped.
fn escape(out: &mut String, text: &str) {
    let mut rest = text;
    if out.is_empty() || out.ends_with('\n') {
        let digits = text.bytes().take_while(u8::is_ascii_digit).count();
        if digits > 0 && matches!(text.as_bytes().get(digits), Some(b'.' | b')')) {
            out.push_str(&text[..digits]);
            out.push('\\');
            rest = &text[digits..];
        } else if text.starts_with(['#', '-', '+', '=']) {
            out.push('\\');
        }
    }
    for c in rest.chars() {
        if ESCAPED.contains(&c) {
            out.push('\\');
        }
        out.push(c);
    }
}

fn longest_run(text: &str, c: char) -> usize {
    let (mut longest, mut current) = (0, 0);
    for ch in text.chars() {
        current = if ch == c { current + 1 } else { 0 };
        longest = longest.max(current);
    }
    longest
}

#[cfg(test)]
mod tests {
    use super::super::RichText;
    use super::super::tests::{link, *};
    use super::*;

    fn tree(md: &str) -> Vec<Node> {
        RichText::from_markdown(md).tree().into_owned()
    }

    fn code(text: &str) -> Node {
        Node::Code(text.into())
    }

    #[test]
    fn round_trips() {
        let punctuation = r##"!"#$%&'()*+,-./:;<=>?@[\]^_`{|}~ &amp; &#42; \* <b>"##;
        let mut trees = common_trees();
        trees.extend([
            vec![t(punctuation)],
            vec![
                b(vec![t(punctuation)]),
                t(" "),
                link("https://x.org/a_(b)?c=1&amp;d", vec![t(punctuation)]),
            ],
            vec![
                p(vec![t("# not heading")]),
                p(vec![t("1. not list")]),
                p(vec![t("- nor this")]),
            ],
            vec![
                t("+ a"),
                Node::LineBreak,
                t("==="),
                Node::LineBreak,
                t("> b"),
                Node::LineBreak,
                t("2) c"),
            ],
            vec![
                t("un"),
                i(vec![t("believ")]),
                t("able, "),
                b(vec![i(vec![t("bold italic")])]),
            ],
            vec![
                i(vec![b(vec![t("italic bold")])]),
                b(vec![t("x")]),
                i(vec![t("y")]),
                t(" wow!"),
            ],
            vec![
                code("a ` b"),
                t(" "),
                code("`tick"),
                t(" "),
                code(" padded "),
                t(" "),
                code("  "),
            ],
            vec![
                t("go!"),
                link("https://x.org", vec![t("x")]),
                t(" "),
                mention("@bob:example.org", "Bob [the] *builder*"),
            ],
            vec![
                link("https://x.org/a b", vec![t("spaced")]),
                t(" "),
                link("mailto:a@b.org", vec![t("mail")]),
            ],
            vec![Node::Strikethrough(vec![t("struck "), code("code")])],
            vec![
                code_block(Some("md"), "```\nfence\n````"),
                quote(vec![code_block(None, "\n\nx")]),
            ],
            vec![
                Node::BulletList(vec![
                    vec![t("a")],
                    vec![p(vec![t("b")]), p(vec![t("b2")])],
                    vec![],
                ]),
                Node::BulletList(vec![vec![t("second list")]]),
                Node::OrderedList {
                    start: 9,
                    items: vec![vec![t("nine")], vec![t("ten")]],
                },
                Node::OrderedList {
                    start: 1,
                    items: vec![vec![p(vec![t("x")]), Node::BulletList(vec![vec![t("y")]])]],
                },
            ],
            vec![Node::BulletList(vec![vec![
                code_block(None, "in\n\nitem"),
                quote(vec![t("q")]),
            ]])],
        ]);
        for nodes in trees {
            let text = RichText::from_nodes(nodes);
            let md = text.to_markdown();
            assert_eq!(RichText::from_markdown(&md).tree(), text.tree(), "{md}");
        }
    }

    #[test]
    fn random_round_trips() {
        for seed in 0..300 {
            let text = RichText::from_nodes(Gen::new(seed, false).blocks(0));
            let out = text.to_markdown();
            assert_eq!(
                RichText::from_markdown(&out).tree(),
                text.tree(),
                "seed {seed}: {out}"
            );
        }
    }

    #[test]
    fn documented_degradations() {
        let touching = RichText::from_nodes(vec![
            t("a"),
            b(vec![t("(b)")]),
            t(" "),
            i(vec![t("c.")]),
            t("d"),
        ]);
        assert_eq!(touching.to_markdown(), "a(b) c.d");
        assert_eq!(tree(&touching.to_markdown()), [t("a(b) c.d")]);
        let xmpp = RichText::from_nodes(vec![mention("xmpp:bob@example.org", "Bob")]);
        assert_eq!(
            tree(&xmpp.to_markdown()),
            [link("xmpp:bob@example.org", vec![t("Bob")])]
        );
    }

    #[test]
    fn flanking_counts_only_commonmark_punctuation() {
        // A combining accent, U+FE0F after an emoji, a zero-width joiner or a control is no
        // punctuation to CommonMark. Taken for one, bold `(x)` after `é` was written as
        // `é**(x)**`, which reads back as text with its asterisks, and bold starting with a
        // zero-width joiner lost its formatting on a second trip (found by fuzzing).
        let cases = [
            ("e\u{301}", "(x)", false),
            ("\u{2764}\u{fe0f}", "(yes)", false),
            ("a", "\u{200d}x", true),
            ("a", "\u{1}x", true),
            ("a", "\u{fffd}x", false),
            ("a", "\u{a7}x", false),
        ];
        for (before, content, kept) in cases {
            let text = RichText::from_nodes(vec![t(before), b(vec![t(content)])]);
            let md = text.to_markdown();
            let back = RichText::from_markdown(&md);
            assert_eq!(back.body(), text.body(), "{md}");
            assert_eq!(back == text, kept, "{md}");
        }
    }

    #[test]
    fn parses_markdown() {
        assert_eq!(tree("Hello **world**"), [t("Hello "), b(vec![t("world")])]);
        assert_eq!(
            RichText::from_markdown("Hello **world**").body(),
            "Hello world"
        );
        assert_eq!(
            tree("# Title\n\ntext"),
            [p(vec![b(vec![t("Title")])]), p(vec![t("text")])]
        );
        assert_eq!(
            tree("a\nb  \nc"),
            [t("a"), Node::LineBreak, t("b"), Node::LineBreak, t("c")]
        );
        assert_eq!(
            tree("~~gone~~ ~also~"),
            [
                Node::Strikethrough(vec![t("gone")]),
                t(" "),
                Node::Strikethrough(vec![t("also")])
            ]
        );
        assert_eq!(tree("![alt text](https://x.org/i.png)"), [t("alt text")]);
        assert_eq!(tree("<b>raw</b>"), [t("<b>raw</b>")]);
        assert_eq!(
            tree("<https://x.org>"),
            [link("https://x.org", vec![t("https://x.org")])]
        );
        assert_eq!(
            tree("<a@b.org>"),
            [link("mailto:a@b.org", vec![t("a@b.org")])]
        );
        assert_eq!(
            tree("[Bob](https://matrix.to/#/@bob:x.org)"),
            [mention("@bob:x.org", "Bob")]
        );
        assert_eq!(
            tree("    indented\n\n---\n\n> q"),
            [code_block(None, "indented"), quote(vec![t("q")])]
        );
        assert_eq!(
            tree("```rust title\nfn x() {}\n```"),
            [code_block(Some("rust"), "fn x() {}")]
        );
        assert_eq!(
            tree("- a\n\n- b"),
            [Node::BulletList(vec![vec![t("a")], vec![t("b")]])]
        );
    }

    #[test]
    fn hostile_input_is_sanitised() {
        let cases = [
            ("[x](javascript:alert(1))", vec![t("x")]),
            (
                "[x](<java\tscript:alert(1)>) [y](data:text/html,hi) [z](vbscript:x) [r](/rel)",
                vec![t("x y z r")],
            ),
            (
                "<script>alert(1)</script>",
                vec![t("<script>alert(1)</script>")],
            ),
            (
                "<img src=x onerror=alert(1)>",
                vec![t("<img src=x onerror=alert(1)>")],
            ),
            (
                "**unclosed *emphasis [link](",
                vec![t("**unclosed *emphasis [link](")],
            ),
        ];
        for (md, expected) in cases {
            let text = RichText::from_markdown(md);
            assert_eq!(&*text.tree(), expected.as_slice(), "{md}");
            let html = text.to_html();
            for bad in ["<script", "<img", "javascript:", "data:", "vbscript:"] {
                assert!(!html.contains(bad), "{md} -> {html}");
            }
        }
    }

    #[test]
    fn one_megabyte_converts() {
        let md = "Lorem ipsum dolor sit amet, **consectetur** adipiscing elit, sed do \
            [eiusmod](https://example.org/x) tempor incididunt ut labore.\n\n";
        let md = md.repeat(1_000_000 / md.len() + 1);
        let text = RichText::from_markdown(&md);
        let body = "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod <https";
        assert!(text.body().starts_with(body));
        assert!(text.to_markdown().len() > 1_000_000);
    }

    #[test]
    fn dense_and_deep_input_is_bounded() {
        on_2mb_stack(|| {
            let dense = "Hello **world** and _more_ `text` [l](https://x.org).\n".repeat(20_000);
            let text = RichText::from_markdown(&dense);
            let body = "Hello world and more text l <https://x.org>.\nHello";
            assert!(text.body().starts_with(body));
            let nested = [">", "- ", "1. ", "* > ", "> - "].map(|d| d.repeat(100_000) + "core");
            let runs = [
                "*".repeat(100_000) + "x",
                "[".repeat(100_000),
                "**a ".repeat(100_000),
            ];
            for md in nested.iter().chain(&runs) {
                let text = RichText::from_markdown(md);
                let again = RichText::from_markdown(&text.to_markdown());
                assert_eq!(again.body(), text.body());
                let _ = (text.to_html(), text.to_styling());
            }
        });
    }
}
