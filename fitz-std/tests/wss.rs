//! `wss://` end to end: a fitz-testkit broker behind a TLS-terminating
//! proxy whose certificate is issued, at test time, by a CA that only the
//! client built with `add_root_certificate` trusts.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]
#![allow(clippy::std_instead_of_core)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, Once};
use std::time::Duration;

use fitz_std::core::driver::Reconnect;
use fitz_std::core::ops::kv::TxMode;
use fitz_std::{Client, Error};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

/// Generous bound for anything that should happen promptly.
const WAIT: Duration = Duration::from_secs(10);

/// A CA and a server certificate it issued for `localhost` and 127.0.0.1.
struct Pki {
    ca_der: CertificateDer<'static>,
    server_der: CertificateDer<'static>,
    server_key: PrivateKeyDer<'static>,
}

fn pki() -> Pki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, "fitz wss test CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();

    let server_key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
    params.distinguished_name.push(DnType::CommonName, "localhost");
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server = params.signed_by(&server_key, &ca).unwrap();

    Pki {
        ca_der: ca.der().clone(),
        server_der: server.der().clone(),
        server_key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der())),
    }
}

/// Accepts TLS on 127.0.0.1 and copies the plaintext both ways to
/// `upstream` (the broker's WebSocket port). Returns the proxy's port.
async fn tls_proxy(pki: &Pki, upstream: SocketAddr) -> u16 {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![pki.server_der.clone()], pki.server_key.clone_key())
        .unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(server));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { return };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                // A client that refuses the certificate ends the handshake:
                // nothing to forward then.
                let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                let Ok(mut broker) = TcpStream::connect(upstream).await else { return };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut broker).await;
            });
        }
    });
    port
}

/// Captures the `error` field of every "transport connect failed" event.
static CONNECT_ERRORS: Mutex<Vec<String>> = Mutex::new(Vec::new());

struct Capture;

struct ErrorField(Option<String>);

impl tracing::field::Visit for ErrorField {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "error" {
            self.0 = Some(format!("{value:?}"));
        }
    }
}

impl tracing::Subscriber for Capture {
    fn enabled(&self, m: &tracing::Metadata<'_>) -> bool {
        m.target() == "fitz"
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        let mut f = ErrorField(None);
        event.record(&mut f);
        if let Some(e) = f.0 {
            CONNECT_ERRORS.lock().unwrap().push(e);
        }
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

fn capture_errors() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| tracing::subscriber::set_global_default(Capture).unwrap());
}

/// One prompt attempt: no reconnect, a short connect timeout.
fn one_attempt() -> Reconnect {
    Reconnect { connect_timeout_ms: 5_000, ..Reconnect::default() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_and_notices_over_wss_with_an_added_root() {
    let broker = fitz_testkit::Broker::start(fitz_testkit::BrokerConfig::anonymous()).await.unwrap();
    let pki = pki();
    let port = tls_proxy(&pki, broker.ws_addr().unwrap()).await;
    let url = format!("wss://localhost:{port}/ws");

    let c = tokio::time::timeout(
        WAIT,
        Client::builder(&url)
            .add_root_certificate(pki.ca_der.to_vec())
            .reconnect(one_attempt())
            .no_reconnect()
            .connect(),
    )
    .await
    .expect("connect timed out")
    .expect("wss connect with the test CA trusted");

    // KV: write in one transaction, read it back in another.
    let route = "kv://wss/test/kv";
    let tx = c.kv().begin(route, TxMode::ReadWrite).await.unwrap();
    tx.put(b"greeting", b"over tls").await.unwrap();
    tx.put(b"count", b"2").await.unwrap();
    assert_eq!(tx.get(b"greeting").await.unwrap().as_deref(), Some(&b"over tls"[..]));
    tx.commit().await.unwrap();
    let ro = c.kv().begin(route, TxMode::ReadOnly).await.unwrap();
    assert_eq!(ro.get(b"greeting").await.unwrap().as_deref(), Some(&b"over tls"[..]));
    assert_eq!(ro.get(b"count").await.unwrap().as_deref(), Some(&b"2"[..]));
    assert_eq!(ro.get(b"absent").await.unwrap(), None);
    ro.rollback().await.unwrap();

    // Notices: a second wss client publishes, the first one receives.
    let publisher =
        Client::builder(&url).add_root_certificate(pki.ca_der.to_vec()).no_reconnect().connect().await.unwrap();
    let notice = "notice://wss/test/greeting";
    let mut sub = c.notice().subscribe(notice).await.unwrap();
    publisher.notice().publish(notice, b"hello over wss").await.unwrap();
    let n =
        tokio::time::timeout(WAIT, sub.next()).await.expect("no notice in time").expect("subscription ended").unwrap();
    assert_eq!(n.route(), notice);
    assert_eq!(n.body().as_ref(), b"hello over wss");

    publisher.close().await;
    c.close().await;
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusted_certificate_fails_the_connect() {
    capture_errors();
    let broker = fitz_testkit::Broker::start(fitz_testkit::BrokerConfig::anonymous()).await.unwrap();
    let pki = pki();
    let port = tls_proxy(&pki, broker.ws_addr().unwrap()).await;
    let url = format!("wss://localhost:{port}/ws");

    // Only the webpki roots: the test CA is unknown. The attempt fails,
    // reconnecting is off, so the client gives up and connect says so.
    let outcome = tokio::time::timeout(WAIT, Client::builder(&url).reconnect(one_attempt()).no_reconnect().connect())
        .await
        .expect("a refused certificate must fail promptly");
    assert_eq!(outcome.err(), Some(Error::Unreachable));

    // Why it failed: the transport reported the rustls verdict, typed as
    // TransportError::Tls (displayed "tls: …"), not a socket error.
    let errors: Vec<String> = CONNECT_ERRORS.lock().unwrap().clone();
    assert!(
        errors.iter().any(|e| e.starts_with("tls: invalid peer certificate") && e.contains("UnknownIssuer")),
        "no certificate error among {errors:#?}"
    );
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_root_that_does_not_parse_is_invalid() {
    // Refused before any connection is tried, whatever the scheme.
    for url in ["wss://localhost:9/ws", "tcp://127.0.0.1:9"] {
        let e = Client::builder(url).add_root_certificate(b"not a certificate".to_vec()).start().err();
        assert_eq!(e, Some(Error::Invalid("TLS root certificate")), "{url}");
        let e = Client::builder(url).add_root_certificate(Vec::new()).no_reconnect().connect().await.err();
        assert_eq!(e, Some(Error::Invalid("TLS root certificate")), "{url}");
    }
}
