//! The component connection against a real Prosody, started by `scripts/test.sh`.

use bridge_xmpp::component::{self, ComponentError};
use xmpp_parsers::minidom::Element;

mod common;
use common::*;

const MUC: &str = "lobby@conference.localhost";

#[tokio::test]
async fn a_puppet_joins_a_muc_and_its_message_is_reflected_with_a_stanza_id() {
    let mut conn = component::connect(component_addr(), DOMAIN, SECRET)
        .await
        .expect("the component handshake succeeds");
    join(&mut conn, &format!("alice@{DOMAIN}/bridge"), MUC, "Alice").await;
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
