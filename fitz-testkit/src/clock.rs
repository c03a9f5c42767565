//! The broker's clock: real, scaled or manual (see [`ClockMode`]).

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::config::ClockMode;

/// Broker time. `now()` is milliseconds since the broker started on the
/// broker's time line; `utc_ms()` is the matching UTC wall time (used for
/// cron and timestamps).
#[derive(Debug)]
pub(crate) struct Clock {
    mode: ClockMode,
    started: Instant,
    utc_at_start_ms: u64,
    manual_ms: Mutex<u64>,
}

impl Clock {
    pub(crate) fn new(mode: ClockMode) -> Self {
        let utc = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        Self {
            mode,
            started: Instant::now(),
            utc_at_start_ms: u64::try_from(utc.as_millis()).unwrap_or(u64::MAX),
            manual_ms: Mutex::new(0),
        }
    }

    /// Milliseconds on the broker's time line.
    pub(crate) fn now(&self) -> u64 {
        let real = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        match self.mode {
            ClockMode::Real => real,
            ClockMode::Scaled(f) => (real as f64 * f) as u64,
            ClockMode::Manual => *self.manual_ms.lock().unwrap_or_else(|e| e.into_inner()),
        }
    }

    /// UTC milliseconds since the epoch on the broker's time line.
    pub(crate) fn utc_ms(&self) -> u64 {
        self.utc_at_start_ms.saturating_add(self.now())
    }

    /// Moves a manual clock forward (no effect on real or scaled clocks).
    pub(crate) fn advance(&self, by: Duration) {
        if self.mode == ClockMode::Manual {
            let mut m = self.manual_ms.lock().unwrap_or_else(|e| e.into_inner());
            *m = m.saturating_add(u64::try_from(by.as_millis()).unwrap_or(u64::MAX));
        }
    }

    /// How long to sleep in real time between housekeeping ticks.
    pub(crate) fn tick_interval(&self) -> Duration {
        match self.mode {
            ClockMode::Scaled(f) if f > 1.0 => Duration::from_millis(5),
            _ => Duration::from_millis(20),
        }
    }
}
