//! Two providers over mutual TLS on loopback: a.example's client calls b.example's server for
//! every endpoint; wrong or missing client certificates, bad bodies and notify retries.

mod fixtures;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bridge_mimi::transport::client::{ClientOptions, Peer};
use bridge_mimi::transport::tls::{client_config, roots_from_pem, server_config};
use bridge_mimi::transport::*;
use bridge_mimi::wire::*;
use fixtures::*;
use parking_lot::Mutex;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair,
};
use tls_codec::VLBytes;

struct Pki {
    ca_pem: String,
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Pki {
    fn new() -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "MIMI test CA");
        let issuer =
            CertifiedIssuer::self_signed(params, KeyPair::generate().expect("key")).expect("CA");
        Self {
            ca_pem: issuer.pem(),
            issuer,
        }
    }

    /// A certificate for `domain`, for both server and client authentication.
    fn identity(&self, domain: &str) -> TlsIdentity {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(vec![domain.to_owned()]).expect("params");
        params.distinguished_name.push(DnType::CommonName, domain);
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let certificate = params.signed_by(&key, &self.issuer).expect("sign");
        TlsIdentity::from_pem(certificate.pem().as_bytes(), key.serialize_pem().as_bytes())
            .expect("identity")
    }

    fn roots(&self) -> rustls::RootCertStore {
        roots_from_pem(self.ca_pem.as_bytes()).expect("roots")
    }
}

#[derive(Default)]
struct TestProvider {
    calls: Mutex<Vec<String>>,
    notifies: AtomicUsize,
    flaky_failures: AtomicUsize,
    /// Notifies for a room ending in `/slow` set `entered`, then wait for `slow`.
    slow: tokio::sync::Notify,
    entered: std::sync::atomic::AtomicBool,
}

impl TestProvider {
    fn log(&self, entry: String) {
        self.calls.lock().push(entry);
    }
}

#[async_trait]
impl Provider for TestProvider {
    async fn key_material(
        &self,
        peer: &PeerDomain,
        target_user: IdentifierUri,
        request: KeyMaterialRequest,
    ) -> Result<KeyMaterialResponse, ProviderError> {
        self.log(format!(
            "keyMaterial {peer} {target_user} {}",
            request.room_id
        ));
        Ok(KeyMaterialResponse {
            protocol: Protocol::Mls10,
            user_status: KeyMaterialUserCode::Success,
            user_uri: target_user,
            clients: vec![ClientKeyMaterial {
                client_uri: "mimi://b.example/d/bob/1".into(),
                result: ClientKeyMaterialResult::Success(
                    KeyPackage::from_bytes(key_package("mimi://b.example/d/bob/1")).expect("kp"),
                ),
            }],
        })
    }

    async fn update(
        &self,
        peer: &PeerDomain,
        room: IdentifierUri,
        _request: UpdateRequest,
    ) -> Result<UpdateRoomResponse, ProviderError> {
        self.log(format!("update {peer} {room}"));
        if room.as_str().ends_with("/busy") {
            return Err(ProviderError::Unavailable {
                reason: "store busy".into(),
                retry_after: Some(Duration::from_secs(7)),
            });
        }
        Ok(UpdateRoomResponse {
            error_description: String::new(),
            result: UpdateResult::WrongEpoch { current_epoch: 8 },
        })
    }

    async fn submit_message(
        &self,
        peer: &PeerDomain,
        room: IdentifierUri,
        request: SubmitMessageRequest,
    ) -> Result<SubmitMessageResponse, ProviderError> {
        self.log(format!(
            "submitMessage {peer} {room} {}",
            request.sending_uri
        ));
        Ok(SubmitMessageResponse {
            protocol: Protocol::Mls10,
            result: SubmitResult::Accepted {
                accepted_timestamp: 1234,
                frank: None,
            },
        })
    }

    async fn notify(
        &self,
        peer: &PeerDomain,
        room: IdentifierUri,
        body: NotifyBody,
    ) -> Result<(), ProviderError> {
        if room.as_str().ends_with("/flaky")
            && self.flaky_failures.fetch_add(1, Ordering::SeqCst) < 2
        {
            return Err(ProviderError::Unavailable {
                reason: "try later".into(),
                retry_after: None,
            });
        }
        if room.as_str().ends_with("/slow") {
            self.entered.store(true, Ordering::SeqCst);
            self.slow.notified().await;
        }
        self.notifies.fetch_add(1, Ordering::SeqCst);
        self.log(format!("notify {peer} {room} {}", body.messages.len()));
        Ok(())
    }

    async fn group_info(
        &self,
        peer: &PeerDomain,
        room: IdentifierUri,
        _request: GroupInfoRequest,
    ) -> Result<GroupInfoResponse, ProviderError> {
        self.log(format!("groupInfo {peer} {room}"));
        Ok(GroupInfoResponse {
            protocol: Protocol::Mls10,
            room_id: room,
            result: GroupInfoResult::NoSuchRoom,
        })
    }
}

struct Setup {
    pki: Pki,
    provider: Arc<TestProvider>,
    address: SocketAddr,
    origin: String,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn start_b() -> Setup {
    let pki = Pki::new();
    let provider = Arc::new(TestProvider::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    let origin = format!("https://b.example:{}", address.port());
    let tls = server_config(pki.identity("b.example"), pki.roots()).expect("server TLS");
    let app = router(
        provider.clone(),
        ServerOptions::new("b.example", origin.clone()),
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(serve(listener, tls, app, async {
        let _ = stopped.await;
    }));
    Setup {
        pki,
        provider,
        address,
        origin,
        _stop: stop,
    }
}

fn client(setup: &Setup, speaks_for: &str, certificate: Option<&str>) -> MimiClient {
    let identity = certificate.map(|domain| setup.pki.identity(domain));
    MimiClient::new(ClientOptions {
        local_domain: speaks_for.into(),
        tls: client_config(identity, setup.pki.roots()).expect("client TLS"),
        timeout: Duration::from_secs(10),
        resolve: vec![("b.example".into(), setup.address)],
    })
    .expect("client")
}

fn key_material_request() -> KeyMaterialRequest {
    KeyMaterialRequest {
        protocol: Protocol::Mls10,
        requesting_user: "mimi://a.example/u/alice".into(),
        target_user: "mimi://b.example/u/bob".into(),
        room_id: "mimi://a.example/r/clubhouse".into(),
        acceptable_ciphersuites: vec![CipherSuite(1)],
        required_capabilities: RequiredCapabilities::default(),
        requester_signature_key: SignaturePublicKey(VLBytes::new(vec![1; 32])),
        requester_credential: Credential::basic(b"mimi://a.example/d/alice/1".to_vec()),
        key_material_request_signature: VLBytes::new(vec![2; 64]),
    }
}

fn notify_body(timestamp: u64) -> NotifyBody {
    NotifyBody {
        messages: vec![FanoutMessage {
            timestamp,
            payload: FanoutPayload::Application {
                message: MlsMessage::from_bytes(private_application(3)).expect("message"),
                frank: None,
            },
        }],
    }
}

#[tokio::test]
async fn every_endpoint_over_mutual_tls() {
    let setup = start_b().await;
    let a = client(&setup, "a.example", Some("a.example"));
    let peer = a
        .fetch_directory("b.example", &setup.origin)
        .await
        .expect("directory");
    assert_eq!(
        peer.directory,
        bridge_mimi::wire::directory::Directory::for_origin(&setup.origin)
    );

    let bob: IdentifierUri = "mimi://b.example/u/bob".into();
    let keys = a
        .key_material(&peer, &bob, &key_material_request())
        .await
        .expect("keyMaterial");
    assert_eq!(keys.user_status, KeyMaterialUserCode::Success);
    assert_eq!(keys.clients.len(), 1);

    let room: IdentifierUri = "mimi://b.example/r/lobby".into();
    let update = UpdateRequest {
        bundle: HandshakeBundle::Proposals(ProposalBundle {
            proposal: MlsMessage::from_bytes(public_remove_proposal(1)).expect("proposal"),
            more_proposals: vec![],
        }),
    };
    let answer = a.update(&peer, &room, &update).await.expect("update");
    assert_eq!(answer.result, UpdateResult::WrongEpoch { current_epoch: 8 });

    let submit = SubmitMessageRequest {
        protocol: Protocol::Mls10,
        app_message: MlsMessage::from_bytes(private_application(3)).expect("message"),
        sending_uri: "mimi://a.example/u/alice".into(),
    };
    let answer = a
        .submit_message(&peer, &room, &submit)
        .await
        .expect("submit");
    assert!(matches!(
        answer.result,
        SubmitResult::Accepted {
            accepted_timestamp: 1234,
            ..
        }
    ));

    let request = GroupInfoRequest {
        protocol: Protocol::Mls10,
        cipher_suite: CipherSuite(1),
        requesting_signature_key: SignaturePublicKey(VLBytes::new(vec![1; 32])),
        requesting_credential: Credential::basic(b"mimi://a.example/d/alice/2".to_vec()),
        group_info_public_key: HpkePublicKey(VLBytes::new(vec![3; 32])),
        joining_code: VLBytes::new(vec![]),
        signature: VLBytes::new(vec![2; 64]),
    };
    let answer = a
        .group_info(&peer, &room, &request)
        .await
        .expect("groupInfo");
    assert_eq!(answer.result, GroupInfoResult::NoSuchRoom);

    // a.example is the hub of its own rooms: it may notify b about them.
    let hub_room: IdentifierUri = "mimi://a.example/r/clubhouse".into();
    a.notify(&peer, &hub_room, &notify_body(1))
        .await
        .expect("notify");

    // No proxyDownload in the test provider: 501.
    match a.proxy_download(&peer, "https://c.example/asset/1").await {
        Err(ClientError::Status { status: 501, .. }) => {}
        other => panic!("expected 501, got {other:?}"),
    }

    assert_eq!(
        *setup.provider.calls.lock(),
        vec![
            "keyMaterial a.example mimi://b.example/u/bob mimi://a.example/r/clubhouse".to_owned(),
            "update a.example mimi://b.example/r/lobby".to_owned(),
            "submitMessage a.example mimi://b.example/r/lobby mimi://a.example/u/alice".to_owned(),
            "groupInfo a.example mimi://b.example/r/lobby".to_owned(),
            "notify a.example mimi://a.example/r/clubhouse 1".to_owned(),
        ]
    );
}

#[tokio::test]
async fn notify_retries_are_deduplicated_and_only_the_hub_may_notify() {
    let setup = start_b().await;
    let a = client(&setup, "a.example", Some("a.example"));
    let peer = a
        .fetch_directory("b.example", &setup.origin)
        .await
        .expect("directory");
    let room: IdentifierUri = "mimi://a.example/r/clubhouse".into();

    a.notify(&peer, &room, &notify_body(1))
        .await
        .expect("first");
    a.notify(&peer, &room, &notify_body(1))
        .await
        .expect("byte-identical retry: 201");
    assert_eq!(
        setup.provider.notifies.load(Ordering::SeqCst),
        1,
        "the retry reached the provider"
    );
    a.notify(&peer, &room, &notify_body(2))
        .await
        .expect("another body");
    assert_eq!(setup.provider.notifies.load(Ordering::SeqCst), 2);

    // A room whose hub is c.example.
    match a
        .notify(&peer, &"mimi://c.example/r/x".into(), &notify_body(1))
        .await
    {
        Err(ClientError::Status {
            status: 403,
            reason,
            ..
        }) => {
            assert!(reason.contains("not the hub"), "{reason}");
        }
        other => panic!("expected 403, got {other:?}"),
    }

    // The provider fails twice (503 without Retry-After): the retry helper gets through.
    let policy = RetryPolicy {
        attempts: 5,
        min_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(50),
    };
    a.notify_with_retry(
        &peer,
        &"mimi://a.example/r/flaky".into(),
        &notify_body(3),
        &policy,
    )
    .await
    .expect("third try");
    assert_eq!(setup.provider.flaky_failures.load(Ordering::SeqCst), 3);
    assert_eq!(setup.provider.notifies.load(Ordering::SeqCst), 3);

    // Retry-After longer than the policy allows: given back to the caller at once.
    match a
        .update(
            &peer,
            &"mimi://b.example/r/busy".into(),
            &UpdateRequest {
                bundle: HandshakeBundle::Proposals(ProposalBundle {
                    proposal: MlsMessage::from_bytes(public_remove_proposal(1)).expect("proposal"),
                    more_proposals: vec![],
                }),
            },
        )
        .await
    {
        Err(error @ ClientError::Status { status: 503, .. }) => {
            assert_eq!(error.retry_after(), Some(Duration::from_secs(7)));
            assert!(error.is_retryable());
        }
        other => panic!("expected 503, got {other:?}"),
    }
}

#[tokio::test]
async fn an_identical_notify_during_processing_is_told_to_retry() {
    let setup = start_b().await;
    let a = client(&setup, "a.example", Some("a.example"));
    let peer = a
        .fetch_directory("b.example", &setup.origin)
        .await
        .expect("directory");
    let room: IdentifierUri = "mimi://a.example/r/slow".into();
    let first = {
        let (a, peer, room) = (a.clone(), peer.clone(), room.clone());
        tokio::spawn(async move { a.notify(&peer, &room, &notify_body(1)).await })
    };
    // Wait until the first is inside the provider.
    for _ in 0..500 {
        if setup.provider.entered.load(Ordering::SeqCst) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        setup.provider.entered.load(Ordering::SeqCst),
        "the first notify never arrived"
    );
    match a.notify(&peer, &room, &notify_body(1)).await {
        Err(error @ ClientError::Status { status: 503, .. }) => {
            assert_eq!(error.retry_after(), Some(Duration::from_secs(1)));
        }
        other => panic!("expected 503 while the first is processed, got {other:?}"),
    }
    setup.provider.slow.notify_one();
    first.await.expect("join").expect("the first notify");
    a.notify(&peer, &room, &notify_body(1))
        .await
        .expect("a retry after processing: 201");
    assert_eq!(setup.provider.notifies.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_certificate_from_another_ca_fails_the_handshake() {
    let setup = start_b().await;
    let stranger = Pki::new();
    let client = MimiClient::new(ClientOptions {
        local_domain: "a.example".into(),
        tls: client_config(Some(stranger.identity("a.example")), setup.pki.roots())
            .expect("client TLS"),
        timeout: Duration::from_secs(10),
        resolve: vec![("b.example".into(), setup.address)],
    })
    .expect("client");
    match client.fetch_directory("b.example", &setup.origin).await {
        Err(ClientError::Transport(reason)) => {
            // Same CA name, other key: the server's verifier fails the signature check.
            assert!(reason.contains("received fatal alert"), "{reason}");
        }
        other => panic!("expected a handshake failure, got {other:?}"),
    }
    assert!(setup.provider.calls.lock().is_empty());
}

#[tokio::test]
async fn a_certificate_for_another_domain_is_forbidden() {
    let setup = start_b().await;
    // c.example's certificate, claiming to speak for a.example.
    let impostor = client(&setup, "a.example", Some("c.example"));
    match impostor.fetch_directory("b.example", &setup.origin).await {
        Err(ClientError::Status {
            status: 403,
            reason,
            ..
        }) => {
            assert!(
                reason.contains("does not authenticate a.example"),
                "{reason}"
            );
        }
        other => panic!("expected 403, got {other:?}"),
    }
    let peer = Peer {
        domain: "b.example".into(),
        directory: bridge_mimi::wire::directory::Directory::for_origin(&setup.origin),
    };
    match impostor
        .key_material(
            &peer,
            &"mimi://b.example/u/bob".into(),
            &key_material_request(),
        )
        .await
    {
        Err(ClientError::Status { status: 403, .. }) => {}
        other => panic!("expected 403, got {other:?}"),
    }
    assert!(setup.provider.calls.lock().is_empty());
}

#[tokio::test]
async fn a_server_certificate_must_name_the_target_provider() {
    let setup = start_b().await;
    // A server holding c.example's certificate, listed in a directory as b.example's.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    let origin = format!("https://c.example:{}", address.port());
    let tls = server_config(setup.pki.identity("c.example"), setup.pki.roots()).expect("TLS");
    let app = router(
        setup.provider.clone(),
        ServerOptions::new("b.example", origin.clone()),
    );
    tokio::spawn(serve(listener, tls, app, std::future::pending()));
    let a = MimiClient::new(ClientOptions {
        local_domain: "a.example".into(),
        tls: client_config(Some(setup.pki.identity("a.example")), setup.pki.roots())
            .expect("client TLS"),
        timeout: Duration::from_secs(10),
        resolve: vec![("c.example".into(), address)],
    })
    .expect("client");
    let peer = Peer {
        domain: "b.example".into(),
        directory: bridge_mimi::wire::directory::Directory::for_origin(&origin),
    };
    match a
        .key_material(
            &peer,
            &"mimi://b.example/u/bob".into(),
            &key_material_request(),
        )
        .await
    {
        Err(error @ ClientError::ServerIdentity(_)) => {
            assert!(!error.is_retryable());
            assert!(
                error.to_string().contains("the server is not b.example"),
                "{error}"
            );
        }
        other => panic!("expected a refusal of the server, got {other:?}"),
    }
}

#[tokio::test]
async fn a_client_without_certificate_is_refused_in_the_handshake() {
    let setup = start_b().await;
    let anonymous = client(&setup, "a.example", None);
    match anonymous.fetch_directory("b.example", &setup.origin).await {
        Err(error @ ClientError::Transport(_)) => {
            assert!(error.to_string().contains("CertificateRequired"), "{error}");
            assert!(error.is_retryable());
        }
        other => panic!("expected a transport error, got {other:?}"),
    }
    assert!(setup.provider.calls.lock().is_empty());
}

#[tokio::test]
async fn oversize_undecodable_and_misdirected_requests() {
    let setup = start_b().await;
    let tls = client_config(Some(setup.pki.identity("a.example")), setup.pki.roots())
        .expect("client TLS");
    // A connection per request: the server closes the one it answers 413 on without reading
    // the rest of the body, and reusing it from the pool would fail the next request.
    let raw = reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .resolve("b.example", setup.address)
        .pool_max_idle_per_host(0)
        .build()
        .expect("client");
    let url = format!(
        "{}/keyMaterial/mimi%3A%2F%2Fb.example%2Fu%2Fbob",
        setup.origin
    );
    let post = |body: Vec<u8>, host: &'static str| {
        raw.post(&url)
            .header("From", "mimi@a.example")
            .header("Host", host)
            .body(body)
            .send()
    };

    let too_big = post(vec![0; KeyMaterialRequest::MAX_LEN + 1], "b.example")
        .await
        .expect("answer");
    assert_eq!(too_big.status().as_u16(), 413);

    let garbage = post(vec![0x01, 0x02, 0x03], "b.example")
        .await
        .expect("answer");
    assert_eq!(garbage.status().as_u16(), 400);
    let reason = garbage.text().await.expect("text");
    assert!(reason.starts_with("undecodable body"), "{reason}");

    let elsewhere = post(
        key_material_request().encode().expect("encode"),
        "z.example",
    )
    .await
    .expect("answer");
    assert_eq!(elsewhere.status().as_u16(), 421);

    let other_user = raw
        .post(format!(
            "{}/keyMaterial/mimi%3A%2F%2Fb.example%2Fu%2Fcarol",
            setup.origin
        ))
        .header("From", "mimi@a.example")
        .body(key_material_request().encode().expect("encode"))
        .send()
        .await
        .expect("answer");
    assert_eq!(
        other_user.status().as_u16(),
        400,
        "path and body name different users"
    );

    let no_from = raw.post(&url).body(vec![1]).send().await.expect("answer");
    assert_eq!(no_from.status().as_u16(), 400);

    // The draft examples' path form (no scheme, slashes kept) reaches the same handler.
    let draft_form = raw
        .post(format!("{}/keyMaterial/b.example/u/bob", setup.origin))
        .header("From", "mimi@a.example")
        .body(key_material_request().encode().expect("encode"))
        .send()
        .await
        .expect("answer");
    assert_eq!(draft_form.status().as_u16(), 200);
    assert_eq!(
        setup.provider.calls.lock().last().map(String::as_str),
        Some("keyMaterial a.example mimi://b.example/u/bob mimi://a.example/r/clubhouse")
    );
}
