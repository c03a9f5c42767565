//! `fitz-testkit serve …`: runs in-memory Fitz brokers on loopback until
//! SIGINT, SIGTERM or EOF on stdin. When every listener is bound it prints
//! exactly one JSON line with the bound addresses to stdout; nothing else
//! is ever written to stdout. See the crate README for the flags.

use core::net::SocketAddr;
use core::time::Duration;
use std::io::{Read, Write};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use fitz_testkit::{AuthMode, Broker, BrokerConfig, Capabilities, ClockMode, CurrentDialect, Dialect, JwtConfig};
use serde_json::{Map, Value};

/// The official suites' ports (BROKER.md §1).
const AUTH_TCP: SocketAddr = SocketAddr::new(core::net::IpAddr::V4(core::net::Ipv4Addr::LOCALHOST), 4091);
const AUTH_WS: SocketAddr = SocketAddr::new(core::net::IpAddr::V4(core::net::Ipv4Addr::LOCALHOST), 4090);
const ANON_TCP: SocketAddr = SocketAddr::new(core::net::IpAddr::V4(core::net::Ipv4Addr::LOCALHOST), 4191);
const ANON_WS: SocketAddr = SocketAddr::new(core::net::IpAddr::V4(core::net::Ipv4Addr::LOCALHOST), 4190);
/// The rs/ts suites' HMAC secret (BROKER.md §13).
const OFFICIAL_SECRET: &str = "dev-test-secret";

#[derive(Debug, Parser)]
#[command(name = "fitz-testkit", version, about = "In-memory Fitz broker on loopback for host-side tests")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve one broker world (or the two worlds of `--preset official`)
    /// until SIGINT, SIGTERM or EOF on stdin.
    Serve(Box<Serve>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum AuthKind {
    /// Any token (or none) is accepted; full access in route family 1.
    Anonymous,
    /// HS256 JWTs (`--jwt-*`; defaults are the official suites' settings).
    Jwt,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum DialectArg {
    /// The dialect fitz-py, fitz-ts and fitz-rs pass against (no SERVER_HELLO).
    Legacy,
    /// The current dialect (SERVER_HELLO, correlation, … BROKER.md §15).
    Current,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Preset {
    /// Authenticated world on 127.0.0.1:4091 + ws://127.0.0.1:4090/ws and
    /// anonymous world on 127.0.0.1:4191 + ws://127.0.0.1:4190/ws.
    Official,
}

#[derive(Debug, Args)]
struct Serve {
    /// TCP listen address of the single world (port 0 picks one).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:4191", conflicts_with = "preset")]
    tcp: SocketAddr,
    /// WebSocket listen address of the single world (port 0 picks one).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:4190", conflicts_with = "preset")]
    ws: SocketAddr,
    /// Path the WebSocket listeners upgrade on (other paths get 404).
    #[arg(long, value_name = "PATH", default_value = "/ws")]
    ws_path: String,
    /// Authentication of the single world.
    #[arg(long, value_enum, default_value_t = AuthKind::Anonymous, conflicts_with = "preset")]
    auth: AuthKind,
    /// HS256 secret [default: dev-test-secret].
    #[arg(long, value_name = "S")]
    jwt_secret: Option<String>,
    /// Accepted audience; repeat for several [default: fitz].
    #[arg(long, value_name = "A")]
    jwt_audience: Vec<String>,
    /// Claim naming the identity that selects the route family [default: tid].
    #[arg(long, value_name = "CLAIM")]
    jwt_tenant_claim: Option<String>,
    /// Identity → route family, as ID=N; repeat for several [default: dev=1].
    #[arg(long, value_name = "ID=N", value_parser = parse_family)]
    jwt_family: Vec<(String, u32)>,
    /// Claim holding the permission list [default: permissions].
    #[arg(long, value_name = "CLAIM")]
    jwt_permissions_claim: Option<String>,
    /// Wire dialect of every listener.
    #[arg(long, value_enum, default_value_t = DialectArg::Legacy)]
    dialect: DialectArg,
    /// Capability bits advertised in SERVER_HELLO (hex `0x…` or decimal;
    /// current dialect only) [default: 0xF].
    #[arg(long, value_name = "BITS", value_parser = parse_u32)]
    capabilities: Option<u32>,
    /// Protocol version in SERVER_HELLO (current dialect only) [default: 1].
    #[arg(long, value_name = "N")]
    hello_version: Option<u16>,
    /// Stream domain errors use status 1 instead of 2 (current dialect only).
    #[arg(long)]
    stream_status1: bool,
    /// Emit the Queue NOTIFY and Stream SUBSCRIBE forms cntryl-fitz 0.2.0
    /// reads (BROKER.md §15.6; test tooling, not broker behaviour).
    #[arg(long)]
    sdk_compat: bool,
    /// Largest transport frame accepted, in bytes [default: 1048576].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    max_frame: Option<u32>,
    /// Wildcard registrations per session and domain [default: 128].
    #[arg(long, value_name = "N")]
    wildcard_quota: Option<usize>,
    /// All registrations per session and domain [default: 1024].
    #[arg(long, value_name = "N")]
    total_quota: Option<usize>,
    /// Frames queued towards one session before it counts as a slow reader
    /// [default: 65536].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    outbound_frames: Option<u64>,
    /// Milliseconds a connection has to send CONNECT [default: 10000].
    #[arg(long, value_name = "MS")]
    connect_timeout_ms: Option<u64>,
    /// Run broker time F times faster than real time (TTLs, visibility
    /// timeouts, long polls, cron) [default: 1, real time].
    #[arg(long, value_name = "F", value_parser = parse_scale)]
    time_scale: Option<f64>,
    /// Start the four endpoints the official suites expect.
    #[arg(long, value_enum)]
    preset: Option<Preset>,
    /// With --preset official: TCP address of the authenticated world.
    #[arg(long, value_name = "ADDR", requires = "preset")]
    auth_tcp: Option<SocketAddr>,
    /// With --preset official: WebSocket address of the authenticated world.
    #[arg(long, value_name = "ADDR", requires = "preset")]
    auth_ws: Option<SocketAddr>,
    /// With --preset official: TCP address of the anonymous world.
    #[arg(long, value_name = "ADDR", requires = "preset")]
    anon_tcp: Option<SocketAddr>,
    /// With --preset official: WebSocket address of the anonymous world.
    #[arg(long, value_name = "ADDR", requires = "preset")]
    anon_ws: Option<SocketAddr>,
    /// Keep running when stdin closes (stop only on SIGINT/SIGTERM), e.g.
    /// when started in the background with stdin at /dev/null.
    #[arg(long)]
    ignore_stdin: bool,
}

fn parse_u32(s: &str) -> Result<u32, String> {
    let t = s.trim();
    let parsed = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16),
        None => t.parse(),
    };
    parsed.map_err(|e| format!("`{s}` is not a u32 (decimal or 0x hex): {e}"))
}

fn parse_family(s: &str) -> Result<(String, u32), String> {
    let (id, family) = s.split_once('=').ok_or_else(|| format!("`{s}` is not ID=N"))?;
    if id.is_empty() {
        return Err(format!("`{s}`: the identity is empty"));
    }
    let family = family.trim().parse().map_err(|e| format!("`{s}`: family is not a u32: {e}"))?;
    Ok((id.to_owned(), family))
}

fn parse_scale(s: &str) -> Result<f64, String> {
    let f: f64 = s.trim().parse().map_err(|e| format!("`{s}` is not a number: {e}"))?;
    if f.is_finite() && f > 0.0 { Ok(f) } else { Err(format!("`{s}`: the time scale must be a positive number")) }
}

/// One world to start, with the JSON keys its addresses are reported under.
struct World {
    name: &'static str,
    cfg: BrokerConfig,
    tcp_key: &'static str,
    ws_key: &'static str,
}

impl Serve {
    fn jwt_given(&self) -> bool {
        self.jwt_secret.is_some()
            || !self.jwt_audience.is_empty()
            || self.jwt_tenant_claim.is_some()
            || !self.jwt_family.is_empty()
            || self.jwt_permissions_claim.is_some()
    }

    fn jwt(&self) -> JwtConfig {
        let mut jwt = JwtConfig::official(self.jwt_secret.clone().unwrap_or_else(|| OFFICIAL_SECRET.to_owned()));
        if !self.jwt_audience.is_empty() {
            jwt.audiences.clone_from(&self.jwt_audience);
        }
        if let Some(claim) = &self.jwt_tenant_claim {
            jwt.tenant_claim.clone_from(claim);
        }
        if !self.jwt_family.is_empty() {
            jwt.families.clone_from(&self.jwt_family);
        }
        if let Some(claim) = &self.jwt_permissions_claim {
            jwt.permissions_claim.clone_from(claim);
        }
        jwt
    }

    /// The settings shared by every world (dialect, limits, clock, path).
    fn base(&self) -> Result<BrokerConfig, String> {
        let mut cfg = BrokerConfig::default();
        if !self.ws_path.starts_with('/') {
            return Err(format!("--ws-path `{}` must start with `/`", self.ws_path));
        }
        cfg.ws_path.clone_from(&self.ws_path);
        let current_only = self.capabilities.is_some() || self.hello_version.is_some() || self.stream_status1;
        cfg.dialect = match self.dialect {
            DialectArg::Legacy if current_only => {
                return Err("--capabilities, --hello-version and --stream-status1 need --dialect current".into());
            }
            DialectArg::Legacy => Dialect::Legacy,
            DialectArg::Current => Dialect::Current,
        };
        let defaults = CurrentDialect::default();
        cfg.current = CurrentDialect {
            version: self.hello_version.unwrap_or(defaults.version),
            capabilities: self.capabilities.map_or(defaults.capabilities, Capabilities),
            stream_status2: !self.stream_status1,
        };
        cfg.sdk_compat = self.sdk_compat;
        if let Some(n) = self.max_frame {
            cfg.limits.max_frame = n;
        }
        if let Some(n) = self.wildcard_quota {
            cfg.limits.wildcard_quota = n;
        }
        if let Some(n) = self.total_quota {
            cfg.limits.total_quota = n;
        }
        if let Some(n) = self.outbound_frames {
            cfg.limits.outbound_frames = usize::try_from(n).unwrap_or(usize::MAX);
        }
        if let Some(ms) = self.connect_timeout_ms {
            cfg.limits.connect_timeout = Duration::from_millis(ms);
        }
        cfg.clock = match self.time_scale {
            Some(f) if f != 1.0 => ClockMode::Scaled(f),
            _ => ClockMode::Real,
        };
        Ok(cfg)
    }

    fn worlds(&self) -> Result<Vec<World>, String> {
        let base = self.base()?;
        match self.preset {
            Some(Preset::Official) => {
                let auth = BrokerConfig {
                    tcp: Some(self.auth_tcp.unwrap_or(AUTH_TCP)),
                    ws: Some(self.auth_ws.unwrap_or(AUTH_WS)),
                    auth: AuthMode::Jwt(self.jwt()),
                    ..base.clone()
                };
                let anon = BrokerConfig {
                    tcp: Some(self.anon_tcp.unwrap_or(ANON_TCP)),
                    ws: Some(self.anon_ws.unwrap_or(ANON_WS)),
                    auth: AuthMode::Anonymous,
                    ..base
                };
                Ok(vec![
                    World { name: "authenticated world", cfg: auth, tcp_key: "auth_tcp", ws_key: "auth_ws" },
                    World { name: "anonymous world", cfg: anon, tcp_key: "anon_tcp", ws_key: "anon_ws" },
                ])
            }
            None => {
                let auth = match self.auth {
                    AuthKind::Anonymous if self.jwt_given() => {
                        return Err("--jwt-* flags need --auth jwt (or --preset official)".into());
                    }
                    AuthKind::Anonymous => AuthMode::Anonymous,
                    AuthKind::Jwt => AuthMode::Jwt(self.jwt()),
                };
                let cfg = BrokerConfig { tcp: Some(self.tcp), ws: Some(self.ws), auth, ..base };
                Ok(vec![World { name: "broker", cfg, tcp_key: "tcp", ws_key: "ws" }])
            }
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let Command::Serve(serve) = cli.command;
    let worlds = match serve.worlds() {
        Ok(w) => w,
        Err(e) => return fail(&e),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return fail(&format!("cannot start the tokio runtime: {e}")),
    };
    runtime.block_on(run(worlds, serve.ignore_stdin))
}

fn fail(msg: &str) -> ExitCode {
    eprintln!("fitz-testkit: {msg}");
    ExitCode::FAILURE
}

async fn run(worlds: Vec<World>, ignore_stdin: bool) -> ExitCode {
    let shutdown = match Shutdown::install(ignore_stdin) {
        Ok(s) => s,
        Err(e) => return fail(&e),
    };
    let mut brokers = Vec::with_capacity(worlds.len());
    let mut line = Map::new();
    for w in worlds {
        let (tcp, ws) = (w.cfg.tcp, w.cfg.ws);
        match Broker::start(w.cfg).await {
            Ok(b) => {
                if let Some(a) = b.tcp_addr() {
                    line.insert(w.tcp_key.into(), Value::String(a.to_string()));
                }
                if let Some(u) = b.ws_url() {
                    line.insert(w.ws_key.into(), Value::String(u));
                }
                brokers.push(b);
            }
            Err(e) => {
                for b in brokers {
                    b.stop().await;
                }
                let at = [tcp.map(|a| format!("tcp {a}")), ws.map(|a| format!("ws {a}"))];
                let at: Vec<String> = at.into_iter().flatten().collect();
                return fail(&format!("cannot start the {} ({}): {e}", w.name, at.join(", ")));
            }
        }
    }
    let printed = {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{}", Value::Object(line)).and_then(|()| out.flush())
    };
    if let Err(e) = printed {
        for b in brokers {
            b.stop().await;
        }
        return fail(&format!("cannot write to stdout: {e}"));
    }
    shutdown.wait().await;
    for b in brokers {
        b.stop().await;
    }
    ExitCode::SUCCESS
}

/// What stops the binary: SIGINT, SIGTERM or (unless ignored) EOF on
/// stdin. Installed before the JSON line is printed, so that a signal sent
/// as soon as the line is read is never lost to the default action.
struct Shutdown {
    /// Resolves on EOF; `None` with `--ignore-stdin`.
    stdin_eof: Option<tokio::sync::oneshot::Receiver<()>>,
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
}

impl Shutdown {
    fn install(ignore_stdin: bool) -> Result<Shutdown, String> {
        #[cfg(unix)]
        let (term, int) = {
            use tokio::signal::unix::{SignalKind, signal};
            let term = signal(SignalKind::terminate()).map_err(|e| format!("cannot handle SIGTERM: {e}"))?;
            let int = signal(SignalKind::interrupt()).map_err(|e| format!("cannot handle SIGINT: {e}"))?;
            (term, int)
        };
        let mut stdin_eof = None;
        if !ignore_stdin {
            let (eof_tx, eof_rx) = tokio::sync::oneshot::channel::<()>();
            stdin_eof = Some(eof_rx);
            // Blocking reads on a thread of their own; the thread simply
            // ends with the process when a signal comes first.
            std::thread::Builder::new()
                .name("stdin-watch".into())
                .spawn(move || {
                    let mut stdin = std::io::stdin().lock();
                    let mut buf = [0u8; 1024];
                    loop {
                        match stdin.read(&mut buf) {
                            Ok(0) => break,
                            Ok(_) => {}
                            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                            Err(_) => break,
                        }
                    }
                    let _ = eof_tx.send(());
                })
                .map_err(|e| format!("cannot watch stdin: {e}"))?;
        }
        Ok(Shutdown {
            stdin_eof,
            #[cfg(unix)]
            term,
            #[cfg(unix)]
            int,
        })
    }

    /// Resolves when it is time to stop.
    async fn wait(mut self) {
        let stdin_eof = async {
            match self.stdin_eof.take() {
                // A watcher that ended without a word counts as EOF too.
                Some(rx) => {
                    let _ = rx.await;
                }
                None => core::future::pending().await,
            }
        };
        #[cfg(unix)]
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
            () = stdin_eof => {}
        }
        #[cfg(not(unix))]
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            () = stdin_eof => {}
        }
    }
}
