//! The poll step: one wait's state machine, with no I/O and no sleeping.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::clock::Clock;
use crate::error::{DeadlineExceeded, RetryAfterPastDeadline, StillPending, TaskCancelled, TaskFailed, UnknownStatus};
use crate::observe::Class;
use crate::policy::{self, Durations, Policy};
use crate::spec::ProviderSpec;
use crate::{Error, Phase, Result, Task, TaskRef};

use super::{PollError, PollEvent, UnknownStatusPolicy, WaitOptions, WaitState};

/// The longest deadline a wait takes (longer ones are shortened to it).
const MAX_DEADLINE: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// What a wait does next, as decided by [`Poller`].
#[derive(Debug)]
#[non_exhaustive]
pub(crate) enum Decision {
    /// Sleep until `at`, then poll.
    Poll {
        /// When to poll (monotonic, from the wait's clock).
        at: Instant,
        /// The delay from the last answer (or from the start) to `at`.
        delay: Duration,
    },
    /// The task succeeded: the wait returns it.
    Done(Task),
    /// The wait ends with this error (task failed or cancelled, permanent
    /// error, unknown status, pending-forever guard, `Retry-After` past the deadline).
    Fail(Error),
    /// No poll fits before the deadline: sleep until `at` (the deadline), then
    /// end with [`Poller::expire`].
    Expire {
        /// The deadline.
        at: Instant,
    },
}

/// The poll step of one wait, the part of the engine's scheduler that is
/// per task: it turns each observation into a decision ([`Decision`]) and,
/// when someone watches, a [`PollEvent`], and keeps the [`WaitState`].
///
/// It never sleeps and never reads the clock by itself: the scheduler passes
/// the instants, so one loop drives many pollers.
#[derive(Debug)]
pub(crate) struct Poller {
    /// Shared by the waits of one options value (a waiter may hold thousands).
    policy: Arc<Policy>,
    unknown: UnknownStatusPolicy,
    pending_budget: Option<Duration>,
    retry_after_ceiling: Duration,
    /// The engine reads the time from its scheduler's clock; the tests drive a poller on its own.
    #[cfg(test)]
    clock: Arc<dyn Clock>,
    rng: fastrand::Rng,
    /// Set by the scheduler for an unseeded policy: each jittered delay is
    /// drawn from this salt and the poll's number instead of from `rng`.
    shared_jitter: Option<u64>,
    /// The monotonic instant at which the elapsed time was `base`.
    origin: Instant,
    /// Elapsed time at `origin` (non-zero when resumed).
    base: Duration,
    /// The deadline, as elapsed time since the wait's start.
    deadline: Duration,
    /// When the first poll is due, as elapsed time.
    first: Option<Duration>,
    /// When the poll now in flight (or next) was due, as elapsed time: the
    /// next poll counts from it, so a round does not drift by its own length.
    due: Option<Duration>,
    /// When the last poll was sent, as elapsed time.
    sent: Duration,
    /// When the last poll that found the task pending was sent (the start
    /// before any): the task ended between it and the poll that saw it ended.
    pending_seen: Duration,
    /// How long the provider's tasks take (the engine's estimate, shared by
    /// its waits): a learned policy plans from it, the state's ETA comes from
    /// it, and this wait's task adds to it when it ends.
    durations: Option<Arc<Mutex<Durations>>>,
    /// Which estimate the engine gives this wait (see [`WaitOptions::duration_key`]).
    duration_key: Option<Arc<str>>,
    /// What this wait added to the estimate when its task ended: it ended
    /// after the first instant and by the second (elapsed times).
    learned: Option<(Duration, Duration)>,
    queued_since: Option<Duration>,
    unknown_since: Option<Duration>,
    /// The last in-progress observation (`None` once forgotten, see [`Poller::forget_last_task`]).
    last_task: Option<Box<Task>>,
    /// The HTTP status of the last observation, to describe it once forgotten.
    last_http_status: u16,
    last_error: Option<Box<Error>>,
    state: WaitState,
    /// Planned delays are multiplied by this (a provider's webhooks arriving slow polling down).
    delay_factor: f64,
}

impl Poller {
    /// A new wait on `task_ref`, starting now (by the options' clock).
    pub(crate) fn new(task_ref: TaskRef, options: &WaitOptions) -> Result<Self> {
        let spec = task_ref.spec();
        let policy = resolve_policy(spec, options)?;
        let clock = clock_of(options);
        let origin = clock.now();
        let started_at = clock.wall();
        let deadline = options.deadline.min(MAX_DEADLINE);
        let started_at_ms = unix_ms(started_at);
        let state = WaitState::new(
            task_ref.clone(),
            policy.name(),
            started_at_ms,
            started_at_ms.saturating_add(millis(deadline)),
        );
        let first = policy::first_poll_at(&policy, policy.first_poll(), Duration::ZERO, deadline);
        Ok(Self::assemble(spec, policy, options, origin, Duration::ZERO, deadline, first, state))
    }

    /// Continues a wait from its saved state with a fresh deadline: the
    /// options' deadline, from now. The saved deadline is history; the
    /// attempts, the queued time, the unknown-status count and the next poll
    /// the schedule (or a server's `Retry-After`) planned carry on. Guards and
    /// clock come from `options`, and so does the policy when it sets one
    /// (otherwise the saved preset by name, or the provider's polite one).
    pub(crate) fn resume(state: WaitState, options: &WaitOptions) -> Result<Self> {
        let spec = state.task_ref.spec();
        // Without a policy in the options, the saved one by name (a preset or a
        // provider's polite policy); a custom policy must be given again.
        let policy = match &options.policy {
            None => match Policy::preset(&state.policy) {
                Ok(policy) => Arc::new(policy).for_provider(spec)?,
                Err(_) => resolve_policy(spec, options)?,
            },
            Some(_) => resolve_policy(spec, options)?,
        };
        let clock = clock_of(options);
        let origin = clock.now();
        let base = Duration::from_millis(unix_ms(clock.wall()).saturating_sub(state.started_at_ms));
        // Re-attaching, as in google-cloud-rust and Azure: the continued wait gets its own deadline.
        let deadline = if options.keep_saved_deadline {
            Duration::from_millis(state.deadline_at_ms.saturating_sub(state.started_at_ms))
        } else {
            base.saturating_add(options.deadline.min(MAX_DEADLINE))
        };
        // The saved next poll, or now if it is overdue; clipped like any other
        // poll; none if it is due at or after the deadline (the wait ends at once).
        let due = state.next_poll_ms.map_or(base, Duration::from_millis).max(base);
        let horizon = deadline.saturating_sub(policy.final_poll_reserve()).max(base);
        let first = (due < deadline).then(|| due.min(horizon));
        let mut state = state;
        state.policy = policy.name().to_string();
        state.deadline_at_ms = state.started_at_ms.saturating_add(millis(deadline));
        let mut poller = Self::assemble(spec, policy, options, origin, base, deadline, first, state);
        if let Some(last_poll) = poller.state.last_poll_ms.map(Duration::from_millis) {
            if poller.state.last_phase == Some(Phase::Queued) {
                poller.queued_since = Some(last_poll.saturating_sub(Duration::from_millis(poller.state.queued_ms)));
            }
            if poller.state.unknown_count > 0 {
                poller.unknown_since = Some(last_poll.saturating_sub(Duration::from_millis(poller.state.unknown_ms)));
            }
        }
        Ok(poller)
    }

    #[allow(clippy::too_many_arguments)]
    fn assemble(
        spec: &ProviderSpec,
        policy: Arc<Policy>,
        options: &WaitOptions,
        origin: Instant,
        base: Duration,
        deadline: Duration,
        first: Option<Duration>,
        state: WaitState,
    ) -> Self {
        let pending_budget = match options.pending_budget {
            Some(choice) => choice,
            None => spec.default_pending_budget(),
        };
        Self {
            rng: policy.rng(),
            shared_jitter: None,
            policy,
            unknown: options.unknown_status,
            pending_budget,
            retry_after_ceiling: options.retry_after_ceiling,
            #[cfg(test)]
            clock: clock_of(options),
            origin,
            base,
            deadline,
            first,
            due: first,
            sent: base,
            pending_seen: base,
            learned: None,
            durations: None,
            duration_key: options.duration_key.clone(),
            queued_since: None,
            unknown_since: None,
            last_task: None,
            last_http_status: 0,
            last_error: None,
            state,
            delay_factor: 1.0,
        }
    }

    /// Shares the engine's estimate of how long tasks take (see [`Poller::durations`]).
    pub(crate) fn attach(&mut self, durations: Arc<Mutex<Durations>>) {
        self.durations = Some(durations);
    }

    /// The key of the estimate this wait reads and feeds, if its options give one.
    pub(crate) fn duration_key(&self) -> Option<&Arc<str>> {
        self.duration_key.as_ref()
    }

    /// Adds how long the task took to the estimate: it ended after `after`
    /// and by `by` (elapsed times).
    fn record_duration(&mut self, after: Duration, by: Duration) {
        if let Some(durations) = &self.durations {
            lock(durations).record_between(after, by);
            self.learned = Some((after, by));
        }
    }

    /// What this wait added to the estimate when its task ended (see
    /// [`Durations::record_between`]), if it did.
    pub(crate) fn learned(&self) -> Option<(Duration, Duration)> {
        self.learned
    }

    /// The task being waited on.
    pub(crate) fn task_ref(&self) -> &TaskRef {
        &self.state.task_ref
    }

    /// The task, once the wait is over.
    pub(crate) fn into_task_ref(self) -> TaskRef {
        self.state.task_ref
    }

    /// The policy in force.
    pub(crate) fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The pending-forever budget in force (`None`: off).
    #[cfg(test)]
    pub(crate) fn pending_budget(&self) -> Option<Duration> {
        self.pending_budget
    }

    /// Drops the last in-progress observation, keeping only what the
    /// [`WaitState`] says of it (phase, status) and its HTTP status: a
    /// many-task waiter keeps thousands of waits between polls.
    pub(crate) fn forget_last_task(&mut self) {
        self.last_task = None;
    }

    /// The last observation as the state describes it, once the task itself was forgotten.
    fn described_last_task(&self) -> Option<Box<Task>> {
        let phase = self.state.last_phase?;
        Some(Box::new(self.bodiless_task(phase, self.state.last_status.as_deref(), self.last_http_status)))
    }

    /// An observation of this wait's task without a body.
    fn bodiless_task(&self, phase: Phase, status: Option<&str>, http_status: u16) -> Task {
        let status = status.map(|status| status.to_string().into());
        Task::new(self.state.task_ref.clone(), phase, status, None, None, http_status, Value::Null)
    }

    /// The most a server's `Retry-After` may push a poll back.
    pub(crate) fn retry_after_ceiling(&self) -> Duration {
        self.retry_after_ceiling
    }

    /// The clock of the wait (from its options).
    #[cfg(test)]
    pub(crate) fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// Where the wait stands (serialisable, to resume it later).
    pub(crate) fn state(&self) -> &WaitState {
        &self.state
    }

    /// The deadline, on the clock's monotonic time.
    pub(crate) fn deadline(&self) -> Instant {
        self.instant(self.deadline)
    }

    /// Time elapsed since the wait started (the original start when resumed).
    pub(crate) fn elapsed(&self, now: Instant) -> Duration {
        self.base.saturating_add(now.saturating_duration_since(self.origin))
    }

    /// Time left before the deadline: the budget for a request sent at `now`.
    pub(crate) fn remaining(&self, now: Instant) -> Duration {
        self.deadline.saturating_sub(self.elapsed(now))
    }

    /// The first decision: when to make the first poll (or, if no time is
    /// left, to expire at once).
    pub(crate) fn start(&mut self) -> Decision {
        let fresh = self.state.attempts == 0 && self.base.is_zero();
        if fresh && self.policy.is_learned() {
            let first = self.policy.first_delay(self.durations.as_ref().map(lock).as_deref_mut());
            self.first = policy::first_poll_at(&self.policy, first, Duration::ZERO, self.deadline);
            self.due = self.first;
        }
        match self.first {
            Some(at) => {
                self.state.next_poll_ms = Some(millis(at));
                Decision::Poll { at: self.instant(at), delay: at.saturating_sub(self.base) }
            }
            // No poll fits: end now (a fresh wait with a zero deadline, or a
            // resumed one whose time is up or whose next poll is past the deadline).
            None => Decision::Expire { at: self.origin },
        }
    }

    /// Takes one observation: the result of a status read sent at `sent_at`
    /// whose answer arrived at `received_at`. Returns what happened (for
    /// progress streams and traces) and what to do next.
    pub(crate) fn observe(
        &mut self,
        sent_at: Instant,
        received_at: Instant,
        result: Result<Task>,
    ) -> (PollEvent, Decision) {
        let mut event = self.event(self.state.attempts.saturating_add(1), Duration::ZERO);
        let next = self.step(sent_at, received_at, result, Some(&mut event));
        let sent = self.elapsed(sent_at);
        event.elapsed = sent;
        event.took = self.elapsed(received_at).max(sent) - sent;
        event.next_delay = match &next {
            Decision::Poll { delay, .. } => Some(*delay),
            _ => None,
        };
        event.state = self.state.clone();
        tracing::debug!(
            attempt = event.attempt,
            elapsed_ms = millis(event.elapsed),
            took_ms = millis(event.took),
            phase = event.phase.map(Phase::as_str),
            status = event.status.as_deref(),
            changed = event.changed,
            error = event.error.as_ref().map(|e| e.message.as_str()),
            next_delay_ms = event.next_delay.map(millis),
            "poll"
        );
        (event, next)
    }

    /// [`Poller::observe`] without building a [`PollEvent`], for loops nobody
    /// watches (a many-task waiter observes thousands of tasks per second).
    pub(crate) fn observe_quietly(&mut self, sent_at: Instant, received_at: Instant, result: Result<Task>) -> Decision {
        self.step(sent_at, received_at, result, None)
    }

    /// [`Poller::observe_quietly`] of an answer that found the task still
    /// queued or running, given by its phase, status and HTTP status alone: a
    /// many-task waiter reads thousands of batch items a second and keeps no
    /// body between polls, so no [`Task`] is built for them (the last task is
    /// forgotten, as after [`Poller::forget_last_task`]).
    pub(crate) fn observe_in_progress(
        &mut self,
        sent_at: Instant,
        received_at: Instant,
        phase: Phase,
        status: Option<&str>,
        http_status: u16,
    ) -> Decision {
        debug_assert!(matches!(phase, Phase::Queued | Phase::Running), "{phase:?}");
        let sent = self.elapsed(sent_at);
        let received = self.elapsed(received_at).max(sent);
        self.sent = sent;
        self.pending_seen = sent;
        self.state.attempts = self.state.attempts.saturating_add(1);
        self.state.last_poll_ms = Some(millis(sent));
        self.note_observation(phase, status, http_status, sent);
        self.last_task = None;
        self.last_error = None;
        let next = match self.guard(phase, sent, Observed::Bare { phase, status, http_status }) {
            Some(error) => Decision::Fail(error),
            None => self.keep_polling(received, None, None),
        };
        if matches!(next, Decision::Expire { .. }) {
            self.finish_plan(None);
        }
        next
    }

    /// After an in-progress answer that passed the guards: the next poll, or
    /// the end when a `Retry-After` leaves no time for one.
    /// `suggested`: the provider's suggested delay (its spec's `next-poll-header`).
    fn keep_polling(&mut self, received: Duration, hint: Option<Duration>, suggested: Option<Duration>) -> Decision {
        // An in-progress answer's Retry-After paces the next poll like an error's.
        match self.past_deadline(received, hint) {
            Some((hint, remaining)) => Decision::Fail(self.retry_after_error(hint, remaining, None)),
            None => self.plan(received, hint.map(|h| h.min(self.retry_after_ceiling)), suggested),
        }
    }

    fn step(
        &mut self,
        sent_at: Instant,
        received_at: Instant,
        result: Result<Task>,
        mut event: Option<&mut PollEvent>,
    ) -> Decision {
        let sent = self.elapsed(sent_at);
        let received = self.elapsed(received_at).max(sent);
        self.sent = sent;
        self.state.attempts = self.state.attempts.saturating_add(1);
        self.state.last_poll_ms = Some(millis(sent));
        let next = match Class::of(result) {
            Class::Terminal(task) => {
                // It ended between the last poll that saw it pending and this one.
                self.record_duration(self.pending_seen.min(sent), sent);
                self.note(event, &task, sent);
                self.last_error = None;
                self.finish_plan(None);
                match task.phase() {
                    Phase::Succeeded => Decision::Done(task),
                    Phase::Cancelled => Decision::Fail(Error::TaskCancelled(TaskCancelled { task: Box::new(task) })),
                    _ => Decision::Fail(Error::TaskFailed(TaskFailed { task: Box::new(task) })),
                }
            }
            Class::Pending(task) => {
                self.pending_seen = sent;
                self.note(event, &task, sent);
                let hint = task.retry_after();
                let suggested = task.next_poll();
                match self.guard(task.phase(), sent, Observed::Task(&task)) {
                    Some(error) => Decision::Fail(error),
                    None => {
                        self.last_task = Some(Box::new(task));
                        self.keep_polling(received, hint, suggested)
                    }
                }
            }
            Class::Transient(error) => {
                if let Some(event) = event.as_deref_mut() {
                    event.error = Some(PollError::of(&error));
                }
                let hint = error.retry_after();
                match self.past_deadline(received, hint) {
                    Some((hint, remaining)) => {
                        Decision::Fail(self.retry_after_error(hint, remaining, Some(Box::new(error))))
                    }
                    None => {
                        self.last_error = Some(Box::new(error));
                        self.plan(received, hint.map(|h| h.min(self.retry_after_ceiling)), None)
                    }
                }
            }
            Class::Permanent(error) => {
                if let Some(event) = event {
                    event.error = Some(PollError::of(&error));
                }
                self.finish_plan(None);
                Decision::Fail(error)
            }
        };
        if matches!(next, Decision::Done(_) | Decision::Expire { .. }) {
            self.finish_plan(None);
        }
        next
    }

    /// The error that ends a wait at its deadline (elapsed time, polls, the
    /// last observation and error, and the state to re-attach).
    pub(crate) fn expire(&mut self, now: Instant) -> Error {
        self.finish_plan(None);
        Error::DeadlineExceeded(DeadlineExceeded {
            deadline: self.deadline.saturating_sub(self.base),
            elapsed: self.elapsed(now),
            last: self.last_task.take().or_else(|| self.described_last_task()),
            last_error: self.last_error.take(),
            state: Box::new(self.state.clone()),
        })
    }

    /// Records a task observation on the event and the state, updating the
    /// queued and unknown streaks.
    fn note(&mut self, event: Option<&mut PollEvent>, task: &Task, sent: Duration) {
        if let Some(event) = event {
            event.phase = Some(task.phase());
            event.changed = self.state.last_phase != Some(task.phase());
            event.status = task.status().map(str::to_string);
            event.task = Some(task.clone());
        }
        self.note_observation(task.phase(), task.status(), task.http_status(), sent);
    }

    /// Records what an observation said of the task on the state (phase,
    /// status, the queued and unknown streaks) and its HTTP status.
    fn note_observation(&mut self, phase: Phase, status: Option<&str>, http_status: u16, sent: Duration) {
        self.last_http_status = http_status;
        self.state.last_phase = Some(phase);
        if self.state.last_status.as_deref() != status {
            self.state.last_status = status.map(str::to_string);
        }
        if phase == Phase::Queued {
            let since = *self.queued_since.get_or_insert(sent);
            self.state.queued_ms = millis(sent.saturating_sub(since));
        } else {
            self.queued_since = None;
            self.state.queued_ms = 0;
        }
        if phase == Phase::Unknown {
            let since = *self.unknown_since.get_or_insert(sent);
            self.state.unknown_count = self.state.unknown_count.saturating_add(1);
            self.state.unknown_ms = millis(sent.saturating_sub(since));
        } else {
            self.unknown_since = None;
            self.state.unknown_count = 0;
            self.state.unknown_ms = 0;
        }
    }

    /// The unknown-status policy and the pending-forever guard (`observed`:
    /// the task for the error, when one stops the wait).
    fn guard(&mut self, phase: Phase, sent: Duration, observed: Observed<'_>) -> Option<Error> {
        if phase == Phase::Unknown {
            let streak = self.state.unknown_count;
            let for_ = sent.saturating_sub(self.unknown_since.unwrap_or(sent));
            let stop = match self.unknown {
                UnknownStatusPolicy::KeepWaiting => false,
                UnknownStatusPolicy::FailFast => true,
                UnknownStatusPolicy::AtMost(n) => streak > n,
                UnknownStatusPolicy::AtMostFor(limit) => for_ > limit,
            };
            if stop {
                self.finish_plan(None);
                let task = Box::new(self.observed_task(observed));
                return Some(Error::UnknownStatus(UnknownStatus { task, state: Box::new(self.state.clone()) }));
            }
        }
        if phase == Phase::Queued {
            let queued_for = sent.saturating_sub(self.queued_since.unwrap_or(sent));
            if self.pending_budget.is_some_and(|budget| queued_for > budget) {
                self.finish_plan(None);
                return Some(Error::StillPending(StillPending {
                    queued_for,
                    last: Box::new(self.observed_task(observed)),
                    state: Box::new(self.state.clone()),
                }));
            }
        }
        None
    }

    fn observed_task(&self, observed: Observed<'_>) -> Task {
        match observed {
            Observed::Task(task) => task.clone(),
            Observed::Bare { phase, status, http_status } => self.bodiless_task(phase, status, http_status),
        }
    }

    /// Plans the next poll after an answer at `received` (elapsed), with an
    /// optional server floor.
    /// When a `Retry-After` (bounded by the ceiling) leaves no time for
    /// another poll before the deadline: the hint and the time remaining.
    /// Records in the state when the server allows the next poll.
    fn past_deadline(&mut self, received: Duration, hint: Option<Duration>) -> Option<(Duration, Duration)> {
        let hint = hint?;
        let bounded = hint.min(self.retry_after_ceiling);
        let remaining = self.deadline.saturating_sub(received);
        if bounded.is_zero() || bounded < remaining {
            return None;
        }
        self.finish_plan(Some((received.saturating_add(bounded), bounded)));
        Some((hint, remaining))
    }

    fn retry_after_error(&self, hint: Duration, remaining: Duration, source: Option<Box<Error>>) -> Error {
        Error::RetryAfterPastDeadline(RetryAfterPastDeadline {
            retry_after: hint,
            remaining,
            source,
            last: self.last_task.clone().or_else(|| self.described_last_task()),
            state: Box::new(self.state.clone()),
        })
    }

    /// Plans the next poll after an answer at `received` (elapsed), with an
    /// optional server floor (counted from the answer).
    ///
    /// The policy's delay counts from when the poll was due, not from when
    /// its answer came, so polls due together stay together and an interval
    /// does not drift by the read's length; from when it was sent instead
    /// when it went out early (riding along in a batch), and never less than
    /// half the delay after it was sent (a poll the rate budget held back
    /// does not make the next one follow at once).
    /// A provider's `suggested` delay (its spec's `next-poll-header`) wins
    /// over the policy's, kept within the policy's shortest and longest
    /// delays, and counts from the answer that carried it.
    fn plan(&mut self, received: Duration, floor: Option<Duration>, suggested: Option<Duration>) -> Decision {
        let mut durations = self.durations.as_ref().map(lock);
        let mut wanted = match suggested {
            Some(delay) => {
                delay.clamp(self.policy.shortest_delay(), self.policy.max_delay().max(self.policy.shortest_delay()))
            }
            None => {
                let attempts = self.state.attempts;
                let mut shared = self.shared_jitter.map(|salt| fastrand::Rng::with_seed(jitter_seed(salt, attempts)));
                let rng = shared.as_mut().unwrap_or(&mut self.rng);
                self.policy.next_delay(attempts, self.sent, durations.as_deref_mut(), rng)
            }
        };
        if let Some(eta) = durations.as_deref_mut().and_then(|d| d.eta(received)) {
            self.state.eta_p50_ms = Some(millis(eta.p50));
            self.state.eta_p90_ms = Some(millis(eta.p90));
        }
        drop(durations);
        if self.delay_factor > 1.0 {
            wanted = Duration::try_from_secs_f64(wanted.as_secs_f64() * self.delay_factor).unwrap_or(MAX_DEADLINE);
        }
        let due = self.due.map_or(self.sent, |due| due.min(self.sent));
        let from = if suggested.is_some() { received } else { due.max(self.sent.saturating_sub(wanted / 2)) };
        let placed = policy::place(&self.policy, from, received, wanted, floor.unwrap_or_default(), self.deadline);
        self.due = placed;
        self.finish_plan(placed.map(|at| (at, at - received)));
        match placed {
            Some(at) => Decision::Poll { at: self.instant(at), delay: at - received },
            None => Decision::Expire { at: self.deadline() },
        }
    }

    /// Draws the jitter of each delay from `salt` and the poll's number, not
    /// from this wait's own random stream, unless the policy is seeded (the
    /// waits of a seeded policy draw alike already). The scheduler gives all
    /// its waits one salt: waits polled together then plan the same next
    /// poll and stay in one round (one batch read per 100 pending, as a loop
    /// over them draws once per round), while two clients still draw apart.
    pub(crate) fn share_jitter(&mut self, salt: u64) {
        if self.policy.seed().is_none() {
            self.shared_jitter = Some(salt);
        }
    }

    /// Multiplies the delays planned from now on (at least 1): polling slows
    /// down while the provider's webhooks arrive, and still reconciles.
    pub(crate) fn set_delay_factor(&mut self, factor: f64) {
        self.delay_factor = if factor.is_finite() { factor.max(1.0) } else { 1.0 };
    }

    /// An event with nothing observed yet, filled in by the caller.
    fn event(&self, attempt: u32, elapsed: Duration) -> PollEvent {
        PollEvent {
            attempt,
            elapsed,
            took: Duration::ZERO,
            phase: None,
            changed: false,
            status: None,
            task: None,
            error: None,
            next_delay: None,
            state: self.state.clone(),
        }
    }

    /// Takes a finished task from a verified webhook delivery at `at`: the
    /// wait ends with it as it would on a poll that saw it (no poll is counted).
    pub(crate) fn observe_webhook(&mut self, at: Instant, task: Task) -> (PollEvent, Decision) {
        let elapsed = self.elapsed(at);
        self.record_duration(elapsed, elapsed);
        let mut event = self.event(self.state.attempts, elapsed);
        self.note(Some(&mut event), &task, elapsed);
        self.last_error = None;
        self.finish_plan(None);
        event.state = self.state.clone();
        tracing::debug!(elapsed_ms = millis(elapsed), phase = task.phase().as_str(), "webhook ended the wait");
        let decision = match task.phase() {
            Phase::Succeeded => Decision::Done(task),
            Phase::Cancelled => Decision::Fail(Error::TaskCancelled(TaskCancelled { task: Box::new(task) })),
            _ => Decision::Fail(Error::TaskFailed(TaskFailed { task: Box::new(task) })),
        };
        (event, decision)
    }

    fn finish_plan(&mut self, next: Option<(Duration, Duration)>) {
        self.state.next_poll_ms = next.map(|(at, _)| millis(at));
        self.state.next_delay_ms = next.map(|(_, delay)| millis(delay));
    }

    /// The monotonic instant of an elapsed offset.
    fn instant(&self, elapsed: Duration) -> Instant {
        let since_origin = elapsed.saturating_sub(self.base);
        self.origin.checked_add(since_origin).unwrap_or(self.origin)
    }
}

/// The seed of the jitter after poll `attempts` under a shared `salt`
/// (a SplitMix64 step, so neighbouring poll numbers seed unrelated draws).
fn jitter_seed(salt: u64, attempts: u32) -> u64 {
    let mut z = salt.wrapping_add(u64::from(attempts).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// What an observation saw, for an error that stops the wait on it.
#[derive(Clone, Copy)]
enum Observed<'a> {
    Task(&'a Task),
    /// An in-progress batch item, read without its body.
    Bare {
        phase: Phase,
        status: Option<&'a str>,
        http_status: u16,
    },
}

/// The estimate, even if a panic elsewhere poisoned its lock (it holds plain numbers).
fn lock(durations: &Arc<Mutex<Durations>>) -> std::sync::MutexGuard<'_, Durations> {
    durations.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn resolve_policy(spec: &ProviderSpec, options: &WaitOptions) -> Result<Arc<Policy>> {
    match &options.policy {
        Some(policy) => policy.for_provider(spec),
        None => Policy::polite_for(spec).map(Arc::new),
    }
}

/// The options' clock: the one set, else tokio's (the engine sets its lane's).
fn clock_of(options: &WaitOptions) -> Arc<dyn Clock> {
    options.clock.clone().unwrap_or_else(|| Arc::new(crate::TokioClock))
}

pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn unix_ms(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).map(millis).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ManualClock;

    /// An in-progress answer given by its phase, status and HTTP status alone
    /// decides and records what the same answer as a bodiless task does (the
    /// waiter's batch items), through the pending-forever guard and the deadline.
    #[test]
    fn an_in_progress_answer_without_a_task_is_observed_as_the_task() {
        let policy = Policy::builder()
            .first_poll(Duration::ZERO)
            .initial_delay(Duration::from_millis(700))
            .factor(1.0)
            .max_delay(Duration::from_millis(700))
            .build()
            .expect("policy");
        let answers = [
            (Phase::Queued, Some("pending")),
            (Phase::Queued, Some("PENDING")),
            (Phase::Running, Some("running")),
            (Phase::Queued, None),
            (Phase::Queued, Some("pending")),
        ];
        for budget in [None, Some(Duration::from_secs(2))] {
            let clock = Arc::new(ManualClock::new());
            let options = WaitOptions::new(Duration::from_secs(5))
                .policy(policy.clone())
                .pending_budget(budget)
                .clock(clock.clone());
            let task_ref: TaskRef = "deepomatic:42".parse().expect("ref");
            let mut whole = Poller::new(task_ref.clone(), &options).expect("poller");
            let mut bare = Poller::new(task_ref.clone(), &options).expect("poller");
            assert_eq!(format!("{:?}", whole.start()), format!("{:?}", bare.start()));
            let mut ended = false;
            for (phase, status) in answers.iter().cycle().take(20) {
                let sent = clock.now();
                clock.advance(Duration::from_millis(40));
                let received = clock.now();
                let task = Task::new(task_ref.clone(), *phase, status.map(Into::into), None, None, 202, Value::Null);
                let by_task = whole.observe_quietly(sent, received, Ok(task));
                whole.forget_last_task();
                let by_parts = bare.observe_in_progress(sent, received, *phase, *status, 202);
                assert_eq!(format!("{by_task:?}"), format!("{by_parts:?}"));
                assert_eq!(whole.state(), bare.state());
                match by_task {
                    Decision::Poll { at, .. } => clock.advance(at.saturating_duration_since(clock.now())),
                    Decision::Expire { at } => {
                        clock.advance(at.saturating_duration_since(clock.now()));
                        let now = clock.now();
                        assert_eq!(format!("{:?}", whole.expire(now)), format!("{:?}", bare.expire(now)));
                        ended = true;
                        break;
                    }
                    Decision::Fail(error) => {
                        assert!(budget.is_some() && error.is_still_pending(), "{error}");
                        ended = true;
                        break;
                    }
                    Decision::Done(_) => unreachable!("only in-progress answers"),
                }
            }
            assert!(ended, "the wait ended by its guard or its deadline");
        }
    }
}
