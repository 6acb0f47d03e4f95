//! Depth-capped tree construction shared by the HTML and markdown parsers.
//!
//! Parsers report open/close/content events; the builder keeps an explicit
//! stack (no recursion) and refuses to open more than [`MAX_FRAMES`]
//! containers, so content nested deeper lands in the deepest open container.

use super::normalize::{line_feeds, text_of};
use super::{MAX_DEPTH, Node};

/// Most containers open at once. A canonical tree nests at most `MAX_DEPTH + 1` containers
/// (the normaliser flattens the rest), and the HTML or markdown it renders to opens at most two
/// per container (a list and its item) and one more for a leaf (a mention's link, inline code):
/// what the bridge renders always parses back whole, so parsing is a fixed point. (At
/// [`MAX_DEPTH`] frames, a tree of more than half that many nested lists, which a parse of
/// lists nested directly in lists gives, lost its innermost list on the next trip.)
const MAX_FRAMES: usize = 2 * MAX_DEPTH + 4;

/// A container being built.
#[derive(Debug)]
pub(super) enum Kind {
    Bold,
    Italic,
    Strike,
    /// Inline code whose whitespace collapses (as in HTML).
    Code,
    /// Code block with its language, if known yet.
    CodeBlock(Option<String>),
    Quote,
    Link(String),
    Paragraph,
    /// Heading: becomes a paragraph of bold text.
    Heading,
    /// Generic block (`div` and friends): a paragraph, or just its content if
    /// that holds blocks.
    Div,
    /// List, numbered from the given start if ordered.
    List(Option<u64>),
    Item,
}

#[derive(Debug)]
struct Frame {
    kind: Kind,
    children: Vec<Node>,
    items: Vec<Vec<Node>>,
}

/// Tree under construction.
#[derive(Debug, Default)]
pub(super) struct Builder {
    root: Vec<Node>,
    frames: Vec<Frame>,
}

impl Builder {
    /// Opens a container; returns `false` (opening nothing) at the cap.
    pub(super) fn open(&mut self, kind: Kind) -> bool {
        if self.frames.len() >= MAX_FRAMES {
            return false;
        }
        let (children, items) = (Vec::new(), Vec::new());
        self.frames.push(Frame {
            kind,
            children,
            items,
        });
        true
    }

    /// The innermost open container.
    pub(super) fn top(&mut self) -> Option<&mut Kind> {
        self.frames.last_mut().map(|f| &mut f.kind)
    }

    /// Whether the innermost open container is a link with no text in it (but whitespace): it
    /// will show its target instead.
    pub(super) fn empty_link(&self) -> bool {
        self.frames.last().is_some_and(|f| {
            let blank = |n: &Node| matches!(n, Node::Text(t) if t.trim().is_empty());
            matches!(f.kind, Kind::Link(_)) && f.children.iter().all(blank)
        })
    }

    /// Whether an open container satisfies `test`.
    pub(super) fn inside(&self, test: fn(&Kind) -> bool) -> bool {
        self.frames.iter().any(|f| test(&f.kind))
    }

    /// Closes the innermost open container.
    pub(super) fn close(&mut self) {
        let Some(Frame {
            kind,
            children,
            items,
        }) = self.frames.pop()
        else {
            return;
        };
        let node = match kind {
            Kind::Bold => Node::Bold(children),
            Kind::Italic => Node::Italic(children),
            Kind::Strike => Node::Strikethrough(children),
            Kind::Code => Node::Code(collapse_whitespace(&text_of(&children))),
            Kind::CodeBlock(language) => {
                let mut code = line_feeds(text_of(&children));
                if code.ends_with('\n') {
                    code.pop();
                }
                Node::CodeBlock { language, code }
            }
            Kind::Quote => Node::BlockQuote(children),
            Kind::Link(href) => Node::Link { href, children },
            Kind::Paragraph => Node::Paragraph(children),
            Kind::Heading => Node::Paragraph(vec![Node::Bold(children)]),
            Kind::Div if !children.iter().any(Node::is_block) => Node::Paragraph(children),
            Kind::List(start) => match start {
                None => Node::BulletList(items),
                Some(start) => Node::OrderedList { start, items },
            },
            Kind::Item if matches!(self.frames.last(), Some(f) if matches!(f.kind, Kind::List(_))) =>
            {
                if let Some(list) = self.frames.last_mut() {
                    list.items.push(children);
                }
                return;
            }
            Kind::Div | Kind::Item => return children.into_iter().for_each(|c| self.push(c)),
        };
        self.push(node);
    }

    /// Adds a node to the innermost open container.
    pub(super) fn push(&mut self, node: Node) {
        let Some(frame) = self.frames.last_mut() else {
            return push_merged(&mut self.root, node);
        };
        if !matches!(frame.kind, Kind::List(_)) {
            return push_merged(&mut frame.children, node);
        }
        // Content directly inside a list (not in an item) joins the last item.
        if matches!(&node, Node::Text(t) if t.bytes().all(|b| b.is_ascii_whitespace())) {
            return;
        }
        match frame.items.last_mut() {
            Some(item) => push_merged(item, node),
            None => frame.items.push(vec![node]),
        }
    }

    /// Adds text to the innermost open container.
    pub(super) fn text(&mut self, text: &str) {
        if !text.is_empty() {
            self.push(Node::text(text));
        }
    }

    /// Closes everything still open and returns the (unnormalised) tree.
    pub(super) fn finish(mut self) -> Vec<Node> {
        while !self.frames.is_empty() {
            self.close();
        }
        self.root
    }
}

fn push_merged(nodes: &mut Vec<Node>, node: Node) {
    if let (Some(Node::Text(last)), Node::Text(text)) = (nodes.last_mut(), &node) {
        return last.push_str(text);
    }
    nodes.push(node);
}

fn collapse_whitespace(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if !c.is_ascii_whitespace() {
            out.push(c);
        } else if !out.ends_with(' ') {
            out.push(' ');
        }
    }
    out
}
