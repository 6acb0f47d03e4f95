//! MessagePack encoding of openmls' state, with byte vectors written whole and the large ones
//! found on the way.
//!
//! openmls' types are serde types whose keys, secrets and serialised contexts are `Vec<u8>`,
//! which serde hands a serializer one byte at a time (`collect_seq`). `rmp_serde` with
//! [`BytesMode::ForceAll`] writes them as MessagePack byte strings, but still one byte at a time
//! through its writer: for a member's message secrets in a 1,000-member room (written after
//! every message) that was most of the cost of storing them. [`encode`] puts a thin layer
//! between the value and `rmp_serde`'s serializer that gathers such a sequence into one buffer
//! and hands it over with `serialize_bytes`; everything else is passed through unchanged, so the
//! output is byte for byte what `rmp_serde` alone writes (this crate's unit tests check it for
//! every openmls value they store). On the way it notes where each byte string of at least `min` bytes ended up, for
//! [`super::split`].

use std::cell::RefCell;
use std::ops::Range;

use rmp_serde::config::BytesMode;
use serde::ser::{self, Impossible, Serialize, Serializer};

/// A byte string of the encoded value: where its contents are, and the contents.
pub type Part = (Range<usize>, Vec<u8>);

/// `value` in MessagePack (`rmp_serde`, structs as maps, byte vectors as byte strings), after
/// the byte `tag`; with the byte strings of at least `min` bytes (`None`: none noted).
pub fn encode(
    tag: u8,
    value: &impl Serialize,
    min: Option<usize>,
) -> Result<(Vec<u8>, Vec<Part>), rmp_serde::encode::Error> {
    let out = RefCell::new(vec![tag]);
    let ctx = Ctx {
        out: &out,
        min: min.unwrap_or(usize::MAX),
        parts: RefCell::new(Vec::new()),
    };
    {
        let mut serializer = rmp_serde::Serializer::new(Out(&out))
            .with_struct_map()
            .with_bytes(BytesMode::ForceAll);
        value.serialize(Intercept {
            inner: &mut serializer,
            ctx: &ctx,
        })?;
    }
    let mut parts = ctx.parts.into_inner();
    let out = out.into_inner();
    // A part is where it was noted unless the encoder wrote it through a buffer of its own
    // (a sequence of unknown length): then nothing is split.
    if !parts
        .iter()
        .all(|(range, contents)| out.get(range.clone()) == Some(contents.as_slice()))
    {
        parts.clear();
    }
    Ok((out, parts))
}

/// The encoder's writer: the shared output, so that its length can be read while encoding.
struct Out<'a>(&'a RefCell<Vec<u8>>);

impl std::io::Write for Out<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.borrow_mut().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

struct Ctx<'a> {
    out: &'a RefCell<Vec<u8>>,
    min: usize,
    parts: RefCell<Vec<Part>>,
}

/// A serializer passing everything to `inner`, but byte sequences in one piece.
struct Intercept<'c, S> {
    inner: S,
    ctx: &'c Ctx<'c>,
}

/// A value whose serialization goes through [`Intercept`].
struct Wrap<'v, 'c, T: ?Sized> {
    value: &'v T,
    ctx: &'c Ctx<'c>,
}

impl<T: ?Sized + Serialize> Serialize for Wrap<'_, '_, T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.value.serialize(Intercept {
            inner: serializer,
            ctx: self.ctx,
        })
    }
}

/// Passes a primitive through.
macro_rules! forward {
    ($($method:ident($($arg:ident: $ty:ty),*);)*) => {$(
        fn $method(self, $($arg: $ty),*) -> Result<Self::Ok, Self::Error> {
            self.inner.$method($($arg),*)
        }
    )*};
}

impl<'c, S: Serializer> Serializer for Intercept<'c, S> {
    type Ok = S::Ok;
    type Error = S::Error;
    type SerializeSeq = Compound<'c, S::SerializeSeq>;
    type SerializeTuple = Compound<'c, S::SerializeTuple>;
    type SerializeTupleStruct = Compound<'c, S::SerializeTupleStruct>;
    type SerializeTupleVariant = Compound<'c, S::SerializeTupleVariant>;
    type SerializeMap = Compound<'c, S::SerializeMap>;
    type SerializeStruct = Compound<'c, S::SerializeStruct>;
    type SerializeStructVariant = Compound<'c, S::SerializeStructVariant>;

    forward! {
        serialize_bool(v: bool);
        serialize_i8(v: i8);
        serialize_i16(v: i16);
        serialize_i32(v: i32);
        serialize_i64(v: i64);
        serialize_i128(v: i128);
        serialize_u8(v: u8);
        serialize_u16(v: u16);
        serialize_u32(v: u32);
        serialize_u64(v: u64);
        serialize_u128(v: u128);
        serialize_f32(v: f32);
        serialize_f64(v: f64);
        serialize_char(v: char);
        serialize_str(v: &str);
        serialize_bytes(v: &[u8]);
        serialize_none();
        serialize_unit();
        serialize_unit_struct(name: &'static str);
        serialize_unit_variant(name: &'static str, index: u32, variant: &'static str);
    }

    fn serialize_some<T: ?Sized + Serialize>(self, value: &T) -> Result<S::Ok, S::Error> {
        let ctx = self.ctx;
        self.inner.serialize_some(&Wrap { value, ctx })
    }

    fn serialize_newtype_struct<T: ?Sized + Serialize>(
        self,
        name: &'static str,
        value: &T,
    ) -> Result<S::Ok, S::Error> {
        let ctx = self.ctx;
        self.inner
            .serialize_newtype_struct(name, &Wrap { value, ctx })
    }

    fn serialize_newtype_variant<T: ?Sized + Serialize>(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<S::Ok, S::Error> {
        let ctx = self.ctx;
        self.inner
            .serialize_newtype_variant(name, index, variant, &Wrap { value, ctx })
    }

    fn serialize_seq(self, len: Option<usize>) -> Result<Self::SerializeSeq, S::Error> {
        let ctx = self.ctx;
        Ok(Compound {
            inner: self.inner.serialize_seq(len)?,
            ctx,
        })
    }

    fn serialize_tuple(self, len: usize) -> Result<Self::SerializeTuple, S::Error> {
        let ctx = self.ctx;
        Ok(Compound {
            inner: self.inner.serialize_tuple(len)?,
            ctx,
        })
    }

    fn serialize_tuple_struct(
        self,
        name: &'static str,
        len: usize,
    ) -> Result<Self::SerializeTupleStruct, S::Error> {
        let ctx = self.ctx;
        Ok(Compound {
            inner: self.inner.serialize_tuple_struct(name, len)?,
            ctx,
        })
    }

    fn serialize_tuple_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Self::SerializeTupleVariant, S::Error> {
        let ctx = self.ctx;
        Ok(Compound {
            inner: self
                .inner
                .serialize_tuple_variant(name, index, variant, len)?,
            ctx,
        })
    }

    fn serialize_map(self, len: Option<usize>) -> Result<Self::SerializeMap, S::Error> {
        let ctx = self.ctx;
        Ok(Compound {
            inner: self.inner.serialize_map(len)?,
            ctx,
        })
    }

    fn serialize_struct(
        self,
        name: &'static str,
        len: usize,
    ) -> Result<Self::SerializeStruct, S::Error> {
        let ctx = self.ctx;
        Ok(Compound {
            inner: self.inner.serialize_struct(name, len)?,
            ctx,
        })
    }

    fn serialize_struct_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Self::SerializeStructVariant, S::Error> {
        let ctx = self.ctx;
        Ok(Compound {
            inner: self
                .inner
                .serialize_struct_variant(name, index, variant, len)?,
            ctx,
        })
    }

    fn collect_seq<I>(self, iter: I) -> Result<S::Ok, S::Error>
    where
        I: IntoIterator,
        I::Item: Serialize,
    {
        use ser::SerializeSeq as _;
        let ctx = self.ctx;
        let mut iter = iter.into_iter();
        let exact = match iter.size_hint() {
            (low, Some(high)) if low == high && u32::try_from(low).is_ok() => Some(low),
            _ => None,
        };
        // `rmp_serde`'s own test for what may be bytes (its `collect_seq`): a small item and a
        // small iterator of known length.
        let item_size = std::mem::size_of::<I::Item>();
        let may_be_bytes = (item_size == 1 || item_size == std::mem::size_of::<&u8>())
            && std::mem::size_of::<I::IntoIter>()
                <= std::mem::size_of::<std::slice::Iter<'static, u8>>()
            && exact.is_some();
        let first = iter.next();
        let first_byte = match &first {
            Some(item) if may_be_bytes => item.serialize(OnlyByte).ok(),
            _ => None,
        };
        let Some(byte) = first_byte else {
            // Not bytes: each item through the interceptor.
            let mut seq = self.inner.serialize_seq(exact)?;
            for item in first.into_iter().chain(iter) {
                seq.serialize_element(&Wrap { value: &item, ctx })?;
            }
            return seq.end();
        };
        let mut bytes = Vec::with_capacity(exact.unwrap_or(0));
        bytes.push(byte);
        for item in iter.by_ref() {
            match item.serialize(OnlyByte) {
                Ok(byte) => bytes.push(byte),
                Err(NotAByte) => {
                    // Bytes, then something else (`rmp_serde` fails there): an array.
                    let mut seq = self.inner.serialize_seq(exact)?;
                    for byte in &bytes {
                        seq.serialize_element(byte)?;
                    }
                    for item in std::iter::once(item).chain(iter) {
                        seq.serialize_element(&Wrap { value: &item, ctx })?;
                    }
                    return seq.end();
                }
            }
        }
        let done = self.inner.serialize_bytes(&bytes)?;
        if bytes.len() >= ctx.min {
            let end = ctx.out.borrow().len();
            if let Some(start) = end.checked_sub(bytes.len()) {
                ctx.parts.borrow_mut().push((start..end, bytes));
            }
        }
        Ok(done)
    }

    fn is_human_readable(&self) -> bool {
        self.inner.is_human_readable()
    }
}

/// A compound of `inner` whose elements go through [`Intercept`].
struct Compound<'c, C> {
    inner: C,
    ctx: &'c Ctx<'c>,
}

/// Implements a compound trait whose items are values: each through the interceptor.
macro_rules! compound {
    ($($trait:ident::$method:ident;)*) => {$(
        impl<C: ser::$trait> ser::$trait for Compound<'_, C> {
            type Ok = C::Ok;
            type Error = C::Error;
            fn $method<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<(), C::Error> {
                let ctx = self.ctx;
                self.inner.$method(&Wrap { value, ctx })
            }
            fn end(self) -> Result<C::Ok, C::Error> {
                self.inner.end()
            }
        }
    )*};
}

compound! {
    SerializeSeq::serialize_element;
    SerializeTuple::serialize_element;
    SerializeTupleStruct::serialize_field;
    SerializeTupleVariant::serialize_field;
}

/// Implements a compound trait whose items are named fields: each through the interceptor.
macro_rules! fields {
    ($($trait:ident;)*) => {$(
        impl<C: ser::$trait> ser::$trait for Compound<'_, C> {
            type Ok = C::Ok;
            type Error = C::Error;
            fn serialize_field<T: ?Sized + Serialize>(
                &mut self,
                key: &'static str,
                value: &T,
            ) -> Result<(), C::Error> {
                let ctx = self.ctx;
                self.inner.serialize_field(key, &Wrap { value, ctx })
            }
            fn skip_field(&mut self, key: &'static str) -> Result<(), C::Error> {
                self.inner.skip_field(key)
            }
            fn end(self) -> Result<C::Ok, C::Error> {
                self.inner.end()
            }
        }
    )*};
}

fields! {
    SerializeStruct;
    SerializeStructVariant;
}

impl<C: ser::SerializeMap> ser::SerializeMap for Compound<'_, C> {
    type Ok = C::Ok;
    type Error = C::Error;
    fn serialize_key<T: ?Sized + Serialize>(&mut self, key: &T) -> Result<(), C::Error> {
        let ctx = self.ctx;
        self.inner.serialize_key(&Wrap { value: key, ctx })
    }
    fn serialize_value<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<(), C::Error> {
        let ctx = self.ctx;
        self.inner.serialize_value(&Wrap { value, ctx })
    }
    fn end(self) -> Result<C::Ok, C::Error> {
        self.inner.end()
    }
}

/// What [`OnlyByte`] answers for anything but a `u8`.
#[derive(Debug)]
struct NotAByte;

impl std::fmt::Display for NotAByte {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("not a byte")
    }
}

impl std::error::Error for NotAByte {}

impl ser::Error for NotAByte {
    fn custom<T: std::fmt::Display>(_: T) -> Self {
        Self
    }
}

/// A serializer that takes a `u8` and nothing else.
struct OnlyByte;

/// Refuses a primitive.
macro_rules! refuse {
    ($($method:ident($($ty:ty),*);)*) => {$(
        fn $method(self, $(_: $ty),*) -> Result<u8, NotAByte> {
            Err(NotAByte)
        }
    )*};
}

impl Serializer for OnlyByte {
    type Ok = u8;
    type Error = NotAByte;
    type SerializeSeq = Impossible<u8, NotAByte>;
    type SerializeTuple = Impossible<u8, NotAByte>;
    type SerializeTupleStruct = Impossible<u8, NotAByte>;
    type SerializeTupleVariant = Impossible<u8, NotAByte>;
    type SerializeMap = Impossible<u8, NotAByte>;
    type SerializeStruct = Impossible<u8, NotAByte>;
    type SerializeStructVariant = Impossible<u8, NotAByte>;

    fn serialize_u8(self, v: u8) -> Result<u8, NotAByte> {
        Ok(v)
    }

    refuse! {
        serialize_bool(bool);
        serialize_i8(i8);
        serialize_i16(i16);
        serialize_i32(i32);
        serialize_i64(i64);
        serialize_u16(u16);
        serialize_u32(u32);
        serialize_u64(u64);
        serialize_f32(f32);
        serialize_f64(f64);
        serialize_char(char);
        serialize_str(&str);
        serialize_bytes(&[u8]);
        serialize_none();
        serialize_unit();
        serialize_unit_struct(&'static str);
        serialize_unit_variant(&'static str, u32, &'static str);
    }

    fn serialize_some<T: ?Sized + Serialize>(self, _: &T) -> Result<u8, NotAByte> {
        Err(NotAByte)
    }
    fn serialize_newtype_struct<T: ?Sized + Serialize>(
        self,
        _: &'static str,
        _: &T,
    ) -> Result<u8, NotAByte> {
        Err(NotAByte)
    }
    fn serialize_newtype_variant<T: ?Sized + Serialize>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<u8, NotAByte> {
        Err(NotAByte)
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, NotAByte> {
        Err(NotAByte)
    }
    fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, NotAByte> {
        Err(NotAByte)
    }
    fn serialize_tuple_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleStruct, NotAByte> {
        Err(NotAByte)
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, NotAByte> {
        Err(NotAByte)
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, NotAByte> {
        Err(NotAByte)
    }
    fn serialize_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStruct, NotAByte> {
        Err(NotAByte)
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, NotAByte> {
        Err(NotAByte)
    }
    fn is_human_readable(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashSet, VecDeque};

    use super::*;

    /// What `rmp_serde` alone writes.
    fn plain(value: &impl Serialize) -> Vec<u8> {
        let mut out = vec![9];
        let mut serializer = rmp_serde::Serializer::new(&mut out)
            .with_struct_map()
            .with_bytes(BytesMode::ForceAll);
        value.serialize(&mut serializer).expect("encode");
        out
    }

    #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
    enum Kind {
        Unit,
        Tuple(u8, Vec<u8>),
        Struct { a: Vec<u8>, b: Option<Vec<u8>> },
        Newtype(Vec<u16>),
    }

    #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
    struct Epoch {
        number: u64,
        secret: Vec<u8>,
        key: [u8; 32],
        small: [u8; 3],
        serialized_context: Vec<u8>,
        empty: Vec<u8>,
        names: Vec<String>,
        maybe: Option<Vec<u8>>,
        kinds: Vec<Kind>,
        map: BTreeMap<String, Vec<u8>>,
        deque: VecDeque<Vec<u8>>,
        signed: i64,
        ratio: f64,
        pair: (Vec<u8>, u32),
    }

    fn epoch(n: u64, context: usize) -> Epoch {
        Epoch {
            number: n,
            secret: vec![7; 32],
            key: [200; 32],
            small: [1, 2, 3],
            serialized_context: (0..context).map(|i| (i * 31 + n as usize) as u8).collect(),
            empty: Vec::new(),
            names: vec!["\u{c6}\u{0}".repeat(3000), "x".into()],
            maybe: Some(vec![1; 5000]),
            kinds: vec![
                Kind::Unit,
                Kind::Tuple(3, vec![4; 2000]),
                Kind::Struct {
                    a: vec![5; 10],
                    b: None,
                },
                Kind::Newtype(vec![1, 300]),
            ],
            map: [("k".to_owned(), vec![9; 3000])].into(),
            deque: [vec![1, 2], vec![]].into(),
            signed: -5_000_000_000,
            ratio: 0.5,
            pair: (vec![8; 4000], 1),
        }
    }

    #[test]
    fn writes_what_rmp_serde_writes_and_notes_the_large_byte_strings() {
        let value = (vec![epoch(1, 40_000), epoch(2, 500)], 9u8);
        let (packed, parts) = encode(9, &value, Some(1024)).expect("encode");
        assert_eq!(packed, plain(&value));
        let contexts: Vec<&[u8]> = parts.iter().map(|(_, c)| c.as_slice()).collect();
        // In order: epoch 1's context, its `maybe`, the tuple variant's, the map's, the pair's;
        // then epoch 2's `maybe`… (its context is under 1 kB).
        assert_eq!(contexts[0], value.0[0].serialized_context.as_slice());
        assert_eq!(contexts[1], &[1; 5000][..]);
        assert_eq!(parts.len(), 9, "five in each epoch, less the small context");
        for (range, contents) in &parts {
            assert_eq!(&packed[range.clone()], contents.as_slice());
        }
        let back: (Vec<Epoch>, u8) = rmp_serde::from_slice(&packed[1..]).expect("decode");
        assert_eq!(back, value);
        // None noted unless asked.
        let (again, none) = encode(9, &value, None).expect("encode");
        assert_eq!(again, packed);
        assert!(none.is_empty());
    }

    #[test]
    fn sequences_that_are_not_all_bytes_or_of_unknown_length_are_written_as_before() {
        // A sequence of an untagged enum: a byte first, then something else.
        #[derive(serde::Serialize)]
        #[serde(untagged)]
        enum Mixed {
            Byte(u8),
            Text(&'static str),
        }
        let mixed = vec![Mixed::Byte(1), Mixed::Byte(2), Mixed::Text("three")];
        let (packed, parts) = encode(9, &mixed, Some(1)).expect("encode");
        assert!(parts.is_empty());
        assert_eq!(packed, [9, 0x93, 1, 2, 0xa5, b't', b'h', b'r', b'e', b'e']);
        // `rmp_serde` refuses such a sequence.
        let mut out = Vec::new();
        assert!(
            mixed
                .serialize(
                    &mut rmp_serde::Serializer::new(&mut out).with_bytes(BytesMode::ForceAll)
                )
                .is_err()
        );
        // A set's iterator knows its length; a filter's does not.
        let set: HashSet<u8> = [1, 2, 3].into();
        assert_eq!(encode(9, &set, Some(1)).expect("encode").0, plain(&set));
        struct Unsized;
        impl Serialize for Unsized {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_seq((0..2000u32).filter(|_| true).map(|i| i as u8))
            }
        }
        let (packed, parts) = encode(9, &Unsized, Some(1)).expect("encode");
        assert_eq!(packed, plain(&Unsized));
        assert!(parts.is_empty());
    }
}
