//! Leases: two nodes competing for leadership, and a job run under a
//! managed lease.
//!
//! - node-b watches the leader lease; node-a acquires it (a fencing token
//!   comes with the grant) and node-b is told the holder changed;
//! - node-b queries it (holder, remaining TTL, waiters) and tries to take
//!   it: refused with the broker's 5001 ERR_LEASE_HELD;
//! - node-a renews it for longer;
//! - node-b asks again, this time waiting in the broker's queue; node-a
//!   sees the waiter and releases, and node-b receives the deferred grant;
//! - [`fitz_std::lease::ManagedLease`] holds a lease while a job runs,
//!   renews it every third of its TTL, and releases it when the job ends.
//!
//! ```sh
//! cargo run -p fitz-std --example lease                                  # embedded test broker
//! FITZ_URL=tcp://127.0.0.1:4191 cargo run -p fitz-std --example lease    # a running broker
//! ```
//!
//! See `examples/common/mod.rs` for every environment variable.

#[path = "common/mod.rs"]
mod common;

use core::time::Duration;

use fitz_std::Error;
use fitz_std::lease::{self as managed, ManagedLease};

use common::{Outcome, Target, fault};

#[tokio::main]
async fn main() -> Outcome {
    common::finish("lease", demo().await)
}

async fn demo() -> Outcome {
    let target = Target::from_env("lease").await?;
    let a = target.connect("lease (node-a)").await?;
    let b = target.connect("lease (node-b)").await?;
    let route = target.route("lease", "leader");
    // Each node names itself; every request gives up after 10 s.
    let la = a.lease().owner("node-a").timeout_ms(10_000);
    let lb = b.lease().owner("node-b").timeout_ms(10_000);

    println!("lease: node-b watches {route}");
    let mut watch = lb.subscribe(&route).await?;

    println!("lease: node-a acquires {route} for 15 s");
    let mut held = la.acquire(&route, 15).await?;
    println!("lease:   {:?}, fencing token {}", held.status(), held.token());
    let change = common::next_within("lease change notification", watch.next()).await?;
    println!("lease: node-b is told the holder of {} changed", change.route());

    let info = lb.query(&route).await?;
    println!(
        "lease: node-b queries: held by {}, {} s left, {} waiting",
        info.owner().unwrap_or("nobody"),
        info.ttl_remaining_secs.unwrap_or(0),
        info.pending_waiters
    );

    println!("lease: node-b tries to acquire it");
    match lb.acquire(&route, 15).await {
        Err(Error::Server(f)) => println!("lease:   refused: {}", fault(&f)),
        Err(e) => return Err(e.into()),
        Ok(granted) => {
            println!("lease:   unexpectedly granted; giving it back");
            granted.release().await?;
        }
    }

    println!("lease: node-a renews for 30 s");
    let token = held.renew_for(30).await?;
    println!("lease:   fencing token now {token}, {} s granted", held.ttl_secs());

    println!("lease: node-b asks again, waiting up to 10 s in the broker's queue");
    let waiting = tokio::spawn({
        let (b, route) = (b.clone(), route.clone());
        async move { b.lease().owner("node-b").timeout_ms(10_000).acquire_wait(&route, 15, 10).await }
    });
    let waiters = common::within("queued waiter", async {
        loop {
            let info = la.query(&route).await?;
            if info.pending_waiters > 0 {
                return Ok::<_, Error>(info.pending_waiters);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await??;
    println!("lease: node-a sees {waiters} waiter(s) and releases the lease");
    held.release().await?;
    let granted = common::within("deferred lease grant", waiting).await??;
    let granted = granted?;
    println!(
        "lease:   node-b granted after waiting (waited: {}): {:?}, fencing token {}",
        granted.waited(),
        granted.status(),
        granted.token()
    );
    let info = la.query(&route).await?;
    println!("lease: holder is now {}", info.owner().unwrap_or("nobody"));
    println!("lease: node-b releases");
    granted.release().await?;
    drop(watch);

    let job = target.route("lease", "nightly-report");
    let managed_lease = ManagedLease::new(&job, Duration::from_secs(1)).owner("node-a");
    println!(
        "lease: node-a runs a job under a managed lease of {job} (TTL {} s, renewed every {} ms)",
        managed_lease.ttl_secs(),
        managed_lease.renew_every().as_millis()
    );
    let outcome = managed_lease
        .run_with(&a, |mut fence| async move {
            println!("lease:   [job] started under fencing token {}", fence.token());
            for step in 1..=3 {
                if !fence.renewed().await {
                    break;
                }
                println!("lease:   [job] step {step} done; lease renewed {} time(s)", fence.renewals());
            }
            "report written"
        })
        .await?;
    match outcome {
        managed::Outcome::Completed(result) => println!("lease:   job completed ({result}); lease released"),
        managed::Outcome::Lost(e) => println!("lease:   lease lost, job cancelled: {e}"),
    }
    let info = lb.query(&job).await?;
    println!("lease: {job} held: {}", info.is_held());

    a.close().await;
    b.close().await;
    target.stop().await;
    Ok(())
}
