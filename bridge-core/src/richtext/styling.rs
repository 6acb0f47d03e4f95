//! XEP-0393 Message Styling, and the plain-text rendering used for bodies.
//!
//! Parsing follows XEP-0393 1.1: blocks first (```` ``` ```` preformatted
//! blocks, closed by a line holding only ```` ``` ```` or the end of the
//! parent block; `>` quotations, nested by repeating `>`, with the first
//! whitespace character after `>` trimmed), then spans inside each line:
//! `*strong*`, `_emphasis_`, `~strike~` and `` `mono` ``. An opening directive
//! must be at the start of the line (or of its parent span) or follow
//! whitespace, and must not be followed by whitespace; a closing directive
//! must not follow whitespace; matching is lazy, spans never cross lines,
//! never nest inside a span of their own kind and must not be empty; mono
//! spans contain no other spans. Directives stay in the body: the tree only
//! records their meaning. In addition, a blank line separates paragraphs.
//! Quotes nested deeper than [`MAX_DEPTH`] stay text.
//!
//! # Degradations in a round trip
//!
//! Styling has no links, mentions, lists or escaping, so:
//!
//! * a link renders as `text <url>` (just `url` when the text is the URL) and
//!   a mention as its display text: both come back as text;
//! * lists render as `- item` / `1. item` lines and come back as text lines;
//! * a line break followed by a blank line, i.e. two consecutive line breaks,
//!   comes back as a paragraph break;
//! * a span that neither starts a line (or its parent span) nor follows
//!   whitespace (`un*bold*`), a span whose text contains its own directive,
//!   and a mono span with whitespace at an edge or a `` ` `` inside, come back
//!   (partly) as text with the directives in it;
//! * text that looks like styling (`*a*`, a line starting with `>` or
//!   ```` ``` ````) comes back styled, and a code block containing a line
//!   ```` ``` ```` ends early.

use super::{MAX_DEPTH, Node};

const DIRECTIVES: [u8; 4] = [b'*', b'_', b'~', b'`'];

/// Parses text into an unnormalised tree; with `styled == false` only
/// paragraphs and line breaks are recognised (the tree of plain text).
pub(super) fn parse(text: &str, styled: bool) -> Vec<Node> {
    let lines: Vec<&str> = text
        .split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .collect();
    blocks(&lines, styled, 0)
}

fn blocks(lines: &[&str], styled: bool, depth: usize) -> Vec<Node> {
    let mut out = Vec::new();
    let mut paragraph = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        if styled && let Some(info) = line.strip_prefix("```") {
            flush(&mut out, &mut paragraph);
            let end = lines[i + 1..]
                .iter()
                .position(|l| *l == "```")
                .map_or(lines.len(), |n| i + 1 + n);
            let language = info.split_whitespace().next().map(str::to_owned);
            let code = lines[i + 1..end].join("\n");
            out.push(Node::CodeBlock { language, code });
            i = end + 1;
        } else if styled && depth < MAX_DEPTH && line.starts_with('>') {
            flush(&mut out, &mut paragraph);
            let start = i;
            while i < lines.len() && lines[i].starts_with('>') {
                i += 1;
            }
            let inner: Vec<&str> = lines[start..i].iter().map(|l| strip_quote(l)).collect();
            out.push(Node::BlockQuote(blocks(&inner, styled, depth + 1)));
        } else if line.trim().is_empty() {
            flush(&mut out, &mut paragraph);
            i += 1;
        } else {
            if !paragraph.is_empty() {
                paragraph.push(Node::LineBreak);
            }
            match styled {
                true => Spans::new(line).parse(0, line.len(), 0, &mut paragraph),
                false => paragraph.push(Node::text(line)),
            }
            i += 1;
        }
    }
    flush(&mut out, &mut paragraph);
    out
}

/// Removes the `>` and the first whitespace character after it.
fn strip_quote(line: &str) -> &str {
    let rest = &line[1..];
    match rest.chars().next() {
        Some(c) if c.is_whitespace() => &rest[c.len_utf8()..],
        _ => rest,
    }
}

fn flush(out: &mut Vec<Node>, paragraph: &mut Vec<Node>) {
    if !paragraph.is_empty() {
        out.push(Node::Paragraph(std::mem::take(paragraph)));
    }
}

/// Span parser for one line.
struct Spans<'a> {
    line: &'a str,
    /// Byte offsets of valid closing directives (not after whitespace), per directive.
    closers: [Vec<usize>; 4],
}

impl<'a> Spans<'a> {
    fn new(line: &'a str) -> Self {
        let mut closers: [Vec<usize>; 4] = Default::default();
        for (i, byte) in line.bytes().enumerate() {
            if let Some(k) = DIRECTIVES.iter().position(|&d| d == byte)
                && line[..i]
                    .chars()
                    .next_back()
                    .is_some_and(|c| !c.is_whitespace())
            {
                closers[k].push(i);
            }
        }
        Spans { line, closers }
    }

    /// Parses `line[start..end]`; `mask` holds the kinds of enclosing spans.
    fn parse(&self, start: usize, end: usize, mask: u8, out: &mut Vec<Node>) {
        let (line, bytes) = (self.line, self.line.as_bytes());
        let mut text_start = start;
        let mut i = start;
        while i < end {
            if let Some(k) = DIRECTIVES.iter().position(|&d| d == bytes[i])
                && mask & (1 << k) == 0
                && (i == start
                    || line[..i]
                        .chars()
                        .next_back()
                        .is_some_and(char::is_whitespace))
                && line[i + 1..end]
                    .chars()
                    .next()
                    .is_some_and(|c| !c.is_whitespace())
                && let Some(close) = self.closer(k, i).filter(|&c| c < end && c > i + 1)
            {
                if text_start < i {
                    out.push(Node::text(&line[text_start..i]));
                }
                let node = match k {
                    3 => Node::Code(line[i + 1..close].to_owned()),
                    _ => {
                        let mut children = Vec::new();
                        self.parse(i + 1, close, mask | 1 << k, &mut children);
                        [Node::Bold, Node::Italic, Node::Strikethrough][k](children)
                    }
                };
                out.push(node);
                i = close + 1;
                text_start = i;
            } else {
                i += 1;
            }
        }
        if text_start < end {
            out.push(Node::text(&line[text_start..end]));
        }
    }

    /// The first valid closing directive of kind `k` after `open` (lazy match).
    fn closer(&self, k: usize, open: usize) -> Option<usize> {
        let positions = &self.closers[k];
        positions
            .get(positions.partition_point(|&p| p <= open))
            .copied()
    }
}

/// Renders a canonical tree as text: with styling directives if `styled`,
/// else as the plain body (quote, list and code-block markers only).
pub(super) fn render(nodes: &[Node], styled: bool) -> String {
    let mut out = String::new();
    write_blocks(&mut out, nodes, styled);
    out
}

fn write_blocks(out: &mut String, nodes: &[Node], styled: bool) {
    if !nodes.iter().any(Node::is_block) {
        return write_inlines(out, nodes, styled);
    }
    for (i, node) in nodes.iter().enumerate() {
        if i > 0 {
            // A list reads best right under the paragraph introducing it.
            let list = matches!(node, Node::BulletList(_) | Node::OrderedList { .. });
            let after_paragraph = matches!(nodes[i - 1], Node::Paragraph(_));
            out.push_str(if list && after_paragraph {
                "\n"
            } else {
                "\n\n"
            });
        }
        match node {
            Node::Paragraph(c) => write_inlines(out, c, styled),
            Node::BlockQuote(c) => indent(out, &render(c, styled), "> ", "> "),
            Node::CodeBlock { language, code } => {
                out.push_str("```");
                out.push_str(language.as_deref().unwrap_or_default());
                out.push('\n');
                out.push_str(code);
                out.push_str("\n```");
            }
            Node::BulletList(items) => list(out, items, None, styled),
            Node::OrderedList { start, items } => list(out, items, Some(*start), styled),
            inline => write_inlines(out, std::slice::from_ref(inline), styled),
        }
    }
}

fn list(out: &mut String, items: &[Vec<Node>], start: Option<u64>, styled: bool) {
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let marker = match start {
            None => "- ".to_owned(),
            Some(start) => format!("{}. ", start.saturating_add(i as u64)),
        };
        indent(
            out,
            &render(item, styled),
            &marker,
            &" ".repeat(marker.len()),
        );
    }
}

/// Writes `text` with `first` before its first line and `rest` before the
/// others (both without trailing spaces on empty lines).
pub(super) fn indent(out: &mut String, text: &str, first: &str, rest: &str) {
    for (i, line) in text.split('\n').enumerate() {
        let prefix = if i == 0 {
            first
        } else {
            out.push('\n');
            rest
        };
        out.push_str(if line.is_empty() {
            prefix.trim_end()
        } else {
            prefix
        });
        out.push_str(line);
    }
}

fn write_inlines(out: &mut String, nodes: &[Node], styled: bool) {
    for node in nodes {
        let directive = match node {
            Node::Bold(_) => "*",
            Node::Italic(_) => "_",
            Node::Strikethrough(_) => "~",
            Node::Code(_) => "`",
            _ => "",
        };
        let directive = if styled { directive } else { "" };
        match node {
            Node::Text(text) | Node::Mention { text, .. } => out.push_str(text),
            Node::LineBreak => out.push('\n'),
            Node::Bold(c) | Node::Italic(c) | Node::Strikethrough(c) => {
                out.push_str(directive);
                write_inlines(out, c, styled);
                out.push_str(directive);
            }
            Node::Code(code) => {
                out.push_str(directive);
                out.push_str(code);
                out.push_str(directive);
            }
            Node::Link { href, children } => {
                let start = out.len();
                write_inlines(out, children, styled);
                if out[start..] != *href {
                    out.push_str(&format!(" <{href}>"));
                }
            }
            block => write_blocks(out, std::slice::from_ref(block), styled),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::RichText;
    use super::super::tests::*;
    use super::*;

    fn tree(text: &str) -> Vec<Node> {
        RichText::from_styling(text).tree().into_owned()
    }

    fn s(children: Vec<Node>) -> Node {
        Node::Strikethrough(children)
    }

    fn code(text: &str) -> Node {
        Node::Code(text.into())
    }

    #[test]
    fn round_trips() {
        let mut trees = common_trees();
        trees.extend([
            vec![
                b(vec![i(vec![s(vec![code("all of it")])])]),
                t(" then "),
                i(vec![t("more")]),
            ],
            vec![b(vec![t("a")]), t("b "), i(vec![t("c d")]), t(", 2*3=6")],
            vec![
                quote(vec![code_block(None, "> not a quote\n*not bold*")]),
                p(vec![t("after")]),
            ],
            vec![quote(vec![p(vec![t("one")]), p(vec![t("two")])])],
        ]);
        for nodes in trees {
            let text = RichText::from_nodes(nodes);
            let styled = text.to_styling();
            let back = RichText::from_styling(&styled);
            assert_eq!(back.tree(), text.tree(), "{styled}");
            assert_eq!(back.body(), styled);
        }
    }

    #[test]
    fn random_round_trips() {
        for seed in 0..300 {
            let text = RichText::from_nodes(Gen::new(seed, true).blocks(0));
            let out = text.to_styling();
            assert_eq!(
                RichText::from_styling(&out).tree(),
                text.tree(),
                "seed {seed}: {out}"
            );
        }
    }

    #[test]
    fn documented_degradations() {
        let cases = [
            (
                vec![link("https://x.org", vec![t("docs")])],
                "docs <https://x.org>",
                vec![t("docs <https://x.org>")],
            ),
            (
                vec![link("https://x.org", vec![t("https://x.org")])],
                "https://x.org",
                vec![t("https://x.org")],
            ),
            (
                vec![mention("@bob:x.org", "Bob"), t(": hi")],
                "Bob: hi",
                vec![t("Bob: hi")],
            ),
            (
                vec![Node::OrderedList {
                    start: 1,
                    items: vec![vec![t("a")], vec![t("b")]],
                }],
                "1. a\n2. b",
                vec![t("1. a"), Node::LineBreak, t("2. b")],
            ),
            (
                vec![t("a"), Node::LineBreak, Node::LineBreak, t("b")],
                "a\n\nb",
                vec![p(vec![t("a")]), p(vec![t("b")])],
            ),
            (
                vec![t("un"), b(vec![t("bold")])],
                "un*bold*",
                vec![t("un*bold*")],
            ),
            (vec![t("a *b*")], "a *b*", vec![t("a "), b(vec![t("b")])]),
        ];
        for (nodes, styled, back) in cases {
            let text = RichText::from_nodes(nodes);
            assert_eq!(text.to_styling(), styled);
            assert_eq!(
                &*RichText::from_styling(styled).tree(),
                back.as_slice(),
                "{styled}"
            );
        }
    }

    #[test]
    fn follows_xep_examples() {
        let strong = |x: &str| b(vec![t(x)]);
        assert_eq!(tree("*strong*"), [strong("strong")]);
        assert_eq!(
            tree("plain *strong* plain"),
            [t("plain "), strong("strong"), t(" plain")]
        );
        assert_eq!(
            tree("*strong* plain *strong*"),
            [strong("strong"), t(" plain "), strong("strong")]
        );
        assert_eq!(tree("*strong*plain*"), [strong("strong"), t("plain*")]);
        assert_eq!(tree("* plain *strong*"), [t("* plain "), strong("strong")]);
        for plain in [
            "not strong*",
            "*not strong",
            "*not \n strong*",
            "*not *strong",
            "**",
            "****",
        ] {
            let text = RichText::from_styling(plain);
            assert!(!text.is_formatted(), "{plain}");
            assert_eq!(text.body(), plain);
        }
        assert_eq!(
            tree("This is `*monospace*`"),
            [t("This is "), code("*monospace*")]
        );
        assert_eq!(
            tree("*`monospace and bold`*"),
            [b(vec![code("monospace and bold")])]
        );
        assert_eq!(
            tree("_emph *strong* emph_"),
            [i(vec![t("emph "), strong("strong"), t(" emph")])]
        );
        assert_eq!(
            tree("Everyone ~dis~likes cake."),
            [t("Everyone "), s(vec![t("dis")]), t("likes cake.")]
        );
        assert_eq!(tree("*a _b* c_"), [strong("a _b"), t(" c_")]);
        assert_eq!(tree("*a *b* c*"), [strong("a *b"), t(" c*")]);
        assert_eq!(
            tree("```ignored\n(println \"Hello, world!\")\n```\n\nmonospace ⤴"),
            [
                code_block(Some("ignored"), "(println \"Hello, world!\")"),
                p(vec![t("monospace ⤴")])
            ]
        );
        assert_eq!(
            tree("> ```\n> (println \"Hello\")\n\nplain!"),
            [
                quote(vec![code_block(None, "(println \"Hello\")")]),
                p(vec![t("plain!")])
            ]
        );
        assert_eq!(
            tree(">> That that is, is.\n> Said the old hermit of Prague.\n\nWho?"),
            [
                quote(vec![
                    quote(vec![t("That that is, is.")]),
                    p(vec![t("Said the old hermit of Prague.")])
                ]),
                p(vec![t("Who?")]),
            ]
        );
        let body = "> *quoted* text\nreply";
        assert_eq!(RichText::from_styling(body).body(), body);
    }

    #[test]
    fn one_megabyte_converts() {
        let text =
            "Lorem ipsum *dolor* sit amet, _consectetur_ adipiscing ~elit~, sed `do` tempor.\n";
        let text = text.repeat(1_000_000 / text.len() + 1);
        let rich = RichText::from_styling(&text);
        assert!(rich.is_formatted());
        assert!(rich.to_styling().len() > 1_000_000);
    }

    #[test]
    fn dense_and_deep_input_is_bounded() {
        on_2mb_stack(|| {
            let unclosed = "*a _b ~c `d ".repeat(100_000);
            let text = RichText::from_styling(&unclosed);
            assert!(!text.is_formatted());
            let lines = "> quoted *line*\n".repeat(50_000);
            assert!(RichText::from_styling(&lines).is_formatted());
            for deep in [
                ">".repeat(100_000) + " core",
                "> ".repeat(100_000) + "core",
                "```\n".repeat(100_000),
            ] {
                let text = RichText::from_styling(&deep);
                assert_eq!(text.body(), deep);
                let _ = (text.to_html(), text.to_markdown(), text.to_styling());
            }
        });
    }
}
