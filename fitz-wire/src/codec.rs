//! Primitive encodings of WIRE.md §1: a checked reader over a payload, a
//! writer into a caller buffer, and the [`Field`] trait that ties them to
//! Rust types; and the one counted-list type ([`List`] of [`Element`]s) that
//! the counted pages and requests of every domain share.
//!
//! Every read checks the remaining length first and returns
//! [`DecodeError`]; nothing here indexes a slice in a way that can panic.

use core::marker::PhantomData;

use crate::error::{DecodeError, EncodeError};

/// A cursor over the bytes of one record payload.
///
/// Reads borrow from the underlying buffer: `&str` and `&[u8]` fields are
/// views, never copies.
#[derive(Debug, Clone)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
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

    /// A `0` / `1` byte; anything else is malformed as `field`.
    #[inline]
    pub fn flag(&mut self, field: &'static str) -> Result<bool, DecodeError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            value => Err(DecodeError::InvalidValue { field, value }),
        }
    }

    /// `bool`: `0` or `1`, anything else is malformed.
    #[inline]
    pub fn bool(&mut self) -> Result<bool, DecodeError> {
        self.flag("bool")
    }

    /// The presence byte of an `opt<T>`.
    #[inline]
    pub fn presence(&mut self) -> Result<bool, DecodeError> {
        self.flag("presence")
    }

    /// A byte that must be `expected` (a version, a marker, an "id present"
    /// flag); any other value is malformed as `field`.
    #[inline]
    pub fn expect_u8(&mut self, expected: u8, field: &'static str) -> Result<(), DecodeError> {
        match self.u8()? {
            v if v == expected => Ok(()),
            value => Err(DecodeError::InvalidValue { field, value }),
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

    /// Reads all of `buf` with `read`, which must consume it exactly (else
    /// [`DecodeError::TrailingBytes`]).
    #[inline]
    pub fn decode<T>(
        buf: &'a [u8],
        read: impl FnOnce(&mut Reader<'a>) -> Result<T, DecodeError>,
    ) -> Result<T, DecodeError> {
        let mut r = Reader::new(buf);
        let v = read(&mut r)?;
        r.finish()?;
        Ok(v)
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
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
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
        Reader::decode(payload, Self::read_payload)
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

/// [`Encode`] as a trait object. Code that takes `&dyn DynEncode` is
/// compiled once for every message type instead of once per type, which
/// keeps firmware small (fitz-client's request path takes it). Every
/// [`Encode`] type that is `Sync` is one (so that futures holding a
/// `&dyn DynEncode` stay `Send`), and `dyn DynEncode` is itself an
/// [`Encode`].
pub trait DynEncode: Sync {
    /// [`Encode::msg_type`].
    fn dyn_msg_type(&self) -> crate::MsgType;
    /// [`Encode::payload_len`].
    fn dyn_payload_len(&self) -> usize;
    /// [`Encode::write_payload`] into a sink behind a pointer.
    fn dyn_write_payload(&self, out: &mut dyn Sink);
}

impl<E: Encode + Sync> DynEncode for E {
    #[inline]
    fn dyn_msg_type(&self) -> crate::MsgType {
        self.msg_type()
    }
    #[inline]
    fn dyn_payload_len(&self) -> usize {
        self.payload_len()
    }
    #[inline]
    fn dyn_write_payload(&self, out: &mut dyn Sink) {
        self.write_payload(out);
    }
}

impl Encode for dyn DynEncode + '_ {
    #[inline]
    fn msg_type(&self) -> crate::MsgType {
        self.dyn_msg_type()
    }
    #[inline]
    fn payload_len(&self) -> usize {
        self.dyn_payload_len()
    }
    #[inline]
    fn write_payload<S: Sink + ?Sized>(&self, out: &mut S) {
        self.dyn_write_payload(&mut Forward(out));
    }
}

/// A sized handle on any sink, so that it can be passed as `&mut dyn Sink`.
struct Forward<'a, S: ?Sized>(&'a mut S);

impl<S: Sink + ?Sized> Sink for Forward<'_, S> {
    #[inline]
    fn put(&mut self, data: &[u8]) {
        self.0.put(data);
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

/// Defines a SUBSCRIBE OK body of the form `u8 1` (id present), then
/// `u64 sub_id`: any other first byte is malformed as `$field`.
macro_rules! flagged_sub_id {
    (
        $(#[$meta:meta])*
        pub struct $name:ident : $field:literal ;
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        #[cfg_attr(feature = "defmt", derive(defmt::Format))]
        pub struct $name {
            /// Subscription id.
            pub sub_id: u64,
        }

        impl<'a> $crate::codec::Payload<'a> for $name {
            #[inline]
            fn payload_len(&self) -> usize {
                9
            }
            #[inline]
            fn write_payload<S: $crate::codec::Sink + ?Sized>(&self, out: &mut S) {
                out.put_u8(1);
                out.put_u64(self.sub_id);
            }
            #[inline]
            fn read_payload(r: &mut $crate::codec::Reader<'a>) -> Result<Self, $crate::error::DecodeError> {
                r.expect_u8(1, $field)?;
                Ok(Self { sub_id: r.u64()? })
            }
        }
    };
}
pub(crate) use flagged_sub_id;

// ---------------------------------------------------------------------------
// Counted lists
// ---------------------------------------------------------------------------

/// One element of a counted list (`u32 count`, then `count` elements):
/// SCAN pairs, RESERVE items, LIST items, READ items, CREATE_BATCH entries,
/// filter clauses and AnyOf values.
///
/// Every [`Payload`] is an element with no layout (its fields, one after the
/// other); elements whose encoding depends on the request (Queue RESERVE
/// items, Stream READ items) name that context as their [`Element::Layout`].
///
/// `&str` implements both [`Field`] and `Element`: with both traits in
/// scope, call `Element::wire_len(&v, ())` rather than `v.wire_len(..)`.
pub trait Element<'a>: Sized {
    /// What the element's encoding depends on (`()` if nothing; e.g.
    /// [`crate::queue::ReserveLayout`], [`crate::stream::PageLayout`]).
    type Layout: Copy + Eq + core::fmt::Debug;

    /// Reads and validates one element in `layout`.
    fn read(r: &mut Reader<'a>, layout: Self::Layout) -> Result<Self, DecodeError>;

    /// Encoded size in `layout`.
    fn wire_len(&self, layout: Self::Layout) -> usize;

    /// Writes the element in `layout`. Writers call [`Element::check`]
    /// first; what it refuses is not written.
    fn write<S: Sink + ?Sized>(&self, out: &mut S, layout: Self::Layout);

    /// Refuses an element that a decoder would reject once written in
    /// `layout` (e.g. a routed item without a concrete route). Accepts
    /// everything by default.
    #[inline]
    fn check(&self, layout: Self::Layout) -> Result<(), EncodeError> {
        let _ = layout;
        Ok(())
    }
}

impl<'a, P: Payload<'a>> Element<'a> for P {
    type Layout = ();
    #[inline]
    fn read(r: &mut Reader<'a>, (): ()) -> Result<Self, DecodeError> {
        P::read_payload(r)
    }
    #[inline]
    fn wire_len(&self, (): ()) -> usize {
        self.payload_len()
    }
    #[inline]
    fn write<S: Sink + ?Sized>(&self, out: &mut S, (): ()) {
        self.write_payload(out);
    }
}

/// A `str` value (Stream filter AnyOf values).
impl<'a> Element<'a> for &'a str {
    type Layout = ();
    #[inline]
    fn read(r: &mut Reader<'a>, (): ()) -> Result<Self, DecodeError> {
        r.str()
    }
    #[inline]
    fn wire_len(&self, (): ()) -> usize {
        Field::wire_len(self)
    }
    #[inline]
    fn write<S: Sink + ?Sized>(&self, out: &mut S, (): ()) {
        Field::write(self, out);
    }
}

/// A counted list (`u32 count`, then `count` elements in one layout),
/// borrowed from a payload: validated once when built, then iterated lazily
/// without copying.
///
/// Built by decoding ([`List::read`], [`List::from_wire`]) or by writing
/// elements into a caller buffer ([`List::write_into`], [`ListWriter`]).
/// The domains name their lists with type aliases, e.g.
/// [`crate::kv::ScanPairs`] or [`crate::stream::Items`].
///
/// `L` is always `T`'s [`Element::Layout`]; it is a parameter of its own
/// only so that a list stays covariant in `'a`, as borrowed views are. The
/// default is a projection, which a struct field would make invariant: name
/// the layout type in fields (`List<'a, Entry<'a>, ()>`) or use the aliases.
pub struct List<'a, T: Element<'a>, L = <T as Element<'a>>::Layout> {
    count: u32,
    /// The elements in wire form, without the count.
    bytes: &'a [u8],
    layout: L,
    _t: PhantomData<fn() -> T>,
}

impl<'a, T: Element<'a>> List<'a, T> {
    /// No element.
    pub const fn empty(layout: T::Layout) -> Self {
        Self { count: 0, bytes: &[], layout, _t: PhantomData }
    }

    /// Reads `count` elements in `layout` from `r`, validating each, and
    /// leaves what follows them in `r`.
    fn read_elements(count: u32, r: &mut Reader<'a>, layout: T::Layout) -> Result<Self, DecodeError> {
        let start = r.peek_rest();
        let mut probe = Reader::new(start);
        for _ in 0..count {
            T::read(&mut probe, layout)?;
        }
        let used = start.len().saturating_sub(probe.remaining());
        let bytes = r.take(used)?;
        Ok(Self { count, bytes, layout, _t: PhantomData })
    }

    /// Reads a list as it stands in a payload: the `u32` count, then that
    /// many elements in `layout`, each validated. What follows the last
    /// element (a cursor, a `has_more` byte) is left in `r`.
    pub fn read(r: &mut Reader<'a>, layout: T::Layout) -> Result<Self, DecodeError> {
        let count = r.u32()?;
        Self::read_elements(count, r, layout)
    }

    /// Checks that `bytes` holds exactly `count` valid elements in `layout`
    /// (bytes after the last one are [`DecodeError::TrailingBytes`]).
    pub fn from_wire(count: u32, bytes: &'a [u8], layout: T::Layout) -> Result<Self, DecodeError> {
        Reader::decode(bytes, |r| Self::read_elements(count, r, layout))
    }

    /// Number of elements.
    pub const fn len(&self) -> u32 {
        self.count
    }

    /// True if the list holds no element.
    pub const fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The layout the elements are in.
    pub const fn layout(&self) -> T::Layout {
        self.layout
    }

    /// The elements in wire form (without the count).
    pub const fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// Wire length of the elements (without the count).
    pub const fn wire_len(&self) -> usize {
        self.bytes.len()
    }

    /// Writes the list as it stands in a payload: the `u32` count, then the
    /// elements (`4 +` [`List::wire_len`] bytes).
    pub fn write<S: Sink + ?Sized>(&self, out: &mut S) {
        out.put_u32(self.count);
        out.put(self.bytes);
    }

    /// Iterates over the elements.
    pub fn iter(&self) -> ListIter<'a, T> {
        ListIter { left: self.count, r: Reader::new(self.bytes), layout: self.layout, _t: PhantomData }
    }

    /// Writes `elements` in `layout` into `buf` and returns the list (for
    /// brokers building a page).
    ///
    /// Fails, without a partial element, if an element is refused by
    /// [`Element::check`] or if `buf` cannot hold them all:
    /// [`EncodeError::BufferTooSmall`] then gives the exact size of all the
    /// elements and `buf.len()`. See [`ListWriter`] to fill a page with as
    /// many elements as fit.
    pub fn write_into<'e, E>(
        elements: impl IntoIterator<Item = E>,
        layout: T::Layout,
        buf: &'a mut [u8],
    ) -> Result<Self, EncodeError>
    where
        E: Element<'e, Layout = T::Layout>,
    {
        let available = buf.len();
        let mut w = ListWriter::new(buf, layout);
        let mut elements = elements.into_iter();
        while let Some(e) = elements.next() {
            match w.push(&e) {
                Ok(()) => {}
                Err(EncodeError::BufferTooSmall { .. }) => {
                    // Keep measuring so the error gives the whole size.
                    let mut needed = w.written().saturating_add(e.wire_len(layout));
                    for e in elements {
                        e.check(layout)?;
                        needed = needed.saturating_add(e.wire_len(layout));
                    }
                    return Err(EncodeError::BufferTooSmall { needed, available });
                }
                Err(other) => return Err(other),
            }
        }
        Ok(w.finish())
    }
}

impl<'a, T: Element<'a>> Clone for List<'a, T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<'a, T: Element<'a>> Copy for List<'a, T> {}

/// Two lists are equal when they hold the same bytes in the same layout.
impl<'a, T: Element<'a>> PartialEq for List<'a, T> {
    fn eq(&self, other: &Self) -> bool {
        self.count == other.count && self.bytes == other.bytes && self.layout == other.layout
    }
}

impl<'a, T: Element<'a>> Eq for List<'a, T> {}

impl<'a, T: Element<'a>> core::fmt::Debug for List<'a, T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("List")
            .field("count", &self.count)
            .field("bytes", &self.bytes)
            .field("layout", &self.layout)
            .finish()
    }
}

#[cfg(feature = "defmt")]
impl<'a, T: Element<'a>> defmt::Format for List<'a, T>
where
    T::Layout: defmt::Format,
{
    fn format(&self, f: defmt::Formatter<'_>) {
        defmt::write!(f, "List {{ count: {=u32}, bytes: {=[u8]}, layout: {} }}", self.count, self.bytes, self.layout);
    }
}

impl<'a, T: Element<'a>> IntoIterator for List<'a, T> {
    type Item = T;
    type IntoIter = ListIter<'a, T>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

/// Iterator over the elements of a [`List`].
///
/// The list was validated when it was built; should an element still fail
/// to read, the iteration ends there (it never panics).
///
/// `L` is always `T`'s [`Element::Layout`] (see [`List`]).
pub struct ListIter<'a, T: Element<'a>, L = <T as Element<'a>>::Layout> {
    left: u32,
    r: Reader<'a>,
    layout: L,
    _t: PhantomData<fn() -> T>,
}

impl<'a, T: Element<'a>> Iterator for ListIter<'a, T> {
    type Item = T;
    fn next(&mut self) -> Option<T> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        match T::read(&mut self.r, self.layout) {
            Ok(e) => Some(e),
            Err(_) => {
                self.left = 0;
                None
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, usize::try_from(self.left).ok())
    }
}

#[cfg(feature = "defmt")]
impl<'a, T: Element<'a>> defmt::Format for ListIter<'a, T> {
    fn format(&self, f: defmt::Formatter<'_>) {
        defmt::write!(f, "ListIter {{ left: {=u32} }}", self.left);
    }
}

impl<'a, T: Element<'a>> Clone for ListIter<'a, T> {
    fn clone(&self) -> Self {
        Self { left: self.left, r: self.r.clone(), layout: self.layout, _t: PhantomData }
    }
}

impl<'a, T: Element<'a>> core::fmt::Debug for ListIter<'a, T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ListIter").field("left", &self.left).field("r", &self.r).field("layout", &self.layout).finish()
    }
}

/// Writes the elements of a [`List`] into a caller buffer one at a time
/// (brokers filling a page): stop when [`ListWriter::push`] reports that
/// the next element does not fit, then [`ListWriter::finish`].
///
/// `L` is always `T`'s [`Element::Layout`] (see [`List`]).
pub struct ListWriter<'b, T: Element<'b>, L = <T as Element<'b>>::Layout> {
    buf: &'b mut [u8],
    pos: usize,
    count: u32,
    layout: L,
    _t: PhantomData<fn() -> T>,
}

#[cfg(feature = "defmt")]
impl<'b, T: Element<'b>> defmt::Format for ListWriter<'b, T> {
    fn format(&self, f: defmt::Formatter<'_>) {
        defmt::write!(f, "ListWriter {{ count: {=u32}, written: {=usize} }}", self.count, self.pos);
    }
}

impl<'b, T: Element<'b>> ListWriter<'b, T> {
    /// Starts an empty list in `buf`.
    pub fn new(buf: &'b mut [u8], layout: T::Layout) -> Self {
        Self { buf, pos: 0, count: 0, layout, _t: PhantomData }
    }

    /// Appends `element`. Nothing is written if it fails: the element is
    /// refused by [`Element::check`], the count would overflow, or it does
    /// not fit in the rest of the buffer ([`EncodeError::BufferTooSmall`]
    /// with the element's size and the room left).
    pub fn push<'e, E>(&mut self, element: &E) -> Result<(), EncodeError>
    where
        E: Element<'e, Layout = T::Layout>,
    {
        element.check(self.layout)?;
        let count = self.count.checked_add(1).ok_or(EncodeError::InvalidValue("too many list elements"))?;
        let len = element.wire_len(self.layout);
        let end = self.pos.saturating_add(len);
        let available = self.buf.len().saturating_sub(self.pos);
        let too_small = EncodeError::BufferTooSmall { needed: len, available };
        let dst = self.buf.get_mut(self.pos..end).ok_or(too_small)?;
        let mut w = SliceWriter::new(dst);
        element.write(&mut w, self.layout);
        if w.overflowed() || w.position() != len {
            return Err(too_small);
        }
        self.pos = end;
        self.count = count;
        Ok(())
    }

    /// Elements written so far.
    pub const fn len(&self) -> u32 {
        self.count
    }

    /// True if nothing was written.
    pub const fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Bytes written so far (the elements' wire length).
    pub const fn written(&self) -> usize {
        self.pos
    }

    /// The layout the elements are written in.
    pub const fn layout(&self) -> T::Layout {
        self.layout
    }

    /// The elements written, as a list.
    pub fn finish(self) -> List<'b, T> {
        let Self { buf, pos, count, layout, .. } = self;
        let bytes: &'b [u8] = buf;
        List { count, bytes: bytes.get(..pos).unwrap_or_default(), layout, _t: PhantomData }
    }
}

impl<'b, T: Element<'b>> core::fmt::Debug for ListWriter<'b, T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ListWriter")
            .field("written", &self.pos)
            .field("count", &self.count)
            .field("layout", &self.layout)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{kv, lease, queue, schedule, stream};

    #[test]
    fn lists_are_covariant() {
        // Compiles only if every list and iterator may be shortened to a
        // smaller lifetime, as the borrowed views they replaced could.
        #[allow(clippy::type_complexity)]
        fn shorten<'s, 'l: 's>(
            lists: (kv::ScanPairs<'l>, queue::ReservedItems<'l>, lease::ListItems<'l>, stream::Items<'l>),
            more: (stream::AnyOfValues<'l>, stream::FilterSet<'l>, schedule::BatchEntries<'l>, stream::ItemsIter<'l>),
        ) -> (
            (kv::ScanPairs<'s>, queue::ReservedItems<'s>, lease::ListItems<'s>, stream::Items<'s>),
            (stream::AnyOfValues<'s>, stream::FilterSet<'s>, schedule::BatchEntries<'s>, stream::ItemsIter<'s>),
        ) {
            (lists, more)
        }
        let layout = stream::PageLayout::Compatibility;
        let filter = stream::FilterSet::parse(&[0x00, 0xF1, 0, 0, 0, 0]);
        let (lists, more) = shorten(
            (List::empty(()), List::empty(queue::ReserveLayout::Exact), List::empty(()), List::empty(layout)),
            (List::empty(()), filter.unwrap(), schedule::BatchEntries::from_slice(&[]), List::empty(layout).iter()),
        );
        assert!(lists.0.is_empty() && lists.3.layout() == layout && more.1.is_empty() && more.2.is_empty());
        fn shorten_writer<'s, 'l: 's>(w: stream::PageWriter<'l>) -> stream::PageWriter<'s> {
            w
        }
        assert!(shorten_writer(stream::PageWriter::new(&mut [], layout)).finish().is_empty());
    }

    #[test]
    fn writers_never_write_part_of_an_element() {
        let pairs = [kv::ScanPair { key: b"k", value: b"value" }; 3];
        let one = Element::wire_len(&pairs[0], ());
        let mut buf = [0u8; 40];
        assert_eq!(
            kv::ScanPairs::write_into(pairs, (), &mut buf[..2 * one + 1]),
            Err(EncodeError::BufferTooSmall { needed: 3 * one, available: 2 * one + 1 })
        );
        let mut w = ListWriter::<kv::ScanPair<'_>>::new(&mut buf[..2 * one + 1], ());
        assert_eq!(w.push(&pairs[0]), Ok(()));
        assert_eq!(w.push(&pairs[1]), Ok(()));
        assert_eq!(w.push(&pairs[2]), Err(EncodeError::BufferTooSmall { needed: one, available: 1 }));
        let list = w.finish();
        assert_eq!((list.len(), list.wire_len()), (2, 2 * one));
        assert_eq!(List::from_wire(2, list.as_bytes(), ()), Ok(list));
        assert!(list.iter().eq(pairs.iter().copied().take(2)));
        assert_eq!(kv::ScanPairs::from_wire(1, list.as_bytes(), ()), Err(DecodeError::TrailingBytes));
        assert_eq!(kv::ScanPairs::from_wire(3, list.as_bytes(), ()), Err(DecodeError::Truncated));
    }
}
