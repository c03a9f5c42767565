//! Routes, patterns and stream selectors (WIRE.md §9).
//!
//! These are the checks a decoder must make (concrete routes inside Queue
//! RESERVE items and Stream pages and notifications) and the ones a client
//! may make before sending; the broker stays authoritative.

/// A domain scheme as it appears before `://`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Scheme {
    /// `kv://`
    Kv,
    /// `queue://`
    Queue,
    /// `rpc://`
    Rpc,
    /// `lease://`
    Lease,
    /// `notice://`
    Notice,
    /// `stream://`
    Stream,
    /// `schedule://`
    Schedule,
}

impl Scheme {
    /// The scheme's text, without `://`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Scheme::Kv => "kv",
            Scheme::Queue => "queue",
            Scheme::Rpc => "rpc",
            Scheme::Lease => "lease",
            Scheme::Notice => "notice",
            Scheme::Stream => "stream",
            Scheme::Schedule => "schedule",
        }
    }
}

/// `route` split at its first `://` into scheme and rest. (A byte search
/// and `str::get`: unlike `str::split_once`, no substring searcher and no
/// panic path reach the binary, which matters in firmware.)
pub fn split_scheme(route: &str) -> Option<(&str, &str)> {
    let i = route.as_bytes().windows(3).position(|w| w == b"://")?;
    Some((route.get(..i)?, route.get(i + 3..)?))
}

/// The part after `scheme://`, if `route` has that scheme.
pub fn strip_scheme(route: &str, scheme: Scheme) -> Option<&str> {
    route.strip_prefix(scheme.as_str())?.strip_prefix("://")
}

fn valid_segment(s: &str) -> bool {
    !s.is_empty() && !s.chars().any(char::is_control)
}

/// Number of segments of `rest` if every segment is non-empty and free of
/// `*` and control characters; one pass over the bytes (this runs for every
/// item of a READ page and every routed RESERVE item).
fn concrete_segments(rest: &str) -> Option<usize> {
    let (mut n, mut len, mut prev) = (1usize, 0usize, 0u8);
    for &b in rest.as_bytes() {
        match b {
            b'/' if len == 0 => return None,
            b'/' => {
                n += 1;
                len = 0;
            }
            // C0 controls and DEL are single bytes; C1 controls
            // (U+0080–U+009F) are `C2 80`–`C2 9F` in UTF-8.
            b'*' | 0x00..=0x1F | 0x7F => return None,
            0x80..=0x9F if prev == 0xC2 => return None,
            _ => len += 1,
        }
        prev = b;
    }
    (len > 0).then_some(n)
}

/// True if `route` is `scheme://` followed by exactly `segments` non-empty
/// segments without wildcards or control characters.
pub fn is_concrete(route: &str, scheme: Scheme, segments: usize) -> bool {
    strip_scheme(route, scheme).and_then(concrete_segments) == Some(segments)
}

/// True if `route` is a concrete route of any depth ≥ 1 (RPC calls).
pub fn is_concrete_any_depth(route: &str, scheme: Scheme) -> bool {
    strip_scheme(route, scheme).and_then(concrete_segments).is_some()
}

/// True if any segment after the scheme is a wildcard (`*` or `**`).
pub fn has_wildcard(route: &str) -> bool {
    split_scheme(route).is_some_and(|(_, rest)| rest.split('/').any(|s| s == "*" || s == "**"))
}

/// Checks a subscription pattern: whole-segment wildcards only, no
/// adjacent `**`, and able to match `depth` segments (`None` = any depth)
/// by the rule of WIRE.md §9.4.
pub fn is_valid_pattern(pattern: &str, scheme: Scheme, depth: Option<usize>) -> bool {
    let Some(rest) = strip_scheme(pattern, scheme) else { return false };
    let (mut n, mut k, mut prev_dd) = (0usize, 0usize, false);
    for seg in rest.split('/') {
        if !valid_segment(seg) || (seg.contains('*') && seg != "*" && seg != "**") {
            return false;
        }
        let dd = seg == "**";
        if dd && prev_dd {
            return false;
        }
        prev_dd = dd;
        n += 1;
        k += usize::from(dd);
    }
    match depth {
        None => true,
        Some(d) if k == 0 => n == d,
        Some(d) => n - k <= d,
    }
}

/// True if `route` (concrete) matches `pattern` (WIRE.md §9.4): `*` is one
/// segment, `**` zero or more, greedy with backtracking. Schemes must be equal.
pub fn matches(pattern: &str, route: &str) -> bool {
    let (Some((ps, p)), Some((rs, r))) = (split_scheme(pattern), split_scheme(route)) else {
        return false;
    };
    if ps != rs {
        return false;
    }
    // Iterative matcher: remember the last `**` and let it absorb one more
    // route segment on mismatch. Works on iterators, no allocation.
    let mut pi = p.split('/');
    let mut ri = r.split('/');
    let mut star: Option<(core::str::Split<'_, char>, core::str::Split<'_, char>)> = None;
    loop {
        let rc = ri.clone();
        match (pi.next(), ri.next()) {
            (Some("**"), _) => {
                // `**` matches zero segments first; remember where to retry.
                star = Some((pi.clone(), rc.clone()));
                ri = rc;
            }
            (Some(ps), Some(rs)) if ps == "*" || ps == rs => {}
            (None, None) => return true,
            _ => match star.take() {
                Some((after_star, mut from)) => {
                    if from.next().is_none() {
                        return false;
                    }
                    pi = after_star.clone();
                    ri = from.clone();
                    star = Some((after_star, from));
                }
                None => return false,
            },
        }
    }
}

/// How a Stream READ selector is read (WIRE.md §9.3, §11.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum SelectorAxis {
    /// `stream://R/A/S`: resource offsets, compatibility layout.
    Resource,
    /// `stream://R/A/*`: area offsets, compatibility layout.
    Area,
    /// `stream://R/*/S`, `R/*/*`, `R/**`: realm offsets, compatibility layout.
    Realm,
    /// Realm `*` or `stream://**`: global offsets, **extended** layout.
    Global,
}

impl SelectorAxis {
    /// True if READ pages for this axis use the extended layout.
    pub const fn is_extended(self) -> bool {
        matches!(self, SelectorAxis::Global)
    }
}

/// Classifies one of the ten valid stream selectors; `None` for anything
/// else (which the broker rejects). Selectors are limited to 512 bytes.
pub fn stream_selector(selector: &str) -> Option<SelectorAxis> {
    if selector.len() > 512 {
        return None;
    }
    let rest = strip_scheme(selector, Scheme::Stream)?;
    let mut it = rest.split('/');
    let (a, b, c, d) = (it.next(), it.next(), it.next(), it.next());
    let lit = |s: &str| valid_segment(s) && !s.contains('*');
    match (a?, b, c, d) {
        ("**", None, None, None) => Some(SelectorAxis::Global),
        (r, Some("**"), None, None) if lit(r) => Some(SelectorAxis::Realm),
        (r, Some(a), Some(s), None) => {
            let realm_star = r == "*";
            if !(realm_star || lit(r)) || !(a == "*" || lit(a)) || !(s == "*" || lit(s)) {
                return None;
            }
            Some(match (realm_star, a == "*", s == "*") {
                (true, _, _) => SelectorAxis::Global,
                (false, true, _) => SelectorAxis::Realm,
                (false, false, true) => SelectorAxis::Area,
                (false, false, false) => SelectorAxis::Resource,
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::format;

    #[test]
    fn concrete_routes() {
        assert!(is_concrete("queue://a/b/c", Scheme::Queue, 3));
        assert!(!is_concrete("queue://a/b/*", Scheme::Queue, 3));
        assert!(!is_concrete("queue://a/b", Scheme::Queue, 3));
        assert!(!is_concrete("queue://a//c", Scheme::Queue, 3));
        assert!(!is_concrete("stream://a/b/c", Scheme::Queue, 3));
        assert!(!is_concrete("queue://a/b/c/", Scheme::Queue, 3));
        assert!(!is_concrete("queue://a/b\u{7}/c", Scheme::Queue, 3));
        assert!(!is_concrete("queue://a/b\u{85}/c", Scheme::Queue, 3));
        assert!(is_concrete("queue://ä/ü/€", Scheme::Queue, 3));
        assert!(is_concrete_any_depth("rpc://a", Scheme::Rpc));
        assert!(!is_concrete_any_depth("rpc://", Scheme::Rpc));
        // The byte scan agrees with a char-based reference on every char class.
        for c in ['a', '\u{0}', '\u{1f}', '\u{7f}', '\u{80}', '\u{9f}', '\u{a0}', '\u{2028}', '*', 'é'] {
            let route = format!("queue://r/a{c}/s");
            let reference = !c.is_control() && c != '*';
            assert_eq!(is_concrete(&route, Scheme::Queue, 3), reference, "{c:?}");
        }
    }

    #[test]
    fn pattern_depth_rule() {
        assert!(is_valid_pattern("queue://r/**", Scheme::Queue, Some(3)));
        assert!(is_valid_pattern("queue://**/res", Scheme::Queue, Some(3)));
        assert!(!is_valid_pattern("queue://r/a", Scheme::Queue, Some(3)));
        assert!(!is_valid_pattern("queue://r/a/b/c/**", Scheme::Queue, Some(3)));
        assert!(!is_valid_pattern("queue://r/**/**", Scheme::Queue, Some(3)));
        assert!(!is_valid_pattern("queue://r/ord*/x", Scheme::Queue, Some(3)));
    }

    #[test]
    fn wildcard_matching() {
        assert!(matches("rpc://*/orders/**", "rpc://acme/orders/v1/create"));
        assert!(!matches("rpc://acme/**/orders", "rpc://acme/create"));
        assert!(matches("notice://acme/**", "notice://acme/a/b"));
        assert!(matches("notice://**", "notice://x"));
        assert!(matches("notice://a/**/z", "notice://a/z"));
        assert!(matches("notice://a/**/z", "notice://a/b/c/z"));
        assert!(!matches("notice://a/*/z", "notice://a/z"));
        assert!(matches("kv://a/b/c", "kv://a/b/c"));
        assert!(!matches("kv://a/b/c", "notice://a/b/c"));
    }

    #[test]
    fn stream_selectors() {
        use SelectorAxis::*;
        for (s, axis) in [
            ("stream://R/A/S", Some(Resource)),
            ("stream://R/A/*", Some(Area)),
            ("stream://R/*/S", Some(Realm)),
            ("stream://R/*/*", Some(Realm)),
            ("stream://R/**", Some(Realm)),
            ("stream://*/A/S", Some(Global)),
            ("stream://*/A/*", Some(Global)),
            ("stream://*/*/S", Some(Global)),
            ("stream://*/*/*", Some(Global)),
            ("stream://**", Some(Global)),
            ("stream://R/A/**", None),
            ("stream://*/**", None),
            ("stream://**/S", None),
            ("stream://R/A", None),
            ("stream://R/A/S/T", None),
        ] {
            assert_eq!(stream_selector(s), axis, "{s}");
        }
    }
}
