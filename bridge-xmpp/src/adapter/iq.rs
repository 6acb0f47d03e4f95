//! IQs: our requests and their answers, and what we answer for the component and its puppets
//! (XEP-0030 service discovery, XEP-0199 ping, XEP-0092 version).

use xmpp_parsers::minidom::Element;

use crate::xml::Attrs;

use crate::muc::NS_STANZAS;
use crate::wire::NS_CLIENT;

const NS_DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
const NS_DISCO_ITEMS: &str = "http://jabber.org/protocol/disco#items";
const NS_PING: &str = "urn:xmpp:ping";
const NS_VERSION: &str = "jabber:iq:version";

/// What a puppet (an XMPP face of a remote user) supports, as disco#info features.
const PUPPET_FEATURES: &[&str] = &[
    NS_DISCO_INFO,
    NS_PING,
    "http://jabber.org/protocol/chatstates",
    "http://jabber.org/protocol/xhtml-im",
    "jabber:x:oob",
    "urn:xmpp:chat-markers:0",
    "urn:xmpp:message-correct:0",
    "urn:xmpp:message-retract:1",
    "urn:xmpp:reactions:0",
    "urn:xmpp:reply:0",
    "urn:xmpp:sid:0",
];

/// What the component itself (or the relay account) supports.
const SERVICE_FEATURES: &[&str] = &[NS_DISCO_INFO, NS_DISCO_ITEMS, NS_PING, NS_VERSION];

/// Who is being asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Addressee<'a> {
    /// The component domain or the relay account.
    Service,
    /// A puppet, with the display name of the user it stands for.
    Puppet(&'a str),
}

/// An IQ of type `kind` answering `request`: its `id`, addressed back to its sender.
pub fn reply(request: &Element, kind: &str) -> xmpp_parsers::minidom::ElementBuilder {
    let mut b = Element::builder("iq", NS_CLIENT)
        .with("type", kind)
        .with("id", request.attr("id").unwrap_or_default());
    if let Some(to) = request.attr("from") {
        b = b.with("to", to);
    }
    if let Some(from) = request.attr("to") {
        b = b.with("from", from);
    }
    b
}

/// The answer to an IQ `get`/`set` addressed to us. Unknown requests get
/// `service-unavailable`, as RFC 6120 §8.4 asks.
pub fn answer(request: &Element, addressee: Addressee<'_>) -> Element {
    let kind = request.attr("type").unwrap_or_default();
    let payload = request.children().next();
    let reply = |kind: &str| reply(request, kind);
    let Some(payload) = payload.filter(|_| kind == "get") else {
        return error(reply("error"), "cancel", "service-unavailable");
    };
    match (payload.ns().as_str(), payload.name()) {
        (NS_PING, "ping") => reply("result").build(),
        (NS_DISCO_INFO, "query") if payload.attr("node").is_none() => {
            let (category, type_, name, features) = match addressee {
                Addressee::Service => ("component", "generic", "Chat bridge", SERVICE_FEATURES),
                Addressee::Puppet(name) => ("client", "pc", name, PUPPET_FEATURES),
            };
            let mut query = Element::builder("query", NS_DISCO_INFO).append(
                Element::builder("identity", NS_DISCO_INFO)
                    .with("category", category)
                    .with("type", type_)
                    .with("name", name),
            );
            for feature in features {
                query =
                    query.append(Element::builder("feature", NS_DISCO_INFO).with("var", feature));
            }
            reply("result").append(query).build()
        }
        (NS_DISCO_ITEMS, "query") if payload.attr("node").is_none() => reply("result")
            .append(Element::builder("query", NS_DISCO_ITEMS))
            .build(),
        (NS_VERSION, "query") if addressee == Addressee::Service => reply("result")
            .append(
                Element::builder("query", NS_VERSION)
                    .append(Element::builder("name", NS_VERSION).append("bridge"))
                    .append(
                        Element::builder("version", NS_VERSION).append(env!("CARGO_PKG_VERSION")),
                    ),
            )
            .build(),
        (NS_DISCO_INFO | NS_DISCO_ITEMS, "query") => {
            error(reply("error"), "cancel", "item-not-found")
        }
        _ => error(reply("error"), "cancel", "service-unavailable"),
    }
}

fn error(builder: xmpp_parsers::minidom::ElementBuilder, kind: &str, condition: &str) -> Element {
    builder
        .append(
            Element::builder("error", NS_CLIENT)
                .with("type", kind)
                .append(Element::builder(condition, NS_STANZAS)),
        )
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn xml(text: &str) -> Element {
        text.parse().expect("test XML parses")
    }

    #[test]
    fn answers_pings_disco_and_refuses_the_rest() {
        let ping = xml(
            "<iq xmlns='jabber:client' type='get' id='p1' from='u@x/r' to='a@bridge'>\
             <ping xmlns='urn:xmpp:ping'/></iq>",
        );
        let pong = answer(&ping, Addressee::Puppet("Alice"));
        assert_eq!(
            (
                pong.attr("type"),
                pong.attr("id"),
                pong.attr("to"),
                pong.attr("from")
            ),
            (Some("result"), Some("p1"), Some("u@x/r"), Some("a@bridge"))
        );
        let info = xml(
            "<iq xmlns='jabber:client' type='get' id='d' from='u@x/r' to='a@bridge'>\
             <query xmlns='http://jabber.org/protocol/disco#info'/></iq>",
        );
        let info = answer(&info, Addressee::Puppet("Alice"));
        let query = info.get_child("query", NS_DISCO_INFO).expect("a query");
        assert!(
            query
                .children()
                .any(|f| f.attr("var") == Some("urn:xmpp:reactions:0"))
        );
        assert!(query.children().any(|i| i.attr("name") == Some("Alice")));

        let set = xml(
            "<iq xmlns='jabber:client' type='set' id='s' from='u@x/r' to='bridge'>\
             <query xmlns='jabber:iq:roster'/></iq>",
        );
        let refused = answer(&set, Addressee::Service);
        assert_eq!(refused.attr("type"), Some("error"));
        assert_eq!(
            crate::muc::error_condition(&refused).map(|(c, _)| c),
            Some("service-unavailable".into())
        );
        let empty = xml("<iq xmlns='jabber:client' type='get' id='e' from='u@x'/>");
        assert_eq!(
            answer(&empty, Addressee::Service).attr("type"),
            Some("error")
        );
    }
}
