//! KV transactions: what an application does with the Fitz key-value store.
//!
//! - subscribes to committed changes of an area (`kv://realm/area/*`);
//! - writes in a read-write transaction: `put`, `insert` (only if absent;
//!   a second insert is refused with the broker's 1006), `get` of its own
//!   writes, `delete`, then `commit`;
//! - reads back in a read-only transaction: `get` and `scan`, a full page
//!   and then pages of two keys continued after the last key;
//! - meets a conflict: a second client begins a write transaction on the
//!   resource while the first still holds it, and gets a typed
//!   [`fitz_std::Error::Server`] with the code (1004 ERR_ISOLATION_CONFLICT,
//!   retryable); it then retries with the `kv().update(…)` helper.
//!
//! ```sh
//! cargo run -p fitz-std --example kv                                  # embedded test broker
//! FITZ_URL=tcp://127.0.0.1:4191 cargo run -p fitz-std --example kv    # a running broker
//! FITZ_URL=wss://broker.example/ws FITZ_TOKEN=<jwt> cargo run -p fitz-std --example kv
//! ```
//!
//! See `examples/common/mod.rs` for every environment variable.

#[path = "common/mod.rs"]
mod common;

use fitz_std::core::ops::kv::{CAP_SCAN_EXCLUSIVE, Persistence, Scan, TxMode, Txn};
use fitz_std::{Error, Handle};

use common::{Outcome, Target, fault, show};

#[tokio::main]
async fn main() -> Outcome {
    common::finish("kv", demo().await)
}

async fn demo() -> Outcome {
    let target = Target::from_env("kv").await?;
    let client = target.connect("kv").await?;
    let route = target.route("kv", "profile");
    let area = target.route("kv", "*");

    // Subscribe first: the broker announces every commit on a matching route.
    println!("kv: subscribe to committed changes on {area}");
    let mut changes = client.kv().subscribe(&area).await?;

    println!("kv: begin a read-write transaction on {route}");
    let tx = client.kv().begin(&route, TxMode::ReadWrite).await?;
    println!("kv:   transaction {} is open", tx.id());
    for (key, value) in [("greeting", "hello"), ("user:1", "ada"), ("user:2", "grace"), ("user:3", "linus")] {
        println!("kv: put {key} = {value:?}");
        tx.put(key.as_bytes(), value.as_bytes()).await?;
    }
    println!("kv: insert visits = \"0\" (only if the key is absent)");
    tx.insert(b"visits", b"0").await?;
    println!("kv: insert visits = \"1\" again");
    match tx.insert(b"visits", b"1").await {
        Err(Error::Server(f)) => println!("kv:   refused as expected: {}", fault(&f)),
        Err(e) => return Err(e.into()),
        Ok(()) => println!("kv:   accepted (this broker does not refuse duplicate inserts)"),
    }
    let own = tx.get(b"greeting").await?;
    println!(
        "kv: get greeting inside the transaction = {} (its own write)",
        own.as_deref().map_or("none".into(), show)
    );
    let missing = tx.get(b"nobody").await?;
    println!("kv: get nobody = {}", missing.as_deref().map_or("none".into(), show));
    println!("kv: delete user:3");
    tx.delete(b"user:3").await?;
    println!("kv: commit (sync persistence)");
    tx.commit_with(Persistence::Sync).await?;

    let change = common::next_within("KV change notification", changes.next()).await?;
    println!("kv: change notified on {} ({} mutations committed)", change.route(), change.mutation_count);

    println!("kv: begin a read-only transaction on {route}");
    let ro = client.kv().begin(&route, TxMode::ReadOnly).await?;
    let greeting = ro.get(b"greeting").await?;
    println!("kv: read back {} (committed)", greeting.as_deref().map_or("none".into(), show));
    let all = ro.scan(Scan::default()).await?;
    println!("kv: scan everything: {} keys (more: {})", all.len(), all.has_more);
    for (key, value) in all.pairs() {
        println!("kv:   {} = {}", String::from_utf8_lossy(&key), show(&value));
    }
    scan_in_pages(&client, &ro).await?;
    ro.rollback().await?;

    // Two writers on one resource.
    let other = target.connect("kv (second client)").await?;
    println!("kv: first client begins a write transaction and sets visits = \"1\"");
    let holder = client.kv().begin(&route, TxMode::ReadWrite).await?;
    holder.put(b"visits", b"1").await?;
    println!("kv: second client begins a write transaction on the same resource");
    match other.kv().begin(&route, TxMode::ReadWrite).await {
        Err(Error::Server(f)) => {
            println!("kv:   conflict: {}", fault(&f));
            println!("kv: first client commits");
            holder.commit().await?;
        }
        Err(e) => return Err(e.into()),
        // A broker that detects conflicts at commit instead of at begin.
        Ok(contender) => {
            contender.put(b"visits", b"2").await?;
            println!("kv: first client commits");
            holder.commit().await?;
            match contender.commit().await {
                Err(Error::Server(f)) => println!("kv:   conflict at commit: {}", fault(&f)),
                Err(e) => return Err(e.into()),
                Ok(()) => println!("kv:   no conflict reported: the last commit won"),
            }
        }
    }

    println!("kv: second client retries: update() reads visits, adds one, commits");
    let visits = other
        .kv()
        .update(&route, async |tx: &mut Txn<Handle>| {
            let current = tx.get(b"visits").await?;
            let n: u64 = current.as_deref().and_then(|v| core::str::from_utf8(v).ok()?.parse().ok()).unwrap_or(0);
            let next = (n + 1).to_string();
            tx.put(b"visits", next.as_bytes()).await?;
            Ok(next)
        })
        .await?;
    println!("kv:   visits = {visits:?} (committed)");

    other.close().await;
    client.close().await;
    target.stop().await;
    Ok(())
}

/// Scans two keys at a time, each page continuing after the last key of
/// the previous one.
async fn scan_in_pages(client: &fitz_std::Client, ro: &Txn<Handle>) -> Result<(), Error> {
    let mut page = ro.scan(Scan { limit: Some(2), ..Scan::default() }).await?;
    let mut n = 1;
    loop {
        let keys: Vec<String> = page.pairs().map(|(k, _)| String::from_utf8_lossy(&k).into_owned()).collect();
        println!("kv: scan page {n} (limit 2): {keys:?} (more: {})", page.has_more);
        let Some(last) = page.last_key().filter(|_| page.has_more) else { return Ok(()) };
        page = if client.has(CAP_SCAN_EXCLUSIVE) {
            // The broker resumes strictly after the key.
            ro.scan(Scan { start: Some(&last), after: true, limit: Some(2), ..Scan::default() }).await?
        } else {
            // Without that capability: start at the smallest key after it.
            let mut next = last.to_vec();
            next.push(0);
            ro.scan(Scan { start: Some(&next), limit: Some(2), ..Scan::default() }).await?
        };
        n += 1;
    }
}
