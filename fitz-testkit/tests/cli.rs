//! The `fitz-testkit` binary: flags, the one JSON line, the official
//! preset, and shutdown on stdin EOF and signals.
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::large_futures,
    clippy::std_instead_of_core
)]

mod support;

use std::net::SocketAddr;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use fitz_testkit::tokens::TokenSpec;
use fitz_wire::kv::{self, Durability, Mode};
use fitz_wire::{MsgType, Reply};
use serde_json::{Map, Value};
use support::*;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, ChildStdout, Command};

const BIN: &str = env!("CARGO_BIN_EXE_fitz-testkit");
/// How long the binary may take to print its line or to exit.
const STARTUP: Duration = Duration::from_secs(20);
const EXIT: Duration = Duration::from_secs(5);
const R: &str = "kv://acme/orders/main";

/// A running `fitz-testkit serve …` and the JSON line it printed.
struct Served {
    child: Child,
    stdout: BufReader<ChildStdout>,
    line: Map<String, Value>,
}

impl Served {
    fn tcp(&self, key: &str) -> SocketAddr {
        self.line[key].as_str().unwrap().parse().unwrap()
    }
    fn ws(&self, key: &str) -> String {
        self.line[key].as_str().unwrap().to_owned()
    }

    /// Closes stdin and asserts a clean exit with nothing more on stdout.
    async fn finish_by_eof(mut self) {
        drop(self.child.stdin.take());
        let status = tokio::time::timeout(EXIT, self.child.wait()).await.expect("exit after stdin EOF").unwrap();
        assert!(status.success(), "exit status {status}");
        self.assert_no_more_stdout().await;
    }

    async fn assert_no_more_stdout(&mut self) {
        let mut rest = String::new();
        self.stdout.read_to_string(&mut rest).await.unwrap();
        assert_eq!(rest, "", "nothing but the one JSON line on stdout");
    }
}

fn command(args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
    cmd
}

/// Starts the binary and reads its JSON line.
async fn serve(args: &[&str]) -> Served {
    match try_serve(args).await {
        Ok(s) => s,
        Err(err) => panic!("fitz-testkit {args:?} printed nothing; stderr: {err}"),
    }
}

/// Starts the binary and reads its JSON line; `Err(stderr)` if it printed none.
async fn try_serve(args: &[&str]) -> Result<Served, String> {
    let mut child = command(args).spawn().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    let n = tokio::time::timeout(STARTUP, stdout.read_line(&mut line)).await.expect("JSON line in time").unwrap();
    if n == 0 {
        let mut err = String::new();
        let _ = child.stderr.take().unwrap().read_to_string(&mut err).await;
        return Err(err);
    }
    assert!(line.ends_with('\n'), "one whole line: {line:?}");
    let Value::Object(map) = serde_json::from_str::<Value>(&line).unwrap() else { panic!("not an object: {line}") };
    Ok(Served { child, stdout, line: map })
}

/// Runs the binary to completion with stdin closed.
async fn run(args: &[&str]) -> (ExitStatus, String, String) {
    let mut cmd = command(args);
    cmd.stdin(Stdio::null());
    let out = tokio::time::timeout(STARTUP, cmd.output()).await.expect("exits").unwrap();
    (out.status, String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn keys(s: &Served) -> Vec<&str> {
    s.line.keys().map(String::as_str).collect()
}

async fn begin(c: &mut Raw, route: &str) -> Result<u64, u32> {
    c.send(&kv::Begin { route, mode: Mode::ReadWrite, durability: Some(Durability::Buffered) }).await;
    let rec = c.recv_type(MsgType::KV_BEGIN).await.expect("BEGIN reply");
    match kv::decode_begin_reply(&rec.payload).unwrap() {
        Reply::Ok(ok) => Ok(ok.tx_id),
        Reply::Err(e) => Err(e.code.unwrap()),
    }
}

async fn ws_connect(url: &str, token: &str) -> Raw {
    let mut w = Raw::ws(url).await;
    w.send(&fitz_wire::control::Connect { token: token.as_bytes() }).await;
    w
}

fn official_ports_free() -> Result<(), String> {
    for port in [4090, 4091, 4190, 4191] {
        std::net::TcpListener::bind(("127.0.0.1", port)).map_err(|e| format!("127.0.0.1:{port}: {e}"))?;
    }
    Ok(())
}

#[tokio::test]
async fn serve_prints_one_json_line_serves_kv_and_exits_on_stdin_eof() {
    let s = serve(&["serve", "--tcp", "127.0.0.1:0", "--ws", "127.0.0.1:0"]).await;
    assert_eq!(keys(&s), ["tcp", "ws"]);
    let tcp = s.tcp("tcp");
    assert!(tcp.ip().is_loopback() && tcp.port() != 0);
    let ws = s.ws("ws");
    assert!(ws.starts_with("ws://127.0.0.1:") && ws.ends_with("/ws"), "{ws}");

    let mut c = Raw::connect(tcp, "").await;
    assert!(begin(&mut c, R).await.unwrap() > 0);
    let mut w = ws_connect(&ws, "").await;
    assert_eq!(begin(&mut w, R).await, Err(1004), "same world: the RW lock is held by the TCP session");
    assert!(begin(&mut w, "kv://acme/orders/other").await.is_ok());
    s.finish_by_eof().await;
}

#[tokio::test]
async fn preset_official_listens_on_the_official_addresses() {
    if let Err(why) = official_ports_free() {
        println!("skipping the run on the official ports: {why} is taken (the override run covers the preset)");
        return;
    }
    let s = match try_serve(&["serve", "--preset", "official"]).await {
        Ok(s) => s,
        // Taken between the check and the bind (e.g. a parallel run).
        Err(err) if err.contains("in use") => {
            println!("skipping the run on the official ports: {err}");
            return;
        }
        Err(err) => panic!("--preset official failed: {err}"),
    };
    let expected = r#"{"anon_tcp":"127.0.0.1:4191","anon_ws":"ws://127.0.0.1:4190/ws","auth_tcp":"127.0.0.1:4091","auth_ws":"ws://127.0.0.1:4090/ws"}"#;
    assert_eq!(Value::Object(s.line.clone()).to_string(), expected);
    let mut anon = Raw::connect(s.tcp("anon_tcp"), "").await;
    assert!(begin(&mut anon, R).await.is_ok());
    let mut auth = Raw::connect(s.tcp("auth_tcp"), &TokenSpec::official().sign()).await;
    assert!(begin(&mut auth, R).await.is_ok());
    s.finish_by_eof().await;
}

#[tokio::test]
async fn preset_official_with_port_overrides_runs_two_separate_worlds() {
    let s = serve(&[
        "serve",
        "--preset",
        "official",
        "--auth-tcp",
        "127.0.0.1:0",
        "--auth-ws",
        "127.0.0.1:0",
        "--anon-tcp",
        "127.0.0.1:0",
        "--anon-ws",
        "127.0.0.1:0",
        "--time-scale",
        "10",
    ])
    .await;
    assert_eq!(keys(&s), ["anon_tcp", "anon_ws", "auth_tcp", "auth_ws"]);
    for k in ["anon_ws", "auth_ws"] {
        assert!(s.ws(k).starts_with("ws://127.0.0.1:") && s.ws(k).ends_with("/ws"));
    }
    let token = TokenSpec::official().sign();

    // Authenticated world: the official token works on TCP and WS, others close.
    let mut auth = Raw::connect(s.tcp("auth_tcp"), &token).await;
    assert!(begin(&mut auth, R).await.is_ok());
    let mut auth_ws = ws_connect(&s.ws("auth_ws"), &token).await;
    assert!(begin(&mut auth_ws, "kv://acme/orders/other").await.is_ok());
    let mut bad = Raw::connect(s.tcp("auth_tcp"), &TokenSpec::official().sign_with("dev-test-secret-invalid")).await;
    assert!(bad.closed().await, "invalid signature closes");
    let mut expired = Raw::connect(s.tcp("auth_tcp"), &TokenSpec::official().expired().sign()).await;
    assert!(expired.closed().await, "expired token closes");

    // Anonymous world: any token; its state is not the authenticated world's.
    let mut anon = Raw::connect(s.tcp("anon_tcp"), "garbage").await;
    assert!(begin(&mut anon, R).await.is_ok(), "R is locked only in the other world");
    let mut anon_ws = ws_connect(&s.ws("anon_ws"), "").await;
    assert_eq!(begin(&mut anon_ws, R).await, Err(1004), "… and locked here by the anonymous TCP session");
    s.finish_by_eof().await;
}

#[tokio::test]
async fn jwt_secret_flag_replaces_the_official_secret() {
    let s = serve(&[
        "serve",
        "--preset",
        "official",
        "--jwt-secret",
        "test-secret-key",
        "--auth-tcp",
        "127.0.0.1:0",
        "--auth-ws",
        "127.0.0.1:0",
        "--anon-tcp",
        "127.0.0.1:0",
        "--anon-ws",
        "127.0.0.1:0",
    ])
    .await;
    let py = TokenSpec { secret: "test-secret-key".into(), ..TokenSpec::official() };
    let mut ok = Raw::connect(s.tcp("auth_tcp"), &py.sign()).await;
    assert!(begin(&mut ok, R).await.is_ok());
    let mut rs = Raw::connect(s.tcp("auth_tcp"), &TokenSpec::official().sign()).await;
    assert!(rs.closed().await, "a dev-test-secret token no longer validates");
    s.finish_by_eof().await;
}

#[tokio::test]
async fn single_world_with_jwt_auth() {
    let s = serve(&[
        "serve",
        "--tcp",
        "127.0.0.1:0",
        "--ws",
        "127.0.0.1:0",
        "--auth",
        "jwt",
        "--jwt-secret",
        "s3cret",
        "--jwt-audience",
        "other",
        "--jwt-audience",
        "fitz",
        "--jwt-family",
        "dev=1",
        "--jwt-family",
        "ops=2",
    ])
    .await;
    let spec = TokenSpec { secret: "s3cret".into(), ..TokenSpec::official() };
    let mut ok = Raw::connect(s.tcp("tcp"), &spec.sign()).await;
    assert!(begin(&mut ok, R).await.is_ok());
    let mut ops = Raw::connect(s.tcp("tcp"), &TokenSpec { tenant: "ops".into(), ..spec.clone() }.sign()).await;
    assert!(begin(&mut ops, R).await.is_ok(), "family 2 has its own routes");
    let mut unknown = Raw::connect(s.tcp("tcp"), &TokenSpec { tenant: "nobody".into(), ..spec.clone() }.sign()).await;
    assert!(unknown.closed().await, "an identity outside the family map closes");
    let mut anon = Raw::connect(s.tcp("tcp"), "").await;
    assert!(anon.closed().await, "an empty token closes");
    s.finish_by_eof().await;
}

#[tokio::test]
async fn current_dialect_answers_connect_with_server_hello() {
    let s = serve(&["serve", "--tcp", "127.0.0.1:0", "--ws", "127.0.0.1:0", "--dialect", "current"]).await;
    let (_c, caps) = Raw::connect_current(s.tcp("tcp"), "").await;
    assert_eq!(caps, 0xF);
    s.finish_by_eof().await;

    let s = serve(&[
        "serve",
        "--tcp",
        "127.0.0.1:0",
        "--ws",
        "127.0.0.1:0",
        "--dialect",
        "current",
        "--capabilities",
        "0x1",
        "--sdk-compat",
    ])
    .await;
    let (_c, caps) = Raw::connect_current(s.tcp("tcp"), "").await;
    assert_eq!(caps, 1);
    s.finish_by_eof().await;

    // Legacy (the default) sends nothing after CONNECT.
    let s = serve(&["serve", "--tcp", "127.0.0.1:0", "--ws", "127.0.0.1:0"]).await;
    let mut c = Raw::connect(s.tcp("tcp"), "").await;
    assert!(c.quiet_for(Duration::from_millis(200)).await);
    s.finish_by_eof().await;
}

#[tokio::test]
async fn max_frame_limit_applies() {
    let s = serve(&["serve", "--tcp", "127.0.0.1:0", "--ws", "127.0.0.1:0", "--max-frame", "64"]).await;
    let mut c = Raw::connect(s.tcp("tcp"), "").await;
    assert!(begin(&mut c, R).await.is_ok());
    c.send_bytes(&1000u32.to_be_bytes()).await;
    assert!(c.closed().await, "a frame above --max-frame closes");
    s.finish_by_eof().await;
}

#[tokio::test]
async fn invalid_flags_exit_non_zero_with_nothing_on_stdout() {
    let cases: &[&[&str]] = &[
        &["serve", "--bogus"],
        &["frobnicate"],
        &["serve", "--dialect", "modern"],
        &["serve", "--auth", "oauth"],
        &["serve", "--tcp", "not-an-address"],
        &["serve", "--time-scale", "0"],
        &["serve", "--time-scale", "-2"],
        &["serve", "--max-frame", "0"],
        &["serve", "--capabilities", "0xZZ", "--dialect", "current"],
        &["serve", "--capabilities", "3"],
        &["serve", "--jwt-family", "dev"],
        &["serve", "--jwt-secret", "x"],
        &["serve", "--ws-path", "ws"],
        &["serve", "--preset", "official", "--tcp", "127.0.0.1:0"],
        &["serve", "--preset", "official", "--auth", "jwt"],
        &["serve", "--preset", "unofficial"],
        &["serve", "--auth-tcp", "127.0.0.1:0"],
    ];
    for args in cases {
        let (status, stdout, stderr) = run(args).await;
        assert!(!status.success(), "{args:?} must fail");
        assert_eq!(stdout, "", "{args:?} printed on stdout");
        assert!(!stderr.is_empty(), "{args:?} says why on stderr");
    }
}

#[tokio::test]
async fn address_in_use_exits_non_zero() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let (status, stdout, stderr) = run(&["serve", "--tcp", &addr, "--ws", "127.0.0.1:0"]).await;
    assert_eq!(status.code(), Some(1));
    assert_eq!(stdout, "");
    assert!(stderr.contains("cannot start") && stderr.contains(&addr), "{stderr}");

    let (status, stdout, _) = run(&[
        "serve",
        "--preset",
        "official",
        "--auth-tcp",
        "127.0.0.1:0",
        "--auth-ws",
        "127.0.0.1:0",
        "--anon-tcp",
        "127.0.0.1:0",
        "--anon-ws",
        &addr,
    ])
    .await;
    assert_eq!(status.code(), Some(1), "the second world failing fails the whole run");
    assert_eq!(stdout, "", "no JSON line unless every listener is bound");
}

#[cfg(unix)]
async fn signal(child: &Child, sig: &str) {
    let pid = child.id().unwrap().to_string();
    let status = Command::new("kill").args([sig, &pid]).status().await.unwrap();
    assert!(status.success());
}

#[cfg(unix)]
#[tokio::test]
async fn sigterm_and_sigint_stop_cleanly() {
    for sig in ["-TERM", "-INT"] {
        let mut s = serve(&["serve", "--tcp", "127.0.0.1:0", "--ws", "127.0.0.1:0"]).await;
        let mut c = Raw::connect(s.tcp("tcp"), "").await;
        assert!(begin(&mut c, R).await.is_ok());
        signal(&s.child, sig).await;
        let status = tokio::time::timeout(EXIT, s.child.wait()).await.expect("exit after signal").unwrap();
        assert!(status.success(), "{sig}: {status}");
        s.assert_no_more_stdout().await;
        assert!(c.closed().await, "{sig}: sessions are closed");
    }
}

#[cfg(unix)]
#[tokio::test]
async fn ignore_stdin_keeps_serving_after_eof() {
    let mut s = serve(&["serve", "--tcp", "127.0.0.1:0", "--ws", "127.0.0.1:0", "--ignore-stdin"]).await;
    drop(s.child.stdin.take());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(s.child.try_wait().unwrap().is_none(), "still running after stdin EOF");
    let mut c = Raw::connect(s.tcp("tcp"), "").await;
    assert!(begin(&mut c, R).await.is_ok());
    signal(&s.child, "-TERM").await;
    let status = tokio::time::timeout(EXIT, s.child.wait()).await.expect("exit after SIGTERM").unwrap();
    assert!(status.success());
}
