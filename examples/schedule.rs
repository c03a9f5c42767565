//! Schedules: cron jobs kept by the broker, fired to subscribers.
//!
//! - subscribes to the fires of `schedule://realm/area/reports/*`;
//! - creates two schedules (5-field UTC cron, broadcast or single
//!   delivery, a payload carried by every fire) and lists them;
//! - shows a refused cron expression (an uncoded broker error);
//! - waits for a fire of the every-minute schedule;
//! - cancels both and lists again.
//!
//! With the embedded broker the example runs it on a manual clock and moves
//! that clock one minute forward, so the fire happens at once. A real broker
//! fires on real minute boundaries: the example says so and skips the wait
//! unless `FITZ_WAIT_FOR_FIRE=1` (then it waits up to 70 s).
//!
//! ```sh
//! cargo run -p fitz-std --example schedule                                  # embedded test broker
//! FITZ_URL=tcp://127.0.0.1:4191 cargo run -p fitz-std --example schedule    # a running broker
//! FITZ_URL=tcp://127.0.0.1:4191 FITZ_WAIT_FOR_FIRE=1 cargo run -p fitz-std --example schedule
//! ```
//!
//! See `examples/common/mod.rs` for every environment variable.

#[path = "common/mod.rs"]
mod common;

use core::time::Duration;

use fitz_std::core::ops::schedule::{DeliveryMode, Fires, Schedule};
use fitz_std::{Error, Handle};
use fitz_testkit::{BrokerConfig, ClockMode};

use common::{Failed, Outcome, Target, fault, show};

/// Longest wait for a real broker's next minute boundary.
const REAL_FIRE_WAIT: Duration = Duration::from_secs(70);

#[tokio::main]
async fn main() -> Outcome {
    common::finish("schedule", demo().await)
}

async fn demo() -> Outcome {
    // The embedded broker's time moves only when the example advances it.
    let target = Target::from_env_with("schedule", BrokerConfig::anonymous().with_clock(ClockMode::Manual)).await?;
    let client = target.connect("schedule").await?;
    let sc = client.schedule().timeout_ms(10_000);
    let heartbeat = target.route("schedule", "reports/heartbeat");
    let digest = target.route("schedule", "reports/digest");
    let reports = target.route("schedule", "reports/*");

    println!("schedule: subscribe to the fires of {reports}");
    let mut fires = sc.subscribe(&reports).await?;

    println!("schedule: create {heartbeat}: every minute, broadcast, payload \"tick\"");
    sc.create(&heartbeat, "* * * * *", DeliveryMode::Broadcast, b"tick").await?;
    println!("schedule: create {digest}: 09:00 UTC on weekdays, single delivery, payload \"send the digest\"");
    sc.create(&digest, "0 9 * * 1-5", DeliveryMode::Single, b"send the digest").await?;
    println!("schedule: create {digest} with the cron \"every monday\"");
    match sc.create(&digest, "every monday", DeliveryMode::Single, b"").await {
        Err(Error::Server(f)) => println!("schedule:   refused: {}", fault(&f)),
        Err(e) => return Err(e.into()),
        Ok(()) => println!("schedule:   accepted (unexpected)"),
    }
    list(&sc, &reports).await?;

    if let Some(broker) = target.embedded() {
        println!("schedule: the embedded broker runs a manual clock: advance it by one minute");
        broker.advance(Duration::from_secs(60));
        print_fire(&mut fires, common::WAIT).await?;
    } else if std::env::var("FITZ_WAIT_FOR_FIRE").is_ok_and(|v| v == "1") {
        println!("schedule: waiting for the next minute boundary (up to {} s)", REAL_FIRE_WAIT.as_secs());
        print_fire(&mut fires, REAL_FIRE_WAIT).await?;
    } else {
        println!("schedule: a real broker fires at the next real minute boundary (up to 60 s away):");
        println!("schedule:   not waiting for it; set FITZ_WAIT_FOR_FIRE=1 to wait");
    }

    for route in [&heartbeat, &digest] {
        println!("schedule: cancel {route}");
        sc.cancel(route).await?;
    }
    list(&sc, &reports).await?;

    drop(fires);
    client.close().await;
    target.stop().await;
    Ok(())
}

/// Lists the schedules `pattern` matches. LIST returns every schedule of
/// the route family, a page at a time; the pattern is applied here.
async fn list(sc: &Schedule<'_, Handle>, pattern: &str) -> Outcome {
    println!("schedule: list the schedules matching {pattern}");
    let mut offset = 0;
    let mut found = 0;
    loop {
        let page = sc.list(offset, 0).await?;
        for entry in page.matching(pattern) {
            found += 1;
            println!(
                "schedule:   {} cron {:?} {:?} payload {}",
                entry.route(),
                entry.cron(),
                entry.delivery_mode,
                show(&entry.payload)
            );
        }
        match page.next_offset() {
            Some(next) => offset = next,
            None => break,
        }
    }
    println!("schedule:   {found} schedule(s)");
    Ok(())
}

/// Waits up to `wait` for the next fire and prints it.
async fn print_fire(fires: &mut Fires<Handle>, wait: Duration) -> Outcome {
    let fire = match tokio::time::timeout(wait, fires.next()).await {
        Ok(Some(fire)) => fire?,
        Ok(None) => return Err(Failed::new("the schedule subscription ended before a fire").into()),
        Err(_) => return Err(Failed::new(format!("no schedule fire within {} s", wait.as_secs())).into()),
    };
    println!("schedule:   fired: {} with payload {}", fire.route(), show(&fire.payload));
    Ok(())
}
