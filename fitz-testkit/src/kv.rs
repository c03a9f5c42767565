//! KV transactions (BROKER.md §4; current dialect §15.3).

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;

use fitz_wire::kv::{self, Begin, Commit, Mode};
use fitz_wire::route::{self, Scheme};
use fitz_wire::{Capabilities, Dialect, MsgType, Payload, Reply};

use crate::auth::Access;
use crate::core::{Close, Core, Handled, ReplyTo, Request, SessionId};
use crate::subs::{Registry, SubError};
use crate::world::Domain;

/// Largest page a SCAN returns (items).
const SCAN_CAP: usize = 1024;
/// Room for the reply header fields around the pairs (status, count, has_more).
const SCAN_OVERHEAD: usize = 1 + 4 + 1;

type Key = Vec<u8>;
type Data = BTreeMap<Key, Vec<u8>>;
/// (family, canonical route `kv://realm/area/resource`)
type ResourceId = (u32, String);

#[derive(Debug)]
struct Tx {
    session: SessionId,
    resource: ResourceId,
    mode: Mode,
    /// ReadOnly: the committed data as of BEGIN.
    snapshot: Option<Data>,
    /// ReadWrite: pending writes (`None` = delete) over the live data.
    writes: BTreeMap<Key, Option<Vec<u8>>>,
    mutations: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Kv {
    data: HashMap<ResourceId, Data>,
    locks: HashMap<ResourceId, u64>,
    txs: HashMap<u64, Tx>,
    next_tx: u64,
    subs: Registry,
}

/// Splits a KV route (with or without `kv://`) into its canonical form and
/// realm, checking three segments and the realm alphabet.
fn canonical(route_str: &str) -> Result<(String, &str), u32> {
    let rest = route_str.strip_prefix("kv://").unwrap_or(route_str);
    let full = format!("kv://{rest}");
    if !route::is_concrete(&full, Scheme::Kv, 3) {
        return Err(1007);
    }
    let realm = rest.split('/').next().unwrap_or_default();
    if !realm.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
        return Err(1007);
    }
    Ok((full, realm))
}

fn realm_of(route: &str) -> &str {
    route.strip_prefix("kv://").unwrap_or(route).split('/').next().unwrap_or_default()
}

impl Kv {
    /// The transaction `tx_id` if `req`'s session owns it and `route` is its
    /// route; otherwise the coded error to answer.
    fn tx_for(&self, req: &Request<'_>, tx_id: u64, route: &str) -> Result<&Tx, (u32, &'static str)> {
        let tx = self.txs.get(&tx_id).filter(|t| t.session == req.session()).ok_or((1001, "transaction not found"))?;
        let given = format!("kv://{}", route.strip_prefix("kv://").unwrap_or(route));
        if given != tx.resource.1 {
            return Err(if realm_of(&given) != realm_of(&tx.resource.1) {
                (1008, "realm mismatch")
            } else {
                (1007, "route outside the transaction's scope")
            });
        }
        Ok(tx)
    }

    fn view<'d>(data: &'d HashMap<ResourceId, Data>, tx: &'d Tx) -> Option<&'d Data> {
        tx.snapshot.as_ref().or_else(|| data.get(&tx.resource))
    }

    fn get(&self, tx: &Tx, key: &[u8]) -> Option<Vec<u8>> {
        if let Some(w) = tx.writes.get(key) {
            return w.clone();
        }
        Self::view(&self.data, tx).and_then(|d| d.get(key).cloned())
    }

    /// The merged, ordered view of a transaction (committed data plus its
    /// own writes) between two bounds.
    fn range(&self, tx: &Tx, lo: Bound<Key>, hi: Bound<Key>) -> BTreeMap<Key, Vec<u8>> {
        let mut out: BTreeMap<Key, Vec<u8>> = Self::view(&self.data, tx)
            .map(|d| d.range((lo.clone(), hi.clone())).map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default();
        for (k, w) in tx.writes.range((lo, hi)) {
            match w {
                Some(v) => out.insert(k.clone(), v.clone()),
                None => out.remove(k),
            };
        }
        out
    }

    fn begin(&mut self, core: &mut Core, req: &Request<'_>) -> Handled {
        // An undecodable BEGIN (wrong dialect included) closes (§2.5, §15.3).
        let b = Begin::decode_dialect(req.payload, req.dialect).map_err(|_| Close("undecodable KV BEGIN"))?;
        let access = if b.mode == Mode::ReadOnly { Access::Read } else { Access::Write };
        let (full, _) = match canonical(b.route) {
            Ok(r) => r,
            Err(code) => {
                core.error(req.to, code, "invalid route");
                return Ok(());
            }
        };
        if !core.authorize(req, &full, access) {
            return Ok(());
        }
        let resource = (req.family, full);
        let snapshot = match b.mode {
            Mode::ReadOnly => Some(self.data.get(&resource).cloned().unwrap_or_default()),
            Mode::ReadWrite => {
                if self.locks.contains_key(&resource) {
                    core.error(req.to, 1004, "resource locked by another transaction");
                    return Ok(());
                }
                None
            }
        };
        self.next_tx += 1;
        let tx_id = self.next_tx;
        if b.mode == Mode::ReadWrite {
            self.locks.insert(resource.clone(), tx_id);
        }
        self.txs.insert(
            tx_id,
            Tx { session: req.session(), resource, mode: b.mode, snapshot, writes: BTreeMap::new(), mutations: 0 },
        );
        core.reply(req.to, Reply::Ok(kv::BeginOk { tx_id }));
        Ok(())
    }

    fn end(&mut self, tx_id: u64) -> Option<Tx> {
        let tx = self.txs.remove(&tx_id)?;
        if self.locks.get(&tx.resource) == Some(&tx_id) {
            self.locks.remove(&tx.resource);
        }
        Some(tx)
    }

    fn commit(&mut self, core: &mut Core, req: &Request<'_>) -> Handled {
        let Ok(c) = Commit::decode_dialect(req.payload, req.dialect) else {
            // Current dialect: a missing or bad persistence byte is answered
            // 1002 and the transaction stays open (WIRE.md C51).
            core.error(req.to, 1002, "invalid commit persistence");
            return Ok(());
        };
        if let Err((code, msg)) = self.tx_for(req, c.tx_id, c.route) {
            core.error(req.to, code, msg);
            return Ok(());
        }
        let Some(tx) = self.end(c.tx_id) else { return Ok(()) };
        if tx.mode == Mode::ReadWrite && !tx.writes.is_empty() {
            let data = self.data.entry(tx.resource.clone()).or_default();
            for (k, w) in tx.writes {
                match w {
                    Some(v) => data.insert(k, v),
                    None => data.remove(&k),
                };
            }
        }
        if tx.mode == Mode::ReadWrite && tx.mutations > 0 {
            let (family, route) = &tx.resource;
            let targets: Vec<(SessionId, u64)> =
                self.subs.matching(*family, route).map(|s| (s.session, s.id)).collect();
            for (session, sub_id) in targets {
                core.notify(session, &kv::Notify { sub_id, route, mutation_count: tx.mutations });
            }
        }
        core.ack(req.to);
        Ok(())
    }

    fn write_op(&mut self, core: &mut Core, req: &Request<'_>) -> Handled {
        let t = req.to.msg_type;
        // (tx_id, route, key or start, value or end)
        let parsed: Result<(u64, &str, &[u8], &[u8]), _> = match t {
            MsgType::KV_PUT => kv::Put::decode(req.payload).map(|m| (m.tx_id, m.route, m.key, m.value)),
            MsgType::KV_INSERT => kv::Insert::decode(req.payload).map(|m| (m.tx_id, m.route, m.key, m.value)),
            MsgType::KV_DELETE => kv::Delete::decode(req.payload).map(|m| (m.tx_id, m.route, m.key, &[][..])),
            _ => kv::DeleteRange::decode(req.payload).map(|m| (m.tx_id, m.route, m.start_key, m.end_key)),
        };
        let Ok((tx_id, route, a, b)) = parsed else {
            core.error(req.to, 1002, "malformed request");
            return Ok(());
        };
        let existing = match t {
            MsgType::KV_INSERT => match self.txs.get(&tx_id) {
                Some(tx) => self.get(tx, a).is_some(),
                None => false,
            },
            _ => false,
        };
        let range_keys: Vec<Key> = match (t, self.txs.get(&tx_id)) {
            (MsgType::KV_DELETE_RANGE, Some(tx)) if a < b => {
                self.range(tx, Bound::Included(a.to_vec()), Bound::Excluded(b.to_vec())).into_keys().collect()
            }
            _ => Vec::new(),
        };
        if let Err((code, msg)) = self.tx_for(req, tx_id, route) {
            core.error(req.to, code, msg);
            return Ok(());
        }
        let Some(tx) = self.txs.get_mut(&tx_id) else { return Ok(()) };
        if tx.mode == Mode::ReadOnly {
            core.error(req.to, 1005, "write in a read-only transaction");
            return Ok(());
        }
        match t {
            MsgType::KV_INSERT if existing => {
                core.error(req.to, 1006, "key exists");
                return Ok(());
            }
            MsgType::KV_PUT | MsgType::KV_INSERT => {
                tx.writes.insert(a.to_vec(), Some(b.to_vec()));
            }
            MsgType::KV_DELETE => {
                tx.writes.insert(a.to_vec(), None);
            }
            _ => {
                if a >= b {
                    core.error(req.to, 1007, "start must be less than end");
                    return Ok(());
                }
                for k in range_keys {
                    tx.writes.insert(k, None);
                }
            }
        }
        tx.mutations += 1;
        core.ack(req.to);
        Ok(())
    }

    fn scan(&mut self, core: &mut Core, req: &Request<'_>) -> Handled {
        let exclusive_ok = req.has(Capabilities::KV_SCAN_EXCLUSIVE);
        let Ok(s) = kv::Scan::decode_with(req.payload, exclusive_ok) else {
            core.error(req.to, 1002, "malformed scan");
            return Ok(());
        };
        let tx = match self.tx_for(req, s.tx_id, s.route) {
            Ok(tx) => tx,
            Err((code, msg)) => {
                core.error(req.to, code, msg);
                return Ok(());
            }
        };
        let limit = match s.limit {
            None | Some(0) => SCAN_CAP,
            Some(n) => usize::try_from(n).unwrap_or(SCAN_CAP).min(SCAN_CAP),
        };
        let start = |incl: bool, k: &[u8]| if incl { Bound::Included(k.to_vec()) } else { Bound::Excluded(k.to_vec()) };
        let matches: Vec<(Key, Vec<u8>)> = if !s.reverse {
            // start <= key < end
            let lo = s.start_key.map_or(Bound::Unbounded, |k| start(!s.start_exclusive, k));
            let hi = s.end_key.map_or(Bound::Unbounded, |k| Bound::Excluded(k.to_vec()));
            if let (Some(a), Some(b)) = (s.start_key, s.end_key)
                && a >= b
            {
                Vec::new()
            } else {
                self.range(tx, lo, hi).into_iter().collect()
            }
        } else {
            // end < key <= start, descending
            let hi = s.start_key.map_or(Bound::Unbounded, |k| start(!s.start_exclusive, k));
            let lo = s.end_key.map_or(Bound::Unbounded, |k| Bound::Excluded(k.to_vec()));
            if let (Some(a), Some(b)) = (s.start_key, s.end_key)
                && a <= b
            {
                Vec::new()
            } else {
                self.range(tx, lo, hi).into_iter().rev().collect()
            }
        };
        // As many pairs as the limit and one record allow.
        let mut budget = fitz_wire::record::MAX_PAYLOAD - SCAN_OVERHEAD;
        let mut n = 0;
        for (k, v) in matches.iter().take(limit) {
            let size = 8 + k.len() + v.len();
            if size > budget {
                break;
            }
            budget -= size;
            n += 1;
        }
        let has_more = n < matches.len();
        let mut page = vec![0u8; fitz_wire::record::MAX_PAYLOAD - SCAN_OVERHEAD - budget];
        let pairs = kv::ScanPairs::write_into(
            matches.iter().take(n).map(|(k, v)| kv::ScanPair { key: k, value: v }),
            (),
            &mut page,
        )
        .map_err(|_| Close("scan page"))?;
        core.reply(req.to, Reply::Ok(kv::ScanOk { pairs, has_more }));
        Ok(())
    }

    fn subscribe(&mut self, core: &mut Core, req: &Request<'_>) -> Handled {
        let pattern = match req.to.msg_type {
            MsgType::KV_SUBSCRIBE => kv::Subscribe::decode(req.payload).map(|m| m.pattern),
            _ => kv::Unsubscribe::decode(req.payload).map(|m| m.pattern),
        }
        .map_err(|_| Close("undecodable KV subscription"))?;
        if !route::is_valid_pattern(pattern, Scheme::Kv, Some(3)) {
            core.error(req.to, 1012, "invalid subscription pattern");
            return Ok(());
        }
        if !core.authorize(req, pattern, Access::Read) {
            return Ok(());
        }
        if req.to.msg_type == MsgType::KV_UNSUBSCRIBE {
            self.subs.unsubscribe_pattern(req.session(), pattern);
            core.ack(req.to);
            return Ok(());
        }
        let l = core.cfg.limits;
        match self.subs.subscribe(req.session(), req.family, pattern, l.wildcard_quota, l.total_quota) {
            Ok(sub_id) => core.reply(req.to, Reply::Ok(kv::SubscribeOk { sub_id })),
            Err(SubError::Quota) => core.error(req.to, 1013, "subscription limit exceeded"),
        }
        Ok(())
    }
}

impl Domain for Kv {
    fn handle(&mut self, core: &mut Core, req: &Request<'_>) -> Handled {
        match req.to.msg_type {
            MsgType::KV_BEGIN => self.begin(core, req),
            MsgType::KV_COMMIT => self.commit(core, req),
            MsgType::KV_ROLLBACK => {
                let Ok(r) = kv::Rollback::decode(req.payload) else {
                    core.error(req.to, 1002, "malformed request");
                    return Ok(());
                };
                match self.tx_for(req, r.tx_id, r.route) {
                    Ok(_) => {
                        self.end(r.tx_id);
                        core.ack(req.to);
                    }
                    Err((code, msg)) => core.error(req.to, code, msg),
                }
                Ok(())
            }
            MsgType::KV_GET => {
                let Ok(g) = kv::Get::decode(req.payload) else {
                    core.error(req.to, 1002, "malformed request");
                    return Ok(());
                };
                match self.tx_for(req, g.tx_id, g.route) {
                    Ok(_) => {
                        let value = self.txs.get(&g.tx_id).and_then(|tx| self.get(tx, g.key));
                        core.reply(req.to, Reply::Ok(kv::GetOk { value: value.as_deref() }));
                    }
                    Err((code, msg)) => core.error(req.to, code, msg),
                }
                Ok(())
            }
            MsgType::KV_PUT | MsgType::KV_INSERT | MsgType::KV_DELETE | MsgType::KV_DELETE_RANGE => {
                self.write_op(core, req)
            }
            MsgType::KV_SCAN => self.scan(core, req),
            MsgType::KV_SUBSCRIBE | MsgType::KV_UNSUBSCRIBE => self.subscribe(core, req),
            _ => Err(Close("unsupported KV message type")),
        }
    }

    fn cleanup(&mut self, _core: &mut Core, session: SessionId) {
        let mine: Vec<u64> = self.txs.iter().filter(|(_, t)| t.session == session).map(|(id, _)| *id).collect();
        for id in mine {
            self.end(id);
        }
        self.subs.remove_session(session);
    }
}

#[allow(dead_code)]
fn _dialect_is_used(d: Dialect, r: ReplyTo) -> (Dialect, ReplyTo) {
    (d, r)
}
