//! Building elements with attribute names given as plain strings.
//!
//! minidom 0.19 takes attribute names as `rxml::NcName`, checked at run time. Every name we
//! write is a literal valid name; these helpers convert it and, should one ever be invalid,
//! leave the attribute out rather than panic.

use xmpp_parsers::minidom::rxml::{Namespace, NcName};
use xmpp_parsers::minidom::{Element, ElementBuilder};

/// Attribute setters taking `&str` names.
pub trait Attrs: Sized {
    /// Sets attribute `name` (no namespace) to `value`.
    fn with(self, name: &str, value: &str) -> Self;
}

impl Attrs for ElementBuilder {
    fn with(self, name: &str, value: &str) -> Self {
        match NcName::try_from(name) {
            Ok(name) => self.attr(name, value),
            Err(_) => self,
        }
    }
}

/// Sets attribute `name` (no namespace) of `el` to `value`.
pub fn set_attr(el: &mut Element, name: &str, value: &str) {
    if let Ok(name) = NcName::try_from(name) {
        el.set_attr(Namespace::NONE, name, value);
    }
}

/// True for characters XML 1.0 can carry (its `Char` production).
pub fn is_xml_char(c: char) -> bool {
    matches!(c, '\u{9}' | '\u{A}' | '\u{D}' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..='\u{10FFFF}')
}

/// `text` without the characters XML cannot carry (most control characters, U+FFFE, U+FFFF).
pub fn clean(text: &str) -> std::borrow::Cow<'_, str> {
    if text.chars().all(is_xml_char) {
        std::borrow::Cow::Borrowed(text)
    } else {
        std::borrow::Cow::Owned(text.chars().filter(|&c| is_xml_char(c)).collect())
    }
}

/// Removes characters XML cannot carry from every text node and attribute value of `el`:
/// minidom panics when asked to serialise them, and text from other networks may hold them.
pub fn sanitize(el: &mut Element) {
    for (_, value) in el.attrs_mut().iter_mut() {
        if !value.chars().all(is_xml_char) {
            *value = clean(value).into_owned();
        }
    }
    for node in el.nodes_mut() {
        match node {
            xmpp_parsers::minidom::Node::Element(child) => sanitize(child),
            xmpp_parsers::minidom::Node::Text(text) if !text.chars().all(is_xml_char) => {
                *text = clean(text).into_owned();
            }
            xmpp_parsers::minidom::Node::Text(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitize_makes_any_text_serialisable() {
        let mut el = Element::builder("message", "jabber:client")
            .with("to", "room@x/ni\u{1}ck\u{FFFE}")
            .append(Element::builder("body", "jabber:client").append("a\u{0}b\u{FFFF}c\u{1F600}"))
            .build();
        sanitize(&mut el);
        assert_eq!(el.attr("to"), Some("room@x/nick"));
        assert_eq!(
            el.get_child("body", "jabber:client").map(Element::text),
            Some("abc\u{1F600}".into())
        );
        let mut out = Vec::new();
        assert!(el.write_to(&mut out).is_ok());
    }
}
