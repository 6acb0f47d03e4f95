//! Interop with an independent MLS implementation (mls-rs 0.57, RustCrypto provider): in a
//! plain RFC 9420 group hosted by our openmls code, an mls-rs client's KeyPackage is added, it
//! joins from our Welcome, follows our next commit, and application messages of arbitrary bytes
//! go both ways. (mls-rs has no AppDataUpdate, so it cannot join a MIMI-profile group.)

use std::sync::Arc;

use bridge_core::MemoryStore;
use bridge_mimi::codepoints::ROLE_ORDINARY_USER;
use bridge_mimi::mls::kv::StoreKv;
use bridge_mimi::mls::uri::RoomUri;
use bridge_mimi::mls::{MlsHost, Processed, RoomProfile};
use mls_rs::client_builder::MlsConfig;
use mls_rs::group::ReceivedMessage;
use mls_rs::identity::SigningIdentity;
use mls_rs::identity::basic::{BasicCredential, BasicIdentityProvider};
use mls_rs::{CipherSuite, CipherSuiteProvider, Client, CryptoProvider, MlsMessage};
use mls_rs_crypto_rustcrypto::RustCryptoProvider;

const CIPHERSUITE: CipherSuite = CipherSuite::CURVE25519_AES128;
const DAVE: &str = "mimi://remote.example/d/dave/phone";

fn mls_rs_client(identity: &str) -> Client<impl MlsConfig> {
    let crypto = RustCryptoProvider::default();
    let suite = crypto
        .cipher_suite_provider(CIPHERSUITE)
        .expect("ciphersuite 0x0001");
    let (secret, public) = suite.signature_key_generate().expect("keys");
    let credential = BasicCredential::new(identity.as_bytes().to_vec()).into_credential();
    Client::builder()
        .identity_provider(BasicIdentityProvider)
        .crypto_provider(crypto)
        .signing_identity(
            SigningIdentity::new(credential, public),
            secret,
            CIPHERSUITE,
        )
        .build()
}

fn plaintext_of(received: ReceivedMessage) -> Vec<u8> {
    match received {
        ReceivedMessage::ApplicationMessage(m) => m.data().to_vec(),
        other => panic!("expected an application message, got {other:?}"),
    }
}

#[test]
fn an_mls_rs_client_joins_our_group_and_talks_both_ways() {
    let hub = MlsHost::open(
        "hub.example",
        Arc::new(StoreKv::new(Arc::new(MemoryStore::new()), b"m/")),
    );
    let room = RoomUri::new("hub.example", "interop");
    let alice = hub.puppet("alice@xmpp.example");
    hub.create_room(&room, &alice, RoomProfile::Plain)
        .expect("create");

    // dave (mls-rs) publishes a KeyPackage; our hub validates and adds it.
    let dave = mls_rs_client(DAVE);
    let key_package = dave
        .generate_key_package_message(Default::default(), Default::default(), None)
        .expect("KeyPackage")
        .to_bytes()
        .expect("encode");
    let key_package = hub.validate_key_package(&key_package).expect("valid");
    let output = hub
        .add_client(&room, &alice, key_package, ROLE_ORDINARY_USER)
        .expect("add");
    assert!(
        output.participants.is_empty(),
        "no room state in a plain group"
    );

    // dave joins from our Welcome (tree in the GroupInfo extension).
    let welcome = MlsMessage::from_bytes(output.welcome.as_deref().expect("welcome"))
        .expect("decode Welcome");
    let (mut dave_group, _) = dave.join_group(None, &welcome, None).expect("join");
    assert_eq!(dave_group.current_epoch(), 1);
    let members = hub.members(&room).expect("members");
    assert_eq!(
        members,
        vec![alice.puppet_client().to_string(), DAVE.to_owned()]
    );

    // Arbitrary bytes (later: MIMI CBOR) both ways.
    let payload: Vec<u8> = (0..=255u8).chain([0xa1, 0x01, 0xf6]).collect();
    let ciphertext = hub.encrypt(&room, &alice, &payload).expect("encrypt");
    let received = dave_group
        .process_incoming_message(MlsMessage::from_bytes(&ciphertext).expect("decode"))
        .expect("dave decrypts");
    assert_eq!(plaintext_of(received), payload);

    let reply = dave_group
        .encrypt_application_message(b"\x87\x50hello from mls-rs", Vec::new())
        .expect("dave encrypts")
        .to_bytes()
        .expect("encode");
    match hub.decrypt(&room, &reply).expect("we decrypt") {
        Processed::Application(m) => {
            assert_eq!(m.sender, DAVE);
            assert_eq!(m.plaintext, b"\x87\x50hello from mls-rs");
        }
        other => panic!("expected an application message, got {other:?}"),
    }

    // Our next commit (a second local puppet joins) is followed by dave.
    let carol = hub.puppet("@carol:matrix.example");
    let key_package = hub.take_key_package(&carol).expect("take").expect("kp");
    let output = hub
        .add_client(&room, &alice, key_package, ROLE_ORDINARY_USER)
        .expect("add carol");
    let received = dave_group
        .process_incoming_message(MlsMessage::from_bytes(&output.commit).expect("decode"))
        .expect("dave processes our commit");
    assert!(matches!(received, ReceivedMessage::Commit(_)));
    assert_eq!(dave_group.current_epoch(), 2);
    let from_carol = hub.encrypt(&room, &carol, b"carol here").expect("encrypt");
    let received = dave_group
        .process_incoming_message(MlsMessage::from_bytes(&from_carol).expect("decode"))
        .expect("dave decrypts carol");
    assert_eq!(plaintext_of(received), b"carol here");
}
