//! MIMI bodies carrying MLS objects made by openmls itself: they decode, keep their bytes, and
//! the MLS layer can use what comes out (a client joins from the Welcome and ratchet tree of a
//! notify body and reads the application message).

use bridge_mimi::wire::*;
use openmls::prelude::tls_codec::Serialize as _;
use openmls::prelude::*;
use openmls_basic_credential::SignatureKeyPair;
use openmls_rust_crypto::OpenMlsRustCrypto;

const SUITE: Ciphersuite = Ciphersuite::MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519;

fn member(provider: &OpenMlsRustCrypto, name: &str) -> (SignatureKeyPair, CredentialWithKey) {
    let signer = SignatureKeyPair::new(SUITE.signature_algorithm()).expect("keys");
    signer.store(provider.storage()).expect("store");
    let credential = BasicCredential::new(name.as_bytes().to_vec());
    let with_key = CredentialWithKey {
        credential: credential.into(),
        signature_key: signer.public().into(),
    };
    (signer, with_key)
}

fn bytes(message: &MlsMessageOut) -> Vec<u8> {
    message.tls_serialize_detached().expect("serialize")
}

#[test]
fn openmls_objects_travel_in_mimi_bodies() {
    let alice_provider = OpenMlsRustCrypto::default();
    let bob_provider = OpenMlsRustCrypto::default();
    let (alice_signer, alice) = member(&alice_provider, "mimi://a.example/d/alice/1");
    let (bob_signer, bob) = member(&bob_provider, "mimi://b.example/d/bob/1");

    // keyMaterial: b.example hands out Bob's KeyPackage.
    let bundle = openmls::prelude::KeyPackage::builder()
        .build(SUITE, &bob_provider, &bob_signer, bob)
        .expect("key package");
    let key_package_bytes = bundle.key_package().tls_serialize_detached().expect("kp");
    let response = KeyMaterialResponse {
        protocol: Protocol::Mls10,
        user_status: KeyMaterialUserCode::Success,
        user_uri: "mimi://b.example/u/bob".into(),
        clients: vec![ClientKeyMaterial {
            client_uri: "mimi://b.example/d/bob/1".into(),
            result: ClientKeyMaterialResult::Success(
                bridge_mimi::wire::KeyPackage::from_bytes(key_package_bytes.clone()).expect("kp"),
            ),
        }],
    };
    let decoded = KeyMaterialResponse::decode(&response.encode().expect("encode")).expect("decode");
    let ClientKeyMaterialResult::Success(key_package) = &decoded.clients[0].result else {
        panic!("no key package");
    };
    let key_package = key_package
        .parse()
        .expect("parse")
        .validate(alice_provider.crypto(), ProtocolVersion::Mls10)
        .expect("valid key package");

    // update: Alice adds Bob; the commit bundle carries the commit, Welcome, GroupInfo, tree.
    let mut group = MlsGroup::new(
        &alice_provider,
        &alice_signer,
        &MlsGroupCreateConfig::default(),
        alice,
    )
    .expect("group");
    let (commit, welcome, _) = group
        .add_members(&alice_provider, &alice_signer, &[key_package])
        .expect("add");
    group.merge_pending_commit(&alice_provider).expect("merge");
    let group_info = group
        .export_group_info(alice_provider.crypto(), &alice_signer, false)
        .expect("group info");
    let tree = group
        .export_ratchet_tree()
        .tls_serialize_detached()
        .expect("tree");
    let commit = MlsMessage::from_bytes(bytes(&commit)).expect("commit");
    assert_eq!(commit.kind().content(), Some(ContentKind::Commit));
    // The bare Welcome and GroupInfo follow the 4 bytes of version and wire format.
    let welcome_bytes = bytes(&welcome);
    let update = UpdateRequest {
        bundle: HandshakeBundle::Commit(CommitBundle {
            commit: commit.clone(),
            welcome: Some(
                bridge_mimi::wire::Welcome::from_bytes(welcome_bytes[4..].to_vec())
                    .expect("welcome"),
            ),
            group_info: GroupInfoOption::Full(
                GroupInfo::from_bytes(bytes(&group_info)[4..].to_vec()).expect("group info"),
            ),
            ratchet_tree: RatchetTreeOption::Full(
                RatchetTree::from_bytes(tree.clone()).expect("tree"),
            ),
        }),
    };
    let encoded = update.encode().expect("encode");
    assert_eq!(UpdateRequest::decode(&encoded).expect("decode"), update);

    // submitMessage + notify: an application message, then the Welcome fanned out to b.example.
    let app = group
        .create_message(&alice_provider, &alice_signer, b"hello from a.example")
        .expect("message");
    let app = MlsMessage::from_bytes(bytes(&app)).expect("app");
    assert_eq!(
        app.kind(),
        MessageKind::PrivateMessage(ContentKind::Application)
    );
    let notify = NotifyBody {
        messages: vec![
            FanoutMessage {
                timestamp: 1,
                payload: FanoutPayload::Welcome {
                    welcome: MlsMessage::from_bytes(welcome_bytes).expect("welcome"),
                    ratchet_tree: RatchetTreeOption::Full(
                        RatchetTree::from_bytes(tree).expect("tree"),
                    ),
                },
            },
            FanoutMessage {
                timestamp: 2,
                payload: FanoutPayload::Application {
                    message: app,
                    frank: None,
                },
            },
        ],
    };
    let received = NotifyBody::decode(&notify.encode().expect("encode")).expect("decode");
    assert_eq!(received, notify);

    // b.example's MLS layer: Bob joins and reads the message.
    let FanoutPayload::Welcome {
        welcome,
        ratchet_tree: RatchetTreeOption::Full(tree),
    } = &received.messages[0].payload
    else {
        panic!("not a welcome");
    };
    let MlsMessageBodyIn::Welcome(welcome) = welcome.parse().expect("parse").extract() else {
        panic!("not a welcome");
    };
    let mut bob_group = StagedWelcome::new_from_welcome(
        &bob_provider,
        &MlsGroupJoinConfig::default(),
        welcome,
        Some(tree.parse().expect("tree")),
    )
    .expect("staged")
    .into_group(&bob_provider)
    .expect("join");
    let message = received.messages[1]
        .payload
        .message()
        .parse()
        .expect("parse")
        .try_into_protocol_message()
        .expect("protocol message");
    let processed = bob_group
        .process_message(&bob_provider, message)
        .expect("process");
    let ProcessedMessageContent::ApplicationMessage(content) = processed.into_content() else {
        panic!("not an application message");
    };
    assert_eq!(content.into_bytes(), b"hello from a.example");
}
