//! Catch-up from a MUC room's archive: [XEP-0313](https://xmpp.org/extensions/xep-0313.html)
//! Message Archive Management (`urn:xmpp:mam:2`) paged with
//! [XEP-0059](https://xmpp.org/extensions/xep-0059.html) Result Set Management.
//!
//! The archive id of a room message is the `<stanza-id by='room'/>` the room adds to the live
//! message, so the adapter can remember the last id it bridged and, after a restart, ask for
//! everything [after](query) it:
//!
//! 1. send [`query`] (an `iq type='set'` to the room, with a `queryid`);
//! 2. the room sends one `<message/>` per archived item: [`parse_result`] unwraps them, refusing
//!    results that do not come from the room itself (anyone can send us a `<message/>` that looks
//!    like a MAM result);
//! 3. the room ends the page with the `iq type='result'` carrying `<fin/>`: [`parse_fin`] says
//!    whether the archive is exhausted ([`Fin::complete`]) and which id to page from
//!    ([`Fin::last`]).
//!
//! If the remembered id is no longer in the archive (expired: Prosody keeps a week by default),
//! the room answers `item-not-found` ([`MamError::Refused`]); the caller then learns the current
//! position with [`latest_query`] instead of replaying the whole archive.
//!
//! Everything here is pure stanza building and parsing, in `jabber:client` (see
//! [`crate::wire`]); nothing panics on any input.

use rxml::xml_ncname;
use xmpp_parsers::delay::Delay;
use xmpp_parsers::minidom::Element;
use xmpp_parsers::ns;

use crate::wire::NS_CLIENT;

/// The MAM namespace this module speaks (version 2).
pub const NS_MAM: &str = ns::MAM;
/// The Result Set Management namespace (`<set/>`).
pub const NS_RSM: &str = ns::RSM;
/// The Stanza Forwarding namespace (`<forwarded/>`, XEP-0297).
pub const NS_FORWARD: &str = ns::FORWARD;
/// The Delayed Delivery namespace (`<delay/>`, XEP-0203).
pub const NS_DELAY: &str = ns::DELAY;
/// The namespace of stanza error conditions.
pub const NS_STANZAS: &str = ns::XMPP_STANZAS;

/// One archived message, unwrapped from its `<result/>`.
#[derive(Debug, Clone, PartialEq)]
pub struct MamItem {
    /// The `queryid` of the query this result answers.
    pub query_id: String,
    /// The archive id (equal to the `<stanza-id/>` the room put on the live message).
    pub archive_id: String,
    /// When the archive stored the message (`<delay stamp/>`), in milliseconds since the Unix
    /// epoch; `None` when absent, unparsable or before 1970. Prosody stamps whole seconds, so
    /// order by archive position, not by this.
    pub delay_ms: Option<u64>,
    /// The archived `<message/>` itself, in `jabber:client`, exactly as forwarded (its `from` is
    /// the occupant's room JID `room@service/nick`).
    pub message: Element,
}

/// The end of a page of results (`<fin/>` with its RSM `<set/>`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fin {
    /// The archive has nothing more in the direction queried: for [`query`], there is nothing
    /// after [`last`](Self::last).
    pub complete: bool,
    /// Archive id of the first item of the page (`None` for an empty page).
    pub first: Option<String>,
    /// Archive id of the last item of the page: the `after` of the next [`query`].
    pub last: Option<String>,
    /// How many items the archive holds for the query's filters, if the server says. RSM
    /// paging (`after`, `before`, `max`) does not narrow it: Prosody reports the whole room
    /// archive on every page.
    pub count: Option<u64>,
}

/// Why a MAM query did not produce a [`Fin`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MamError {
    /// The archive answered with an error: `item-not-found` when the `after` id is not (or no
    /// longer) in the archive, `forbidden` for a members-only room we are not in,
    /// `feature-not-implemented`/`service-unavailable` when the room has no archive…
    #[error("the archive refused the query: {condition}{}", text_suffix(.text))]
    Refused {
        /// The defined condition, e.g. `item-not-found`.
        condition: String,
        /// The server's explanation, if it sent one.
        text: Option<String>,
    },
    /// The answer is not an `iq` result with `<fin xmlns='urn:xmpp:mam:2'/>` nor an `iq` error.
    #[error("unexpected answer to a MAM query: {0}")]
    Malformed(String),
}

impl MamError {
    /// The query's `after` id is unknown to the archive: fall back to [`latest_query`].
    pub fn is_item_not_found(&self) -> bool {
        matches!(self, Self::Refused { condition, .. } if condition == "item-not-found")
    }
}

pub(crate) fn text_suffix(text: &Option<String>) -> String {
    text.as_deref()
        .map(|t| format!(": {t}"))
        .unwrap_or_default()
}

/// An `<iq/>` envelope in `jabber:client`, built with minidom (infallible for any string, where
/// xmpp-parsers' `Element::from` would panic on a serialisation error).
pub(crate) fn iq(type_: &str, from: &str, to: &str, id: &str, payload: Element) -> Element {
    Element::builder("iq", NS_CLIENT)
        .attr(xml_ncname!("type").into(), type_)
        .attr(xml_ncname!("from").into(), from)
        .attr(xml_ncname!("to").into(), to)
        .attr(xml_ncname!("id").into(), id)
        .append(payload)
        .build()
}

fn text_child(el: &Element, name: &str, ns: &str) -> Option<String> {
    el.get_child(name, ns)
        .map(|c| c.text().trim().to_owned())
        .filter(|t| !t.is_empty())
}

fn mam_query(query_id: &str, set: Element) -> Element {
    Element::builder("query", NS_MAM)
        .attr(xml_ncname!("queryid").into(), query_id)
        .append(set)
        .build()
}

/// Asks `room` (from `from`, a JID on our domain) for at most `max` archived messages after the
/// archive id `after`, oldest first; `after = None` asks from the start of the archive.
///
/// ```xml
/// <iq type='set' from='…' to='room@conference.example' id='iq_id'>
///   <query xmlns='urn:xmpp:mam:2' queryid='query_id'>
///     <set xmlns='http://jabber.org/protocol/rsm'><max>10</max><after>ID</after></set>
///   </query>
/// </iq>
/// ```
///
/// Servers cap `max` (Prosody: `max_archive_query_results`, 50 by default): page with
/// [`Fin::last`] until [`Fin::complete`].
pub fn query(
    from: &str,
    room: &str,
    iq_id: &str,
    query_id: &str,
    after: Option<&str>,
    max: usize,
) -> Element {
    let mut set = Element::builder("set", NS_RSM)
        .append(
            Element::builder("max", NS_RSM)
                .append(max.to_string())
                .build(),
        )
        .build();
    if let Some(after) = after {
        set.append_child(
            Element::builder("after", NS_RSM)
                .append(after.to_owned())
                .build(),
        );
    }
    iq("set", from, room, iq_id, mam_query(query_id, set))
}

/// Asks `room` for its newest archived message only (RSM `<max>1</max><before/>`: the last page
/// of size one), to learn the archive's current position without fetching history. The one
/// result (if the archive is not empty) carries the id to pass as `after` next time; the
/// [`Fin`]'s `last` carries it too.
pub fn latest_query(from: &str, room: &str, iq_id: &str, query_id: &str) -> Element {
    let set = Element::builder("set", NS_RSM)
        .append(Element::builder("max", NS_RSM).append("1").build())
        .append(Element::builder("before", NS_RSM).build())
        .build();
    iq("set", from, room, iq_id, mam_query(query_id, set))
}

/// Bare JIDs compare case-insensitively in their ASCII parts (nodeprep/nameprep case-fold).
fn same_jid(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

/// Unwraps a MAM result, if `message` is one sent by `expected_from` (the room being queried,
/// as a bare JID):
///
/// ```xml
/// <message from='room@conference.example' to='…'>
///   <result xmlns='urn:xmpp:mam:2' queryid='…' id='ARCHIVE-ID'>
///     <forwarded xmlns='urn:xmpp:forward:0'>
///       <delay xmlns='urn:xmpp:delay' stamp='2024-01-01T12:00:00Z'/>
///       <message xmlns='jabber:client' from='room@conference.example/nick' type='groupchat'>…
///     </forwarded>
///   </result>
/// </message>
/// ```
///
/// Returns `None` for anything else, including results from another sender (forged history),
/// results without an archive id or `queryid`, and results without a forwarded `<message/>`.
/// The caller matches [`MamItem::query_id`] against the queries it has in flight.
pub fn parse_result(message: &Element, expected_from: &str) -> Option<MamItem> {
    if !message.is("message", NS_CLIENT) {
        return None;
    }
    if !same_jid(message.attr("from")?, expected_from) {
        return None;
    }
    let result = message.get_child("result", NS_MAM)?;
    let archive_id = result.attr("id").filter(|id| !id.is_empty())?.to_owned();
    let query_id = result.attr("queryid").filter(|q| !q.is_empty())?.to_owned();
    let forwarded = result.get_child("forwarded", NS_FORWARD)?;
    let inner = forwarded.get_child("message", NS_CLIENT)?.clone();
    let delay_ms = forwarded
        .get_child("delay", NS_DELAY)
        .and_then(|d| Delay::try_from(d.clone()).ok())
        .and_then(|d| u64::try_from(d.stamp.0.timestamp_millis()).ok());
    Some(MamItem {
        query_id,
        archive_id,
        delay_ms,
        message: inner,
    })
}

/// `(type, condition, text)` of the `<error/>` of an error stanza.
pub(crate) fn stanza_error(stanza: &Element) -> (Option<String>, String, Option<String>) {
    let Some(error) = stanza.get_child("error", NS_CLIENT) else {
        return (None, "undefined-condition".to_owned(), None);
    };
    let condition = error
        .children()
        .find(|c| c.ns() == NS_STANZAS && c.name() != "text")
        .map_or_else(|| "undefined-condition".to_owned(), |c| c.name().to_owned());
    let text = text_child(error, "text", NS_STANZAS);
    (error.attr("type").map(str::to_owned), condition, text)
}

/// Reads the answer to a [`query`] or [`latest_query`]: the `iq type='result'` with `<fin/>`,
/// or the `iq type='error'` ([`MamError::Refused`]). The caller matches the iq by its `id`
/// (and should check that it comes from the room).
pub fn parse_fin(iq_result: &Element) -> Result<Fin, MamError> {
    if !iq_result.is("iq", NS_CLIENT) {
        return Err(MamError::Malformed(format!(
            "<{}> is not an iq",
            iq_result.name()
        )));
    }
    match iq_result.attr("type") {
        Some("result") => {}
        Some("error") => {
            let (_, condition, text) = stanza_error(iq_result);
            return Err(MamError::Refused { condition, text });
        }
        other => {
            return Err(MamError::Malformed(format!("iq of type {other:?}")));
        }
    }
    let fin = iq_result.get_child("fin", NS_MAM).ok_or_else(|| {
        MamError::Malformed("iq result without <fin xmlns='urn:xmpp:mam:2'/>".into())
    })?;
    let complete = matches!(fin.attr("complete"), Some("true" | "1"));
    let (first, last, count) = match fin.get_child("set", NS_RSM) {
        Some(set) => (
            text_child(set, "first", NS_RSM),
            text_child(set, "last", NS_RSM),
            text_child(set, "count", NS_RSM).and_then(|c| c.parse().ok()),
        ),
        None => (None, None, None),
    };
    Ok(Fin {
        complete,
        first,
        last,
        count,
    })
}

#[cfg(test)]
mod tests {
    use xmpp_parsers::mam::Query;

    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    const ROOM: &str = "lobby@conference.localhost";
    const ME: &str = "alice@bridge.localhost/x";

    /// A result exactly as Prosody 0.12.3's mod_muc_mam sent it in the integration test (the
    /// occupant's `<x xmlns='…muc#user'/>` stripped, `to` removed from the inner message, the
    /// stamp in whole seconds), with this module's room and nick.
    const PROSODY_RESULT: &str = "<message xmlns='jabber:client' \
        from='lobby@conference.localhost' to='alice@bridge.localhost/x'>\
        <result xmlns='urn:xmpp:mam:2' id='3VoO3uuWT9LLTBTzSIZmxu-C' queryid='q1'>\
        <forwarded xmlns='urn:xmpp:forward:0'>\
        <delay xmlns='urn:xmpp:delay' stamp='2024-03-01T12:00:01Z'/>\
        <message xmlns='jabber:client' from='lobby@conference.localhost/Bob' id='m1' \
        type='groupchat' xml:lang='en'><body>hello</body>\
        <occupant-id xmlns='urn:xmpp:occupant-id:0' \
        id='Uy7K/u82z0HOPspL1PGQ+Cp9+ElcFC0mZvuViCoaEKU='/>\
        </message></forwarded></result></message>";

    fn el(xml: &str) -> Result<Element, Box<dyn std::error::Error>> {
        Ok(xml.parse()?)
    }

    #[test]
    fn query_after_an_id_parses_as_a_typed_mam_query() -> TestResult {
        let iq = query(ME, ROOM, "iq1", "q1", Some("ARCH-2"), 10);
        assert!(iq.is("iq", NS_CLIENT));
        assert_eq!(iq.attr("type"), Some("set"));
        assert_eq!(iq.attr("to"), Some(ROOM));
        assert_eq!(iq.attr("from"), Some(ME));
        assert_eq!(iq.attr("id"), Some("iq1"));
        let payload = iq.get_child("query", NS_MAM).ok_or("no query")?.clone();
        let typed = Query::try_from(payload)?;
        assert_eq!(typed.queryid.map(|q| q.0).as_deref(), Some("q1"));
        let set = typed.set.ok_or("no rsm set")?;
        assert_eq!(set.max, Some(10));
        assert_eq!(set.after.as_deref(), Some("ARCH-2"));
        assert_eq!(set.before, None);
        assert!(typed.form.is_none());
        Ok(())
    }

    #[test]
    fn query_from_the_start_has_no_after() -> TestResult {
        let iq = query(ME, ROOM, "iq1", "q1", None, 50);
        let payload = iq.get_child("query", NS_MAM).ok_or("no query")?.clone();
        let set = Query::try_from(payload)?.set.ok_or("no rsm set")?;
        assert_eq!(set.max, Some(50));
        assert_eq!(set.after, None);
        Ok(())
    }

    #[test]
    fn latest_query_is_an_empty_before_and_max_one() -> TestResult {
        let iq = latest_query(ME, ROOM, "iq2", "q2");
        let set = iq
            .get_child("query", NS_MAM)
            .and_then(|q| q.get_child("set", NS_RSM))
            .ok_or("no rsm set")?;
        let before = set.get_child("before", NS_RSM).ok_or("no <before/>")?;
        assert!(before.text().is_empty() && before.children().next().is_none());
        assert_eq!(
            set.get_child("max", NS_RSM).map(Element::text).as_deref(),
            Some("1")
        );
        assert!(set.get_child("after", NS_RSM).is_none());
        Ok(())
    }

    #[test]
    fn builders_escape_hostile_strings() -> TestResult {
        let iq = query(ME, ROOM, "i'd\"<&>", "q", Some("</after><evil/>"), 1);
        let mut out = Vec::new();
        iq.write_to(&mut out)?;
        let back: Element = String::from_utf8(out)?.parse()?;
        assert_eq!(back.attr("id"), Some("i'd\"<&>"));
        let after = back
            .get_child("query", NS_MAM)
            .and_then(|q| q.get_child("set", NS_RSM))
            .and_then(|s| s.get_child("after", NS_RSM))
            .ok_or("no after")?;
        assert_eq!(after.text(), "</after><evil/>");
        Ok(())
    }

    #[test]
    fn prosody_result_is_unwrapped() -> TestResult {
        let item = parse_result(&el(PROSODY_RESULT)?, ROOM).ok_or("not recognised")?;
        assert_eq!(item.query_id, "q1");
        assert_eq!(item.archive_id, "3VoO3uuWT9LLTBTzSIZmxu-C");
        assert_eq!(item.delay_ms, Some(1_709_294_401_000));
        assert!(item.message.is("message", NS_CLIENT));
        assert_eq!(
            item.message.attr("from"),
            Some("lobby@conference.localhost/Bob")
        );
        assert_eq!(
            item.message
                .get_child("body", NS_CLIENT)
                .map(Element::text)
                .as_deref(),
            Some("hello")
        );
        // The inner message parses with xmpp-parsers' default types.
        let msg = xmpp_parsers::message::Message::try_from(item.message)?;
        assert_eq!(msg.id.map(|id| id.0).as_deref(), Some("m1"));
        Ok(())
    }

    #[test]
    fn room_jid_comparison_ignores_ascii_case() -> TestResult {
        assert!(parse_result(&el(PROSODY_RESULT)?, "Lobby@Conference.localhost").is_some());
        Ok(())
    }

    #[test]
    fn forged_results_are_refused() -> TestResult {
        // From someone else (a user, or an occupant's full JID inside the room).
        for from in [
            "mallory@localhost/x",
            "lobby@conference.localhost/Bob",
            "conference.localhost",
        ] {
            let forged = PROSODY_RESULT.replace(
                "from='lobby@conference.localhost' to=",
                &format!("from='{from}' to="),
            );
            assert!(parse_result(&el(&forged)?, ROOM).is_none(), "{from}");
        }
        // Without any from.
        let no_from = PROSODY_RESULT.replace("from='lobby@conference.localhost' to=", "to=");
        assert!(parse_result(&el(&no_from)?, ROOM).is_none());
        Ok(())
    }

    #[test]
    fn incomplete_results_are_not_items() -> TestResult {
        let no_id = PROSODY_RESULT.replace(" id='3VoO3uuWT9LLTBTzSIZmxu-C'", "");
        assert!(parse_result(&el(&no_id)?, ROOM).is_none());
        let no_queryid = PROSODY_RESULT.replace(" queryid='q1'", "");
        assert!(parse_result(&el(&no_queryid)?, ROOM).is_none());
        let old_ns = PROSODY_RESULT.replace("urn:xmpp:mam:2", "urn:xmpp:mam:1");
        assert!(parse_result(&el(&old_ns)?, ROOM).is_none());
        let no_inner = el(
            "<message xmlns='jabber:client' from='lobby@conference.localhost'>\
            <result xmlns='urn:xmpp:mam:2' queryid='q' id='A'>\
            <forwarded xmlns='urn:xmpp:forward:0'/></result></message>",
        )?;
        assert!(parse_result(&no_inner, ROOM).is_none());
        // A live groupchat message is not a result.
        let live = el(
            "<message xmlns='jabber:client' from='lobby@conference.localhost' \
            type='groupchat'><body>x</body></message>",
        )?;
        assert!(parse_result(&live, ROOM).is_none());
        // Not a message at all.
        assert!(
            parse_result(
                &el("<iq xmlns='jabber:client' from='lobby@conference.localhost'/>")?,
                ROOM
            )
            .is_none()
        );
        Ok(())
    }

    #[test]
    fn missing_or_bad_delay_is_none_not_an_error() -> TestResult {
        let no_delay = PROSODY_RESULT.replace(
            "<delay xmlns='urn:xmpp:delay' stamp='2024-03-01T12:00:01Z'/>",
            "",
        );
        let item = parse_result(&el(&no_delay)?, ROOM).ok_or("not recognised")?;
        assert_eq!(item.delay_ms, None);
        for stamp in ["yesterday", "1960-01-01T00:00:00Z", ""] {
            let bad = PROSODY_RESULT.replace("2024-03-01T12:00:01Z", stamp);
            let item = parse_result(&el(&bad)?, ROOM).ok_or("not recognised")?;
            assert_eq!(item.delay_ms, None, "{stamp}");
        }
        // Fractional seconds and offsets.
        let frac = PROSODY_RESULT.replace("2024-03-01T12:00:01Z", "2024-03-01T13:00:01.250+01:00");
        let item = parse_result(&el(&frac)?, ROOM).ok_or("not recognised")?;
        assert_eq!(item.delay_ms, Some(1_709_294_401_250));
        Ok(())
    }

    #[test]
    fn prosody_fin_complete() -> TestResult {
        let fin = parse_fin(&el("<iq xmlns='jabber:client' type='result' id='iq1' \
            from='lobby@conference.localhost' to='alice@bridge.localhost/x'>\
            <fin xmlns='urn:xmpp:mam:2' complete='true'>\
            <set xmlns='http://jabber.org/protocol/rsm'>\
            <first>A1</first><last>A3</last><count>3</count></set></fin></iq>")?)?;
        assert_eq!(
            fin,
            Fin {
                complete: true,
                first: Some("A1".into()),
                last: Some("A3".into()),
                count: Some(3),
            }
        );
        Ok(())
    }

    #[test]
    fn fin_without_complete_is_a_partial_page() -> TestResult {
        // Prosody omits `complete` on a partial page; RSM's <first> may carry index.
        let fin = parse_fin(&el("<iq xmlns='jabber:client' type='result' id='iq1'>\
            <fin xmlns='urn:xmpp:mam:2'><set xmlns='http://jabber.org/protocol/rsm'>\
            <first index='0'>A1</first><last>A2</last></set></fin></iq>")?)?;
        assert!(!fin.complete);
        assert_eq!(fin.first.as_deref(), Some("A1"));
        assert_eq!(fin.last.as_deref(), Some("A2"));
        assert_eq!(fin.count, None);
        Ok(())
    }

    #[test]
    fn empty_archive_fin() -> TestResult {
        let fin = parse_fin(&el("<iq xmlns='jabber:client' type='result' id='iq1'>\
            <fin xmlns='urn:xmpp:mam:2' complete='true'>\
            <set xmlns='http://jabber.org/protocol/rsm'><count>0</count></set></fin></iq>")?)?;
        assert!(fin.complete);
        assert_eq!((fin.first, fin.last, fin.count), (None, None, Some(0)));
        // No <set/> at all, and a garbage count.
        let fin = parse_fin(&el("<iq xmlns='jabber:client' type='result' id='iq1'>\
            <fin xmlns='urn:xmpp:mam:2' complete='1'/></iq>")?)?;
        assert!(fin.complete && fin.last.is_none());
        let fin = parse_fin(&el("<iq xmlns='jabber:client' type='result' id='iq1'>\
            <fin xmlns='urn:xmpp:mam:2'><set xmlns='http://jabber.org/protocol/rsm'>\
            <count>-1</count></set></fin></iq>")?)?;
        assert_eq!(fin.count, None);
        Ok(())
    }

    #[test]
    fn item_not_found_is_refused() -> TestResult {
        // Prosody's answer when `after` is not in the archive.
        let err = parse_fin(&el("<iq xmlns='jabber:client' type='error' id='iq1' \
            from='lobby@conference.localhost'>\
            <error type='modify'>\
            <item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>")?)
        .err()
        .ok_or("must fail")?;
        assert!(err.is_item_not_found(), "{err:?}");
        assert_eq!(
            err.to_string(),
            "the archive refused the query: item-not-found"
        );

        let err = parse_fin(&el("<iq xmlns='jabber:client' type='error' id='iq1'>\
            <error type='auth'><forbidden xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>\
            <text xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'>members only</text></error></iq>")?)
        .err()
        .ok_or("must fail")?;
        assert_eq!(
            err,
            MamError::Refused {
                condition: "forbidden".into(),
                text: Some("members only".into())
            }
        );
        assert!(!err.is_item_not_found());
        // An error without an <error/> child still is a refusal.
        let err = parse_fin(&el("<iq xmlns='jabber:client' type='error' id='iq1'/>")?)
            .err()
            .ok_or("must fail")?;
        assert!(
            matches!(err, MamError::Refused { ref condition, .. } if condition == "undefined-condition")
        );
        Ok(())
    }

    #[test]
    fn other_answers_are_malformed() -> TestResult {
        for xml in [
            "<iq xmlns='jabber:client' type='result' id='iq1'/>",
            "<iq xmlns='jabber:client' type='get' id='iq1'/>",
            "<iq xmlns='jabber:client' id='iq1'/>",
            "<iq xmlns='jabber:client' type='result'><fin xmlns='urn:xmpp:mam:1'/></iq>",
            "<message xmlns='jabber:client' type='result'/>",
        ] {
            let r = parse_fin(&el(xml)?);
            assert!(matches!(r, Err(MamError::Malformed(_))), "{xml}: {r:?}");
        }
        Ok(())
    }
}
