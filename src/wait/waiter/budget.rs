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
use crate::telemetry::{HeldBy, Throttle};

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
    throttle: Throttle,
}

/// How long a scheduler waits for more shared tokens once it has none.
const SHARED_RETRY: Duration = Duration::from_millis(20);

/// Requests a wait store granted this process from a provider's rate budget
/// shared by every process (see `taskpoll::store`): a scheduler spends them,
/// the store's driver tops them up. A grant lapses: what is not spent by its
/// expiry is dropped, so no process sits on requests it could spend later on
/// top of everyone else's (see [`SharedGrant::lifetime`]).
#[derive(Debug, Default)]
pub(crate) struct SharedTokens {
    grant: std::sync::Mutex<Grant>,
    /// Times a scheduler asked for one (spent or not): a process whose
    /// schedulers ask for none does not take from the shared budget.
    asked: AtomicU64,
}

#[derive(Debug, Default)]
struct Grant {
    available: u64,
    expires: Option<Instant>,
}

/// How a process takes from a shared budget of `rate`, so that its requests
/// in any window of T seconds stay within `burst + rate × T` across every
/// process: grants live at most `lifetime`, and the store's bucket holds
/// `rate × lifetime` less than the burst (a token taken just before a window
/// may be spent in it).
#[cfg_attr(not(any(feature = "store-sqlite", feature = "store-postgres")), allow(dead_code))]
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct SharedGrant {
    /// How long a grant may be spent.
    pub(crate) lifetime: Duration,
    /// How many requests one take asks for.
    pub(crate) size: u32,
    /// The bucket in the store: the rate, with the burst less what a grant may carry over.
    pub(crate) bucket: RateSpec,
}

#[cfg_attr(not(any(feature = "store-sqlite", feature = "store-postgres")), allow(dead_code))]
impl SharedGrant {
    /// At most half a second of the rate per grant, and at most half the burst.
    pub(crate) fn for_rate(rate: RateSpec) -> Self {
        let per_second = rate.per_second.max(f64::MIN_POSITIVE);
        let burst = rate.burst.max(1);
        let seconds = (f64::from(burst) / (2.0 * per_second)).min(0.5);
        let size = (per_second * seconds).floor().max(1.0) as u32;
        let carried = (per_second * seconds).ceil() as u32;
        let bucket = RateSpec { per_second: rate.per_second, burst: burst.saturating_sub(carried).max(1) };
        Self { lifetime: Duration::from_secs_f64(seconds), size, bucket }
    }
}

#[cfg_attr(not(any(feature = "store-sqlite", feature = "store-postgres")), allow(dead_code))]
impl SharedTokens {
    fn grant(&self) -> std::sync::MutexGuard<'_, Grant> {
        self.grant.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Replaces what is left with `n` new requests, spendable until `expires`.
    pub(crate) fn renew(&self, n: u64, expires: Instant) {
        *self.grant() = Grant { available: n, expires: Some(expires) };
    }

    /// Requests granted, not yet spent and not lapsed at `now`.
    pub(crate) fn available(&self, now: Instant) -> u64 {
        let grant = self.grant();
        if grant.expires.is_some_and(|expires| expires > now) { grant.available } else { 0 }
    }

    /// Times a scheduler asked for a request so far.
    pub(crate) fn asked(&self) -> u64 {
        self.asked.load(Ordering::Acquire)
    }

    fn take(&self, now: Instant) -> bool {
        self.asked.fetch_add(1, Ordering::AcqRel);
        let mut grant = self.grant();
        if grant.expires.is_none_or(|expires| expires <= now) {
            grant.available = 0;
        }
        grant.available.checked_sub(1).map(|left| grant.available = left).is_some()
    }

    /// Gives back a request taken but not sent (the local limiter refused it).
    fn give_back(&self) {
        self.grant().available += 1;
    }
}

impl Budget {
    pub(super) fn new(
        provider: &'static str,
        rate: RateSpec,
        clock: Arc<dyn Clock>,
        shared: Option<Arc<SharedTokens>>,
    ) -> Self {
        // The config layer checked that the rate is positive and finite; the
        // fallbacks only keep this total.
        let period = Duration::from_secs_f64(1.0 / rate.per_second).max(Duration::from_nanos(1));
        let burst = NonZeroU32::new(rate.burst).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::with_period(period).unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN)).allow_burst(burst);
        let limiter = RateLimiter::direct_with_clock(quota, WaiterClock(clock));
        Self { limiter, paused_until: None, shared, throttle: Throttle::new(provider) }
    }

    /// Takes one request from the budget, or says when to try again.
    pub(super) fn take(&mut self, now: Instant) -> Result<(), Instant> {
        let taken = self.try_take(now);
        match taken {
            Ok(()) => self.throttle.released(),
            Err((by, until)) => self.throttle.held(by, until.saturating_duration_since(now)),
        }
        taken.map_err(|(_, until)| until)
    }

    fn try_take(&mut self, now: Instant) -> Result<(), (HeldBy, Instant)> {
        if let Some(until) = self.paused_until {
            if until > now {
                return Err((HeldBy::Paused, until));
            }
            self.paused_until = None;
        }
        if let Some(shared) = &self.shared
            && !shared.take(now)
        {
            return Err((HeldBy::Shared, now + SHARED_RETRY));
        }
        self.limiter.check().map_err(|not_until| {
            if let Some(shared) = &self.shared {
                shared.give_back();
            }
            // At least a millisecond, so a sleep always moves the clock on.
            (HeldBy::Rate, now + not_until.wait_time_from(now).max(Duration::from_millis(1)))
        })
    }

    /// Holds every request of the provider until `until` (the later of two pauses wins).
    pub(super) fn pause_until(&mut self, until: Instant) {
        if self.paused_until.is_none_or(|current| current < until) {
            self.paused_until = Some(until);
        }
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // instants as plain values
mod tests {
    use super::*;

    #[test]
    fn a_shared_grant_lapses_and_its_bucket_leaves_room_for_it() {
        let t0 = Instant::now();
        let tokens = SharedTokens::default();
        assert!(!tokens.take(t0), "nothing granted yet");
        tokens.renew(2, t0 + Duration::from_millis(500));
        assert!(tokens.take(t0));
        assert_eq!(tokens.available(t0), 1);
        tokens.give_back();
        assert_eq!(tokens.available(t0 + Duration::from_millis(499)), 2);
        // Lapsed: what was left is gone.
        assert_eq!(tokens.available(t0 + Duration::from_millis(500)), 0);
        assert!(!tokens.take(t0 + Duration::from_millis(600)));
        // A renewal replaces what is left rather than adding to it.
        tokens.renew(3, t0 + Duration::from_secs(2));
        tokens.renew(1, t0 + Duration::from_secs(2));
        assert_eq!(tokens.available(t0 + Duration::from_secs(1)), 1);

        // 50/s with bursts of 50: half a second per grant, 25 requests, a bucket of 25.
        let grant = SharedGrant::for_rate(RateSpec { per_second: 50.0, burst: 50 });
        assert_eq!((grant.lifetime, grant.size, grant.bucket.burst), (Duration::from_millis(500), 25, 25));
        // bucket burst + rate × (T + lifetime) = burst + rate × T, for any window T.
        let bound = f64::from(grant.bucket.burst) + 50.0 * grant.lifetime.as_secs_f64();
        assert!(bound <= 50.0 + 1e-9, "{bound}");
        // A small burst: grants of at most half of it.
        let grant = SharedGrant::for_rate(RateSpec { per_second: 10.0, burst: 4 });
        assert_eq!((grant.size, grant.bucket.burst), (2, 2));
        assert!(f64::from(grant.bucket.burst) + 10.0 * grant.lifetime.as_secs_f64() <= 4.0 + 1e-9);
    }
}
