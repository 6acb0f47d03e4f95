//! Small JID helpers: splitting, and XEP-0106 escaping for puppet localparts.

/// `(bare, resource)` of a JID string; the resource is `None` for a bare JID.
pub fn split(jid: &str) -> (&str, Option<&str>) {
    match jid.split_once('/') {
        Some((bare, resource)) => (bare, Some(resource)),
        None => (jid, None),
    }
}

/// The bare part of a JID.
pub fn bare(jid: &str) -> &str {
    split(jid).0
}

/// True when `jid` looks like `local@domain` or `domain` with an optional resource: no
/// whitespace or control characters in the bare part, a non-empty domain. (Servers validate
/// fully; this only keeps garbage out of keys and logs.)
pub fn is_plausible(jid: &str) -> bool {
    let (bare, resource) = split(jid);
    let domain = bare.rsplit_once('@').map_or(bare, |(_, d)| d);
    let clean = |s: &str| !s.chars().any(|c| c.is_whitespace() || c.is_control());
    !domain.is_empty()
        && clean(bare)
        && resource.is_none_or(|r| !r.is_empty() && !r.chars().any(char::is_control))
        && jid.len() <= 3071
}

/// Escapes `text` for use as a JID localpart (XEP-0106): the characters a localpart may not
/// hold become `\20`, `\22`, `\26`, `\27`, `\2f`, `\3a`, `\3c`, `\3e`, `\40`, and a backslash
/// that would read as an escape becomes `\5c`. Letters are lower-cased (servers fold case in
/// localparts anyway, so two IDs differing only in case share a puppet); control characters
/// are dropped.
pub fn escape_localpart(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    let chars: Vec<char> = text.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        match c {
            ' ' => out.push_str("\\20"),
            '"' => out.push_str("\\22"),
            '&' => out.push_str("\\26"),
            '\'' => out.push_str("\\27"),
            '/' => out.push_str("\\2f"),
            ':' => out.push_str("\\3a"),
            '<' => out.push_str("\\3c"),
            '>' => out.push_str("\\3e"),
            '@' => out.push_str("\\40"),
            '\\' if starts_escape(&chars[i + 1..]) => out.push_str("\\5c"),
            c if c.is_control() || c.is_whitespace() => {}
            c => out.extend(c.to_lowercase()),
        }
    }
    out
}

/// The inverse of [`escape_localpart`] (up to case).
pub fn unescape_localpart(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find('\\') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        let decoded = after.get(..2).and_then(|hex| match hex {
            "20" => Some(' '),
            "22" => Some('"'),
            "26" => Some('&'),
            "27" => Some('\''),
            "2f" => Some('/'),
            "3a" => Some(':'),
            "3c" => Some('<'),
            "3e" => Some('>'),
            "40" => Some('@'),
            "5c" => Some('\\'),
            _ => None,
        });
        match decoded {
            Some(c) => {
                out.push(c);
                rest = &after[2..];
            }
            None => {
                out.push('\\');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

fn starts_escape(rest: &[char]) -> bool {
    let hex: String = rest.iter().take(2).collect();
    matches!(
        hex.as_str(),
        "20" | "22" | "26" | "27" | "2f" | "3a" | "3c" | "3e" | "40" | "5c"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_what_a_localpart_cannot_hold_and_round_trips() {
        let matrix = "matrix.@Alice:example.org";
        let escaped = escape_localpart(matrix);
        assert_eq!(escaped, "matrix.\\40alice\\3aexample.org");
        assert_eq!(unescape_localpart(&escaped), matrix.to_lowercase());
        for hostile in [
            "a b/c<d>e&f'g\"h",
            "back\\20slash",
            "\\5c",
            "ünïcødé@x",
            "\u{0}\n",
        ] {
            let e = escape_localpart(hostile);
            assert!(
                !e.contains(['@', '/', ' ', '<', '>', '&', '\'', '"', ':']),
                "{e}"
            );
            let lowered: String = hostile.chars().filter(|c| !c.is_control()).collect();
            assert_eq!(unescape_localpart(&e), lowered.to_lowercase(), "{hostile}");
        }
    }

    #[test]
    fn splits_and_judges_jids() {
        assert_eq!(split("a@b/c/d"), ("a@b", Some("c/d")));
        assert_eq!(bare("room@conf.example"), "room@conf.example");
        assert!(is_plausible("room@conf.example/Nick with spaces"));
        assert!(!is_plausible("bad jid@x"));
        assert!(!is_plausible("@"));
        assert!(!is_plausible("a@b/"));
    }
}
