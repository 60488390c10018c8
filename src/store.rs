//! Durable waits: a [`WaitStore`] keeps every wait (task, options, deadline,
//! saved schedule) and its outcome, so waits survive a restart and several
//! processes can share them without two polling the same task.
//!
//! - [`SqliteStore`] (feature `store-sqlite`): a file, no server; one service,
//!   or a few processes on one machine.
//! - [`PostgresStore`] (feature `store-postgres`): a fleet. Waits are claimed
//!   with `FOR UPDATE SKIP LOCKED` on a per-provider due-time index, and a
//!   provider's rate budget is one token row shared by every process.
//!
//! Both create their tables on [`SqliteStore::open`] / [`PostgresStore::connect`]
//! (migrations shipped in the crate, recorded in `taskpoll_migrations`).
//! [`StoredWaiter`] runs the many-task waiter on a store: it claims due waits
//! with a lease (one per worker, renewed while it runs: a renewal is one row
//! whatever the number of waits; a crashed worker's waits are claimed by
//! another once its lease has run out), saves each wait's state
//! after its polls, and writes each outcome before reporting it.
//!
//! ```no_run
//! # #[cfg(feature = "store-sqlite")]
//! # async fn run() -> taskpoll::Result<()> {
//! use std::sync::Arc;
//! use std::time::Duration;
//! use taskpoll::store::{SqliteStore, StoredWaiter, WaitStore as _};
//! use taskpoll::{Client, TaskRef, WaitOptions};
//!
//! let client = Client::from_env()?;
//! let store = Arc::new(SqliteStore::open("waits.db").await?);
//! let mut waiter = StoredWaiter::new(&client, store.clone());
//! // Survives a restart: a waiter started later continues it.
//! waiter.add(TaskRef::new("deepomatic", "269999729")?, &WaitOptions::new(Duration::from_secs(3600))).await?;
//! while let Some(outcome) = waiter.next_outcome().await? {
//!     println!("{} ended: {:?}", outcome.task_ref, outcome.kind);
//!     store.consume(&[outcome.id]).await?;
//! }
//! # Ok(()) }
//! ```
//!
//! Times in a store are wall-clock Unix milliseconds from the waiter's
//! [`Clock`]; processes sharing a store are assumed to have clocks within a
//! small fraction of the lease of each other.

mod durations;
#[cfg(feature = "store-postgres")]
mod postgres;
mod sql;
#[cfg(feature = "store-sqlite")]
mod sqlite;
mod waiter;

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use futures_util::future::BoxFuture;

use crate::spec::RateSpec;
use crate::wait::Poller;
use crate::wait::UnknownStatusPolicy;
use crate::{Clock, Error, Phase, Policy, Result, Task, TaskRef, WaitOptions, WaitState};

#[cfg(feature = "store-postgres")]
pub use postgres::PostgresStore;
#[cfg(feature = "store-sqlite")]
pub use sqlite::SqliteStore;
pub use waiter::{StoreStats, StoredWaiter};

/// A wait's number in its store.
pub type WaitId = i64;

/// Where waits are kept: the operations a [`StoredWaiter`] needs. Times are
/// Unix milliseconds, passed in by the caller (so the logic around them can
/// run in virtual time). Implement it to keep waits in another engine.
pub trait WaitStore: Send + Sync + fmt::Debug {
    /// Adds waits; a task already in the store (waiting or finished) is left
    /// as it is. Returns how many were added.
    fn add<'a>(&'a self, waits: &'a [NewWait]) -> BoxFuture<'a, Result<u64>>;

    /// Claims for `worker` up to `limit` waits of `provider` that nobody
    /// holds (never claimed, released, or held by a worker whose lease ran
    /// out before `now_ms`) and that are due by `due_by_ms`, earliest first.
    /// They are `worker`'s while its lease lives (see [`WaitStore::renew`]).
    fn claim<'a>(&'a self, claim: &'a Claim) -> BoxFuture<'a, Result<Vec<ClaimedWait>>>;

    /// Keeps `worker`'s lease until `lease_until_ms` (a new worker gets one).
    /// False when its lease had already run out at `now_ms`: every wait it
    /// held was handed back (others may have claimed some), so it must stop
    /// polling them all.
    fn renew<'a>(&'a self, worker: &'a str, now_ms: u64, lease_until_ms: u64) -> BoxFuture<'a, Result<bool>>;

    /// Saves the states of waits `worker` holds (a wait it no longer holds is left alone).
    fn save<'a>(&'a self, worker: &'a str, states: &'a [(WaitId, WaitState)]) -> BoxFuture<'a, Result<()>>;

    /// Saves the states and gives the waits back, so another worker can claim them at once.
    fn release<'a>(&'a self, worker: &'a str, states: &'a [(WaitId, WaitState)]) -> BoxFuture<'a, Result<()>>;

    /// Writes the outcomes of waits `worker` holds, ending them; returns the
    /// ids written (a wait it no longer holds is not written).
    fn finish<'a>(&'a self, worker: &'a str, outcomes: &'a [StoredOutcome]) -> BoxFuture<'a, Result<Vec<WaitId>>>;

    /// Up to `limit` outcomes not yet consumed, in the order they were written.
    fn outcomes(&self, limit: u32) -> BoxFuture<'_, Result<Vec<StoredOutcome>>>;

    /// Marks outcomes consumed; returns how many were not already.
    fn consume<'a>(&'a self, ids: &'a [WaitId]) -> BoxFuture<'a, Result<u64>>;

    /// Waits of these providers not yet finished (held or not).
    fn unfinished<'a>(&'a self, providers: &'a [&'a str]) -> BoxFuture<'a, Result<u64>>;

    /// Takes up to `want` requests from `provider`'s budget shared by every
    /// process using the store (a token bucket of `rate`); returns how many it got.
    fn take_tokens<'a>(
        &'a self,
        provider: &'a str,
        rate: RateSpec,
        want: u32,
        now_ms: u64,
    ) -> BoxFuture<'a, Result<u32>>;

    /// Writes a verified webhook delivery (from [`crate::Client::verify_webhook`])
    /// received at `now_ms`, for the worker holding its task's wait to apply
    /// (see [`StoredWaiter`]). Only a finished task's delivery is kept; the
    /// first one of a task wins; a delivery whose wait has finished is not
    /// kept. Kept deliveries expire after `limits.keep_for` (dropped by
    /// [`WaitStore::sweep`]), and at most
    /// `limits.capacity_per_provider` are kept per provider (the oldest is
    /// dropped first); each drop is counted ([`WaitStore::delivery_stats`]).
    /// The default implementation keeps nothing: the store does not take deliveries.
    fn deliver<'a>(
        &'a self,
        task: &'a Task,
        now_ms: u64,
        limits: &'a DeliveryLimits,
    ) -> BoxFuture<'a, Result<DeliveryWrite>> {
        let _ = (task, now_ms, limits);
        Box::pin(async { Err(Error::config("this wait store does not keep webhook deliveries")) })
    }

    /// The deliveries kept for unfinished waits `worker` holds, at most `limit`.
    fn deliveries<'a>(&'a self, worker: &'a str, limit: u32) -> BoxFuture<'a, Result<Vec<Task>>> {
        let _ = (worker, limit);
        Box::pin(async { Ok(Vec::new()) })
    }

    /// Housekeeping, run now and then by every [`StoredWaiter`] and receiver:
    /// drops expired deliveries (counted) and those whose wait has finished,
    /// and forgets workers whose lease ran out before `gone_before_ms` and
    /// that hold no unfinished wait.
    fn sweep<'a>(&'a self, now_ms: u64, limits: &'a DeliveryLimits, gone_before_ms: u64) -> BoxFuture<'a, Result<()>> {
        let _ = (now_ms, limits, gone_before_ms);
        Box::pin(async { Ok(()) })
    }

    /// Deliveries kept and dropped so far, per provider.
    fn delivery_stats(&self) -> BoxFuture<'_, Result<Vec<DeliveryStats>>> {
        Box::pin(async { Ok(Vec::new()) })
    }

    /// Keeps how long tasks took (see [`SeenDuration`]), so that a worker that
    /// starts later plans its learned schedules from them: at most `keep` per
    /// provider and duration key, the newest. The default implementation keeps nothing.
    fn keep_durations<'a>(&'a self, seen: &'a [SeenDuration], keep: u32) -> BoxFuture<'a, Result<()>> {
        let _ = (seen, keep);
        Box::pin(async { Ok(()) })
    }

    /// The durations kept by [`WaitStore::keep_durations`], oldest first.
    fn durations(&self) -> BoxFuture<'_, Result<Vec<SeenDuration>>> {
        Box::pin(async { Ok(Vec::new()) })
    }

    /// A hint that deliveries were written (PostgreSQL: `LISTEN`), to read
    /// them sooner than the next regular read; `None` if the store has none.
    /// Only a hint: a missed one delays a delivery by one read interval.
    fn delivery_hints(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        None
    }
}

/// Bounds on the webhook deliveries a store keeps for tasks ([`WaitStore::deliver`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeliveryLimits {
    /// The most kept per provider (default 10,000); the oldest is dropped
    /// first, each drop counted. Each delivery drops the excess after its
    /// own write, so while several are written at once (concurrent requests,
    /// several receivers) a provider holds up to one more per delivery in
    /// flight, and at most this many once they are written.
    pub capacity_per_provider: u32,
    /// How long one is kept for a wait not yet added (default 1 hour).
    pub keep_for: Duration,
}

impl Default for DeliveryLimits {
    fn default() -> Self {
        Self { capacity_per_provider: 10_000, keep_for: Duration::from_secs(3_600) }
    }
}

impl DeliveryLimits {
    /// At most `capacity_per_provider` per provider, each kept for `keep_for`.
    pub fn new(capacity_per_provider: u32, keep_for: Duration) -> Self {
        Self { capacity_per_provider: capacity_per_provider.max(1), keep_for }
    }
}

/// What [`WaitStore::deliver`] did with a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DeliveryWrite {
    /// Kept: the worker holding the task's wait (or the first to claim it) applies it.
    Written,
    /// A delivery of the task is kept already (a duplicate): the first one stands.
    AlreadyKept,
    /// The task's wait has finished: its outcome is written already.
    WaitFinished,
    /// The task is not finished: nothing to apply, nothing kept.
    NotFinished,
}

/// A provider's webhook deliveries in a store ([`WaitStore::delivery_stats`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeliveryStats {
    /// The provider.
    pub provider: String,
    /// Kept now (not yet applied, or applied and not yet swept).
    pub kept: u64,
    /// Dropped to stay within the capacity, so far.
    pub dropped_over_capacity: u64,
    /// Dropped when they expired, so far.
    pub expired: u64,
}

/// How long one task took, as the wait that saw it end learned it: what a
/// [`StoredWaiter`] keeps in its store ([`WaitStore::keep_durations`]) so that
/// the learned schedules ([`Policy::learned`](crate::Policy::learned)) of the
/// next worker start warm.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SeenDuration {
    /// The provider.
    pub provider: String,
    /// The wait's duration key ([`WaitOptions::duration_key`]), empty for none.
    pub key: String,
    /// The task was still running this long after its wait started (ms).
    pub after_ms: u64,
    /// It was seen ended this long after its wait started (ms).
    pub by_ms: u64,
}

impl SeenDuration {
    /// A task of `provider` (waits with duration key `key`, empty for none)
    /// still running `after_ms` after its wait started and seen ended `by_ms` after.
    pub fn new(provider: impl Into<String>, key: impl Into<String>, after_ms: u64, by_ms: u64) -> Self {
        Self { provider: provider.into(), key: key.into(), after_ms: after_ms.min(by_ms), by_ms }
    }
}

/// A claim for [`WaitStore::claim`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Claim {
    /// The provider whose waits are claimed.
    pub provider: String,
    /// Who claims (unique per process).
    pub worker: String,
    /// The time of the claim; waits of workers whose lease ran out before it are free.
    pub now_ms: u64,
    /// Only waits due by then.
    pub due_by_ms: u64,
    /// At most this many.
    pub limit: u32,
}

impl Claim {
    /// A claim at `now_ms` of waits due by then, at most 100.
    pub fn new(provider: &str, worker: &str, now_ms: u64) -> Self {
        Self { provider: provider.to_string(), worker: worker.to_string(), now_ms, due_by_ms: now_ms, limit: 100 }
    }
}

/// A wait to add to a store: its state (task, start, deadline, first poll) and options.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct NewWait {
    /// Where the wait starts.
    pub state: WaitState,
    /// How to wait.
    pub options: StoredOptions,
}

impl NewWait {
    /// A wait on `task` starting now (by the options' clock), with the
    /// options' deadline from now.
    pub fn new(task: TaskRef, options: &WaitOptions) -> Result<Self> {
        let mut poller = Poller::new(task, options)?;
        // Plans the first poll (the policy's first delay), saved as the due time.
        let _ = poller.start();
        Ok(Self { state: poller.state().clone(), options: StoredOptions::of(options) })
    }
}

/// A wait claimed from a store.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ClaimedWait {
    /// Its number.
    pub id: WaitId,
    /// Where it stands.
    pub state: WaitState,
    /// How to wait.
    pub options: StoredOptions,
}

/// The serialisable part of [`WaitOptions`]: the policy by name (see
/// [`StoredWaiter::policy`]), the unknown-status policy, the pending-forever
/// guard and the `Retry-After` ceiling. The deadline is in the wait's state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct StoredOptions {
    /// What to do with statuses the spec does not list.
    pub unknown_status: UnknownStatusPolicy,
    /// The pending-forever guard (`None`: the provider's default; `Some(None)`: off).
    pub pending_budget_ms: Option<Option<u64>>,
    /// The most a `Retry-After` pushes the next poll back.
    pub retry_after_ceiling_ms: u64,
    /// Which estimate of durations the wait reads and feeds ([`WaitOptions::duration_key`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_key: Option<String>,
}

impl StoredOptions {
    /// What of `options` a store keeps.
    pub fn of(options: &WaitOptions) -> Self {
        Self {
            unknown_status: options.unknown_status,
            pending_budget_ms: options.pending_budget.map(|budget| budget.map(millis)),
            retry_after_ceiling_ms: millis(options.retry_after_ceiling),
            duration_key: options.duration_key.as_deref().map(str::to_string),
        }
    }

    /// Options to resume with, keeping the saved deadline.
    fn to_options(&self, state: &WaitState, clock: &Arc<dyn Clock>, policy: Option<Arc<Policy>>) -> WaitOptions {
        let remaining = state.remaining_at(wall_ms(clock.as_ref()));
        let mut options = WaitOptions::new(remaining)
            .unknown_status(self.unknown_status)
            .retry_after_ceiling(Duration::from_millis(self.retry_after_ceiling_ms))
            .clock(clock.clone());
        if let Some(budget) = self.pending_budget_ms {
            options = options.pending_budget(budget.map(Duration::from_millis));
        }
        if let Some(policy) = policy {
            options = options.shared_policy(policy);
        }
        if let Some(key) = &self.duration_key {
            options = options.duration_key(key.as_str());
        }
        options.keep_saved_deadline = true;
        options
    }
}

/// How a stored wait ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum OutcomeKind {
    /// The task succeeded.
    Succeeded,
    /// The task failed at its provider.
    Failed,
    /// The task was cancelled at its provider.
    Cancelled,
    /// The deadline came first (the task may still finish: resume its state).
    Deadline,
    /// The wait ended with another error (auth, not found, a guard, …).
    Error,
}

/// A finished wait, as written to its store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct StoredOutcome {
    /// The wait's number.
    pub id: WaitId,
    /// The task.
    pub task_ref: TaskRef,
    /// How it ended.
    pub kind: OutcomeKind,
    /// The last observation: the final task, or the last one seen.
    pub task: Option<Task>,
    /// The error that ended the wait, as text.
    pub error: Option<String>,
    /// Polls made, across every worker that held the wait.
    pub polls: u32,
    /// Where the wait stood at its end (to resume it after a deadline).
    pub state: WaitState,
    /// When it was written (Unix ms).
    pub finished_at_ms: u64,
}

impl StoredOutcome {
    /// An outcome of wait `id` with no observation and no error text (set
    /// the public fields for more); its polls are the state's attempts.
    pub fn new(id: WaitId, kind: OutcomeKind, state: WaitState, finished_at_ms: u64) -> Self {
        let task_ref = state.task_ref.clone();
        Self { id, task_ref, kind, task: None, error: None, polls: state.attempts, state, finished_at_ms }
    }

    /// The outcome of wait `id` from what the waiter reported.
    pub(crate) fn of(id: WaitId, task_ref: TaskRef, result: &Result<Task>, state: WaitState, now_ms: u64) -> Self {
        let polls = state.attempts;
        let (kind, task, error) = match result {
            Ok(task) => (OutcomeKind::Succeeded, Some(task.clone()), None),
            Err(error) => {
                let kind = match error.task().map(Task::phase) {
                    Some(Phase::Failed) if error.is_task_failure() => OutcomeKind::Failed,
                    Some(Phase::Cancelled) if error.is_task_failure() => OutcomeKind::Cancelled,
                    _ if error.is_deadline() => OutcomeKind::Deadline,
                    _ => OutcomeKind::Error,
                };
                (kind, error.task().cloned(), Some(error.to_string()))
            }
        };
        Self { id, task_ref, kind, task, error, polls, state, finished_at_ms: now_ms }
    }
}

/// What a store keeps of an outcome besides its row's columns (written as
/// [`OutcomeBodyOut`]).
#[derive(Deserialize)]
struct OutcomeBody {
    kind: OutcomeKind,
    task: Option<Task>,
    error: Option<String>,
    polls: u32,
}

/// [`OutcomeBody`] as written: borrowed from the outcome, not a copy of its task.
#[derive(Serialize)]
struct OutcomeBodyOut<'a> {
    kind: OutcomeKind,
    task: Option<&'a Task>,
    error: Option<&'a str>,
    polls: u32,
}

impl OutcomeBody {
    fn json(outcome: &StoredOutcome) -> Result<String> {
        to_json(&OutcomeBodyOut {
            kind: outcome.kind,
            task: outcome.task.as_ref(),
            error: outcome.error.as_deref(),
            polls: outcome.polls,
        })
    }

    fn outcome(self, id: WaitId, state: WaitState, finished_at_ms: u64) -> StoredOutcome {
        let task_ref = state.task_ref.clone();
        StoredOutcome {
            id,
            task_ref,
            kind: self.kind,
            task: self.task,
            error: self.error,
            polls: self.polls,
            state,
            finished_at_ms,
        }
    }
}

/// When a wait's next poll is due (Unix ms): the planned one, or its start.
fn due_at_ms(state: &WaitState) -> u64 {
    state.started_at_ms.saturating_add(state.next_poll_ms.unwrap_or(0))
}

fn to_json<T: Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| Error::store("cannot encode a stored value", e))
}

fn from_json<T: serde::de::DeserializeOwned>(text: &str, what: &str) -> Result<T> {
    serde_json::from_str(text).map_err(|e| Error::store(format!("cannot read a stored {what}"), e))
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Unix ms by `clock`'s wall clock.
fn wall_ms(clock: &dyn Clock) -> u64 {
    clock.wall().duration_since(UNIX_EPOCH).map(millis).unwrap_or(0)
}

/// A database integer from a count or time (they fit: times are Unix ms).
fn db_int(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn from_db_int(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

/// Policies a [`StoredWaiter`] resumes waits with, by name.
#[derive(Debug, Default, Clone)]
struct Policies(HashMap<String, Arc<Policy>>);
