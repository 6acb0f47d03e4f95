//! Large byte strings taken out of a stored value, so that a value written again and again can
//! refer to them instead of carrying them.
//!
//! openmls writes a member's message secrets after every message it sends or decrypts, and
//! they hold the serialised group context of the current epoch and of each past epoch kept
//! (RFC 9420 FramedContentTBS signs it, so openmls keeps it ready). In a MIMI room that context
//! carries the participant list: ~38 kB in a 1,000-member room, against ~2 kB of secrets, and
//! alike for every member in an epoch. `mls::pack` notes where such byte strings are
//! in a value's MessagePack encoding; [`Split`] is the value without them plus where they go
//! back.
//!
//! The split layout, after its tag byte: the number of parts taken out (`u8`), then for each,
//! in increasing order of position, its position in the whole value (`u32`, big-endian), its
//! length (`u32`) and the key it is stored under (`u16` length, then the key); then the value
//! with those byte strings' contents left out (their MessagePack headers stay).

use std::ops::Range;

/// The smallest byte string worth storing apart.
pub const MIN_PART: usize = 1024;

/// The most parts one value is split into: their count is one byte.
pub const MAX_PARTS: usize = u8::MAX as usize;

/// A split value is not well formed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Malformed(&'static str);

/// Reads `n` big-endian bytes at `at`.
fn uint(value: &[u8], at: usize, n: usize) -> Option<usize> {
    let bytes = value.get(at..at + n)?;
    Some(
        bytes
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b)),
    )
}

/// A value with some byte strings taken out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split<'a> {
    /// Each part taken out: where it goes in the whole value, its length and its key.
    pub parts: Vec<(usize, usize, &'a [u8])>,
    /// The value without the parts' contents.
    pub rest: &'a [u8],
}

impl<'a> Split<'a> {
    /// Encodes `value` without the byte ranges `parts` (in order, not overlapping, at most
    /// [`MAX_PARTS`]: any after those stay in the value), each stored under the key given with
    /// it, after `tag`.
    pub fn encode(tag: u8, value: &[u8], parts: &[(Range<usize>, Vec<u8>)]) -> Vec<u8> {
        let parts = &parts[..parts.len().min(MAX_PARTS)];
        let taken: usize = parts.iter().map(|(range, _)| range.len()).sum();
        let mut out = Vec::with_capacity(value.len() - taken + 2 + parts.len() * 64);
        out.push(tag);
        out.push(u8::try_from(parts.len()).unwrap_or(u8::MAX));
        for (range, key) in parts {
            out.extend_from_slice(&u32::try_from(range.start).unwrap_or(u32::MAX).to_be_bytes());
            out.extend_from_slice(&u32::try_from(range.len()).unwrap_or(u32::MAX).to_be_bytes());
            out.extend_from_slice(&u16::try_from(key.len()).unwrap_or(u16::MAX).to_be_bytes());
            out.extend_from_slice(key);
        }
        let mut from = 0;
        for (range, _) in parts {
            out.extend_from_slice(&value[from..range.start]);
            from = range.end;
        }
        out.extend_from_slice(&value[from..]);
        out
    }

    /// Reads a split value (after its tag byte).
    pub fn decode(bytes: &'a [u8]) -> Result<Self, Malformed> {
        const SHORT: Malformed = Malformed("truncated split value");
        let (&count, mut rest) = bytes.split_first().ok_or(SHORT)?;
        let mut parts = Vec::with_capacity(usize::from(count));
        let mut previous_end = 0usize;
        for _ in 0..count {
            let at = uint(rest, 0, 4).ok_or(SHORT)?;
            let len = uint(rest, 4, 4).ok_or(SHORT)?;
            let key_len = uint(rest, 8, 2).ok_or(SHORT)?;
            let key = rest.get(10..10 + key_len).ok_or(SHORT)?;
            if at < previous_end {
                return Err(Malformed("split value parts out of order"));
            }
            previous_end = at + len;
            parts.push((at, len, key));
            rest = &rest[10 + key_len..];
        }
        Ok(Self { parts, rest })
    }

    /// The keys of the parts.
    pub fn keys(&self) -> impl Iterator<Item = &'a [u8]> + '_ {
        self.parts.iter().map(|&(_, _, key)| key)
    }

    /// The whole value, with `contents[i]` the contents of the `i`-th part.
    pub fn join(&self, contents: &[Vec<u8>]) -> Result<Vec<u8>, Malformed> {
        if contents.len() != self.parts.len() {
            return Err(Malformed("a split value's parts are missing"));
        }
        let total = self.rest.len() + contents.iter().map(Vec::len).sum::<usize>();
        let mut out = Vec::with_capacity(total);
        let mut from = 0;
        for (&(at, len, _), part) in self.parts.iter().zip(contents) {
            let before = at
                .checked_sub(out.len())
                .ok_or(Malformed("split value parts overlap"))?;
            let inline = self
                .rest
                .get(from..from + before)
                .ok_or(Malformed("a part's position is beyond the value"))?;
            out.extend_from_slice(inline);
            from += before;
            if part.len() != len {
                return Err(Malformed("a stored part has the wrong length"));
            }
            out.extend_from_slice(part);
        }
        out.extend_from_slice(&self.rest[from..]);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A value with two large parts: (the value, the parts' ranges).
    fn sample() -> (Vec<u8>, Vec<Range<usize>>) {
        let mut value = b"head".to_vec();
        value.extend_from_slice(&[1; 5000]);
        value.extend_from_slice(b"middle");
        value.extend_from_slice(&[2; 3000]);
        value.extend_from_slice(b"tail");
        (value, vec![4..5004, 5010..8010])
    }

    #[test]
    fn a_split_value_is_joined_back_from_its_parts() {
        let (value, ranges) = sample();
        let parts: Vec<(Range<usize>, Vec<u8>)> = ranges
            .iter()
            .enumerate()
            .map(|(i, r)| (r.clone(), format!("key{i}").into_bytes()))
            .collect();
        let encoded = Split::encode(2, &value, &parts);
        assert_eq!(encoded[0], 2);
        assert!(encoded.len() < 100);
        let split = Split::decode(&encoded[1..]).expect("decode");
        assert_eq!(split.keys().collect::<Vec<_>>(), [b"key0", b"key1"]);
        assert_eq!(split.rest, b"headmiddletail");
        let contents: Vec<Vec<u8>> = ranges.iter().map(|r| value[r.clone()].to_vec()).collect();
        assert_eq!(split.join(&contents).expect("join"), value);
        // A part at the very end, and none at all.
        let end = Split::encode(2, &value, &[(8010..8014, b"k".to_vec())]);
        let split = Split::decode(&end[1..]).expect("decode");
        assert_eq!(split.join(&[b"tail".to_vec()]).expect("join"), value);
        // Past MAX_PARTS, parts stay in the value.
        let many: Vec<(Range<usize>, Vec<u8>)> = (0..300)
            .map(|i| (i * 10..i * 10 + 5, b"k".to_vec()))
            .collect();
        let split_many = Split::encode(2, &value, &many);
        let split = Split::decode(&split_many[1..]).expect("decode");
        assert_eq!(split.parts.len(), MAX_PARTS);
        let contents: Vec<Vec<u8>> = many[..MAX_PARTS]
            .iter()
            .map(|(r, _)| value[r.clone()].to_vec())
            .collect();
        assert_eq!(split.join(&contents).expect("join"), value);
        let whole = Split::encode(2, &value, &[]);
        assert_eq!(
            Split::decode(&whole[1..])
                .expect("decode")
                .join(&[])
                .expect("join"),
            value
        );
    }

    #[test]
    fn a_wrong_part_or_a_bad_value_is_an_error_not_a_panic() {
        let (value, ranges) = sample();
        let parts: Vec<_> = ranges.iter().map(|r| (r.clone(), b"k".to_vec())).collect();
        let encoded = Split::encode(2, &value, &parts);
        let split = Split::decode(&encoded[1..]).expect("decode");
        let right: Vec<Vec<u8>> = ranges.iter().map(|r| value[r.clone()].to_vec()).collect();
        assert!(split.join(&[vec![1; 5000], vec![2; 2999]]).is_err());
        assert!(split.join(&right[..1]).is_err());
        for cut in 1..encoded.len() {
            if let Ok(split) = Split::decode(&encoded[1..cut]) {
                let _ = split.join(&right);
            }
        }
        // Parts out of order or beyond the value.
        let mut swapped = encoded.clone();
        swapped[2..6].copy_from_slice(&9000u32.to_be_bytes());
        assert!(Split::decode(&swapped[1..]).is_err());
        let mut beyond = encoded;
        beyond[13..17].copy_from_slice(&90_000u32.to_be_bytes());
        let split = Split::decode(&beyond[1..]).expect("in order");
        assert!(split.join(&right).is_err());
    }
}
