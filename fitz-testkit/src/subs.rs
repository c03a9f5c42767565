//! Subscription registrations of one domain (BROKER.md §3.2–§3.4): ids per
//! `(session, original pattern string)`, idempotent duplicates, per-session
//! quotas, route-family isolation and matching.

use std::collections::BTreeMap;

use crate::core::SessionId;

/// One registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Sub {
    pub(crate) id: u64,
    pub(crate) session: SessionId,
    pub(crate) family: u32,
    pub(crate) pattern: String,
}

/// Why a SUBSCRIBE was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SubError {
    /// 129th wildcard registration, or 1,025th registration.
    Quota,
}

/// The registrations of one domain in one broker world.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    next_id: u64,
    subs: BTreeMap<u64, Sub>,
}

impl Registry {
    /// Registers `pattern` for `session`; a duplicate returns the existing
    /// id before any quota is checked.
    pub(crate) fn subscribe(
        &mut self,
        session: SessionId,
        family: u32,
        pattern: &str,
        wildcard_quota: usize,
        total_quota: usize,
    ) -> Result<u64, SubError> {
        if let Some(s) = self.subs.values().find(|s| s.session == session && s.pattern == pattern) {
            return Ok(s.id);
        }
        let mine = self.subs.values().filter(|s| s.session == session);
        let (mut total, mut wild) = (0usize, 0usize);
        for s in mine {
            total += 1;
            wild += usize::from(fitz_wire::route::has_wildcard(&s.pattern));
        }
        if total >= total_quota || (fitz_wire::route::has_wildcard(pattern) && wild >= wildcard_quota) {
            return Err(SubError::Quota);
        }
        self.next_id += 1;
        let id = self.next_id;
        self.subs.insert(id, Sub { id, session, family, pattern: pattern.to_owned() });
        Ok(id)
    }

    /// Removes `session`'s registration of `pattern` (idempotent).
    pub(crate) fn unsubscribe_pattern(&mut self, session: SessionId, pattern: &str) -> Option<Sub> {
        let id = self.subs.values().find(|s| s.session == session && s.pattern == pattern)?.id;
        self.subs.remove(&id)
    }

    /// Removes `session`'s registration with `id` (idempotent).
    pub(crate) fn unsubscribe_id(&mut self, session: SessionId, id: u64) -> Option<Sub> {
        if self.subs.get(&id).is_some_and(|s| s.session == session) { self.subs.remove(&id) } else { None }
    }

    /// Removes every registration of `session`.
    pub(crate) fn remove_session(&mut self, session: SessionId) {
        self.subs.retain(|_, s| s.session != session);
    }

    /// Registrations of `family` whose pattern matches the concrete `route`,
    /// in id order.
    pub(crate) fn matching<'a>(&'a self, family: u32, route: &'a str) -> impl Iterator<Item = &'a Sub> + 'a {
        self.subs.values().filter(move |s| s.family == family && fitz_wire::route::matches(&s.pattern, route))
    }

    /// Every registration (for tests and inventory).
    pub(crate) fn all(&self) -> impl Iterator<Item = &Sub> {
        self.subs.values()
    }

    /// Registration `id`.
    pub(crate) fn get(&self, id: u64) -> Option<&Sub> {
        self.subs.get(&id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idempotent_and_quota() {
        let mut r = Registry::default();
        let a = r.subscribe(1, 1, "notice://a/**", 2, 3).unwrap();
        assert_eq!(r.subscribe(1, 1, "notice://a/**", 2, 3), Ok(a));
        r.subscribe(1, 1, "notice://b/**", 2, 3).unwrap();
        assert_eq!(r.subscribe(1, 1, "notice://c/**", 2, 3), Err(SubError::Quota));
        r.subscribe(1, 1, "notice://c/d/e", 2, 3).unwrap();
        assert_eq!(r.subscribe(1, 1, "notice://c/d/f", 2, 3), Err(SubError::Quota));
        // Another session has its own quota; duplicates are answered first.
        assert!(r.subscribe(2, 1, "notice://c/**", 2, 3).is_ok());
        assert_eq!(r.matching(1, "notice://a/x/y").count(), 1);
        assert_eq!(r.matching(2, "notice://a/x/y").count(), 0);
    }
}
