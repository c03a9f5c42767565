//! Notices: live, best-effort fan-out of small messages.
//!
//! - a listener subscribes with a wildcard (`notice://realm/area/*`) and to
//!   one exact route;
//! - a publisher (another connection) publishes on two routes; every
//!   matching subscription receives each notice, in publish order, with the
//!   concrete route it was published on;
//! - the listener unsubscribes the wildcard (by dropping it) and gets only
//!   what the exact subscription matches;
//! - `unsubscribe_all` ends every notice subscription of the connection.
//!
//! Notices are not stored: a subscriber hears what is published while it
//! is subscribed, nothing before.
//!
//! ```sh
//! cargo run -p fitz-std --example notice                                  # embedded test broker
//! FITZ_URL=tcp://127.0.0.1:4191 cargo run -p fitz-std --example notice    # a running broker
//! ```
//!
//! See `examples/common/mod.rs` for every environment variable.

#[path = "common/mod.rs"]
mod common;

use fitz_std::Handle;
use fitz_std::core::ops::notice::Notices;

use common::{Outcome, Target, show};

#[tokio::main]
async fn main() -> Outcome {
    common::finish("notice", demo().await)
}

async fn demo() -> Outcome {
    let target = Target::from_env("notice").await?;
    let listener = target.connect("notice (listener)").await?;
    let publisher = target.connect("notice (publisher)").await?;
    let everything = target.route("notice", "*");
    let deploys = target.route("notice", "deploys");
    let alerts = target.route("notice", "alerts");

    println!("notice: listener subscribes to {everything}");
    let mut all = listener.notice().subscribe(&everything).await?;
    println!("notice: listener subscribes to {alerts}");
    let mut only_alerts = listener.notice().subscribe(&alerts).await?;

    for (route, body) in [(&deploys, "v1.4 rolled out"), (&alerts, "disk 91% full")] {
        println!("notice: publisher publishes {body:?} on {route}");
        publisher.notice().publish(route, body.as_bytes()).await?;
    }
    receive("wildcard", &mut all, 2).await?;
    receive("alerts", &mut only_alerts, 1).await?;

    println!("notice: listener unsubscribes from {everything}");
    all.unsubscribe();
    for (route, body) in [(&deploys, "v1.5 rolled out"), (&alerts, "disk 95% full")] {
        println!("notice: publisher publishes {body:?} on {route}");
        publisher.notice().publish(route, body.as_bytes()).await?;
    }
    receive("alerts", &mut only_alerts, 1).await?;
    println!("notice:   (the listener no longer receives deploy notices: only its alerts subscription is left)");

    println!("notice: listener unsubscribes from everything (unsubscribe_all)");
    listener.notice().unsubscribe_all().await?;
    let ended = common::within("end of the alerts subscription", only_alerts.next()).await?.is_none();
    println!("notice:   alerts subscription ended: {ended}");

    listener.close().await;
    publisher.close().await;
    target.stop().await;
    Ok(())
}

/// Prints the next `n` notices of a subscription.
async fn receive(name: &str, sub: &mut Notices<Handle>, n: usize) -> Outcome {
    for _ in 0..n {
        let notice = common::next_within("notice", sub.next()).await?;
        println!("notice:   [{name} subscription] {} on {}", show(notice.body()), notice.route());
    }
    Ok(())
}
