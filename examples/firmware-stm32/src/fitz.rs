//! Everything the firmware does with Fitz (feature `fitz`): the client's
//! connection task, a notice subscriber that logs what it receives, and the
//! work of each tick (a KV transaction and a notice).
//!
//! Nothing here panics on a network or broker error: each one is logged and
//! the next tick (or the next subscribe attempt) tries again, while the
//! connection task reconnects on its own.

use defmt::{info, unwrap, warn};
use embassy_executor::Spawner;
use embassy_net::{IpAddress, IpEndpoint, Ipv4Address, Stack};
use embassy_time::{Duration, Timer, with_timeout};
use fitz_embassy::fitz_client::Error;
use fitz_embassy::fitz_client::ops::kv::TxMode;
use fitz_embassy::{Client, Config, Remote, Resources, Runner};
use static_cell::ConstStaticCell;

use crate::config;

/// A tick gives up on its requests after this, so a broker that is down or
/// slow never stalls the 1 s cadence (dropped requests are cancel-safe).
const TICK_BUDGET: Duration = Duration::from_millis(900);

/// Pause before subscribing again after the subscription ended.
const RESUBSCRIBE_DELAY: Duration = Duration::from_secs(1);

/// The client's buffers and tables, with the default capacities; in `.bss`.
static RESOURCES: ConstStaticCell<Resources<'static>> = ConstStaticCell::new(Resources::new());

#[embassy_executor::task]
async fn connection_task(runner: Runner<'static>) -> ! {
    runner.run_forever().await
}

#[embassy_executor::task]
async fn notices_task(client: Client<'static>) -> ! {
    loop {
        match client.notice().subscribe(config::NOTICE_PATTERN).await {
            Ok(mut notices) => {
                info!("subscribed to {=str}", config::NOTICE_PATTERN);
                while let Some(item) = notices.next().await {
                    match item {
                        Ok(n) => info!("notice {=str}: {=[u8]:a}", n.route(), n.body().as_ref()),
                        Err(e) => {
                            warn!("notice subscription ended: {}", e);
                            break;
                        }
                    }
                }
            }
            Err(e) => warn!("subscribe {=str}: {}", config::NOTICE_PATTERN, e),
        }
        Timer::after(RESUBSCRIBE_DELAY).await;
    }
}

/// Starts the client on `stack` and its two tasks; returns the handle the
/// tick loop uses. `seed` only jitters reconnect delays.
pub fn start(spawner: Spawner, stack: Stack<'static>, seed: u64) -> Client<'static> {
    let broker = IpEndpoint::new(IpAddress::Ipv4(Ipv4Address::from(config::BROKER_IP)), config::BROKER_PORT);
    let mut cfg = Config::new(Remote::Ip(broker));
    cfg.token = config::TOKEN;
    cfg.service_name = Some("firmware-stm32");
    let (client, runner) = fitz_embassy::new(stack, RESOURCES.take(), cfg, seed);
    spawner.spawn(unwrap!(connection_task(runner)));
    spawner.spawn(unwrap!(notices_task(client.clone())));
    client
}

/// One tick: writes `counter` to KV in a transaction and publishes it.
pub async fn tick(client: &Client<'static>, counter: u32) {
    let mut digits = [0u8; 10];
    let value = decimal(counter, &mut digits);
    match with_timeout(TICK_BUDGET, tick_requests(client, value)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => warn!("tick {}: {}", counter, e),
        Err(_) => warn!("tick {}: no answer within {} ms", counter, TICK_BUDGET.as_millis()),
    }
}

async fn tick_requests(client: &Client<'static>, value: &[u8]) -> Result<(), Error> {
    // A transaction dropped on an error (or the timeout) rolls back.
    let tx = client.kv().begin(config::KV_ROUTE, TxMode::ReadWrite).await?;
    tx.put(config::KV_KEY, value).await?;
    tx.commit().await?;
    client.notice().publish(config::TICK_ROUTE, value).await
}

/// `v` in decimal ASCII (a `u32` has at most 10 digits).
fn decimal(mut v: u32, out: &mut [u8; 10]) -> &[u8] {
    let mut start = out.len();
    for slot in out.iter_mut().rev() {
        *slot = b'0' + (v % 10) as u8;
        start -= 1;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.get(start..).unwrap_or_default()
}
