//! What every domain example shares: finding (or starting) a broker,
//! connecting to it, naming routes, and turning failures into readable
//! messages.
//!
//! - `FITZ_URL`: the broker to use (`tcp://host:port`, `ws://host:port/ws`,
//!   `wss://…`). Unset: an embedded fitz-testkit broker is started on
//!   loopback for the length of the example.
//! - `FITZ_TOKEN`: a JWT for `FITZ_URL` (anonymous without it).
//! - `FITZ_REALM`: the realm of the example routes (default `examples`).
//! - `FITZ_EMBEDDED_DIALECT`: `legacy` (default) or `current`, the dialect
//!   the embedded broker speaks.
//!
//! Each example includes this file with `#[path = "common/mod.rs"] mod common;`
//! and uses only part of it.
#![allow(dead_code)]

use core::fmt;
use core::future::Future;
use core::time::Duration;

use fitz_std::{Client, Fault};
use fitz_testkit::{Broker, BrokerConfig, Dialect};

/// What the examples' `main` returns.
pub(crate) type Outcome = Result<(), Box<dyn core::error::Error>>;

/// How long an example waits for anything the broker pushes.
pub(crate) const WAIT: Duration = Duration::from_secs(10);

/// How long connecting may take before the example gives up.
const CONNECT_WAIT: Duration = Duration::from_secs(15);

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// A failure with a message meant for people (its `Debug` is its text, so
/// that `main` returning it prints the sentence, not a struct dump).
pub(crate) struct Failed(String);

impl Failed {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        Failed(message.into())
    }
}

impl fmt::Display for Failed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Failed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl core::error::Error for Failed {}

/// The end of `main`: success, or the error as one readable line (the
/// process then exits with a non-zero status).
pub(crate) fn finish(name: &str, result: Outcome) -> Outcome {
    match result {
        Ok(()) => {
            println!("{name}: done");
            Ok(())
        }
        Err(e) => Err(Box::new(Failed(format!("{name} example failed: {e}")))),
    }
}

/// The broker an example talks to.
pub(crate) struct Target {
    url: String,
    token: Option<String>,
    realm: String,
    area: String,
    broker: Option<Broker>,
}

impl Target {
    /// `FITZ_URL`, or an embedded broker with the default configuration.
    pub(crate) async fn from_env(example: &str) -> Result<Self, Failed> {
        Self::from_env_with(example, BrokerConfig::anonymous()).await
    }

    /// `FITZ_URL`, or an embedded broker started with `config`.
    pub(crate) async fn from_env_with(example: &str, config: BrokerConfig) -> Result<Self, Failed> {
        let realm = env("FITZ_REALM").unwrap_or_else(|| "examples".to_owned());
        if let Some(url) = env("FITZ_URL") {
            let token = env("FITZ_TOKEN");
            let auth = if token.is_some() { "JWT from FITZ_TOKEN" } else { "anonymous" };
            println!("{example}: using the broker at {url} ({auth})");
            // A real broker keeps what earlier runs left: a fresh area per run.
            let area = format!("{example}-{}", run_id());
            return Ok(Target { url, token, realm, area, broker: None });
        }
        let config = match env("FITZ_EMBEDDED_DIALECT").as_deref() {
            None | Some("legacy") => config.with_dialect(Dialect::Legacy),
            Some("current") => config.with_dialect(Dialect::Current),
            Some(other) => {
                return Err(Failed::new(format!("FITZ_EMBEDDED_DIALECT={other}: expected `legacy` or `current`")));
            }
        };
        let dialect = config.dialect;
        let broker = Broker::start(config)
            .await
            .map_err(|e| Failed::new(format!("could not start the embedded broker: {e}")))?;
        let url = broker.tcp_url().ok_or_else(|| Failed::new("the embedded broker has no TCP listener"))?;
        println!(
            "{example}: FITZ_URL is not set: started an embedded fitz-testkit broker at {url} ({dialect:?} dialect)"
        );
        Ok(Target { url, token: None, realm, area: example.to_owned(), broker: Some(broker) })
    }

    /// A connected client (`who` names it in the output).
    pub(crate) async fn connect(&self, who: &str) -> Result<Client, Failed> {
        let mut builder = Client::builder(self.url.clone());
        if self.broker.is_some() {
            // On loopback a current broker's SERVER_HELLO arrives at once and
            // a legacy broker sends none: no need to wait the default second
            // before concluding it is legacy.
            builder = builder.settle_window(Duration::from_millis(150));
        }
        builder = match &self.token {
            Some(token) => builder.token(token.clone()),
            None => builder.anonymous(),
        };
        let client = match tokio::time::timeout(CONNECT_WAIT, builder.connect()).await {
            Ok(Ok(client)) => client,
            Ok(Err(e)) => return Err(Failed::new(format!("{who}: could not connect to {}: {e}", self.url))),
            Err(_) => {
                return Err(Failed::new(format!(
                    "{who}: no connection to {} within {} s (is the broker running?)",
                    self.url,
                    CONNECT_WAIT.as_secs()
                )));
            }
        };
        match client.dialect() {
            Some((dialect, _)) => println!("{who}: connected ({dialect:?} dialect)"),
            None => println!("{who}: connected"),
        }
        Ok(client)
    }

    /// `scheme://realm/area/rest`: routes of this example alone.
    pub(crate) fn route(&self, scheme: &str, rest: &str) -> String {
        format!("{scheme}://{}/{}/{rest}", self.realm, self.area)
    }

    /// The embedded broker, if one was started.
    pub(crate) fn embedded(&self) -> Option<&Broker> {
        self.broker.as_ref()
    }

    /// Stops the embedded broker, if one was started.
    pub(crate) async fn stop(self) {
        if let Some(broker) = self.broker {
            broker.stop().await;
        }
    }
}

/// A short id that differs between runs (milliseconds of the wall clock).
fn run_id() -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    format!("{}", now.as_millis() % 1_000_000_000)
}

/// The next item of a subscription, within [`WAIT`]; `what` names it in
/// the error.
pub(crate) async fn next_within<T, E: fmt::Display>(
    what: &str,
    next: impl Future<Output = Option<Result<T, E>>>,
) -> Result<T, Failed> {
    match tokio::time::timeout(WAIT, next).await {
        Ok(Some(Ok(item))) => Ok(item),
        Ok(Some(Err(e))) => Err(Failed::new(format!("waiting for {what}: {e}"))),
        Ok(None) => Err(Failed::new(format!("the subscription ended while waiting for {what}"))),
        Err(_) => Err(Failed::new(format!("no {what} within {} s", WAIT.as_secs()))),
    }
}

/// `future`, within [`WAIT`]; `what` names it in the error.
pub(crate) async fn within<T>(what: &str, future: impl Future<Output = T>) -> Result<T, Failed> {
    tokio::time::timeout(WAIT, future).await.map_err(|_| Failed::new(format!("no {what} within {} s", WAIT.as_secs())))
}

/// Bytes as a quoted string (lossy UTF-8), for the output.
pub(crate) fn show(bytes: &[u8]) -> String {
    format!("{:?}", String::from_utf8_lossy(bytes))
}

/// A broker error in one line: code, protocol name, retryable flag and
/// message (`uncoded` for the envelope without a code).
pub(crate) fn fault(f: &Fault) -> String {
    let retry = if f.retryable { "retryable" } else { "not retryable" };
    match (f.code, f.name()) {
        (Some(code), Some(name)) => format!("code {code} {name} ({retry}): {}", f.message),
        (Some(code), None) => format!("code {code} ({retry}): {}", f.message),
        (None, _) => format!("uncoded error ({retry}): {}", f.message),
    }
}
