//! How a wait ended without a succeeded task: each keeps the task's last
//! observation, and the waits that may still finish keep their state to resume.

use std::time::Duration;

use super::seconds;
use crate::{Error, Task, TaskRef, WaitState};

/// The task failed; its final observation is kept.
#[derive(Debug, thiserror::Error)]
#[error("task {} failed{}", task.task_ref(), task.error().map(|e| format!(": {e}")).unwrap_or_default())]
pub struct TaskFailed {
    pub(crate) task: Box<Task>,
}

impl TaskFailed {
    /// The final observation.
    pub fn task(&self) -> &Task {
        &self.task
    }
    /// The final observation, owned.
    pub fn into_task(self) -> Task {
        *self.task
    }
}

/// The task was cancelled at the provider; its final observation is kept.
#[derive(Debug, thiserror::Error)]
#[error("task {} was cancelled", task.task_ref())]
pub struct TaskCancelled {
    pub(crate) task: Box<Task>,
}

impl TaskCancelled {
    /// The final observation.
    pub fn task(&self) -> &Task {
        &self.task
    }
    /// The final observation, owned.
    pub fn into_task(self) -> Task {
        *self.task
    }
}

/// The task reported a status the spec does not list, and the unknown-status
/// policy said stop.
#[derive(Debug, thiserror::Error)]
#[error("task {} reported unknown status {:?}", task.task_ref(), task.status().unwrap_or(""))]
pub struct UnknownStatus {
    pub(crate) task: Box<Task>,
    pub(crate) state: Box<WaitState>,
}

impl UnknownStatus {
    /// The observation with the unknown status (kept as the server sent it).
    pub fn task(&self) -> &Task {
        &self.task
    }
    /// Where the wait was, to resume it.
    pub fn wait_state(&self) -> &WaitState {
        &self.state
    }
}

/// The deadline passed before the task finished. It may still finish: resume
/// the wait from its state ([`crate::Client::resume`]).
#[derive(Debug, thiserror::Error)]
#[error(
    "task {} not finished at the deadline of {} ({} since the wait started, {} polls); {}",
    state.task_ref, seconds(*deadline), seconds(*elapsed), state.attempts, self.cause()
)]
pub struct DeadlineExceeded {
    pub(crate) state: Box<WaitState>,
    pub(crate) deadline: Duration,
    pub(crate) elapsed: Duration,
    pub(crate) last: Option<Box<Task>>,
    #[source]
    pub(crate) last_error: Option<Box<Error>>,
}

impl DeadlineExceeded {
    /// The task, to re-attach.
    pub fn task_ref(&self) -> &TaskRef {
        &self.state.task_ref
    }
    /// The time limit the wait was given ([`crate::WaitOptions::new`]; for a
    /// resumed wait, the continuation's).
    pub fn deadline(&self) -> Duration {
        self.deadline
    }
    /// Time since the wait started (for a resumed wait, since the first start).
    pub fn elapsed(&self) -> Duration {
        self.elapsed
    }
    /// Polls made.
    pub fn polls(&self) -> u32 {
        self.state.attempts
    }
    /// The last observation, if any poll was answered with the task.
    pub fn last_task(&self) -> Option<&Task> {
        self.last.as_deref()
    }
    /// The last error, if the last poll failed (also the error's `source`).
    pub fn last_error(&self) -> Option<&Error> {
        self.last_error.as_deref()
    }
    /// Where the wait was, to resume it.
    pub fn wait_state(&self) -> &WaitState {
        &self.state
    }

    /// The last cause and how to continue.
    fn cause(&self) -> String {
        let cause = match (&self.last_error, &self.last) {
            (Some(error), _) => format!("last poll: {}", error.summary()),
            (None, Some(task)) => format!("last seen {}", task.phase()),
            (None, None) => "no poll was answered".to_string(),
        };
        format!("{cause}; it may still finish: resume with its wait state (Client::resume)")
    }
}

/// The server asked to come back after the deadline; the wait ended at once.
#[derive(Debug, thiserror::Error)]
#[error("task {}: server asked to retry after {retry_after:?}, past the deadline ({remaining:?} left)", state.task_ref)]
pub struct RetryAfterPastDeadline {
    pub(crate) state: Box<WaitState>,
    pub(crate) retry_after: Duration,
    pub(crate) remaining: Duration,
    #[source]
    pub(crate) source: Option<Box<Error>>,
    pub(crate) last: Option<Box<Task>>,
}

impl RetryAfterPastDeadline {
    /// The task, to re-attach.
    pub fn task_ref(&self) -> &TaskRef {
        &self.state.task_ref
    }
    /// The server's hint.
    pub fn retry_after(&self) -> Duration {
        self.retry_after
    }
    /// Time that was left before the deadline.
    pub fn remaining(&self) -> Duration {
        self.remaining
    }
    /// Polls made.
    pub fn polls(&self) -> u32 {
        self.state.attempts
    }
    /// The error answer that carried the hint (`None` when an in-progress task answer carried it).
    pub fn hint_error(&self) -> Option<&Error> {
        self.source.as_deref()
    }
    /// The last observation of the task, if any.
    pub fn last_task(&self) -> Option<&Task> {
        self.last.as_deref()
    }
    /// Where the wait was, to resume it.
    pub fn wait_state(&self) -> &WaitState {
        &self.state
    }
}

/// The task stayed queued longer than the pending-forever budget (at
/// Celery-backed providers an unknown or expired id looks like this).
#[derive(Debug, thiserror::Error)]
#[error("task {} still queued after {queued_for:?} (unknown or expired id?)", state.task_ref)]
pub struct StillPending {
    pub(crate) state: Box<WaitState>,
    pub(crate) queued_for: Duration,
    pub(crate) last: Box<Task>,
}

impl StillPending {
    /// The task, to re-attach.
    pub fn task_ref(&self) -> &TaskRef {
        &self.state.task_ref
    }
    /// Time spent queued.
    pub fn queued_for(&self) -> Duration {
        self.queued_for
    }
    /// Polls made.
    pub fn polls(&self) -> u32 {
        self.state.attempts
    }
    /// The last observation.
    pub fn last_task(&self) -> &Task {
        &self.last
    }
    /// Where the wait was, to resume it.
    pub fn wait_state(&self) -> &WaitState {
        &self.state
    }
}

/// The wait was cancelled by the caller (a many-task waiter's `cancel`); the
/// task may still finish: resume it from its wait state.
#[derive(Debug, thiserror::Error)]
#[error("wait on task {} cancelled after {} polls; resume it from its wait state", state.task_ref, state.attempts)]
pub struct WaitCancelled {
    pub(crate) state: Box<WaitState>,
}

impl WaitCancelled {
    /// The task, to re-attach.
    pub fn task_ref(&self) -> &TaskRef {
        &self.state.task_ref
    }
    /// Polls made.
    pub fn polls(&self) -> u32 {
        self.state.attempts
    }
    /// Where the wait was, to resume it.
    pub fn wait_state(&self) -> &WaitState {
        &self.state
    }
}
