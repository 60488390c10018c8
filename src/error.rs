//! The one error type.

use std::time::Duration;

use crate::{Task, TaskRef, WaitState};

type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

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
    fn describe(self, host: &str) -> String {
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

fn transport_message(kind: TransportKind, host: &str, timeout: Option<Duration>) -> String {
    let what = kind.describe(host);
    match (kind, timeout) {
        (TransportKind::Timeout, Some(t)) => format!("{what} (request timeout of {})", seconds(t)),
        (TransportKind::DeadlineBudget, Some(t)) => format!("{what} ({} were left)", seconds(t)),
        _ => what,
    }
}

fn seconds(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

/// The end of a wait's deadline message: the last cause and how to continue.
fn deadline_message(last: Option<&Task>, last_error: Option<&Error>) -> String {
    let cause = match (last_error, last) {
        (Some(error), _) => format!("last poll: {}", error.summary()),
        (None, Some(task)) => format!("last seen {}", task.phase()),
        (None, None) => "no poll was answered".to_string(),
    };
    format!("{cause}; it may still finish: resume with its wait state (Client::resume)")
}

/// Everything that can go wrong, with the context to act on it.
///
/// Display gives one line and does not repeat the source; walk
/// [`std::error::Error::source`] for the underlying reqwest or progenitor error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The client configuration is unusable (bad URL, bad variable, nothing configured).
    #[error("configuration: {message}")]
    Config {
        /// What is wrong.
        message: String,
    },
    /// No provider of that name is built into this crate.
    #[error("unknown provider `{name}` (known: {known})")]
    UnknownProvider {
        /// The name asked for.
        name: String,
        /// The names that exist.
        known: String,
    },
    /// The provider exists but this client was not configured for it.
    #[error("provider `{provider}` is not configured on this client")]
    ProviderNotConfigured {
        /// The provider.
        provider: String,
    },
    /// No credential satisfies the operation's security; nothing was sent.
    #[error("{provider}: no credentials for `{operation}` (needs {needed})")]
    MissingCredentials {
        /// The provider.
        provider: &'static str,
        /// The operation.
        operation: &'static str,
        /// The scheme alternatives, e.g. `basicAuth or OAuth2`.
        needed: String,
    },
    /// The task id cannot be sent safely; nothing was sent.
    #[error("invalid task id {id:?}: {reason}")]
    InvalidTaskId {
        /// The id (an excerpt).
        id: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// A task reference string or input is malformed.
    #[error("invalid task reference {input:?}: {reason}")]
    InvalidTaskRef {
        /// The input (an excerpt).
        input: String,
        /// Why.
        reason: String,
    },
    /// The request could not be built (e.g. a header value with bad bytes).
    #[error("{provider} {operation}: invalid request: {message}")]
    InvalidRequest {
        /// The provider.
        provider: &'static str,
        /// The operation.
        operation: &'static str,
        /// What progenitor or reqwest refused.
        message: String,
    },
    /// Connecting, sending or reading failed, or the request timed out.
    #[error("{provider} {operation}: {}", transport_message(*kind, host, *timeout))]
    Transport {
        /// The provider.
        provider: &'static str,
        /// The operation.
        operation: &'static str,
        /// What kind of failure.
        kind: TransportKind,
        /// The host (and port) the request went to; never userinfo, path or query.
        host: String,
        /// The time limit that applied, for [`TransportKind::Timeout`] and
        /// [`TransportKind::DeadlineBudget`].
        timeout: Option<Duration>,
        /// The reqwest error.
        #[source]
        source: BoxError,
    },
    /// The provider answered with an HTTP error that is not a task.
    #[error("{provider} {operation}: HTTP {status}{}", message.as_ref().map(|m| format!(": {m}")).unwrap_or_default())]
    Api {
        /// The provider.
        provider: &'static str,
        /// The operation.
        operation: &'static str,
        /// The HTTP status.
        status: u16,
        /// The provider's error message, when the body had one.
        message: Option<String>,
        /// The start of the body (at most 512 characters).
        body_excerpt: String,
        /// Whether the body was JSON.
        body_is_json: bool,
        /// The `Retry-After` hint, if the answer had one.
        retry_after: Option<Duration>,
    },
    /// A success answer whose body is not a task (HTML, malformed JSON, a non-object).
    #[error("{provider} {operation}: HTTP {status} body is not a task ({reason})")]
    InvalidBody {
        /// The provider.
        provider: &'static str,
        /// The operation.
        operation: &'static str,
        /// The HTTP status.
        status: u16,
        /// What was wrong.
        reason: String,
        /// The start of the body.
        body_excerpt: String,
    },
    /// The body was larger than the configured cap and was not read.
    #[error("{provider} {operation}: HTTP {status} body exceeds the {limit}-byte cap")]
    BodyTooLarge {
        /// The provider.
        provider: &'static str,
        /// The operation.
        operation: &'static str,
        /// The HTTP status.
        status: u16,
        /// The cap.
        limit: usize,
    },
    /// The answer came from another origin than the request's (a redirect
    /// followed by a caller-supplied HTTP client); it was not read.
    #[error(
        "{provider} {operation}: refused an answer from another origin ({origin}); disable redirects on the HTTP client given to ClientBuilder::http_client"
    )]
    CrossOriginAnswer {
        /// The provider.
        provider: &'static str,
        /// The operation.
        operation: &'static str,
        /// The origin that answered (`scheme://host:port`).
        origin: String,
    },
    /// The answer is about another task than the one asked for (the body's
    /// id, where the spec says it is, differs); it is not taken as the task.
    #[error("{provider} {operation}: asked for task {requested:?} but the answer is about task {answered:?}")]
    TaskIdMismatch {
        /// The provider.
        provider: &'static str,
        /// The operation.
        operation: &'static str,
        /// The id asked for (an excerpt).
        requested: String,
        /// The id in the answer, as text (an excerpt).
        answered: String,
    },
    /// A batch answer did not include this id.
    #[error("{provider}: task {id:?} is missing from the batch answer")]
    MissingFromBatch {
        /// The provider.
        provider: &'static str,
        /// The id asked for.
        id: String,
    },
    /// The task failed; the final observation is kept.
    #[error("task {} failed{}", task.task_ref(), task.error().map(|e| format!(": {e}")).unwrap_or_default())]
    TaskFailed {
        /// The final observation.
        task: Box<Task>,
    },
    /// The task was cancelled; the final observation is kept.
    #[error("task {} was cancelled", task.task_ref())]
    TaskCancelled {
        /// The final observation.
        task: Box<Task>,
    },
    /// The task reported a status the spec does not list, and the unknown-status policy said stop.
    #[error("task {} reported unknown status {:?}", task.task_ref(), task.status().unwrap_or(""))]
    UnknownStatus {
        /// The observation with the unknown status.
        task: Box<Task>,
        /// Where the wait was, to resume it.
        state: Box<WaitState>,
    },
    /// The deadline passed before the task finished.
    #[error(
        "task {task_ref} not finished at the deadline ({elapsed:?}, {polls} polls); {}",
        deadline_message(last.as_deref(), last_error.as_deref())
    )]
    DeadlineExceeded {
        /// The task, to re-attach.
        task_ref: Box<TaskRef>,
        /// Time spent waiting.
        elapsed: Duration,
        /// Polls made.
        polls: u32,
        /// The last observation, if any poll succeeded.
        last: Option<Box<Task>>,
        /// The last error, if the last poll failed.
        #[source]
        last_error: Option<Box<Error>>,
        /// Where the wait was, to resume it.
        state: Box<WaitState>,
    },
    /// The server asked to come back after the deadline; the wait ended at once.
    #[error("task {task_ref}: server asked to retry after {retry_after:?}, past the deadline ({remaining:?} left)")]
    RetryAfterPastDeadline {
        /// The task, to re-attach.
        task_ref: Box<TaskRef>,
        /// The hint.
        retry_after: Duration,
        /// Time that was left.
        remaining: Duration,
        /// Polls made.
        polls: u32,
        /// The error answer that carried the hint (`None` when an in-progress task answer carried it).
        source: Option<Box<Error>>,
        /// The last observation of the task, if any.
        last: Option<Box<Task>>,
        /// Where the wait was, to resume it.
        state: Box<WaitState>,
    },
    /// The task stayed queued longer than the pending-forever budget (at
    /// Celery-backed providers an unknown or expired id looks like this).
    #[error("task {task_ref} still queued after {queued_for:?} (unknown or expired id?)")]
    StillPending {
        /// The task, to re-attach.
        task_ref: Box<TaskRef>,
        /// Time spent queued.
        queued_for: Duration,
        /// Polls made.
        polls: u32,
        /// The last observation.
        last: Box<Task>,
        /// Where the wait was, to resume it.
        state: Box<WaitState>,
    },
    /// The wait was cancelled by the caller (a many-task waiter's `cancel`);
    /// the task may still finish: resume it from its wait state.
    #[error("wait on task {task_ref} cancelled after {polls} polls; resume it from its wait state")]
    WaitCancelled {
        /// The task, to re-attach.
        task_ref: Box<TaskRef>,
        /// Polls made.
        polls: u32,
        /// Where the wait was, to resume it.
        state: Box<WaitState>,
    },
    /// A polling policy was rejected by its builder.
    #[error("invalid policy: {message}")]
    InvalidPolicy {
        /// What is wrong.
        message: String,
    },
    /// A call through a generated client (`taskpoll::generated::<provider>::client`)
    /// failed; `?` converts progenitor's error into this one.
    #[error("generated client: {message}")]
    GeneratedCall {
        /// The HTTP status, when the server answered.
        status: Option<u16>,
        /// What went wrong (never the body or a credential).
        message: String,
        /// The kind of transport failure, when the request did not get an answer.
        kind: Option<TransportKind>,
        /// The reqwest or serde error, when there is one.
        #[source]
        source: Option<BoxError>,
    },
    /// A webhook delivery was refused (bad or missing signature, stale or
    /// future timestamp, oversized or malformed body, no scheme or secret to
    /// check it with); nothing was handed to a wait. Never shows the secret,
    /// the signature or the body.
    #[error("webhook from {provider} refused: {reason}")]
    WebhookRefused {
        /// The provider the delivery claimed to come from (an excerpt).
        provider: String,
        /// Why.
        reason: crate::webhook::WebhookRefusal,
    },
    /// A wait store (`taskpoll::store`) could not be opened, read or written.
    #[error("wait store: {message}")]
    Store {
        /// What was being done.
        message: String,
        /// The database driver's error, when there is one.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
}

impl<E> From<progenitor_client::Error<E>> for Error {
    fn from(error: progenitor_client::Error<E>) -> Self {
        use progenitor_client::Error as P;
        let status = error.status().map(|s| s.as_u16());
        let generated = |message: String, kind: Option<TransportKind>, source: Option<BoxError>| Error::GeneratedCall {
            status,
            message,
            kind,
            source,
        };
        match error {
            P::InvalidRequest(message) => generated(format!("invalid request: {message}"), None, None),
            // The hooks' refusal (no credentials for the operation): nothing was sent.
            P::Custom(message) => generated(message, None, None),
            P::CommunicationError(e) | P::ResponseBodyError(e) | P::InvalidUpgrade(e) => {
                let kind = crate::observe::transport_kind(&e);
                let host = e.url().map_or_else(|| "the server".to_string(), crate::transport::host_of);
                generated(kind.describe(&host), Some(kind), Some(Box::new(e.without_url())))
            }
            P::ErrorResponse(response) => generated(format!("HTTP {}", response.status().as_u16()), None, None),
            P::UnexpectedResponse(response) => {
                generated(format!("unexpected HTTP {}", response.status().as_u16()), None, None)
            }
            P::InvalidResponsePayload(_, e) => {
                generated("the answer's body does not match the spec".to_string(), None, Some(Box::new(e)))
            }
        }
    }
}

/// Shorthand for `Result<T, taskpoll::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn unknown_provider(name: &str) -> Self {
        let known: Vec<&str> = crate::spec::providers().iter().map(|p| p.name).collect();
        Error::UnknownProvider { name: crate::task::excerpt(name, 40), known: known.join(", ") }
    }

    pub(crate) fn config(message: impl Into<String>) -> Self {
        Error::Config { message: message.into() }
    }

    /// A store error with its driver's error as the source.
    #[cfg_attr(not(any(feature = "store-sqlite", feature = "store-postgres")), allow(dead_code))]
    pub(crate) fn store(message: impl Into<String>, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        Error::Store { message: message.into(), source: Some(Box::new(source)) }
    }

    /// A copy of a read error, for each task of a batch read that failed as
    /// a whole. Sources are not `Clone`: a copy keeps the source's text.
    pub(crate) fn duplicate(&self) -> Error {
        match self {
            Error::Api { provider, operation, status, message, body_excerpt, body_is_json, retry_after } => {
                Error::Api {
                    provider,
                    operation,
                    status: *status,
                    message: message.clone(),
                    body_excerpt: body_excerpt.clone(),
                    body_is_json: *body_is_json,
                    retry_after: *retry_after,
                }
            }
            Error::InvalidBody { provider, operation, status, reason, body_excerpt } => Error::InvalidBody {
                provider,
                operation,
                status: *status,
                reason: reason.clone(),
                body_excerpt: body_excerpt.clone(),
            },
            Error::BodyTooLarge { provider, operation, status, limit } => {
                Error::BodyTooLarge { provider, operation, status: *status, limit: *limit }
            }
            Error::MissingCredentials { provider, operation, needed } => {
                Error::MissingCredentials { provider, operation, needed: needed.clone() }
            }
            Error::InvalidRequest { provider, operation, message } => {
                Error::InvalidRequest { provider, operation, message: message.clone() }
            }
            Error::Transport { provider, operation, kind, host, timeout, source } => Error::Transport {
                provider,
                operation,
                kind: *kind,
                host: host.clone(),
                timeout: *timeout,
                source: source.to_string().into(),
            },
            Error::CrossOriginAnswer { provider, operation, origin } => {
                Error::CrossOriginAnswer { provider, operation, origin: origin.clone() }
            }
            Error::Config { message } => Error::Config { message: message.clone() },
            // Not read errors; kept as their text, classified as a permanent failure.
            other => Error::Config { message: other.to_string() },
        }
    }

    /// The HTTP status, when the error came from an answer.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Api { status, .. } | Error::InvalidBody { status, .. } | Error::BodyTooLarge { status, .. } => {
                Some(*status)
            }
            Error::TaskFailed { task } | Error::TaskCancelled { task } | Error::UnknownStatus { task, .. } => {
                Some(task.http_status())
            }
            Error::GeneratedCall { status, .. } => *status,
            _ => None,
        }
    }

    /// Whether trying the same read again later may succeed: connect errors,
    /// timeouts, 408/425/429/502/503/504, a non-JSON 5xx, a success answer with
    /// a broken body.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Transport { .. } => true,
            Error::Api { status, body_is_json, .. } => {
                matches!(status, 408 | 425 | 429 | 502 | 503 | 504) || (*status >= 500 && !body_is_json)
            }
            Error::InvalidBody { status, .. } => *status < 300 || *status >= 500,
            Error::GeneratedCall { kind: Some(_), .. } => true,
            Error::GeneratedCall { status: Some(status), .. } => matches!(status, 408 | 425 | 429 | 502 | 503 | 504),
            _ => false,
        }
    }

    /// 401 or 403, or no credentials configured for the operation.
    pub fn is_auth(&self) -> bool {
        matches!(
            self,
            Error::Api { status: 401 | 403, .. }
                | Error::MissingCredentials { .. }
                | Error::GeneratedCall { status: Some(401 | 403), .. }
        )
    }

    /// 404: the provider does not know the task.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::Api { status: 404, .. } | Error::GeneratedCall { status: Some(404), .. })
    }

    /// 429: rate limited.
    pub fn is_rate_limited(&self) -> bool {
        matches!(self, Error::Api { status: 429, .. } | Error::GeneratedCall { status: Some(429), .. })
    }

    /// A connect error, timeout or broken connection.
    pub fn is_transport(&self) -> bool {
        matches!(self, Error::Transport { .. } | Error::GeneratedCall { kind: Some(_), .. })
    }

    /// A request that timed out (its own timeout, or the wait's deadline budget).
    pub fn is_timeout(&self) -> bool {
        matches!(
            self,
            Error::Transport { kind: TransportKind::Timeout | TransportKind::DeadlineBudget, .. }
                | Error::GeneratedCall { kind: Some(TransportKind::Timeout), .. }
        )
    }

    /// A short cause without server text: `HTTP 503`, `connection refused by host:port`.
    fn summary(&self) -> String {
        match self {
            Error::Transport { kind, host, timeout, .. } => transport_message(*kind, host, *timeout),
            Error::TaskIdMismatch { .. } => "an answer about another task".to_string(),
            Error::CrossOriginAnswer { origin, .. } => format!("an answer from another origin ({origin})"),
            Error::MissingCredentials { .. } => "no credentials".to_string(),
            Error::InvalidBody { status, reason, .. } => format!("HTTP {status} body is not a task ({reason})"),
            Error::BodyTooLarge { status, limit, .. } => format!("HTTP {status} body over the {limit}-byte cap"),
            other => match other.status() {
                Some(status) => format!("HTTP {status}"),
                None => "error".to_string(),
            },
        }
    }

    /// The wait ran out of time (deadline passed, or a `Retry-After` pointed past it).
    pub fn is_deadline(&self) -> bool {
        matches!(self, Error::DeadlineExceeded { .. } | Error::RetryAfterPastDeadline { .. })
    }

    /// The task itself failed or was cancelled.
    pub fn is_task_failure(&self) -> bool {
        matches!(self, Error::TaskFailed { .. } | Error::TaskCancelled { .. })
    }

    /// The caller cancelled the wait before it ended (see [`crate::Waiter::cancel`]).
    pub fn is_wait_cancelled(&self) -> bool {
        matches!(self, Error::WaitCancelled { .. })
    }

    /// The pending-forever guard tripped.
    pub fn is_still_pending(&self) -> bool {
        matches!(self, Error::StillPending { .. })
    }

    /// A webhook delivery was refused ([`Error::WebhookRefused`]).
    pub fn is_webhook_refused(&self) -> bool {
        matches!(self, Error::WebhookRefused { .. })
    }

    /// Why a webhook delivery was refused, when it was.
    pub fn webhook_refusal(&self) -> Option<crate::webhook::WebhookRefusal> {
        match self {
            Error::WebhookRefused { reason, .. } => Some(*reason),
            _ => None,
        }
    }

    /// A wait store could not be opened, read or written ([`Error::Store`]).
    pub fn is_store(&self) -> bool {
        matches!(self, Error::Store { .. })
    }

    /// Bad configuration, input or usage (nothing was sent).
    pub fn is_config(&self) -> bool {
        matches!(
            self,
            Error::Config { .. }
                | Error::UnknownProvider { .. }
                | Error::ProviderNotConfigured { .. }
                | Error::InvalidTaskId { .. }
                | Error::InvalidTaskRef { .. }
                | Error::InvalidPolicy { .. }
        )
    }

    /// The server's `Retry-After` hint.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::Api { retry_after, .. } => *retry_after,
            Error::RetryAfterPastDeadline { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }

    /// The final or last observation of the task, when there is one.
    pub fn task(&self) -> Option<&Task> {
        match self {
            Error::TaskFailed { task } | Error::TaskCancelled { task } | Error::UnknownStatus { task, .. } => {
                Some(task)
            }
            Error::DeadlineExceeded { last, .. } | Error::RetryAfterPastDeadline { last, .. } => last.as_deref(),
            Error::StillPending { last, .. } => Some(last),
            _ => None,
        }
    }

    /// The task to re-attach to after a wait ended early.
    pub fn task_ref(&self) -> Option<&TaskRef> {
        match self {
            Error::DeadlineExceeded { task_ref, .. }
            | Error::RetryAfterPastDeadline { task_ref, .. }
            | Error::StillPending { task_ref, .. }
            | Error::WaitCancelled { task_ref, .. } => Some(task_ref.as_ref()),
            other => other.task().map(Task::task_ref),
        }
    }

    /// Where a wait stood when it ended, to continue it (see [`crate::Client::resume`]).
    pub fn wait_state(&self) -> Option<&WaitState> {
        match self {
            Error::DeadlineExceeded { state, .. }
            | Error::RetryAfterPastDeadline { state, .. }
            | Error::StillPending { state, .. }
            | Error::UnknownStatus { state, .. }
            | Error::WaitCancelled { state, .. } => Some(state),
            _ => None,
        }
    }
}
