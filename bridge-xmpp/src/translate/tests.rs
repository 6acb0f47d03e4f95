use super::*;
use bridge_core::richtext::Node;
use bridge_core::{Attachment, MsgType, RichText};
use serde_json::json;
use xmpp_parsers::minidom::Element;

const ROOM: &str = "lobby@conference.localhost";

fn xml(s: &str) -> Element {
    s.parse()
        .unwrap_or_else(|e| panic!("test XML does not parse: {e}\n{s}"))
}

fn parse_with(s: &str, limits: &Limits) -> Result<Parsed, ParseError> {
    parse_message(&xml(s), limits)
}

fn parse(s: &str) -> Parsed {
    parse_with(s, &Limits::default()).unwrap_or_else(|e| panic!("{e}: {s}"))
}

/// The message content, reply and thread of a parsed message.
fn message(p: &Parsed) -> (&MessageContent, Option<&Reply>, Option<&str>) {
    match &p.content {
        Content::Message {
            content,
            reply,
            thread,
        } => (content, reply.as_ref(), thread.as_deref()),
        other => panic!("expected a message, got {other:?}"),
    }
}

fn text_of(p: &Parsed) -> &str {
    message(p).0.text.body()
}

fn groupchat(id: &str) -> Envelope<'_> {
    Envelope {
        from: "alice@bridge.localhost/bridge",
        to: ROOM,
        msg_type: MessageType::Groupchat,
        id,
    }
}

// ----------------------------------------------------------------------------------------------
// Inbound

#[test]
fn prosody_groupchat_reflection() {
    let p = parse(
        "<message xmlns='jabber:client' type='groupchat' id='abc' \
         from='lobby@conference.localhost/Bob' to='x@bridge.localhost/y'>\
         <body>hi</body><origin-id xmlns='urn:xmpp:sid:0' id='abc'/>\
         <occupant-id xmlns='urn:xmpp:occupant-id:0' id='ZwsLkDq2'/>\
         <stanza-id xmlns='urn:xmpp:sid:0' by='lobby@conference.localhost' id='SsLm4oK'/>\
         </message>",
    );
    assert_eq!(p.id.as_deref(), Some("abc"));
    assert_eq!(p.from.as_deref(), Some("lobby@conference.localhost/Bob"));
    assert_eq!(p.to.as_deref(), Some("x@bridge.localhost/y"));
    assert_eq!(p.msg_type, MessageType::Groupchat);
    assert_eq!(p.origin_id.as_deref(), Some("abc"));
    assert_eq!(p.occupant_id.as_deref(), Some("ZwsLkDq2"));
    assert_eq!(
        p.stanza_ids,
        vec![StanzaId {
            id: "SsLm4oK".into(),
            by: ROOM.into()
        }]
    );
    assert_eq!(p.stanza_id_by(ROOM), Some("SsLm4oK"));
    assert_eq!(p.stanza_id_by("evil@example.org"), None);
    assert_eq!(p.delay_ms, None);
    assert_eq!(p.chat_state, None);
    let (content, reply, thread) = message(&p);
    assert_eq!(content, &MessageContent::text("hi"));
    assert_eq!((reply, thread), (None, None));
}

#[test]
fn slixmpp_chat_with_state_receipt_and_thread() {
    let p = parse(
        "<message xmlns='jabber:client' to='bob@localhost' type='chat' id='5f1c'>\
         <body>hello</body><thread>t-1</thread>\
         <active xmlns='http://jabber.org/protocol/chatstates'/>\
         <request xmlns='urn:xmpp:receipts'/><markable xmlns='urn:xmpp:chat-markers:0'/>\
         </message>",
    );
    assert_eq!(p.msg_type, MessageType::Chat);
    assert_eq!(p.chat_state, Some(ChatState::Active));
    assert_eq!(p.typing(), Some(false));
    assert_eq!(message(&p).2, Some("t-1"));
    assert_eq!(text_of(&p), "hello");
}

#[test]
fn chat_states_alone_are_not_content() {
    for (state, typing) in [
        ("composing", true),
        ("paused", false),
        ("active", false),
        ("inactive", false),
        ("gone", false),
    ] {
        let p = parse(&format!(
            "<message xmlns='jabber:client' type='groupchat' from='{ROOM}/Bob'>\
             <{state} xmlns='http://jabber.org/protocol/chatstates'/>\
             <no-store xmlns='urn:xmpp:hints'/></message>"
        ));
        assert_eq!(p.content, Content::None, "{state}");
        assert_eq!(p.typing(), Some(typing), "{state}");
        assert_eq!(p.id, None, "a missing id is not an error");
    }
    let p = parse(
        "<message xmlns='jabber:client'><typing xmlns='http://jabber.org/protocol/chatstates'/>\
         </message>",
    );
    assert_eq!((p.chat_state, p.typing()), (None, None));
}

/// What Conversations sends with OMEMO on: the ciphertext, a fallback body for clients without
/// OMEMO and a XEP-0380 declaration. The fallback is not a message.
#[test]
fn encrypted_messages_are_recognised_not_their_fallback_bodies() {
    let omemo = |extra: &str| {
        parse(&format!(
            "<message xmlns='jabber:client' type='groupchat' id='e1'>\
             <body>I sent you an OMEMO encrypted message but your client doesn't seem to support that.</body>\
             <encrypted xmlns='eu.siacs.conversations.axolotl'>\
             <header sid='1234'><key rid='99'>AAAA</key><iv>BBBB</iv></header>\
             <payload>CCCC</payload></encrypted>\
             <encryption xmlns='urn:xmpp:eme:0' namespace='eu.siacs.conversations.axolotl' name='OMEMO'/>\
             <store xmlns='urn:xmpp:hints'/>{extra}</message>"
        ))
    };
    let encrypted = |method: &str| Content::Encrypted {
        method: method.into(),
    };
    assert_eq!(omemo("").content, encrypted("OMEMO"));
    // A correction sent encrypted is no more readable.
    assert_eq!(
        omemo("<replace xmlns='urn:xmpp:message-correct:0' id='e0'/>").content,
        encrypted("OMEMO")
    );
    for (payload, method) in [
        (
            "<encrypted xmlns='urn:xmpp:omemo:2'><payload>x</payload></encrypted>",
            "OMEMO",
        ),
        (
            "<openpgp xmlns='urn:xmpp:openpgp:0'>x</openpgp>",
            "OpenPGP for XMPP",
        ),
        ("<x xmlns='jabber:x:encrypted'>x</x>", "legacy OpenPGP"),
        // Only declared (XEP-0380): its name, else its namespace.
        (
            "<encryption xmlns='urn:xmpp:eme:0' namespace='urn:example:otr' name='OTR'/>",
            "OTR",
        ),
        (
            "<encryption xmlns='urn:xmpp:eme:0' namespace='urn:example:otr'/>",
            "urn:example:otr",
        ),
    ] {
        let p = parse(&format!(
            "<message xmlns='jabber:client' type='chat'><body>fallback</body>{payload}</message>"
        ));
        assert_eq!(p.content, encrypted(method), "{payload}");
    }
    // Retractions and moderations are never encrypted and stay what they are.
    let p = parse(
        "<message xmlns='jabber:client' type='groupchat'>\
         <retract xmlns='urn:xmpp:message-retract:1' id='e1'/>\
         <encryption xmlns='urn:xmpp:eme:0' namespace='eu.siacs.conversations.axolotl'/></message>",
    );
    assert_eq!(p.content, Content::Retraction { id: "e1".into() });
}

#[test]
fn receipts_markers_and_hints_only_are_nothing() {
    let p = parse(
        "<message xmlns='jabber:client' type='chat' id='r1'>\
         <received xmlns='urn:xmpp:receipts' id='m1'/>\
         <displayed xmlns='urn:xmpp:chat-markers:0' id='m1'/>\
         <store xmlns='urn:xmpp:hints'/><x xmlns='http://jabber.org/protocol/muc#user'/>\
         </message>",
    );
    assert_eq!(p.content, Content::None);
    assert_eq!(p.displayed.as_deref(), Some("m1"));
    let p = parse(
        "<message xmlns='jabber:client'><displayed xmlns='urn:xmpp:chat-markers:0'/></message>",
    );
    assert_eq!(p.displayed, None);
}

#[test]
fn message_type_and_addressing_are_lenient() {
    let p = parse("<message xmlns='jabber:client' type='bogus'><body>x</body></message>");
    assert_eq!(p.msg_type, MessageType::Normal);
    assert_eq!((p.id, p.from, p.to), (None, None, None));
    let p = parse("<message xmlns='jabber:client' type='headline'><body>x</body></message>");
    assert_eq!(p.msg_type, MessageType::Headline);
}

#[test]
fn not_a_message() {
    for s in [
        "<iq xmlns='jabber:client' type='get' id='1'/>",
        "<message xmlns='jabber:component:accept'><body>x</body></message>",
        "<message xmlns='urn:evil'><body>x</body></message>",
    ] {
        assert_eq!(
            parse_with(s, &Limits::default()),
            Err(ParseError::NotAMessage)
        );
    }
}

#[test]
fn error_bounces_carry_nothing() {
    let p = parse(
        "<message xmlns='jabber:client' type='error' id='m1' from='lobby@conference.localhost'>\
         <body>what we sent</body><composing xmlns='http://jabber.org/protocol/chatstates'/>\
         <error type='cancel'><not-acceptable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>\
         </error></message>",
    );
    assert_eq!(p.msg_type, MessageType::Error);
    assert_eq!(p.id.as_deref(), Some("m1"));
    assert_eq!((p.content, p.chat_state), (Content::None, None));
}

#[test]
fn delay_stamps() {
    let stamp = |s: &str| {
        parse(&format!(
            "<message xmlns='jabber:client'><body>x</body>\
             <delay xmlns='urn:xmpp:delay' from='{ROOM}' stamp='{s}'/></message>"
        ))
        .delay_ms
    };
    assert_eq!(stamp("2002-09-10T23:08:25Z"), Some(1_031_699_305_000));
    assert_eq!(stamp("2002-09-10T23:08:25.123Z"), Some(1_031_699_305_123));
    assert_eq!(stamp("2002-09-11T01:08:25+02:00"), Some(1_031_699_305_000));
    assert_eq!(stamp("1969-12-31T23:59:59Z"), None);
    assert_eq!(stamp("yesterday"), None);
    assert_eq!(stamp(""), None);
    // Only urn:xmpp:delay counts; the first readable stamp wins.
    let p = parse(
        "<message xmlns='jabber:client'><body>x</body>\
         <delay xmlns='urn:xmpp:delay'/>\
         <x xmlns='jabber:x:delay' stamp='20020910T23:08:25'/>\
         <delay xmlns='urn:xmpp:delay' stamp='1970-01-01T00:00:01Z'/></message>",
    );
    assert_eq!(p.delay_ms, Some(1000));
}

#[test]
fn emote_and_styling() {
    let p = parse("<message xmlns='jabber:client'><body>/me waves *hard*</body></message>");
    let content = message(&p).0;
    assert_eq!(content.msgtype, MsgType::Emote);
    assert_eq!(content.text, RichText::from_styling("waves *hard*"));
    assert!(content.text.is_formatted());

    let p = parse("<message xmlns='jabber:client'><body>/meh</body></message>");
    assert_eq!(message(&p).0.msgtype, MsgType::Text);

    let p = parse(
        "<message xmlns='jabber:client'><body>*not bold*</body>\
         <unstyled xmlns='urn:xmpp:styling:0'/></message>",
    );
    assert_eq!(message(&p).0.text, RichText::plain("*not bold*"));
}

#[test]
fn xhtml_im_wins_over_styling() {
    let p = parse(
        "<message xmlns='jabber:client'><body>bold and a link</body>\
         <html xmlns='http://jabber.org/protocol/xhtml-im'>\
         <body xmlns='http://www.w3.org/1999/xhtml'><p><strong>bold</strong> and \
         <a href='https://example.org/?a=1&amp;b=2'>a link</a></p></body></html></message>",
    );
    let text = &message(&p).0.text;
    assert_eq!(
        text,
        &RichText::from_html(
            "<strong>bold</strong> and <a href=\"https://example.org/?a=1&amp;b=2\">a link</a>"
        )
    );
    assert!(text.body().starts_with("bold and a link"));
}

#[test]
fn xhtml_im_is_sanitised_and_foreign_elements_flattened() {
    let p = parse(
        "<message xmlns='jabber:client'><body>x</body>\
         <html xmlns='http://jabber.org/protocol/xhtml-im'>\
         <body xmlns='http://www.w3.org/1999/xhtml'>\
         <script>alert(1)</script><a href='javascript:alert(1)'>click</a>\
         <br/><img src='https://x/y.png' alt='z'/>\
         <em xmlns='urn:evil'>plain</em> &lt;b&gt;<span style='x'>s</span></body></html></message>",
    );
    let text = &message(&p).0.text;
    assert_eq!(text.body(), "click\nplain <b>s");
    assert!(!text.to_html().contains("script"));
    assert!(!text.to_html().contains("javascript"));
}

#[test]
fn xhtml_emote_cuts_me_from_both() {
    let p = parse(
        "<message xmlns='jabber:client'><body>/me waves *hard*</body>\
         <html xmlns='http://jabber.org/protocol/xhtml-im'>\
         <body xmlns='http://www.w3.org/1999/xhtml'><p>/me waves <strong>hard</strong></p>\
         </body></html></message>",
    );
    let content = message(&p).0;
    assert_eq!(content.msgtype, MsgType::Emote);
    assert_eq!(
        content.text,
        RichText::from_html("waves <strong>hard</strong>")
    );
    // XHTML that does not start with /me is not trusted for an emote: styling instead.
    let p = parse(
        "<message xmlns='jabber:client'><body>/me waves</body>\
         <html xmlns='http://jabber.org/protocol/xhtml-im'>\
         <body xmlns='http://www.w3.org/1999/xhtml'><em>something else</em></body></html>\
         </message>",
    );
    assert_eq!(message(&p).0.text, RichText::plain("waves"));
}

#[test]
fn xhtml_over_the_limit_or_empty_falls_back_to_the_body() {
    let limits = Limits {
        max_markup_bytes: 32,
        ..Limits::default()
    };
    let s = format!(
        "<message xmlns='jabber:client'><body>_long_</body>\
         <html xmlns='http://jabber.org/protocol/xhtml-im'>\
         <body xmlns='http://www.w3.org/1999/xhtml'><strong>{}</strong></body></html></message>",
        "x".repeat(64)
    );
    let p = parse_with(&s, &limits).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(message(&p).0.text, RichText::from_styling("_long_"));
    let p = parse(
        "<message xmlns='jabber:client'><body>kept</body>\
         <html xmlns='http://jabber.org/protocol/xhtml-im'>\
         <body xmlns='http://www.w3.org/1999/xhtml'/></html></message>",
    );
    assert_eq!(text_of(&p), "kept");
}

#[test]
fn body_in_the_message_language() {
    let p = parse(
        "<message xmlns='jabber:client' xml:lang='de'><body xml:lang='en'>hello</body>\
         <body>hallo</body></message>",
    );
    assert_eq!(text_of(&p), "hallo");
    let p = parse(
        "<message xmlns='jabber:client' xml:lang='fr'><body xml:lang='en'>hello</body>\
         <body xml:lang='de'>hallo</body></message>",
    );
    assert_eq!(text_of(&p), "hello");
}

#[test]
fn reply_with_fallback_range_from_the_xep() {
    let p = parse(
        "<message xmlns='jabber:client' to='anna@example.com' id='message-id3' type='chat'>\
         <body>&gt; Anna wrote:\n&gt; We should bake a cake\nGreat idea!</body>\
         <reply to='anna@example.com/laptop' id='message-id1' xmlns='urn:xmpp:reply:0' />\
         <fallback xmlns='urn:xmpp:fallback:0' for='urn:xmpp:reply:0'>\
         <body start='0' end='38' /></fallback></message>",
    );
    let (content, reply, _) = message(&p);
    assert_eq!(content.text.body(), "Great idea!");
    assert_eq!(
        reply,
        Some(&Reply {
            to: Some("anna@example.com/laptop".into()),
            id: "message-id1".into()
        })
    );
}

#[test]
fn fallback_ranges_count_code_points() {
    // "> 🧛🏾 👨‍👨‍👦‍👦 🇺🇳\n" is 2 + 13 + 1 code points (XEP-0426's example string) but 47 bytes.
    let quote = "> 🧛🏾 👨‍👨‍👦‍👦 🇺🇳\n";
    assert_eq!(quote.chars().count(), 16);
    let p = parse(&format!(
        "<message xmlns='jabber:client' type='groupchat'><body>{quote}ok 🎉</body>\
         <reply xmlns='urn:xmpp:reply:0' id='s1'/>\
         <fallback xmlns='urn:xmpp:fallback:0' for='urn:xmpp:reply:0'>\
         <body start='0' end='16'/></fallback></message>"
    ));
    assert_eq!(text_of(&p), "ok 🎉");
    // Several ranges, overlapping, out of order, one past the end: all cut, nothing panics.
    let p = parse(
        "<message xmlns='jabber:client'><body>a🎉b🎉c🎉d</body>\
         <fallback xmlns='urn:xmpp:fallback:0' for='urn:xmpp:reply:0'>\
         <body start='5' end='6'/><body start='1' end='2'/><body start='0' end='1'/>\
         <body start='1' end='3'/><body start='9' end='99'/><body start='4' end='2'/>\
         <body start='x' end='2'/></fallback></message>",
    );
    assert_eq!(text_of(&p), "🎉cd");
}

#[test]
fn reply_fallback_without_range_cuts_the_leading_quote() {
    let p = parse(
        "<message xmlns='jabber:client'><body>&gt; Anna wrote:\n&gt;we should\nGreat\n&gt; x</body>\
         <reply xmlns='urn:xmpp:reply:0' id='m1'/>\
         <fallback xmlns='urn:xmpp:fallback:0' for='urn:xmpp:reply:0'/></message>",
    );
    assert_eq!(text_of(&p), "Great\n> x");
    // A reply without fallback keeps its whole body; a fallback for something else cuts nothing.
    let p = parse(
        "<message xmlns='jabber:client'><body>&gt; quoted\nmine</body>\
         <reply xmlns='urn:xmpp:reply:0' id='m1'/>\
         <fallback xmlns='urn:xmpp:fallback:0' for='urn:xmpp:sfs:0'><body start='0' end='4'/>\
         </fallback></message>",
    );
    assert_eq!(text_of(&p), "> quoted\nmine");
    assert_eq!(message(&p).1.map(|r| r.to.as_deref()), Some(None));
}

#[test]
fn reply_with_xhtml_drops_the_quote_or_the_xhtml() {
    let msg = |html: &str| {
        parse(&format!(
            "<message xmlns='jabber:client'><body>&gt; Anna: hi\n*yes*</body>\
             <reply xmlns='urn:xmpp:reply:0' id='m1'/>\
             <fallback xmlns='urn:xmpp:fallback:0' for='urn:xmpp:reply:0'>\
             <body start='0' end='11'/></fallback>\
             <html xmlns='http://jabber.org/protocol/xhtml-im'>\
             <body xmlns='http://www.w3.org/1999/xhtml'>{html}</body></html></message>"
        ))
    };
    // The XHTML starts with the quote: it is dropped and the rest used.
    let p = msg(" <blockquote>Anna: hi</blockquote><em>yes</em>");
    assert_eq!(message(&p).0.text, RichText::from_html("<em>yes</em>"));
    // It does not: the XHTML is ignored, the unquoted body styled.
    let p = msg("<p>Anna: hi</p><em>yes</em>");
    assert_eq!(message(&p).0.text, RichText::from_styling("*yes*"));
}

#[test]
fn reply_without_id_is_dropped_not_fatal() {
    let p = parse(
        "<message xmlns='jabber:client'><body>hi</body><reply xmlns='urn:xmpp:reply:0' to='x'/>\
         </message>",
    );
    assert_eq!(message(&p).1, None);
}

#[test]
fn conversations_file_share() {
    let url = "https://upload.localhost/aB3/my%20photo%C3%A9.jpg?x=1#f";
    let p = parse(&format!(
        "<message xmlns='jabber:client' type='chat' id='u1'><body>{url}</body>\
         <x xmlns='jabber:x:oob'><url>{url}</url></x></message>"
    ));
    let content = message(&p).0;
    assert_eq!(content.text, RichText::plain(""));
    assert_eq!(
        content.attachments,
        vec![Attachment {
            name: "my photoé.jpg".into(),
            url: url.into(),
            ..Attachment::default()
        }]
    );
}

#[test]
fn attachment_names_and_captions() {
    let p = parse(
        "<message xmlns='jabber:client'><body>look\nhttps://h/a.png\n</body>\
         <x xmlns='jabber:x:oob'><url> https://h/a.png </url><desc>d</desc></x>\
         <x xmlns='jabber:x:oob'><url>https://h/</url></x>\
         <x xmlns='jabber:x:oob'><url>https://h/%2e%2e%2Fetc%2fpasswd%zz%</url></x>\
         <x xmlns='jabber:x:oob'><url/></x><x xmlns='jabber:x:oob'/></message>",
    );
    let content = message(&p).0;
    assert_eq!(content.text.body(), "look");
    let names: Vec<&str> = content
        .attachments
        .iter()
        .map(|a| a.name.as_str())
        .collect();
    assert_eq!(names, ["a.png", "file", ".._etc_passwd%zz%"]);
    // Attachments without a body are a message too.
    let p = parse(
        "<message xmlns='jabber:client'><x xmlns='jabber:x:oob'><url>https://h/b</url></x>\
         </message>",
    );
    assert_eq!(message(&p).0.attachments.len(), 1);
}

#[test]
fn correction() {
    let p = parse(
        "<message xmlns='jabber:client' to='juliet@capulet.net/balcony' id='good1'>\
         <body>But soft, what light through yonder window breaks?</body>\
         <replace id='bad1' xmlns='urn:xmpp:message-correct:0'/></message>",
    );
    assert_eq!(
        p.content,
        Content::Correction {
            replace_id: "bad1".into(),
            new: MessageContent::text("But soft, what light through yonder window breaks?"),
        }
    );
    let p = parse(
        "<message xmlns='jabber:client'><replace id='bad1' xmlns='urn:xmpp:message-correct:0'/>\
         </message>",
    );
    assert_eq!(
        p.content,
        Content::Correction {
            replace_id: "bad1".into(),
            new: MessageContent::default()
        }
    );
    assert_eq!(
        parse_with(
            "<message xmlns='jabber:client'><body>x</body>\
             <replace xmlns='urn:xmpp:message-correct:0'/></message>",
            &Limits::default()
        ),
        Err(ParseError::MissingAttribute {
            element: "replace",
            attribute: "id"
        })
    );
}

#[test]
fn reactions() {
    let p = parse(
        "<message xmlns='jabber:client' to='romeo@capulet.net/orchard' id='96d7' type='chat'>\
         <reactions id='744f' xmlns='urn:xmpp:reactions:0'>\
         <reaction>👋</reaction><reaction> 🐢 </reaction><reaction>👋</reaction>\
         <reaction/><reaction>  </reaction><other>x</other></reactions>\
         <store xmlns='urn:xmpp:hints'/><body>👋</body></message>",
    );
    assert_eq!(
        p.content,
        Content::Reactions {
            to_id: "744f".into(),
            keys: vec!["👋".into(), "🐢".into()]
        }
    );
    let p = parse(
        "<message xmlns='jabber:client'><reactions id='744f' xmlns='urn:xmpp:reactions:0'/>\
         </message>",
    );
    assert_eq!(
        p.content,
        Content::Reactions {
            to_id: "744f".into(),
            keys: vec![]
        }
    );
    assert!(matches!(
        parse_with(
            "<message xmlns='jabber:client'><reactions xmlns='urn:xmpp:reactions:0'>\
             <reaction>👍</reaction></reactions></message>",
            &Limits::default()
        ),
        Err(ParseError::MissingAttribute { .. })
    ));
}

#[test]
fn retractions_both_forms() {
    let current = parse(
        "<message xmlns='jabber:client' type='chat' to='lord@capulet.example' id='retract-1'>\
         <retract id='wrong-recipient-1' xmlns='urn:xmpp:message-retract:1'/>\
         <fallback xmlns='urn:xmpp:fallback:0' for='urn:xmpp:message-retract:1'/>\
         <body>/me retracted a previous message, but it's unsupported by your client.</body>\
         <store xmlns='urn:xmpp:hints'/></message>",
    );
    let older = parse(
        "<message xmlns='jabber:client' type='chat' to='lord@capulet.example' id='retract-1'>\
         <apply-to id='wrong-recipient-1' xmlns='urn:xmpp:fasten:0'>\
         <retract xmlns='urn:xmpp:message-retract:0'/></apply-to>\
         <fallback xmlns='urn:xmpp:fallback:0'/>\
         <body>This person attempted to retract a previous message, but it's unsupported by \
         your client.</body></message>",
    );
    for p in [current, older] {
        assert_eq!(
            p.content,
            Content::Retraction {
                id: "wrong-recipient-1".into()
            }
        );
    }
    for s in [
        "<message xmlns='jabber:client'><retract xmlns='urn:xmpp:message-retract:1'/></message>",
        "<message xmlns='jabber:client'><apply-to xmlns='urn:xmpp:fasten:0'>\
         <retract xmlns='urn:xmpp:message-retract:0'/></apply-to></message>",
    ] {
        assert!(matches!(
            parse_with(s, &Limits::default()),
            Err(ParseError::MissingAttribute { .. })
        ));
    }
    // A tombstone (MAM) is nothing to bridge.
    let p = parse(
        "<message xmlns='jabber:client' type='groupchat'>\
         <retracted stamp='2019-09-20T23:09:32Z' xmlns='urn:xmpp:message-retract:1' id='r'/>\
         </message>",
    );
    assert_eq!(p.content, Content::None);
}

#[test]
fn moderation_current_form() {
    let p = parse(
        "<message xmlns='jabber:client' type='groupchat' id='retraction-id-1' \
         from='room@muc.example.com' to='room@muc.example.com/macbeth'>\
         <retract id='stanza-id-1' xmlns='urn:xmpp:message-retract:1'>\
         <moderated by='room@muc.example.com/macbeth' xmlns='urn:xmpp:message-moderate:1'>\
         <occupant-id xmlns='urn:xmpp:occupant-id:0' id='dd72603d'/></moderated>\
         <reason>This message contains inappropriate content for this forum</reason>\
         </retract></message>",
    );
    assert_eq!(
        p.content,
        Content::Moderation {
            id: "stanza-id-1".into(),
            by: Some("room@muc.example.com/macbeth".into()),
            reason: Some("This message contains inappropriate content for this forum".into()),
        }
    );
    // The moderator's occupant-id is not the message's.
    assert_eq!(p.occupant_id, None);
}

#[test]
fn moderation_older_form_and_prosody_sending_both() {
    let older = "<apply-to id='stanza-id-1' xmlns='urn:xmpp:fasten:0'>\
         <moderated by='room@muc.example.com/macbeth' xmlns='urn:xmpp:message-moderate:0'>\
         <retract xmlns='urn:xmpp:message-retract:0' /><reason>spam</reason>\
         </moderated></apply-to>";
    let p = parse(&format!(
        "<message xmlns='jabber:client' type='groupchat' from='room@muc.example.com'>{older}\
         </message>"
    ));
    assert_eq!(
        p.content,
        Content::Moderation {
            id: "stanza-id-1".into(),
            by: Some("room@muc.example.com/macbeth".into()),
            reason: Some("spam".into()),
        }
    );
    // Both forms: the current one is read.
    let p = parse(&format!(
        "<message xmlns='jabber:client' type='groupchat' from='room@muc.example.com'>{older}\
         <retract id='stanza-id-1' xmlns='urn:xmpp:message-retract:1'>\
         <moderated xmlns='urn:xmpp:message-moderate:1'/><reason> </reason></retract>\
         <body>This message has been retracted.</body></message>"
    ));
    assert_eq!(
        p.content,
        Content::Moderation {
            id: "stanza-id-1".into(),
            by: None,
            reason: None,
        }
    );
    assert!(matches!(
        parse_with(
            "<message xmlns='jabber:client'><retract xmlns='urn:xmpp:message-retract:1'>\
             <moderated xmlns='urn:xmpp:message-moderate:1'/></retract></message>",
            &Limits::default()
        ),
        Err(ParseError::MissingAttribute {
            element: "retract",
            ..
        })
    ));
}

#[test]
fn subjects() {
    let subject = |s: &str| parse(s).content;
    assert_eq!(
        subject(&format!(
            "<message xmlns='jabber:client' type='groupchat' from='{ROOM}/Bob'>\
             <subject>Fire &amp; ice</subject><delay xmlns='urn:xmpp:delay' stamp='2020-01-01T00:00:00Z'/>\
             </message>"
        )),
        Content::Subject("Fire & ice".into())
    );
    assert_eq!(
        subject(&format!(
            "<message xmlns='jabber:client' type='groupchat' from='{ROOM}'><subject/></message>"
        )),
        Content::Subject(String::new())
    );
    // Not a topic: a body wins, and chats have no topic.
    let p = parse(
        "<message xmlns='jabber:client' type='groupchat'><subject>s</subject><body>b</body>\
         </message>",
    );
    assert_eq!(text_of(&p), "b");
    assert_eq!(
        subject("<message xmlns='jabber:client' type='chat'><subject>s</subject></message>"),
        Content::None
    );
}

#[test]
fn unknown_payloads_become_custom() {
    let p = parse(
        "<message xmlns='jabber:client' type='groupchat'><store xmlns='urn:xmpp:hints'/>\
         <poll xmlns='urn:example:poll' kind='single'><q>tea &amp; cake?</q></poll>\
         <other xmlns='urn:example:other'/></message>",
    );
    let Content::Custom {
        event_type,
        content,
    } = &p.content
    else {
        panic!("expected custom, got {:?}", p.content);
    };
    assert_eq!(event_type, "xmpp:urn:example:poll#poll");
    let back = xml(content["xml"].as_str().unwrap_or_default());
    assert!(back.is("poll", "urn:example:poll"));
    assert_eq!(back.attr("kind"), Some("single"));
    assert_eq!(
        back.get_child("q", "urn:example:poll").map(Element::text),
        Some("tea & cake?".into())
    );
    // Wrong namespaces are unknown payloads, not bodies.
    let p = parse("<message xmlns='jabber:client'><body xmlns='urn:evil'>hi</body></message>");
    assert!(
        matches!(&p.content, Content::Custom { event_type, .. } if event_type == "xmpp:urn:evil#body")
    );
    // A body makes it a message, whatever else is there.
    let p = parse(
        "<message xmlns='jabber:client'><body>hi</body><poll xmlns='urn:example:poll'/></message>",
    );
    assert_eq!(text_of(&p), "hi");
}

#[test]
fn foreign_json_containers_stay_xml() {
    for json in [
        "[1,2]",
        "{\"type\": 3, \"content\": 1}",
        "{\"type\": \"t\"}",
        "nope",
    ] {
        let p = parse(&format!(
            "<message xmlns='jabber:client'><json xmlns='urn:xmpp:json:0'>{json}</json></message>"
        ));
        assert!(
            matches!(&p.content, Content::Custom { event_type, .. } if event_type == "xmpp:urn:xmpp:json:0#json"),
            "{json}: {:?}",
            p.content
        );
    }
}

// ----------------------------------------------------------------------------------------------
// Hostile input

#[test]
fn oversized_parts_are_refused() {
    let limits = Limits {
        max_body_bytes: 16,
        max_markup_bytes: 64,
    };
    let big = "x".repeat(17);
    let too_large = |s: &str| matches!(parse_with(s, &limits), Err(ParseError::TooLarge { .. }));
    assert!(too_large(&format!(
        "<message xmlns='jabber:client'><body>{big}</body></message>"
    )));
    assert!(too_large(&format!(
        "<message xmlns='jabber:client'><body>a<![CDATA[{big}]]></body></message>"
    )));
    assert!(too_large(&format!(
        "<message xmlns='jabber:client' type='groupchat'><subject>{big}</subject></message>"
    )));
    assert!(too_large(&format!(
        "<message xmlns='jabber:client'><x xmlns='jabber:x:oob'><url>{big}</url></x></message>"
    )));
    assert!(too_large(&format!(
        "<message xmlns='jabber:client'><replace xmlns='urn:xmpp:message-correct:0' id='1'/>\
         <body>{big}</body></message>"
    )));
    assert!(too_large(&format!(
        "<message xmlns='jabber:client'><foo xmlns='urn:x'>{}</foo></message>",
        "y".repeat(64)
    )));
    assert!(too_large(&format!(
        "<message xmlns='jabber:client'><json xmlns='urn:xmpp:json:0'>{}</json></message>",
        "y".repeat(65)
    )));
    let oob = "<x xmlns='jabber:x:oob'><url>u</url></x>".repeat(MAX_ATTACHMENTS + 1);
    assert!(too_large(&format!(
        "<message xmlns='jabber:client'>{oob}</message>"
    )));
    let reactions: String = (0..=MAX_REACTIONS)
        .map(|i| format!("<reaction>{i}</reaction>"))
        .collect();
    assert!(too_large(&format!(
        "<message xmlns='jabber:client'><reactions xmlns='urn:xmpp:reactions:0' id='1'>\
         {reactions}</reactions></message>"
    )));
    // At the limit is fine; an overlong reaction is dropped rather than refused.
    let p = parse_with(
        &format!(
            "<message xmlns='jabber:client'><body>{}</body></message>",
            "x".repeat(16)
        ),
        &limits,
    );
    assert!(p.is_ok());
    let p = parse(&format!(
        "<message xmlns='jabber:client'><reactions xmlns='urn:xmpp:reactions:0' id='1'>\
         <reaction>{}</reaction><reaction>👍</reaction></reactions></message>",
        "🎉".repeat(MAX_REACTION_BYTES)
    ));
    assert_eq!(
        p.content,
        Content::Reactions {
            to_id: "1".into(),
            keys: vec!["👍".into()]
        }
    );
}

#[test]
fn junk_never_panics() {
    let samples = [
        "<message xmlns='jabber:client'/>",
        "<message xmlns='jabber:client'><body/></message>",
        "<message xmlns='jabber:client'><body><b xmlns='urn:x'>nested</b></body></message>",
        "<message xmlns='jabber:client'><html xmlns='http://jabber.org/protocol/xhtml-im'/></message>",
        "<message xmlns='jabber:client'><body>x</body><html xmlns='http://jabber.org/protocol/xhtml-im'>\
         <body xmlns='http://www.w3.org/1999/xhtml'><p><p><ul><li><ol><blockquote><pre>\
         <code><a><a>deep</a></a></code></pre></blockquote></ol></li></ul></p></p></body></html></message>",
        "<message xmlns='jabber:client'><fallback xmlns='urn:xmpp:fallback:0' for='urn:xmpp:reply:0'>\
         <body start='99999999999999999999999' end='-1'/></fallback><body>&gt;</body></message>",
        "<message xmlns='jabber:client'><fallback xmlns='urn:xmpp:fallback:0' for='urn:xmpp:reply:0'/>\
         <body>&gt; a\n&gt; b</body></message>",
        "<message xmlns='jabber:client'><apply-to xmlns='urn:xmpp:fasten:0' id='1'><x xmlns='urn:y'/>\
         </apply-to></message>",
        "<message xmlns='jabber:client'><stanza-id xmlns='urn:xmpp:sid:0' id='only-id'/>\
         <origin-id xmlns='urn:xmpp:sid:0'/><occupant-id xmlns='urn:xmpp:occupant-id:0'/></message>",
        "<message xmlns='jabber:client'><delay xmlns='urn:xmpp:delay' stamp='9999999-99-99'/></message>",
        "<message xmlns='jabber:client'><x xmlns='jabber:x:oob'><url>%</url></x><body>%</body></message>",
        "<message xmlns='jabber:client'><reply xmlns='urn:xmpp:reply:0'/><body>/me </body></message>",
        "<message xmlns='jabber:client'><json xmlns='urn:xmpp:json:0'>[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[\
         [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[\
         [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[</json>\
         </message>",
    ];
    for s in samples {
        let _ = parse_with(s, &Limits::default());
    }
    let p = parse(
        "<message xmlns='jabber:client'><stanza-id xmlns='urn:xmpp:sid:0' id='only-id'/></message>",
    );
    assert!(p.stanza_ids.is_empty());
}

// ----------------------------------------------------------------------------------------------
// Outbound

#[test]
fn build_plain_message() {
    let el = build_message(
        &groupchat("ev1"),
        &MessageContent::text("hi <you> & me"),
        None,
    );
    assert!(el.is("message", ns::CLIENT));
    assert_eq!(el.attr("type"), Some("groupchat"));
    assert_eq!(el.attr("id"), Some("ev1"));
    assert_eq!(el.attr("to"), Some(ROOM));
    assert_eq!(el.attr("from"), Some("alice@bridge.localhost/bridge"));
    assert_eq!(
        el.get_child("body", ns::CLIENT).map(Element::text),
        Some("hi <you> & me".into())
    );
    assert_eq!(
        el.get_child("origin-id", ns::SID)
            .and_then(|o| o.attr("id")),
        Some("ev1")
    );
    assert!(el.has_child("markable", ns::MARKERS));
    assert!(!el.has_child("html", ns::XHTML_IM));
    assert!(!el.has_child("reply", ns::REPLY));
}

#[test]
fn build_formatted_message_has_styling_and_xhtml() {
    let text = RichText::from_html(
        "<strong>bold</strong> <em>it</em> <del>gone</del> <code>c</code><br>\
         <a href=\"https://e.org/?a=1&amp;b=2\">l&lt;ink</a> it&#39;s",
    );
    let content = MessageContent {
        text: text.clone(),
        ..MessageContent::default()
    };
    let el = build_message(&groupchat("ev1"), &content, None);
    assert_eq!(
        el.get_child("body", ns::CLIENT).map(Element::text),
        Some(text.to_styling())
    );
    let body = el
        .get_child("html", ns::XHTML_IM)
        .and_then(|h| h.get_child("body", ns::XHTML))
        .unwrap_or_else(|| panic!("no XHTML-IM body in {el:?}"));
    assert!(body.has_child("strong", ns::XHTML));
    assert!(body.has_child("br", ns::XHTML));
    assert_eq!(
        body.get_child("a", ns::XHTML).and_then(|a| a.attr("href")),
        Some("https://e.org/?a=1&b=2")
    );
}

#[test]
fn build_emote_notice_and_attachments() {
    let emote = MessageContent {
        msgtype: MsgType::Emote,
        ..MessageContent::text("waves")
    };
    let el = build_message(&groupchat("e"), &emote, None);
    assert_eq!(
        el.get_child("body", ns::CLIENT).map(Element::text),
        Some("/me waves".into())
    );
    let notice = MessageContent {
        msgtype: MsgType::Notice,
        ..MessageContent::text("beep")
    };
    let el = build_message(&groupchat("n"), &notice, None);
    assert_eq!(
        el.get_child("body", ns::CLIENT).map(Element::text),
        Some("beep".into())
    );

    let file = |url: &str| Attachment {
        name: "f".into(),
        url: url.into(),
        ..Attachment::default()
    };
    let only_file = MessageContent {
        attachments: vec![file("https://h/a.png")],
        ..MessageContent::default()
    };
    let el = build_message(&groupchat("f"), &only_file, None);
    assert_eq!(
        el.get_child("body", ns::CLIENT).map(Element::text),
        Some("https://h/a.png".into())
    );
    let urls: Vec<String> = el
        .children()
        .filter(|x| x.is("x", ns::OOB))
        .filter_map(|x| x.get_child("url", ns::OOB).map(Element::text))
        .collect();
    assert_eq!(urls, ["https://h/a.png"]);

    let captioned = MessageContent {
        attachments: vec![file("https://h/a.png"), file("https://h/b.png")],
        ..MessageContent::text("see https://h/b.png")
    };
    let el = build_message(&groupchat("f"), &captioned, None);
    assert_eq!(
        el.get_child("body", ns::CLIENT).map(Element::text),
        Some("see https://h/b.png\nhttps://h/a.png".into())
    );
    assert_eq!(el.children().filter(|x| x.is("x", ns::OOB)).count(), 2);
}

#[test]
fn build_reply_with_fallback() {
    let reply = OutReply {
        to: Some("lobby@conference.localhost/Anna"),
        id: "stanza-1",
        quote: Some("Anna: 🧛🏾 cake?\nsecond line"),
    };
    let el = build_message(&groupchat("r"), &MessageContent::text("yes"), Some(&reply));
    let body = el
        .get_child("body", ns::CLIENT)
        .map(Element::text)
        .unwrap_or_default();
    assert_eq!(body, "> Anna: 🧛🏾 cake?\n> second line\nyes");
    let r = el.get_child("reply", ns::REPLY);
    assert_eq!(r.and_then(|r| r.attr("id")), Some("stanza-1"));
    assert_eq!(
        r.and_then(|r| r.attr("to")),
        Some("lobby@conference.localhost/Anna")
    );
    let range = el
        .get_child("fallback", ns::FALLBACK)
        .filter(|f| f.attr("for") == Some(ns::REPLY))
        .and_then(|f| f.get_child("body", ns::FALLBACK));
    let end = "> Anna: 🧛🏾 cake?\n> second line\n"
        .chars()
        .count()
        .to_string();
    assert_eq!(range.and_then(|r| r.attr("start")), Some("0"));
    assert_eq!(range.and_then(|r| r.attr("end")), Some(end.as_str()));

    // No quote: no fallback; no `to`: no attribute.
    let reply = OutReply {
        to: None,
        id: "m",
        quote: None,
    };
    let el = build_message(&groupchat("r"), &MessageContent::text("yes"), Some(&reply));
    assert!(!el.has_child("fallback", ns::FALLBACK));
    assert_eq!(
        el.get_child("reply", ns::REPLY).and_then(|r| r.attr("to")),
        None
    );
}

#[test]
fn build_other_kinds() {
    let env = groupchat("x1");
    let el = build_correction(&env, "old", &MessageContent::text("fixed"));
    assert_eq!(
        el.get_child("replace", ns::CORRECT)
            .and_then(|r| r.attr("id")),
        Some("old")
    );
    assert!(!el.has_child("markable", ns::MARKERS));

    let el = build_reactions(&env, "m1", &["👍", "", "👍", " 🎉 "]);
    let keys: Vec<String> = el
        .get_child("reactions", ns::REACTIONS)
        .map(|r| r.children().map(Element::text).collect())
        .unwrap_or_default();
    assert_eq!(keys, ["👍", "🎉"]);
    assert!(el.has_child("store", ns::HINTS));

    let el = build_retraction(&env, "s1");
    assert_eq!(
        el.get_child("retract", ns::RETRACT)
            .and_then(|r| r.attr("id")),
        Some("s1")
    );
    assert_eq!(
        el.get_child("fallback", ns::FALLBACK)
            .and_then(|f| f.attr("for")),
        Some(ns::RETRACT)
    );
    assert_eq!(
        el.get_child("body", ns::CLIENT).map(Element::text),
        Some(RETRACTION_FALLBACK.into())
    );
    assert!(el.has_child("store", ns::HINTS));

    let el = build_chat_state(&env, ChatState::Composing);
    assert!(el.has_child("composing", ns::CHATSTATES));
    assert!(el.has_child("no-store", ns::HINTS));
    assert!(!el.has_child("origin-id", ns::SID));

    let el = build_displayed(&env, "s9");
    assert_eq!(
        el.get_child("displayed", ns::MARKERS)
            .and_then(|d| d.attr("id")),
        Some("s9")
    );
    assert!(el.has_child("no-store", ns::HINTS));

    let el = build_subject(&env, "");
    assert_eq!(
        el.get_child("subject", ns::CLIENT).map(Element::text),
        Some(String::new())
    );
}

#[test]
fn build_moderation_request() {
    let iq = build_moderation(
        "mod@localhost/bridge",
        ROOM,
        "iq1",
        "stanza-id-1",
        Some("spam"),
    );
    assert!(iq.is("iq", ns::CLIENT));
    assert_eq!(
        (iq.attr("type"), iq.attr("to"), iq.attr("id")),
        (Some("set"), Some(ROOM), Some("iq1"))
    );
    let moderate = iq.get_child("moderate", ns::MODERATE);
    assert_eq!(moderate.and_then(|m| m.attr("id")), Some("stanza-id-1"));
    assert!(moderate.is_some_and(|m| m.has_child("retract", ns::RETRACT)));
    assert_eq!(
        moderate
            .and_then(|m| m.get_child("reason", ns::MODERATE))
            .map(Element::text),
        Some("spam".into())
    );
    let iq = build_moderation("m@l", ROOM, "iq2", "s", None);
    assert!(
        iq.get_child("moderate", ns::MODERATE)
            .is_some_and(|m| !m.has_child("reason", ns::MODERATE))
    );
}

#[test]
fn build_custom_refuses_smuggled_and_deep_xml() {
    let env = groupchat("c");
    let is_json = |el: &Element| el.has_child("json", ns::JSON);
    // Names that do not match the type, known namespaces, the stanza namespace, junk, several
    // roots, and deep nesting all go into a JSON container.
    let deep = format!("{}{}", "<a xmlns='urn:x'>".repeat(200), "</a>".repeat(200));
    for (event_type, xml) in [
        ("xmpp:urn:x#b", "<a xmlns='urn:x'/>"),
        (
            "xmpp:urn:xmpp:message-retract:1#retract",
            "<retract xmlns='urn:xmpp:message-retract:1' id='victim'/>",
        ),
        (
            "xmpp:jabber:client#body",
            "<body xmlns='jabber:client'>x</body>",
        ),
        ("xmpp:urn:x#a", "<a xmlns='urn:x'>"),
        ("xmpp:urn:x#a", "<a xmlns='urn:x'/><a xmlns='urn:x'/>"),
        ("xmpp:urn:x#a", "<a/>"),
        ("xmpp:urn:x#a", deep.as_str()),
        ("org.example.poll", "<a xmlns='urn:x'/>"),
    ] {
        let el = build_custom(&env, event_type, &json!({ "xml": xml }));
        assert!(is_json(&el), "{event_type} {xml}");
        assert!(!el.has_child("retract", ns::RETRACT));
        assert!(!el.has_child("body", ns::CLIENT));
    }
    let el = build_custom(&env, "xmpp:urn:x#a", &json!({ "xml": 5 }));
    assert!(is_json(&el));
    let el = build_custom(
        &env,
        "xmpp:urn:x#a",
        &json!({ "xml": "<a xmlns='urn:x' k='v'/>" }),
    );
    assert_eq!(
        el.get_child("a", "urn:x").and_then(|a| a.attr("k")),
        Some("v")
    );
    assert!(el.has_child("store", ns::HINTS));
}

// ----------------------------------------------------------------------------------------------
// Round trips: build → parse gives the same neutral content.

fn round_trip(el: &Element) -> Parsed {
    // Through text, as on the wire.
    let mut out = Vec::new();
    el.write_to(&mut out)
        .unwrap_or_else(|e| panic!("serialise: {e}"));
    let text = String::from_utf8(out).unwrap_or_else(|e| panic!("{e}"));
    let p = parse(&text);
    assert_eq!(p.id.as_deref(), el.attr("id"));
    p
}

fn assert_same_content(sent: &MessageContent, got: &MessageContent) {
    let expected_msgtype = match sent.msgtype {
        MsgType::Notice => MsgType::Text,
        other => other,
    };
    assert_eq!(got.msgtype, expected_msgtype);
    assert_eq!(got.attachments.len(), sent.attachments.len());
    for (g, s) in got.attachments.iter().zip(&sent.attachments) {
        assert_eq!(g.url, s.url);
    }
    // Formatted text comes back through XHTML or styling, whose plain bodies differ; the tree
    // is what must survive.
    assert_eq!(got.text.tree(), sent.text.tree(), "{sent:?} → {got:?}");
    if !sent.text.is_formatted() {
        assert_eq!(got.text, sent.text);
    }
}

fn contents() -> Vec<MessageContent> {
    let file = Attachment {
        name: "a b.png".into(),
        url: "https://upload.localhost/x/a%20b.png".into(),
        ..Attachment::default()
    };
    let mut out = vec![
        MessageContent::text("hi"),
        MessageContent::text("multi\nline 🎉 & <stuff>"),
        MessageContent::text(""),
        MessageContent {
            msgtype: MsgType::Emote,
            ..MessageContent::text("waves")
        },
        MessageContent {
            msgtype: MsgType::Notice,
            ..MessageContent::text("automated")
        },
        MessageContent {
            attachments: vec![file.clone()],
            ..MessageContent::default()
        },
        MessageContent {
            attachments: vec![file.clone()],
            ..MessageContent::text("caption")
        },
    ];
    for html in [
        "<strong>bold</strong> and <em>it</em>",
        "<p>one</p><p>two <del>x</del></p><ul><li>a</li><li>b</li></ul>",
        "<blockquote>q</blockquote><pre><code class=\"language-rust\">fn main() {}\n</code></pre>",
        "a<br>b <a href=\"https://e.org/?q=1&amp;r=2\">link</a> <code>x &lt; y</code>",
    ] {
        out.push(MessageContent {
            text: RichText::from_html(html),
            ..MessageContent::default()
        });
        out.push(MessageContent {
            msgtype: MsgType::Emote,
            text: RichText::from_html(html),
            attachments: vec![file.clone()],
            ..MessageContent::default()
        });
    }
    out
}

#[test]
fn round_trip_messages_and_replies() {
    for content in contents() {
        let p = round_trip(&build_message(&groupchat("m"), &content, None));
        let (got, reply, _) = message(&p);
        assert_same_content(&content, got);
        assert_eq!(reply, None);
        assert_eq!(p.origin_id.as_deref(), Some("m"));

        let out_reply = OutReply {
            to: Some("lobby@conference.localhost/Ánna"),
            id: "stanza-1",
            quote: Some("Ánna: 🧛🏾 👨‍👨‍👦‍👦 🇺🇳\n> nested & <b>"),
        };
        let p = round_trip(&build_message(&groupchat("m"), &content, Some(&out_reply)));
        let (got, reply, _) = message(&p);
        assert_same_content(&content, got);
        assert_eq!(
            reply,
            Some(&Reply {
                to: Some("lobby@conference.localhost/Ánna".into()),
                id: "stanza-1".into()
            })
        );
    }
}

#[test]
fn round_trip_xhtml_is_used() {
    let text = RichText::from_html("<p>one</p><p>two</p>");
    let content = MessageContent {
        text: text.clone(),
        ..MessageContent::default()
    };
    let p = round_trip(&build_message(&groupchat("m"), &content, None));
    // The XHTML path gives exactly the rich text back, body included.
    assert_eq!(message(&p).0.text, text);
}

#[test]
fn round_trip_corrections() {
    for content in contents() {
        let p = round_trip(&build_correction(&groupchat("c"), "first", &content));
        let Content::Correction { replace_id, new } = &p.content else {
            panic!("expected a correction, got {:?}", p.content);
        };
        assert_eq!(replace_id, "first");
        assert_same_content(&content, new);
    }
}

#[test]
fn round_trip_the_rest() {
    let env = groupchat("k");
    let cases: Vec<(Element, Content)> = vec![
        (
            build_reactions(&env, "m1", &["👍", "👨‍👩‍👧", "👍"]),
            Content::Reactions {
                to_id: "m1".into(),
                keys: vec!["👍".into(), "👨‍👩‍👧".into()],
            },
        ),
        (
            build_reactions::<&str>(&env, "m1", &[]),
            Content::Reactions {
                to_id: "m1".into(),
                keys: vec![],
            },
        ),
        (
            build_retraction(&env, "s1"),
            Content::Retraction { id: "s1".into() },
        ),
        (
            build_subject(&env, "new topic"),
            Content::Subject("new topic".into()),
        ),
        (build_subject(&env, ""), Content::Subject(String::new())),
        (build_chat_state(&env, ChatState::Paused), Content::None),
        (build_displayed(&env, "s2"), Content::None),
    ];
    for (el, expected) in cases {
        assert_eq!(round_trip(&el).content, expected);
    }
    let p = round_trip(&build_chat_state(&env, ChatState::Composing));
    assert_eq!(p.typing(), Some(true));
    let p = round_trip(&build_displayed(&env, "s2"));
    assert_eq!(p.displayed.as_deref(), Some("s2"));
}

#[test]
fn round_trip_custom_events() {
    let env = groupchat("c");
    for (event_type, content) in [
        (
            "org.example.poll",
            json!({"question": "tea?", "answers": ["yes", "no"], "n": 1.5, "x": null}),
        ),
        ("m.room.encrypted", json!("just a string </json> & <")),
        ("xmpp:urn:x#b", json!({"xml": "<a xmlns='urn:x'/>"})),
    ] {
        let p = round_trip(&build_custom(&env, event_type, &content));
        assert_eq!(
            p.content,
            Content::Custom {
                event_type: event_type.into(),
                content
            }
        );
    }
    // A native payload read from XMPP goes back as itself and reads the same again.
    let first = parse(
        "<message xmlns='jabber:client'><poll xmlns='urn:example:poll'><q>tea?</q></poll>\
         </message>",
    );
    let Content::Custom {
        event_type,
        content,
    } = &first.content
    else {
        panic!("expected custom");
    };
    let el = build_custom(&env, event_type, content);
    assert!(el.has_child("poll", "urn:example:poll"));
    assert_eq!(round_trip(&el).content, first.content);
}

#[test]
fn round_trip_formatting_tree_survives_styling_only() {
    // A client without XHTML-IM sees the styled body; reading it back gives the same tree.
    let text = RichText::from_nodes(vec![
        Node::Bold(vec![Node::text("b")]),
        Node::text(" "),
        Node::Italic(vec![Node::text("i")]),
    ]);
    let content = MessageContent {
        text: text.clone(),
        ..MessageContent::default()
    };
    let mut el = build_message(&groupchat("s"), &content, None);
    let _ = el.remove_child("html", ns::XHTML_IM);
    let p = parse_message(&el, &Limits::default()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(message(&p).0.text.tree(), text.tree());
}

#[test]
fn outbound_text_that_xml_cannot_carry_is_dropped() {
    let bad = "a\u{0}\u{1}\u{b}\u{1f}\u{fffe}\u{ffff}\u{7f}\t\r\nb";
    let env = Envelope {
        from: "puppet\u{1}@bridge.localhost",
        to: ROOM,
        msg_type: MessageType::Groupchat,
        id: "id\u{2}",
    };
    let content = MessageContent {
        msgtype: MsgType::Emote,
        text: RichText::from_html(&format!("<strong>{bad}</strong>")),
        attachments: vec![Attachment {
            url: format!("https://h/{bad}"),
            ..Attachment::default()
        }],
        ..MessageContent::text(bad)
    };
    let reply = OutReply {
        to: Some(bad),
        id: bad,
        quote: Some(bad),
    };
    let elements = [
        build_message(&env, &content, Some(&reply)),
        build_message(&env, &MessageContent::text(bad), Some(&reply)),
        build_correction(&env, bad, &content),
        build_reactions(&env, bad, &[bad]),
        build_retraction(&env, bad),
        build_moderation(bad, bad, bad, bad, Some(bad)),
        build_displayed(&env, bad),
        build_subject(&env, bad),
        build_custom(&env, bad, &json!({ "xml": bad, "s": bad })),
    ];
    for el in elements {
        let mut out = Vec::new();
        el.write_to(&mut out)
            .unwrap_or_else(|e| panic!("serialise: {e}"));
        let text = String::from_utf8(out).unwrap_or_else(|e| panic!("{e}"));
        let _: Element = xml(&text);
    }
    // The fallback range still covers exactly the (cleaned) quote.
    let p = round_trip(&build_message(
        &env,
        &MessageContent::text("mine"),
        Some(&reply),
    ));
    assert_eq!(text_of(&p), "mine");
}
