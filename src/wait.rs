//! The polling engine: waiting on a task within one deadline.
//!
//! One deadline governs everything. The last sleep is clipped so the final
//! poll lands just before the deadline (see [`Policy`]); each request's timeout
//! is `min(per-request timeout, time remaining)`; a transient failure (connect
//! error, timeout, 408/425/429/502/503/504, non-JSON 5xx) is retried on the
//! same schedule within the same budget; a `Retry-After` is a floor for the
//! next delay, bounded by a ceiling, and one that points past the deadline ends
//! the wait at once ([`Error::RetryAfterPastDeadline`](crate::Error::RetryAfterPastDeadline)). No poll is ever sent
//! at or after the deadline.
//!
//! The engine never names a provider: the default policy and the
//! pending-forever guard come from the provider's spec data.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use taskpoll::{Client, ProviderConfig, WaitOptions, WaitState};
//! let client = Client::builder().provider(ProviderConfig::new("deepomatic").api_key("key")).build()?;
//! let task_ref = "deepomatic:269999729".parse()?;
//! match client.wait(&task_ref, WaitOptions::new(Duration::from_secs(60))).await {
//!     Ok(task) => println!("done: {:?}", task.result()),
//!     Err(e) => match e.wait_state() {
//!         // Save where the wait stood; later, continue it with a fresh deadline.
//!         Some(state) => {
//!             let saved = serde_json::to_string(state)?;
//!             let state: WaitState = serde_json::from_str(&saved)?;
//!             client.resume(state, WaitOptions::new(Duration::from_secs(60))).await?;
//!         }
//!         None => return Err(e.into()),
//!     },
//! }
//! # Ok(()) }
//! ```

mod handle;
mod poller;
#[cfg(test)]
pub(crate) mod tests;
pub(crate) mod waiter;

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::clock::Clock;

pub use crate::policy::{Durations, Eta, Policy, PolicyBuilder};
pub use crate::spec::Jitter;
pub use crate::state::{PollError, PollEvent, WaitState};
pub use crate::wait::waiter::{Outcomes, PendingTask, WaitOutcome, Waiter, WaiterHandle};
pub use handle::Wait;
pub(crate) use poller::{Decision, Poller};

/// What to do when a task reports a status its provider's spec does not list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[non_exhaustive]
pub enum UnknownStatusPolicy {
    /// Treat it as "not finished" and keep polling (the default).
    #[default]
    KeepWaiting,
    /// End the wait at once with [`Error::UnknownStatus`](crate::Error::UnknownStatus).
    FailFast,
    /// Allow at most this many consecutive unknown observations; the next one fails.
    AtMost(u32),
    /// Allow unknown observations for at most this long (from the first of a
    /// run of consecutive ones); one later than that fails.
    AtMostFor(Duration),
}

/// How to wait: the deadline (required) and everything else, with defaults.
///
/// Defaults: the provider's polite policy ([`Policy::polite`]); unknown
/// statuses keep waiting; the pending-forever guard of the provider's spec
/// (on for Celery-backed providers); a `Retry-After` ceiling of
/// [`WaitOptions::DEFAULT_RETRY_AFTER_CEILING`]; the client's clock (tokio's).
///
/// ```
/// use std::time::Duration;
/// use taskpoll::{Policy, WaitOptions};
/// use taskpoll::wait::UnknownStatusPolicy;
/// let options = WaitOptions::new(Duration::from_secs(120))
///     .policy(Policy::factpulse_helper()?)
///     .unknown_status(UnknownStatusPolicy::AtMost(3))
///     .pending_budget(Some(Duration::from_secs(600)))
///     .retry_after_ceiling(Duration::from_secs(30));
/// assert_eq!(options.deadline(), Duration::from_secs(120));
/// # Ok::<(), taskpoll::Error>(())
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct WaitOptions {
    deadline: Duration,
    pub(crate) policy: Option<Arc<Policy>>,
    pub(crate) unknown_status: UnknownStatusPolicy,
    pub(crate) pending_budget: Option<Option<Duration>>,
    pub(crate) retry_after_ceiling: Duration,
    /// `None`: the client's engine's (tokio's).
    pub(crate) clock: Option<Arc<dyn Clock>>,
    /// A resumed wait keeps its saved deadline instead of a fresh one (a wait store's waits).
    pub(crate) keep_saved_deadline: bool,
    /// Which learned estimate of durations the wait reads and feeds.
    pub(crate) duration_key: Option<Arc<str>>,
}

impl WaitOptions {
    /// Default ceiling on a server's `Retry-After` (5 minutes).
    pub const DEFAULT_RETRY_AFTER_CEILING: Duration = Duration::from_secs(300);

    /// Options for a wait that ends at the latest `deadline` after it starts.
    pub fn new(deadline: Duration) -> Self {
        Self {
            deadline,
            policy: None,
            unknown_status: UnknownStatusPolicy::default(),
            pending_budget: None,
            retry_after_ceiling: WaitOptions::DEFAULT_RETRY_AFTER_CEILING,
            clock: None,
            keep_saved_deadline: false,
            duration_key: None,
        }
    }

    /// The polling policy (default: the provider's polite one).
    pub fn policy(mut self, policy: Policy) -> Self {
        self.policy = Some(Arc::new(policy));
        self
    }

    /// The policy, shared (a waiter gives its waits one polite policy per provider).
    pub(crate) fn shared_policy(mut self, policy: Arc<Policy>) -> Self {
        self.policy = Some(policy);
        self
    }

    pub(crate) fn has_policy(&self) -> bool {
        self.policy.is_some()
    }

    /// What to do with statuses the spec does not list.
    pub fn unknown_status(mut self, policy: UnknownStatusPolicy) -> Self {
        self.unknown_status = policy;
        self
    }

    /// The pending-forever guard: the most time the task may stay queued
    /// (`None` turns it off). Default: the provider spec's budget when the
    /// provider is Celery-backed (where PENDING also means "unknown id"), else off.
    pub fn pending_budget(mut self, budget: Option<Duration>) -> Self {
        self.pending_budget = Some(budget);
        self
    }

    /// The most a server's `Retry-After` can push the next poll back; longer
    /// hints count as this long (zero ignores the hints).
    pub fn retry_after_ceiling(mut self, ceiling: Duration) -> Self {
        self.retry_after_ceiling = ceiling;
        self
    }

    /// Learns and reads how long tasks take under this key, apart from the
    /// provider's other tasks (say, a model name whose tasks take longer):
    /// [`Policy::learned`] plans from it and the ETA comes from it. The
    /// client keeps at most a thousand keys per provider; waits with later
    /// keys share the provider's estimate.
    pub fn duration_key(mut self, key: impl Into<String>) -> Self {
        self.duration_key = Some(Arc::from(key.into()));
        self
    }

    /// The clock used for every sleep and time reading (a virtual one in
    /// tests). Waits on different clocks run on different schedulers, each
    /// with its own rate budget.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// The deadline, from the start of the wait.
    pub fn deadline(&self) -> Duration {
        self.deadline
    }
}

#[cfg(test)]
mod option_tests {
    use super::*;
    use crate::{Error, TaskRef};

    #[test]
    fn options_default_to_keep_waiting_and_the_engine_clock() {
        let options = WaitOptions::new(Duration::from_secs(1));
        assert_eq!(options.unknown_status, UnknownStatusPolicy::KeepWaiting);
        assert_eq!(options.pending_budget, None);
        assert_eq!(options.retry_after_ceiling, WaitOptions::DEFAULT_RETRY_AFTER_CEILING);
        assert!(options.clock.is_none());
    }

    #[test]
    fn an_error_can_be_built_for_every_wait_ending() {
        // The engine relies on these being plain data.
        let state = WaitState::new(TaskRef::new("deepomatic", "1").expect("ref"), "p", 0, 1000);
        assert_eq!(state.remaining_at(400), Duration::from_millis(600));
        assert_eq!(state.provider(), "deepomatic");
        let error = Error::DeadlineExceeded(crate::error::DeadlineExceeded {
            deadline: Duration::from_secs(1),
            elapsed: Duration::from_secs(1),
            last: None,
            last_error: None,
            state: Box::new(state),
        });
        assert!(error.is_deadline());
        assert!(error.wait_state().is_some());
    }
}
