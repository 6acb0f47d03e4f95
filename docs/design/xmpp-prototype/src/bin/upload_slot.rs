//! Component puppet asks Prosody's mod_http_file_share for an XEP-0363 slot.
use xmpp_parsers::http_upload::{SlotRequest, SlotResult};
use xmpp_parsers::iq::Iq;
use xmpp_parsers::stanza::Stanza;
use xmpp_proto::component::{ComponentConn, Incoming};

#[tokio::main]
async fn main() {
    let mut c = ComponentConn::connect("127.0.0.1:5347", "bridge.localhost", "bridgesecret", Default::default())
        .await
        .expect("component login");
    let req = SlotRequest { filename: "a.txt".into(), size: 5, content_type: Some("text/plain".into()) };
    let mut iq = Iq::from_get("up1", req).with_to("upload.localhost".parse().unwrap());
    if let Iq::Get { from, .. } = &mut iq {
        *from = Some("alice@bridge.localhost/x".parse().unwrap());
    }
    c.send(iq).await.unwrap();
    loop {
        match c.next().await.expect("read") {
            Incoming::Stanza(Stanza::Iq(Iq::Result { id, payload: Some(p), .. })) if id == "up1" => {
                let slot = SlotResult::try_from(p).expect("slot");
                println!("PUT {} headers={:?}\nGET {}", slot.put.url, slot.put.headers.len(), slot.get.url);
                break;
            }
            Incoming::Stanza(Stanza::Iq(Iq::Error { id, error, .. })) if id == "up1" => {
                println!("error: {:?}", error.defined_condition);
                break;
            }
            other => eprintln!("ignored {other:?}"),
        }
    }
    c.close().await;
}
