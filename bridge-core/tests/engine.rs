//! The delivery engine, driven through in-memory adapters.

use std::sync::Arc;
use std::time::Duration;

use bridge_core::ids::{AdapterId, EventId, EventIdGenerator, RemoteRoomId};
use bridge_core::testkit::{MemoryAdapter, MemoryHandle, Unlinked, inbound};
use bridge_core::{
    AdapterError, Capabilities, CarryPolicy, Core, DegradePolicy, DeliverySettings, Event,
    EventKind, Fallback, Link, MembershipChange, MemoryStore, ModerationAction, MsgType, Origin,
    RemoteEventId, RemoteUserId, Role, RoomId, RoomSettings, Sender, SledStore, Store, Submitted,
};

const WAIT: Duration = Duration::from_secs(10);

struct Pair {
    core: Core,
    a: MemoryHandle,
    b: MemoryHandle,
}

fn fast() -> DeliverySettings {
    DeliverySettings {
        max_attempts: 3,
        backoff_initial: Duration::from_millis(5),
        backoff_max: Duration::from_millis(20),
        queue_capacity: 1024,
    }
}

async fn pair_with(
    store: Arc<dyn Store>,
    caps_b: Capabilities,
    settings: DeliverySettings,
    policy: Option<DegradePolicy>,
) -> Pair {
    pair_in_room(
        store,
        caps_b,
        settings,
        RoomSettings {
            name: Some("Lobby".into()),
            policy,
            carry: None,
        },
    )
    .await
}

async fn pair_in_room(
    store: Arc<dyn Store>,
    caps_b: Capabilities,
    settings: DeliverySettings,
    room: RoomSettings,
) -> Pair {
    let a = MemoryAdapter::new(Capabilities::all());
    let b = MemoryAdapter::new(caps_b);
    let (ha, hb) = (a.handle(), b.handle());
    let core = Core::builder(store)
        .settings(settings)
        .adapter("a", Arc::new(a))
        .adapter("b", Arc::new(b))
        .room(
            "lobby",
            room,
            vec![Link::new("a", "a-room"), Link::new("b", "b-room")],
        )
        .start()
        .await
        .expect("core starts");
    ha.context().await;
    hb.context().await;
    Pair { core, a: ha, b: hb }
}

async fn pair(caps_b: Capabilities) -> Pair {
    pair_with(Arc::new(MemoryStore::new()), caps_b, fast(), None).await
}

/// Alice says "0", "1", … in `room` of `adapter`, message `i` with native ID `i`.
async fn submit_numbered(adapter: &MemoryHandle, room: &str, count: usize) {
    for i in 0..count {
        adapter
            .submit(
                inbound(room)
                    .id(&i.to_string())
                    .from("alice")
                    .text(&i.to_string()),
            )
            .await
            .expect("submit");
    }
}

fn body(kind: &EventKind<RemoteEventId>) -> String {
    match kind {
        EventKind::Message { content, .. } => content.text.body().to_owned(),
        other => format!("<{}>", other.name()),
    }
}

/// Alice says "one", starts typing, reads "one", is made a moderator and says "two" in
/// `a-room`; returns what `b` was sent (once "two" and, a moment later, anything after it
/// arrived).
async fn talk_type_and_read(p: &Pair) -> Vec<String> {
    let a = &p.a;
    a.submit(inbound("a-room").id("m1").from("alice").text("one"))
        .await
        .expect("submit");
    a.submit(inbound("a-room").from("alice").typing(true))
        .await
        .expect("typing");
    a.submit(inbound("a-room").from("alice").read_marker("m1"))
        .await
        .expect("read marker");
    a.submit(
        inbound("a-room")
            .id("r1")
            .from("alice")
            .role(Role::Moderator),
    )
    .await
    .expect("role");
    a.submit(inbound("a-room").id("m2").from("alice").text("two"))
        .await
        .expect("submit");
    let deadline = tokio::time::Instant::now() + WAIT;
    while !p.b.sent().iter().any(|e| body(&e.kind) == "two") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "\"two\" never arrived"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Give anything withheld wrongly the time to arrive after "two".
    tokio::time::sleep(Duration::from_millis(200)).await;
    p.b.sent().iter().map(|e| body(&e.kind)).collect()
}

#[tokio::test]
async fn a_room_that_keeps_typing_read_markers_and_roles_to_themselves_still_carries_messages() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let room = RoomSettings {
        name: None,
        policy: None,
        carry: Some(CarryPolicy {
            typing: false,
            read_markers: false,
            roles: false,
            moderation: false,
        }),
    };
    let p = pair_in_room(store, Capabilities::all(), fast(), room).await;
    assert_eq!(talk_type_and_read(&p).await, ["one", "two"]);

    // The same events in a room with the default policy cross, the role in its place.
    let q = pair(Capabilities::all()).await;
    assert_eq!(
        talk_type_and_read(&q).await,
        ["one", "<typing>", "<read_marker>", "<role>", "two"]
    );
    let role = q.b.sent().into_iter().find_map(|e| match e.kind {
        EventKind::Role { role } => Some((e.sender.user.as_str().to_owned(), role)),
        _ => None,
    });
    assert_eq!(role, Some(("alice".to_owned(), Role::Moderator)));

    // A target that cannot show roles is not sent them.
    let mut caps = Capabilities::all();
    caps.roles = false;
    let r = pair(caps).await;
    assert_eq!(
        talk_type_and_read(&r).await,
        ["one", "<typing>", "<read_marker>", "two"]
    );
}

/// Three networks in one room; the third takes no part in typing notifications (its adapter's
/// policy), read markers still cross everywhere.
#[tokio::test]
async fn an_adapter_that_takes_no_typing_neither_sends_nor_receives_it() {
    let (a, b, c) = (
        MemoryAdapter::new(Capabilities::all()),
        MemoryAdapter::new(Capabilities::all()),
        MemoryAdapter::new(Capabilities::all()),
    );
    let (ha, hb, hc) = (a.handle(), b.handle(), c.handle());
    let quiet = CarryPolicy {
        typing: false,
        ..CarryPolicy::default()
    };
    let core = Core::builder(Arc::new(MemoryStore::new()))
        .settings(fast())
        .adapter("a", Arc::new(a))
        .adapter("b", Arc::new(b))
        .adapter("c", Arc::new(c))
        .adapter_carry("c", quiet)
        .room(
            "lobby",
            RoomSettings::default(),
            vec![
                Link::new("a", "a-room"),
                Link::new("b", "b-room"),
                Link::new("c", "c-room"),
            ],
        )
        .start()
        .await
        .expect("core starts");
    for h in [&ha, &hb, &hc] {
        h.context().await;
    }
    ha.submit(inbound("a-room").id("m1").from("alice").text("one"))
        .await
        .expect("one");
    ha.submit(inbound("a-room").from("alice").typing(true))
        .await
        .expect("a types");
    hc.submit(inbound("c-room").from("carol").typing(true))
        .await
        .expect("c types");
    ha.submit(inbound("a-room").from("alice").read_marker("m1"))
        .await
        .expect("read marker");
    ha.submit(inbound("a-room").id("m2").from("alice").text("two"))
        .await
        .expect("two");
    for h in [&hb, &hc] {
        h.wait_sent(2, WAIT).await;
    }
    // Give anything withheld wrongly the time to arrive after "two".
    tokio::time::sleep(Duration::from_millis(200)).await;
    let seen = |h: &MemoryHandle| -> Vec<String> {
        h.sent()
            .iter()
            .map(|e| format!("{} {}", e.sender.user, body(&e.kind)))
            .collect()
    };
    assert_eq!(
        seen(&hb),
        [
            "alice one",
            "alice <typing>",
            "alice <read_marker>",
            "alice two"
        ],
        "b takes everything from a, and no typing from c"
    );
    assert_eq!(
        seen(&hc),
        ["alice one", "alice <read_marker>", "alice two"],
        "c takes no typing"
    );
    assert!(ha.sent().is_empty(), "{:?}", seen(&ha));

    // A policy for an adapter that is not registered is refused.
    let refused = Core::builder(Arc::new(MemoryStore::new()))
        .adapter("a", Arc::new(MemoryAdapter::new(Capabilities::all())))
        .adapter_carry("z", quiet)
        .start()
        .await;
    assert!(
        matches!(&refused, Err(e) if e.to_string().contains("\"z\"")),
        "{:?}",
        refused.err()
    );
    core.shutdown().await;
}

#[tokio::test]
async fn routes_in_order_without_echoes_or_duplicates() {
    let p = pair(Capabilities::all()).await;
    for i in 0..100 {
        let ev = inbound("a-room")
            .id(&format!("m{i}"))
            .from("alice")
            .text(&format!("hello {i}"));
        assert!(matches!(p.a.submit(ev).await, Ok(Submitted::Accepted(_))));
    }
    let sent = p.b.wait_sent(100, WAIT).await;
    let bodies: Vec<String> = sent.iter().map(|e| body(&e.kind)).collect();
    let want: Vec<String> = (0..100).map(|i| format!("hello {i}")).collect();
    assert_eq!(bodies, want);
    assert!(
        sent.iter()
            .all(|e| e.room.as_str() == "b-room" && e.sender.user.as_str() == "alice")
    );

    // A redelivery of the same native ID is a duplicate.
    let again = inbound("a-room").id("m0").from("alice").text("hello 0");
    assert!(matches!(
        p.a.submit(again).await,
        Ok(Submitted::Duplicate(_))
    ));
    // The delivered copy coming back from b (same native ID) is an echo, and so is anything
    // b's puppet for alice says.
    let native = sent[0].id;
    let echo_id = p.b.native_id_of(native).expect("native id");
    let echo = inbound("b-room")
        .id(echo_id.as_str())
        .from("someone")
        .text("hello 0");
    assert_eq!(p.b.submit(echo).await.ok(), Some(Submitted::Echo));
    let puppet = MemoryAdapter::puppet_of("alice");
    let echo = inbound("b-room")
        .id("fresh")
        .from(puppet.as_str())
        .text("hi");
    assert_eq!(p.b.submit(echo).await.ok(), Some(Submitted::Echo));
    // Unlinked rooms are not routed.
    let stray = inbound("nowhere").id("x").from("alice").text("hi");
    assert_eq!(p.a.submit(stray).await.ok(), Some(Submitted::Unrouted));

    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(p.b.sent().len(), 100);
    assert!(p.a.sent().is_empty(), "nothing comes back to the source");
    p.core.shutdown().await;
}

#[tokio::test]
async fn relations_are_mapped_to_the_targets_native_ids() {
    let p = pair(Capabilities::all()).await;
    let submit = |ev| p.a.submit(ev);
    submit(inbound("a-room").id("q").from("alice").text("question"))
        .await
        .expect("q");
    submit(inbound("a-room").id("r").from("bob").reply("q", "answer"))
        .await
        .expect("r");
    submit(
        inbound("a-room")
            .id("e")
            .from("alice")
            .edit("q", "question!"),
    )
    .await
    .expect("e");
    submit(inbound("a-room").id("x").from("bob").react("q", "👍"))
        .await
        .expect("x");
    // Deleting the reaction event is an unreact that names the reaction's native ID.
    submit(inbound("a-room").id("y").from("bob").redact("x"))
        .await
        .expect("y");
    let sent = p.b.wait_sent(5, WAIT).await;
    assert_eq!(sent.len(), 5);
    let q_native = p.b.native_id_of(sent[0].id).expect("q delivered");
    let x_native = p.b.native_id_of(sent[3].id).expect("x delivered");
    assert!(
        matches!(&sent[1].kind, EventKind::Message { reply_to: Some(t), .. } if *t == q_native)
    );
    assert!(matches!(&sent[2].kind, EventKind::Edit { target, .. } if *target == q_native));
    assert!(
        matches!(&sent[3].kind, EventKind::Reaction { target, key } if *target == q_native && key == "👍")
    );
    assert!(matches!(&sent[4].kind,
        EventKind::Unreact { target, key, reaction: Some(r) } if *target == q_native && key == "👍" && *r == x_native));
    p.core.shutdown().await;
}

#[tokio::test]
async fn an_unreact_naming_its_reaction_gets_the_reactions_key_and_only_from_its_author() {
    let p = pair(Capabilities::all()).await;
    let submit = |ev| p.a.submit(ev);
    submit(inbound("a-room").id("q").from("alice").text("question"))
        .await
        .expect("q");
    submit(inbound("a-room").id("x").from("bob").react("q", "🎉"))
        .await
        .expect("x");
    // As MIMI's unlike: the reaction is named, the key is not.
    let unlike = |who: &str, id: &str| {
        inbound("a-room").id(id).from(who).kind(EventKind::Unreact {
            target: RemoteEventId::new("q"),
            key: String::new(),
            reaction: Some(RemoteEventId::new("x")),
        })
    };
    let refused = submit(unlike("mallory", "m")).await.expect("m");
    assert!(matches!(refused, Submitted::Rejected(_)), "{refused:?}");
    submit(unlike("bob", "y")).await.expect("y");
    let sent = p.b.wait_sent(3, WAIT).await;
    let q_native = p.b.native_id_of(sent[0].id).expect("q delivered");
    let x_native = p.b.native_id_of(sent[1].id).expect("x delivered");
    assert!(matches!(&sent[2].kind,
        EventKind::Unreact { target, key, reaction: Some(r) } if *target == q_native && key == "🎉" && *r == x_native));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(p.b.sent().len(), 3);
    p.core.shutdown().await;
}

#[tokio::test]
async fn only_the_author_edits_and_only_author_or_moderator_deletes() {
    let p = pair(Capabilities::all()).await;
    p.a.submit(inbound("a-room").id("m").from("alice").text("mine"))
        .await
        .expect("m");
    let forged = inbound("a-room")
        .id("e1")
        .from("mallory")
        .edit("m", "pwned");
    assert!(matches!(
        p.a.submit(forged).await,
        Ok(Submitted::Rejected(_))
    ));
    let forged = inbound("a-room").id("d1").from("mallory").redact("m");
    assert!(matches!(
        p.a.submit(forged).await,
        Ok(Submitted::Rejected(_))
    ));
    let unknown = inbound("a-room")
        .id("e2")
        .from("alice")
        .edit("never-seen", "x");
    assert!(matches!(
        p.a.submit(unknown).await,
        Ok(Submitted::Rejected(_))
    ));
    let moderated = inbound("a-room")
        .id("d2")
        .from("mod")
        .moderator()
        .redact("m");
    assert!(matches!(
        p.a.submit(moderated).await,
        Ok(Submitted::Accepted(_))
    ));
    let sent = p.b.wait_sent(2, WAIT).await;
    assert_eq!(sent.len(), 2);
    assert!(matches!(sent[1].kind, EventKind::Redaction { .. }));
    assert!(
        sent[1].moderated,
        "a moderator's deletion is marked for the target"
    );
    // The author's own deletion is not a moderation (even by a moderator).
    p.a.submit(inbound("a-room").id("m2").from("alice").text("also mine"))
        .await
        .expect("m2");
    p.a.submit(
        inbound("a-room")
            .id("d3")
            .from("alice")
            .moderator()
            .redact("m2"),
    )
    .await
    .expect("d3");
    let sent = p.b.wait_sent(4, WAIT).await;
    assert!(matches!(sent[3].kind, EventKind::Redaction { .. }));
    assert!(!sent[3].moderated, "{:?}", sent[3]);
    p.core.shutdown().await;
}

#[tokio::test]
async fn what_a_target_cannot_carry_is_degraded_per_policy() {
    let p = pair(Capabilities::text_only()).await;
    let submit = |ev| p.a.submit(ev);
    submit(
        inbound("a-room")
            .id("q")
            .from("alice")
            .named("Alice")
            .text("question"),
    )
    .await
    .expect("q");
    submit(inbound("a-room").id("r").from("bob").reply("q", "answer"))
        .await
        .expect("r");
    submit(
        inbound("a-room")
            .id("e")
            .from("alice")
            .edit("q", "question!"),
    )
    .await
    .expect("e");
    submit(inbound("a-room").id("x").from("bob").react("q", "👍"))
        .await
        .expect("x");
    submit(
        inbound("a-room")
            .id("c")
            .from("bob")
            .custom("org.example.poll", serde_json::json!({})),
    )
    .await
    .expect("c");
    submit(inbound("a-room").id("d").from("alice").redact("q"))
        .await
        .expect("d");
    submit(inbound("a-room").id("t").from("alice").typing(true))
        .await
        .expect("t");
    submit(inbound("a-room").id("z").from("alice").text("last"))
        .await
        .expect("z");
    let sent = p.b.wait_sent(5, WAIT).await;
    let bodies: Vec<String> = sent.iter().map(|e| body(&e.kind)).collect();
    assert_eq!(
        bodies,
        vec![
            "question".to_owned(),
            "> Alice: “question”\nanswer".to_owned(),
            "* question!".to_owned(),
            "reacted 👍 to “question”".to_owned(),
            "last".to_owned(),
        ]
    );
    assert!(sent[1].degraded && !sent[0].degraded);
    assert!(
        matches!(&sent[3].kind, EventKind::Message { content, .. } if content.msgtype == MsgType::Emote)
    );
    assert!(p.core.dead_letters().expect("dead letters").is_empty());
    p.core.shutdown().await;
}

#[tokio::test]
async fn a_thread_answers_its_root_where_threads_are_not_shown_and_replies_join_it_back() {
    // a shows threads, b does not (it takes replies).
    let mut caps_b = Capabilities::all();
    caps_b.threads = false;
    let p = pair(caps_b).await;
    p.a.submit(inbound("a-room").id("root").from("alice").text("root"))
        .await
        .expect("root");
    p.a.submit(
        inbound("a-room")
            .id("t1")
            .from("alice")
            .in_thread("root", "in the thread"),
    )
    .await
    .expect("t1");
    let sent = p.b.wait_sent(2, WAIT).await;
    let root_b = p.b.native_id_of(sent[0].id).expect("root delivered");
    assert!(
        matches!(&sent[1].kind, EventKind::Message { reply_to: Some(t), thread: None, .. } if *t == root_b),
        "{:?}",
        sent[1].kind
    );
    assert!(sent[1].degraded);
    // On b, someone answers the threaded message: on a the answer is in the thread.
    let t1_b = p.b.native_id_of(sent[1].id).expect("t1 delivered");
    p.b.submit(
        inbound("b-room")
            .id("r")
            .from("bob")
            .reply(t1_b.as_str(), "answer"),
    )
    .await
    .expect("r");
    let sent_a = p.a.wait_sent(1, WAIT).await;
    let root_a = RemoteEventId::new("root");
    let t1_a = RemoteEventId::new("t1");
    assert!(
        matches!(&sent_a[0].kind,
            EventKind::Message { reply_to: Some(r), thread: Some(t), .. } if *r == t1_a && *t == root_a),
        "{:?}",
        sent_a[0].kind
    );
    // A reply to the root itself is a reply, not in a thread.
    p.b.submit(
        inbound("b-room")
            .id("r2")
            .from("bob")
            .reply(root_b.as_str(), "to the root"),
    )
    .await
    .expect("r2");
    let sent_a = p.a.wait_sent(2, WAIT).await;
    assert!(
        matches!(&sent_a[1].kind, EventKind::Message { reply_to: Some(r), thread: None, .. } if *r == root_a),
        "{:?}",
        sent_a[1].kind
    );
    p.core.shutdown().await;
}

/// A moderator on `a` kicks `user` of `adapter`, with a reason.
fn kick(id: &str, adapter: &str, user: &str, name: &str) -> bridge_core::InboundEvent {
    inbound("a-room")
        .id(id)
        .from("mod")
        .named("Mod")
        .kind(EventKind::Moderation {
            target: Sender {
                adapter: AdapterId::new(adapter),
                user: RemoteUserId::new(user),
                display_name: Some(name.into()),
                avatar: None,
            },
            action: ModerationAction::Kick,
            reason: Some("spam".into()),
        })
}

#[tokio::test]
async fn a_kick_the_target_cannot_do_removes_a_puppet_or_is_told() {
    let mut caps = Capabilities::text_only();
    caps.membership = true;
    let p = pair(caps).await;
    // Carl of `a` has a puppet on `b`: it is removed, as Carl.
    p.a.submit(kick("k1", "a", "carl", "Carl"))
        .await
        .expect("k1");
    // Bea is of `b`, which cannot kick: a line says what happened.
    p.a.submit(kick("k2", "b", "bea", "Bea")).await.expect("k2");
    let sent = p.b.wait_sent(2, WAIT).await;
    assert_eq!(
        sent[0].kind,
        EventKind::Membership {
            change: MembershipChange::Kick,
            reason: Some("spam".into()),
        }
    );
    assert_eq!(
        (
            sent[0].sender.adapter.as_str(),
            sent[0].sender.user.as_str()
        ),
        ("a", "carl")
    );
    assert_eq!(
        body(&sent[1].kind),
        "kicked Bea on the other networks: spam"
    );
    assert_eq!(sent[1].sender.user.as_str(), "mod");
    assert!(sent[1].degraded);
    // Where the target can kick, the moderation goes as it is.
    let q = pair(Capabilities::all()).await;
    q.a.submit(kick("k3", "b", "bea", "Bea")).await.expect("k3");
    let sent = q.b.wait_sent(1, WAIT).await;
    assert!(
        matches!(&sent[0].kind, EventKind::Moderation { target, action: ModerationAction::Kick, .. } if target.user.as_str() == "bea"),
        "{:?}",
        sent[0].kind
    );
    p.core.shutdown().await;
    q.core.shutdown().await;
}

#[tokio::test]
async fn a_room_that_keeps_moderation_to_its_networks_carries_no_kick() {
    let room = RoomSettings {
        name: None,
        policy: None,
        carry: Some(CarryPolicy {
            moderation: false,
            ..CarryPolicy::default()
        }),
    };
    let p = pair_in_room(
        Arc::new(MemoryStore::new()),
        Capabilities::all(),
        fast(),
        room,
    )
    .await;
    p.a.submit(kick("k1", "b", "bea", "Bea")).await.expect("k1");
    p.a.submit(inbound("a-room").id("m").from("mod").text("after"))
        .await
        .expect("m");
    let sent = p.b.wait_sent(1, WAIT).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let kinds: Vec<String> = p.b.sent().iter().map(|e| body(&e.kind)).collect();
    assert_eq!(kinds, ["after"], "{sent:?}");
    p.core.shutdown().await;
}

#[tokio::test]
async fn a_room_policy_can_drop_instead() {
    let policy = DegradePolicy {
        reply: Fallback::Drop,
        edit: Fallback::Drop,
        reaction: Fallback::Drop,
        ..DegradePolicy::default()
    };
    let p = pair_with(
        Arc::new(MemoryStore::new()),
        Capabilities::text_only(),
        fast(),
        Some(policy),
    )
    .await;
    let submit = |ev| p.a.submit(ev);
    submit(inbound("a-room").id("q").from("alice").text("question"))
        .await
        .expect("q");
    submit(inbound("a-room").id("r").from("bob").reply("q", "answer"))
        .await
        .expect("r");
    submit(
        inbound("a-room")
            .id("e")
            .from("alice")
            .edit("q", "question!"),
    )
    .await
    .expect("e");
    submit(inbound("a-room").id("x").from("bob").react("q", "👍"))
        .await
        .expect("x");
    submit(inbound("a-room").id("z").from("alice").text("last"))
        .await
        .expect("z");
    let sent = p.b.wait_sent(3, WAIT).await;
    let bodies: Vec<String> = sent.iter().map(|e| body(&e.kind)).collect();
    assert_eq!(bodies, vec!["question", "answer", "last"]);
    p.core.shutdown().await;
}

#[tokio::test]
async fn transient_failures_are_retried_and_permanent_ones_dead_lettered() {
    let p = pair(Capabilities::all()).await;
    p.b.fail_next([
        AdapterError::transient("down"),
        AdapterError::transient("still down"),
    ]);
    p.a.submit(inbound("a-room").id("1").from("alice").text("one"))
        .await
        .expect("1");
    assert_eq!(p.b.wait_sent(1, WAIT).await.len(), 1);
    assert_eq!(p.b.send_calls(), 3);

    p.b.fail_next([AdapterError::Permanent("room gone".into())]);
    p.a.submit(inbound("a-room").id("2").from("alice").text("two"))
        .await
        .expect("2");
    p.a.submit(inbound("a-room").id("3").from("alice").text("three"))
        .await
        .expect("3");
    let sent = p.b.wait_sent(2, WAIT).await;
    assert_eq!(
        sent.iter().map(|e| body(&e.kind)).collect::<Vec<_>>(),
        vec!["one", "three"]
    );
    let dead = p.core.dead_letters().expect("dead letters");
    assert_eq!(dead.len(), 1);
    assert!(dead[0].error.contains("room gone"));

    // Exhausting max_attempts (3) dead-letters too.
    p.b.fail_next((0..3).map(|_| AdapterError::transient("flaky")));
    p.a.submit(inbound("a-room").id("4").from("alice").text("four"))
        .await
        .expect("4");
    let deadline = tokio::time::Instant::now() + WAIT;
    while p.core.dead_letters().expect("dead").len() < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no second dead letter"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(p.core.retry_dead_letters().await.expect("retry"), 2);
    let sent = p.b.wait_sent(4, WAIT).await;
    let mut bodies: Vec<String> = sent.iter().map(|e| body(&e.kind)).collect();
    bodies.sort();
    assert_eq!(bodies, vec!["four", "one", "three", "two"]);
    assert!(p.core.dead_letters().expect("dead").is_empty());
    p.core.shutdown().await;
}

#[tokio::test]
async fn a_slow_link_neither_blocks_others_nor_loses_order_beyond_its_window() {
    let slow = MemoryAdapter::new(Capabilities::all());
    let fast_a = MemoryAdapter::new(Capabilities::all());
    let fast_b = MemoryAdapter::new(Capabilities::all());
    let (hs, ha, hb) = (slow.handle(), fast_a.handle(), fast_b.handle());
    hs.set_delay(Some(Duration::from_millis(2)));
    let settings = DeliverySettings {
        queue_capacity: 4,
        ..fast()
    };
    let core = Core::builder(Arc::new(MemoryStore::new()))
        .settings(settings)
        .adapter("slow", Arc::new(slow))
        .adapter("a", Arc::new(fast_a))
        .adapter("b", Arc::new(fast_b))
        .room(
            "r",
            RoomSettings::default(),
            vec![
                Link::new("a", "a"),
                Link::new("b", "b"),
                Link::new("slow", "s"),
            ],
        )
        .start()
        .await
        .expect("start");
    let started = std::time::Instant::now();
    submit_numbered(&ha, "a", 200).await;
    let fast_sent = hb.wait_sent(200, WAIT).await;
    let fast_done = started.elapsed();
    assert_eq!(fast_sent.len(), 200);
    let slow_sent = hs.wait_sent(200, WAIT * 3).await;
    let slow_done = started.elapsed();
    assert!(fast_done < slow_done, "the fast link finished first");
    let order: Vec<String> = slow_sent.iter().map(|e| body(&e.kind)).collect();
    let want: Vec<String> = (0..200).map(|i| i.to_string()).collect();
    assert_eq!(order, want);
    core.shutdown().await;
}

#[tokio::test]
async fn the_outbox_survives_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path()).expect("open"));
    let p = pair_with(store.clone(), Capabilities::all(), fast(), None).await;
    // Every attempt of this first life fails, however slowly the events are stored (with only
    // a few failures, a loaded machine stored the 20 slower than the retries and all of them
    // were delivered before the restart).
    p.b.fail_next((0..10_000).map(|_| AdapterError::Auth("bad token".into())));
    submit_numbered(&p.a, "a-room", 20).await;
    assert!(
        p.b.sent().is_empty(),
        "nothing is delivered before the restart"
    );
    p.core.shutdown().await;
    drop(p.a);
    drop(p.b);
    drop(store);
    let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path()).expect("reopen"));
    let p = pair_with(store, Capabilities::all(), fast(), None).await;
    let sent = p.b.wait_sent(20, WAIT).await;
    let order: Vec<String> = sent.iter().map(|e| body(&e.kind)).collect();
    assert_eq!(order, (0..20).map(|i| i.to_string()).collect::<Vec<_>>());
    // Redeliveries after the restart are still recognised.
    let again = inbound("a-room").id("5").from("alice").text("5");
    assert!(matches!(
        p.a.submit(again).await,
        Ok(Submitted::Duplicate(_))
    ));
    // And relations to events from before the restart still resolve.
    p.a.submit(inbound("a-room").id("r").from("bob").reply("5", "re"))
        .await
        .expect("reply");
    let sent = p.b.wait_sent(21, WAIT).await;
    let five = p.b.native_id_of(sent[5].id).expect("native");
    assert!(matches!(&sent[20].kind, EventKind::Message { reply_to: Some(t), .. } if *t == five));
    p.core.shutdown().await;
}

#[tokio::test]
async fn links_change_at_runtime_and_a_native_room_has_one_room() {
    let p = pair(Capabilities::all()).await;
    let err = p
        .core
        .add_link(&RoomId::new("other"), Link::new("b", "b-room"))
        .await
        .expect_err("b-room is taken");
    assert!(err.to_string().contains("already linked"));
    p.core
        .add_link(&RoomId::new("lobby"), Link::new("b", "b-room-2"))
        .await
        .expect("add");
    p.a.submit(inbound("a-room").id("1").from("alice").text("to both"))
        .await
        .expect("1");
    let sent = p.b.wait_sent(2, WAIT).await;
    let mut rooms: Vec<&str> = sent.iter().map(|e| e.room.as_str()).collect();
    rooms.sort();
    assert_eq!(rooms, vec!["b-room", "b-room-2"]);
    p.core
        .remove_link(&Link::new("b", "b-room"))
        .await
        .expect("remove");
    p.a.submit(inbound("a-room").id("2").from("alice").text("to one"))
        .await
        .expect("2");
    let sent = p.b.wait_sent(3, WAIT).await;
    assert_eq!(sent[2].room.as_str(), "b-room-2");
    let status = p.core.status();
    assert_eq!(status.len(), 1);
    assert_eq!(status[0].links.len(), 2);
    p.core.shutdown().await;
}

/// Three adapters over `store`, with the configured room `lobby` linking the given rooms
/// (`a-room`, `b-room`, `c-room` by adapter).
async fn trio(store: Arc<dyn Store>, links: &[&str]) -> (Core, [MemoryHandle; 3]) {
    let adapters = ["a", "b", "c"].map(|_| MemoryAdapter::new(Capabilities::all()));
    let handles = adapters.each_ref().map(MemoryAdapter::handle);
    let mut builder = Core::builder(store).settings(fast());
    for (id, adapter) in ["a", "b", "c"].into_iter().zip(adapters) {
        builder = builder.adapter(id, Arc::new(adapter));
    }
    let links = links
        .iter()
        .map(|l| Link::new(&l[..1], format!("{l}-room")))
        .collect();
    let core = builder
        .room("lobby", RoomSettings::default(), links)
        .start()
        .await
        .expect("core starts");
    for h in &handles {
        h.context().await;
    }
    (core, handles)
}

/// Waits until `handle` has done `n` unlink calls (or `WAIT` passes); returns them.
async fn wait_unlinks(handle: &MemoryHandle, n: usize) -> Vec<Unlinked> {
    let deadline = tokio::time::Instant::now() + WAIT;
    while handle.unlinks().len() < n && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    handle.unlinks()
}

#[tokio::test]
async fn a_link_left_out_of_the_configuration_is_left_with_its_puppets_after_the_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let open = || -> Arc<dyn Store> { Arc::new(SledStore::open(dir.path()).expect("open")) };
    let (core, _) = trio(open(), &["a", "b", "c"]).await;
    core.shutdown().await;

    // b's link is gone from the configuration: b leaves its room, and a and c make the
    // puppets of b's users leave theirs, once each adapter is connected.
    let (core, [a, b, c]) = trio(open(), &["a", "c"]).await;
    assert_eq!(
        wait_unlinks(&b, 1).await,
        vec![Unlinked::Left(RemoteRoomId::new("b-room"))]
    );
    for (h, room) in [(&a, "a-room"), (&c, "c-room")] {
        assert_eq!(
            wait_unlinks(h, 1).await,
            vec![Unlinked::SourceUnlinked(
                RemoteRoomId::new(room),
                AdapterId::new("b")
            )]
        );
    }
    core.shutdown().await;

    // Done once: the next start owes nothing.
    let (core, handles) = trio(open(), &["a", "c"]).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    for h in &handles {
        assert_eq!(h.unlinks(), Vec::new());
    }
    core.shutdown().await;
}

#[tokio::test]
async fn what_an_unlink_could_not_do_is_done_at_the_next_connection() {
    let (core, [a, b, c]) = trio(Arc::new(MemoryStore::new()), &["a", "b", "c"]).await;
    b.fail_next_unlinks([AdapterError::transient("the server is away")]);
    a.fail_next_unlinks([AdapterError::Permanent("no such room".into())]);
    core.remove_link(&Link::new("b", "b-room"))
        .await
        .expect("remove");
    assert_eq!(b.unlinks(), Vec::new(), "b's leave failed");
    assert_eq!(a.unlinks(), Vec::new(), "a's failed for good");
    assert_eq!(
        c.unlinks(),
        vec![Unlinked::SourceUnlinked(
            RemoteRoomId::new("c-room"),
            AdapterId::new("b")
        )]
    );
    for h in [&a, &b, &c] {
        h.reconnect().await;
    }
    assert_eq!(
        wait_unlinks(&b, 1).await,
        vec![Unlinked::Left(RemoteRoomId::new("b-room"))]
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(a.unlinks(), Vec::new(), "given up, not tried again");
    assert_eq!(c.unlinks().len(), 1, "done once");
    core.shutdown().await;
}

#[tokio::test]
async fn an_adapter_away_during_an_unlink_does_its_part_when_back() {
    let (core, [_a, b, _c]) = trio(Arc::new(MemoryStore::new()), &["a", "b", "c"]).await;
    b.set_connected(false).await;
    core.remove_link(&Link::new("b", "b-room"))
        .await
        .expect("remove");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(b.unlinks(), Vec::new(), "not asked while away");
    b.set_connected(true).await;
    assert_eq!(
        wait_unlinks(&b, 1).await,
        vec![Unlinked::Left(RemoteRoomId::new("b-room"))]
    );
    core.shutdown().await;
}

#[tokio::test]
async fn a_room_left_out_of_the_configuration_is_left_everywhere() {
    let dir = tempfile::tempdir().expect("tempdir");
    let open = || -> Arc<dyn Store> { Arc::new(SledStore::open(dir.path()).expect("open")) };
    let (core, _) = trio(open(), &["a", "b", "c"]).await;
    core.shutdown().await;
    let (core, handles) = trio(open(), &[]).await;
    for (h, room) in handles.iter().zip(["a-room", "b-room", "c-room"]) {
        assert_eq!(
            wait_unlinks(h, 1).await,
            vec![Unlinked::Left(RemoteRoomId::new(room))],
            "each adapter leaves its room, and there is nobody else's puppets to remove"
        );
    }
    core.shutdown().await;
}

#[tokio::test]
async fn a_room_linked_again_before_its_leave_is_not_left() {
    let (core, [a, b, _c]) = trio(Arc::new(MemoryStore::new()), &["a", "b", "c"]).await;
    b.fail_next_unlinks([AdapterError::transient("the server is away")]);
    core.remove_link(&Link::new("b", "b-room"))
        .await
        .expect("remove");
    core.add_link(&RoomId::new("lobby"), Link::new("b", "b-room"))
        .await
        .expect("linked again");
    b.reconnect().await;
    a.reconnect().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(b.unlinks(), Vec::new(), "b-room is linked: not left");
    core.shutdown().await;
}

/// How many entries the store holds in table `table`.
fn entries(store: &dyn Store, table: u8) -> usize {
    store
        .scan(&[1, table], None, usize::MAX)
        .expect("scan")
        .len()
}

#[tokio::test]
async fn old_events_are_forgotten_but_not_what_is_still_owed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let open = || -> Arc<dyn Store> { Arc::new(SledStore::open(dir.path()).expect("open")) };
    let p = pair_with(open(), Capabilities::all(), fast(), None).await;
    submit_numbered(&p.a, "a-room", 3).await;
    let sent = p.b.wait_sent(3, WAIT).await;
    let copy = p.b.native_id_of(sent[0].id).expect("delivered");
    p.b.submit(
        inbound("b-room")
            .id("r")
            .from("bob")
            .react(copy.as_str(), "👍"),
    )
    .await
    .expect("reaction");
    p.a.wait_sent(1, WAIT).await;
    // "3" is said before the retention of the first pass begins, and given up after: the
    // dead letter keeps it.
    p.b.set_delay(Some(Duration::from_millis(100)));
    p.b.fail_next([AdapterError::Permanent("refused".into())]);
    p.a.submit(inbound("a-room").id("3").from("alice").text("3"))
        .await
        .expect("3");
    tokio::time::sleep(Duration::from_millis(20)).await;
    let retention = std::time::SystemTime::now();
    let deadline = tokio::time::Instant::now() + WAIT;
    while p.core.dead_letters().expect("dead letters").is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "3 is dead-lettered");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    p.b.set_delay(None);
    // The cursors are stored at shutdown (and every 64 deliveries).
    p.core.shutdown().await;
    drop((p.a, p.b));
    let p = pair_with(open(), Capabilities::all(), fast(), None).await;
    let report = p.core.prune(retention).await.expect("pass");
    assert_eq!(
        report.events, 4,
        "three messages and a reaction: {report:?}"
    );
    assert_eq!(report.dead_letters, 0, "{report:?}");
    assert_eq!(p.core.dead_letters().expect("dead letters").len(), 1);
    p.core.shutdown().await;
    drop((p.a, p.b));
    // What is left is the dead letter's event, and the way back to it from its native ID.
    let store = open();
    assert_eq!(entries(&*store, b'E'), 1);
    assert_eq!(entries(&*store, b'G'), 1);
    assert_eq!(entries(&*store, b'n'), 0);
    assert_eq!(entries(&*store, b'X'), 0);
    assert_eq!(entries(&*store, b'r'), 1);
    drop(store);

    let p = pair_with(open(), Capabilities::all(), fast(), None).await;
    // A reply to a forgotten message still crosses (without its relation).
    p.b.submit(
        inbound("b-room")
            .id("re")
            .from("bob")
            .reply(copy.as_str(), "late answer"),
    )
    .await
    .expect("reply");
    let back = p.a.wait_sent(1, WAIT).await;
    assert_eq!(body(&back[0].kind), "late answer");

    // Once the retention has passed the dead letter too, it goes with its event.
    let later = std::time::SystemTime::now() + Duration::from_secs(86_400);
    let report = p.core.prune(later).await.expect("pass");
    assert_eq!(report.dead_letters, 1, "{report:?}");
    assert!(p.core.dead_letters().expect("dead letters").is_empty());
    p.core.shutdown().await;
}

#[tokio::test]
async fn a_pass_goes_on_past_a_page_and_stops_at_what_a_link_has_not_stored_as_handled() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let p = pair_with(store, Capabilities::all(), fast(), None).await;
    submit_numbered(&p.a, "a-room", 1_100).await;
    p.b.wait_sent(1_100, WAIT).await;
    // b's cursor is stored every 64 deliveries: at the 1,088th while running. What comes
    // after it stays; everything before goes, over more than one page of 1,024.
    let report = p
        .core
        .prune(std::time::SystemTime::now())
        .await
        .expect("pass");
    assert_eq!(report.events, 1_088, "{report:?}");
    assert_eq!(
        report.native_ids,
        2 * 1_088,
        "the origin's and the copy's: {report:?}"
    );
    // The copies of the events kept still resolve: an edit of the last one crosses as one.
    p.a.submit(
        inbound("a-room")
            .id("e")
            .from("alice")
            .edit("1099", "1099!"),
    )
    .await
    .expect("edit");
    let sent = p.b.wait_sent(1_101, WAIT).await;
    assert!(
        matches!(&sent[1_100].kind, EventKind::Edit { .. }),
        "{:?}",
        sent[1_100].kind
    );
    p.core.shutdown().await;
}

#[tokio::test]
async fn a_link_behind_keeps_its_rooms_events() {
    let p = pair(Capabilities::all()).await;
    p.b.fail_next((0..10_000).map(|_| AdapterError::transient("away")));
    submit_numbered(&p.a, "a-room", 3).await;
    let report = p
        .core
        .prune(std::time::SystemTime::now())
        .await
        .expect("pass");
    assert_eq!(report.events, 0, "b has not handled them: {report:?}");
    assert_eq!(report.native_ids, 0, "{report:?}");
    p.b.fail_next(std::iter::empty());
    p.core.shutdown().await;
}

#[tokio::test]
async fn a_reply_back_to_the_origin_room_names_the_original_native_id() {
    // The origin's own native ID comes from the stored event (no `n` entry is written for it).
    let dir = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path()).expect("open"));
    let p = pair_with(store, Capabilities::all(), fast(), None).await;
    p.a.submit(inbound("a-room").id("orig").from("alice").text("question"))
        .await
        .expect("orig");
    let sent = p.b.wait_sent(1, WAIT).await;
    let copy = p.b.native_id_of(sent[0].id).expect("delivered to b");
    p.b.submit(
        inbound("b-room")
            .id("re")
            .from("bob")
            .reply(copy.as_str(), "answer"),
    )
    .await
    .expect("reply");
    let back = p.a.wait_sent(1, WAIT).await;
    assert!(
        matches!(&back[0].kind, EventKind::Message { reply_to: Some(t), .. } if t.as_str() == "orig")
    );
    p.core.shutdown().await;
}

#[tokio::test]
async fn a_link_removed_from_the_config_is_unlinked_at_the_next_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let open = || Arc::new(SledStore::open(dir.path()).expect("open")) as Arc<dyn Store>;
    let start = |store: Arc<dyn Store>, links: Vec<Link>| async move {
        let a = MemoryAdapter::new(Capabilities::all());
        let b = MemoryAdapter::new(Capabilities::all());
        Core::builder(store)
            .adapter("a", Arc::new(a))
            .adapter("b", Arc::new(b))
            .room("lobby", RoomSettings::default(), links)
            .start()
            .await
            .expect("start")
    };
    let store = open();
    let core = start(
        store.clone(),
        vec![Link::new("a", "a-room"), Link::new("b", "b-room")],
    )
    .await;
    core.add_link(&RoomId::new("lobby"), Link::new("b", "runtime-room"))
        .await
        .expect("runtime link");
    core.shutdown().await;
    // The next start's config no longer declares b-room: it is unlinked; the runtime link stays.
    let core = start(store, vec![Link::new("a", "a-room")]).await;
    let status = core.status();
    let links: Vec<String> = status[0].links.iter().map(|(l, _)| l.to_string()).collect();
    assert_eq!(links, vec!["a:a-room", "b:runtime-room"]);
    core.shutdown().await;
}

#[tokio::test]
async fn what_a_room_missed_is_backfilled_on_every_connect_once() {
    let p = pair(Capabilities::all()).await;
    // At start the core asked for each linked room's history, with no position yet.
    let deadline = tokio::time::Instant::now() + WAIT;
    while !p.a.backfill_calls().contains(&("a-room".into(), None)) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no backfill at start"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    p.a.submit(inbound("a-room").id("m1").from("alice").text("live 1"))
        .await
        .expect("m1");
    // While "disconnected", two more messages were posted; the far side keeps them all.
    p.a.set_history(
        "a-room",
        vec![
            inbound("a-room").id("m1").from("alice").text("live 1"),
            inbound("a-room").id("m2").from("bob").text("missed 2"),
            inbound("a-room").id("m3").from("alice").text("missed 3"),
        ],
    );
    p.a.reconnect().await;
    let sent = p.b.wait_sent(3, WAIT).await;
    let bodies: Vec<String> = sent.iter().map(|e| body(&e.kind)).collect();
    assert_eq!(bodies, vec!["live 1", "missed 2", "missed 3"]);
    assert!(
        p.a.backfill_calls()
            .contains(&("a-room".into(), Some("m1".into())))
    );
    // Another reconnect resumes after m3: nothing is bridged twice.
    p.a.reconnect().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        p.a.backfill_calls()
            .contains(&("a-room".into(), Some("m3".into())))
    );
    assert_eq!(p.b.sent().len(), 3);
    p.core.shutdown().await;
}

#[tokio::test]
async fn readiness_names_each_adapter_and_whether_it_is_connected() {
    let p = pair(Capabilities::all()).await;
    assert_eq!(
        p.core.adapter_connections(),
        vec![("a".into(), true), ("b".into(), true)]
    );
    assert!(p.core.is_ready());
    // A disconnected adapter makes the core not ready, and is named.
    let ctx = p.b.context().await.expect("b runs");
    ctx.set_connected(false);
    assert_eq!(
        p.core.adapter_connections(),
        vec![("a".into(), true), ("b".into(), false)]
    );
    assert!(!p.core.is_ready());
    ctx.set_connected(true);
    assert!(p.core.is_ready());
    p.core.shutdown().await;
}

/// The keys a store of format 2 or older kept for an event from `a-room` not yet delivered to
/// `b-room`: the event, its ID-map entry and an outbox entry (no room log, no cursor).
fn format_2_pending(batch: &mut bridge_core::store::Batch, id: EventId, native: &str, text: &str) {
    use bridge_core::store::keys::{Key, tag};
    let inbound = inbound("a-room").id(native).from("alice").text(text);
    let event = Event {
        id,
        room: RoomId::new("lobby"),
        sender: Sender {
            adapter: AdapterId::new("a"),
            user: inbound.sender.id.clone(),
            display_name: None,
            avatar: None,
        },
        origin: Origin {
            adapter: AdapterId::new("a"),
            room: RemoteRoomId::new("a-room"),
            event: inbound.native_id.clone(),
        },
        ts: 1,
        kind: inbound.kind.map_refs(|_| None).expect("no references"),
    };
    batch.put(
        Key::new(tag::EVENT).id(id).build(),
        serde_json::to_vec(&event).expect("json"),
    );
    let mut value = id.to_bytes().to_vec();
    value.push(0);
    batch.put(
        Key::new(tag::REMOTE_TO_NEUTRAL)
            .str("a")
            .str("a-room")
            .str(native)
            .build(),
        value,
    );
    batch.put(
        Key::new(tag::OUTBOX).str("b").str("b-room").id(id).build(),
        Vec::new(),
    );
}

#[tokio::test]
async fn a_format_2_outbox_is_delivered_then_the_room_log_after_the_upgrade() {
    use bridge_core::store::keys::{FORMAT_KEY, FORMAT_VERSION, Key, tag};
    let store = Arc::new(MemoryStore::new());
    // The routing of a store written before; then its format-2 state: two events waiting for
    // b-room as outbox entries, no cursors.
    let p = pair_with(store.clone(), Capabilities::all(), fast(), None).await;
    p.core.shutdown().await;
    let mut batch = bridge_core::store::Batch::new();
    batch.put(FORMAT_KEY.to_vec(), vec![2]);
    for (key, _) in store
        .scan(&Key::new(tag::CURSOR).build(), None, 100)
        .expect("scan")
    {
        batch.delete(key);
    }
    let ids = EventIdGenerator::after(None);
    format_2_pending(&mut batch, ids.next_id(), "old-1", "old 1");
    format_2_pending(&mut batch, ids.next_id(), "old-2", "old 2");
    store.apply(batch).expect("apply");

    let p = pair_with(store.clone(), Capabilities::all(), fast(), None).await;
    assert_eq!(
        store.get(FORMAT_KEY).expect("get"),
        Some(vec![FORMAT_VERSION])
    );
    p.a.submit(inbound("a-room").id("new").from("alice").text("new"))
        .await
        .expect("submit");
    let sent = p.b.wait_sent(3, WAIT).await;
    let order: Vec<String> = sent.iter().map(|e| body(&e.kind)).collect();
    assert_eq!(order, vec!["old 1", "old 2", "new"]);
    assert!(matches!(
        p.a.submit(inbound("a-room").id("old-2").from("alice").text("old 2"))
            .await,
        Ok(Submitted::Duplicate(_))
    ));
    p.core.shutdown().await;
    let outbox = store
        .scan(&Key::new(tag::OUTBOX).build(), None, 10)
        .expect("scan");
    assert!(outbox.is_empty(), "the explicit entries are gone");
    let cursors = store
        .scan(&Key::new(tag::CURSOR).build(), None, 10)
        .expect("scan");
    assert_eq!(cursors.len(), 2, "both links have a cursor");
}

#[tokio::test]
async fn deliveries_after_the_stored_cursor_are_not_repeated_after_a_crash() {
    use bridge_core::store::keys::{Key, tag};
    let store = Arc::new(MemoryStore::new());
    let p = pair_with(store.clone(), Capabilities::all(), fast(), None).await;
    let b_cursor = Key::new(tag::CURSOR).str("b").str("b-room").build();
    let before = store
        .get(&b_cursor)
        .expect("get")
        .expect("a cursor from the start");
    submit_numbered(&p.a, "a-room", 10).await;
    assert_eq!(p.b.wait_sent(10, WAIT).await.len(), 10);
    p.core.shutdown().await;
    // A crash before the cursor was stored again: it is where it was before the 10 events.
    let mut batch = bridge_core::store::Batch::new();
    batch.put(b_cursor.clone(), before);
    store.apply(batch).expect("apply");

    let p = pair_with(store.clone(), Capabilities::all(), fast(), None).await;
    p.a.submit(inbound("a-room").id("after").from("alice").text("after"))
        .await
        .expect("submit");
    let sent = p.b.wait_sent(1, WAIT).await;
    assert_eq!(
        body(&sent[0].kind),
        "after",
        "nothing delivered before is sent again"
    );
    p.core.shutdown().await;
    assert_eq!(p.b.send_calls(), 1);
}
