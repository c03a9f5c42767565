//! Schedules (BROKER.md §10, WIRE.md §8.7; current dialect §15.6 / §B10).
//!
//! Definitions are durable for the broker's lifetime (a disconnect removes
//! only the session's subscriptions). Cron strings are 5-field expressions
//! evaluated in UTC with the `croner` crate. Firing happens in `tick`: when
//! the broker's UTC time enters a new minute, every schedule created before
//! that minute's boundary whose cron matches it fires once; minutes that
//! passed without a tick are not back-filled.
//!
//! Envelopes: CREATE, CANCEL, SUBSCRIBE, UNSUBSCRIBE and CREATE_BATCH answer
//! domain errors uncoded (the meaning codes 7002–7008 never reach the
//! wire); LIST and LIST_V2 answer coded.

use core::ops::Bound;
use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use fitz_wire::record::MAX_PAYLOAD;
use fitz_wire::schedule::{
    self, Cancel, Create, CreateBatch, DeliveryMode, Entry, List, ListOk, ListV2, ListV2Ok, Subscribe, Unsubscribe,
};
use fitz_wire::{DecodeError, Dialect, MsgType, Payload, Reader, Reply};

use crate::auth::Access;
use crate::core::{Close, Core, Handled, Request, SessionId, internal_code};
use crate::subs::{Registry, SubError};
use crate::world::Domain;

/// The fixed route LIST and LIST_V2 are authorized against (§2.3).
const LIST_ROUTE: &str = "schedule://**";
/// 7004 parse error: LIST / LIST_V2 requests that do not decode.
const ERR_PARSE: u32 = 7004;

const MSG_INVALID_TARGET: &str = "invalid target route"; // 7005
const MSG_INVALID_CRON: &str = "invalid cron expression"; // 7002
const MSG_NEVER_MATCHES: &str = "invalid cron expression: it can never match"; // 7002
const MSG_INVALID_MODE: &str = "invalid delivery mode"; // 7008
const MSG_INVALID_PATTERN: &str = "invalid subscription pattern"; // 7006
const MSG_PARSE: &str = "malformed schedule request"; // 7004
const MSG_TOO_LARGE: &str = "schedule too large to be listed"; // 7003

/// Continuation strings of LIST_V2: this prefix, then the last route served.
const CONTINUATION_PREFIX: &str = "v1:";

/// LIST_V2 reply bytes besides the entries: status, version, has_more, the
/// continuation's presence byte and the end marker.
const V2_FIXED: usize = 5;

const MINUTE_MS: u64 = 60_000;

/// (route family, concrete route): families never see each other's
/// schedules; within a family the map order is the LIST order.
type Key = (u32, String);

#[derive(Debug)]
struct Sched {
    cron_text: String,
    cron: Cron,
    mode: DeliveryMode,
    payload: Vec<u8>,
    /// The first UTC minute (minutes since the epoch) this schedule may fire
    /// for: the minute after its creation, so it never fires at creation.
    next_minute: u64,
}

impl Sched {
    fn entry<'a>(&'a self, route: &'a str) -> Entry<'a> {
        Entry { route, cron: &self.cron_text, delivery_mode: self.mode, payload: &self.payload }
    }
}

#[derive(Debug, Default)]
pub(crate) struct Schedule {
    schedules: BTreeMap<Key, Sched>,
    /// Round-robin cursor of single-delivery schedules, per route (kept
    /// across cancel and re-create).
    rr: HashMap<Key, u64>,
    subs: Registry,
    /// The last minute `tick` looked at.
    last_minute: Option<u64>,
}

/// Parses and validates a cron string: the numeric 5-field grammar of
/// BROKER.md §10 (croner does the parsing), and at least one future match.
fn parse_cron(text: &str, now_utc_ms: u64) -> Result<Cron, &'static str> {
    // Only the documented grammar: numbers, `*`, ranges, lists and steps.
    // Names, `L`, `W`, `#`, `?` and `@nicknames` are croner extensions.
    let allowed = |c: char| c.is_ascii_digit() || matches!(c, '*' | '/' | ',' | '-' | ' ' | '\t');
    if !text.chars().all(allowed) || text.split_ascii_whitespace().count() != 5 {
        return Err(MSG_INVALID_CRON);
    }
    let parser = CronParser::builder().seconds(Seconds::Disallowed).year(Year::Disallowed).build();
    let cron = parser.parse(text).map_err(|_| MSG_INVALID_CRON)?;
    if !can_match(&cron, now_utc_ms) {
        return Err(MSG_NEVER_MATCHES);
    }
    Ok(cron)
}

/// False for expressions such as `0 0 31 2 *` that name no real date.
///
/// croner's own forward search (`find_next_occurrence`) proves this only by
/// walking to the year 5000, which takes far too long under the world lock.
/// Hours and minutes do not depend on the date, so it is enough to take the
/// first allowed time of day and ask croner whether any date of the next
/// eight years matches at that time: eight years always include a 29
/// February, and every weekday occurs in every month.
fn can_match(cron: &Cron, now_utc_ms: u64) -> bool {
    let p = &cron.pattern;
    let Some(hour) = (0..24).find(|h| p.hour_match(*h).unwrap_or(false)) else { return false };
    let Some(minute) = (0..60).find(|m| p.minute_match(*m).unwrap_or(false)) else { return false };
    let Some(today) = i64::try_from(now_utc_ms).ok().and_then(DateTime::<Utc>::from_timestamp_millis) else {
        return false;
    };
    let Some(first) = today.date_naive().and_hms_opt(hour, minute, 0) else { return false };
    (0..8 * 366).any(|d| {
        first
            .checked_add_days(chrono::Days::new(d))
            .is_some_and(|t| cron.is_time_matching(&t.and_utc()).unwrap_or(false))
    })
}

/// Checks one definition (CREATE, or an entry of CREATE_BATCH).
fn validate(e: &Entry<'_>, now_utc_ms: u64) -> Result<Cron, &'static str> {
    if !schedule::is_valid_route(e.route) {
        return Err(MSG_INVALID_TARGET);
    }
    // Every schedule must fit alone on a LIST_V2 page with a continuation
    // (`V2_FIXED` + marker + entry + continuation), so paging always moves.
    let page = V2_FIXED + 1 + e.payload_len() + 4 + CONTINUATION_PREFIX.len() + e.route.len();
    if page > MAX_PAYLOAD {
        return Err(MSG_TOO_LARGE);
    }
    parse_cron(e.cron, now_utc_ms)
}

/// The route a request names first (CREATE, CANCEL, SUBSCRIBE, UNSUBSCRIBE):
/// without it the permission check cannot run and the session closes (§2.5).
fn leading_route<'a>(req: &Request<'a>) -> Result<&'a str, Close> {
    Reader::new(req.payload).str().map_err(|_| Close("schedule request without a readable route"))
}

fn limit_of(limit: Option<u64>) -> usize {
    match limit {
        None => usize::try_from(schedule::LIST_DEFAULT_LIMIT).unwrap_or(usize::MAX),
        Some(0) => usize::MAX,
        Some(n) => usize::try_from(n).unwrap_or(usize::MAX),
    }
}

impl Schedule {
    fn family(&self, family: u32) -> impl Iterator<Item = (&Key, &Sched)> + '_ {
        self.schedules
            .range((Bound::Included((family, String::new())), Bound::Unbounded))
            .take_while(move |(k, _)| k.0 == family)
    }

    fn store(&mut self, family: u32, e: &Entry<'_>, cron: Cron, now_utc_ms: u64) {
        let sched = Sched {
            cron_text: e.cron.to_owned(),
            cron,
            mode: e.delivery_mode,
            payload: e.payload.to_vec(),
            next_minute: now_utc_ms / MINUTE_MS + 1,
        };
        self.schedules.insert((family, e.route.to_owned()), sched);
    }

    fn create(&mut self, core: &mut Core, req: &Request<'_>) -> Handled {
        let route = leading_route(req)?;
        if !core.authorize(req, route, Access::Write) {
            return Ok(());
        }
        let c = match Create::decode(req.payload) {
            Ok(c) => c,
            // The only enumerated field of CREATE is the delivery mode.
            Err(DecodeError::InvalidValue { .. }) => {
                core.plain_error(req.to, MSG_INVALID_MODE);
                return Ok(());
            }
            Err(_) => {
                core.plain_error(req.to, MSG_PARSE);
                return Ok(());
            }
        };
        let now = core.clock.utc_ms();
        let e = Entry::from(c);
        match validate(&e, now) {
            Ok(cron) => {
                self.store(req.family, &e, cron, now);
                core.ack(req.to);
            }
            Err(msg) => core.plain_error(req.to, msg),
        }
        Ok(())
    }

    fn create_batch(&mut self, core: &mut Core, req: &Request<'_>) -> Handled {
        let batch = match CreateBatch::decode(req.payload) {
            Ok(b) => b,
            Err(DecodeError::InvalidValue { .. }) => {
                core.plain_error(req.to, MSG_INVALID_MODE);
                return Ok(());
            }
            // The routes cannot be read for the permission check.
            Err(_) => return Err(Close("undecodable schedule CREATE_BATCH")),
        };
        for e in batch.entries.iter() {
            if !core.authorize(req, e.route, Access::Write) {
                return Ok(());
            }
        }
        // All or none: validate every entry before storing any.
        let now = core.clock.utc_ms();
        let mut valid = Vec::new();
        for e in batch.entries.iter() {
            match validate(&e, now) {
                Ok(cron) => valid.push((e, cron)),
                Err(msg) => {
                    core.plain_error(req.to, msg);
                    return Ok(());
                }
            }
        }
        for (e, cron) in valid {
            self.store(req.family, &e, cron, now);
        }
        core.ack(req.to);
        Ok(())
    }

    fn cancel(&mut self, core: &mut Core, req: &Request<'_>) -> Handled {
        let route = leading_route(req)?;
        if !core.authorize(req, route, Access::Write) {
            return Ok(());
        }
        if Cancel::decode(req.payload).is_err() {
            core.plain_error(req.to, MSG_PARSE);
        } else if !schedule::is_valid_route(route) {
            core.plain_error(req.to, MSG_INVALID_TARGET);
        } else {
            // Unknown routes succeed (idempotent).
            self.schedules.remove(&(req.family, route.to_owned()));
            core.ack(req.to);
        }
        Ok(())
    }

    fn list(&mut self, core: &mut Core, req: &Request<'_>) -> Handled {
        if !core.authorize(req, LIST_ROUTE, Access::Read) {
            return Ok(());
        }
        let Ok(l) = List::decode(req.payload) else {
            core.error(req.to, ERR_PARSE, "malformed list request");
            return Ok(());
        };
        let total_count = u64::try_from(self.family(req.family).count()).unwrap_or(u64::MAX);
        let offset = usize::try_from(l.effective_offset()).unwrap_or(usize::MAX);
        let page = self.family(req.family).skip(offset).take(limit_of(l.limit)).map(|(k, s)| s.entry(&k.1));
        // Status byte and total_count take 9 bytes of the record.
        let mut buf = vec![0u8; MAX_PAYLOAD - 1 - 8];
        match schedule::write_entries_fitting(page, &mut buf) {
            Ok(entries) => core.reply(req.to, Reply::Ok(ListOk { total_count, entries })),
            Err(_) => core.error(req.to, internal_code(req.to.msg_type), "list page"),
        }
        Ok(())
    }

    fn list_v2(&mut self, core: &mut Core, req: &Request<'_>) -> Handled {
        if !core.authorize(req, LIST_ROUTE, Access::Read) {
            return Ok(());
        }
        let Ok(l) = ListV2::decode(req.payload) else {
            core.error(req.to, ERR_PARSE, "malformed list request");
            return Ok(());
        };
        let after = match l.continuation {
            None => None,
            Some(c) => match c.strip_prefix(CONTINUATION_PREFIX) {
                Some(route) if schedule::is_valid_route(route) => Some(route.to_owned()),
                _ => {
                    core.error(req.to, ERR_PARSE, "invalid continuation");
                    return Ok(());
                }
            },
        };
        let family = req.family;
        let start = match after {
            Some(route) => Bound::Excluded((family, route)),
            None => Bound::Included((family, String::new())),
        };
        let candidates: Vec<Entry<'_>> = self
            .schedules
            .range((start, Bound::Unbounded))
            .take_while(|(k, _)| k.0 == family)
            .map(|(k, s)| s.entry(&k.1))
            .collect();
        // Take entries while the page (with the continuation it would need)
        // fits in one record.
        let limit = limit_of(l.limit);
        let mut used = 0usize;
        let mut n = 0usize;
        for (i, e) in candidates.iter().enumerate().take(limit) {
            let with = used + 1 + e.payload_len();
            let more = i + 1 < candidates.len();
            let continuation = if more { 4 + CONTINUATION_PREFIX.len() + e.route.len() } else { 0 };
            if V2_FIXED + with + continuation > MAX_PAYLOAD {
                break;
            }
            used = with;
            n += 1;
        }
        let has_more = n < candidates.len();
        let continuation = if has_more {
            candidates.get(n.wrapping_sub(1)).map(|e| format!("{CONTINUATION_PREFIX}{}", e.route))
        } else {
            None
        };
        let mut buf = vec![0u8; used + 1];
        match schedule::write_entries(candidates.iter().take(n).copied(), &mut buf) {
            Ok(entries) => core.reply(
                req.to,
                Reply::Ok(ListV2Ok {
                    has_more: has_more && continuation.is_some(),
                    continuation: continuation.as_deref(),
                    entries,
                }),
            ),
            Err(_) => core.error(req.to, internal_code(req.to.msg_type), "list page"),
        }
        Ok(())
    }

    fn subscribe(&mut self, core: &mut Core, req: &Request<'_>) -> Handled {
        let pattern = leading_route(req)?;
        if !core.authorize(req, pattern, Access::Read) {
            return Ok(());
        }
        let decoded = match req.to.msg_type {
            MsgType::SCHEDULE_SUBSCRIBE => Subscribe::decode(req.payload).map(|_| ()),
            _ => Unsubscribe::decode(req.payload).map(|_| ()),
        };
        if decoded.is_err() {
            core.plain_error(req.to, MSG_PARSE);
            return Ok(());
        }
        if !schedule::is_valid_pattern(pattern) {
            core.plain_error(req.to, MSG_INVALID_PATTERN);
            return Ok(());
        }
        if req.to.msg_type == MsgType::SCHEDULE_UNSUBSCRIBE {
            self.subs.unsubscribe_pattern(req.session(), pattern);
            core.ack(req.to);
            return Ok(());
        }
        let l = core.cfg.limits;
        match self.subs.subscribe(req.session(), req.family, pattern, l.wildcard_quota, l.total_quota) {
            Ok(sub_id) => core.reply(req.to, Reply::Ok(schedule::SubscribeOk { sub_id })),
            Err(SubError::Quota) => {
                // The registry does not say which limit was hit; the
                // messages are stable identifiers (WIRE.md §6.2).
                let total = self.subs.all().filter(|s| s.session == req.session()).count();
                let msg = if total >= l.total_quota {
                    format!("total subscription limit exceeded ({} per session)", l.total_quota)
                } else {
                    format!("wildcard subscription limit exceeded ({} per session)", l.wildcard_quota)
                };
                core.plain_error(req.to, &msg);
            }
        }
        Ok(())
    }

    /// Fires every due schedule for the minute `minute` (UTC minutes since
    /// the epoch).
    fn fire(&mut self, core: &mut Core, minute: u64) {
        let Some(at) =
            i64::try_from(minute.saturating_mul(MINUTE_MS)).ok().and_then(DateTime::<Utc>::from_timestamp_millis)
        else {
            return;
        };
        let mut due: Vec<(Key, DeliveryMode, Vec<u8>)> = Vec::new();
        for (key, s) in &mut self.schedules {
            if minute < s.next_minute {
                continue;
            }
            // Only the current boundary counts: no back-fill after a gap.
            s.next_minute = minute + 1;
            if s.cron.is_time_matching(&at).unwrap_or(false) {
                due.push((key.clone(), s.mode, s.payload.clone()));
            }
        }
        for (key, mode, payload) in due {
            let (family, route) = (&key.0, key.1.as_str());
            let targets: Vec<(SessionId, u64)> =
                self.subs.matching(*family, route).map(|s| (s.session, s.id)).collect();
            if targets.is_empty() {
                // No subscriber: the occurrence is skipped (§10).
                continue;
            }
            let chosen: Vec<(SessionId, u64)> = match mode {
                DeliveryMode::Broadcast => targets,
                DeliveryMode::Single => {
                    let cursor = self.rr.entry(key.clone()).or_insert(0);
                    let len = u64::try_from(targets.len()).unwrap_or(u64::MAX);
                    let idx = usize::try_from(*cursor % len).unwrap_or(0);
                    *cursor = cursor.wrapping_add(1);
                    targets.get(idx).copied().into_iter().collect()
                }
            };
            for (session, sub_id) in chosen {
                core.notify(session, &schedule::Notify { sub_id, route, payload: &payload });
            }
        }
    }
}

impl Domain for Schedule {
    fn handle(&mut self, core: &mut Core, req: &Request<'_>) -> Handled {
        let current = req.dialect == Dialect::Current;
        match req.to.msg_type {
            MsgType::SCHEDULE_CREATE => self.create(core, req),
            MsgType::SCHEDULE_CANCEL => self.cancel(core, req),
            MsgType::SCHEDULE_LIST => self.list(core, req),
            MsgType::SCHEDULE_SUBSCRIBE | MsgType::SCHEDULE_UNSUBSCRIBE => self.subscribe(core, req),
            MsgType::SCHEDULE_CREATE_BATCH if current => self.create_batch(core, req),
            MsgType::SCHEDULE_LIST_V2 if current => self.list_v2(core, req),
            // 706/707 on a legacy listener, 708–799: unsupported (§2.5, §15.6).
            _ => Err(Close("unsupported schedule message type")),
        }
    }

    fn tick(&mut self, core: &mut Core) {
        let minute = core.clock.utc_ms() / MINUTE_MS;
        if self.last_minute == Some(minute) {
            return;
        }
        self.last_minute = Some(minute);
        self.fire(core, minute);
    }

    fn cleanup(&mut self, _core: &mut Core, session: SessionId) {
        // Schedules are durable; only the session's subscriptions go.
        self.subs.remove_session(session);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z, a Thursday

    #[test]
    fn cron_grammar() {
        for ok in ["* * * * *", "*/5 0-6 1,15 1-12/2 0", "0 0 29 2 *", "0 12 * * 1-5", "0 0 31 2 1", "0 0 * * 7"] {
            assert!(parse_cron(ok, NOW).is_ok(), "{ok}");
        }
        for bad in [
            "not a cron",
            "",
            "* * * *",
            "* * * * * *",
            "60 * * * *",
            "* 24 * * *",
            "* * 0 * *",
            "* * * 13 *",
            "0 0 * * MON",
            "@hourly",
            "0 0 L * *",
            "*/0 * * * *",
            "5-1 * * * *",
            "- * * * *",
            "1- * * * *",
            ",,, * * * *",
            "//// * * * *",
        ] {
            assert!(parse_cron(bad, NOW).is_err(), "{bad:?}");
        }
        for never in ["0 0 31 2 *", "0 0 30 2 *", "0 0 31 4,6,9,11 *"] {
            assert_eq!(parse_cron(never, NOW).err(), Some(MSG_NEVER_MATCHES), "{never}");
        }
    }

    #[test]
    fn cron_parsing_never_panics() {
        let alphabet = ['0', '1', '5', '9', '*', '/', ',', '-', ' '];
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..20_000 {
            let mut s = String::new();
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let len = usize::try_from(state % 24).unwrap_or(0);
            let mut x = state;
            for _ in 0..len {
                let i = usize::try_from(x % 9).unwrap_or(0);
                s.push(alphabet.get(i).copied().unwrap_or(' '));
                x /= 9;
                if x == 0 {
                    x = state.rotate_left(17);
                }
            }
            let _ = parse_cron(&s, NOW);
        }
    }
}
