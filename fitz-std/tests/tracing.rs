//! The client reports its lifecycle and requests through `tracing`.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::std_instead_of_core)]

use std::sync::Mutex;

use fitz_std::Client;
use fitz_std::core::ops::kv::TxMode;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

static SEEN: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Records "target: message" of every event.
struct Capture;

struct Message(String);

impl Visit for Message {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        }
    }
}

impl Subscriber for Capture {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut m = Message(String::new());
        event.record(&mut m);
        SEEN.lock().unwrap().push(format!("{}: {}", event.metadata().target(), m.0));
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_and_requests_are_traced() {
    tracing::subscriber::set_global_default(Capture).unwrap();
    let broker = fitz_testkit::Broker::start(fitz_testkit::BrokerConfig::anonymous()).await.unwrap();
    let c = Client::builder(broker.tcp_url().unwrap()).connect().await.unwrap();
    let tx = c.kv().begin("kv://trace/a/b", TxMode::ReadWrite).await.unwrap();
    tx.put(b"k", b"v").await.unwrap();
    tx.commit().await.unwrap();
    c.close().await;
    let seen = SEEN.lock().unwrap().clone();
    for want in ["fitz: authenticated", "fitz::request: sent", "fitz::request: reply", "fitz: stopped"] {
        assert!(seen.iter().any(|s| s == want), "no '{want}' event in {seen:#?}");
    }
}
