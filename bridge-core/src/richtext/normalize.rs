//! Canonical form of trees, as described in the parent module's docs.
//!
//! Recursion here is bounded by [`MAX_DEPTH`]: deeper containers are
//! flattened with the iterative [`text_of`] and taken apart iteratively.

use super::{MAX_DEPTH, Node, mention_id, safe_href};
use std::mem;

/// Largest list start number markdown can express.
const MAX_START: u64 = 999_999_999;

/// Canonical form of a whole document.
pub(super) fn document(nodes: Vec<Node>) -> Vec<Node> {
    blocks(nodes, 0)
}

/// The text content of `nodes`, blocks and line breaks on their own lines.
pub(super) fn text_of(nodes: &[Node]) -> String {
    enum Frame<'a> {
        Nodes(std::slice::Iter<'a, Node>),
        Items(std::slice::Iter<'a, Vec<Node>>),
    }
    let mut out = String::new();
    let mut stack = vec![Frame::Nodes(nodes.iter())];
    while let Some(frame) = stack.last_mut() {
        let node = match frame {
            Frame::Nodes(iter) => iter.next(),
            Frame::Items(iter) => {
                let item = iter.next();
                match item {
                    Some(item) => {
                        new_line(&mut out);
                        stack.push(Frame::Nodes(item.iter()));
                    }
                    None => drop(stack.pop()),
                }
                continue;
            }
        };
        let Some(node) = node else {
            stack.pop();
            continue;
        };
        if node.is_block() {
            new_line(&mut out);
        }
        match node {
            Node::Text(text) | Node::Code(text) | Node::Mention { text, .. } => out.push_str(text),
            Node::CodeBlock { code, .. } => out.push_str(code),
            Node::LineBreak => out.push('\n'),
            Node::Bold(c)
            | Node::Italic(c)
            | Node::Strikethrough(c)
            | Node::Link { children: c, .. }
            | Node::Paragraph(c)
            | Node::BlockQuote(c) => stack.push(Frame::Nodes(c.iter())),
            Node::BulletList(items) | Node::OrderedList { items, .. } => {
                stack.push(Frame::Items(items.iter()));
            }
        }
    }
    out
}

fn new_line(out: &mut String) {
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
}

/// `text` with its line ends (CR LF, or a lone CR as in markdown and HTML) as line feeds: a
/// code block keeps no CR, which the formats would read back as another line end.
pub(super) fn line_feeds(text: String) -> String {
    match text.contains('\r') {
        true => text.replace("\r\n", "\n").replace('\r', "\n"),
        false => text,
    }
}

/// Text content of `node`, which is then dropped without recursion.
fn flatten(node: Node) -> String {
    let text = text_of(std::slice::from_ref(&node));
    let mut stack = vec![node];
    while let Some(mut node) = stack.pop() {
        match &mut node {
            Node::Bold(c)
            | Node::Italic(c)
            | Node::Strikethrough(c)
            | Node::Link { children: c, .. }
            | Node::Paragraph(c)
            | Node::BlockQuote(c) => stack.append(c),
            Node::BulletList(items) | Node::OrderedList { items, .. } => {
                items.drain(..).for_each(|item| stack.extend(item));
            }
            _ => {}
        }
    }
    text
}

/// Content of a block container: only inlines, or only blocks.
fn blocks(nodes: Vec<Node>, depth: usize) -> Vec<Node> {
    let content = inlines(nodes, Ctx::default(), depth);
    if !content.iter().any(Node::is_block) {
        return trim(content);
    }
    let mut out = Vec::new();
    paragraphs(&mut out, content);
    if let [Node::Paragraph(_)] = out.as_slice()
        && let Some(Node::Paragraph(only)) = out.pop()
    {
        return only;
    }
    out
}

/// Appends normalised `content`, wrapping each run of inline nodes in a paragraph.
fn paragraphs(out: &mut Vec<Node>, content: Vec<Node>) {
    let mut run = Vec::new();
    for node in content {
        if node.is_block() {
            paragraph(out, mem::take(&mut run));
            out.push(node);
        } else {
            run.push(node);
        }
    }
    paragraph(out, run);
}

fn paragraph(out: &mut Vec<Node>, run: Vec<Node>) {
    let run = trim(run);
    if !run.is_empty() {
        out.push(Node::Paragraph(run));
    }
}

/// Appends a normalised block (or several, when a paragraph contained blocks).
///
/// A paragraph directly in a container costs no level, like the paragraphs [`blocks`] wraps
/// around inline runs: they are the same paragraphs when a canonical tree is normalised again,
/// so its content must be kept or flattened at the same depth both times. Only a paragraph
/// inside inline content (which is hoisted out of it) costs a level, which bounds recursion.
fn block(out: &mut Vec<Node>, node: Node, ctx: Ctx, depth: usize) {
    if depth >= MAX_DEPTH {
        let mut text = Vec::new();
        push_text(&mut text, &flatten(node));
        return paragraph(out, text);
    }
    match node {
        Node::Paragraph(c) => {
            let depth = if ctx.inline { depth + 1 } else { depth };
            let ctx = Ctx {
                inline: true,
                ..Ctx::default()
            };
            paragraphs(out, inlines(c, ctx, depth));
        }
        Node::BlockQuote(c) => out.extend(non_empty(blocks(c, depth + 1), Node::BlockQuote)),
        Node::CodeBlock { language, code } => out.push(Node::CodeBlock {
            language: language.and_then(|l| {
                let word = l.split_whitespace().next()?.replace('`', "");
                (!word.is_empty()).then_some(word)
            }),
            code: line_feeds(code),
        }),
        Node::BulletList(items) => out.extend(non_empty(list(items, depth), Node::BulletList)),
        Node::OrderedList { start, items } => {
            let start = start.min(MAX_START);
            let make = |items| Node::OrderedList { start, items };
            out.extend(non_empty(list(items, depth), make));
        }
        inline_node => inline(out, inline_node, Ctx::default(), depth),
    }
}

fn non_empty<T>(content: Vec<T>, make: impl FnOnce(Vec<T>) -> Node) -> Option<Node> {
    (!content.is_empty()).then(|| make(content))
}

fn list(items: Vec<Vec<Node>>, depth: usize) -> Vec<Vec<Node>> {
    let items = items.into_iter();
    items.map(|item| blocks(item, depth + 1)).collect()
}

/// Trims a run of inline content at its edges and around line breaks.
fn trim(mut nodes: Vec<Node>) -> Vec<Node> {
    for i in 0..nodes.len() {
        let line_start = i == 0 || matches!(nodes[i - 1], Node::LineBreak);
        let line_end = matches!(nodes.get(i + 1), None | Some(Node::LineBreak));
        if let Node::Text(text) = &mut nodes[i] {
            if line_end {
                text.truncate(text.trim_end_matches([' ', '\t']).len());
            }
            if line_start {
                text.drain(..text.len() - text.trim_start_matches([' ', '\t']).len());
            }
        }
    }
    nodes.retain(|n| !matches!(n, Node::Text(t) if t.is_empty()));
    let leading = nodes.iter().take_while(|n| matches!(n, Node::LineBreak));
    nodes.drain(..leading.count());
    while matches!(nodes.last(), Some(Node::LineBreak)) {
        nodes.pop();
    }
    nodes
}

/// Which spans enclose the content being normalised, and whether it is a paragraph's.
#[derive(Clone, Copy, Default)]
struct Ctx {
    bold: bool,
    italic: bool,
    strike: bool,
    link: bool,
    /// Inside a paragraph, where another paragraph costs a level (see [`block`]).
    inline: bool,
}

#[derive(Clone, Copy)]
enum Span {
    Bold,
    Italic,
    Strike,
}

impl Ctx {
    fn flag(&mut self, span: Span) -> &mut bool {
        match span {
            Span::Bold => &mut self.bold,
            Span::Italic => &mut self.italic,
            Span::Strike => &mut self.strike,
        }
    }
}

/// Normalises inline content; blocks found in it are normalised and hoisted
/// out of the spans around them.
fn inlines(nodes: Vec<Node>, ctx: Ctx, depth: usize) -> Vec<Node> {
    let mut out = Vec::new();
    for node in nodes {
        inline(&mut out, node, ctx, depth);
    }
    out
}

fn inline(out: &mut Vec<Node>, node: Node, ctx: Ctx, depth: usize) {
    let shallow = depth < MAX_DEPTH;
    match node {
        Node::Text(text) => push_text(out, &text),
        Node::LineBreak => out.push(Node::LineBreak),
        Node::Code(code) => push(out, Node::Code(code.replace(['\r', '\n'], " "))),
        Node::Mention { id, text } => mention(out, id.trim(), &text, ctx),
        Node::Bold(c) if shallow => span(out, c, Span::Bold, ctx, depth),
        Node::Italic(c) if shallow => span(out, c, Span::Italic, ctx, depth),
        Node::Strikethrough(c) if shallow => span(out, c, Span::Strike, ctx, depth),
        Node::Link { href, children } if shallow => link(out, &href, children, ctx, depth),
        node if shallow && node.is_block() => block(out, node, ctx, depth),
        other => push_text(out, &flatten(other)),
    }
}

/// A mention of `id` (trimmed by the caller) shown as `text`; without text it shows the ID, which
/// is collapsed to one line like any text (a mention from a link like
/// `https://matrix.to/#/@a:x%0Ab` with no text once showed a line break, and lost it only when
/// normalised again).
fn mention(out: &mut Vec<Node>, id: &str, text: &str, ctx: Ctx) {
    let one_line = |text: &str| text.split_whitespace().collect::<Vec<_>>().join(" ");
    let text = one_line(text);
    if ctx.link || !(id.starts_with('@') || safe_href(id).is_some()) {
        push_text(out, &text);
    } else {
        let text = if text.is_empty() { one_line(id) } else { text };
        out.push(Node::Mention {
            id: id.to_owned(),
            text,
        });
    }
}

fn span(out: &mut Vec<Node>, children: Vec<Node>, span: Span, mut ctx: Ctx, depth: usize) {
    let nested = *ctx.flag(span);
    *ctx.flag(span) = true;
    let inner = inlines(children, ctx, depth + 1);
    if nested {
        return inner.into_iter().for_each(|n| push(out, n));
    }
    wrap(out, inner, true, &|c| match span {
        Span::Bold => Node::Bold(c),
        Span::Italic => Node::Italic(c),
        Span::Strike => Node::Strikethrough(c),
    });
}

fn link(out: &mut Vec<Node>, href: &str, children: Vec<Node>, mut ctx: Ctx, depth: usize) {
    let nested = ctx.link;
    ctx.link = true;
    let inner = inlines(children, ctx, depth + 1);
    match safe_href(href) {
        Some(href) if !nested => {
            if let Some(id) = mention_id(href) {
                mention(out, id.trim(), &text_of(&inner), Ctx::default());
            } else if inner.is_empty() {
                let children = vec![Node::text(href)];
                out.push(Node::Link {
                    href: href.to_owned(),
                    children,
                });
            } else {
                wrap(out, inner, false, &|children| Node::Link {
                    href: href.to_owned(),
                    children,
                });
            }
        }
        _ => inner.into_iter().for_each(|n| push(out, n)),
    }
}

/// Wraps `nodes` with `make`, split at blocks (and at line breaks if
/// `breaks`), with whitespace at the edges of each piece moved outside.
fn wrap(out: &mut Vec<Node>, nodes: Vec<Node>, breaks: bool, make: &dyn Fn(Vec<Node>) -> Node) {
    let mut piece = Vec::new();
    for node in nodes {
        if node.is_block() || (breaks && matches!(node, Node::LineBreak)) {
            wrap_piece(out, mem::take(&mut piece), make);
            out.push(node);
        } else {
            piece.push(node);
        }
    }
    wrap_piece(out, piece, make);
}

fn wrap_piece(out: &mut Vec<Node>, mut nodes: Vec<Node>, make: &dyn Fn(Vec<Node>) -> Node) {
    let mut lead = String::new();
    let mut trail = String::new();
    if let Some(Node::Text(first)) = nodes.first_mut() {
        lead = first
            .drain(..first.len() - first.trim_start().len())
            .collect();
    }
    if let Some(Node::Text(last)) = nodes.last_mut() {
        trail = last.split_off(last.trim_end().len());
    }
    nodes.retain(|n| !matches!(n, Node::Text(t) if t.is_empty()));
    push_text(out, &lead);
    if !nodes.is_empty() {
        push(out, make(nodes));
    }
    push_text(out, &trail);
}

/// Appends text, turning line ends into [`Node::LineBreak`].
fn push_text(out: &mut Vec<Node>, text: &str) {
    let text = if text.contains('\r') {
        text.replace("\r\n", "\n").replace('\r', "\n")
    } else {
        text.to_owned()
    };
    for (i, line) in text.split('\n').enumerate() {
        if i > 0 {
            out.push(Node::LineBreak);
        }
        push(out, Node::text(line));
    }
}

/// Appends a node, merging it with a preceding text or span of its kind.
fn push(out: &mut Vec<Node>, node: Node) {
    let node = match (out.last_mut(), node) {
        (_, Node::Text(t) | Node::Code(t)) if t.is_empty() => return,
        (Some(Node::Text(last)), Node::Text(text)) => return last.push_str(&text),
        (Some(Node::Bold(last)), Node::Bold(more))
        | (Some(Node::Italic(last)), Node::Italic(more))
        | (Some(Node::Strikethrough(last)), Node::Strikethrough(more)) => {
            return more.into_iter().for_each(|n| push(last, n));
        }
        (_, node) => node,
    };
    out.push(node);
}
