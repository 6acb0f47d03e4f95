//! What the tests against a real Prosody share: where scripts/test.sh started it, and a few
//! helpers around a raw component connection.

// Each test binary uses its own part of this module.
#![allow(dead_code)]

use std::time::Duration;

use bridge_xmpp::component::ComponentConnection;
use tokio::net::TcpStream;
use xmpp_parsers::minidom::Element;

/// The component domain of the test Prosody.
pub const DOMAIN: &str = "bridge.localhost";
/// Its secret.
pub const SECRET: &str = "bridgesecret";
/// How long a test waits for one stanza.
pub const WAIT: Duration = Duration::from_secs(10);

/// Where scripts/test.sh started Prosody's component port.
pub fn component_addr() -> String {
    std::env::var("BRIDGE_TEST_XMPP_COMPONENT").unwrap_or_else(|_| {
        panic!("BRIDGE_TEST_XMPP_COMPONENT is not set: run the tests through scripts/test.sh, which starts Prosody")
    })
}

/// Parses test XML.
pub fn xml(text: &str) -> Element {
    text.parse()
        .unwrap_or_else(|e| panic!("test XML {text}: {e}"))
}

/// The next stanza `wanted` accepts (others are skipped), within [`WAIT`].
pub async fn next_matching(
    conn: &mut ComponentConnection<TcpStream>,
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

/// True for a MUC self-presence (status 110).
pub fn is_self_presence(e: &Element) -> bool {
    e.name() == "presence"
        && e.children().any(|x| {
            x.is("x", "http://jabber.org/protocol/muc#user")
                && x.children()
                    .any(|s| s.name() == "status" && s.attr("code") == Some("110"))
        })
}

/// `from` (a JID on the component domain) joins `room` as `nick`; returns the self-presence.
pub async fn join(
    conn: &mut ComponentConnection<TcpStream>,
    from: &str,
    room: &str,
    nick: &str,
) -> Element {
    conn.send(xml(&format!(
        "<presence xmlns='jabber:client' from='{from}' to='{room}/{nick}'>\
         <x xmlns='http://jabber.org/protocol/muc'/></presence>"
    )))
    .await
    .expect("join sent");
    next_matching(conn, "self-presence", is_self_presence).await
}
