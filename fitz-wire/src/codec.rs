//! Primitive encodings of WIRE.md §1: a checked reader over a payload, a
//! writer into a caller buffer, and the [`Field`] trait that ties them to
//! Rust types.
//!
//! Every read checks the remaining length first and returns
//! [`DecodeError`]; nothing here indexes a slice in a way that can panic.

use crate::error::DecodeError;

/// A cursor over the bytes of one record payload.
///
/// Reads borrow from the underlying buffer: `&str` and `&[u8]` fields are
/// views, never copies.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    /// Starts reading at the beginning of `buf`.
    #[inline]
    pub const fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }

    /// Bytes not yet read.
    #[inline]
    pub const fn remaining(&self) -> usize {
        self.buf.len()
    }

    /// True when every byte has been read.
    #[inline]
    pub const fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The unread bytes, without consuming them.
    #[inline]
    pub const fn peek_rest(&self) -> &'a [u8] {
        self.buf
    }

    /// Consumes exactly `n` bytes.
    #[inline]
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if n > self.buf.len() {
            return Err(DecodeError::Truncated);
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    /// Consumes a fixed-size array.
    #[inline]
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let (head, tail) = self.buf.split_first_chunk::<N>().ok_or(DecodeError::Truncated)?;
        self.buf = tail;
        Ok(*head)
    }

    /// `u8`.
    #[inline]
    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        let (&b, tail) = self.buf.split_first().ok_or(DecodeError::Truncated)?;
        self.buf = tail;
        Ok(b)
    }

    /// Big-endian `u16`.
    #[inline]
    pub fn u16(&mut self) -> Result<u16, DecodeError> {
        self.array().map(u16::from_be_bytes)
    }

    /// Big-endian `u32`.
    #[inline]
    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        self.array().map(u32::from_be_bytes)
    }

    /// Big-endian `u64`.
    #[inline]
    pub fn u64(&mut self) -> Result<u64, DecodeError> {
        self.array().map(u64::from_be_bytes)
    }

    /// `bool`: `0` or `1`, anything else is malformed.
    #[inline]
    pub fn bool(&mut self) -> Result<bool, DecodeError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            v => Err(DecodeError::InvalidValue { field: "bool", value: v }),
        }
    }

    /// The presence byte of an `opt<T>`.
    #[inline]
    pub fn presence(&mut self) -> Result<bool, DecodeError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            v => Err(DecodeError::InvalidValue { field: "presence", value: v }),
        }
    }

    /// `bytes`: `u32` length, then that many bytes.
    #[inline]
    pub fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let len = self.u32()?;
        // A u32 always fits in usize on the 32- and 64-bit targets we build for;
        // on 16-bit targets an oversized length is simply truncated data.
        let len = usize::try_from(len).map_err(|_| DecodeError::Truncated)?;
        self.take(len)
    }

    /// `str`: like `bytes`, validated as UTF-8.
    #[inline]
    pub fn str(&mut self) -> Result<&'a str, DecodeError> {
        core::str::from_utf8(self.bytes()?).map_err(|_| DecodeError::InvalidUtf8)
    }

    /// The rest of the payload (`raw`).
    #[inline]
    pub fn rest(&mut self) -> &'a [u8] {
        core::mem::take(&mut self.buf)
    }

    /// Reads one [`Field`].
    #[inline]
    pub fn field<T: Field<'a>>(&mut self) -> Result<T, DecodeError> {
        T::read(self)
    }

    /// Ends decoding: fails with [`DecodeError::TrailingBytes`] if bytes are left.
    #[inline]
    pub fn finish(self) -> Result<(), DecodeError> {
        if self.buf.is_empty() { Ok(()) } else { Err(DecodeError::TrailingBytes) }
    }
}

/// Where encoders write. Implemented for [`SliceWriter`] and, with the
/// `bytes` feature, for every `bytes::BufMut`.
///
/// Encoders check the total length before writing, so a `Sink` never has to
/// report running out of space half way.
pub trait Sink {
    /// Appends `data`.
    fn put(&mut self, data: &[u8]);

    /// Appends one byte.
    #[inline]
    fn put_u8(&mut self, v: u8) {
        self.put(&[v]);
    }
    /// Appends a big-endian `u16`.
    #[inline]
    fn put_u16(&mut self, v: u16) {
        self.put(&v.to_be_bytes());
    }
    /// Appends a big-endian `u32`.
    #[inline]
    fn put_u32(&mut self, v: u32) {
        self.put(&v.to_be_bytes());
    }
    /// Appends a big-endian `u64`.
    #[inline]
    fn put_u64(&mut self, v: u64) {
        self.put(&v.to_be_bytes());
    }
    /// Appends a `bytes` field (`u32` length + data).
    ///
    /// The caller has already checked that the whole record fits in a
    /// 65,535-byte payload, so the length always fits in a `u32`.
    #[inline]
    fn put_bytes(&mut self, data: &[u8]) {
        self.put_u32(u32::try_from(data.len()).unwrap_or(u32::MAX));
        self.put(data);
    }
}

/// A [`Sink`] over a caller-provided byte slice.
///
/// Writing past the end never panics: the excess is dropped and
/// [`SliceWriter::overflowed`] reports it (encoders size the buffer first,
/// so this is a second line of defence, not the normal path).
#[derive(Debug)]
pub struct SliceWriter<'a> {
    buf: &'a mut [u8],
    pos: usize,
    overflow: bool,
}

impl<'a> SliceWriter<'a> {
    /// Starts writing at the beginning of `buf`.
    #[inline]
    pub fn new(buf: &'a mut [u8]) -> Self {
        Self { buf, pos: 0, overflow: false }
    }

    /// Bytes written so far.
    #[inline]
    pub const fn position(&self) -> usize {
        self.pos
    }

    /// True if a write did not fit.
    #[inline]
    pub const fn overflowed(&self) -> bool {
        self.overflow
    }
}

impl Sink for SliceWriter<'_> {
    #[inline]
    fn put(&mut self, data: &[u8]) {
        let end = self.pos.saturating_add(data.len());
        match self.buf.get_mut(self.pos..end) {
            Some(dst) => {
                dst.copy_from_slice(data);
                self.pos = end;
            }
            None => self.overflow = true,
        }
    }
}

#[cfg(feature = "bytes")]
impl<B: bytes::BufMut> Sink for B {
    #[inline]
    fn put(&mut self, data: &[u8]) {
        self.put_slice(data);
    }
}

/// A value with a fixed wire encoding (WIRE.md §1).
///
/// Implemented for the primitive types, `&str` (`str`), `&[u8]` (`bytes`),
/// [`Uuid`] (`uuid16`), `Option<T>` (`opt<T>`) and the protocol's enumerations.
pub trait Field<'a>: Sized {
    /// Encoded size in bytes.
    fn wire_len(&self) -> usize;
    /// Writes the encoding.
    fn write<S: Sink + ?Sized>(&self, out: &mut S);
    /// Reads and validates one value.
    fn read(r: &mut Reader<'a>) -> Result<Self, DecodeError>;
}

impl<'a> Field<'a> for u8 {
    #[inline]
    fn wire_len(&self) -> usize {
        1
    }
    #[inline]
    fn write<S: Sink + ?Sized>(&self, out: &mut S) {
        out.put_u8(*self);
    }
    #[inline]
    fn read(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        r.u8()
    }
}

impl<'a> Field<'a> for u16 {
    #[inline]
    fn wire_len(&self) -> usize {
        2
    }
    #[inline]
    fn write<S: Sink + ?Sized>(&self, out: &mut S) {
        out.put_u16(*self);
    }
    #[inline]
    fn read(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        r.u16()
    }
}

impl<'a> Field<'a> for u32 {
    #[inline]
    fn wire_len(&self) -> usize {
        4
    }
    #[inline]
    fn write<S: Sink + ?Sized>(&self, out: &mut S) {
        out.put_u32(*self);
    }
    #[inline]
    fn read(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        r.u32()
    }
}

impl<'a> Field<'a> for u64 {
    #[inline]
    fn wire_len(&self) -> usize {
        8
    }
    #[inline]
    fn write<S: Sink + ?Sized>(&self, out: &mut S) {
        out.put_u64(*self);
    }
    #[inline]
    fn read(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        r.u64()
    }
}

impl<'a> Field<'a> for bool {
    #[inline]
    fn wire_len(&self) -> usize {
        1
    }
    #[inline]
    fn write<S: Sink + ?Sized>(&self, out: &mut S) {
        out.put_u8(u8::from(*self));
    }
    #[inline]
    fn read(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        r.bool()
    }
}

impl<'a> Field<'a> for &'a [u8] {
    #[inline]
    fn wire_len(&self) -> usize {
        4 + self.len()
    }
    #[inline]
    fn write<S: Sink + ?Sized>(&self, out: &mut S) {
        out.put_bytes(self);
    }
    #[inline]
    fn read(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        r.bytes()
    }
}

impl<'a> Field<'a> for &'a str {
    #[inline]
    fn wire_len(&self) -> usize {
        4 + self.len()
    }
    #[inline]
    fn write<S: Sink + ?Sized>(&self, out: &mut S) {
        out.put_bytes(self.as_bytes());
    }
    #[inline]
    fn read(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        r.str()
    }
}

impl<'a, T: Field<'a>> Field<'a> for Option<T> {
    #[inline]
    fn wire_len(&self) -> usize {
        1 + self.as_ref().map_or(0, Field::wire_len)
    }
    #[inline]
    fn write<S: Sink + ?Sized>(&self, out: &mut S) {
        match self {
            None => out.put_u8(0),
            Some(v) => {
                out.put_u8(1);
                v.write(out);
            }
        }
    }
    #[inline]
    fn read(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        if r.presence()? { T::read(r).map(Some) } else { Ok(None) }
    }
}

/// A 16-byte RPC correlation id (`uuid16`), sent raw without a length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Uuid(pub [u8; 16]);

impl<'a> Field<'a> for Uuid {
    #[inline]
    fn wire_len(&self) -> usize {
        16
    }
    #[inline]
    fn write<S: Sink + ?Sized>(&self, out: &mut S) {
        out.put(&self.0);
    }
    #[inline]
    fn read(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        r.array().map(Uuid)
    }
}

/// Defines a `u8` enumeration whose listed values are the only valid ones
/// (WIRE.md §1: any other value in a received frame is malformed).
macro_rules! wire_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident : $field:literal {
            $( $(#[$vmeta:meta])* $variant:ident = $value:literal ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[cfg_attr(feature = "defmt", derive(defmt::Format))]
        #[repr(u8)]
        pub enum $name {
            $( $(#[$vmeta])* $variant = $value ),+
        }

        impl $name {
            /// The wire value.
            #[inline]
            pub const fn to_u8(self) -> u8 {
                self as u8
            }

            /// Parses a wire value; `None` for a value the protocol does not list.
            #[inline]
            pub const fn from_u8(v: u8) -> Option<Self> {
                match v {
                    $( $value => Some(Self::$variant), )+
                    _ => None,
                }
            }
        }

        impl<'a> $crate::codec::Field<'a> for $name {
            #[inline]
            fn wire_len(&self) -> usize {
                1
            }
            #[inline]
            fn write<S: $crate::codec::Sink + ?Sized>(&self, out: &mut S) {
                out.put_u8(*self as u8);
            }
            #[inline]
            fn read(r: &mut $crate::codec::Reader<'a>) -> Result<Self, $crate::error::DecodeError> {
                let v = r.u8()?;
                Self::from_u8(v).ok_or($crate::error::DecodeError::InvalidValue { field: $field, value: v })
            }
        }
    };
}
pub(crate) use wire_enum;

/// Defines a payload struct whose fields are encoded in declaration order
/// with their [`Field`] encodings and nothing after the last one.
macro_rules! wire_struct {
    (
        $(#[$meta:meta])*
        pub struct $name:ident $(<$lt:lifetime>)? {
            $( $(#[$fmeta:meta])* pub $f:ident : $t:ty ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        #[cfg_attr(feature = "defmt", derive(defmt::Format))]
        pub struct $name $(<$lt>)? {
            $( $(#[$fmeta])* pub $f: $t ),*
        }

        impl<'a> $crate::codec::Payload<'a> for $name $(<$lt>)? {
            #[inline]
            fn payload_len(&self) -> usize {
                0 $( + $crate::codec::Field::wire_len(&self.$f) )*
            }
            #[inline]
            #[allow(unused_variables)]
            fn write_payload<S: $crate::codec::Sink + ?Sized>(&self, out: &mut S) {
                $( $crate::codec::Field::write(&self.$f, out); )*
            }
            #[inline]
            #[allow(unused_variables)]
            fn read_payload(r: &mut $crate::codec::Reader<'a>) -> Result<Self, $crate::error::DecodeError> {
                Ok(Self { $( $f: r.field()? ),* })
            }
        }
    };
}
pub(crate) use wire_struct;

/// Defines a message: a [`wire_struct!`] plus its message type.
macro_rules! wire_message {
    (
        $(#[$meta:meta])*
        pub struct $name:ident $(<$lt:lifetime>)? = $ty:expr ;
        { $( $body:tt )* }
    ) => {
        $crate::codec::wire_struct! {
            $(#[$meta])*
            pub struct $name $(<$lt>)? { $( $body )* }
        }
        impl $(<$lt>)? $crate::codec::Message for $name $(<$lt>)? {
            const TYPE: $crate::MsgType = $ty;
        }
    };
}
pub(crate) use wire_message;

/// The fields of a record payload, in order (WIRE.md §8).
///
/// `read_payload` reads the fields and leaves anything after them in the
/// reader; [`Payload::decode`] additionally rejects trailing bytes, which is
/// what every strict decoder of the protocol does.
pub trait Payload<'a>: Sized {
    /// Exact encoded length of the payload (without the record header).
    fn payload_len(&self) -> usize;
    /// Writes the payload. The caller has checked that it fits.
    fn write_payload<S: Sink + ?Sized>(&self, out: &mut S);
    /// Reads the fields from `r`.
    fn read_payload(r: &mut Reader<'a>) -> Result<Self, DecodeError>;

    /// Decodes a complete payload: every field, and nothing after the last.
    #[inline]
    fn decode(payload: &'a [u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(payload);
        let v = Self::read_payload(&mut r)?;
        r.finish()?;
        Ok(v)
    }
}

/// An empty payload (e.g. Notice UNSUBSCRIBE_ALL, or an OK with no fields).
impl<'a> Payload<'a> for () {
    #[inline]
    fn payload_len(&self) -> usize {
        0
    }
    #[inline]
    fn write_payload<S: Sink + ?Sized>(&self, _out: &mut S) {}
    #[inline]
    fn read_payload(_r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        Ok(())
    }
}

/// A record payload with a fixed message type: something that can be put on
/// the wire as one record with [`crate::record::encode`] or
/// [`crate::frame::encode_tcp`].
pub trait Message {
    /// The record's message type.
    const TYPE: crate::MsgType;
}

/// A value that knows its message type at run time, for encoders that take
/// any record (e.g. responses, whose type is the request's).
pub trait Encode {
    /// The record's message type.
    fn msg_type(&self) -> crate::MsgType;
    /// Exact payload length.
    fn payload_len(&self) -> usize;
    /// Writes the payload.
    fn write_payload<S: Sink + ?Sized>(&self, out: &mut S);
}

impl<'a, M: Message + Payload<'a>> Encode for M {
    #[inline]
    fn msg_type(&self) -> crate::MsgType {
        M::TYPE
    }
    #[inline]
    fn payload_len(&self) -> usize {
        Payload::payload_len(self)
    }
    #[inline]
    fn write_payload<S: Sink + ?Sized>(&self, out: &mut S) {
        Payload::write_payload(self, out);
    }
}

/// A payload sent with a message type chosen at run time. Replies use it:
/// a reply carries its request's type (WIRE.md §4.1), e.g.
/// `Typed::new(MsgType::KV_GET, Reply::Ok(kv::GetOk { value: None }))`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Typed<P> {
    /// The record's message type.
    pub msg_type: crate::MsgType,
    /// The payload.
    pub payload: P,
}

impl<P> Typed<P> {
    /// Pairs `payload` with `msg_type`.
    pub const fn new(msg_type: crate::MsgType, payload: P) -> Self {
        Self { msg_type, payload }
    }
}

impl<'a, P: Payload<'a>> Encode for Typed<P> {
    #[inline]
    fn msg_type(&self) -> crate::MsgType {
        self.msg_type
    }
    #[inline]
    fn payload_len(&self) -> usize {
        self.payload.payload_len()
    }
    #[inline]
    fn write_payload<S: Sink + ?Sized>(&self, out: &mut S) {
        self.payload.write_payload(out);
    }
}
