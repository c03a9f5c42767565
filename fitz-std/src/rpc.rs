//! RPC conveniences of the tokio binding.
//!
//! The RPC API itself is [`fitz_client::ops::rpc`], reached through
//! `client.rpc()`. This module adds what needs std:
//!
//! - [`new_id`]: a random call UUID (fitz-client has no random source);
//! - [`call`] and [`call_once`]: calls that pick their UUID;
//! - [`serve`]: a worker that runs an async handler per call on tokio
//!   tasks, at most `max_concurrent` at once, stops handlers the broker
//!   cancels, and always answers (the handler's result, a terminal error,
//!   or the release of a cancelled invocation).
//!
//! ```no_run
//! # async fn demo(client: fitz_std::Client) -> Result<(), fitz_std::Error> {
//! use fitz_std::rpc::{self, Failure};
//!
//! let serving = rpc::serve(&client.rpc(), "rpc://acme/app/echo", 4, |req, _chunks| async move {
//!     if req.body().is_empty() {
//!         return Err(Failure::internal("empty request"));
//!     }
//!     Ok(req.body().clone())
//! })
//! .await?;
//! let reply = rpc::call_once(&client.rpc().timeout_ms(2_000), "rpc://acme/app/echo", b"ping").await?;
//! assert_eq!(&reply[..], b"ping");
//! serving.stop();
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::fmt;
use std::future::Future;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use tokio::sync::{Semaphore, oneshot};
use tokio::task::JoinHandle;

pub use fitz_client::ops::rpc::{
    CAP_CANCELLATION, Call, CancelStatus, Cancellation, Chunk, Invocation, Request, Responder, Rpc, SignalReason,
    TerminalError, Uuid, Worker, WorkerEvent,
};

use crate::{Error, Handle};

/// A random version-4 UUID for a call.
///
/// Drawn from the standard library's randomly keyed hasher (seeded from
/// the operating system) over a process-wide counter: unique among the
/// process's calls and unpredictable enough for correlation, not meant as
/// key material.
pub fn new_id() -> Uuid {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    // Every `RandomState` has fresh keys.
    let keys = RandomState::new();
    let hi = keys.hash_one((n, 0u8));
    let lo = keys.hash_one((n, 1u8));
    let mut v = (u128::from(hi) << 64) | u128::from(lo);
    // Version 4 (bits 76..80) and the RFC 4122 variant (bits 62..64).
    v = (v & !(0xF_u128 << 76)) | (0x4_u128 << 76);
    v = (v & !(0x3_u128 << 62)) | (0x2_u128 << 62);
    Uuid(v.to_be_bytes())
}

/// Starts a call with a fresh UUID ([`new_id`]); see [`Rpc::call`]. The
/// deadline is the one set with [`Rpc::timeout_ms`].
pub async fn call(rpc: &Rpc<'_, Handle>, route: &str, body: &[u8]) -> Result<Call<Handle>, Error> {
    rpc.call(route, body, new_id()).await
}

/// A one-shot call with a fresh UUID: the body of the reply's first chunk
/// (see [`Call::reply`]).
pub async fn call_once(rpc: &Rpc<'_, Handle>, route: &str, body: &[u8]) -> Result<Bytes, Error> {
    rpc.call_once(route, body, new_id()).await
}

/// Why a handler failed: becomes the call's terminal error (WIRE.md §8.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    code: u32,
    message: String,
}

impl Failure {
    /// ERR_BACKEND_ERROR: what a failing handler reports.
    pub const INTERNAL: u32 = 6010;
    /// ERR_RPC_BACKPRESSURE: the worker is saturated; safe to retry.
    pub const SATURATED: u32 = 6003;

    /// A failure with `code`; codes outside 6001–6013 (which the caller
    /// would take for data) become [`Failure::INTERNAL`].
    pub fn new(code: u32, message: impl Into<String>) -> Self {
        let code = if TerminalError::CODES.contains(&code) { code } else { Self::INTERNAL };
        Failure { code, message: message.into() }
    }

    /// A handler error (6010).
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(Self::INTERNAL, message)
    }

    /// A saturated worker (6003).
    pub fn saturated(message: impl Into<String>) -> Self {
        Self::new(Self::SATURATED, message)
    }

    /// The RPC error code, 6001–6013.
    pub fn code(&self) -> u32 {
        self.code
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }

    fn terminal(&self) -> TerminalError<'_> {
        TerminalError { code: self.code, message: &self.message }
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure::internal(e.to_string())
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RPC failure {}: {}", self.code, self.message)
    }
}

impl std::error::Error for Failure {}

/// Sends the chunks before the last one of a streamed reply, from inside a
/// [`serve`] handler. The handler's return value is the last chunk.
#[derive(Clone)]
pub struct Chunks {
    slot: Arc<tokio::sync::Mutex<Option<Responder<Handle>>>>,
}

impl Chunks {
    /// Sends one chunk (in call order). Fails with [`Error::Cancelled`] once
    /// the invocation has ended.
    pub async fn send(&self, body: &[u8]) -> Result<(), Error> {
        let mut slot = self.slot.lock().await;
        match slot.as_mut() {
            Some(r) => r.send(body).await,
            None => Err(Error::Cancelled),
        }
    }
}

/// A running [`serve`] worker. Dropping it (or [`Serving::stop`]) stops
/// the worker: the pattern is unregistered and running handlers are
/// stopped.
#[must_use = "dropping a Serving stops the worker"]
pub struct Serving {
    task: Option<JoinHandle<Result<(), Error>>>,
}

impl Serving {
    /// Stops the worker.
    pub fn stop(self) {
        drop(self);
    }

    /// Waits until the worker ends by itself: `Ok` when its registration
    /// ended normally, the error otherwise (e.g. [`Error::Closed`]).
    pub async fn wait(mut self) -> Result<(), Error> {
        match self.task.take() {
            Some(t) => t.await.unwrap_or(Err(Error::Cancelled)),
            None => Ok(()),
        }
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        if let Some(t) = &self.task {
            t.abort();
        }
    }
}

/// Registers a worker for `pattern` (see [`Rpc::serve`]) and runs
/// `handler` for each call on its own tokio task, at most `max_concurrent`
/// at once. The handler gets the request and a [`Chunks`] sender for a
/// streamed reply; it returns the last chunk (the whole reply of a one-shot
/// call) or a [`Failure`], sent as the call's terminal error (a handler
/// that panics fails its call with 6010). When the broker cancels a call
/// (current dialect) its handler is stopped and the invocation released.
pub async fn serve<F, Fut, R>(
    rpc: &Rpc<'_, Handle>,
    pattern: &str,
    max_concurrent: u32,
    handler: F,
) -> Result<Serving, Error>
where
    F: Fn(Request<Bytes>, Chunks) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<R, Failure>> + Send + 'static,
    R: AsRef<[u8]> + Send + 'static,
{
    let worker = rpc.serve(pattern, max_concurrent).await?;
    let permits = usize::try_from(max_concurrent).unwrap_or(1).max(1);
    let task = tokio::spawn(run(worker, permits, Arc::new(handler)));
    Ok(Serving { task: Some(task) })
}

type StopMap = HashMap<Uuid, (u64, oneshot::Sender<()>)>;

/// The invocations running on tasks, by UUID, each with the sender that
/// stops it. Dropping it (the worker ended or was stopped) stops them all.
#[derive(Default)]
struct Running {
    map: Arc<Mutex<StopMap>>,
    next: u64,
}

fn locked(map: &Mutex<StopMap>) -> std::sync::MutexGuard<'_, StopMap> {
    map.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Running {
    fn insert(&mut self, id: Uuid) -> (u64, oneshot::Receiver<()>) {
        self.next += 1;
        let (tx, rx) = oneshot::channel();
        locked(&self.map).insert(id, (self.next, tx));
        (self.next, rx)
    }

    fn stop(&self, id: Uuid) {
        if let Some((_, tx)) = locked(&self.map).remove(&id) {
            let _ = tx.send(());
        }
    }

    fn stop_all(&self) {
        // Dropped senders stop their invocations.
        locked(&self.map).clear();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop_all();
    }
}

async fn run<F, Fut, R>(mut worker: Worker<Handle>, permits: usize, handler: Arc<F>) -> Result<(), Error>
where
    F: Fn(Request<Bytes>, Chunks) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<R, Failure>> + Send + 'static,
    R: AsRef<[u8]> + Send + 'static,
{
    let limit = Arc::new(Semaphore::new(permits));
    let mut running = Running::default();
    while let Some(event) = worker.next().await {
        match event? {
            WorkerEvent::Request(inv) => {
                // The broker's credit already bounds the calls in flight;
                // this keeps the handlers within it too (a permit is
                // returned only after the invocation was answered).
                let Ok(permit) = limit.clone().acquire_owned().await else { break };
                let (req, responder) = inv.into_parts();
                let id = req.id();
                let (generation, stop) = running.insert(id);
                let map = running.map.clone();
                let handler = handler.clone();
                tokio::spawn(async move {
                    invoke(handler, req, responder, stop).await;
                    let mut map = locked(&map);
                    if map.get(&id).is_some_and(|(g, _)| *g == generation) {
                        map.remove(&id);
                    }
                    drop(permit);
                });
            }
            WorkerEvent::Cancelled(c) => running.stop(c.invocation_id),
            // Invocations of the lost connection cannot be answered.
            WorkerEvent::Restored => running.stop_all(),
        }
    }
    Ok(())
}

/// Runs one invocation to its end: the handler's reply or failure, or its
/// release when it is stopped first.
async fn invoke<F, Fut, R>(
    handler: Arc<F>,
    req: Request<Bytes>,
    responder: Responder<Handle>,
    stop: oneshot::Receiver<()>,
) where
    F: Fn(Request<Bytes>, Chunks) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<R, Failure>> + Send + 'static,
    R: AsRef<[u8]> + Send + 'static,
{
    let id = req.id();
    let slot = Arc::new(tokio::sync::Mutex::new(Some(responder)));
    // Its own task, so that a panic fails the call instead of losing it.
    let mut work = tokio::spawn(handler(req, Chunks { slot: slot.clone() }));
    let outcome = tokio::select! {
        done = &mut work => Some(done.unwrap_or_else(|_| Err(Failure::internal("RPC handler panicked")))),
        _ = stop => {
            work.abort();
            None
        }
    };
    let Some(responder) = slot.lock().await.take() else { return };
    let sent = match outcome {
        Some(Ok(body)) => responder.finish(body.as_ref()).await,
        Some(Err(failure)) => responder.fail(failure.terminal()).await,
        None => responder.release().await,
    };
    if let Err(e) = sent {
        tracing::debug!(?id, error = %e, "RPC invocation could not be answered");
    }
}
