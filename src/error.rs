//! The one error type, [`Error`], and the context each of its variants wraps.

use std::time::Duration;

use crate::state::PollError;
use crate::{Task, TaskRef, WaitState};

mod call;
mod input;
mod wait;

pub use crate::state::TransportKind;
pub use call::{
    ApiError, BodyTooLarge, CrossOriginAnswer, GeneratedCallError, InvalidBody, InvalidRequest, MissingCredentials,
    MissingFromBatch, TaskIdMismatch, TransportError, TypedBody,
};
pub use input::{
    ConfigError, InvalidPolicy, InvalidTaskId, InvalidTaskRef, ProviderNotConfigured, StoreError, StoreFault,
    UnknownProvider, WebhookRefusal, WebhookRefused,
};
pub use wait::{
    DeadlineExceeded, RetryAfterPastDeadline, StillPending, TaskCancelled, TaskFailed, UnknownStatus, WaitCancelled,
};

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

fn seconds(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

/// Everything that can go wrong, with the context to act on it.
///
/// Each variant wraps a context type (in [`taskpoll::error`](crate::error))
/// whose accessors give the details, so details can be added without
/// breaking a `match`. The `is_*` predicates and the accessors on `Error`
/// answer the common questions whatever the variant.
///
/// Display gives one line and does not repeat the source; walk
/// [`std::error::Error::source`] for the underlying reqwest or progenitor error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The client configuration is unusable (bad URL, bad variable, nothing configured).
    #[error(transparent)]
    Config(ConfigError),
    /// No provider of that name is built into this crate or registered.
    #[error(transparent)]
    UnknownProvider(UnknownProvider),
    /// The provider exists but this client was not configured for it.
    #[error(transparent)]
    ProviderNotConfigured(ProviderNotConfigured),
    /// No credential satisfies the operation's security; nothing was sent.
    #[error(transparent)]
    MissingCredentials(MissingCredentials),
    /// The task id cannot be sent safely; nothing was sent.
    #[error(transparent)]
    InvalidTaskId(InvalidTaskId),
    /// A task reference string or input is malformed.
    #[error(transparent)]
    InvalidTaskRef(InvalidTaskRef),
    /// The request could not be built (e.g. a header value with bad bytes).
    #[error(transparent)]
    InvalidRequest(InvalidRequest),
    /// Connecting, sending or reading failed, or the request timed out.
    #[error(transparent)]
    Transport(TransportError),
    /// The provider answered with an HTTP error that is not a task.
    #[error(transparent)]
    Api(ApiError),
    /// A success answer whose body is not a task (HTML, malformed JSON, a non-object).
    #[error(transparent)]
    InvalidBody(InvalidBody),
    /// The body was larger than the configured cap and was not read.
    #[error(transparent)]
    BodyTooLarge(BodyTooLarge),
    /// A task's body does not read as the type asked for ([`crate::Task::typed`]).
    #[error(transparent)]
    TypedBody(TypedBody),
    /// The answer came from another origin than the request's; it was not read.
    #[error(transparent)]
    CrossOriginAnswer(CrossOriginAnswer),
    /// The answer is about another task than the one asked for.
    #[error(transparent)]
    TaskIdMismatch(TaskIdMismatch),
    /// A batch answer did not include this id.
    #[error(transparent)]
    MissingFromBatch(MissingFromBatch),
    /// The task failed; the final observation is kept.
    #[error(transparent)]
    TaskFailed(TaskFailed),
    /// The task was cancelled; the final observation is kept.
    #[error(transparent)]
    TaskCancelled(TaskCancelled),
    /// The task reported a status the spec does not list, and the unknown-status policy said stop.
    #[error(transparent)]
    UnknownStatus(UnknownStatus),
    /// The deadline passed before the task finished.
    #[error(transparent)]
    DeadlineExceeded(DeadlineExceeded),
    /// The server asked to come back after the deadline; the wait ended at once.
    #[error(transparent)]
    RetryAfterPastDeadline(RetryAfterPastDeadline),
    /// The task stayed queued longer than the pending-forever budget.
    #[error(transparent)]
    StillPending(StillPending),
    /// The wait was cancelled by the caller; the task may still finish.
    #[error(transparent)]
    WaitCancelled(WaitCancelled),
    /// A polling policy was rejected by its builder.
    #[error(transparent)]
    InvalidPolicy(InvalidPolicy),
    /// A call through a generated client failed.
    #[error(transparent)]
    GeneratedCall(GeneratedCallError),
    /// A webhook delivery was refused; nothing was handed to a wait.
    #[error(transparent)]
    WebhookRefused(WebhookRefused),
    /// A wait store could not be opened, read or written.
    #[error(transparent)]
    Store(StoreError),
}

/// Shorthand for `Result<T, taskpoll::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A provider name the registry does not know; `known`: the names it does
    /// (handed in by the registry, which sits above the errors).
    pub(crate) fn unknown_provider<'a>(name: &str, known: impl IntoIterator<Item = &'a str>) -> Self {
        let known: Vec<&str> = known.into_iter().collect();
        Error::UnknownProvider(UnknownProvider { name: crate::text::excerpt(name, 40), known: known.join(", ") })
    }

    pub(crate) fn webhook_refused(provider: &str, reason: WebhookRefusal) -> Self {
        Error::WebhookRefused(WebhookRefused { provider: crate::text::excerpt(provider, 40), reason })
    }

    pub(crate) fn config(message: impl Into<String>) -> Self {
        Error::Config(ConfigError { message: message.into() })
    }

    /// A store error with its driver's error as the source.
    #[cfg_attr(not(any(feature = "store-sqlite", feature = "store-postgres")), allow(dead_code))]
    pub(crate) fn store(message: impl Into<String>, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        Error::Store(StoreError { message: message.into(), fault: StoreFault::Other, source: Some(Box::new(source)) })
    }

    /// A store error of a known kind (see [`StoreFault`]).
    #[cfg(any(feature = "store-sqlite", feature = "store-postgres"))]
    pub(crate) fn store_fault(
        message: impl Into<String>,
        fault: StoreFault,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Error::Store(StoreError { message: message.into(), fault, source: Some(Box::new(source)) })
    }

    /// A copy of a read error, for each task of a batch read that failed as
    /// a whole. Sources are not `Clone`: a copy keeps the source's text.
    pub(crate) fn duplicate(&self) -> Error {
        match self {
            Error::Api(e) => Error::Api(e.clone()),
            Error::InvalidBody(e) => Error::InvalidBody(e.clone()),
            Error::BodyTooLarge(e) => Error::BodyTooLarge(e.clone()),
            Error::MissingCredentials(e) => Error::MissingCredentials(e.clone()),
            Error::InvalidRequest(e) => Error::InvalidRequest(e.clone()),
            Error::Transport(e) => Error::Transport(e.duplicate()),
            Error::CrossOriginAnswer(e) => Error::CrossOriginAnswer(e.clone()),
            Error::Config(e) => Error::Config(e.clone()),
            // Not read errors; kept as their text, classified as a permanent failure.
            other => Error::config(other.to_string()),
        }
    }

    /// The HTTP status, when the error came from an answer.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Api(e) => Some(e.status),
            Error::InvalidBody(e) => Some(e.status),
            Error::BodyTooLarge(e) => Some(e.status),
            Error::GeneratedCall(e) => e.status,
            other => other.ended_task().map(Task::http_status),
        }
    }

    /// Whether trying the same read again later may succeed: connect errors,
    /// timeouts, 408/425/429/502/503/504, a non-JSON 5xx, a success answer with
    /// a broken body.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Transport(_) => true,
            Error::Api(e) => {
                matches!(e.status, 408 | 425 | 429 | 502 | 503 | 504) || (e.status >= 500 && !e.body_is_json)
            }
            Error::InvalidBody(e) => e.status < 300 || e.status >= 500,
            Error::GeneratedCall(e) => {
                e.kind.is_some() || e.status.is_some_and(|status| matches!(status, 408 | 425 | 429 | 502 | 503 | 504))
            }
            _ => false,
        }
    }

    /// The status of an answer that was an HTTP error (not a task).
    fn error_status(&self) -> Option<u16> {
        match self {
            Error::Api(e) => Some(e.status),
            Error::GeneratedCall(e) => e.status,
            _ => None,
        }
    }

    /// 401 or 403, or no credentials configured for the operation.
    pub fn is_auth(&self) -> bool {
        matches!(self, Error::MissingCredentials(_)) || matches!(self.error_status(), Some(401 | 403))
    }

    /// 404: the provider does not know the task.
    pub fn is_not_found(&self) -> bool {
        self.error_status() == Some(404)
    }

    /// 429: rate limited.
    pub fn is_rate_limited(&self) -> bool {
        self.error_status() == Some(429)
    }

    /// A connect error, timeout or broken connection.
    pub fn is_transport(&self) -> bool {
        self.transport_kind().is_some()
    }

    /// The kind of transport failure, when the request got no (complete) answer.
    pub fn transport_kind(&self) -> Option<TransportKind> {
        match self {
            Error::Transport(e) => Some(e.kind),
            Error::GeneratedCall(e) => e.kind,
            _ => None,
        }
    }

    /// A request that timed out (its own timeout, or the wait's deadline budget).
    pub fn is_timeout(&self) -> bool {
        match self {
            Error::Transport(e) => matches!(e.kind, TransportKind::Timeout | TransportKind::DeadlineBudget),
            Error::GeneratedCall(e) => e.kind == Some(TransportKind::Timeout),
            _ => false,
        }
    }

    /// A short cause without server text: `HTTP 503`, `connection refused by host:port`.
    pub(crate) fn summary(&self) -> String {
        match self {
            Error::Transport(e) => e.describe(),
            Error::TaskIdMismatch(_) => "an answer about another task".to_string(),
            Error::CrossOriginAnswer(e) => format!("an answer from another origin ({})", e.origin),
            Error::MissingCredentials(_) => "no credentials".to_string(),
            Error::InvalidBody(e) => format!("HTTP {} body is not a task ({})", e.status, e.reason),
            Error::BodyTooLarge(e) => format!("HTTP {} body over the {}-byte cap", e.status, e.limit),
            other => match other.status() {
                Some(status) => format!("HTTP {status}"),
                None => "error".to_string(),
            },
        }
    }

    /// The wait ran out of time (deadline passed, or a `Retry-After` pointed past it).
    pub fn is_deadline(&self) -> bool {
        matches!(self, Error::DeadlineExceeded(_) | Error::RetryAfterPastDeadline(_))
    }

    /// The task itself failed or was cancelled.
    pub fn is_task_failure(&self) -> bool {
        matches!(self, Error::TaskFailed(_) | Error::TaskCancelled(_))
    }

    /// The caller cancelled the wait before it ended (see [`crate::Waiter::cancel`]).
    pub fn is_wait_cancelled(&self) -> bool {
        matches!(self, Error::WaitCancelled(_))
    }

    /// The pending-forever guard tripped.
    pub fn is_still_pending(&self) -> bool {
        matches!(self, Error::StillPending(_))
    }

    /// The task reported a status the spec does not list, and the policy said stop.
    pub fn is_unknown_status(&self) -> bool {
        matches!(self, Error::UnknownStatus(_))
    }

    /// A webhook delivery was refused ([`Error::WebhookRefused`]).
    pub fn is_webhook_refused(&self) -> bool {
        matches!(self, Error::WebhookRefused(_))
    }

    /// Why a webhook delivery was refused, when it was.
    pub fn webhook_refusal(&self) -> Option<WebhookRefusal> {
        match self {
            Error::WebhookRefused(e) => Some(e.reason),
            _ => None,
        }
    }

    /// A wait store could not be opened, read or written ([`Error::Store`]).
    pub fn is_store(&self) -> bool {
        matches!(self, Error::Store(_))
    }

    /// Bad configuration, input or usage (nothing was sent).
    pub fn is_config(&self) -> bool {
        matches!(
            self,
            Error::Config(_)
                | Error::UnknownProvider(_)
                | Error::ProviderNotConfigured(_)
                | Error::InvalidTaskId(_)
                | Error::InvalidTaskRef(_)
                | Error::InvalidPolicy(_)
        )
    }

    /// The server's `Retry-After` hint.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::Api(e) => e.retry_after,
            Error::RetryAfterPastDeadline(e) => Some(e.retry_after),
            _ => None,
        }
    }

    /// The task's final observation when the task failed, was cancelled or
    /// reported an unknown status.
    fn ended_task(&self) -> Option<&Task> {
        match self {
            Error::TaskFailed(e) => Some(&e.task),
            Error::TaskCancelled(e) => Some(&e.task),
            Error::UnknownStatus(e) => Some(&e.task),
            _ => None,
        }
    }

    /// The final or last observation of the task, when there is one.
    pub fn task(&self) -> Option<&Task> {
        match self {
            Error::DeadlineExceeded(e) => e.last_task(),
            Error::RetryAfterPastDeadline(e) => e.last_task(),
            Error::StillPending(e) => Some(e.last_task()),
            other => other.ended_task(),
        }
    }

    /// The task to re-attach to after a wait ended early.
    pub fn task_ref(&self) -> Option<&TaskRef> {
        match self.wait_state() {
            Some(state) => Some(&state.task_ref),
            None => self.task().map(Task::task_ref),
        }
    }

    /// Where a wait stood when it ended, to continue it (see [`crate::Client::resume`]).
    pub fn wait_state(&self) -> Option<&WaitState> {
        match self {
            Error::DeadlineExceeded(e) => Some(e.wait_state()),
            Error::RetryAfterPastDeadline(e) => Some(e.wait_state()),
            Error::StillPending(e) => Some(e.wait_state()),
            Error::UnknownStatus(e) => Some(e.wait_state()),
            Error::WaitCancelled(e) => Some(e.wait_state()),
            _ => None,
        }
    }
}

/// Written here, next to the predicates it reads, so the wait state (below
/// the errors) never names an `Error`.
impl PollError {
    /// The serialisable summary of one poll's error.
    pub(crate) fn of(error: &Error) -> Self {
        PollError {
            message: error.to_string(),
            http_status: error.status(),
            transport: error.transport_kind(),
            retryable: error.is_retryable(),
            retry_after_ms: error.retry_after().map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        }
    }
}
