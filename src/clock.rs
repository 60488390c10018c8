//! Time, behind a trait: the polling engine reads the time and sleeps only
//! through a [`Clock`], so tests can run waits in virtual time.
//!
//! [`TokioClock`] (the default) uses tokio's timer, so it follows tokio's
//! paused time (`#[tokio::test(start_paused = true)]`). [`ManualClock`] is a
//! virtual clock whose time moves only when someone sleeps on it or calls
//! [`ManualClock::advance`]: a wait on it runs at once and every poll instant
//! is exact.
//!
//! ```
//! use std::time::Duration;
//! use taskpoll::clock::{Clock, ManualClock};
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let clock = ManualClock::new();
//! let start = clock.now();
//! clock.sleep_until(start + Duration::from_millis(1500)).await;
//! assert_eq!(clock.now() - start, Duration::from_millis(1500));
//! # });
//! ```

#![allow(clippy::disallowed_methods)] // the one place that reads the real clocks

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

/// The future a [`Clock`] returns for a sleep.
pub type Sleep = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// Where the polling engine reads the time and how it sleeps.
pub trait Clock: Send + Sync + fmt::Debug {
    /// The monotonic time, used for every delay and the deadline.
    fn now(&self) -> Instant;

    /// The wall-clock time, used only for the serialisable [`crate::WaitState`].
    fn wall(&self) -> SystemTime;

    /// A future that completes at `deadline` (at once if it has passed).
    fn sleep_until(&self, deadline: Instant) -> Sleep;

    /// A future that completes after `duration`.
    fn sleep(&self, duration: Duration) -> Sleep {
        match self.now().checked_add(duration) {
            Some(deadline) => self.sleep_until(deadline),
            None => Box::pin(std::future::pending()),
        }
    }
}

/// The default clock: tokio's monotonic timer and the system wall clock.
///
/// Under tokio's paused time the monotonic side is virtual but the wall clock
/// is not; use a shared [`ManualClock`] to test resuming across waits.
#[derive(Debug, Clone, Copy, Default)]
#[non_exhaustive]
pub struct TokioClock;

impl TokioClock {
    /// The tokio clock.
    pub fn new() -> Self {
        Self
    }
}

impl Clock for TokioClock {
    fn now(&self) -> Instant {
        tokio::time::Instant::now().into_std()
    }

    fn wall(&self) -> SystemTime {
        SystemTime::now()
    }

    fn sleep_until(&self, deadline: Instant) -> Sleep {
        Box::pin(tokio::time::sleep_until(tokio::time::Instant::from_std(deadline)))
    }
}

/// A virtual clock for tests: time stands still until a sleep or
/// [`advance`](ManualClock::advance) moves it, and a sleep completes at once
/// after moving the time to its deadline. Its wall clock moves with it.
///
/// It suits one wait at a time (concurrent sleepers would each jump the
/// shared time); for concurrent waits use tokio's paused time.
#[derive(Debug)]
pub struct ManualClock {
    origin: Instant,
    wall_origin: SystemTime,
    offset: Mutex<Duration>,
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl ManualClock {
    /// A clock starting now (wall clock: the system's current time).
    pub fn new() -> Self {
        Self::starting_at(SystemTime::now())
    }

    /// A clock whose wall clock starts at `wall`.
    pub fn starting_at(wall: SystemTime) -> Self {
        Self { origin: Instant::now(), wall_origin: wall, offset: Mutex::new(Duration::ZERO) }
    }

    /// Moves the time forward (e.g. to simulate a slow answer or a restart).
    pub fn advance(&self, by: Duration) {
        let mut offset = self.offset.lock().unwrap_or_else(|e| e.into_inner());
        *offset = offset.saturating_add(by);
    }

    /// Time elapsed since the clock was created (its virtual "now").
    pub fn elapsed(&self) -> Duration {
        *self.offset.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        let offset = self.elapsed();
        self.origin.checked_add(offset).unwrap_or(self.origin)
    }

    fn wall(&self) -> SystemTime {
        self.wall_origin.checked_add(self.elapsed()).unwrap_or(self.wall_origin)
    }

    fn sleep_until(&self, deadline: Instant) -> Sleep {
        let target = deadline.saturating_duration_since(self.origin);
        let mut offset = self.offset.lock().unwrap_or_else(|e| e.into_inner());
        if target > *offset {
            *offset = target;
        }
        Box::pin(std::future::ready(()))
    }
}
