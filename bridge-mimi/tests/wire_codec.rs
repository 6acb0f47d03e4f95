//! The MIMI bodies against bytes written by hand from the drafts' TLS-PL: exact encodings, round
//! trips, and refusals of malformed input.

mod fixtures;

use bridge_mimi::wire::*;
use fixtures::*;
use tls_codec::VLBytes;

fn msg(bytes: Vec<u8>) -> MlsMessage {
    MlsMessage::from_bytes(bytes).expect("a valid MLSMessage fixture")
}

const ROOM: &str = "mimi://a.example/r/clubhouse";
const BOB: &str = "mimi://b.example/u/bob";

/// Decodes `bytes`, checks it is `expected`, and that encoding gives the same bytes back.
fn check_exact<T: WireBody + PartialEq + std::fmt::Debug>(bytes: &[u8], expected: &T) {
    let decoded = T::decode(bytes).expect("decode the hand-written fixture");
    assert_eq!(&decoded, expected);
    assert_eq!(
        expected.encode().expect("encode"),
        bytes,
        "our encoding differs"
    );
    check_malformed::<T>(bytes, &[]);
}

/// Every strict prefix fails, one trailing byte fails, and flipping any byte never panics.
/// (`whole`: prefixes of that length are complete bodies, as between concatenated messages.)
fn check_malformed<T: WireBody + std::fmt::Debug>(bytes: &[u8], whole: &[usize]) {
    for cut in (0..bytes.len()).filter(|cut| !whole.contains(cut)) {
        assert!(
            T::decode(&bytes[..cut]).is_err(),
            "a prefix of {cut} of {} bytes decoded",
            bytes.len()
        );
    }
    let mut longer = bytes.to_vec();
    longer.push(0);
    assert!(matches!(
        T::decode(&longer),
        Err(WireError::TrailingBytes(1)) | Err(_)
    ));
    for at in 0..bytes.len() {
        for flip in [0x01, 0x80, 0xff] {
            let mut mutated = bytes.to_vec();
            mutated[at] ^= flip;
            let _ = T::decode(&mutated);
        }
    }
}

#[test]
fn mls_objects_are_delimited_and_classified() {
    assert_eq!(
        msg(private_application(3)).kind(),
        MessageKind::PrivateMessage(ContentKind::Application)
    );
    assert_eq!(
        msg(public_remove_proposal(2)).kind(),
        MessageKind::PublicMessage(ContentKind::Proposal)
    );
    assert_eq!(
        msg(public_commit()).kind(),
        MessageKind::PublicMessage(ContentKind::Commit)
    );
    assert_eq!(msg(welcome_message()).kind(), MessageKind::Welcome);
    KeyPackage::from_bytes(key_package("x")).expect("key package");
    Welcome::from_bytes(welcome()).expect("welcome");
    GroupInfo::from_bytes(group_info()).expect("group info");
    // Trailing or missing bytes are refused by the constructors too.
    let mut long = private_application(3);
    long.push(0);
    assert!(MlsMessage::from_bytes(long).is_err());
    let short = private_application(3);
    assert!(MlsMessage::from_bytes(short[..short.len() - 1].to_vec()).is_err());
}

#[test]
fn submit_message_request_and_responses() {
    let app = private_application(5);
    let bytes = cat(&[&[0x01], &app, &v(BOB.as_bytes())]);
    check_exact(
        &bytes,
        &SubmitMessageRequest {
            protocol: Protocol::Mls10,
            app_message: msg(app.clone()),
            sending_uri: BOB.into(),
        },
    );
    // A commit is not an application message.
    let wrong = cat(&[&[0x01], &public_commit(), &v(BOB.as_bytes())]);
    assert!(matches!(
        SubmitMessageRequest::decode(&wrong),
        Err(WireError::Malformed(_))
    ));

    // accepted(0), timestamp, no frank.
    let accepted = cat(&[&[0x01, 0x00], &u64be(1_700_000_000_123), &[0x00]]);
    check_exact(
        &accepted,
        &SubmitMessageResponse {
            protocol: Protocol::Mls10,
            result: SubmitResult::Accepted {
                accepted_timestamp: 1_700_000_000_123,
                frank: None,
            },
        },
    );
    // accepted(0) with a frank.
    let franked = cat(&[
        &[0x01, 0x00],
        &u64be(42),
        &[0x01],
        &[0x5F; 32],
        &[0x00, 0x01],
        &v(&[0x99; 64]),
    ]);
    check_exact(
        &franked,
        &SubmitMessageResponse {
            protocol: Protocol::Mls10,
            result: SubmitResult::Accepted {
                accepted_timestamp: 42,
                frank: Some(Frank {
                    server_frank: [0x5F; 32],
                    franking_signature_ciphersuite: CipherSuite(1),
                    franking_integrity_signature: VLBytes::new(vec![0x99; 64]),
                }),
            },
        },
    );
    check_exact(
        &[0x01, 0x01],
        &SubmitMessageResponse {
            protocol: Protocol::Mls10,
            result: SubmitResult::NotAllowed,
        },
    );
    check_exact(
        &cat(&[&[0x01, 0x02], &u64be(9)]),
        &SubmitMessageResponse {
            protocol: Protocol::Mls10,
            result: SubmitResult::EpochTooOld { current_epoch: 9 },
        },
    );
    // Unknown status code, reserved protocol.
    assert_eq!(
        SubmitMessageResponse::decode(&[0x01, 0x03]),
        Err(WireError::UnknownCodePoint(3))
    );
    assert_eq!(
        SubmitMessageResponse::decode(&[0x00, 0x01]),
        Err(WireError::UnknownCodePoint(0))
    );
}

#[test]
fn update_request_commit_and_proposal_bundles() {
    let commit = cat(&[
        &public_commit(),
        &[0x01],
        &welcome(),
        &[0x01],
        &group_info(),
        &ratchet_tree_option_full(),
    ]);
    let expected = UpdateRequest {
        bundle: HandshakeBundle::Commit(CommitBundle {
            commit: msg(public_commit()),
            welcome: Some(Welcome::from_bytes(welcome()).expect("welcome")),
            group_info: GroupInfoOption::Full(GroupInfo::from_bytes(group_info()).expect("gi")),
            ratchet_tree: RatchetTreeOption::Full(
                RatchetTree::from_bytes(v(&[0x00])).expect("tree"),
            ),
        }),
    };
    check_exact(&commit, &expected);

    // No Welcome, partial GroupInfo, tree rebuilt by the hub.
    let partial = cat(&[
        &public_commit(),
        &[0x00],
        &[0x02, 0x01],
        &v(&cat(&[&[0x00, 0x04], &v(&[0xE0; 33])])),
        &v(&[0x51; 64]),
        &[0x04],
    ]);
    check_exact(
        &partial,
        &UpdateRequest {
            bundle: HandshakeBundle::Commit(CommitBundle {
                commit: msg(public_commit()),
                welcome: None,
                group_info: GroupInfoOption::Partial(PartialGroupInfo {
                    ratchet_tree_presence: RatchetTreePresence::Present,
                    group_info_extensions: vec![Extension {
                        extension_type: 4,
                        extension_data: VLBytes::new(vec![0xE0; 33]),
                    }],
                    signature: VLBytes::new(vec![0x51; 64]),
                }),
                ratchet_tree: RatchetTreeOption::DistributionService,
            }),
        },
    );

    let second = public_remove_proposal(3);
    let proposals = cat(&[&public_remove_proposal(2), &v(&second)]);
    check_exact(
        &proposals,
        &UpdateRequest {
            bundle: HandshakeBundle::Proposals(ProposalBundle {
                proposal: msg(public_remove_proposal(2)),
                more_proposals: vec![msg(second.clone())],
            }),
        },
    );
    // An application message is neither; a commit in moreProposals is refused.
    assert!(UpdateRequest::decode(&cat(&[&private_application(1), &v(&[])])).is_err());
    let commit_in_more = cat(&[&public_remove_proposal(2), &v(&public_commit())]);
    assert!(matches!(
        UpdateRequest::decode(&commit_in_more),
        Err(WireError::Malformed(_))
    ));
    // Our encoder refuses a bundle whose message does not fit.
    let bad = UpdateRequest {
        bundle: HandshakeBundle::Proposals(ProposalBundle {
            proposal: msg(public_commit()),
            more_proposals: vec![],
        }),
    };
    assert!(matches!(bad.encode(), Err(WireError::Encode(_))));
}

#[test]
fn update_room_responses() {
    check_exact(
        &cat(&[&[0x00], &v(&[]), &u64be(1_700_000_000_000)]),
        &UpdateRoomResponse {
            error_description: String::new(),
            result: UpdateResult::Success {
                accepted_timestamp: 1_700_000_000_000,
            },
        },
    );
    check_exact(
        &cat(&[&[0x01], &v(b"old"), &u64be(12)]),
        &UpdateRoomResponse {
            error_description: "old".into(),
            result: UpdateResult::WrongEpoch { current_epoch: 12 },
        },
    );
    check_exact(
        &cat(&[&[0x02], &v("interdit é".as_bytes())]),
        &UpdateRoomResponse {
            error_description: "interdit é".into(),
            result: UpdateResult::NotAllowed,
        },
    );
    check_exact(
        &cat(&[&[0x03], &v(&[]), &v(&cat(&[&v(&[1; 32]), &v(&[2; 32])]))]),
        &UpdateRoomResponse {
            error_description: String::new(),
            result: UpdateResult::InvalidProposal {
                invalid_proposals: vec![
                    ProposalRef(VLBytes::new(vec![1; 32])),
                    ProposalRef(VLBytes::new(vec![2; 32])),
                ],
            },
        },
    );
    assert_eq!(
        UpdateRoomResponse::decode(&cat(&[&[0x04], &v(&[])])),
        Err(WireError::UnknownCodePoint(4))
    );
}

#[test]
fn notify_bodies_concatenate_fanout_messages() {
    let app = private_application(5);
    let commit = public_commit();
    let proposal = public_remove_proposal(1);
    let bytes = cat(&[
        &u64be(100),
        &app,
        &[0x00],
        &u64be(101),
        &welcome_message(),
        &ratchet_tree_option_full(),
        &u64be(102),
        &proposal,
        &v(&public_remove_proposal(4)),
        &u64be(103),
        &commit,
        &v(&[]),
    ]);
    let expected = NotifyBody {
        messages: vec![
            FanoutMessage {
                timestamp: 100,
                payload: FanoutPayload::Application {
                    message: msg(app.clone()),
                    frank: None,
                },
            },
            FanoutMessage {
                timestamp: 101,
                payload: FanoutPayload::Welcome {
                    welcome: msg(welcome_message()),
                    ratchet_tree: RatchetTreeOption::Full(
                        RatchetTree::from_bytes(v(&[0x00])).expect("tree"),
                    ),
                },
            },
            FanoutMessage {
                timestamp: 102,
                payload: FanoutPayload::Proposal {
                    proposal: msg(proposal.clone()),
                    more_proposals: vec![msg(public_remove_proposal(4))],
                },
            },
            FanoutMessage {
                timestamp: 103,
                payload: FanoutPayload::Commit {
                    commit: msg(commit.clone()),
                    external_proposals: vec![],
                },
            },
        ],
    };
    let decoded = NotifyBody::decode(&bytes).expect("decode");
    assert_eq!(decoded, expected);
    assert_eq!(expected.encode().expect("encode"), bytes);
    let mut boundaries = Vec::new();
    let mut at = 0;
    for message in &expected.messages[..3] {
        at += NotifyBody {
            messages: vec![message.clone()],
        }
        .encode()
        .expect("encode one")
        .len();
        boundaries.push(at);
    }
    assert_eq!(
        NotifyBody::decode(&bytes[..boundaries[1]])
            .expect("two")
            .messages
            .len(),
        2
    );
    check_malformed::<NotifyBody>(&bytes, &boundaries);
    assert!(NotifyBody::decode(&[]).is_err(), "an empty body");
    assert!(NotifyBody { messages: vec![] }.encode().is_err());
    // A GroupInfo message cannot be fanned out.
    let gi = cat(&[&u64be(1), &[0x00, 0x01, 0x00, 0x04], &group_info()]);
    assert!(matches!(
        NotifyBody::decode(&gi),
        Err(WireError::Malformed(_))
    ));
}

#[test]
fn key_material_request_and_response() {
    let request = cat(&[
        &[0x01],
        &v(b"mimi://a.example/u/alice"),
        &v(BOB.as_bytes()),
        &v(ROOM.as_bytes()),
        &v(&[0x00, 0x01, 0x00, 0x03]),
        &v(&[0x00, 0x06]),
        &v(&[0x00, 0x08]),
        &v(&[0x00, 0x01]),
        &v(&[0x0A; 32]),
        &[0x00, 0x01],
        &v(b"mimi://a.example/d/alice/1"),
        &v(&[0x5A; 64]),
    ]);
    let expected = KeyMaterialRequest {
        protocol: Protocol::Mls10,
        requesting_user: "mimi://a.example/u/alice".into(),
        target_user: BOB.into(),
        room_id: ROOM.into(),
        acceptable_ciphersuites: vec![CipherSuite(1), CipherSuite(3)],
        required_capabilities: RequiredCapabilities {
            extension_types: vec![6],
            proposal_types: vec![8],
            credential_types: vec![1],
        },
        requester_signature_key: SignaturePublicKey(VLBytes::new(vec![0x0A; 32])),
        requester_credential: Credential::basic(b"mimi://a.example/d/alice/1".to_vec()),
        key_material_request_signature: VLBytes::new(vec![0x5A; 64]),
    };
    check_exact(&request, &expected);
    let tbs = expected.to_be_signed().expect("tbs");
    assert_eq!(tbs, request[..request.len() - 66]);

    let kp = key_package("mimi://b.example/d/bob/1");
    let clients = cat(&[
        &[0x00],
        &v(b"mimi://b.example/d/bob/1"),
        &kp,
        &[0x01],
        &v(b"mimi://b.example/d/bob/2"),
        &[0x02],
        &v(b"mimi://b.example/d/bob/3"),
        &[0x00],
    ]);
    let response = cat(&[&[0x01, 0x01], &v(BOB.as_bytes()), &v(&clients)]);
    check_exact(
        &response,
        &KeyMaterialResponse {
            protocol: Protocol::Mls10,
            user_status: KeyMaterialUserCode::PartialSuccess,
            user_uri: BOB.into(),
            clients: vec![
                ClientKeyMaterial {
                    client_uri: "mimi://b.example/d/bob/1".into(),
                    result: ClientKeyMaterialResult::Success(
                        KeyPackage::from_bytes(kp.clone()).expect("kp"),
                    ),
                },
                ClientKeyMaterial {
                    client_uri: "mimi://b.example/d/bob/2".into(),
                    result: ClientKeyMaterialResult::KeyMaterialExhausted,
                },
                ClientKeyMaterial {
                    client_uri: "mimi://b.example/d/bob/3".into(),
                    result: ClientKeyMaterialResult::NothingCompatible(None),
                },
            ],
        },
    );
    // userDeleted with no clients; an unknown user code.
    let deleted = cat(&[&[0x01, 0x07], &v(BOB.as_bytes()), &v(&[])]);
    assert_eq!(
        KeyMaterialResponse::decode(&deleted)
            .expect("decode")
            .user_status,
        KeyMaterialUserCode::UserDeleted
    );
    let unknown = cat(&[&[0x01, 0x08], &v(BOB.as_bytes()), &v(&[])]);
    assert_eq!(
        KeyMaterialResponse::decode(&unknown),
        Err(WireError::UnknownCodePoint(8))
    );
}

#[test]
fn group_info_request_and_responses() {
    let request = cat(&[
        &[0x01],
        &[0x00, 0x01],
        &v(&[0x0A; 32]),
        &[0x00, 0x01],
        &v(b"mimi://c.example/d/cathy/2"),
        &v(&[0x0B; 32]),
        &v(b"JOIN-1234"),
        &v(&[0x5A; 64]),
    ]);
    let expected = GroupInfoRequest {
        protocol: Protocol::Mls10,
        cipher_suite: CipherSuite(1),
        requesting_signature_key: SignaturePublicKey(VLBytes::new(vec![0x0A; 32])),
        requesting_credential: Credential::basic(b"mimi://c.example/d/cathy/2".to_vec()),
        group_info_public_key: HpkePublicKey(VLBytes::new(vec![0x0B; 32])),
        joining_code: VLBytes::new(b"JOIN-1234".to_vec()),
        signature: VLBytes::new(vec![0x5A; 64]),
    };
    check_exact(&request, &expected);
    assert_eq!(
        expected.to_be_signed().expect("tbs"),
        request[..request.len() - 66]
    );

    let success = cat(&[
        &[0x01],
        &v(ROOM.as_bytes()),
        &[0x01],
        &[0x00, 0x01],
        &v(&[0x0C; 32]),
        &[0x00, 0x01],
        &v(b"a.example"),
        &v(&[0x0D; 32]),
        &v(&[0x0E; 200]),
        &v(&[0x5A; 64]),
    ]);
    let response = GroupInfoResponse {
        protocol: Protocol::Mls10,
        room_id: ROOM.into(),
        result: GroupInfoResult::Success {
            cipher_suite: CipherSuite(1),
            hub_sender: ExternalSender {
                signature_key: SignaturePublicKey(VLBytes::new(vec![0x0C; 32])),
                credential: Credential::basic(b"a.example".to_vec()),
            },
            encrypted_groupinfo_and_tree: HpkeCiphertext {
                kem_output: VLBytes::new(vec![0x0D; 32]),
                ciphertext: VLBytes::new(vec![0x0E; 200]),
            },
            signature: VLBytes::new(vec![0x5A; 64]),
        },
    };
    check_exact(&success, &response);
    assert_eq!(
        response.to_be_signed().expect("tbs"),
        Some(success[..success.len() - 66].to_vec())
    );
    check_exact(
        &cat(&[&[0x01], &v(ROOM.as_bytes()), &[0x03]]),
        &GroupInfoResponse {
            protocol: Protocol::Mls10,
            room_id: ROOM.into(),
            result: GroupInfoResult::NoSuchRoom,
        },
    );
    // success is 1 here: 0 is reserved.
    assert_eq!(
        GroupInfoResponse::decode(&cat(&[&[0x01], &v(ROOM.as_bytes()), &[0x00]])),
        Err(WireError::UnknownCodePoint(0))
    );

    let tbe = cat(&[
        &group_info(),
        &[0x04],
        &v(&cat(&[&public_remove_proposal(2), &u64be(77)])),
    ]);
    check_exact(
        &tbe,
        &GroupInfoRatchetTreeTbe {
            group_info: GroupInfo::from_bytes(group_info()).expect("gi"),
            ratchet_tree: RatchetTreeOption::DistributionService,
            pending_proposals: vec![PendingProposal {
                proposal: msg(public_remove_proposal(2)),
                hub_accepted_time: 77,
            }],
        },
    );
}

#[test]
fn length_and_limit_errors() {
    // A vector claiming 4096 bytes with 3 present.
    let claims_more = cat(&[&[0x01, 0x50, 0x00], b"abc"]);
    assert_eq!(
        SubmitMessageResponse::decode(&claims_more),
        Err(WireError::UnknownCodePoint(0x50))
    );
    let uri_claims_more = cat(&[&[0x01], &private_application(1), &[0x50, 0x00], b"abc"]);
    assert_eq!(
        SubmitMessageRequest::decode(&uri_claims_more),
        Err(WireError::Truncated)
    );
    // A non-minimal length (2-byte form for 3).
    let non_minimal = cat(&[&[0x01], &private_application(1), &[0x40, 0x03], b"abc"]);
    assert_eq!(
        SubmitMessageRequest::decode(&non_minimal),
        Err(WireError::InvalidLength)
    );
    // Invalid UTF-8 in a URI.
    let not_utf8 = cat(&[&[0x01], &private_application(1), &v(&[0xff, 0xfe])]);
    assert!(matches!(
        SubmitMessageRequest::decode(&not_utf8),
        Err(WireError::Malformed(_))
    ));
    // Over the body limit, before any parsing.
    let huge = vec![0u8; KeyMaterialRequest::MAX_LEN + 1];
    assert!(matches!(
        KeyMaterialRequest::decode(&huge),
        Err(WireError::TooLarge { .. })
    ));
    let huge_notify = vec![0u8; NotifyBody::MAX_LEN + 1];
    assert!(matches!(
        NotifyBody::decode(&huge_notify),
        Err(WireError::TooLarge { .. })
    ));
    // Trailing bytes.
    assert_eq!(
        SubmitMessageResponse::decode(&[0x01, 0x01, 0x00, 0x00]),
        Err(WireError::TrailingBytes(2))
    );
}
