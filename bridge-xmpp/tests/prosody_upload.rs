//! XEP-0363 HTTP upload through a component connection against a real Prosody (its
//! `http_file_share` component `upload.localhost`), started by `scripts/test.sh`.

use bridge_xmpp::component::{self, ComponentConnection};
use bridge_xmpp::upload::{self, Http, UploadError, UploadService};
use bytes::Bytes;
use tokio::net::TcpStream;
use xmpp_parsers::minidom::Element;

mod common;
use common::*;

const SERVER: &str = "localhost";
const PUPPET: &str = "up@bridge.localhost/x";
/// `http_file_share_size_limit` in tests/servers/prosody.cfg.lua.
const LIMIT: u64 = 10 * 1024 * 1024;

/// Prosody accepts one connection per component domain: a second one is closed with a
/// `conflict` stream error right after its handshake (`component_conflict_resolve =
/// "kick_new"`). The tests of this file run in parallel threads, so they take turns.
static ONE_COMPONENT: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Sends an iq and returns the answer with the same id (other stanzas are skipped).
async fn ask(conn: &mut ComponentConnection<TcpStream>, iq: Element) -> Element {
    let id = iq.attr("id").expect("iq id").to_owned();
    conn.send(iq).await.expect("iq sent");
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let element = tokio::time::timeout_at(deadline, conn.next_element())
            .await
            .unwrap_or_else(|_| panic!("no answer to iq {id} within {WAIT:?}"))
            .expect("stream stays up");
        if element.name() == "iq" && element.attr("id") == Some(id.as_str()) {
            return element;
        }
    }
}

/// disco#items on the server, then disco#info on each item until one is an upload service.
async fn find_upload_service(conn: &mut ComponentConnection<TcpStream>) -> UploadService {
    let items = ask(conn, upload::disco_items_query(PUPPET, SERVER, "items")).await;
    let jids = upload::parse_disco_items(&items);
    assert!(
        jids.iter().any(|j| j == "upload.localhost"),
        "disco#items of {SERVER}: {jids:?}"
    );
    for (n, jid) in jids.iter().enumerate() {
        let info = ask(
            conn,
            upload::disco_info_query(PUPPET, jid, &format!("info{n}")),
        )
        .await;
        if let Some(service) = upload::parse_upload_service(&info) {
            return service;
        }
    }
    panic!("no upload service among {jids:?}");
}

#[tokio::test]
async fn a_puppet_uploads_a_file_and_it_downloads_identical() {
    let _turn = ONE_COMPONENT.lock().await;
    let mut conn = component::connect(component_addr(), DOMAIN, SECRET)
        .await
        .expect("the component handshake succeeds");
    let service = find_upload_service(&mut conn).await;
    assert_eq!(
        service,
        UploadService {
            jid: "upload.localhost".into(),
            max_file_size: Some(LIMIT),
        }
    );

    let data: Vec<u8> = (0..100 * 1024u32)
        .map(|i| u8::try_from(i.wrapping_mul(31) % 251).expect("below 256"))
        .collect();
    let size = u64::try_from(data.len()).expect("fits");
    let answer = ask(
        &mut conn,
        upload::slot_request(
            PUPPET,
            &service.jid,
            "slot1",
            "bridged photo.bin",
            size,
            Some("application/octet-stream"),
        ),
    )
    .await;
    let slot = upload::parse_slot(&answer).expect("a slot");
    assert!(
        slot.put_url.starts_with("http://127.0.0.1:"),
        "{}",
        slot.put_url
    );
    assert!(
        slot.get_url.ends_with("/bridged%20photo.bin"),
        "{}",
        slot.get_url
    );
    assert!(
        slot.put_headers
            .iter()
            .any(|(name, value)| name == "Authorization" && value.starts_with("Bearer ")),
        "{:?}",
        slot.put_headers
    );

    let http = Http::new().expect("HTTP client");
    http.put(
        &slot,
        Bytes::from(data.clone()),
        Some("application/octet-stream"),
    )
    .await
    .expect("PUT accepted");

    let fetched = http
        .fetch(&slot.get_url, service.max_file_size.expect("a limit"))
        .await
        .expect("GET the upload");
    assert_eq!(fetched.bytes.len(), data.len());
    assert!(fetched.bytes == data, "the downloaded bytes differ");
    assert_eq!(
        fetched.content_type.as_deref(),
        Some("application/octet-stream")
    );
    assert_eq!(fetched.file_name.as_deref(), Some("bridged photo.bin"));

    // The same GET with a smaller limit stops at the Content-Length.
    let err = http
        .fetch(&slot.get_url, 1000)
        .await
        .expect_err("over the limit");
    assert!(
        matches!(err, UploadError::TooLarge { limit: 1000, size: Some(s) } if s == size),
        "{err:?}"
    );

    // A second PUT to a completed slot is refused (Prosody: 409 Conflict), permanently.
    let err = http
        .put(&slot, Bytes::from(data), None)
        .await
        .expect_err("slot already used");
    assert!(
        matches!(err, UploadError::Status { status: 409 }),
        "{err:?}"
    );
    assert!(!err.is_transient());

    conn.close().await.expect("clean close");
}

#[tokio::test]
async fn a_slot_over_the_limit_is_refused_with_the_limit() {
    let _turn = ONE_COMPONENT.lock().await;
    let mut conn = component::connect(component_addr(), DOMAIN, SECRET)
        .await
        .expect("the component handshake succeeds");
    let answer = ask(
        &mut conn,
        upload::slot_request(
            PUPPET,
            "upload.localhost",
            "big",
            "huge.iso",
            LIMIT + 1,
            None,
        ),
    )
    .await;
    let err = upload::parse_slot(&answer).expect_err("too large");
    assert!(
        matches!(err, UploadError::FileTooLarge { max_file_size: Some(max), .. } if max == LIMIT),
        "{err:?}"
    );
    assert!(!err.is_transient());
    conn.close().await.expect("clean close");
}
