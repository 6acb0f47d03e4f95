//! Namespace translation at the edge of a XEP-0114 component stream.
//!
//! xmpp-parsers (without its `component` feature) builds and parses stanzas in
//! `jabber:client`. On a component stream the stanzas inherit the stream's
//! default namespace `jabber:component:accept`. We translate at the edge:
//!
//! * inbound: every element in `jabber:component:accept` becomes `jabber:client`
//!   (at any depth: nothing else legitimately uses that namespace inside a stanza);
//! * outbound: the stanza element and the descendants that *inherit* its namespace
//!   (`<body/>`, `<subject/>`, `<thread/>`, `<error/>`, `<status/>`, `<show/>`...)
//!   become `jabber:component:accept`; the walk stops at the first element in any
//!   other namespace, so a forwarded `<message xmlns='jabber:client'/>` inside
//!   `<forwarded xmlns='urn:xmpp:forward:0'/>` keeps `jabber:client` (XEP-0297).

use xmpp_parsers::minidom::{Element, Node};

pub const NS_CLIENT: &str = "jabber:client";
pub const NS_ACCEPT: &str = "jabber:component:accept";

/// Rebuild `el` in namespace `to`, keeping name, attributes and children.
fn renamespace(mut el: Element, to: &str, deep: &dyn Fn(Element) -> Element) -> Element {
    let nodes = el.take_nodes();
    let mut out = Element::builder(el.name(), to).build();
    *out.attrs_mut() = el.attrs().clone();
    for node in nodes {
        match node {
            Node::Element(child) => {
                out.append_child(deep(child));
            }
            other => out.append_node(other),
        }
    }
    out
}

/// Outbound: `jabber:client` -> `jabber:component:accept` for the stanza and the
/// contiguous region of descendants in the same namespace.
pub fn to_wire(el: Element) -> Element {
    if el.ns() == NS_CLIENT {
        renamespace(el, NS_ACCEPT, &to_wire)
    } else {
        el
    }
}

/// Inbound: `jabber:component:accept` -> `jabber:client` anywhere in the tree.
pub fn from_wire(mut el: Element) -> Element {
    if el.ns() == NS_ACCEPT {
        renamespace(el, NS_CLIENT, &from_wire)
    } else {
        // still walk: a foreign payload never contains component:accept in practice,
        // but this keeps the rule simple ("anywhere") at negligible cost.
        let nodes = el.take_nodes();
        for node in nodes {
            match node {
                Node::Element(child) => {
                    el.append_child(from_wire(child));
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

    /// Fails loudly if anything in the build turns on xmpp-parsers' `component`
    /// feature (e.g. tokio-xmpp's `component` feature): that would break Client.
    #[test]
    fn xmpp_parsers_is_in_client_mode() {
        assert_eq!(xmpp_parsers::ns::DEFAULT_NS, NS_CLIENT);
    }

    #[test]
    fn roundtrip_message_with_forwarded_payload() {
        let wire: Element = "<message xmlns='jabber:component:accept' from='a@b/c' to='lobby@conference.localhost' type='groupchat' id='1'>\
            <body>hi &amp; bye</body>\
            <stanza-id xmlns='urn:xmpp:sid:0' by='lobby@conference.localhost' id='X'/>\
            <result xmlns='urn:xmpp:mam:2'><forwarded xmlns='urn:xmpp:forward:0'>\
              <message xmlns='jabber:client' to='x@y'><body>inner</body></message>\
            </forwarded></result></message>"
            .parse()
            .unwrap();
        let client = from_wire(wire.clone());
        assert_eq!(client.ns(), NS_CLIENT);
        assert!(client.get_child("body", NS_CLIENT).is_some());
        let msg = Message::try_from(client.clone()).expect("xmpp-parsers accepts it");
        assert_eq!(msg.bodies.values().next().unwrap(), "hi & bye");
        // back to the wire: the stanza region is accept again, the forwarded inner message stays jabber:client
        let back = to_wire(Element::from(msg));
        assert_eq!(back.ns(), NS_ACCEPT);
        assert!(back.get_child("body", NS_ACCEPT).is_some());
        let inner = back
            .get_child("result", "urn:xmpp:mam:2")
            .and_then(|r| r.get_child("forwarded", "urn:xmpp:forward:0"))
            .and_then(|f| f.get_child("message", NS_CLIENT))
            .expect("inner message kept in jabber:client");
        assert!(inner.get_child("body", NS_CLIENT).is_some());
    }
}
