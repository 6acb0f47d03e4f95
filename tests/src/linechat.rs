//! Counting what a line-chat server got from the bridge, for the crash tests: per room, the
//! messages `"<prefix> <n>"` (n counting from 0 in each room) must each arrive once, in order.

use std::collections::HashMap;

use bridge_example_linechat::server::Server;

/// What a side received.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Distinct expected messages received (at most `per_room` per room).
    pub delivered: usize,
    /// Copies beyond the first.
    pub duplicated: usize,
    /// Messages whose number is not above the previous one in their room.
    pub out_of_order: usize,
}

/// Counts the bridge's messages starting with `text_prefix` in rooms `<room_prefix>0` ..
/// `<room_prefix><rooms - 1>` of `server`; others (joins, greetings) are ignored.
pub fn count(
    server: &Server,
    room_prefix: &str,
    rooms: usize,
    text_prefix: &str,
    per_room: usize,
) -> Counts {
    let mut counts = Counts::default();
    for r in 0..rooms {
        let mut seen: HashMap<String, usize> = HashMap::new();
        let mut last: Option<usize> = None;
        for m in server.from_bridge(&format!("{room_prefix}{r}")) {
            let Some(index) = m
                .text
                .strip_prefix(text_prefix)
                .and_then(|rest| rest.trim().parse::<usize>().ok())
            else {
                continue;
            };
            *seen.entry(m.text.clone()).or_default() += 1;
            if last.is_some_and(|l| index <= l) {
                counts.out_of_order += 1;
            }
            last = Some(index);
        }
        counts.delivered += seen.len().min(per_room);
        counts.duplicated += seen.values().map(|n| n - 1).sum::<usize>();
    }
    counts
}
