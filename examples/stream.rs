//! Streams: an append-only log of order events, written in a session and
//! read back in pages.
//!
//! - subscribes to commit notifications of the area (`stream://realm/area/*`);
//! - opens an append session and appends six events, each tagged with a
//!   discriminator (`order.created`, `order.paid`, `order.shipped`) at the
//!   offset it expects (optimistic concurrency: a stale offset is a
//!   conflict, 2001), then commits them together;
//! - receives the commit notification with its summary;
//! - reads the log two items per page with a filter on the discriminators:
//!   records that do not match come back as filtered markers, and each page
//!   says where the next read continues;
//! - reads the newest record with `last`.
//!
//! ```sh
//! cargo run -p fitz-std --example stream                                  # embedded test broker
//! FITZ_URL=tcp://127.0.0.1:4191 cargo run -p fitz-std --example stream    # a running broker
//! ```
//!
//! See `examples/common/mod.rs` for every environment variable.

#[path = "common/mod.rs"]
mod common;

use fitz_std::Error;
use fitz_std::core::ops::stream::{Clause, Extra, PageItem, Query, is_conflict};

use common::{Outcome, Target, fault, show};

#[tokio::main]
async fn main() -> Outcome {
    common::finish("stream", demo().await)
}

async fn demo() -> Outcome {
    let target = Target::from_env("stream").await?;
    let client = target.connect("stream").await?;
    // Every request through `s` gives up after 10 s.
    let s = client.stream().timeout_ms(10_000);
    let route = target.route("stream", "orders");
    let area = target.route("stream", "*");

    println!("stream: subscribe to commits on {area}");
    let mut commits = s.subscribe(&area).await?;

    // The next offset to append at is the number of records so far.
    let first = s.metadata(&route).await?.map_or(0, |m| m.record_count);
    println!("stream: {route} holds {first} records; open an append session");
    let appender = s.begin(&route).await?;
    let events = [
        ("order.created", "order 1001 created"),
        ("order.paid", "order 1001 paid"),
        ("order.created", "order 1002 created"),
        ("order.shipped", "order 1001 shipped"),
        ("order.paid", "order 1002 paid"),
        ("order.created", "order 1003 created"),
    ];
    for (expected, (discriminator, body)) in (first..).zip(events) {
        let extra = Extra { discriminator, ..Extra::default() };
        let offset = appender.append_with(expected, body.as_bytes(), extra).await?;
        let offset = offset.map_or_else(|| "unreported".to_owned(), |o| o.to_string());
        println!("stream: append {body:?} [{discriminator}] expecting offset {expected} -> offset {offset}");
    }
    println!("stream: append once more, expecting the stale offset {first}");
    match appender.append(first, b"order 1001 created (again)").await {
        Err(e) if is_conflict(&e) => match &e {
            Error::Server(f) => println!("stream:   conflict: {}; the session stays open", fault(f)),
            other => println!("stream:   conflict: {other}"),
        },
        Err(e) => return Err(e.into()),
        Ok(_) => println!("stream:   accepted (this broker does not check expected offsets)"),
    }
    println!("stream: commit the session");
    appender.commit().await?;

    let note = common::next_within("stream commit notification", commits.next()).await?;
    let summary = note.summary();
    println!(
        "stream: notified: {} {} offsets {}..={} ({} records)",
        note.route(),
        summary.event,
        summary.first_resource_offset,
        summary.last_resource_offset,
        summary.batch_size
    );

    // Payments and shipments only, two items per page.
    let kinds = ["order.paid", "order.shipped"];
    let filter = [Clause::AnyOf(&kinds)];
    println!("stream: read {route} from offset {first}, 2 items per page, discriminator in {kinds:?}");
    let mut query = Query::new(&route).from_offset(first).limit(2).filter(&filter);
    for n in 1.. {
        let page = s.read_page(&query).await?;
        println!("stream: page {n}: {} items", page.len());
        for item in page.items() {
            match item {
                PageItem::Event(e) => {
                    println!("stream:   offset {}: {}", e.record.resource_offset, show(&e.record.body));
                }
                PageItem::Filtered { offset, .. } => println!("stream:   offset {offset}: skipped by the filter"),
                PageItem::FilteredRange { from_offset, to_offset, .. } => {
                    println!("stream:   offsets {from_offset}..={to_offset}: skipped by the filter");
                }
            }
        }
        // Continue where the page ended (markers included).
        query = query.from(page.next());
        println!("stream:   next read from offset {} (more: {})", query.from.offset(), page.has_more());
        if !page.has_more() {
            break;
        }
    }

    match s.last(&route).await? {
        Some(last) => println!("stream: last record: offset {}: {}", last.resource_offset, show(&last.body)),
        None => println!("stream: the stream is empty"),
    }

    drop(commits);
    client.close().await;
    target.stop().await;
    Ok(())
}
