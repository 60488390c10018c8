//! Where a wait stands and what each poll saw: plain data, below the engine
//! (errors carry a [`WaitState`]; the engine and the stores fill them in).

use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{Phase, Task, TaskRef};

/// Where a wait stands; serialisable so a wait can resume with the remaining
/// budget (see [`Client::resume`](crate::Client::resume)). Times named `*_at_ms` are Unix
/// milliseconds (wall clock); other `*_ms` fields are durations, and
/// `last_poll_ms` / `next_poll_ms` are offsets from `started_at_ms`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[non_exhaustive]
pub struct WaitState {
    /// The task (provider, id and inputs).
    pub task_ref: TaskRef,
    /// The name of the policy in force.
    pub policy: String,
    /// When the wait started (Unix ms).
    pub started_at_ms: u64,
    /// When the wait must end (Unix ms).
    pub deadline_at_ms: u64,
    /// Polls made so far.
    pub attempts: u32,
    /// The last phase seen.
    pub last_phase: Option<Phase>,
    /// The last raw status seen.
    pub last_status: Option<String>,
    /// When the last poll was sent (offset from the start).
    pub last_poll_ms: Option<u64>,
    /// The delay planned after the last poll, if another poll is planned.
    pub next_delay_ms: Option<u64>,
    /// When the next poll is due (offset from the start), if one is planned.
    pub next_poll_ms: Option<u64>,
    /// How long the task has been seen queued without moving (as of the last poll).
    pub queued_ms: u64,
    /// Consecutive observations with an unknown status.
    pub unknown_count: u32,
    /// How long the current run of unknown statuses has lasted (as of the last poll).
    pub unknown_ms: u64,
    /// When the task is expected to end, even odds (offset from the start), from
    /// how long the provider's tasks took; `None` without enough history.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eta_p50_ms: Option<u64>,
    /// When the task has nine chances in ten to have ended (offset from the start).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eta_p90_ms: Option<u64>,
}

impl WaitState {
    /// The state of a wait that has not polled yet.
    pub(crate) fn new(task_ref: TaskRef, policy: &str, started_at_ms: u64, deadline_at_ms: u64) -> Self {
        Self {
            task_ref,
            policy: policy.to_string(),
            started_at_ms,
            deadline_at_ms,
            attempts: 0,
            last_phase: None,
            last_status: None,
            last_poll_ms: None,
            next_delay_ms: None,
            next_poll_ms: None,
            queued_ms: 0,
            unknown_count: 0,
            unknown_ms: 0,
            eta_p50_ms: None,
            eta_p90_ms: None,
        }
    }

    /// The provider's name.
    pub fn provider(&self) -> &str {
        self.task_ref.provider()
    }

    /// Time left before the deadline at wall-clock `now` (Unix ms).
    pub fn remaining_at(&self, now_ms: u64) -> Duration {
        Duration::from_millis(self.deadline_at_ms.saturating_sub(now_ms))
    }
}

/// Why one poll failed (the wait went on, or ended with the [`Error`](crate::Error) the
/// stream yields next): the error's kind and context, serialisable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PollError {
    /// The error's one-line message (server text escaped, never a credential).
    pub message: String,
    /// The HTTP status, when the provider answered.
    pub http_status: Option<u16>,
    /// The kind of transport failure, when no answer came.
    pub transport: Option<TransportKind>,
    /// Whether polling again may help.
    pub retryable: bool,
    /// The server's pacing hint, in milliseconds.
    pub retry_after_ms: Option<u64>,
}

impl std::fmt::Display for PollError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// One poll, reported as soon as it returns; or the verified webhook
/// delivery that ended the wait (its `task`'s [`Task::via`] says so; it
/// counts no poll and `took` is zero; see [`crate::webhook`]).
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct PollEvent {
    /// Its number (1 for the first poll of the wait, counting across resumes).
    pub attempt: u32,
    /// When it was sent, since the wait started.
    pub elapsed: Duration,
    /// How long the read took.
    pub took: Duration,
    /// The phase read (`None` when the read failed).
    pub phase: Option<Phase>,
    /// Whether the phase differs from the previous one read (true for the first).
    pub changed: bool,
    /// The raw status as the provider sent it.
    pub status: Option<String>,
    /// The whole observation (`None` when the read failed).
    pub task: Option<Task>,
    /// Why the read failed, when it did (the wait retries transient failures).
    pub error: Option<PollError>,
    /// The delay until the next poll (`None` when the wait ends after this one).
    pub next_delay: Option<Duration>,
    /// Where the wait stands after this poll: save it to resume the wait later.
    pub state: WaitState,
}

/// Why a transport-level request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum TransportKind {
    /// Could not connect, for a reason not listed below.
    Connect,
    /// The server refused the connection (nothing listens on that port).
    Refused,
    /// The host name could not be resolved.
    Dns,
    /// The TLS handshake failed (certificate, protocol).
    Tls,
    /// The connection was reset or closed before the answer was complete.
    Reset,
    /// The answer's body ended early (fewer bytes than its `Content-Length`).
    TruncatedBody,
    /// The per-request timeout passed.
    Timeout,
    /// The request was cut off because the wait's deadline budget ran out.
    DeadlineBudget,
    /// Anything else.
    Other,
}

impl TransportKind {
    /// What happened, for a message about `host`.
    pub(crate) fn describe(self, host: &str) -> String {
        match self {
            TransportKind::Connect => format!("could not connect to {host}"),
            TransportKind::Refused => format!("connection refused by {host}"),
            TransportKind::Dns => format!("could not resolve {host} (DNS)"),
            TransportKind::Tls => format!("TLS handshake with {host} failed"),
            TransportKind::Reset => format!("connection to {host} reset or closed before the answer was complete"),
            TransportKind::TruncatedBody => format!("answer from {host} cut short (truncated body)"),
            TransportKind::Timeout => format!("request to {host} timed out"),
            TransportKind::DeadlineBudget => format!("request to {host} stopped: the wait's deadline budget ran out"),
            TransportKind::Other => format!("transport error with {host}"),
        }
    }
}
