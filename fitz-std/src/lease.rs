//! Managed leases: hold a lease for as long as a piece of work runs.
//!
//! [`ManagedLease`] acquires a lease, renews it every third of its TTL
//! while the work runs, and releases it when the work finishes. If a
//! renewal fails (the lease expired, was fenced, or the connection that
//! held it is gone), the work is cancelled at its next `.await` (its future
//! is dropped) and the outcome says why.
//!
//! ```no_run
//! # async fn demo(client: &fitz_std::Client) -> Result<(), fitz_std::Error> {
//! use std::time::Duration;
//! use fitz_std::lease::{ManagedLease, Outcome};
//!
//! let outcome = ManagedLease::run(client, "lease://acme/jobs/nightly", Duration::from_secs(15), |fence| async move {
//!     // Pass `fence.token()` along with writes a fenced resource checks.
//!     fence.token()
//! })
//! .await?;
//! match outcome {
//!     Outcome::Completed(token) => println!("done under token {token}"),
//!     Outcome::Lost(why) => println!("lease lost, work cancelled: {why}"),
//! }
//! # Ok(()) }
//! ```

use std::future::Future;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::{CoreClient, Error, Handle};

/// How a managed piece of work ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome<T> {
    /// The work finished while the lease was held; the lease was then
    /// released.
    Completed(T),
    /// A renewal failed with this error: the lease is no longer held and
    /// the work was cancelled.
    Lost(Error),
}

impl<T> Outcome<T> {
    /// The work's value, if it completed.
    pub fn completed(self) -> Option<T> {
        match self {
            Outcome::Completed(v) => Some(v),
            Outcome::Lost(_) => None,
        }
    }
}

/// What the work sees of its lease: the current fencing token and the
/// renewals so far. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Fence {
    rx: watch::Receiver<(u64, u32)>,
}

impl Fence {
    /// The current fencing token (a renewal may replace it).
    pub fn token(&self) -> u64 {
        self.rx.borrow().0
    }

    /// Successful renewals so far.
    pub fn renewals(&self) -> u32 {
        self.rx.borrow().1
    }

    /// Waits for the next successful renewal; false once the lease is no
    /// longer being renewed.
    pub async fn renewed(&mut self) -> bool {
        self.rx.changed().await.is_ok()
    }
}

/// A lease held for the duration of some work (see the module
/// documentation).
#[derive(Debug, Clone, Copy)]
pub struct ManagedLease<'a> {
    route: &'a str,
    ttl: Duration,
    owner: &'a str,
    wait_seconds: u32,
}

impl<'a> ManagedLease<'a> {
    /// A managed lease of the exact route `lease://realm/area/resource`
    /// with a TTL of `ttl` (whole seconds on the wire, rounded up, at least
    /// one); renewed every third of it.
    pub fn new(route: &'a str, ttl: Duration) -> Self {
        ManagedLease { route, ttl, owner: "", wait_seconds: 0 }
    }

    /// The owner id to acquire with (default empty).
    pub fn owner(mut self, owner_id: &'a str) -> Self {
        self.owner = owner_id;
        self
    }

    /// Wait up to `seconds` (at most 30) for the lease if it is held (default
    /// 0: fail with the broker's 5001).
    pub fn wait(mut self, seconds: u32) -> Self {
        self.wait_seconds = seconds;
        self
    }

    /// The TTL sent to the broker, in seconds.
    pub fn ttl_secs(&self) -> u64 {
        u64::try_from(self.ttl.as_millis().div_ceil(1000)).unwrap_or(u64::MAX).max(1)
    }

    /// Time between renewals: a third of the TTL.
    pub fn renew_every(&self) -> Duration {
        Duration::from_millis(self.ttl_secs().saturating_mul(1000) / 3)
    }

    /// Acquires `route` for `ttl`, runs `work` while renewing, and releases
    /// the lease afterwards. Shorthand for
    /// `ManagedLease::new(route, ttl).run_with(client, work)`.
    pub async fn run<F, Fut, T>(client: &CoreClient, route: &str, ttl: Duration, work: F) -> Result<Outcome<T>, Error>
    where
        F: FnOnce(Fence) -> Fut,
        Fut: Future<Output = T>,
    {
        ManagedLease::new(route, ttl).run_with(client, work).await
    }

    /// Acquires the lease (an error if that fails: nothing ran), then runs
    /// `work` while renewing it every third of the TTL. The work gets a
    /// [`Fence`] with the current token. When the work finishes the lease is
    /// released and its value returned; when a renewal fails first, the
    /// work's future is dropped and the error returned as
    /// [`Outcome::Lost`].
    pub async fn run_with<F, Fut, T>(&self, client: &CoreClient, work: F) -> Result<Outcome<T>, Error>
    where
        F: FnOnce(Fence) -> Fut,
        Fut: Future<Output = T>,
    {
        let period = self.renew_every();
        let period_ms = u64::try_from(period.as_millis()).unwrap_or(u64::MAX).max(1);
        // The grant may take a while (a busy broker, a wait); a renewal must
        // answer within one period to leave time for a retry.
        let lease = client.lease().owner(self.owner).timeout_ms(self.ttl_secs().saturating_mul(1000).max(10_000));
        let mut held = lease.acquire_wait(self.route, self.ttl_secs(), self.wait_seconds).await?;
        held.set_timeout_ms(period_ms);
        let granted_at = Instant::now();
        let (tx, rx) = watch::channel((held.token(), 0u32));
        let ended = {
            let work = work(Fence { rx });
            let renewing = renew_loop(&mut held, period, granted_at, tx);
            tokio::select! {
                value = work => Ok(value),
                lost = renewing => Err(lost),
            }
        };
        match ended {
            Ok(value) => {
                if let Err(e) = held.release().await {
                    tracing::debug!(error = %e, "managed lease: release after the work failed");
                }
                Ok(Outcome::Completed(value))
            }
            Err(lost) => {
                tracing::debug!(error = %lost, "managed lease lost; work cancelled");
                Ok(Outcome::Lost(lost))
            }
        }
    }
}

/// Renews `held` every `period` until a renewal fails; returns that error.
/// A renewal that times out is retried at once while the lease can still be
/// valid (the TTL counted from the last success has not run out).
async fn renew_loop(
    held: &mut fitz_client::ops::lease::Held<Handle>,
    period: Duration,
    granted_at: Instant,
    tx: watch::Sender<(u64, u32)>,
) -> Error {
    let ttl = Duration::from_secs(held.ttl_secs());
    let mut valid_until = granted_at + ttl;
    let mut renewals = 0u32;
    let mut next = granted_at + period;
    loop {
        tokio::time::sleep_until(next).await;
        let sent = Instant::now();
        match held.renew().await {
            Ok(token) => {
                renewals = renewals.saturating_add(1);
                valid_until = sent + ttl;
                next = sent + period;
                tx.send_replace((token, renewals));
            }
            Err(Error::Timeout) if Instant::now() < valid_until => next = Instant::now(),
            Err(e) => return e,
        }
    }
}
