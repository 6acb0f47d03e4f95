//! MUC archive catch-up (XEP-0313 + RSM) against a real Prosody, started by `scripts/test.sh`.

use std::time::{SystemTime, UNIX_EPOCH};

use bridge_xmpp::component::{self, ComponentConnection};
use bridge_xmpp::mam::{self, Fin, MamError, MamItem};
use tokio::net::TcpStream;
use xmpp_parsers::minidom::Element;

mod common;
use common::*;

const PUPPET: &str = "mamtest@bridge.localhost/x";

fn body(message: &Element) -> Option<String> {
    message
        .get_child("body", "jabber:client")
        .map(Element::text)
}

/// Sends a MAM query and gathers the room's results for it until its `<fin/>` iq arrives.
async fn run_query(
    conn: &mut ComponentConnection<TcpStream>,
    room: &str,
    query: Element,
) -> (Vec<MamItem>, Result<Fin, MamError>) {
    let iq_id = query.attr("id").expect("iq id").to_owned();
    let query_id = query
        .get_child("query", mam::NS_MAM)
        .and_then(|q| q.attr("queryid"))
        .expect("queryid")
        .to_owned();
    conn.send(query).await.expect("query sent");
    let mut items = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let element = tokio::time::timeout_at(deadline, conn.next_element())
            .await
            .unwrap_or_else(|_| panic!("no answer to MAM query {iq_id} within {WAIT:?}"))
            .expect("stream stays up");
        if let Some(item) = mam::parse_result(&element, room) {
            assert_eq!(item.query_id, query_id, "a result for another query");
            items.push(item);
        } else if element.name() == "iq" && element.attr("id") == Some(iq_id.as_str()) {
            assert_eq!(element.attr("from"), Some(room));
            return (items, mam::parse_fin(&element));
        }
    }
}

fn bodies(items: &[MamItem]) -> Vec<String> {
    items
        .iter()
        .map(|i| body(&i.message).expect("archived message has a body"))
        .collect()
}

#[tokio::test]
async fn muc_archive_paging_after_an_id_and_latest() {
    // A room of its own per run: Prosody keeps a room (and its archive) alive while our puppet
    // is an occupant, and a component disconnect does not make the puppet leave.
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos();
    let room = format!("mamtest-{nanos}@conference.localhost");
    let mut conn = component::connect(component_addr(), DOMAIN, SECRET)
        .await
        .expect("the component handshake succeeds");

    // An empty archive: the latest query answers no item, and `complete`.
    join(&mut conn, PUPPET, &room, "MamTest").await;
    let (items, fin) = run_query(
        &mut conn,
        &room,
        mam::latest_query(PUPPET, &room, "latest0", "ql0"),
    )
    .await;
    assert!(items.is_empty(), "{items:?}");
    let fin = fin.expect("fin");
    assert!(fin.complete && fin.last.is_none(), "{fin:?}");

    // Five messages; each reflection carries the archive id as its stanza-id.
    let mut ids = Vec::new();
    for n in 1..=5 {
        conn.send(xml(&format!(
            "<message xmlns='jabber:client' type='groupchat' id='m{n}' from='{PUPPET}' \
             to='{room}'><body>message {n}</body></message>"
        )))
        .await
        .expect("message sent");
        let reflected = next_matching(&mut conn, "the reflected message", |e| {
            e.name() == "message" && body(e).as_deref() == Some(format!("message {n}").as_str())
        })
        .await;
        let stanza_id = reflected
            .children()
            .find(|c| c.is("stanza-id", "urn:xmpp:sid:0") && c.attr("by") == Some(room.as_str()))
            .and_then(|c| c.attr("id"))
            .expect("the reflection has the room's stanza-id")
            .to_owned();
        ids.push(stanza_id);
    }
    let all_bodies: Vec<String> = (1..=5).map(|n| format!("message {n}")).collect();

    // Everything from the start.
    let (items, fin) = run_query(
        &mut conn,
        &room,
        mam::query(PUPPET, &room, "all", "qall", None, 50),
    )
    .await;
    let fin = fin.expect("fin");
    assert_eq!(bodies(&items), all_bodies);
    assert_eq!(
        items
            .iter()
            .map(|i| i.archive_id.clone())
            .collect::<Vec<_>>(),
        ids,
        "archive ids are the live stanza-ids"
    );
    assert!(fin.complete, "{fin:?}");
    assert_eq!(fin.first.as_ref(), ids.first());
    assert_eq!(fin.last.as_ref(), ids.last());
    assert_eq!(fin.count, Some(5));
    let now_ms = u64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .as_millis(),
    )
    .expect("fits");
    for item in &items {
        let delay = item.delay_ms.expect("archived items carry a delay stamp");
        assert!(
            delay <= now_ms && now_ms - delay < 60_000,
            "{delay} vs {now_ms}"
        );
        // The archived copy is the occupant's message, from its room JID, with our id.
        assert_eq!(
            item.message.attr("from"),
            Some(format!("{room}/MamTest").as_str())
        );
        assert_eq!(item.message.attr("type"), Some("groupchat"));
    }
    assert_eq!(items[0].message.attr("id"), Some("m1"));

    // After the 2nd message: the 3 later ones, and nothing more.
    let (items, fin) = run_query(
        &mut conn,
        &room,
        mam::query(PUPPET, &room, "after2", "qa2", Some(&ids[1]), 50),
    )
    .await;
    let fin = fin.expect("fin");
    assert_eq!(bodies(&items), all_bodies[2..]);
    assert!(fin.complete, "{fin:?}");
    assert_eq!(fin.last.as_ref(), ids.last());

    // After the last one: an empty, complete page.
    let (items, fin) = run_query(
        &mut conn,
        &room,
        mam::query(PUPPET, &room, "after5", "qa5", Some(&ids[4]), 50),
    )
    .await;
    let fin = fin.expect("fin");
    assert!(items.is_empty(), "{items:?}");
    assert!(fin.complete && fin.last.is_none(), "{fin:?}");

    // The latest item only.
    let (items, fin) = run_query(
        &mut conn,
        &room,
        mam::latest_query(PUPPET, &room, "latest", "ql"),
    )
    .await;
    let fin = fin.expect("fin");
    assert_eq!(bodies(&items), ["message 5"]);
    assert_eq!(items[0].archive_id, ids[4]);
    assert_eq!(fin.last.as_ref(), ids.last());
    assert_eq!(fin.first.as_ref(), ids.last());
    // Backwards, "complete" means nothing older: there is.
    assert!(!fin.complete, "{fin:?}");

    // Pages of two: 1-2, 3-4 (incomplete), then 5 (complete).
    let mut after: Option<String> = None;
    let mut pages = Vec::new();
    for page in 0.. {
        assert!(page < 5, "paging does not end: {pages:?}");
        let (items, fin) = run_query(
            &mut conn,
            &room,
            mam::query(
                PUPPET,
                &room,
                &format!("page{page}"),
                &format!("qp{page}"),
                after.as_deref(),
                2,
            ),
        )
        .await;
        let fin = fin.expect("fin");
        assert_eq!(
            fin.last.as_ref(),
            items.last().map(|i| &i.archive_id),
            "{fin:?}"
        );
        pages.push((bodies(&items), fin.complete));
        if fin.complete {
            break;
        }
        after = fin.last;
    }
    assert_eq!(
        pages,
        [
            (all_bodies[0..2].to_vec(), false),
            (all_bodies[2..4].to_vec(), false),
            (all_bodies[4..].to_vec(), true),
        ]
    );

    // An id the archive does not have: item-not-found, the cue to fall back to latest_query.
    let (items, fin) = run_query(
        &mut conn,
        &room,
        mam::query(PUPPET, &room, "gone", "qg", Some("no-such-archive-id"), 50),
    )
    .await;
    assert!(items.is_empty());
    let err = fin.expect_err("an unknown id is refused");
    assert!(err.is_item_not_found(), "{err:?}");

    conn.send(xml(&format!(
        "<presence xmlns='jabber:client' type='unavailable' from='{PUPPET}' to='{room}/MamTest'/>"
    )))
    .await
    .expect("leave sent");
    conn.close().await.expect("clean close");
}
