//! One provider's request budget: a rate limiter (governor's GCRA, on the
//! waiter's clock so virtual-time tests hold) and a provider-wide pause set by
//! a `Retry-After` on a 429 or 503.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use governor::{Quota, RateLimiter, clock, middleware::NoOpMiddleware, state};

use crate::Clock;
use crate::spec::RateSpec;

/// governor's clock, read from the waiter's [`Clock`].
#[derive(Debug, Clone)]
struct WaiterClock(Arc<dyn Clock>);

impl clock::Clock for WaiterClock {
    type Instant = Instant;

    fn now(&self) -> Instant {
        self.0.now()
    }
}

type Limiter = RateLimiter<state::NotKeyed, state::InMemoryState, WaiterClock, NoOpMiddleware<Instant>>;

pub(super) struct Budget {
    limiter: Limiter,
    paused_until: Option<Instant>,
    shared: Option<Arc<SharedTokens>>,
}

/// How long a scheduler waits for more shared tokens once it has none.
const SHARED_RETRY: Duration = Duration::from_millis(20);

/// Requests a wait store granted this process from a provider's rate budget
/// shared by every process (see `taskpoll::store`): a scheduler spends them,
/// the store's driver tops them up.
#[derive(Debug, Default)]
pub(crate) struct SharedTokens {
    available: AtomicU64,
    /// Times a scheduler asked for one (spent or not): a process whose
    /// schedulers ask for none does not take from the shared budget.
    asked: AtomicU64,
}

#[cfg_attr(not(any(feature = "store-sqlite", feature = "store-postgres")), allow(dead_code))]
impl SharedTokens {
    /// Adds granted requests.
    pub(crate) fn grant(&self, n: u64) {
        self.available.fetch_add(n, Ordering::AcqRel);
    }

    /// Requests granted and not yet spent.
    pub(crate) fn available(&self) -> u64 {
        self.available.load(Ordering::Acquire)
    }

    /// Times a scheduler asked for a request so far.
    pub(crate) fn asked(&self) -> u64 {
        self.asked.load(Ordering::Acquire)
    }

    fn take(&self) -> bool {
        self.asked.fetch_add(1, Ordering::AcqRel);
        self.available.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1)).is_ok()
    }
}

impl Budget {
    pub(super) fn new(rate: RateSpec, clock: Arc<dyn Clock>, shared: Option<Arc<SharedTokens>>) -> Self {
        // The config layer checked that the rate is positive and finite; the
        // fallbacks only keep this total.
        let period = Duration::from_secs_f64(1.0 / rate.per_second).max(Duration::from_nanos(1));
        let burst = NonZeroU32::new(rate.burst).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::with_period(period).unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN)).allow_burst(burst);
        Self { limiter: RateLimiter::direct_with_clock(quota, WaiterClock(clock)), paused_until: None, shared }
    }

    /// Takes one request from the budget, or says when to try again.
    pub(super) fn take(&mut self, now: Instant) -> Result<(), Instant> {
        if let Some(until) = self.paused_until {
            if until > now {
                return Err(until);
            }
            self.paused_until = None;
        }
        if let Some(shared) = &self.shared
            && !shared.take()
        {
            return Err(now + SHARED_RETRY);
        }
        self.limiter.check().map_err(|not_until| {
            if let Some(shared) = &self.shared {
                shared.grant(1);
            }
            // At least a millisecond, so a sleep always moves the clock on.
            now + not_until.wait_time_from(now).max(Duration::from_millis(1))
        })
    }

    /// Holds every request of the provider until `until` (the later of two pauses wins).
    pub(super) fn pause_until(&mut self, until: Instant) {
        if self.paused_until.is_none_or(|current| current < until) {
            self.paused_until = Some(until);
        }
    }
}
