//! The subset of CBOR (RFC 8949) that MIMI content uses, in its deterministic encoding (§4.2.1).
//!
//! The [`Reader`] accepts only deterministic CBOR: every argument in its shortest form, definite
//! lengths, map keys sorted bytewise by their encoding and unique. So whatever it accepts
//! re-encodes byte for byte. Floating-point values are accepted inside extensions without a
//! check of their width (the draft discourages them). Every read is bounds-checked and never
//! panics; lengths are checked against the bytes left before anything is allocated.

use super::ContentError;

/// Major types.
pub(crate) const UINT: u8 = 0;
pub(crate) const NINT: u8 = 1;
pub(crate) const BYTES: u8 = 2;
pub(crate) const TEXT: u8 = 3;
pub(crate) const ARRAY: u8 = 4;
pub(crate) const MAP: u8 = 5;
pub(crate) const TAG: u8 = 6;
pub(crate) const SIMPLE: u8 = 7;

/// The encodings of `false`, `true` and `null`.
pub(crate) const FALSE: u8 = 0xf4;
pub(crate) const TRUE: u8 = 0xf5;
pub(crate) const NULL: u8 = 0xf6;

/// The head of a data item: major type, additional information and argument.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Head {
    pub major: u8,
    pub arg: u64,
    /// Offset of the initial byte.
    pub at: usize,
}

/// A cursor over an encoded message.
#[derive(Debug)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    /// The current offset.
    pub fn pos(&self) -> usize {
        self.pos
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// The bytes from `start` to the current offset.
    pub fn since(&self, start: usize) -> &'a [u8] {
        self.buf.get(start..self.pos).unwrap_or_default()
    }

    /// The next byte, not consumed.
    pub fn peek(&self) -> Option<u8> {
        self.buf.get(self.pos).copied()
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], ContentError> {
        let end = self.pos.checked_add(n).ok_or(ContentError::Truncated)?;
        let bytes = self.buf.get(self.pos..end).ok_or(ContentError::Truncated)?;
        self.pos = end;
        Ok(bytes)
    }

    /// Reads a head, refusing reserved values, indefinite lengths and arguments that are not in
    /// their shortest form.
    pub fn head(&mut self) -> Result<Head, ContentError> {
        let at = self.pos;
        let initial = *self.take(1)?.first().ok_or(ContentError::Truncated)?;
        let (major, info) = (initial >> 5, initial & 0x1f);
        let arg = match info {
            0..=23 => u64::from(info),
            24..=27 => {
                let bytes = self.take(1 << (info - 24))?;
                bytes.iter().fold(0u64, |acc, b| acc << 8 | u64::from(*b))
            }
            28..=30 => {
                return Err(ContentError::Malformed {
                    at,
                    reason: "reserved additional information",
                });
            }
            _ if major == SIMPLE => {
                return Err(ContentError::Malformed {
                    at,
                    reason: "a \"break\" outside an indefinite-length item",
                });
            }
            _ if major == UINT || major == NINT || major == TAG => {
                return Err(ContentError::Malformed {
                    at,
                    reason: "an integer or tag with additional information 31",
                });
            }
            _ => {
                return Err(ContentError::NotDeterministic {
                    at,
                    reason: "indefinite length",
                });
            }
        };
        if major == SIMPLE {
            // 25..=27 are floats, whose argument is a bit pattern; 24 is a simple value, which
            // must not repeat one of the one-byte forms.
            if info == 24 && arg < 32 {
                return Err(ContentError::Malformed {
                    at,
                    reason: "a two-byte simple value below 32",
                });
            }
        } else {
            let shortest = match info {
                24 => arg >= 24,
                25 => arg > 0xff,
                26 => arg > 0xffff,
                27 => arg > 0xffff_ffff,
                _ => true,
            };
            if !shortest {
                return Err(ContentError::NotDeterministic {
                    at,
                    reason: "an argument not in its shortest form",
                });
            }
        }
        Ok(Head { major, arg, at })
    }

    /// Reads a head of major type `major`.
    fn expect(
        &mut self,
        major: u8,
        field: &'static str,
        expected: &'static str,
    ) -> Result<Head, ContentError> {
        let head = self.head()?;
        if head.major == major {
            Ok(head)
        } else {
            Err(ContentError::WrongType {
                at: head.at,
                field,
                expected,
            })
        }
    }

    /// Reads an unsigned integer.
    pub fn uint(&mut self, field: &'static str) -> Result<u64, ContentError> {
        Ok(self.expect(UINT, field, "an unsigned integer")?.arg)
    }

    /// Reads an unsigned integer no larger than `max`.
    pub fn uint_max(&mut self, field: &'static str, max: u64) -> Result<u64, ContentError> {
        let at = self.pos;
        let value = self.uint(field)?;
        if value > max {
            return Err(ContentError::Invalid {
                at,
                field,
                reason: "value out of range",
            });
        }
        Ok(value)
    }

    /// Reads a byte string.
    pub fn bytes(&mut self, field: &'static str) -> Result<&'a [u8], ContentError> {
        let head = self.expect(BYTES, field, "a byte string")?;
        self.payload(head.arg)
    }

    /// Reads a text string.
    pub fn text(&mut self, field: &'static str) -> Result<&'a str, ContentError> {
        let head = self.expect(TEXT, field, "a text string")?;
        self.text_payload(head)
    }

    /// Reads the payload of a text string whose head was just read.
    pub fn text_payload(&mut self, head: Head) -> Result<&'a str, ContentError> {
        let bytes = self.payload(head.arg)?;
        std::str::from_utf8(bytes).map_err(|_| ContentError::Malformed {
            at: head.at,
            reason: "a text string that is not UTF-8",
        })
    }

    fn payload(&mut self, len: u64) -> Result<&'a [u8], ContentError> {
        let len = usize::try_from(len).map_err(|_| ContentError::Truncated)?;
        self.take(len)
    }

    /// Reads an array head and returns its length, which is no more than the bytes left (each
    /// element takes at least one).
    pub fn array(&mut self, field: &'static str) -> Result<usize, ContentError> {
        let head = self.expect(ARRAY, field, "an array")?;
        self.count(head.arg, 1)
    }

    /// Reads a map head and returns its number of pairs.
    pub fn map(&mut self, field: &'static str) -> Result<usize, ContentError> {
        let head = self.expect(MAP, field, "a map")?;
        self.count(head.arg, 2)
    }

    fn count(&self, n: u64, min_bytes: u64) -> Result<usize, ContentError> {
        match n.checked_mul(min_bytes) {
            Some(need) if need <= self.remaining() as u64 => {
                usize::try_from(n).map_err(|_| ContentError::Truncated)
            }
            _ => Err(ContentError::Truncated),
        }
    }

    /// Reads an array head that must have exactly `len` elements.
    pub fn array_of(&mut self, field: &'static str, len: usize) -> Result<(), ContentError> {
        let at = self.pos;
        if self.array(field)? == len {
            Ok(())
        } else {
            Err(ContentError::Invalid {
                at,
                field,
                reason: "an array with the wrong number of elements",
            })
        }
    }

    /// Reads a boolean.
    pub fn bool(&mut self, field: &'static str) -> Result<bool, ContentError> {
        let at = self.pos;
        match self.take(1)?.first() {
            Some(&FALSE) => Ok(false),
            Some(&TRUE) => Ok(true),
            _ => Err(ContentError::WrongType {
                at,
                field,
                expected: "a boolean",
            }),
        }
    }

    /// Consumes a `null` if one is next.
    pub fn null(&mut self) -> bool {
        let null = self.peek() == Some(NULL);
        if null {
            self.pos += 1;
        }
        null
    }

    /// Checks one complete data item of any type, `level` being the depth a map, array or tag
    /// found here would have (§6 of the draft counts the extensions map as level 1); a map,
    /// array or tag deeper than `max_level` is refused. Map keys must be integers, text or byte
    /// strings, sorted and unique. Uses its own stack, so hostile nesting costs no recursion.
    pub fn skip_value(&mut self, level: usize, max_level: usize) -> Result<(), ContentError> {
        // An open map, array or tag: the items left to read in it, and for a map the span of
        // the previous key.
        struct Frame {
            left: u64,
            map: bool,
            prev_key: Option<(usize, usize)>,
        }
        let mut stack: Vec<Frame> = Vec::new();
        let mut done = false;
        loop {
            match stack.last() {
                Some(frame) if frame.left == 0 => {
                    stack.pop();
                    continue;
                }
                None if done => return Ok(()),
                _ => {}
            }
            let depth = level + stack.len();
            let is_key = stack
                .last()
                .is_some_and(|f| f.map && f.left.is_multiple_of(2));
            let start = self.pos;
            let head = self.head()?;
            match stack.last_mut() {
                Some(frame) => frame.left -= 1,
                None => done = true,
            }
            if is_key && !matches!(head.major, UINT | NINT | BYTES | TEXT) {
                return Err(ContentError::BadExtensionKey(
                    "a map key inside an extension that is not an integer, text or bytes",
                ));
            }
            match head.major {
                UINT | NINT | SIMPLE => {}
                BYTES => {
                    self.payload(head.arg)?;
                }
                TEXT => {
                    let bytes = self.payload(head.arg)?;
                    if std::str::from_utf8(bytes).is_err() {
                        return Err(ContentError::Malformed {
                            at: head.at,
                            reason: "a text string that is not UTF-8",
                        });
                    }
                }
                _ => {
                    if depth > max_level {
                        return Err(ContentError::ExtensionTooDeep { max: max_level });
                    }
                    let (left, map) = match head.major {
                        ARRAY => (self.count(head.arg, 1)? as u64, false),
                        MAP => (self.count(head.arg, 2)? as u64 * 2, true),
                        _ => (1, false), // a tag: one item follows
                    };
                    stack.push(Frame {
                        left,
                        map,
                        prev_key: None,
                    });
                    continue;
                }
            }
            if is_key {
                let this = (start, self.pos);
                if let Some(frame) = stack.last_mut() {
                    if let Some(prev) = frame.prev_key {
                        let prev = self.buf.get(prev.0..prev.1).unwrap_or_default();
                        let key = self.buf.get(this.0..this.1).unwrap_or_default();
                        match prev.cmp(key) {
                            std::cmp::Ordering::Less => {}
                            std::cmp::Ordering::Equal => {
                                return Err(ContentError::DuplicateExtension(
                                    "(a key of a map inside an extension)".into(),
                                ));
                            }
                            std::cmp::Ordering::Greater => {
                                return Err(ContentError::NotDeterministic {
                                    at: start,
                                    reason: "map keys not in bytewise order",
                                });
                            }
                        }
                    }
                    frame.prev_key = Some(this);
                }
            }
        }
    }
}

/// An encoder that writes every argument in its shortest form.
#[derive(Debug, Default)]
pub(crate) struct Writer {
    pub out: Vec<u8>,
}

impl Writer {
    /// Writes a head.
    pub fn head(&mut self, major: u8, arg: u64) {
        let major = major << 5;
        if arg < 24 {
            self.out.push(major | arg as u8);
        } else if arg <= 0xff {
            self.out.extend([major | 24, arg as u8]);
        } else if arg <= 0xffff {
            self.out.push(major | 25);
            self.out.extend((arg as u16).to_be_bytes());
        } else if arg <= 0xffff_ffff {
            self.out.push(major | 26);
            self.out.extend((arg as u32).to_be_bytes());
        } else {
            self.out.push(major | 27);
            self.out.extend(arg.to_be_bytes());
        }
    }

    pub fn uint(&mut self, value: u64) {
        self.head(UINT, value);
    }

    /// Writes a signed integer.
    pub fn int(&mut self, value: i64) {
        if value >= 0 {
            self.head(UINT, value.unsigned_abs());
        } else {
            // -1 - n encodes as n.
            self.head(NINT, (-1 - value).unsigned_abs());
        }
    }

    pub fn bytes(&mut self, bytes: &[u8]) {
        self.head(BYTES, bytes.len() as u64);
        self.out.extend_from_slice(bytes);
    }

    pub fn text(&mut self, text: &str) {
        self.head(TEXT, text.len() as u64);
        self.out.extend_from_slice(text.as_bytes());
    }

    pub fn array(&mut self, len: usize) {
        self.head(ARRAY, len as u64);
    }

    pub fn map(&mut self, len: usize) {
        self.head(MAP, len as u64);
    }

    pub fn null(&mut self) {
        self.out.push(NULL);
    }

    pub fn bool(&mut self, value: bool) {
        self.out.push(if value { TRUE } else { FALSE });
    }

    pub fn raw(&mut self, bytes: &[u8]) {
        self.out.extend_from_slice(bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_shortest_heads() {
        for (value, encoded) in [
            (0u64, &[0x00][..]),
            (23, &[0x17]),
            (24, &[0x18, 24]),
            (255, &[0x18, 0xff]),
            (256, &[0x19, 1, 0]),
            (65536, &[0x1a, 0, 1, 0, 0]),
            (1 << 32, &[0x1b, 0, 0, 0, 1, 0, 0, 0, 0]),
        ] {
            let mut w = Writer::default();
            w.uint(value);
            assert_eq!(w.out, encoded);
            assert_eq!(Reader::new(encoded).uint("x").expect("read"), value);
        }
        let mut w = Writer::default();
        w.int(-1);
        w.int(-25);
        assert_eq!(w.out, [0x20, 0x38, 24]);
    }

    #[test]
    fn refuses_long_forms_and_indefinite_lengths() {
        for bad in [
            &[0x18, 23][..],
            &[0x19, 0, 0xff],
            &[0x5f, 0xff],
            &[0x9f, 0xff],
        ] {
            let err = Reader::new(bad).head().expect_err("refused");
            assert!(
                matches!(err, ContentError::NotDeterministic { .. }),
                "{bad:?}: {err}"
            );
        }
        assert!(matches!(
            Reader::new(&[0x1c]).head(),
            Err(ContentError::Malformed { .. })
        ));
        assert!(matches!(
            Reader::new(&[0xff]).head(),
            Err(ContentError::Malformed { .. })
        ));
        assert!(matches!(
            Reader::new(&[0x19, 1]).head(),
            Err(ContentError::Truncated)
        ));
    }

    #[test]
    fn skips_values_with_sorted_keys_and_bounded_depth() {
        // {1: [h'12', 32("x")]} at level 2: map 2, array 3, tag 4.
        let ok = [0xa1, 0x01, 0x82, 0x41, 0x12, 0xd8, 0x20, 0x61, b'x'];
        let mut r = Reader::new(&ok);
        r.skip_value(2, 4).expect("valid");
        assert_eq!(r.remaining(), 0);
        assert!(matches!(
            Reader::new(&ok).skip_value(3, 4),
            Err(ContentError::ExtensionTooDeep { max: 4 })
        ));
        // Unsorted and duplicate keys.
        assert!(matches!(
            Reader::new(&[0xa2, 0x02, 0x00, 0x01, 0x00]).skip_value(2, 4),
            Err(ContentError::NotDeterministic { .. })
        ));
        assert!(matches!(
            Reader::new(&[0xa2, 0x01, 0x00, 0x01, 0x00]).skip_value(2, 4),
            Err(ContentError::DuplicateExtension(_))
        ));
        // A key that is an array.
        assert!(matches!(
            Reader::new(&[0xa1, 0x80, 0x00]).skip_value(2, 4),
            Err(ContentError::BadExtensionKey(_))
        ));
        // A huge array length with nothing behind it.
        assert!(matches!(
            Reader::new(&[0x9a, 0xff, 0, 0, 0]).skip_value(2, 4),
            Err(ContentError::Truncated)
        ));
    }
}
