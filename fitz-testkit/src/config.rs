//! Broker configuration.

use std::net::SocketAddr;
use std::time::Duration;

use fitz_wire::{Capabilities, Dialect};

/// How sessions authenticate (BROKER.md §2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthMode {
    /// `FITZ_AUTH_REQUIRED=false`: any token (or none) is accepted and the
    /// session gets full access in route family 1.
    Anonymous,
    /// HS256 JWTs (BROKER.md §2.2).
    Jwt(JwtConfig),
}

/// JWT validation settings of an authenticated broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtConfig {
    /// HMAC secret (`FITZ_JWT_HMAC_SECRET`).
    pub secret: String,
    /// Accepted audiences (`fitz` in every official suite).
    pub audiences: Vec<String>,
    /// The identity claim that selects the route family (`tid`).
    pub tenant_claim: String,
    /// Identity → route family (`dev=1`).
    pub families: Vec<(String, u32)>,
    /// The claim holding the permission list (`permissions`).
    pub permissions_claim: String,
}

impl JwtConfig {
    /// The settings the official suites use (BROKER.md §1, §13):
    /// audience `fitz`, claim `tid`, family map `dev=1`, `permissions`.
    pub fn official(secret: impl Into<String>) -> Self {
        Self {
            secret: secret.into(),
            audiences: vec!["fitz".into()],
            tenant_claim: "tid".into(),
            families: vec![("dev".into(), 1)],
            permissions_claim: "permissions".into(),
        }
    }
}

/// The current dialect's knobs (BROKER.md §15).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CurrentDialect {
    /// SERVER_HELLO protocol version (1).
    pub version: u16,
    /// Advertised capability bits (default: all four).
    pub capabilities: Capabilities,
    /// Stream domain errors use status 2 (default) or status 1.
    pub stream_status2: bool,
}

impl Default for CurrentDialect {
    fn default() -> Self {
        Self { version: 1, capabilities: Capabilities::ALL, stream_status2: true }
    }
}

/// Limits enforced per session and per frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest transport frame accepted (default 1 MiB); larger closes.
    pub max_frame: u32,
    /// Wildcard registrations per session and domain (128).
    pub wildcard_quota: usize,
    /// All registrations per session and domain (1,024).
    pub total_quota: usize,
    /// Frames queued towards one session before it is disconnected as a
    /// slow reader (notifications are dropped before that).
    pub outbound_frames: usize,
    /// Time allowed for CONNECT (10 s).
    pub connect_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_frame: fitz_wire::frame::BROKER_MAX_FRAME,
            wildcard_quota: 128,
            total_quota: 1024,
            outbound_frames: 65_536,
            connect_timeout: Duration::from_secs(10),
        }
    }
}

/// How the broker keeps time. TTLs, visibility timeouts, long polls, RPC
/// deadlines and cron fires all read this clock.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ClockMode {
    /// Wall-clock time (the default, what real clients expect).
    Real,
    /// Time runs `factor` times faster than real time (tests of TTLs and
    /// cron without long sleeps).
    Scaled(f64),
    /// Time moves only when [`crate::Broker::advance`] is called.
    Manual,
}

/// Everything one broker ("world") needs.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// TCP listen address (port 0 picks one); `None` for no TCP listener.
    pub tcp: Option<SocketAddr>,
    /// WebSocket listen address; `None` for no WebSocket listener.
    pub ws: Option<SocketAddr>,
    /// The WebSocket path (`/ws`).
    pub ws_path: String,
    /// Authentication.
    pub auth: AuthMode,
    /// Legacy (default, BROKER.md §15) or current.
    pub dialect: Dialect,
    /// Current-dialect knobs (used only when `dialect` is current).
    pub current: CurrentDialect,
    /// Test-tooling switch of BROKER.md §15.6: emit the Queue NOTIFY and
    /// Stream SUBSCRIBE reply forms cntryl-fitz 0.2.0 can read.
    pub sdk_compat: bool,
    /// Limits.
    pub limits: Limits,
    /// Clock.
    pub clock: ClockMode,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            tcp: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
            ws: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
            ws_path: "/ws".into(),
            auth: AuthMode::Anonymous,
            dialect: Dialect::Legacy,
            current: CurrentDialect::default(),
            sdk_compat: false,
            limits: Limits::default(),
            clock: ClockMode::Real,
        }
    }
}

impl BrokerConfig {
    /// An anonymous broker on loopback ports picked by the OS.
    pub fn anonymous() -> Self {
        Self::default()
    }

    /// Sets the dialect.
    pub fn with_dialect(mut self, dialect: Dialect) -> Self {
        self.dialect = dialect;
        self
    }

    /// Sets the authentication mode.
    pub fn with_auth(mut self, auth: AuthMode) -> Self {
        self.auth = auth;
        self
    }

    /// Sets the clock.
    pub fn with_clock(mut self, clock: ClockMode) -> Self {
        self.clock = clock;
        self
    }
}
