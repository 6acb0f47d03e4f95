// Shared by the fuzz target and the corpus replay test (included, not a module).

/// Parses `data` (as lossy UTF-8) as Matrix HTML, as markdown and as XEP-0393 styling, renders
/// each result to every format and parses that again. Nothing may panic, and:
///
/// * every tree is canonical (normalising it again changes nothing; the invariants the
///   `richtext` module docs list hold), nests at most `MAX_DEPTH + 1` containers, links only to
///   allowed schemes, and survives JSON, also inside a stored event;
/// * the HTML of any rich text uses only the tree's vocabulary (so never `<script`) and links
///   only to allowed schemes;
/// * a parse of HTML renders to HTML that parses back to it, plain body and tree; a parse of
///   markdown does so after one more trip (the first may drop emphasis that cannot satisfy
///   CommonMark's flanking rules, a documented degradation);
/// * a parse of styling keeps the text verbatim as its body.
pub fn check(data: &[u8]) {
    use bridge_core::RichText;

    let input = String::from_utf8_lossy(data);
    let html = RichText::from_html(&input);
    let markdown = RichText::from_markdown(&input);
    let styling = RichText::from_styling(&input);
    assert_eq!(styling.body(), input, "styling keeps the text as its body");
    richtext_checks::html_settles(&html);
    richtext_checks::markdown_settles(&markdown);
    for text in [&html, &markdown, &styling] {
        richtext_checks::well_formed(text);
        let out = text.to_html();
        richtext_checks::safe_html(&out);
        richtext_checks::html_settles(&RichText::from_html(&out));
        richtext_checks::markdown_settles(&RichText::from_markdown(&text.to_markdown()));
        let styled = text.to_styling();
        let back = RichText::from_styling(&styled);
        assert_eq!(back.body(), styled, "styling keeps the text as its body");
        richtext_checks::well_formed(&back);
    }
}

/// The properties [`check`] asserts.
mod richtext_checks {
    use bridge_core::event::{Event, EventKind, MessageContent, Origin, Sender};
    use bridge_core::richtext::{ALLOWED_SCHEMES, MAX_DEPTH, Node};
    use bridge_core::{AdapterId, EventId, RemoteRoomId, RemoteUserId, RichText, RoomId};

    /// `html`, a parse of HTML, renders to HTML that parses back to it.
    pub(super) fn html_settles(html: &RichText) {
        canonical_body(html);
        let out = html.to_html();
        assert_eq!(&RichText::from_html(&out), html, "HTML {out:?}");
    }

    /// `markdown`, a parse of markdown, renders to markdown that parses back to it after one
    /// more trip.
    pub(super) fn markdown_settles(markdown: &RichText) {
        canonical_body(markdown);
        let once = RichText::from_markdown(&markdown.to_markdown());
        let out = once.to_markdown();
        assert_eq!(RichText::from_markdown(&out), once, "markdown {out:?}");
    }

    /// The body of a parse of HTML or markdown is its tree's plain rendering.
    fn canonical_body(text: &RichText) {
        assert_eq!(&RichText::from_nodes(text.tree().into_owned()), text);
    }

    /// The tree is canonical and safe, and the text survives JSON (as events are stored).
    pub(super) fn well_formed(text: &RichText) {
        let tree = text.tree();
        assert_eq!(
            RichText::from_nodes(tree.to_vec()).tree(),
            tree,
            "normalising a tree again changes it"
        );
        if !text.is_formatted() {
            assert_eq!(text.to_styling(), text.body());
        }
        canonical(&tree);
        let json = serde_json::to_string(text).expect("rich text serialises");
        let back: RichText = serde_json::from_str(&json).expect("its JSON reads back");
        assert_eq!(&back, text, "JSON {json}");
        let event = Event {
            id: EventId::from_u128(1),
            room: RoomId::new("room"),
            sender: Sender {
                adapter: AdapterId::new("a"),
                user: RemoteUserId::new("u"),
                display_name: None,
                avatar: None,
            },
            origin: Origin {
                adapter: AdapterId::new("a"),
                room: RemoteRoomId::new("r"),
                event: None,
            },
            ts: 0,
            kind: EventKind::Edit {
                target: EventId::from_u128(0),
                new: MessageContent {
                    text: text.clone(),
                    ..MessageContent::default()
                },
            },
        };
        let json = serde_json::to_vec(&event).expect("an event serialises");
        let back: Event = serde_json::from_slice(&json).expect("a stored event reads back");
        assert_eq!(back, event);
    }

    /// Whether `href` names one of the allowed schemes.
    fn allowed(href: &str) -> bool {
        href.split_once(':').is_some_and(|(scheme, _)| {
            ALLOWED_SCHEMES
                .iter()
                .any(|allowed| allowed.eq_ignore_ascii_case(scheme))
        }) && !href.chars().any(char::is_control)
    }

    /// The invariants of the canonical form (see the `richtext` module docs), checked without
    /// recursion: `(nodes, depth, whether a block container, enclosing span kinds, in a link)`.
    fn canonical(tree: &[Node]) {
        let mut stack = vec![(tree, 0, true, [false; 3], false)];
        while let Some((nodes, depth, container, spans, in_link)) = stack.pop() {
            assert!(depth <= MAX_DEPTH + 1, "{depth} containers deep");
            let blocks = nodes.iter().filter(|n| n.is_block()).count();
            if container {
                assert!(
                    blocks == 0 || blocks == nodes.len(),
                    "blocks mixed with inlines"
                );
                assert!(
                    !matches!(nodes, [Node::Paragraph(_)]),
                    "a lone paragraph in a container"
                );
            } else {
                assert_eq!(blocks, 0, "a block inside inline content");
            }
            for (i, node) in nodes.iter().enumerate() {
                if let (Node::Text(_), Some(Node::Text(_))) = (node, nodes.get(i + 1)) {
                    panic!("adjacent texts");
                }
                let span = match node {
                    Node::Bold(_) => Some(0),
                    Node::Italic(_) => Some(1),
                    Node::Strikethrough(_) => Some(2),
                    _ => None,
                };
                match node {
                    Node::Text(text) => {
                        assert!(!text.is_empty(), "an empty text");
                        assert!(!text.contains(['\n', '\r']), "a line end in a text");
                    }
                    Node::Code(code) => assert!(!code.contains(['\n', '\r'])),
                    Node::Mention { id, text } => {
                        assert!(id.starts_with('@') || allowed(id), "mention of {id:?}");
                        assert!(!text.is_empty() && !text.contains('\n'));
                    }
                    Node::Link { href, children } => {
                        assert!(allowed(href), "link to {href:?}");
                        assert!(!in_link, "a link in a link");
                        assert!(!children.is_empty(), "an empty link");
                        edges_trimmed(children);
                        stack.push((children, depth + 1, false, spans, true));
                    }
                    Node::Bold(children)
                    | Node::Italic(children)
                    | Node::Strikethrough(children) => {
                        let mut inner = spans;
                        let kind = span.unwrap_or_default();
                        assert!(!spans[kind], "a span inside a span of its kind");
                        inner[kind] = true;
                        assert!(!children.is_empty(), "an empty span");
                        assert!(
                            !children.iter().any(|c| matches!(c, Node::LineBreak)),
                            "a span across a line break"
                        );
                        edges_trimmed(children);
                        stack.push((children, depth + 1, false, inner, in_link));
                    }
                    Node::Paragraph(children) => {
                        assert!(!children.is_empty(), "an empty paragraph");
                        stack.push((children, depth + 1, false, spans, in_link));
                    }
                    Node::BlockQuote(children) => {
                        assert!(!children.is_empty(), "an empty quote");
                        stack.push((children, depth + 1, true, spans, in_link));
                    }
                    Node::BulletList(items) | Node::OrderedList { items, .. } => {
                        assert!(!items.is_empty(), "an empty list");
                        for item in items {
                            stack.push((item, depth + 1, true, spans, in_link));
                        }
                    }
                    Node::CodeBlock { .. } | Node::LineBreak => {}
                }
            }
        }
    }

    /// Whitespace at the edges of a span or link is outside it.
    fn edges_trimmed(children: &[Node]) {
        if let Some(Node::Text(first)) = children.first() {
            assert!(
                !first.starts_with(char::is_whitespace),
                "space opens a span"
            );
        }
        if let Some(Node::Text(last)) = children.last() {
            assert!(!last.ends_with(char::is_whitespace), "space closes a span");
        }
    }

    /// `html` (rendered by the bridge) holds only the tree's vocabulary: no other element, no
    /// other attribute, links only to allowed schemes.
    pub(super) fn safe_html(html: &str) {
        assert!(!html.to_ascii_lowercase().contains("<script"), "{html}");
        let mut rest = html;
        while let Some(at) = rest.find('<') {
            let after = &rest[at + 1..];
            let end = after.find('>').expect("a tag ends");
            let tag = &after[..end];
            rest = &after[end + 1..];
            let (name, attributes) = tag.split_once(' ').unwrap_or((tag, ""));
            let name = name.strip_prefix('/').unwrap_or(name);
            assert!(
                matches!(
                    name,
                    "strong"
                        | "em"
                        | "del"
                        | "code"
                        | "pre"
                        | "blockquote"
                        | "a"
                        | "p"
                        | "ul"
                        | "ol"
                        | "li"
                        | "br"
                ),
                "element {name:?} in {html}"
            );
            if attributes.is_empty() {
                continue;
            }
            assert!(!tag.starts_with('/'), "attributes on an end tag: {tag:?}");
            let (attribute, value) = attributes.split_once("=\"").expect("an attribute value");
            let value = value.strip_suffix('"').expect("one quoted attribute");
            assert!(!value.contains('"'), "{tag:?}");
            match (name, attribute) {
                ("a", "href") => assert!(allowed(value), "link to {value:?}"),
                ("code", "class") => assert!(value.starts_with("language-"), "{tag:?}"),
                ("ol", "start") => assert!(value.bytes().all(|b| b.is_ascii_digit()), "{tag:?}"),
                _ => panic!("attribute {attribute:?} on {name:?}"),
            }
        }
    }
}
