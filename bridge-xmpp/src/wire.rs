//! Namespace translation at the edge of a XEP-0114 component stream.
//!
//! xmpp-parsers (without its `component` feature) parses and builds stanzas in `jabber:client`.
//! On a component stream, stanzas inherit the stream's default namespace
//! `jabber:component:accept`. We translate at the edge:
//!
//! * inbound ([`from_wire`]): every element in `jabber:component:accept` becomes
//!   `jabber:client` (the stanza and the children that inherited the stream namespace, such as
//!   `<body/>`; nothing else legitimately uses that namespace inside a stanza);
//! * outbound ([`to_wire`]): the stanza element and the descendants that *inherit* its namespace
//!   (`<body/>`, `<subject/>`, `<thread/>`, `<error/>`, `<status/>`, `<show/>`…) become
//!   `jabber:component:accept`; the walk stops at the first element in any other namespace, so
//!   payloads keep theirs, and a forwarded `<message xmlns='jabber:client'/>` inside
//!   `<forwarded xmlns='urn:xmpp:forward:0'/>` (XEP-0297) stays `jabber:client`.

use xmpp_parsers::minidom::{Element, Node};

/// The namespace of client stanzas, the one xmpp-parsers' types use.
pub const NS_CLIENT: &str = "jabber:client";
/// The namespace of stanzas on a XEP-0114 component stream.
pub const NS_ACCEPT: &str = "jabber:component:accept";

/// Rebuilds `el` in namespace `ns`, keeping its name, attributes and children (children are
/// passed through `child`). minidom has no way to change an element's namespace in place.
fn renamespace(mut el: Element, ns: &str, child: fn(Element) -> Element) -> Element {
    let nodes = el.take_nodes();
    let mut out = Element::builder(el.name(), ns).build();
    *out.attrs_mut() = std::mem::take(el.attrs_mut());
    for node in nodes {
        match node {
            Node::Element(c) => {
                out.append_child(child(c));
            }
            other => out.append_node(other),
        }
    }
    out
}

/// Outbound: `jabber:client` → `jabber:component:accept` for the stanza and the contiguous
/// region of descendants in the same namespace. Elements in other namespaces are left alone.
pub fn to_wire(el: Element) -> Element {
    if el.ns() == NS_CLIENT {
        renamespace(el, NS_ACCEPT, to_wire)
    } else {
        el
    }
}

/// Inbound: `jabber:component:accept` → `jabber:client` for the stanza and its descendants.
pub fn from_wire(mut el: Element) -> Element {
    if el.ns() == NS_ACCEPT {
        renamespace(el, NS_CLIENT, from_wire)
    } else {
        let nodes = el.take_nodes();
        for node in nodes {
            match node {
                Node::Element(c) => {
                    el.append_child(from_wire(c));
                }
                other => el.append_node(other),
            }
        }
        el
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use xmpp_parsers::message::Message;

    /// Fails loudly if anything in the build turns on xmpp-parsers' `component` feature (e.g.
    /// tokio-xmpp's `component` feature): that would break client mode. See docs/design/xmpp.md.
    #[test]
    fn xmpp_parsers_is_in_client_mode() {
        assert_eq!(xmpp_parsers::ns::DEFAULT_NS, NS_CLIENT);
        assert_eq!(xmpp_parsers::ns::DEFAULT_NS, "jabber:client");
    }

    #[test]
    fn roundtrip_keeps_foreign_namespaces() -> Result<(), Box<dyn std::error::Error>> {
        let wire: Element = "<message xmlns='jabber:component:accept' from='a@b/c' \
            to='lobby@conference.localhost' type='groupchat' id='1'>\
            <body>hi &amp; bye</body>\
            <stanza-id xmlns='urn:xmpp:sid:0' by='lobby@conference.localhost' id='X'/>\
            <result xmlns='urn:xmpp:mam:2'><forwarded xmlns='urn:xmpp:forward:0'>\
            <message xmlns='jabber:client' to='x@y'><body>inner</body></message>\
            </forwarded></result></message>"
            .parse()?;
        let client = from_wire(wire);
        assert_eq!(client.ns(), NS_CLIENT);
        assert_eq!(client.attr("id"), Some("1"));
        assert!(client.get_child("body", NS_CLIENT).is_some());
        assert!(client.get_child("stanza-id", "urn:xmpp:sid:0").is_some());
        let msg = Message::try_from(client)?;
        assert_eq!(
            msg.bodies.values().next().map(String::as_str),
            Some("hi & bye")
        );

        let back = to_wire(Element::from(msg));
        assert_eq!(back.ns(), NS_ACCEPT);
        assert!(back.get_child("body", NS_ACCEPT).is_some());
        assert!(back.get_child("stanza-id", "urn:xmpp:sid:0").is_some());
        let inner = back
            .get_child("result", "urn:xmpp:mam:2")
            .and_then(|r| r.get_child("forwarded", "urn:xmpp:forward:0"))
            .and_then(|f| f.get_child("message", NS_CLIENT))
            .ok_or("inner message must stay jabber:client")?;
        assert!(inner.get_child("body", NS_CLIENT).is_some());
        Ok(())
    }
}
