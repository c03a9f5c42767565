//! KV transactions (WIRE.md §8.1, §B5).

use core::future::poll_fn;
use core::pin::Pin;
use core::task::{Context, Poll};

use fitz_wire::kv::{self as wire, Durability, Mode};
use fitz_wire::{Capabilities, Dialect, MsgType, Payload};

use crate::client::{BufOf, Client, Shared, Subscription};
use crate::engine::Buf;
use crate::error::Error;
use crate::ops::{RouteBuf, check_route, ok, own_route, poll_record};

pub use fitz_wire::kv::{Durability as Persistence, Mode as TxMode};

/// The capability a resumed scan ([`Scan::after`]) needs.
pub const CAP_SCAN_EXCLUSIVE: Capabilities = Capabilities::KV_SCAN_EXCLUSIVE;

/// KV operations of a client: `client.kv()`.
pub struct Kv<'c, H> {
    c: &'c Client<H>,
    timeout_ms: u64,
}

impl<H: Shared> Client<H> {
    /// The KV domain.
    pub fn kv(&self) -> Kv<'_, H> {
        Kv { c: self, timeout_ms: 0 }
    }
}

impl<'c, H: Shared> Kv<'c, H> {
    /// A deadline for each request of this call chain (0 = none).
    pub fn timeout_ms(mut self, ms: u64) -> Self {
        self.timeout_ms = ms;
        self
    }

    /// Begins a transaction on the exact route `kv://realm/area/resource`
    /// with buffered persistence.
    pub fn begin(&self, route: &str, mode: Mode) -> impl Future<Output = Result<Txn<H>, Error>> {
        self.begin_with(route, mode, Durability::Buffered)
    }

    /// Begins a transaction; `durability` is sent at BEGIN to a legacy
    /// broker and at COMMIT to a current one.
    pub async fn begin_with(&self, route: &str, mode: Mode, durability: Durability) -> Result<Txn<H>, Error> {
        check_route(route)?;
        let c = self.c;
        c.ready().await?;
        let (dialect, epoch) = (c.dialect().map(|(d, _)| d), c.epoch());
        let legacy = dialect == Some(Dialect::Legacy);
        let msg = wire::Begin { route, mode, durability: legacy.then_some(durability) };
        let p = c.round_trip_in(Some(epoch), &msg, self.timeout_ms).await?;
        let begun = ok(wire::decode_begin_reply(p.as_ref()), MsgType::KV_BEGIN)?;
        Ok(Txn {
            c: c.clone(),
            tx_id: begun.tx_id,
            route: own_route(route)?,
            epoch,
            legacy,
            durability,
            timeout_ms: self.timeout_ms,
            open: true,
        })
    }

    /// Runs `f` in a read-write transaction and commits it; rolls back if
    /// `f` fails.
    pub async fn update<T, F>(&self, route: &str, f: F) -> Result<T, Error>
    where
        F: AsyncFnOnce(&mut Txn<H>) -> Result<T, Error>,
    {
        let mut tx = self.begin(route, Mode::ReadWrite).await?;
        match f(&mut tx).await {
            Ok(v) => {
                tx.commit().await?;
                Ok(v)
            }
            Err(e) => {
                let _ = tx.rollback().await;
                Err(e)
            }
        }
    }

    /// Subscribes to committed changes on routes matching `pattern`.
    pub async fn subscribe(&self, pattern: &str) -> Result<Changes<H>, Error> {
        let sub = self.c.subscribe(&wire::Subscribe { pattern }).await?;
        Ok(Changes { sub })
    }
}

/// An open transaction. Dropping it without [`Txn::commit`] or
/// [`Txn::rollback`] schedules a rollback (nothing blocks). After a
/// reconnect, every operation fails with [`Error::StaleHandle`].
pub struct Txn<H: Shared> {
    c: Client<H>,
    tx_id: u64,
    route: RouteBuf,
    epoch: u32,
    legacy: bool,
    durability: Durability,
    timeout_ms: u64,
    open: bool,
}

/// One page of a scan.
#[derive(Debug, Clone)]
pub struct ScanPage<P> {
    payload: P,
    /// More matching keys exist after this page.
    pub has_more: bool,
}

impl<P: Buf> ScanPage<P> {
    /// The key/value pairs, as parts of the reply (no copies).
    pub fn pairs(&self) -> impl Iterator<Item = (P, P)> + '_ {
        let bytes = self.payload.as_ref();
        let pairs = match wire::decode_scan_reply(bytes) {
            Ok(fitz_wire::Reply::Ok(ok)) => Some(ok.pairs),
            _ => None,
        };
        pairs.into_iter().flatten().map(|pair| (self.payload.part(pair.key), self.payload.part(pair.value)))
    }

    /// Number of pairs.
    pub fn len(&self) -> usize {
        self.pairs().count()
    }

    /// True if the page holds no pair.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The last key of the page (where a resumed scan starts after).
    pub fn last_key(&self) -> Option<P> {
        self.pairs().last().map(|(k, _)| k)
    }
}

/// Options of [`Txn::scan`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Scan<'a> {
    /// First key (inclusive, or exclusive with `after`).
    pub start: Option<&'a [u8]>,
    /// End key (exclusive).
    pub end: Option<&'a [u8]>,
    /// Page size (the broker caps it at 1,024).
    pub limit: Option<u32>,
    /// Descending order.
    pub reverse: bool,
    /// Start strictly after `start` (resume; needs `CAP_KV_SCAN_EXCLUSIVE`).
    pub after: bool,
}

impl<H: Shared> Txn<H> {
    /// The broker's transaction id.
    pub fn id(&self) -> u64 {
        self.tx_id
    }

    /// The route of the transaction.
    pub fn route(&self) -> &str {
        &self.route
    }

    async fn ack(&self, msg: &dyn fitz_wire::DynEncode, ty: MsgType) -> Result<(), Error> {
        let p = self.c.round_trip_in(Some(self.epoch), msg, self.timeout_ms).await?;
        ok(wire::decode_ack_reply(p.as_ref()), ty)
    }

    /// Reads `key`: its value as a part of the reply, or `None`.
    pub async fn get(&self, key: &[u8]) -> Result<Option<BufOf<H>>, Error> {
        let msg = wire::Get { tx_id: self.tx_id, route: &self.route, key };
        let p = self.c.round_trip_in(Some(self.epoch), &msg, self.timeout_ms).await?;
        let got = ok(wire::decode_get_reply(p.as_ref()), MsgType::KV_GET)?;
        Ok(got.value.map(|v| p.part(v)))
    }

    /// Writes `key` (insert or replace).
    pub async fn put(&self, key: &[u8], value: &[u8]) -> Result<(), Error> {
        self.ack(&wire::Put { tx_id: self.tx_id, route: &self.route, key, value }, MsgType::KV_PUT).await
    }

    /// Writes `key` only if it does not exist (else the broker's 1006).
    pub async fn insert(&self, key: &[u8], value: &[u8]) -> Result<(), Error> {
        self.ack(&wire::Insert { tx_id: self.tx_id, route: &self.route, key, value }, MsgType::KV_INSERT).await
    }

    /// Deletes `key`.
    pub async fn delete(&self, key: &[u8]) -> Result<(), Error> {
        self.ack(&wire::Delete { tx_id: self.tx_id, route: &self.route, key }, MsgType::KV_DELETE).await
    }

    /// Deletes the keys in `start..end`.
    pub async fn delete_range(&self, start: &[u8], end: &[u8]) -> Result<(), Error> {
        let msg = wire::DeleteRange { tx_id: self.tx_id, route: &self.route, start_key: start, end_key: end };
        self.ack(&msg, MsgType::KV_DELETE_RANGE).await
    }

    /// Reads one page of keys.
    pub async fn scan(&self, opts: Scan<'_>) -> Result<ScanPage<BufOf<H>>, Error> {
        if opts.after && !self.c.has(Capabilities::KV_SCAN_EXCLUSIVE) {
            return Err(Error::Unsupported("KV scan start_exclusive (CAP_KV_SCAN_EXCLUSIVE)"));
        }
        let msg = wire::Scan {
            tx_id: self.tx_id,
            route: &self.route,
            start_key: opts.start,
            end_key: opts.end,
            limit: opts.limit,
            reverse: opts.reverse,
            start_exclusive: opts.after,
        };
        let p = self.c.round_trip_in(Some(self.epoch), &msg, self.timeout_ms).await?;
        let page = ok(wire::decode_scan_reply(p.as_ref()), MsgType::KV_SCAN)?;
        let has_more = page.has_more;
        Ok(ScanPage { payload: p, has_more })
    }

    /// Commits with the durability chosen at begin.
    pub fn commit(self) -> impl Future<Output = Result<(), Error>> {
        let d = self.durability;
        self.commit_with(d)
    }

    /// Commits with `persistence` (sent at COMMIT to a current broker; a
    /// legacy broker already received the durability at BEGIN).
    pub async fn commit_with(mut self, persistence: Durability) -> Result<(), Error> {
        let msg =
            wire::Commit { tx_id: self.tx_id, route: &self.route, persistence: (!self.legacy).then_some(persistence) };
        let r = self.ack(&msg, MsgType::KV_COMMIT).await;
        // Committed or refused: either way the broker closed it.
        self.open = false;
        r
    }

    /// Rolls back.
    pub async fn rollback(mut self) -> Result<(), Error> {
        let r = self.ack(&wire::Rollback { tx_id: self.tx_id, route: &self.route }, MsgType::KV_ROLLBACK).await;
        self.open = false;
        r
    }
}

impl<H: Shared> Drop for Txn<H> {
    fn drop(&mut self) {
        if self.open {
            // Scheduled, not awaited; a stale or unsent rollback is moot
            // (the broker drops a connection's transactions with it).
            let _ = self.c.forget(&wire::Rollback { tx_id: self.tx_id, route: &self.route }, self.epoch);
        }
    }
}

/// A committed change.
#[derive(Debug, Clone)]
pub struct Change<P> {
    payload: P,
    /// Successful writes in the transaction.
    pub mutation_count: u64,
}

impl<P: Buf> Change<P> {
    /// The concrete route that changed.
    pub fn route(&self) -> &str {
        wire::Notify::decode(self.payload.as_ref()).map(|n| n.route).unwrap_or("")
    }
}

/// A KV subscription: committed changes on matching routes.
pub struct Changes<H: Shared> {
    sub: Subscription<H>,
}

impl<H: Shared> Changes<H> {
    /// Polls the next change; `None` once the subscription ended, an error
    /// if it ended abnormally (e.g. [`Error::Backpressure`]). Restores after
    /// a reconnect are skipped. (`Changes` is also a `futures_core::Stream`
    /// of the same items.)
    pub fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Change<BufOf<H>>, Error>>> {
        poll_record(&mut self.sub, cx, |payload| match wire::Notify::decode(payload.as_ref()) {
            Ok(n) => Ok(Change { mutation_count: n.mutation_count, payload: payload.clone() }),
            Err(e) => Err(Error::Decode(e)),
        })
    }

    /// The next change (see [`Changes::poll_next`]). Cancel-safe: dropping
    /// the future loses no change.
    pub async fn next(&mut self) -> Option<Result<Change<BufOf<H>>, Error>> {
        poll_fn(|cx| self.poll_next(cx)).await
    }

    /// The raw subscription (restore notices included).
    pub fn into_inner(self) -> Subscription<H> {
        self.sub
    }
}

impl<H: Shared + Unpin> futures_core::Stream for Changes<H> {
    type Item = Result<Change<BufOf<H>>, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Changes::poll_next(self.get_mut(), cx)
    }
}
