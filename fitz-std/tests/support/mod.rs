//! The test matrix: every test runs over {TCP, WebSocket} × {anonymous,
//! JWT} × {legacy, current} against fitz-testkit brokers started here, or
//! against a real broker when the address variables of BROKER.md §13 are
//! set (`FITZ_BROKER_ANON_TCP_ADDR`, `FITZ_BROKER_ANON_WS_ADDR`,
//! `FITZ_BROKER_AUTH_TCP_ADDR`, `FITZ_BROKER_AUTH_WS_ADDR`, and
//! `FITZ_BROKER_JWT_HMAC_SECRET` / `_AUDIENCE` / `_TENANT` for tokens); a
//! real broker speaks one dialect, so its legs are named by transport and
//! auth only.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::time::Duration;

use fitz_std::Client;
use fitz_testkit::tokens::TokenSpec;
use fitz_testkit::{AuthMode, Broker, BrokerConfig, Dialect, JwtConfig};

/// One combination of the matrix.
#[derive(Clone, Debug)]
pub struct Leg {
    pub name: String,
    pub url: String,
    pub token: Option<String>,
    /// The dialect the broker speaks (`None` for a real broker: detected).
    pub dialect: Option<Dialect>,
}

impl Leg {
    /// A relay in front of this leg's listener, and a client connected
    /// through it with the leg's credentials (for tests that cut the
    /// connection).
    pub async fn through_relay(&self) -> (fitz_testkit::relay::Relay, Client) {
        let (scheme, rest) = self.url.split_once("://").unwrap();
        let (host, path) = rest.split_once('/').map_or((rest, ""), |(h, p)| (h, p));
        let upstream: std::net::SocketAddr = tokio::net::lookup_host(host).await.unwrap().next().unwrap();
        let relay = fitz_testkit::relay::Relay::start(upstream).await.unwrap();
        let url = if scheme == "tcp" { relay.url_tcp() } else { relay.ws_url(path) };
        let b = Client::builder(url).settle_window(self.settle_window());
        let b = match &self.token {
            Some(t) => b.token(t.clone()),
            None => b.anonymous(),
        };
        (relay, b.connect().await.unwrap())
    }

    /// A connected client for this leg.
    pub async fn client(&self) -> Client {
        self.builder().connect().await.unwrap_or_else(|e| panic!("{}: connect: {e}", self.name))
    }

    /// The authentication settle window for this leg: short for a legacy
    /// broker, whose silence the test would otherwise wait for; long for
    /// the others, where SERVER_HELLO ends it at once, so that a loaded
    /// machine cannot delay the HELLO past the window and make the client
    /// take a current broker for a legacy one.
    fn settle_window(&self) -> Duration {
        match self.dialect {
            Some(fitz_testkit::Dialect::Legacy) => Duration::from_millis(150),
            _ => Duration::from_secs(3),
        }
    }

    /// A builder for this leg.
    pub fn builder(&self) -> fitz_std::Builder {
        let b = Client::builder(self.url.clone()).settle_window(self.settle_window());
        match &self.token {
            Some(t) => b.token(t.clone()),
            None => b.anonymous(),
        }
    }

    /// A route unique to this leg and test run: `scheme://realm/area/<name>`.
    pub fn route(&self, scheme: &str, name: &str) -> String {
        format!("{scheme}://{}/{}/{name}", realm(), self.slug())
    }

    /// The leg name usable as a route segment.
    pub fn slug(&self) -> String {
        self.name.replace(['/', ' '], "-")
    }
}

fn realm() -> String {
    // One realm per process so reruns against a real broker do not collide.
    static REALM: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    REALM
        .get_or_init(|| {
            let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
            format!("t{}", t % 1_000_000_000)
        })
        .clone()
}

/// The brokers of a matrix (kept alive while the test runs).
pub struct Matrix {
    pub legs: Vec<Leg>,
    pub brokers: Vec<Broker>,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// A valid token for the broker under test.
pub fn valid_token() -> String {
    token_with(&fitz_testkit::tokens::ALL_PERMISSIONS)
}

/// A valid token with only `permissions` (e.g. `queue://**#read`).
pub fn token_with(permissions: &[&str]) -> String {
    let mut spec = TokenSpec::official().with_permissions(permissions);
    if let Some(s) = env("FITZ_BROKER_JWT_HMAC_SECRET") {
        spec.secret = s;
    }
    if let Some(a) = env("FITZ_BROKER_JWT_AUDIENCE") {
        spec.audience = a;
    }
    if let Some(t) = env("FITZ_BROKER_JWT_TENANT") {
        spec.tenant = t;
    }
    spec.sign()
}

/// True when the tests target a real broker.
pub fn external() -> bool {
    env("FITZ_BROKER_ANON_TCP_ADDR").is_some() || env("FITZ_BROKER_AUTH_TCP_ADDR").is_some()
}

/// All legs.
pub async fn matrix() -> Matrix {
    matrix_of(&[Dialect::Legacy, Dialect::Current]).await
}

/// The legs of the given dialects.
pub async fn matrix_of(dialects: &[Dialect]) -> Matrix {
    if external() {
        let mut legs = Vec::new();
        for (name, var, token) in [
            ("tcp/anonymous", "FITZ_BROKER_ANON_TCP_ADDR", None),
            ("ws/anonymous", "FITZ_BROKER_ANON_WS_ADDR", None),
            ("tcp/jwt", "FITZ_BROKER_AUTH_TCP_ADDR", Some(valid_token())),
            ("ws/jwt", "FITZ_BROKER_AUTH_WS_ADDR", Some(valid_token())),
        ] {
            if let Some(mut url) = env(var) {
                if !url.contains("://") {
                    url = format!("tcp://{url}");
                }
                legs.push(Leg { name: name.into(), url, token, dialect: None });
            }
        }
        return Matrix { legs, brokers: Vec::new() };
    }
    let mut legs = Vec::new();
    let mut brokers = Vec::new();
    for &dialect in dialects {
        let d = match dialect {
            Dialect::Legacy => "legacy",
            Dialect::Current => "current",
        };
        for jwt in [false, true] {
            let mut cfg = BrokerConfig::anonymous().with_dialect(dialect);
            if jwt {
                cfg = cfg.with_auth(AuthMode::Jwt(JwtConfig::official("dev-test-secret")));
            }
            let b = Broker::start(cfg).await.expect("start fitz-testkit");
            let auth = if jwt { "jwt" } else { "anonymous" };
            let token = jwt.then(valid_token);
            legs.push(Leg {
                name: format!("tcp/{auth}/{d}"),
                url: b.tcp_url().unwrap(),
                token: token.clone(),
                dialect: Some(dialect),
            });
            legs.push(Leg { name: format!("ws/{auth}/{d}"), url: b.ws_url().unwrap(), token, dialect: Some(dialect) });
            brokers.push(b);
        }
    }
    Matrix { legs, brokers }
}

/// Runs `f` on every leg, concurrently, and reports each leg's outcome.
pub async fn each_leg<F, Fut>(m: &Matrix, f: F)
where
    F: Fn(Leg) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let mut tasks = Vec::new();
    for leg in &m.legs {
        let name = leg.name.clone();
        tasks.push((name, tokio::spawn(f(leg.clone()))));
    }
    let mut failed = Vec::new();
    for (name, t) in tasks {
        match tokio::time::timeout(Duration::from_secs(60), t).await {
            Ok(Ok(())) => eprintln!("  ok   {name}"),
            Ok(Err(e)) => {
                eprintln!("  FAIL {name}: {e}");
                failed.push(name);
            }
            Err(_) => {
                eprintln!("  FAIL {name}: timed out");
                failed.push(name);
            }
        }
    }
    assert!(failed.is_empty(), "legs failed: {failed:?}");
    assert!(!m.legs.is_empty(), "no leg to run");
}

/// Waits (15 s at most) until `c` runs on a connection newer than `epoch`.
pub async fn reconnected(c: &Client, epoch: u32) {
    tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            let s = c.state();
            if s == fitz_std::core::State::Authenticated && c.epoch() != epoch {
                return;
            }
            c.changed(s).await;
        }
    })
    .await
    .expect("no reconnect");
}
