//! RPC: a worker serving a few operations, and a caller using them.
//!
//! - the worker registers `rpc://realm/area/*` with
//!   [`fitz_std::rpc::serve`], which runs a handler per call on tokio tasks
//!   (at most 4 at once) and always answers;
//! - a one-shot call ([`fitz_std::rpc::call_once`]) gets one reply;
//! - a streamed call ([`fitz_std::rpc::call`]) reads the chunks the handler
//!   sends before its final answer;
//! - a call with a 300 ms deadline to a slow operation ends with
//!   [`fitz_std::Error::Timeout`] (a current broker also cancels it on the
//!   worker);
//! - a handler that fails ends its call with a terminal error (6010
//!   ERR_BACKEND_ERROR), and a route nobody serves with the broker's 6004.
//!
//! ```sh
//! cargo run -p fitz-std --example rpc                                  # embedded test broker
//! FITZ_URL=tcp://127.0.0.1:4191 cargo run -p fitz-std --example rpc    # a running broker
//! ```
//!
//! See `examples/common/mod.rs` for every environment variable.

#[path = "common/mod.rs"]
mod common;

use core::time::Duration;
use std::time::Instant;

use fitz_std::Error;
use fitz_std::rpc::{self, CAP_CANCELLATION, Failure};

use common::{Outcome, Target, fault, show};

#[tokio::main]
async fn main() -> Outcome {
    common::finish("rpc", demo().await)
}

async fn demo() -> Outcome {
    let target = Target::from_env("rpc").await?;
    let server = target.connect("rpc (worker)").await?;
    let caller = target.connect("rpc (caller)").await?;
    let pattern = target.route("rpc", "*");

    println!("rpc: worker serves {pattern} (up to 4 calls at once)");
    let serving = rpc::serve(&server.rpc(), &pattern, 4, |req, chunks| async move {
        let body = String::from_utf8_lossy(req.body()).into_owned();
        let operation = req.route().rsplit('/').next().unwrap_or_default().to_owned();
        println!("rpc:   [worker] {} called with {body:?}", req.route());
        match operation.as_str() {
            "greet" => Ok(format!("hello, {body}").into_bytes()),
            "count" => {
                let n: u32 = body.parse().map_err(|_| Failure::internal("count expects a number"))?;
                for i in 1..=n {
                    // Chunks before the last one; the returned value ends the call.
                    chunks.send(format!("{i}").as_bytes()).await?;
                }
                Ok(b"liftoff".to_vec())
            }
            "report" => {
                tokio::time::sleep(Duration::from_secs(5)).await;
                Ok(b"the report, eventually".to_vec())
            }
            "mail" => Err(Failure::internal("the mail server is down")),
            _ => Err(Failure::internal(format!("unknown operation {operation}"))),
        }
    })
    .await?;
    if caller.has(CAP_CANCELLATION) {
        println!("rpc: the broker supports cancellation: deadlines travel with the calls");
    }

    // Every call made through `calls` gives up after 5 s.
    let calls = caller.rpc().timeout_ms(5_000);
    let greet = target.route("rpc", "greet");
    println!("rpc: call {greet} with \"ada\" (one-shot)");
    let reply = rpc::call_once(&calls, &greet, b"ada").await?;
    println!("rpc:   reply {}", show(&reply));

    let count = target.route("rpc", "count");
    println!("rpc: call {count} with \"3\" (streamed reply)");
    let mut call = rpc::call(&calls, &count, b"3").await?;
    while let Some(chunk) = common::within("RPC chunk", call.next()).await? {
        let chunk = chunk?;
        let last = if chunk.last { " (last)" } else { "" };
        println!("rpc:   chunk {}: {}{last}", chunk.sequence, show(&chunk.body));
    }

    let report = target.route("rpc", "report");
    println!("rpc: call {report} with a 300 ms deadline (the worker needs 5 s)");
    let started = Instant::now();
    match rpc::call_once(&caller.rpc().timeout_ms(300), &report, b"q3").await {
        Err(Error::Timeout) => println!("rpc:   timed out after {} ms, as expected", started.elapsed().as_millis()),
        Err(e) => return Err(e.into()),
        Ok(reply) => println!("rpc:   answered in time: {}", show(&reply)),
    }

    let mail = target.route("rpc", "mail");
    println!("rpc: call {mail} (the handler fails)");
    match rpc::call_once(&calls, &mail, b"to: grace").await {
        Err(Error::Server(f)) => println!("rpc:   terminal error: {}", fault(&f)),
        Err(e) => return Err(e.into()),
        Ok(reply) => println!("rpc:   unexpected reply {}", show(&reply)),
    }

    let nobody = target.route("rpc", "billing/charge");
    println!("rpc: call {nobody} (no worker serves it)");
    match rpc::call_once(&calls, &nobody, b"42").await {
        Err(Error::Server(f)) => println!("rpc:   terminal error: {}", fault(&f)),
        Err(e) => return Err(e.into()),
        Ok(reply) => println!("rpc:   unexpected reply {}", show(&reply)),
    }

    println!("rpc: worker stops serving");
    serving.stop();
    caller.close().await;
    server.close().await;
    target.stop().await;
    Ok(())
}
