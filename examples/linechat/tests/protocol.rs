//! The wire format: escaping and parsing every kind of line.

use bridge_example_linechat::protocol::{Line, Post, escape, is_word, unescape};

#[test]
fn escaping_round_trips_and_keeps_lines_single() {
    let samples = [
        "",
        "plain",
        "two\nlines",
        "a backslash \\ and a literal \\n",
        "\\",
        "ends with \\",
        "\r\n windows \r",
        "ünïcödé ✓ 👍",
    ];
    for text in samples {
        let escaped = escape(text);
        assert!(
            !escaped.contains('\n') && !escaped.contains('\r'),
            "{escaped:?}"
        );
        assert_eq!(unescape(&escaped), text);
    }
    assert_eq!(escape("a\nb\\c"), "a\\nb\\\\c");
    // Lenient on what it did not write: an unknown escape stands for its character.
    assert_eq!(unescape("\\q\\"), "q\\");
}

#[test]
fn every_line_round_trips() {
    let post = Post {
        room: "lobby".into(),
        sender: "mem.bob".into(),
        reply_to: Some(7),
        text: "hi\nthere \\o/".into(),
    };
    let lines = [
        Line::Hello {
            name: "bridge".into(),
        },
        Line::Welcome,
        Line::Event {
            seq: 42,
            post: post.clone(),
        },
        Line::Event {
            seq: 1,
            post: Post {
                reply_to: None,
                text: String::new(),
                ..post.clone()
            },
        },
        Line::Ack { seq: u64::MAX },
        Line::Send {
            txn: "01ARZ3NDEKTSV4RRFFQ69G5FAV".into(),
            post,
        },
        Line::Ok {
            txn: "t1".into(),
            seq: 3,
        },
        Line::Err {
            reason: "say HELLO first".into(),
        },
    ];
    for line in lines {
        let text = line.to_string();
        assert!(!text.contains('\n'), "{text:?}");
        assert_eq!(Line::parse(&text), Ok(line.clone()), "{text}");
        assert_eq!(Line::parse(&format!("{text}\r\n")), Ok(line));
    }
    assert_eq!(
        Line::parse("EVENT 5 lobby alice 4 hello world  with  spaces "),
        Ok(Line::Event {
            seq: 5,
            post: Post {
                room: "lobby".into(),
                sender: "alice".into(),
                reply_to: Some(4),
                text: "hello world  with  spaces ".into(),
            }
        })
    );
}

#[test]
fn malformed_lines_are_errors_not_panics() {
    let bad = [
        "",
        " ",
        "welcome",
        "WELCOME extra",
        "HELLO",
        "HELLO two names",
        "EVENT",
        "EVENT x lobby alice - text",
        "EVENT -1 lobby alice - text",
        "EVENT 1 lobby alice - ",
        "EVENT 1 lobby alice -",
        "EVENT 1 lobby alice",
        "EVENT 1  alice - empty room",
        "EVENT 1 lobby alice x1 bad reply",
        "EVENT 18446744073709551616 lobby alice - overflow",
        "ACK",
        "ACK one",
        "ACK 1 2",
        "SEND t1 lobby",
        "SEND t1 lob\tby alice - tab in the room",
        "OK",
        "OK t1",
        "OK t1 x",
        "OK t1 1 2",
        "NOPE 1",
    ];
    for line in bad {
        if line == "EVENT 1 lobby alice - " {
            // An empty text is fine: the separator is there.
            assert!(Line::parse(line).is_ok());
            continue;
        }
        assert!(Line::parse(line).is_err(), "{line:?} parsed");
    }
    assert!(is_word("mem.bob") && !is_word("") && !is_word("a b") && !is_word("a\u{a0}b"));
}
