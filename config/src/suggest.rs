//! "Did you mean …?" suggestions for misspelled keys, enum values and ids.

/// Returns the candidate closest to `word`, if it is close enough to be a
/// plausible misspelling.
///
/// Closeness is the optimal-string-alignment edit distance (insertions,
/// deletions, substitutions and swaps of two neighbouring characters),
/// compared case-insensitively. A word of up to 3 characters may be 1 edit
/// away, up to 7 characters 2 edits, longer words 3 edits. Ties go to the
/// earliest candidate. An exact match is never suggested.
///
/// ```
/// let keys = ["data_dir", "log_format", "log_level", "metrics_addr"];
/// assert_eq!(bridge_config::did_you_mean("data_dri", keys), Some("data_dir"));
/// assert_eq!(bridge_config::did_you_mean("colour", keys), None);
/// ```
pub fn did_you_mean<'a, I>(word: &str, candidates: I) -> Option<&'a str>
where
    I: IntoIterator<Item = &'a str>,
{
    let lowered: Vec<char> = word.to_lowercase().chars().collect();
    let limit = match lowered.len() {
        0 => return None,
        1..=3 => 1,
        4..=7 => 2,
        _ => 3,
    };
    let mut best: Option<(usize, &'a str)> = None;
    for candidate in candidates {
        if candidate == word {
            continue;
        }
        let other: Vec<char> = candidate.to_lowercase().chars().collect();
        let distance = edit_distance(&lowered, &other);
        if distance <= limit && best.is_none_or(|(d, _)| distance < d) {
            best = Some((distance, candidate));
        }
    }
    best.map(|(_, candidate)| candidate)
}

/// Formats the " (did you mean \"x\"?)" suffix, or nothing.
pub(crate) fn suggestion_suffix<'a, I>(word: &str, candidates: I) -> String
where
    I: IntoIterator<Item = &'a str>,
{
    match did_you_mean(word, candidates) {
        Some(candidate) => format!(" (did you mean {candidate:?}?)"),
        None => String::new(),
    }
}

/// Optimal string alignment distance between two character slices.
fn edit_distance(a: &[char], b: &[char]) -> usize {
    let width = b.len() + 1;
    // Three rolling rows: two rows back (for swaps), previous, current.
    let mut before: Vec<usize> = vec![0; width];
    let mut previous: Vec<usize> = (0..width).collect();
    let mut current: Vec<usize> = vec![0; width];
    for i in 1..=a.len() {
        current[0] = i;
        for j in 1..width {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut value = (previous[j] + 1)
                .min(current[j - 1] + 1)
                .min(previous[j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                value = value.min(before[j - 2] + 1);
            }
            current[j] = value;
        }
        std::mem::swap(&mut before, &mut previous);
        std::mem::swap(&mut previous, &mut current);
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn distance(a: &str, b: &str) -> usize {
        let a: Vec<char> = a.chars().collect();
        let b: Vec<char> = b.chars().collect();
        edit_distance(&a, &b)
    }

    #[test]
    fn distances() {
        assert_eq!(distance("", ""), 0);
        assert_eq!(distance("abc", ""), 3);
        assert_eq!(distance("", "abc"), 3);
        assert_eq!(distance("kitten", "sitting"), 3);
        assert_eq!(distance("data_dri", "data_dir"), 1);
        assert_eq!(distance("reply", "reply"), 0);
    }

    #[test]
    fn suggestions() {
        let values = ["fallback", "drop"];
        assert_eq!(did_you_mean("fallbak", values), Some("fallback"));
        assert_eq!(did_you_mean("Drop", values), Some("drop"));
        assert_eq!(did_you_mean("drop", values), None);
        assert_eq!(did_you_mean("notice", values), None);
        assert_eq!(did_you_mean("", values), None);
        assert_eq!(did_you_mean("rooms", ["bridge", "room"]), Some("room"));
        assert_eq!(
            suggestion_suffix("jsn", ["human", "json"]),
            " (did you mean \"json\"?)"
        );
        assert_eq!(suggestion_suffix("xml", ["human", "json"]), "");
    }
}
