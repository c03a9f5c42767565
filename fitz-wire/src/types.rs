//! Message types (WIRE.md §7, §B11), domains, dialects and capabilities.

/// A record's message type (the verb). Values ≤ 254 are one byte on the
/// wire, larger ones `0xFF` + `u16` (WIRE.md §3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct MsgType(pub u16);

macro_rules! msg_types {
    ($( $(#[$m:meta])* $name:ident = $v:literal ),* $(,)?) => {
        impl MsgType {
            $( $(#[$m])* pub const $name: MsgType = MsgType($v); )*

            /// The protocol name of a known type, e.g. `"KV_BEGIN"`.
            pub const fn name(self) -> Option<&'static str> {
                match self.0 {
                    $( $v => Some(stringify!($name)), )*
                    _ => None,
                }
            }
        }
    };
}

msg_types! {
    /// Client → broker, first record: the token.
    CONNECT = 1,
    /// Client → broker label before a request (current dialect).
    CORRELATE = 2,
    /// Broker → client label before a response (current dialect).
    CORRELATED = 3,
    /// Broker → client, first frame after an accepted CONNECT (current dialect).
    SERVER_HELLO = 4,
    /// Client → broker service name (current dialect, capability-gated).
    SESSION_METADATA = 5,
    /// KV BEGIN.
    KV_BEGIN = 100,
    /// KV COMMIT.
    KV_COMMIT = 101,
    /// KV ROLLBACK.
    KV_ROLLBACK = 102,
    /// KV GET.
    KV_GET = 103,
    /// KV PUT.
    KV_PUT = 104,
    /// KV INSERT.
    KV_INSERT = 105,
    /// KV DELETE.
    KV_DELETE = 106,
    /// KV DELETE_RANGE.
    KV_DELETE_RANGE = 107,
    /// KV SCAN.
    KV_SCAN = 108,
    /// KV SUBSCRIBE.
    KV_SUBSCRIBE = 109,
    /// KV UNSUBSCRIBE.
    KV_UNSUBSCRIBE = 110,
    /// KV NOTIFY (broker → client).
    KV_NOTIFY = 111,
    /// Queue ENQUEUE.
    QUEUE_ENQUEUE = 200,
    /// Queue RESERVE.
    QUEUE_RESERVE = 202,
    /// Queue EXTEND.
    QUEUE_EXTEND = 203,
    /// Queue COMPLETE.
    QUEUE_COMPLETE = 204,
    /// Queue SUBSCRIBE (availability).
    QUEUE_SUBSCRIBE = 207,
    /// Queue UNSUBSCRIBE.
    QUEUE_UNSUBSCRIBE = 208,
    /// Queue NOTIFY (broker → client).
    QUEUE_NOTIFY = 209,
    /// RPC SUBSCRIBE_WORKER.
    RPC_SUBSCRIBE_WORKER = 300,
    /// RPC UNSUBSCRIBE_WORKER.
    RPC_UNSUBSCRIBE_WORKER = 301,
    /// RPC REQUEST (both directions).
    RPC_REQUEST = 302,
    /// RPC RESPONSE (both directions).
    RPC_RESPONSE = 303,
    /// RPC_CANCEL (current dialect, capability-gated).
    RPC_CANCEL = 304,
    /// RPC_LIFECYCLE (broker → client, current dialect).
    RPC_LIFECYCLE = 305,
    /// Lease ACQUIRE.
    LEASE_ACQUIRE = 400,
    /// Lease RENEW (a.k.a. EXTEND).
    LEASE_RENEW = 401,
    /// Lease RELEASE.
    LEASE_RELEASE = 402,
    /// Lease QUERY.
    LEASE_QUERY = 403,
    /// Lease SUBSCRIBE.
    LEASE_SUBSCRIBE = 407,
    /// Lease UNSUBSCRIBE.
    LEASE_UNSUBSCRIBE = 408,
    /// Lease NOTIFY (broker → client).
    LEASE_NOTIFY = 409,
    /// Lease LIST (current dialect).
    LEASE_LIST = 410,
    /// Notice PUBLISH (no reply).
    NOTICE_PUBLISH = 500,
    /// Notice SUBSCRIBE.
    NOTICE_SUBSCRIBE = 501,
    /// Notice UNSUBSCRIBE (by id).
    NOTICE_UNSUBSCRIBE = 502,
    /// Notice UNSUBSCRIBE_ALL.
    NOTICE_UNSUBSCRIBE_ALL = 503,
    /// Notice NOTIFY (broker → client).
    NOTICE_NOTIFY = 504,
    /// Stream BEGIN.
    STREAM_BEGIN = 600,
    /// Stream APPEND.
    STREAM_APPEND = 601,
    /// Stream COMMIT.
    STREAM_COMMIT = 602,
    /// Stream ROLLBACK.
    STREAM_ROLLBACK = 603,
    /// Stream READ.
    STREAM_READ = 604,
    /// Stream LAST.
    STREAM_LAST = 605,
    /// Stream GET_METADATA.
    STREAM_GET_METADATA = 606,
    /// Stream SUBSCRIBE.
    STREAM_SUBSCRIBE = 607,
    /// Stream UNSUBSCRIBE.
    STREAM_UNSUBSCRIBE = 608,
    /// Stream NOTIFY (broker → client).
    STREAM_NOTIFY = 609,
    /// Schedule CREATE.
    SCHEDULE_CREATE = 700,
    /// Schedule CANCEL.
    SCHEDULE_CANCEL = 701,
    /// Schedule LIST.
    SCHEDULE_LIST = 702,
    /// Schedule SUBSCRIBE.
    SCHEDULE_SUBSCRIBE = 703,
    /// Schedule UNSUBSCRIBE.
    SCHEDULE_UNSUBSCRIBE = 704,
    /// Schedule NOTIFY (broker → client).
    SCHEDULE_NOTIFY = 705,
    /// Schedule CREATE_BATCH (current dialect extension).
    SCHEDULE_CREATE_BATCH = 706,
    /// Schedule LIST_V2 (current dialect extension).
    SCHEDULE_LIST_V2 = 707,
}

impl MsgType {
    /// The domain whose range holds this type (WIRE.md §7: ranges are
    /// exclusive per domain).
    pub const fn domain(self) -> Option<Domain> {
        Some(match self.0 {
            0..=99 => Domain::Control,
            100..=199 => Domain::Kv,
            200..=299 => Domain::Queue,
            300..=399 => Domain::Rpc,
            400..=499 => Domain::Lease,
            500..=599 => Domain::Notice,
            600..=699 => Domain::Stream,
            700..=799 => Domain::Schedule,
            _ => return None,
        })
    }

    /// True for the NOTIFY types, whose first field is a subscription id.
    pub const fn is_notify(self) -> bool {
        matches!(self.0, 111 | 209 | 409 | 504 | 609 | 705)
    }

    /// Bytes the type takes in a record header: 1 or 3.
    pub const fn header_len(self) -> usize {
        if self.0 <= 254 { 1 } else { 3 }
    }

    /// True if a client may label a request of this type with CORRELATE
    /// (WIRE.md §B3: requests answered with the same type).
    pub const fn is_labelable(self) -> bool {
        matches!(
            self.0,
            100..=110
                | 200
                | 202
                | 203
                | 204
                | 207
                | 208
                | 300
                | 301
                | 400..=403
                | 407
                | 408
                | 410
                | 501..=503
                | 600..=608
                | 700..=704
                | 706
                | 707
        )
    }
}

/// The seven domains, plus the control range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Domain {
    /// Types 0–99.
    Control,
    /// KV transactions, 100–199, codes 1xxx.
    Kv,
    /// Work queue, 200–299, codes 4xxx.
    Queue,
    /// RPC, 300–399, codes 6xxx.
    Rpc,
    /// Leases, 400–499, codes 5xxx.
    Lease,
    /// Notices, 500–599, codes 3xxx.
    Notice,
    /// Streams, 600–699, codes 2xxx.
    Stream,
    /// Schedules, 700–799, codes 7xxx.
    Schedule,
}

/// The two protocol dialects brokers in the field speak (WIRE.md §B1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Dialect {
    /// No SERVER_HELLO; KV durability at BEGIN.
    Legacy,
    /// SERVER_HELLO with capabilities; KV persistence at COMMIT.
    Current,
}

/// The capability bits of SERVER_HELLO (WIRE.md §B2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Capabilities(pub u32);

impl Capabilities {
    /// Bit 0: CORRELATE / CORRELATED.
    pub const CORRELATION: Capabilities = Capabilities(1);
    /// Bit 1: SESSION_METADATA.
    pub const SESSION_METADATA: Capabilities = Capabilities(2);
    /// Bit 2: KV SCAN `start_exclusive`.
    pub const KV_SCAN_EXCLUSIVE: Capabilities = Capabilities(4);
    /// Bit 3: RPC extensions, RPC_CANCEL and RPC_LIFECYCLE.
    pub const RPC_CANCELLATION: Capabilities = Capabilities(8);
    /// No capability (every legacy session).
    pub const NONE: Capabilities = Capabilities(0);
    /// All four defined bits.
    pub const ALL: Capabilities = Capabilities(0xF);

    /// True if every bit of `other` is set.
    pub const fn contains(self, other: Capabilities) -> bool {
        self.0 & other.0 == other.0
    }

    /// `Ok` if every bit of `required` is set, else the typed refusal a
    /// client returns instead of sending (WIRE.md §B1).
    pub const fn require(self, required: Capabilities) -> Result<(), crate::EncodeError> {
        if self.contains(required) { Ok(()) } else { Err(crate::EncodeError::MissingCapability(required)) }
    }
}

impl core::ops::BitOr for Capabilities {
    type Output = Capabilities;
    fn bitor(self, rhs: Self) -> Self {
        Capabilities(self.0 | rhs.0)
    }
}
