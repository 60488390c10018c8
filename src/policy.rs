//! The polling cadence: a validated [`Policy`] and its dry-run [`Policy::schedule`].
//!
//! The delay after poll *n* (n = 1, 2, …) is `delays[n-1]` while there are
//! fixed delays left; after that, with `k` counting the exponential steps from 0,
//! `offset + min(max_delay, jitter(min(max_delay, initial_delay · factor^k)))`
//! (the formula of `specs/README.md`); random draws are rounded to whole milliseconds. Jitter
//! never exceeds its input and the cap is applied again after it, so
//! `max_delay + offset` always holds.
//!
//! Deadline clipping: a poll never starts at or after the deadline, and when
//! the next planned poll would come later than `deadline − final_poll_reserve`,
//! it is moved to that instant, so the final poll lands just before the deadline
//! with `final_poll_reserve` left for its request. When even that instant has
//! passed, no poll is left and the wait ends at the deadline.
//!
//! ```
//! use std::time::Duration;
//! use taskpoll::Policy;
//! let policy = Policy::builder()
//!     .initial_delay(Duration::from_secs(1))
//!     .factor(1.5)
//!     .max_delay(Duration::from_secs(10))
//!     .build()?;
//! let polls = policy.poll_times(Duration::from_secs(5));
//! let secs: Vec<f64> = polls.iter().map(Duration::as_secs_f64).collect();
//! assert_eq!(secs, [0.0, 1.0, 2.5, 4.75]);
//! # Ok::<(), taskpoll::Error>(())
//! ```

use std::borrow::Cow;
use std::time::Duration;

use crate::spec::{Jitter, PolicySpec, ProviderSpec};
use crate::{Error, Result};

mod learned;

pub use learned::{Durations, Eta};

/// How many draws of a jittered policy's schedule stand for it as the
/// baseline of a learned plan (their pooled lags are its lags).
const BASELINE_DRAWS: u64 = 16;

/// The seed of those draws.
const BASELINE_SEED: u64 = 0x7a5c_9011;

/// How often to poll: first poll, fixed delays, exponential part, jitter,
/// offset, and the time kept for the final poll. Built with [`Policy::builder`]
/// or read from a spec ([`Policy::polite`], [`Policy::preset`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    name: Cow<'static, str>,
    first_poll: Duration,
    delays: Vec<Duration>,
    initial_delay: Duration,
    factor: f64,
    max_delay: Duration,
    jitter: Jitter,
    offset: Duration,
    reserve: Duration,
    suggested_deadline: Option<Duration>,
    seed: Option<u64>,
    /// Plans from the learned durations (see [`Policy::learned`]).
    learned: Option<Learned>,
}

/// How a learned policy plans.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Learned {
    /// The chance that the task ended since the last poll at which the next one goes out.
    target: f64,
    /// Without history it polls as the wait's provider's polite policy (`Policy::learned()`),
    /// not as its own delays.
    polite_fallback: bool,
}

impl Default for Policy {
    /// `default`: first poll at once, then 1 s ×1.5 up to 15 s, no jitter.
    fn default() -> Self {
        Self {
            name: Cow::Borrowed("default"),
            first_poll: Duration::ZERO,
            delays: Vec::new(),
            initial_delay: Duration::from_secs(1),
            factor: 1.5,
            max_delay: Duration::from_secs(15),
            jitter: Jitter::None,
            offset: Duration::ZERO,
            reserve: Policy::DEFAULT_FINAL_POLL_RESERVE,
            suggested_deadline: None,
            seed: None,
            learned: None,
        }
    }
}

impl Policy {
    /// Default time kept for the final poll's request (see [`PolicyBuilder::final_poll_reserve`]).
    pub const DEFAULT_FINAL_POLL_RESERVE: Duration = Duration::from_millis(250);

    /// The most entries [`Policy::schedule`] returns.
    pub const MAX_SCHEDULE_LEN: usize = 100_000;

    /// A builder starting from [`Policy::default`].
    pub fn builder() -> PolicyBuilder {
        PolicyBuilder { policy: Policy { name: Cow::Borrowed("custom"), ..Policy::default() } }
    }

    /// A builder starting from this policy (to tweak a preset, e.g. seed it).
    pub fn to_builder(&self) -> PolicyBuilder {
        PolicyBuilder { policy: self.clone() }
    }

    /// The policy described by spec data, named `name`.
    pub fn from_spec(name: impl Into<Cow<'static, str>>, spec: &PolicySpec) -> Result<Self> {
        let policy = Policy {
            name: name.into(),
            first_poll: Duration::from_millis(spec.first_poll_ms),
            delays: spec.delays_ms.iter().copied().map(Duration::from_millis).collect(),
            initial_delay: Duration::from_millis(spec.initial_delay_ms),
            factor: spec.factor,
            max_delay: Duration::from_millis(spec.max_delay_ms),
            jitter: spec.jitter,
            offset: Duration::from_millis(spec.offset_ms),
            reserve: Policy::DEFAULT_FINAL_POLL_RESERVE,
            suggested_deadline: (spec.deadline_ms > 0).then(|| Duration::from_millis(spec.deadline_ms)),
            seed: None,
            learned: None,
        };
        policy.validate()?;
        Ok(policy)
    }

    /// The provider's polite default (its spec's `poll.polite`), named `<provider>:polite`.
    pub fn polite(provider: &str) -> Result<Self> {
        let spec = crate::spec::known_provider(provider)?;
        Self::polite_for(spec)
    }

    pub(crate) fn polite_for(spec: &ProviderSpec) -> Result<Self> {
        Self::from_spec(format!("{}:polite", spec.name), &spec.polite)
    }

    /// The chance, per poll, that the task ended since the previous poll,
    /// which [`Policy::learned`] aims at.
    pub const DEFAULT_LEARNED_TARGET: f64 = 0.5;

    /// `learned`: polls where the task has likely ended, from how long the
    /// provider's tasks took (the client learns it from every wait that sees
    /// its task end; see [`Durations`](crate::wait::Durations)). With too
    /// little history yet, it polls as the provider's polite policy; its
    /// gaps stay within the polite policy's first and longest delays.
    ///
    /// To learn over your own schedule instead, use [`PolicyBuilder::learned`].
    pub fn learned() -> Self {
        let learned = Learned { target: Policy::DEFAULT_LEARNED_TARGET, polite_fallback: true };
        Policy { name: Cow::Borrowed("learned"), learned: Some(learned), ..Policy::default() }
    }

    /// Whether the policy plans from learned durations.
    pub fn is_learned(&self) -> bool {
        self.learned.is_some()
    }

    /// The policy a wait on `spec`'s provider runs: [`Policy::learned`]
    /// becomes the provider's polite policy that learns; others stay as they are.
    pub(crate) fn for_provider(self: &std::sync::Arc<Self>, spec: &ProviderSpec) -> Result<std::sync::Arc<Self>> {
        match self.learned {
            Some(learned) if learned.polite_fallback => {
                let polite = Self::polite_for(spec)?;
                let learned = Learned { polite_fallback: false, ..learned };
                Ok(std::sync::Arc::new(Policy { name: self.name.clone(), learned: Some(learned), ..polite }))
            }
            _ => Ok(self.clone()),
        }
    }

    /// The delay before the first poll: the learned one when there is history.
    pub(crate) fn first_delay(&self, durations: Option<&mut Durations>) -> Duration {
        self.learned_poll(Duration::ZERO, Duration::ZERO, durations).unwrap_or(self.first_poll)
    }

    /// The delay after poll `n` made at `last_poll` (elapsed): to the next
    /// learned poll when there is history, else [`Policy::delay`].
    pub(crate) fn next_delay(
        &self,
        n: u32,
        last_poll: Duration,
        durations: Option<&mut Durations>,
        rng: &mut fastrand::Rng,
    ) -> Duration {
        let min_gap = self.shortest_delay() / 2;
        match self.learned_poll(last_poll, min_gap, durations) {
            Some(at) => at.saturating_sub(last_poll),
            None => self.delay(n, rng),
        }
    }

    /// The next learned poll after `elapsed`, at least `min_gap` later.
    fn learned_poll(
        &self,
        elapsed: Duration,
        min_gap: Duration,
        durations: Option<&mut Durations>,
    ) -> Option<Duration> {
        self.learned?;
        let key = self.baseline_key();
        let plan_gap = self.shortest_delay() / 2;
        durations?.next_poll(elapsed, min_gap, (key, plan_gap, &|horizon| self.baseline_poll_times(horizon)))
    }

    /// The shortest delay the policy plans (its first fixed or exponential one).
    pub(crate) fn shortest_delay(&self) -> Duration {
        self.delays.first().map_or(self.initial_delay, |d| (*d).min(self.initial_delay)).saturating_add(self.offset)
    }

    /// The policy's own poll times up to `horizon` seconds, as drawn from
    /// its jitter ([`BASELINE_DRAWS`] schedules, from a fixed seed so a plan
    /// is the same on every run; one without jitter): the baseline whose lag
    /// a learned schedule must not exceed.
    fn baseline_poll_times(&self, horizon: f64) -> Vec<Vec<f64>> {
        let draws = if matches!(self.jitter, Jitter::None) { 1 } else { BASELINE_DRAWS };
        let mut rng = fastrand::Rng::with_seed(BASELINE_SEED);
        (0..draws)
            .map(|_| {
                let mut at = self.first_poll.as_secs_f64();
                let mut times = vec![at];
                let mut n: u32 = 1;
                while at < horizon && times.len() < Policy::MAX_SCHEDULE_LEN {
                    at += self.delay(n, &mut rng).as_secs_f64().max(1e-3);
                    times.push(at);
                    n = n.saturating_add(1);
                }
                times
            })
            .collect()
    }

    /// Tells one baseline from another (a learned plan is kept per baseline).
    fn baseline_key(&self) -> u64 {
        use std::hash::{Hash as _, Hasher as _};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        (self.first_poll, &self.delays, self.initial_delay, self.factor.to_bits(), self.max_delay, self.offset)
            .hash(&mut hasher);
        std::mem::discriminant(&self.jitter).hash(&mut hasher);
        hasher.finish()
    }

    /// The instants of the polls, from the start of the wait, that this
    /// policy plans with `durations` for a task that never ends before
    /// `deadline` (as [`Policy::poll_times`]; a dry run of a learned schedule).
    pub fn learned_poll_times(&self, deadline: Duration, durations: &mut Durations) -> Vec<Duration> {
        let mut rng = self.rng();
        let mut out = Vec::new();
        let Some(first) = first_poll_at(self, self.first_delay(Some(durations)), Duration::ZERO, deadline) else {
            return out;
        };
        out.push(first);
        let mut at = first;
        let mut n: u32 = 1;
        while out.len() < Policy::MAX_SCHEDULE_LEN {
            let wanted = self.next_delay(n, at, Some(durations), &mut rng);
            let Some(next) = place(self, at, at, wanted, Duration::ZERO, deadline) else { break };
            out.push(next);
            at = next;
            n = n.saturating_add(1);
        }
        out
    }

    /// The named parity preset (a spec's `poll.presets`), looked up across
    /// all providers; `learned` is [`Policy::learned`].
    pub fn preset(name: &str) -> Result<Self> {
        if name == "learned" {
            return Ok(Self::learned());
        }
        crate::spec::providers()
            .iter()
            .find_map(|p| p.presets.iter().find(|(n, _)| *n == name))
            .ok_or_else(|| {
                let known: Vec<&str> = crate::spec::providers()
                    .iter()
                    .flat_map(|p| p.presets.iter().map(|(n, _)| *n))
                    .chain(["learned"])
                    .collect();
                Error::InvalidPolicy(crate::error::InvalidPolicy {
                    message: format!("no preset named `{name}` (known: {})", known.join(", ")),
                })
            })
            .and_then(|(n, spec)| Self::from_spec(*n, spec))
    }

    /// The name shown in traces (`custom`, `default`, a preset name, `<provider>:polite`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Delay before the first poll.
    pub fn first_poll(&self) -> Duration {
        self.first_poll
    }

    /// Fixed delays used before the exponential part.
    pub fn delays(&self) -> &[Duration] {
        &self.delays
    }

    /// First exponential delay.
    pub fn initial_delay(&self) -> Duration {
        self.initial_delay
    }

    /// Growth factor of the exponential part.
    pub fn factor(&self) -> f64 {
        self.factor
    }

    /// Cap on the exponential part (before the offset).
    pub fn max_delay(&self) -> Duration {
        self.max_delay
    }

    /// The jitter.
    pub fn jitter(&self) -> Jitter {
        self.jitter
    }

    /// Constant added after jitter and cap.
    pub fn offset(&self) -> Duration {
        self.offset
    }

    /// Time kept for the final poll's request before the deadline.
    pub fn final_poll_reserve(&self) -> Duration {
        self.reserve
    }

    /// The deadline the policy's source suggests (e.g. the official helper's), if any.
    pub fn suggested_deadline(&self) -> Option<Duration> {
        self.suggested_deadline
    }

    /// The RNG seed, when the jitter is reproducible.
    pub fn seed(&self) -> Option<u64> {
        self.seed
    }

    /// The delay after each poll (the 1st, 2nd, …), without the deadline's
    /// clipping: jitter is drawn from the policy's seed (random without one),
    /// as one wait draws it. Endless; take what you need.
    ///
    /// ```
    /// # use std::time::Duration;
    /// let policy = taskpoll::Policy::builder().initial_delay(Duration::from_secs(1)).factor(2.0).build()?;
    /// let first: Vec<Duration> = policy.backoff().take(3).collect();
    /// assert_eq!(first, [1, 2, 4].map(Duration::from_secs));
    /// # Ok::<(), taskpoll::Error>(())
    /// ```
    pub fn backoff(&self) -> impl Iterator<Item = Duration> + '_ {
        let mut rng = self.rng();
        (1..=u32::MAX).map(move |n| self.delay(n, &mut rng))
    }

    /// A fresh RNG for one wait: seeded when the policy has a seed.
    pub(crate) fn rng(&self) -> fastrand::Rng {
        match self.seed {
            Some(seed) => fastrand::Rng::with_seed(seed),
            None => fastrand::Rng::new(),
        }
    }

    /// The delay after poll `n` (1-based), drawing jitter from `rng` (jittered
    /// delays are whole milliseconds).
    pub(crate) fn delay(&self, n: u32, rng: &mut fastrand::Rng) -> Duration {
        let index = usize::try_from(n.saturating_sub(1)).unwrap_or(usize::MAX);
        if let Some(fixed) = self.delays.get(index) {
            return *fixed;
        }
        let k = i32::try_from(index - self.delays.len()).unwrap_or(i32::MAX);
        let max = self.max_delay.as_nanos() as f64;
        let base = (self.initial_delay.as_nanos() as f64 * self.factor.powi(k)).min(max);
        // A random draw is rounded to whole milliseconds: finer jitter is
        // meaningless, and tokio's timer ticks in milliseconds.
        let jittered = match self.jitter {
            Jitter::Full => (rng.f64() * base / 1e6).round() * 1e6,
            Jitter::Equal => ((base / 2.0 + rng.f64() * base / 2.0) / 1e6).round() * 1e6,
            _ => base.round(),
        };
        // At most `max_delay`, which fits in u64 nanoseconds for any validated policy.
        let nanos = jittered.min(max).max(0.0);
        self.offset.saturating_add(Duration::from_nanos(nanos as u64))
    }

    /// The planned delays of a wait bounded by `deadline` in which every poll
    /// answers at once and never finishes: the first entry is the delay before
    /// the first poll, each next one the delay after a poll, with the deadline
    /// clipping applied. Uses the policy's seed (random jitter without one).
    /// At most [`Policy::MAX_SCHEDULE_LEN`] entries.
    pub fn schedule(&self, deadline: Duration) -> Vec<Duration> {
        let mut rng = self.rng();
        let mut out = Vec::new();
        let Some(first) = first_poll_at(self, self.first_poll, Duration::ZERO, deadline) else { return out };
        out.push(first);
        let mut at = first;
        let mut n: u32 = 1;
        while out.len() < Policy::MAX_SCHEDULE_LEN {
            let wanted = self.delay(n, &mut rng);
            let Some(next) = place(self, at, at, wanted, Duration::ZERO, deadline) else { break };
            out.push(next - at);
            at = next;
            n = n.saturating_add(1);
        }
        out
    }

    /// The instants of the polls of [`Policy::schedule`], from the start of the wait.
    pub fn poll_times(&self, deadline: Duration) -> Vec<Duration> {
        let mut at = Duration::ZERO;
        self.schedule(deadline)
            .into_iter()
            .map(|d| {
                at += d;
                at
            })
            .collect()
    }

    fn validate(&self) -> Result<()> {
        let invalid = |message: String| {
            Err(Error::InvalidPolicy(crate::error::InvalidPolicy { message: format!("{}: {message}", self.name) }))
        };
        if !self.factor.is_finite() || self.factor < 1.0 {
            return invalid(format!("factor must be a finite number >= 1 (got {})", self.factor));
        }
        if let Some(learned) = self.learned
            && !(learned.target > 0.0 && learned.target < 1.0)
        {
            return invalid(format!("the learned chance must be between 0 and 1, exclusive (got {})", learned.target));
        }
        if self.initial_delay.is_zero() && self.offset.is_zero() {
            return invalid("initial delay and offset are both zero (polls would not be spaced)".into());
        }
        if self.max_delay < self.initial_delay {
            return invalid(format!(
                "max delay ({:?}) is shorter than the initial delay ({:?})",
                self.max_delay, self.initial_delay
            ));
        }
        if self.max_delay > MAX_DELAY {
            return invalid(format!("max delay ({:?}) exceeds {:?}", self.max_delay, MAX_DELAY));
        }
        if let Some(bad) = self.delays.iter().find(|d| d.is_zero() || **d > MAX_DELAY) {
            return invalid(format!("fixed delays must be positive and at most {MAX_DELAY:?} (got {bad:?})"));
        }
        if self.first_poll > MAX_DELAY || self.offset > MAX_DELAY || self.reserve > MAX_DELAY {
            return invalid(format!("first poll, offset and final-poll reserve must be at most {MAX_DELAY:?}"));
        }
        if self.name.is_empty() {
            return invalid("the name is empty".into());
        }
        Ok(())
    }
}

/// The longest single delay a policy may ask for (one week).
const MAX_DELAY: Duration = Duration::from_secs(7 * 24 * 3600);

/// Builds a [`Policy`]; [`build`](PolicyBuilder::build) validates it.
///
/// ```
/// use std::time::Duration;
/// use taskpoll::Policy;
/// use taskpoll::spec::Jitter;
/// let policy = Policy::builder()
///     .initial_delay(Duration::from_millis(500))
///     .factor(2.0)
///     .max_delay(Duration::from_secs(8))
///     .jitter(Jitter::Equal)
///     .seed(42)
///     .build()?;
/// assert_eq!(policy.schedule(Duration::from_secs(30)), policy.schedule(Duration::from_secs(30)));
/// assert!(Policy::builder().factor(0.5).build().is_err());
/// # Ok::<(), taskpoll::Error>(())
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct PolicyBuilder {
    policy: Policy,
}

impl PolicyBuilder {
    /// The name shown in traces.
    pub fn name(mut self, name: impl Into<Cow<'static, str>>) -> Self {
        self.policy.name = name.into();
        self
    }

    /// Delay before the first poll (default: none).
    pub fn first_poll(mut self, delay: Duration) -> Self {
        self.policy.first_poll = delay;
        self
    }

    /// Fixed delays used before the exponential part (default: none).
    pub fn delays(mut self, delays: impl IntoIterator<Item = Duration>) -> Self {
        self.policy.delays = delays.into_iter().collect();
        self
    }

    /// First exponential delay (default 1 s).
    pub fn initial_delay(mut self, delay: Duration) -> Self {
        self.policy.initial_delay = delay;
        self
    }

    /// Growth factor, at least 1 (default 1.5).
    pub fn factor(mut self, factor: f64) -> Self {
        self.policy.factor = factor;
        self
    }

    /// Cap on the exponential part, applied before and after jitter (default 15 s).
    pub fn max_delay(mut self, delay: Duration) -> Self {
        self.policy.max_delay = delay;
        self
    }

    /// Jitter (default none: a single wait has nobody to de-synchronise from).
    pub fn jitter(mut self, jitter: Jitter) -> Self {
        self.policy.jitter = jitter;
        self
    }

    /// Constant added after jitter and cap (default none).
    pub fn offset(mut self, offset: Duration) -> Self {
        self.policy.offset = offset;
        self
    }

    /// Time kept for the final poll's request: when the next poll would come
    /// later than `deadline − reserve`, it is moved there (default
    /// [`Policy::DEFAULT_FINAL_POLL_RESERVE`]). Zero means the last sleep runs to the
    /// deadline and no poll is made there, like the FactPulse helper.
    pub fn final_poll_reserve(mut self, reserve: Duration) -> Self {
        self.policy.reserve = reserve;
        self
    }

    /// The deadline this policy is meant for (informational).
    pub fn suggested_deadline(mut self, deadline: Option<Duration>) -> Self {
        self.policy.suggested_deadline = deadline;
        self
    }

    /// Seeds the jitter RNG: every wait with this policy draws the same delays.
    pub fn seed(mut self, seed: u64) -> Self {
        self.policy.seed = Some(seed);
        self
    }

    /// Plans from the learned durations of the provider's tasks (see
    /// [`Policy::learned`]), aiming each poll at this chance (between 0 and 1,
    /// exclusive) that the task ended since the previous one; this policy's
    /// own delays apply while there is too little history, and bound the gaps.
    pub fn learned(mut self, chance: f64) -> Self {
        self.policy.learned = Some(Learned { target: chance, polite_fallback: false });
        self
    }

    /// Random jitter (the default).
    pub fn unseeded(mut self) -> Self {
        self.policy.seed = None;
        self
    }

    /// Checks the numbers: factor finite and ≥ 1, spaced polls, `max_delay ≥
    /// initial_delay`, positive fixed delays, nothing longer than a week.
    pub fn build(self) -> Result<Policy> {
        self.policy.validate()?;
        Ok(self.policy)
    }
}

/// Parity presets: thin lookups of the spec presets of the same name.
impl Policy {
    /// `factpulse_helper`: the official FactPulse helper's cadence (first poll
    /// at once, then 1 s ×1.5 up to 10 s; suggested deadline 120 s).
    pub fn factpulse_helper() -> Result<Self> {
        Self::preset("factpulse_helper")
    }

    /// `deepomatic_client`: the official Deepomatic client's `Task.wait`
    /// cadence (0.05 s, then 0.1 s + U(0, min(1, 0.05·2^(n−1))); suggested deadline 60 s).
    pub fn deepomatic_client() -> Result<Self> {
        Self::preset("deepomatic_client")
    }
}

/// When the first poll is due, from the start `at` (offsets from the wait's
/// start): after the policy's first delay, clipped to the final-poll instant;
/// `None` when the deadline has passed.
pub(crate) fn first_poll_at(policy: &Policy, first: Duration, at: Duration, deadline: Duration) -> Option<Duration> {
    if at >= deadline {
        return None;
    }
    let horizon = deadline.saturating_sub(policy.reserve).max(at);
    Some(at.saturating_add(first).min(horizon))
}

/// When the next poll is due: `wanted` after `from` (when the last poll was
/// due), at least `floor` (a server's hint) after the answer at `after`, and
/// never before that answer (all offsets from the wait's start); `None` when
/// no poll fits before the deadline.
pub(crate) fn place(
    policy: &Policy,
    from: Duration,
    after: Duration,
    wanted: Duration,
    floor: Duration,
    deadline: Duration,
) -> Option<Duration> {
    let horizon = deadline.saturating_sub(policy.reserve);
    let planned = from.saturating_add(wanted).max(after.saturating_add(floor));
    let at = if planned <= horizon {
        planned
    } else if after < horizon {
        horizon.max(after.saturating_add(floor))
    } else {
        return None;
    };
    (at < deadline).then_some(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    // The jitter formulas, replayed with the policy's own RNG (not public: it is fastrand's).
    #[test]
    fn deepomatic_client_is_50ms_then_100ms_plus_full_jitter_on_a_doubling_cap() {
        let policy = Policy::deepomatic_client().expect("preset").to_builder().seed(7).build().expect("seeded");
        assert_eq!(policy.suggested_deadline(), Some(secs(60.0)));
        // Replay the formula with the same RNG: 0.1 + U(0, min(1, 0.05·2^(n−1))) for n ≥ 2.
        let mut rng = fastrand::Rng::with_seed(7);
        let mut policy_rng = policy.rng();
        assert_eq!(policy.delay(1, &mut policy_rng), Duration::from_millis(50));
        for n in 2..=12u32 {
            let cap = (0.05 * 2f64.powi(n as i32 - 1)).min(1.0);
            let expected = 0.1 + rng.f64() * cap;
            let got = policy.delay(n, &mut policy_rng).as_secs_f64();
            assert!((got - expected).abs() <= 0.0005, "n={n}: {got} vs {expected} (whole milliseconds)");
        }
        // Bounds over many unseeded draws, as in the official client's measurements.
        let policy = Policy::deepomatic_client().expect("preset");
        let mut rng = fastrand::Rng::new();
        for _ in 0..2000 {
            for n in 2..=8u32 {
                let d = policy.delay(n, &mut rng).as_secs_f64();
                let cap = (0.05 * 2f64.powi(n as i32 - 1)).min(1.0);
                assert!((0.1..=0.1 + cap + 1e-9).contains(&d), "n={n}: {d}");
            }
        }
    }

    #[test]
    fn seeded_schedules_repeat_and_jitter_stays_within_its_bounds() {
        let base = Policy::builder().initial_delay(secs(1.0)).factor(2.0).max_delay(secs(8.0));
        let full = base.clone().jitter(Jitter::Full).seed(3).build().expect("policy");
        assert_eq!(full.schedule(secs(600.0)), full.schedule(secs(600.0)));
        let other = full.to_builder().seed(4).build().expect("policy");
        assert_ne!(full.schedule(secs(600.0)), other.schedule(secs(600.0)));

        let equal = base.clone().jitter(Jitter::Equal).offset(secs(0.5)).build().expect("policy");
        let mut rng = fastrand::Rng::with_seed(1);
        for _ in 0..500 {
            for n in 1..=10u32 {
                let d = 2f64.powi(n as i32 - 1).min(8.0);
                let full_d = full.delay(n, &mut rng).as_secs_f64();
                assert!((0.0..=d).contains(&full_d), "full n={n}: {full_d}");
                let equal_d = equal.delay(n, &mut rng).as_secs_f64() - 0.5;
                assert!((d / 2.0..=d).contains(&equal_d), "equal n={n}: {equal_d}");
            }
        }
        // Jitter is applied before the (final) cap: never more than max + offset.
        assert!(equal.schedule(secs(3600.0)).iter().all(|d| *d <= secs(8.5)));
    }

    fn reserve(r: u64) -> Policy {
        Policy { reserve: ms(r), ..Policy::default() }
    }

    #[test]
    fn place_keeps_planned_polls_and_clips_the_last_one() {
        let p = reserve(250);
        // Planned well before the deadline: kept.
        assert_eq!(place(&p, ms(1000), ms(1000), ms(1500), Duration::ZERO, ms(10_000)), Some(ms(2500)));
        // Planned past deadline − reserve: moved there.
        assert_eq!(place(&p, ms(8000), ms(8000), ms(5000), Duration::ZERO, ms(10_000)), Some(ms(9750)));
        // Already inside the reserve window: no poll left.
        assert_eq!(place(&p, ms(9750), ms(9750), ms(1000), Duration::ZERO, ms(10_000)), None);
        // A server floor is never clipped below.
        assert_eq!(place(&p, ms(8000), ms(8000), ms(100), ms(1900), ms(10_000)), Some(ms(9900)));
        // Without a reserve nothing is sent on the deadline itself.
        assert_eq!(place(&reserve(0), ms(8000), ms(8000), ms(2000), Duration::ZERO, ms(10_000)), None);
        assert_eq!(place(&reserve(0), ms(8000), ms(8000), ms(5000), Duration::ZERO, ms(10_000)), None);
    }

    #[test]
    fn the_next_poll_counts_from_when_the_last_was_due_not_from_its_answer() {
        let p = reserve(250);
        // Due at 2 s, answered at 2.3 s: the next, 1 s later, is due at 3 s.
        assert_eq!(place(&p, ms(2000), ms(2300), ms(1000), Duration::ZERO, ms(10_000)), Some(ms(3000)));
        // An answer slower than the interval: polled again at once, never before the answer.
        assert_eq!(place(&p, ms(2000), ms(3400), ms(1000), Duration::ZERO, ms(10_000)), Some(ms(3400)));
        // A server floor counts from the answer.
        assert_eq!(place(&p, ms(2000), ms(2300), ms(1000), ms(1000), ms(10_000)), Some(ms(3300)));
    }

    #[test]
    fn the_first_poll_is_clipped_but_never_skipped_while_time_remains() {
        let p = Policy { first_poll: ms(5000), ..reserve(250) };
        assert_eq!(first_poll_at(&p, p.first_poll, Duration::ZERO, ms(3000)), Some(ms(2750)));
        assert_eq!(first_poll_at(&p, p.first_poll, Duration::ZERO, ms(100)), Some(Duration::ZERO));
        assert_eq!(first_poll_at(&p, p.first_poll, Duration::ZERO, Duration::ZERO), None);
    }

    #[test]
    fn huge_exponents_saturate_at_the_cap() {
        let p = Policy::default();
        let mut rng = fastrand::Rng::with_seed(1);
        assert_eq!(p.delay(u32::MAX, &mut rng), p.max_delay());
        assert_eq!(p.delay(0, &mut rng), p.initial_delay(), "poll 0 is treated as poll 1");
    }
}
