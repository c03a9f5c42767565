//! Work queue: a producer hands out jobs, a worker takes them one
//! reservation at a time.
//!
//! - the worker subscribes to availability of the queues of an area
//!   (`queue://realm/area/*`) and is told when one has work;
//! - the producer enqueues three jobs (each gets a message id);
//! - the worker reserves a batch of two (invisible to other consumers for
//!   the reservation time), extends each reservation, and completes them;
//! - the third job is reserved; while it is, nobody else can reserve it;
//! - a delayed job is picked up by a long poll when it becomes ready.
//!
//! ```sh
//! cargo run -p fitz-std --example queue                                  # embedded test broker
//! FITZ_URL=tcp://127.0.0.1:4191 cargo run -p fitz-std --example queue    # a running broker
//! ```
//!
//! See `examples/common/mod.rs` for every environment variable.

#[path = "common/mod.rs"]
mod common;

use std::time::Instant;

use fitz_std::core::ops::queue::Reserve;

use common::{Outcome, Target, show};

#[tokio::main]
async fn main() -> Outcome {
    common::finish("queue", demo().await)
}

async fn demo() -> Outcome {
    let target = Target::from_env("queue").await?;
    let producer = target.connect("queue (producer)").await?;
    let worker = target.connect("queue (worker)").await?;
    let route = target.route("queue", "emails");
    let area = target.route("queue", "*");

    println!("queue: worker subscribes to availability of {area}");
    let mut available = worker.queue().subscribe(&area).await?;

    for body in ["welcome ada", "welcome grace", "reset password for linus"] {
        let id = producer.queue().enqueue(&route, body.as_bytes()).await?;
        println!("queue: producer enqueues {body:?} on {route} -> message id {id}");
    }
    let note = common::next_within("availability notification", available.next()).await?;
    println!(
        "queue: worker is told {} has work (ready {}, delayed {}, in flight {})",
        note.route(),
        note.ready,
        note.delayed,
        note.inflight
    );

    // Every request of the worker gives up after 10 s (plus a long poll's wait).
    let q = worker.queue().timeout_ms(10_000);
    println!("queue: worker reserves up to 2 messages for 30 s");
    let page = q.reserve_with(&route, Reserve { lease_seconds: 30, batch: 2, wait_seconds: 0 }).await?;
    println!("queue:   reserved {} messages", page.len());
    for msg in page.messages() {
        let id = msg.message_id();
        println!("queue:   message {id}: {} (reservation token {})", show(msg.body()), msg.lease_token());
        println!("queue: worker extends message {id} to 60 s (the job takes longer than planned)");
        msg.extend(60).await?;
        println!("queue: worker completes message {id} (the broker deletes it)");
        msg.complete().await?;
    }

    println!("queue: worker reserves the next message for 30 s");
    let page = q.reserve(&route, 30).await?;
    let Some(third) = page.messages().next() else {
        return Err(common::Failed::new("the third message was not reserved").into());
    };
    println!("queue:   message {}: {}", third.message_id(), show(third.body()));
    println!("queue: producer tries to reserve from the same queue meanwhile");
    let empty = producer.queue().reserve(&route, 30).await?;
    println!("queue:   got {} messages: the reserved one is invisible until completed or expired", empty.len());
    println!("queue: worker completes message {}", third.message_id());
    third.complete().await?;

    let id = producer.queue().enqueue_after(&route, b"daily digest", 1).await?;
    println!("queue: producer enqueues \"daily digest\" with a 1 s delay -> message id {id}");
    println!("queue: worker reserves with a long poll (waits up to 5 s for a message)");
    let started = Instant::now();
    let job = loop {
        let page = q.reserve_with(&route, Reserve { lease_seconds: 30, batch: 1, wait_seconds: 5 }).await?;
        if let Some(msg) = page.messages().next() {
            break msg;
        }
        if started.elapsed() > common::WAIT {
            return Err(common::Failed::new("the delayed message never became ready").into());
        }
    };
    println!(
        "queue:   got message {}: {} after {:.1} s",
        job.message_id(),
        show(job.body()),
        started.elapsed().as_secs_f32()
    );
    job.complete().await?;
    println!("queue: worker completes message {id}; the queue is empty again");

    drop(available);
    producer.close().await;
    worker.close().await;
    target.stop().await;
    Ok(())
}
