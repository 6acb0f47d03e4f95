//! The MLS layer end to end: a hub host and a follower host, each over its own store, exchange
//! commits, Welcomes and messages as `/update` and `/notify` would carry them.

use std::sync::Arc;
use std::time::Instant;

use bridge_core::{MemoryStore, SledStore, Store};
use bridge_mimi::codepoints::{
    CAPABILITY_CAN_SEND_MESSAGE, ROLE_BANNED, ROLE_GROUP_ADMIN, ROLE_NONE, ROLE_ORDINARY_USER,
    ROLE_VISITOR,
};
use bridge_mimi::mls::kv::StoreKv;
use bridge_mimi::mls::metadata::RoomMetadata;
use bridge_mimi::mls::policy::{BRIDGE_STATEMENT, LoggingPolicy, RoleData};
use bridge_mimi::mls::uri::{RoomUri, UserUri};
use bridge_mimi::mls::{
    KeyPackageSettings, MlsError, MlsHost, Participant, Processed, RoomProfile,
};

const HUB: &str = "hub.example";
const FOLLOWER: &str = "follower.example";

fn host(domain: &str, store: Arc<dyn Store>) -> MlsHost {
    MlsHost::open(domain, Arc::new(StoreKv::new(store, b"mimi/")))
}

fn memory_host(domain: &str) -> MlsHost {
    host(domain, Arc::new(MemoryStore::new()))
}

fn participant(user: &str, role_index: u32) -> Participant {
    Participant {
        user: user.to_owned(),
        role_index,
    }
}

fn application(processed: Processed) -> (String, Vec<u8>) {
    match processed {
        Processed::Application(d) => (d.sender, d.plaintext),
        other => panic!("expected an application message, got {other:?}"),
    }
}

/// alice@hub creates a MIMI room and adds bob@follower; bob's host joins from the Welcome.
fn room_with_two(hub: &MlsHost, follower: &MlsHost) -> RoomUri {
    let room = RoomUri::new(HUB, "lobby");
    let alice = hub.puppet("alice@xmpp.example");
    let bob = follower.puppet("@bob:matrix.example");
    let created = hub
        .create_room(&room, &alice, RoomProfile::Mimi)
        .expect("create");
    assert_eq!(
        created,
        vec![participant(&alice.to_string(), ROLE_GROUP_ADMIN)]
    );
    let key_package = follower
        .take_key_package(&bob)
        .expect("take")
        .expect("a KeyPackage");
    // What a hub relaying this KeyPackage records is what the Welcome names.
    let key_package_bytes =
        tls_codec::Serialize::tls_serialize_detached(&key_package).expect("serialize");
    let reference = hub
        .key_package_ref(&key_package_bytes)
        .expect("a valid KeyPackage");
    let output = hub
        .add_client(&room, &alice, key_package, ROLE_ORDINARY_USER)
        .expect("add");
    assert_eq!(
        MlsHost::welcome_recipients(output.welcome.as_deref().expect("a Welcome"))
            .expect("a Welcome"),
        vec![reference]
    );
    assert!(hub.key_package_ref(b"not a KeyPackage").is_err());
    assert_eq!(output.epoch, 1);
    assert!(output.group_info.is_some());
    assert_eq!(
        output.participants,
        vec![
            participant(&alice.to_string(), ROLE_GROUP_ADMIN),
            participant(&bob.to_string(), ROLE_ORDINARY_USER),
        ]
    );
    let welcome = output.welcome.expect("a Welcome");
    let joined = follower
        .join(&welcome, Some(&output.ratchet_tree))
        .expect("join");
    assert_eq!(
        joined,
        Processed::Joined {
            room: room.clone(),
            users: vec![bob.clone()],
        }
    );
    assert_eq!(
        follower.participants(&room).expect("list"),
        output.participants
    );
    room
}

/// alice (the room's admin) adds `name`'s puppet on the hub as an ordinary participant; the
/// follower processes the commit. The puppet, and what the follower made of the commit.
fn add_local_puppet(
    hub: &MlsHost,
    follower: &MlsHost,
    room: &RoomUri,
    name: &str,
) -> (UserUri, Processed) {
    let alice = hub.puppet("alice@xmpp.example");
    let user = hub.puppet(name);
    let key_package = hub.take_key_package(&user).expect("take").expect("kp");
    let output = hub
        .add_client(room, &alice, key_package, ROLE_ORDINARY_USER)
        .expect("add a local puppet");
    let seen = follower
        .process(room, &output.commit)
        .expect("the follower processes it");
    (user, seen)
}

#[test]
fn a_restart_loses_nothing() {
    let hub_dir = tempfile::tempdir().expect("tempdir");
    let follower_dir = tempfile::tempdir().expect("tempdir");
    let room = {
        let hub = host(
            HUB,
            Arc::new(SledStore::open(hub_dir.path()).expect("open")),
        );
        let follower = host(
            FOLLOWER,
            Arc::new(SledStore::open(follower_dir.path()).expect("open")),
        );
        room_with_two(&hub, &follower)
        // Every host, store and group in memory is dropped here.
    };
    let hub = host(
        HUB,
        Arc::new(SledStore::open(hub_dir.path()).expect("reopen")),
    );
    let follower = host(
        FOLLOWER,
        Arc::new(SledStore::open(follower_dir.path()).expect("reopen")),
    );
    let alice = hub.puppet("alice@xmpp.example");
    let bob = follower.puppet("@bob:matrix.example");
    assert_eq!(hub.epoch(&room).expect("epoch"), 1);
    assert_eq!(hub.participants(&room).expect("list").len(), 2);

    let to_bob = hub.encrypt(&room, &alice, b"hello bob").expect("encrypt");
    let (sender, text) = application(follower.process(&room, &to_bob).expect("decrypt"));
    assert_eq!(sender, alice.puppet_client().to_string());
    assert_eq!(text, b"hello bob");

    let to_alice = follower.encrypt(&room, &bob, b"hi alice").expect("encrypt");
    let (sender, text) = application(hub.decrypt(&room, &to_alice).expect("decrypt"));
    assert_eq!(sender, bob.puppet_client().to_string());
    assert_eq!(text, b"hi alice");

    // A KeyPackage handed out before the restart is never handed out again.
    let remaining = follower.unused_key_packages(&bob).expect("count");
    assert!(remaining > 0);
}

/// A user of the hub's own side leaves by their own proposal, which the hub's admin commits
/// at once: other providers see a leave, not a removal. Removed by the admin, the same user
/// is named as taken out, by the admin, though none of the follower's puppets was.
#[test]
fn the_hubs_own_user_leaves_by_their_proposal_and_a_removal_names_who_removed_them() {
    let hub = memory_host(HUB);
    let follower = memory_host(FOLLOWER);
    let room = room_with_two(&hub, &follower);
    let alice = hub.puppet("alice@xmpp.example");
    let carol = hub.puppet("carol@xmpp.example");
    let add_carol = || {
        hub.ensure_client(&carol).expect("client");
        let key_package = hub.single_use_key_package(&carol).expect("kp");
        let output = hub
            .add_client(&room, &alice, key_package, ROLE_ORDINARY_USER)
            .expect("add carol");
        assert!(matches!(
            follower.process(&room, &output.commit).expect("process"),
            Processed::Commit { .. }
        ));
    };
    add_carol();
    assert_eq!(hub.participants(&room).expect("list").len(), 3);

    let (proposals, commit) = hub
        .leave_and_commit(&room, &carol, &alice)
        .expect("carol leaves");
    assert_eq!(proposals.len(), 2, "AppDataUpdate and Remove");
    assert_eq!(hub.participants(&room).expect("list").len(), 2);
    for proposal in &proposals {
        assert_eq!(
            follower.process(&room, proposal).expect("proposal"),
            Processed::Proposal
        );
    }
    match follower.process(&room, &commit.commit).expect("commit") {
        Processed::Commit {
            removed,
            removed_by,
            participants,
            ..
        } => {
            assert_eq!(removed, Vec::new(), "none of the follower's");
            assert_eq!(removed_by, Vec::new(), "her own leave");
            assert!(!participants.iter().any(|p| p.user == carol.to_string()));
        }
        other => panic!("expected a commit, got {other:?}"),
    }

    // Back, then removed by alice: the follower learns who took her out.
    add_carol();
    let removal = hub.remove_user(&room, &alice, &carol).expect("remove");
    match follower.process(&room, &removal.commit).expect("commit") {
        Processed::Commit {
            removed,
            removed_by,
            ..
        } => {
            assert_eq!(removed, Vec::new());
            assert_eq!(removed_by, vec![(carol.clone(), alice.clone())]);
        }
        other => panic!("expected a commit, got {other:?}"),
    }
}

#[test]
fn remove_and_leave_update_the_participant_list() {
    let hub = memory_host(HUB);
    let follower = memory_host(FOLLOWER);
    let room = room_with_two(&hub, &follower);
    let alice = hub.puppet("alice@xmpp.example");
    let bob = follower.puppet("@bob:matrix.example");

    // alice removes bob: one commit with Remove and AppDataUpdate.
    let removal = hub.remove_user(&room, &alice, &bob).expect("remove");
    assert_eq!(
        removal.participants,
        vec![participant(&alice.to_string(), ROLE_GROUP_ADMIN)]
    );
    match follower.process(&room, &removal.commit).expect("process") {
        Processed::Commit {
            removed,
            removed_by,
            participants,
            epoch,
        } => {
            assert_eq!(removed, vec![bob.clone()]);
            // Taken out by alice: a removal, not his leave.
            assert_eq!(removed_by, vec![(bob.clone(), alice.clone())]);
            assert_eq!((epoch, participants), (removal.epoch, removal.participants));
        }
        other => panic!("expected a commit, got {other:?}"),
    }
    assert!(matches!(
        follower.participants(&room),
        Err(MlsError::UnknownRoom(_))
    ));

    // bob is added again and leaves by himself: proposals to the hub, which commits them.
    let key_package = follower.take_key_package(&bob).expect("take").expect("kp");
    let output = hub
        .add_client(&room, &alice, key_package, ROLE_ORDINARY_USER)
        .expect("re-add");
    follower
        .join(output.welcome.as_deref().expect("welcome"), None)
        .expect("rejoin");
    let proposals = follower.leave(&room, &bob).expect("leave");
    assert_eq!(proposals.len(), 2, "AppDataUpdate and Remove");
    let bytes: Vec<&[u8]> = proposals.iter().map(Vec::as_slice).collect();
    // Relayed by a provider bob does not belong to: refused, and nothing is queued.
    assert!(matches!(
        hub.commit_proposals_from(&room, &alice, &bytes, "elsewhere.example"),
        Err(MlsError::InvalidStateChange(_) | MlsError::NotAllowed(_))
    ));
    assert_eq!(hub.members(&room).expect("members").len(), 2);
    // From bob's provider: his own removal is allowed and committed.
    let commit = hub
        .commit_proposals_from(&room, &alice, &bytes, FOLLOWER)
        .expect("commit");
    assert_eq!(
        commit.participants,
        vec![participant(&alice.to_string(), ROLE_GROUP_ADMIN)]
    );
    assert_eq!(hub.members(&room).expect("members").len(), 1);
    match follower.process(&room, &commit.commit).expect("process") {
        Processed::Commit {
            removed,
            removed_by,
            ..
        } => {
            assert_eq!(removed, vec![bob]);
            // He proposed his own removal, although alice committed it: nobody removed him.
            assert_eq!(removed_by, Vec::new());
        }
        other => panic!("expected a commit, got {other:?}"),
    }
}

#[test]
fn two_puppets_of_one_host_share_a_room() {
    let hub = memory_host(HUB);
    let follower = memory_host(FOLLOWER);
    let room = room_with_two(&hub, &follower);
    let alice = hub.puppet("alice@xmpp.example");
    let bob = follower.puppet("@bob:matrix.example");

    // carol is local: her puppet joins as soon as the commit is made.
    let (carol, seen) = add_local_puppet(&hub, &follower, &room, "@carol:matrix.example");
    assert_eq!(
        hub.local_members_of(&room).expect("locals"),
        vec![alice.clone(), carol.clone()]
    );
    assert!(matches!(seen, Processed::Commit { epoch: 2, .. }));

    // carol speaks; bob reads it, and alice's view (the hub's reader) does too.
    let from_carol = hub.encrypt(&room, &carol, b"from carol").expect("encrypt");
    let (sender, _) = application(follower.decrypt(&room, &from_carol).expect("bob reads"));
    assert_eq!(sender, carol.puppet_client().to_string());
    let (sender, text) = application(hub.decrypt(&room, &from_carol).expect("alice reads"));
    assert_eq!(
        (sender.as_str(), text.as_slice()),
        (
            carol.puppet_client().to_string().as_str(),
            &b"from carol"[..]
        )
    );

    // alice removes carol: carol's puppet drops the group.
    hub.remove_user(&room, &alice, &carol)
        .expect("remove carol");
    assert_eq!(
        hub.local_members_of(&room).expect("locals"),
        vec![alice.clone()]
    );
    let from_bob = follower
        .encrypt(&room, &bob, b"still here")
        .expect("encrypt");
    // bob has not seen that commit yet: his message is for the previous epoch, which the
    // hub still decrypts (past-epoch window).
    let (sender, text) = application(hub.decrypt(&room, &from_bob).expect("past epoch"));
    assert_eq!(sender, bob.puppet_client().to_string());
    assert_eq!(text, b"still here");
}

#[test]
fn stale_and_garbage_messages_are_refused_and_change_nothing() {
    let hub = memory_host(HUB);
    let follower = memory_host(FOLLOWER);
    let room = room_with_two(&hub, &follower);
    let alice = hub.puppet("alice@xmpp.example");
    let bob = follower.puppet("@bob:matrix.example");
    let carol = hub.puppet("carol@xmpp.example");

    let key_package = hub.take_key_package(&carol).expect("take").expect("kp");
    let first = hub
        .add_client(&room, &alice, key_package, ROLE_ORDINARY_USER)
        .expect("add carol");
    follower.process(&room, &first.commit).expect("epoch 2");
    // The same commit again (a redelivery, or a peer behind): epoch 1 ≠ 2.
    match follower.process(&room, &first.commit) {
        Err(MlsError::WrongEpoch {
            current: 2,
            message: 1,
        }) => {}
        other => panic!("expected WrongEpoch, got {other:?}"),
    }
    for garbage in [
        &b""[..],
        b"\x00\x01\x00\x01garbage",
        b"not an MLS message at all",
        &[0u8; 300],
    ] {
        assert!(
            matches!(
                follower.process(&room, garbage),
                Err(MlsError::Malformed(_))
            ),
            "{garbage:?}"
        );
    }
    // A commit cut short.
    let truncated = &first.commit[..first.commit.len() / 2];
    assert!(follower.process(&room, truncated).is_err());
    // A Welcome for nobody here.
    assert!(matches!(
        hub.join(first.welcome.as_deref().expect("welcome"), None),
        Err(MlsError::NotForUs)
    ));
    // A message from another room.
    let other = RoomUri::new(HUB, "other");
    hub.create_room(&other, &alice, RoomProfile::Mimi)
        .expect("create");
    let elsewhere = hub.encrypt(&other, &alice, b"x").expect("encrypt");
    assert!(follower.process(&room, &elsewhere).is_err());

    // Nothing changed: both sides still talk at epoch 2.
    assert_eq!(follower.epoch(&room).expect("epoch"), 2);
    let ciphertext = hub
        .encrypt(&room, &alice, b"after the noise")
        .expect("encrypt");
    let (_, text) = application(follower.process(&room, &ciphertext).expect("decrypt"));
    assert_eq!(text, b"after the noise");
    let reply = follower.encrypt(&room, &bob, b"ok").expect("encrypt");
    assert_eq!(
        application(hub.decrypt(&room, &reply).expect("decrypt")).1,
        b"ok"
    );
}

#[test]
fn key_packages_are_handed_out_once_fresh_and_replenished() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let short = KeyPackageSettings {
        batch: 4,
        low_water: 1,
        lifetime_secs: 3600,
        min_remaining_secs: 0,
    };
    let follower = host(FOLLOWER, store.clone()).with_key_package_settings(short);
    let bob = follower.puppet("bob");
    follower.generate_key_packages(&bob, 4).expect("generate");
    let mut seen = std::collections::HashSet::new();
    for _ in 0..10 {
        let kp = follower.take_key_package(&bob).expect("take").expect("kp");
        let crypto = openmls_rust_crypto::RustCrypto::default();
        let hash_ref = kp.hash_ref(&crypto).expect("ref");
        assert!(
            seen.insert(hash_ref.as_slice().to_vec()),
            "handed out twice"
        );
        assert_eq!(
            follower.key_package_owner(&hash_ref).expect("owner"),
            Some(bob.clone())
        );
    }
    assert!(follower.unused_key_packages(&bob).expect("count") >= 1);

    // Reopened with a rule that one-hour KeyPackages are too close to expiry: they are dropped
    // and a long-lived one is handed out.
    let strict = KeyPackageSettings {
        batch: 3,
        low_water: 1,
        lifetime_secs: 28 * 24 * 3600,
        min_remaining_secs: 2 * 3600,
    };
    let follower = host(FOLLOWER, store).with_key_package_settings(strict);
    let kp = follower.take_key_package(&bob).expect("take").expect("kp");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    assert!(kp.life_time().not_after() > now + 2 * 3600);
    assert_eq!(follower.unused_key_packages(&bob).expect("count"), 2);
}

#[test]
fn a_single_use_key_package_is_never_handed_out_and_is_dropped_once_expired() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let short = KeyPackageSettings {
        batch: 2,
        low_water: 0,
        lifetime_secs: 1,
        min_remaining_secs: 0,
    };
    let follower = host(FOLLOWER, store).with_key_package_settings(short);
    let bob = follower.puppet("bob");
    let crypto = openmls_rust_crypto::RustCrypto::default();
    let single = follower.single_use_key_package(&bob).expect("single use");
    let single_ref = single.hash_ref(&crypto).expect("ref");
    // Routable (a Welcome for it finds bob), but not in the pool: no batch was made for it.
    assert_eq!(
        follower.key_package_owner(&single_ref).expect("owner"),
        Some(bob.clone())
    );
    assert_eq!(follower.unused_key_packages(&bob).expect("count"), 0);
    let handed = follower.take_key_package(&bob).expect("take").expect("kp");
    assert_ne!(handed.hash_ref(&crypto).expect("ref"), single_ref);
    // Expired without a Welcome: the next hand-out deletes it with its private keys.
    std::thread::sleep(std::time::Duration::from_millis(2_100));
    follower.take_key_package(&bob).expect("take").expect("kp");
    assert_eq!(
        follower.key_package_owner(&single_ref).expect("owner"),
        None
    );
}

#[test]
fn foreign_key_packages_are_validated() {
    let hub = memory_host(HUB);
    let follower = memory_host(FOLLOWER);
    let bob = follower.puppet("bob");
    let kp = follower.take_key_package(&bob).expect("take").expect("kp");
    let bytes = tls_codec::Serialize::tls_serialize_detached(&kp).expect("encode");
    let parsed = hub.validate_key_package(&bytes).expect("valid");
    assert_eq!(parsed, kp);
    let mut tampered = bytes.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    assert!(matches!(
        hub.validate_key_package(&tampered),
        Err(MlsError::Malformed(_))
    ));
    assert!(hub.validate_key_package(b"junk").is_err());
}

/// Bench hook: encrypt + decrypt per message between two hosts (debug build numbers are only
/// indicative; `--release` for real figures).
#[test]
fn encrypt_and_decrypt_cost() {
    let hub_store = Arc::new(MemoryStore::new());
    let hub = host(HUB, hub_store.clone());
    let follower = memory_host(FOLLOWER);
    let room = room_with_two(&hub, &follower);
    let alice = hub.puppet("alice@xmpp.example");
    let n = 50;
    let payload = vec![0x42u8; 200];
    let start = Instant::now();
    for _ in 0..n {
        let ciphertext = hub.encrypt(&room, &alice, &payload).expect("encrypt");
        let (_, text) = application(follower.decrypt(&room, &ciphertext).expect("decrypt"));
        assert_eq!(text.len(), payload.len());
    }
    let per_message = start.elapsed() / n;
    eprintln!("encrypt+decrypt, 200-byte message, store round trips included: {per_message:?}");
    let start = Instant::now();
    for _ in 0..n {
        hub.epoch(&room).expect("epoch");
    }
    eprintln!("loading a group from the store: {:?}", start.elapsed() / n);
    let entries = hub_store.scan(b"mimi/", None, usize::MAX).expect("scan");
    let bytes: usize = entries.iter().map(|(k, v)| k.len() + v.len()).sum();
    eprintln!(
        "hub store: {} entries, {bytes} bytes (hub key, alice's puppet, one 2-member group)",
        entries.len()
    );
}

#[test]
fn the_hub_follows_a_group_it_is_not_a_member_of() {
    let hub = memory_host(HUB);
    let follower = memory_host(FOLLOWER);
    // The group's only members are the follower's puppets; the hub follows it from outside.
    let room = RoomUri::new(HUB, "followed");
    let dave = follower.puppet("dave");
    let erin = follower.puppet("erin");
    follower
        .create_room(&room, &dave, RoomProfile::Mimi)
        .expect("create");
    let (group_info, tree) = follower.group_info(&room).expect("GroupInfo");
    assert_eq!(
        hub.hub_track(&room, &group_info, &tree).expect("track"),
        vec![participant(&dave.to_string(), ROLE_GROUP_ADMIN)]
    );
    assert!(
        hub.hub_track(&RoomUri::new(HUB, "other"), &group_info, &tree)
            .is_err()
    );

    let key_package = follower.take_key_package(&erin).expect("take").expect("kp");
    let add = follower
        .add_client(&room, &dave, key_package, ROLE_ORDINARY_USER)
        .expect("add erin");
    assert!(add.group_info.is_some());
    // A forged commit is refused and changes nothing: one byte of the Ed25519 signature flipped
    // (it ends 66 bytes before the end, before the confirmation and membership tags, 33 bytes
    // each; an outsider cannot check the membership tag, but it checks the signature).
    let mut forged = add.commit.clone();
    let at = forged.len() - 70;
    forged[at] ^= 1;
    match hub.hub_process(&room, &forged) {
        Err(MlsError::Mls { message, .. }) if message.contains("signature") => {}
        other => panic!("expected a signature failure, got {other:?}"),
    }
    match hub.hub_process(&room, &add.commit).expect("verify") {
        Processed::Commit {
            epoch,
            participants,
            ..
        } => {
            assert_eq!(epoch, 1);
            assert_eq!(participants, add.participants);
        }
        other => panic!("expected a commit, got {other:?}"),
    }
    assert_eq!(hub.hub_members(&room).expect("members").len(), 2);
    assert!(matches!(
        hub.hub_process(&room, &add.commit),
        Err(MlsError::WrongEpoch {
            current: 1,
            message: 0
        })
    ));
    // Application messages are opaque to the hub.
    let secret = follower
        .encrypt(&room, &dave, b"not for the hub")
        .expect("encrypt");
    assert!(matches!(
        hub.hub_process(&room, &secret),
        Err(MlsError::Malformed(_))
    ));

    // erin leaves: the hub queues her proposals, then verifies dave's commit of them.
    for proposal in follower.leave(&room, &erin).expect("leave") {
        assert_eq!(
            hub.hub_process(&room, &proposal).expect("queue"),
            Processed::Proposal
        );
    }
    // Until the commit, dave's group holds the proposals and openmls makes no message: a
    // passing refusal (the adapter's outbox retries it), not a failure.
    assert!(matches!(
        follower.encrypt(&room, &dave, b"wait"),
        Err(MlsError::ProposalPending(_))
    ));
    let commit = follower.commit_pending(&room, &dave).expect("commit");
    match hub.hub_process(&room, &commit.commit).expect("verify") {
        Processed::Commit { participants, .. } => {
            assert_eq!(
                participants,
                vec![participant(&dave.to_string(), ROLE_GROUP_ADMIN)]
            );
        }
        other => panic!("expected a commit, got {other:?}"),
    }
    assert_eq!(
        hub.hub_participants(&room).expect("list"),
        follower.participants(&room).expect("list")
    );
}

#[test]
fn room_metadata_travels_in_the_group_context() {
    let hub = memory_host(HUB);
    let follower = memory_host(FOLLOWER);
    let room = room_with_two(&hub, &follower);
    let alice = hub.puppet("alice@xmpp.example");
    assert_eq!(follower.room_metadata(&room).expect("read"), None);
    let metadata = RoomMetadata::new(&room.to_string(), "Lobby", "Welcome, all");
    let output = hub
        .set_room_metadata(&room, &alice, &metadata)
        .expect("set");
    follower.process(&room, &output.commit).expect("process");
    let seen = follower.room_metadata(&room).expect("read").expect("set");
    assert_eq!(
        (seen.name(), seen.subject()),
        ("Lobby".into(), "Welcome, all".into())
    );
    assert_eq!(hub.room_metadata(&room).expect("read"), Some(metadata));
    assert_eq!(follower.participants(&room).expect("list").len(), 2);
}

#[test]
fn a_new_member_proposal_is_committed_by_the_hub_with_the_participant() {
    let (hub, follower) = (memory_host(HUB), memory_host(FOLLOWER));
    let room = RoomUri::new(HUB, "lobby");
    let bot = hub.puppet("bridge-bot");
    let carol = follower.puppet("carol@xmpp.example");
    hub.create_room(&room, &bot, RoomProfile::Mimi)
        .expect("create");
    // A stale epoch is refused as such, and changes nothing.
    let stale = follower.join_proposal(&room, &carol, 7).expect("proposal");
    assert!(matches!(
        hub.accept_join(&room, &bot, &stale, FOLLOWER, ROLE_ORDINARY_USER),
        Err(MlsError::WrongEpoch { current: 0, .. })
    ));
    // A proposal for a user of another domain than the peer's is refused.
    let proposal = follower.join_proposal(&room, &carol, 0).expect("proposal");
    assert!(
        hub.accept_join(
            &room,
            &bot,
            &proposal,
            "elsewhere.example",
            ROLE_ORDINARY_USER
        )
        .is_err()
    );
    assert_eq!(hub.epoch(&room).expect("epoch"), 0);
    let output = hub
        .accept_join(&room, &bot, &proposal, FOLLOWER, ROLE_ORDINARY_USER)
        .expect("accepted");
    assert_eq!(output.epoch, 1);
    assert_eq!(
        output.participants,
        vec![
            participant(&bot.to_string(), ROLE_GROUP_ADMIN),
            participant(&carol.to_string(), ROLE_ORDINARY_USER),
        ]
    );
    // The follower did not hear the answer and asks again (another KeyPackage, the new
    // epoch): refused as a repeat, changing nothing; no second client for carol.
    let again = follower.join_proposal(&room, &carol, 1).expect("proposal");
    assert!(matches!(
        hub.accept_join(&room, &bot, &again, FOLLOWER, ROLE_ORDINARY_USER),
        Err(MlsError::AlreadyMember { .. })
    ));
    assert_eq!(hub.epoch(&room).expect("epoch"), 1);
    assert_eq!(hub.members(&room).expect("members").len(), 2);
    let welcome = output.welcome.expect("a Welcome");
    follower
        .join(&welcome, Some(&output.ratchet_tree))
        .expect("join");
    let message = follower.encrypt(&room, &carol, b"hello").expect("encrypt");
    assert_eq!(
        application(hub.decrypt(&room, &message).expect("decrypt")),
        (carol.puppet_client().to_string(), b"hello".to_vec())
    );
}

#[test]
fn a_kept_decryption_answers_a_redelivery() {
    let (hub, follower) = (memory_host(HUB), memory_host(FOLLOWER));
    let room = room_with_two(&hub, &follower);
    let alice = hub.puppet("alice@xmpp.example");
    let message = hub.encrypt(&room, &alice, b"once").expect("encrypt");
    let first = follower
        .decrypt_once(&room, &message, "a/kept/1")
        .expect("decrypt");
    // The ratchet secret is spent: a plain decrypt fails, the kept one answers.
    assert!(follower.decrypt(&room, &message).is_err());
    assert_eq!(
        follower
            .decrypt_once(&room, &message, "a/kept/1")
            .expect("kept"),
        first
    );
    assert!(follower.decrypt_once(&room, &message, "mls/x").is_err());
}

#[test]
fn several_clients_are_added_in_one_commit() {
    let (hub, follower) = (memory_host(HUB), memory_host(FOLLOWER));
    let room = RoomUri::new(HUB, "crowd");
    let alice = hub.puppet("alice");
    hub.create_room(&room, &alice, RoomProfile::Mimi)
        .expect("create");
    let (bob, carol, erin) = (
        follower.puppet("bob"),
        follower.puppet("carol"),
        hub.puppet("erin"),
    );
    let key_packages = vec![
        follower
            .take_key_package(&bob)
            .expect("take")
            .expect("bob's"),
        follower
            .take_key_package(&carol)
            .expect("take")
            .expect("carol's"),
        hub.take_key_package(&erin).expect("take").expect("erin's"),
    ];
    let output = hub
        .add_clients(&room, &alice, key_packages, ROLE_ORDINARY_USER)
        .expect("add");
    assert_eq!(output.epoch, 1, "one commit");
    assert_eq!(
        output.participants,
        vec![
            participant(&alice.to_string(), ROLE_GROUP_ADMIN),
            participant(&bob.to_string(), ROLE_ORDINARY_USER),
            participant(&carol.to_string(), ROLE_ORDINARY_USER),
            participant(&erin.to_string(), ROLE_ORDINARY_USER),
        ]
    );
    // The hub's own puppet joined at once; the follower's two join from the one Welcome.
    assert_eq!(
        hub.local_members_of(&room).expect("members"),
        vec![alice.clone(), erin.clone()]
    );
    let joined = follower
        .join(
            &output.welcome.expect("a Welcome"),
            Some(&output.ratchet_tree),
        )
        .expect("join");
    assert_eq!(
        joined,
        Processed::Joined {
            room: room.clone(),
            users: vec![bob, carol],
        }
    );
    assert_eq!(follower.members(&room).expect("members").len(), 4);
    let message = hub.encrypt(&room, &erin, b"hello crowd").expect("encrypt");
    let (sender, plaintext) = application(follower.decrypt(&room, &message).expect("decrypt"));
    assert_eq!(sender, erin.puppet_client().to_string());
    assert_eq!(plaintext, b"hello crowd");
}

#[test]
fn a_failed_operation_drops_the_groups_it_used_and_the_next_one_reloads() {
    let hub = memory_host(HUB);
    let follower = memory_host(FOLLOWER);
    let room = room_with_two(&hub, &follower);
    let alice = hub.puppet("alice@xmpp.example");
    let first = hub.encrypt(&room, &alice, b"one").expect("encrypt");
    assert_eq!(
        application(follower.decrypt(&room, &first).expect("decrypt")).1,
        b"one"
    );
    assert_eq!(
        follower.cached_groups().0,
        1,
        "bob's view of the room stays in memory"
    );

    // A message whose ciphertext was tampered with fails to decrypt: whatever the attempt did
    // to the group in memory is dropped with it, and the genuine message decrypts from the
    // state reloaded from the store.
    let genuine = hub.encrypt(&room, &alice, b"two").expect("encrypt");
    let mut tampered = genuine.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 0x01;
    assert!(follower.decrypt(&room, &tampered).is_err());
    assert_eq!(
        follower.cached_groups().0,
        0,
        "the failed operation dropped its group"
    );
    assert_eq!(
        application(follower.decrypt(&room, &genuine).expect("decrypt")).1,
        b"two"
    );
    assert_eq!(follower.cached_groups().0, 1);

    // A refused commit (wrong epoch) drops the group too, and changes nothing.
    let carol = hub.puppet("carol@xmpp.example");
    let key_package = hub.take_key_package(&carol).expect("take").expect("kp");
    let commit = hub
        .add_client(&room, &alice, key_package, ROLE_ORDINARY_USER)
        .expect("add carol");
    follower.process(&room, &commit.commit).expect("epoch 2");
    assert!(follower.process(&room, &commit.commit).is_err());
    assert_eq!(follower.cached_groups().0, 0);
    assert_eq!(follower.epoch(&room).expect("epoch"), 2);
    let third = hub.encrypt(&room, &alice, b"three").expect("encrypt");
    assert_eq!(
        application(follower.decrypt(&room, &third).expect("decrypt")).1,
        b"three"
    );
}

#[test]
fn a_new_host_over_the_same_store_sees_every_write_the_cached_one_made() {
    let hub_store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let follower_store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let hub = host(HUB, hub_store.clone());
    let follower = host(FOLLOWER, follower_store.clone());
    let room = room_with_two(&hub, &follower);
    let alice = hub.puppet("alice@xmpp.example");
    let mut sent = Vec::new();
    for text in [&b"one"[..], b"two", b"three"] {
        let ciphertext = hub.encrypt(&room, &alice, text).expect("encrypt");
        assert_eq!(
            application(follower.decrypt(&room, &ciphertext).expect("decrypt")).1,
            text
        );
        sent.push(ciphertext);
    }
    let carol = hub.puppet("carol@xmpp.example");
    let key_package = hub.take_key_package(&carol).expect("take").expect("kp");
    let commit = hub
        .add_client(&room, &alice, key_package, ROLE_ORDINARY_USER)
        .expect("add carol");
    follower.process(&room, &commit.commit).expect("epoch 2");
    let four = hub.encrypt(&room, &alice, b"four").expect("encrypt");
    assert_eq!(
        application(follower.decrypt(&room, &four).expect("decrypt")).1,
        b"four"
    );
    assert!(hub.cached_groups().0 > 0 && follower.cached_groups().0 > 0);

    // What a kill -9 leaves: the stores, and none of the groups in memory.
    let hub = host(HUB, hub_store);
    let follower = host(FOLLOWER, follower_store);
    assert_eq!(hub.cached_groups().0, 0);
    assert_eq!(hub.epoch(&room).expect("epoch"), 2);
    assert_eq!(follower.epoch(&room).expect("epoch"), 2);
    assert_eq!(hub.participants(&room).expect("list").len(), 3);
    // The sender's ratchet moved on in the store: the next message is a new generation, which
    // the receiver (its spent keys also in its store) accepts.
    let five = hub.encrypt(&room, &alice, b"five").expect("encrypt");
    assert_eq!(
        application(follower.decrypt(&room, &five).expect("decrypt")).1,
        b"five"
    );
    // And a message already read stays spent.
    assert!(follower.decrypt(&room, &four).is_err());
}

/// The shared values of the MLS state in `store` (`mls/s/…`): each one's stored reference
/// count, and how many members' keys refer to it. Also checks that every reference names a
/// stored value.
fn shared_values(
    store: &dyn Store,
) -> (
    std::collections::BTreeMap<String, u32>,
    std::collections::BTreeMap<String, u32>,
) {
    let mut counts = std::collections::BTreeMap::new();
    let mut values = std::collections::BTreeSet::new();
    let mut refs = std::collections::BTreeMap::new();
    bridge_core::store::for_each_with_prefix(store, b"", |key, value| {
        let key = String::from_utf8_lossy(key).into_owned();
        let Some(at) = key.find("mls/") else {
            return Ok(());
        };
        let key = key[at..].to_owned();
        if key.starts_with("mls/s/") {
            match key.strip_suffix('#') {
                Some(value_key) => {
                    let count = u32::from_be_bytes(value.try_into().expect("a 4-byte count"));
                    counts.insert(value_key.to_owned(), count);
                }
                None => {
                    values.insert(key);
                }
            }
        } else if value.first() == Some(&1) {
            let target = String::from_utf8_lossy(&value[1..]).into_owned();
            *refs.entry(target).or_insert(0) += 1;
        } else if value.first() == Some(&2) {
            // Split: each large byte string is a shared value of its own.
            let split = bridge_mimi::mls::split::Split::decode(&value[1..]).expect("split");
            for target in split.keys() {
                let target = String::from_utf8_lossy(target).into_owned();
                *refs.entry(target).or_insert(0) += 1;
            }
        }
        Ok(())
    })
    .expect("scan");
    for target in refs.keys() {
        assert!(
            values.contains(target),
            "{target} is referred to but missing"
        );
    }
    assert_eq!(
        values,
        counts.keys().cloned().collect(),
        "a count for every shared value, and no other"
    );
    (counts, refs)
}

/// The reference counts of the shared values of `label` ("tree", "context", "message_secrets")
/// in `counts`.
fn references_per_value(counts: &std::collections::BTreeMap<String, u32>, label: &str) -> Vec<u32> {
    counts
        .iter()
        .filter(|(k, _)| k.starts_with(&format!("mls/s/{label}/")))
        .map(|(_, &n)| n)
        .collect()
}

#[test]
fn puppets_in_one_group_keep_one_tree_and_context_between_them() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let hub = host(HUB, store.clone());
    let room = RoomUri::new(HUB, "lobby");
    let alice = hub.puppet("alice@xmpp.example");
    hub.create_room(&room, &alice, RoomProfile::Mimi)
        .expect("create");
    let users: Vec<_> = ["carol", "dave", "erin"]
        .iter()
        .map(|name| hub.puppet(name))
        .collect();
    for user in &users {
        let key_package = hub.single_use_key_package(user).expect("kp");
        hub.add_client(&room, &alice, key_package, ROLE_ORDINARY_USER)
            .expect("add");
    }
    // Four members at one epoch: one tree and one context, each referred to four times.
    let (counts, refs) = shared_values(store.as_ref());
    assert_eq!(counts, refs, "stored counts match the references");
    assert_eq!(references_per_value(&counts, "tree"), [4]);
    assert_eq!(references_per_value(&counts, "context"), [4]);
    // Each member's message secrets hold the serialised context of the current epoch and of
    // the past ones it keeps, each stored once: the current one is referred to four times.
    let secrets = references_per_value(&counts, "message_secrets");
    assert_eq!(secrets.iter().max(), Some(&4), "{secrets:?}");
    assert!(
        secrets.len() <= 1 + bridge_mimi::mls::PAST_EPOCHS,
        "{secrets:?}"
    );

    // erin is removed: her copy is gone, and the others moved to a new epoch together.
    hub.remove_user(&room, &alice, &users[2]).expect("remove");
    let (counts, refs) = shared_values(store.as_ref());
    assert_eq!(counts, refs);
    assert_eq!(references_per_value(&counts, "tree"), [3]);
    assert_eq!(references_per_value(&counts, "context"), [3]);
    let secrets = references_per_value(&counts, "message_secrets");
    assert_eq!(secrets.iter().max(), Some(&3), "{secrets:?}");
    assert!(
        secrets.len() <= 1 + bridge_mimi::mls::PAST_EPOCHS,
        "{secrets:?}"
    );

    // A host opened again over the store reads the shared state: carol and alice still talk.
    drop(hub);
    let hub = host(HUB, store.clone());
    let sealed = hub
        .encrypt(&room, &users[0], b"after the restart")
        .expect("carol encrypts");
    let (sender, text) = application(hub.decrypt(&room, &sealed).expect("alice reads"));
    assert_eq!(sender, users[0].puppet_client().to_string());
    assert_eq!(text, b"after the restart");
}

#[test]
fn a_followers_commit_is_merged_only_when_its_committer_may_make_it() {
    let alice_uri = |hub: &MlsHost| hub.puppet("alice@xmpp.example");
    let bob_uri = |follower: &MlsHost| follower.puppet("@bob:matrix.example");
    let refused = |result: Result<Processed, MlsError>, why: &str| match result {
        Err(MlsError::InvalidStateChange(reason) | MlsError::NotAllowed(reason)) => {
            assert!(
                reason.contains(why),
                "refused, but for {reason:?} instead of {why:?}"
            );
        }
        other => panic!("expected a refusal ({why}), got {other:?}"),
    };

    // bob (an ordinary participant) removes alice, the room's admin: not his to remove.
    let (hub, follower) = (memory_host(HUB), memory_host(FOLLOWER));
    let room = room_with_two(&hub, &follower);
    let removal = follower
        .remove_user(&room, &bob_uri(&follower), &alice_uri(&hub))
        .expect("bob's host makes the commit");
    refused(
        hub.process_from(&room, &removal.commit, FOLLOWER),
        "may not take mimi://hub.example/u/alice%40xmpp.example off the participant list",
    );
    assert_eq!(hub.epoch(&room).expect("epoch"), 1, "nothing merged");
    assert_eq!(hub.members(&room).expect("members").len(), 2);

    // bob adds carol, a user of his provider: adding other users is for group admins.
    let (hub, follower) = (memory_host(HUB), memory_host(FOLLOWER));
    let room = room_with_two(&hub, &follower);
    let carol = follower.puppet("@carol:matrix.example");
    let key_package = follower
        .take_key_package(&carol)
        .expect("take")
        .expect("kp");
    let addition = follower
        .add_client(&room, &bob_uri(&follower), key_package, ROLE_ORDINARY_USER)
        .expect("bob's host makes the commit");
    refused(
        hub.process_from(&room, &addition.commit, FOLLOWER),
        "may add only clients of their own",
    );
    assert_eq!(hub.epoch(&room).expect("epoch"), 1, "nothing merged");

    // An empty commit by bob (a key update): allowed from his own provider only.
    let (hub, follower) = (memory_host(HUB), memory_host(FOLLOWER));
    let room = room_with_two(&hub, &follower);
    let update = follower
        .commit_pending(&room, &bob_uri(&follower))
        .expect("bob's host makes the commit");
    refused(
        hub.process_from(&room, &update.commit, "elsewhere.example"),
        "does not belong to elsewhere.example",
    );
    assert_eq!(hub.epoch(&room).expect("epoch"), 1, "nothing merged");
    match hub
        .process_from(&room, &update.commit, FOLLOWER)
        .expect("from bob's provider")
    {
        Processed::Commit { epoch, .. } => assert_eq!(epoch, 2),
        other => panic!("expected a commit, got {other:?}"),
    }
}

#[test]
fn the_rooms_roles_decide_who_may_send_and_its_policy_says_the_bridge_reads_everything() {
    let hub = memory_host(HUB);
    let follower = memory_host(FOLLOWER);
    let room = room_with_two(&hub, &follower);
    let alice = hub.puppet("alice@xmpp.example");
    let bob = follower.puppet("@bob:matrix.example");

    // The room carries its policy from its creation, and the follower reads it.
    let (roles, logging, bots) = follower.room_policy(&room).expect("policy");
    assert_eq!(roles, RoleData::bridge_default());
    match logging.expect("a logging policy") {
        LoggingPolicy::Required(details) => assert_eq!(
            details.logging_clients[0].as_slice(),
            alice.puppet_client().to_string().as_bytes()
        ),
        other => panic!("logging should be required, is {other:?}"),
    }
    let bot = &bots.expect("a bot policy").allowed_bots[0];
    assert_eq!(bot.description.as_slice(), BRIDGE_STATEMENT.as_bytes());
    assert_eq!(bot.bot_role_index, ROLE_GROUP_ADMIN);

    // An ordinary participant sends; the hub would take it.
    assert!(roles.allows(ROLE_ORDINARY_USER, CAPABILITY_CAN_SEND_MESSAGE));
    hub.may_send(&room, &bob.to_string()).expect("bob may send");
    let sealed = follower.encrypt(&room, &bob, b"hello").expect("encrypt");
    assert_eq!(
        application(hub.decrypt(&room, &sealed).expect("decrypt")).1,
        b"hello"
    );

    // bob may not make himself a visitor, nor an admin; alice (group admin) may.
    assert!(matches!(
        follower.set_role(&room, &bob, &bob, ROLE_GROUP_ADMIN),
        Err(MlsError::NotAllowed(_))
    ));
    let demoted = hub
        .set_role(&room, &alice, &bob, ROLE_VISITOR)
        .expect("alice demotes bob");
    assert_eq!(
        demoted.participants,
        vec![
            participant(&alice.to_string(), ROLE_GROUP_ADMIN),
            participant(&bob.to_string(), ROLE_VISITOR),
        ]
    );
    follower.process(&room, &demoted.commit).expect("process");
    assert_eq!(
        follower.participants(&room).expect("list"),
        demoted.participants
    );

    // A visitor's message is refused on both sides: his host does not encrypt it, and the
    // hub would refuse it at /submitMessage. He still reads what alice says.
    assert!(matches!(
        follower.encrypt(&room, &bob, b"may I?"),
        Err(MlsError::NotAllowed(_))
    ));
    assert!(matches!(
        hub.may_send(&room, &bob.to_string()),
        Err(MlsError::NotAllowed(_))
    ));
    assert!(matches!(
        hub.may_send(&room, "mimi://follower.example/u/stranger"),
        Err(MlsError::NotAllowed(_))
    ));
    let sealed = hub
        .encrypt(&room, &alice, b"please listen")
        .expect("encrypt");
    assert_eq!(
        application(follower.decrypt(&room, &sealed).expect("decrypt")).1,
        b"please listen"
    );

    // A role change is not a removal (role 0) nor a ban that leaves clients behind (§8.1.3):
    // both refused, even to a group admin; `remove_user` and `ban_user` do those.
    for role in [ROLE_NONE, ROLE_BANNED] {
        assert!(
            matches!(
                hub.set_role(&room, &alice, &bob, role),
                Err(MlsError::NotAllowed(_))
            ),
            "role {role}"
        );
    }

    // Given his voice back, he sends again; then a visitor once more.
    for (role, may) in [(ROLE_ORDINARY_USER, true), (ROLE_VISITOR, false)] {
        let commit = hub.set_role(&room, &alice, &bob, role).expect("set role");
        follower.process(&room, &commit.commit).expect("process");
        assert_eq!(
            follower.encrypt(&room, &bob, b"now?").is_ok(),
            may,
            "role {role}"
        );
    }

    // A visitor may still leave: his proposals pass the hub's checks.
    let proposals = follower.leave(&room, &bob).expect("leave");
    let bytes: Vec<&[u8]> = proposals.iter().map(Vec::as_slice).collect();
    let commit = hub
        .commit_proposals_from(&room, &alice, &bytes, FOLLOWER)
        .expect("bob leaves");
    assert_eq!(
        commit.participants,
        vec![participant(&alice.to_string(), ROLE_GROUP_ADMIN)]
    );
}

#[test]
fn a_ban_keeps_the_user_listed_as_banned_until_they_are_added_again() {
    let hub = memory_host(HUB);
    let follower = memory_host(FOLLOWER);
    let room = room_with_two(&hub, &follower);
    let alice = hub.puppet("alice@xmpp.example");
    let bob = follower.puppet("@bob:matrix.example");

    let ban = hub.ban_user(&room, &alice, &bob).expect("ban");
    let banned = vec![
        participant(&alice.to_string(), ROLE_GROUP_ADMIN),
        participant(&bob.to_string(), ROLE_BANNED),
    ];
    assert_eq!(ban.participants, banned);
    assert!(!ban.participants[1].present());
    assert_eq!(
        hub.members(&room).expect("members").len(),
        1,
        "bob's client removed"
    );
    match follower.process(&room, &ban.commit).expect("process") {
        Processed::Commit { removed, .. } => assert_eq!(removed, vec![bob.clone()]),
        other => panic!("expected a commit, got {other:?}"),
    }
    assert!(matches!(
        hub.may_send(&room, &bob.to_string()),
        Err(MlsError::NotAllowed(_))
    ));

    // Added again (unbanned where he lives, and back): the same entry, an ordinary role.
    let key_package = follower.take_key_package(&bob).expect("take").expect("kp");
    let back = hub
        .add_client(&room, &alice, key_package, ROLE_ORDINARY_USER)
        .expect("add again");
    assert_eq!(
        back.participants,
        vec![
            participant(&alice.to_string(), ROLE_GROUP_ADMIN),
            participant(&bob.to_string(), ROLE_ORDINARY_USER),
        ]
    );
    follower
        .join(back.welcome.as_deref().expect("welcome"), None)
        .expect("rejoin");
    let sealed = follower.encrypt(&room, &bob, b"I'm back").expect("encrypt");
    assert_eq!(
        application(hub.decrypt(&room, &sealed).expect("decrypt")).1,
        b"I'm back"
    );
}

/// A banned user's request to join (a new member's Add proposal) is refused: he stays out.
#[test]
fn a_banned_users_request_to_join_is_refused() {
    let (hub, follower) = (memory_host(HUB), memory_host(FOLLOWER));
    let room = room_with_two(&hub, &follower);
    let alice = hub.puppet("alice@xmpp.example");
    let bob = follower.puppet("@bob:matrix.example");
    let ban = hub.ban_user(&room, &alice, &bob).expect("ban");
    follower.process(&room, &ban.commit).expect("process ban");
    assert_eq!(hub.members(&room).expect("members").len(), 1);

    let epoch = hub.epoch(&room).expect("epoch");
    let proposal = follower
        .join_proposal(&room, &bob, epoch)
        .expect("proposal");
    let result = hub.accept_join(&room, &alice, &proposal, FOLLOWER, ROLE_ORDINARY_USER);
    assert!(matches!(result, Err(MlsError::NotAllowed(_))), "{result:?}");
    if let Ok(out) = &result {
        follower
            .join(
                out.welcome.as_deref().expect("welcome"),
                Some(&out.ratchet_tree),
            )
            .expect("rejoin");
        let sealed = hub.encrypt(&room, &alice, b"secret").expect("encrypt");
        let read = follower.decrypt(&room, &sealed);
        panic!(
            "banned bob was re-admitted: participants {:?}, members {:?}, he reads: {:?}",
            out.participants,
            hub.members(&room).expect("members"),
            read.map(|r| match r {
                Processed::Application(d) => String::from_utf8_lossy(&d.plaintext).into_owned(),
                other => format!("{other:?}"),
            })
        );
    }
}

/// Participant-list updates in one commit apply one after another, so each is checked against
/// the list the ones before it leave. Two leaves made against the same list (bob's and dave's,
/// in one `/update`) do not say what they mean: dave's index names erin once bob is gone. The
/// hub refuses them (found in review: it used to check both against the list before the commit
/// and took erin off instead of dave); each leave made after the other's commit is taken.
#[test]
fn two_leaves_made_against_one_list_are_refused_and_each_taken_in_turn() {
    let (hub, follower) = (memory_host(HUB), memory_host(FOLLOWER));
    let room = room_with_two(&hub, &follower);
    let alice = hub.puppet("alice@xmpp.example");
    let bob = follower.puppet("@bob:matrix.example");
    let dave = follower.puppet("@dave:matrix.example");
    let erin = hub.puppet("erin@xmpp.example");
    // dave (follower) and erin (hub) join.
    let kp = follower.take_key_package(&dave).expect("take").expect("kp");
    let out = hub
        .add_client(&room, &alice, kp, ROLE_ORDINARY_USER)
        .expect("add dave");
    follower.process(&room, &out.commit).expect("process");
    follower
        .join(&out.welcome.expect("welcome"), Some(&out.ratchet_tree))
        .expect("dave joins");
    let kp = hub.single_use_key_package(&erin).expect("kp");
    let out = hub
        .add_client(&room, &alice, kp, ROLE_ORDINARY_USER)
        .expect("add erin");
    follower.process(&room, &out.commit).expect("process");
    let everyone = vec![
        participant(&alice.to_string(), ROLE_GROUP_ADMIN),
        participant(&bob.to_string(), ROLE_ORDINARY_USER),
        participant(&dave.to_string(), ROLE_ORDINARY_USER),
        participant(&erin.to_string(), ROLE_ORDINARY_USER),
    ];
    assert_eq!(hub.participants(&room).expect("list"), everyone);
    // bob and dave both leave; their four proposals reach the hub in one /update.
    let mut proposals = follower.leave(&room, &bob).expect("bob leaves");
    proposals.extend(follower.leave(&room, &dave).expect("dave leaves"));
    let bytes: Vec<&[u8]> = proposals.iter().map(Vec::as_slice).collect();
    let refused = hub.commit_proposals_from(&room, &alice, &bytes, FOLLOWER);
    assert!(
        matches!(refused, Err(MlsError::NotAllowed(_))),
        "{refused:?}"
    );
    assert_eq!(
        hub.participants(&room).expect("list"),
        everyone,
        "nothing changed"
    );
    assert_eq!(hub.members(&room).expect("members").len(), 4);
    // One at a time, each against the list as it is: both taken, nobody else touched.
    for user in [&bob, &dave] {
        let proposals = follower.leave(&room, user).expect("leave");
        let bytes: Vec<&[u8]> = proposals.iter().map(Vec::as_slice).collect();
        let commit = hub
            .commit_proposals_from(&room, &alice, &bytes, FOLLOWER)
            .expect("a leave");
        if *user == bob {
            follower.process(&room, &commit.commit).expect("process");
        }
    }
    assert_eq!(
        hub.participants(&room).expect("list"),
        vec![
            participant(&alice.to_string(), ROLE_GROUP_ADMIN),
            participant(&erin.to_string(), ROLE_ORDINARY_USER),
        ]
    );
}

#[test]
fn a_banned_user_cannot_join_by_external_commit() {
    use openmls::prelude::*;
    use openmls_basic_credential::SignatureKeyPair;
    use openmls_rust_crypto::OpenMlsRustCrypto;
    use tls_codec::{Deserialize as _, Serialize as _};

    let (hub, follower) = (memory_host(HUB), memory_host(FOLLOWER));
    let room = room_with_two(&hub, &follower);
    let alice = hub.puppet("alice@xmpp.example");
    let bob = follower.puppet("@bob:matrix.example");
    let ban = hub.ban_user(&room, &alice, &bob).expect("ban");
    follower.process(&room, &ban.commit).expect("process ban");
    assert!(
        hub.participants(&room)
            .expect("list")
            .iter()
            .any(|x| x.user == bob.to_string() && x.role_index == ROLE_BANNED),
        "bob listed as banned"
    );

    // What /groupInfo hands bob's provider.
    let (info, tree) = hub.group_info(&room).expect("group info");
    let info = MlsMessageIn::tls_deserialize_exact(&info).expect("info");
    let MlsMessageBodyIn::GroupInfo(info) = info.extract() else {
        panic!("not a GroupInfo")
    };
    let tree = RatchetTreeIn::tls_deserialize_exact(&tree).expect("tree");

    let provider = OpenMlsRustCrypto::default();
    let suite = Ciphersuite::MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519;
    let signer = SignatureKeyPair::new(suite.signature_algorithm()).expect("keys");
    let identity = format!("{}", bob.puppet_client()).replace("/bridge", "/phone");
    let credential = CredentialWithKey {
        credential: BasicCredential::new(identity.into_bytes()).into(),
        signature_key: signer.public().into(),
    };
    let capabilities = Capabilities::new(
        None,
        Some(&[suite]),
        Some(&[ExtensionType::AppDataDictionary]),
        Some(&[ProposalType::AppDataUpdate, ProposalType::SelfRemove]),
        Some(&[CredentialType::Basic]),
    );
    let (_group, bundle) = MlsGroup::external_commit_builder()
        .with_ratchet_tree(tree)
        .build_group(&provider, info, credential)
        .expect("build")
        .leaf_node_parameters(
            LeafNodeParameters::builder()
                .with_capabilities(capabilities)
                .build(),
        )
        .load_psks(provider.storage())
        .expect("psks")
        .build(provider.rand(), provider.crypto(), &signer, |_| true)
        .expect("commit")
        .finalize(&provider)
        .expect("finalize");
    let commit = bundle.commit().tls_serialize_detached().expect("bytes");
    match hub.process_from(&room, &commit, FOLLOWER) {
        Err(MlsError::NotAllowed(_) | MlsError::InvalidStateChange(_)) => {}
        other => panic!(
            "banned bob's external commit: {other:?}; members now {:?}, participants {:?}",
            hub.members(&room).expect("members"),
            hub.participants(&room).expect("list")
        ),
    }
}

/// Taking oneself off the participant list without removing one's clients is refused (§8.1.2):
/// every client in the group belongs to a present participant, which is what the hub's list of
/// providers to notify relies on.
#[test]
fn leaving_the_list_while_keeping_a_client_is_refused() {
    let hub = memory_host(HUB);
    let follower = memory_host(FOLLOWER);
    let room = room_with_two(&hub, &follower);
    let alice = hub.puppet("alice@xmpp.example");
    let bob = follower.puppet("@bob:matrix.example");
    let proposals = follower.leave(&room, &bob).expect("leave");
    assert_eq!(proposals.len(), 2, "AppDataUpdate and Remove");
    // Only the participant-list update, not the Remove of bob's client.
    let refused = hub.commit_proposals_from(&room, &alice, &[proposals[0].as_slice()], FOLLOWER);
    assert!(
        matches!(&refused, Err(MlsError::NotAllowed(why)) if why.contains("kept in the group")),
        "{refused:?}"
    );
    assert_eq!(
        hub.participants(&room).expect("list").len(),
        2,
        "nothing changed"
    );
    // Both together: taken.
    let bytes: Vec<&[u8]> = proposals.iter().map(Vec::as_slice).collect();
    let commit = hub
        .commit_proposals_from(&room, &alice, &bytes, FOLLOWER)
        .expect("a whole leave");
    assert_eq!(commit.participants.len(), 1);
}

#[test]
fn the_last_group_admin_may_not_leave() {
    let hub = memory_host(HUB);
    let follower = memory_host(FOLLOWER);
    let room = room_with_two(&hub, &follower);
    let alice = hub.puppet("alice@xmpp.example");
    let bob = follower.puppet("@bob:matrix.example");
    let (carol, _) = add_local_puppet(&hub, &follower, &room, "carol@xmpp.example");
    // alice makes bob an admin; bob, an admin now, takes alice off the list (from his
    // provider, checked by the hub): two admins to one.
    let promoted = hub
        .set_role(&room, &alice, &bob, ROLE_GROUP_ADMIN)
        .expect("alice makes bob an admin");
    follower
        .process(&room, &promoted.commit)
        .expect("bob sees it");
    let removal = follower
        .remove_user(&room, &bob, &alice)
        .expect("bob removes alice");
    hub.process_from(&room, &removal.commit, FOLLOWER)
        .expect("the hub takes it");
    let epoch = hub.epoch(&room).expect("epoch");

    // bob, the only group admin now, leaves; carol commits it at the hub: refused, since the
    // bridge's roles keep at least one group admin (minimum_participants_constraint 1).
    let proposals = follower.leave(&room, &bob).expect("leave");
    let bytes: Vec<&[u8]> = proposals.iter().map(Vec::as_slice).collect();
    let refused = hub.commit_proposals_from(&room, &carol, &bytes, FOLLOWER);
    assert!(
        matches!(&refused, Err(MlsError::NotAllowed(why))
            if why.contains("role 3 (group_admin) would have 0 participants, fewer than its minimum 1")),
        "{refused:?}"
    );
    assert_eq!(hub.epoch(&room).expect("epoch"), epoch, "nothing committed");
    assert_eq!(
        hub.participants(&room).expect("list"),
        vec![
            participant(&bob.to_string(), ROLE_GROUP_ADMIN),
            participant(&carol.to_string(), ROLE_ORDINARY_USER),
        ]
    );
}
