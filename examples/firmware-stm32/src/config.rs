//! What the firmware connects to, fixed at build time.
//!
//! Every value has a default and can be overridden by an environment variable
//! when building, e.g.
//! `FITZ_BROKER_IP=10.0.0.2 FITZ_BROKER_PORT=4191 bash size.sh`.
//! The strings are parsed in const context, so a malformed value is a compile
//! error, not a runtime surprise on the board.

/// Broker IPv4 address (`FITZ_BROKER_IP`). The default is a typical LAN host.
pub const BROKER_IP: [u8; 4] = ipv4(env_or(option_env!("FITZ_BROKER_IP"), "192.168.1.10"));

/// Broker TCP port (`FITZ_BROKER_PORT`). 4191 is the broker's anonymous TCP
/// listener; 4091 is the authenticated one (then set `FITZ_TOKEN`).
pub const BROKER_PORT: u16 = port(env_or(option_env!("FITZ_BROKER_PORT"), "4191"));

/// Bearer token (JWT) sent at connect (`FITZ_TOKEN`); none by default.
#[cfg_attr(not(feature = "fitz"), allow(dead_code))]
pub const TOKEN: Option<&str> = option_env!("FITZ_TOKEN");

/// Static address `a.b.c.d/len` (`FITZ_DEVICE_IP`); DHCP when unset.
pub const DEVICE_IP: Option<([u8; 4], u8)> = match option_env!("FITZ_DEVICE_IP") {
    Some(s) => Some(cidr(s)),
    None => None,
};

/// Default gateway with a static address (`FITZ_GATEWAY`).
pub const GATEWAY: Option<[u8; 4]> = match option_env!("FITZ_GATEWAY") {
    Some(s) => Some(ipv4(s)),
    None => None,
};

/// A locally administered MAC address (bit 1 of the first octet set).
pub const MAC: [u8; 6] = [0x02, 0x00, 0x46, 0x49, 0x54, 0x5a];

/// The KV route the counter is written to.
#[cfg_attr(not(feature = "fitz"), allow(dead_code))]
pub const KV_ROUTE: &str = "kv://acme/fw/state";
/// The key of the counter inside [`KV_ROUTE`].
#[cfg_attr(not(feature = "fitz"), allow(dead_code))]
pub const KV_KEY: &[u8] = b"counter";
/// Where the firmware publishes its tick.
#[cfg_attr(not(feature = "fitz"), allow(dead_code))]
pub const TICK_ROUTE: &str = "notice://acme/fw/tick";
/// What the firmware listens to (its own ticks included).
#[cfg_attr(not(feature = "fitz"), allow(dead_code))]
pub const NOTICE_PATTERN: &str = "notice://acme/fw/*";

const fn env_or(value: Option<&'static str>, default: &'static str) -> &'static str {
    match value {
        Some(v) => v,
        None => default,
    }
}

/// Parses a decimal number in `s[from..]` up to the first byte in `stop` (or
/// the end). Returns the value and the index of that byte.
const fn number(s: &[u8], from: usize, max: u32, stop: u8) -> (u32, usize) {
    let mut i = from;
    let mut v: u32 = 0;
    while i < s.len() && s[i] != stop {
        let d = s[i];
        if !d.is_ascii_digit() {
            panic!("config: expected a decimal digit");
        }
        v = v * 10 + (d - b'0') as u32;
        if v > max {
            panic!("config: number out of range");
        }
        i += 1;
    }
    if i == from {
        panic!("config: empty number");
    }
    (v, i)
}

/// Parses `a.b.c.d` followed by the end of `s` or by `/`; returns the
/// address and the index where it stopped.
const fn ipv4_prefix(s: &[u8]) -> ([u8; 4], usize) {
    let mut out = [0u8; 4];
    let mut at = 0;
    let mut k = 0;
    while k < 4 {
        let stop = if k < 3 { b'.' } else { b'/' };
        let (v, end) = number(s, at, 255, stop);
        out[k] = v as u8;
        if k < 3 {
            if end >= s.len() {
                panic!("config: an IPv4 address has four parts");
            }
            at = end + 1;
        } else {
            at = end;
        }
        k += 1;
    }
    (out, at)
}

const fn ipv4(s: &str) -> [u8; 4] {
    let (ip, end) = ipv4_prefix(s.as_bytes());
    if end != s.len() {
        panic!("config: trailing characters after an IPv4 address");
    }
    ip
}

const fn cidr(s: &str) -> ([u8; 4], u8) {
    let b = s.as_bytes();
    let (ip, end) = ipv4_prefix(b);
    if end >= b.len() {
        panic!("config: FITZ_DEVICE_IP needs a prefix length, e.g. 192.168.1.50/24");
    }
    let (len, _) = number(b, end + 1, 32, b'/');
    (ip, len as u8)
}

const fn port(s: &str) -> u16 {
    let (v, end) = number(s.as_bytes(), 0, 65535, b'/');
    if end != s.len() || v == 0 {
        panic!("config: a port is 1..=65535");
    }
    v as u16
}
