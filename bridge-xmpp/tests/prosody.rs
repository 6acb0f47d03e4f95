//! The component connection against a real Prosody, started by `scripts/test.sh`.

use std::time::Duration;

use bridge_xmpp::component::{self, ComponentError};
use xmpp_parsers::minidom::Element;

const DOMAIN: &str = "bridge.localhost";
const SECRET: &str = "bridgesecret";
const MUC: &str = "lobby@conference.localhost";
const WAIT: Duration = Duration::from_secs(10);

/// Where scripts/test.sh started Prosody's component port.
fn component_addr() -> String {
    std::env::var("BRIDGE_TEST_XMPP_COMPONENT").unwrap_or_else(|_| {
        panic!("BRIDGE_TEST_XMPP_COMPONENT is not set: run the tests through scripts/test.sh, which starts Prosody")
    })
}

fn xml(text: &str) -> Element {
    text.parse()
        .unwrap_or_else(|e| panic!("test XML {text}: {e}"))
}

async fn next_matching(
    conn: &mut component::ComponentConnection<tokio::net::TcpStream>,
    what: &str,
    mut wanted: impl FnMut(&Element) -> bool,
) -> Element {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let element = tokio::time::timeout_at(deadline, conn.next_element())
            .await
            .unwrap_or_else(|_| panic!("no {what} within {WAIT:?}"))
            .expect("stream stays up");
        if wanted(&element) {
            return element;
        }
    }
}

#[tokio::test]
async fn a_puppet_joins_a_muc_and_its_message_is_reflected_with_a_stanza_id() {
    let mut conn = component::connect(component_addr(), DOMAIN, SECRET)
        .await
        .expect("the component handshake succeeds");
    conn.send(xml(&format!(
        "<presence xmlns='jabber:client' from='alice@{DOMAIN}/bridge' to='{MUC}/Alice'>\
         <x xmlns='http://jabber.org/protocol/muc'/></presence>"
    )))
    .await
    .expect("join sent");
    // Self-presence: status 110 in the muc#user payload.
    next_matching(&mut conn, "self-presence", |e| {
        e.name() == "presence"
            && e.children().any(|x| {
                x.is("x", "http://jabber.org/protocol/muc#user")
                    && x.children()
                        .any(|s| s.name() == "status" && s.attr("code") == Some("110"))
            })
    })
    .await;
    conn.send(xml(&format!(
        "<message xmlns='jabber:client' type='groupchat' id='m1' from='alice@{DOMAIN}/bridge' \
         to='{MUC}'><body>hello from a puppet</body></message>"
    )))
    .await
    .expect("message sent");
    let reflected = next_matching(&mut conn, "the reflected message", |e| {
        e.name() == "message"
            && e.get_child("body", "jabber:client")
                .map(Element::text)
                .as_deref()
                == Some("hello from a puppet")
    })
    .await;
    // It parses with xmpp-parsers' default (jabber:client) types, and carries the MUC's
    // stanza-id, which the adapter will use for dedup and archive catch-up.
    let message = xmpp_parsers::message::Message::try_from(reflected.clone()).expect("a Message");
    assert_eq!(message.id.as_ref().map(|id| id.0.as_str()), Some("m1"));
    assert!(
        reflected
            .children()
            .any(|c| c.is("stanza-id", "urn:xmpp:sid:0") && c.attr("by") == Some(MUC)),
        "no stanza-id in {reflected:?}"
    );
    conn.close().await.expect("clean close");
}

#[tokio::test]
async fn a_wrong_secret_is_refused_with_a_typed_error() {
    let refused = component::connect(component_addr(), DOMAIN, "not-the-secret").await;
    assert!(
        matches!(refused, Err(ComponentError::HandshakeRefused { .. })),
        "{refused:?}"
    );
}
