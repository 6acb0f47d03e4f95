//! Management rooms: their messages go to the command sink once and are never bridged.

use std::sync::Arc;
use std::time::Duration;

use bridge_core::testkit::{MemoryAdapter, MemoryHandle, inbound};
use bridge_core::{
    Capabilities, Core, CoreError, Link, MemoryStore, RoomId, RoomSettings, Store, Submitted,
};
use tokio::sync::mpsc;

/// A core linking `a-room` of adapter `a` with `b-room` of adapter `b`, with `management`
/// rooms; the memory adapters' handles and the command sink.
async fn start(
    management: Vec<Link>,
) -> (
    Core,
    MemoryHandle,
    MemoryHandle,
    mpsc::Receiver<bridge_core::management::ManagementMessage>,
) {
    let a = MemoryAdapter::new(Capabilities::all());
    let b = MemoryAdapter::new(Capabilities::all());
    let (ha, hb) = (a.handle(), b.handle());
    let (sink, commands) = mpsc::channel(bridge_core::management::SINK_CAPACITY);
    let core = Core::builder(Arc::new(MemoryStore::new()))
        .adapter("a", Arc::new(a))
        .adapter("b", Arc::new(b))
        .room(
            "lobby",
            RoomSettings::default(),
            vec![Link::new("a", "a-room"), Link::new("b", "b-room")],
        )
        .management(management, sink)
        .start()
        .await
        .expect("core starts");
    (core, ha, hb, commands)
}

#[tokio::test]
async fn management_messages_reach_the_sink_once_and_are_not_bridged() {
    let (core, ha, hb, mut commands) = start(vec![Link::new("a", "admin-room")]).await;
    let ctx = ha.context().await.expect("context");
    hb.context().await;
    // The adapter is told to join it like a linked room.
    let rooms = ctx.linked_rooms();
    assert!(
        rooms.iter().any(|r| r.as_str() == "admin-room"),
        "{rooms:?}"
    );
    assert!(ctx.is_management_room(&"admin-room".into()));
    assert!(!ctx.is_management_room(&"a-room".into()));

    let command = inbound("admin-room").id("c1").from("alice").text("status");
    assert!(matches!(
        ha.submit(command.clone()).await,
        Ok(Submitted::Management)
    ));
    let got = commands.recv().await.expect("a command");
    assert_eq!(got.text, "status");
    assert_eq!(got.sender.user.as_str(), "alice");
    assert_eq!(got.room, Link::new("a", "admin-room"));
    // Redelivered: a duplicate, not a second command.
    assert!(matches!(
        ha.submit(command).await,
        Ok(Submitted::Duplicate(_))
    ));
    // Notices (a bot's, the bridge's own answers) and non-messages are no commands.
    let mut notice = inbound("admin-room").id("c2").from("bot").text("Linked.");
    if let bridge_core::EventKind::Message { content, .. } = &mut notice.kind {
        content.msgtype = bridge_core::MsgType::Notice;
    }
    assert!(matches!(ha.submit(notice).await, Ok(Submitted::Management)));
    let join = inbound("admin-room").id("c3").from("bob").join();
    assert!(matches!(ha.submit(join).await, Ok(Submitted::Management)));
    // A puppet of ours is an echo.
    ctx.add_puppet(&"ghost".into()).expect("puppet");
    let echo = inbound("admin-room").id("c4").from("ghost").text("help");
    assert!(matches!(ha.submit(echo).await, Ok(Submitted::Echo)));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        commands.try_recv().is_err(),
        "only the first message is a command"
    );
    assert!(hb.sent().is_empty(), "nothing was bridged");

    // It cannot become a link while it is a management room.
    let refused = core
        .add_link(&RoomId::new("lobby"), Link::new("a", "admin-room"))
        .await;
    assert!(
        matches!(refused, Err(CoreError::ManagementRoom(_))),
        "{refused:?}"
    );
    core.shutdown().await;
}

#[tokio::test]
async fn a_management_room_linked_at_runtime_stops_the_start() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let core = Core::builder(store.clone())
        .adapter("a", Arc::new(MemoryAdapter::new(Capabilities::all())))
        .start()
        .await
        .expect("core starts");
    core.add_link(&RoomId::new("dev"), Link::new("a", "admin-room"))
        .await
        .expect("linked");
    core.shutdown().await;
    let (sink, _commands) = mpsc::channel(4);
    let again = Core::builder(store)
        .adapter("a", Arc::new(MemoryAdapter::new(Capabilities::all())))
        .management([Link::new("a", "admin-room")], sink)
        .start()
        .await;
    match again {
        Err(e @ CoreError::ManagementRoomLinked(..)) => {
            assert!(e.to_string().contains("linked to room dev"), "{e}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// A message addressed to the bridge itself (a direct conversation with its account) goes to
/// the command sink like one in a management room, once, and is never bridged, even when
/// its native room happens to be linked.
#[tokio::test]
async fn messages_to_the_bridge_itself_are_commands() {
    let (core, ha, hb, mut commands) = start(Vec::new()).await;
    let ctx = ha.context().await.expect("context");
    hb.context().await;
    let dm = inbound("dm:alice").id("d1").from("alice").text("status");
    assert!(matches!(
        ctx.submit_to_bridge(dm.clone()).await,
        Ok(Submitted::Management)
    ));
    let got = commands.recv().await.expect("a command");
    assert_eq!(
        (got.text.as_str(), got.sender.user.as_str()),
        ("status", "alice")
    );
    assert_eq!(
        got.room,
        Link::new("a", "dm:alice"),
        "answered where it was asked"
    );
    assert!(matches!(
        ctx.submit_to_bridge(dm).await,
        Ok(Submitted::Duplicate(_))
    ));
    let linked = inbound("a-room").id("d2").from("alice").text("help");
    assert!(matches!(
        ctx.submit_to_bridge(linked).await,
        Ok(Submitted::Management)
    ));
    assert_eq!(commands.recv().await.expect("a command").text, "help");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(hb.sent().is_empty(), "nothing was bridged");
    core.shutdown().await;
}
