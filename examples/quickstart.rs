//! A walk through the seven Fitz domains with fitz-std.
//!
//! ```sh
//! cargo run --example quickstart                                  # embedded fitz-testkit broker
//! FITZ_URL=tcp://127.0.0.1:4191 cargo run --example quickstart    # a real broker (ws:// and wss:// too)
//! FITZ_URL=ws://127.0.0.1:4090/ws FITZ_TOKEN=<jwt> cargo run --example quickstart
//! ```
//!
//! Without `FITZ_URL` the example starts fitz-testkit in this process (the
//! current dialect, a manual clock so the schedule fires at once) and
//! connects to it over TCP. Every step prints what it did.
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc)]

use std::error::Error as StdError;
use std::time::Duration;

use fitz_std::core::ops::kv::{Scan, TxMode};
use fitz_std::core::ops::stream::{Clause, Extra, Query};
use fitz_std::rpc::Failure;
use fitz_std::{Client, Error};
use fitz_wire::schedule::DeliveryMode;

type Result<T> = std::result::Result<T, Box<dyn StdError>>;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[tokio::main]
async fn main() -> Result<()> {
    // ----- connect ----------------------------------------------------------
    let (url, broker) = match std::env::var("FITZ_URL").ok().filter(|u| !u.is_empty()) {
        Some(url) => (url, None),
        None => {
            let cfg = fitz_testkit::BrokerConfig::anonymous()
                .with_dialect(fitz_testkit::Dialect::Current)
                .with_clock(fitz_testkit::ClockMode::Manual);
            let broker = fitz_testkit::Broker::start(cfg).await?;
            let url = broker.tcp_url().ok_or("the embedded broker has no TCP listener")?;
            println!("broker    embedded fitz-testkit at {url} (set FITZ_URL to use a real one)");
            (url, Some(broker))
        }
    };
    let mut builder = Client::builder(url.clone());
    if let Ok(token) = std::env::var("FITZ_TOKEN") {
        builder = builder.token(token);
    }
    let client = builder.connect().await?;
    let (dialect, caps) = client.dialect().ok_or("connected without a dialect")?;
    println!("connect   {url}: {:?}, {dialect:?} dialect, capabilities {:#x}", client.state(), caps.0);
    // A unique realm, so reruns against a real broker start clean.
    let realm = format!("qs{}", std::process::id());

    // ----- KV ---------------------------------------------------------------
    let kv_route = format!("kv://{realm}/app/settings");
    let mut changes = client.kv().subscribe(&format!("kv://{realm}/app/*")).await?;
    let tx = client.kv().begin(&kv_route, TxMode::ReadWrite).await?;
    tx.put(b"greeting", b"hello").await?;
    tx.put(b"language", b"en").await?;
    match tx.insert(b"greeting", b"again").await {
        Err(Error::Server(fault)) => println!("kv        insert of an existing key refused: {fault}"),
        other => println!("kv        unexpected insert result: {other:?}"),
    }
    tx.commit().await?;
    println!("kv        committed 2 keys in {kv_route}");
    let change = changes.next().await.ok_or("KV subscription ended")??;
    println!("kv        change notification: {} ({} writes)", change.route(), change.mutation_count);
    let ro = client.kv().begin(&kv_route, TxMode::ReadOnly).await?;
    let greeting = ro.get(b"greeting").await?.ok_or("greeting missing")?;
    println!("kv        read back greeting = {:?}", text(&greeting));
    let page = ro.scan(Scan::default()).await?;
    let keys: Vec<String> = page.pairs().map(|(k, v)| format!("{}={}", text(&k), text(&v))).collect();
    println!("kv        scan: {}", keys.join(", "));
    ro.rollback().await?;

    // ----- Queue ------------------------------------------------------------
    let q_route = format!("queue://{realm}/jobs/email");
    let id = client.queue().enqueue(&q_route, b"send welcome mail").await?;
    println!("queue     enqueued message {id}");
    let page = client.queue().reserve(&q_route, 30).await?;
    for msg in page.messages() {
        println!("queue     reserved {} {:?}", msg.message_id(), text(msg.body()));
        msg.extend(60).await?;
        msg.complete().await?;
        println!("queue     extended, then completed");
    }

    // ----- RPC --------------------------------------------------------------
    let rpc_route = format!("rpc://{realm}/math/double");
    let serving = fitz_std::rpc::serve(&client.rpc(), &rpc_route, 8, |req, _chunks| async move {
        let n: u64 = std::str::from_utf8(req.body())
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| Failure::new(6010, "not a number"))?;
        Ok::<_, Failure>((2 * n).to_string().into_bytes())
    })
    .await?;
    let reply = fitz_std::rpc::call_once(&client.rpc().timeout_ms(5_000), &rpc_route, b"21").await?;
    println!("rpc       double(21) = {}", text(&reply));
    match fitz_std::rpc::call_once(&client.rpc().timeout_ms(5_000), &rpc_route, b"twenty").await {
        Err(Error::Server(fault)) => println!("rpc       double(\"twenty\") failed as it should: {fault}"),
        other => println!("rpc       unexpected: {other:?}"),
    }
    serving.stop();

    // ----- Lease ------------------------------------------------------------
    let lease_route = format!("lease://{realm}/jobs/leader");
    let held = client.lease().owner("quickstart").acquire(&lease_route, 30).await?;
    println!("lease     acquired {} with fencing token {}", held.route(), held.token());
    let info = client.lease().query(&lease_route).await?;
    println!("lease     held: {}, by {:?}", info.is_held(), info.owner());
    held.release().await?;
    println!("lease     released; held now: {}", client.lease().query(&lease_route).await?.is_held());

    // ----- Notice -----------------------------------------------------------
    let mut notices = client.notice().subscribe(&format!("notice://{realm}/chat/*")).await?;
    client.notice().publish(&format!("notice://{realm}/chat/general"), b"hi all").await?;
    let n = notices.next().await.ok_or("notice subscription ended")??;
    println!("notice    {} says {:?}", n.route(), text(n.body()));

    // ----- Stream -----------------------------------------------------------
    let s_route = format!("stream://{realm}/orders/eu");
    let mut notes = client.stream().subscribe(&s_route).await?;
    let session = client.stream().begin(&s_route).await?;
    for (i, (body, kind)) in
        [("order 1", "order.created"), ("pay 1", "payment"), ("order 2", "order.created")].iter().enumerate()
    {
        let at = session.append_with(i as u64, body.as_bytes(), Extra { metadata: &[], discriminator: kind }).await?;
        println!("stream    appended {body:?} ({kind}) at offset {at:?}");
    }
    session.commit().await?;
    if let Some(b) = &broker {
        // The embedded broker's clock only moves when told to, and commit
        // notifications are debounced in broker time.
        b.advance(Duration::from_secs(1));
    }
    let note = notes.next().await.ok_or("stream subscription ended")??;
    println!("stream    commit notification for {} ({})", note.route(), note.summary().event);
    let filter = [Clause::StartsWith("order.")];
    let page = client.stream().read_page(&Query::new(&s_route).filter(&filter)).await?;
    for e in page.events() {
        println!("stream    read order record @{}: {:?}", e.record.resource_offset, text(&e.record.body));
    }
    println!("stream    the cursor continues at offset {}", page.next().offset());

    // ----- Schedule ---------------------------------------------------------
    let sched_route = format!("schedule://{realm}/reports/daily/summary");
    let mut fires = client.schedule().subscribe(&format!("schedule://{realm}/reports/**")).await?;
    client.schedule().create(&sched_route, "* * * * *", DeliveryMode::Broadcast, b"build the report").await?;
    let list = client.schedule().list(0, 100).await?;
    println!(
        "schedule  created; {} schedule(s) of this run listed",
        list.matching(&format!("schedule://{realm}/**")).count()
    );
    let fired = match &broker {
        Some(b) => {
            b.advance(Duration::from_secs(61));
            true
        }
        None => std::env::var("FITZ_WAIT_FOR_FIRE").is_ok_and(|v| v == "1"),
    };
    if fired {
        let fire = tokio::time::timeout(Duration::from_secs(90), fires.next())
            .await?
            .ok_or("schedule subscription ended")??;
        println!("schedule  fired {} with {:?}", fire.route(), text(&fire.payload));
    } else {
        println!("schedule  (a real broker fires on the next minute; FITZ_WAIT_FOR_FIRE=1 waits for it)");
    }
    client.schedule().cancel(&sched_route).await?;
    println!("schedule  cancelled");

    // ----- done -------------------------------------------------------------
    let stats = client.stats();
    client.close().await;
    println!(
        "done      all seven domains; at most {} requests were in flight at once; client {:?}",
        stats.max_in_flight,
        client.state()
    );
    if let Some(b) = broker {
        b.stop().await;
    }
    Ok(())
}
