//! The errors of one call to a provider: each knows the provider and the operation.

use std::time::Duration;

use super::{BoxError, TransportKind, seconds};

/// The provider and the operation, which every error of a call names.
macro_rules! call_accessors {
    ($($error:ident),* $(,)?) => {$(
        impl $error {
            /// The provider.
            pub fn provider(&self) -> &'static str {
                self.provider
            }
            /// The operation (the spec's `operationId`).
            pub fn operation(&self) -> &'static str {
                self.operation
            }
        }
    )*};
}

call_accessors!(
    MissingCredentials,
    InvalidRequest,
    TransportError,
    ApiError,
    InvalidBody,
    BodyTooLarge,
    CrossOriginAnswer,
    TaskIdMismatch,
);

/// No credential satisfies the operation's security; nothing was sent.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{provider}: no credentials for `{operation}` (needs {needed})")]
pub struct MissingCredentials {
    pub(crate) provider: &'static str,
    pub(crate) operation: &'static str,
    pub(crate) needed: String,
}

impl MissingCredentials {
    /// The scheme alternatives, e.g. `basicAuth or OAuth2`.
    pub fn needed(&self) -> &str {
        &self.needed
    }
}

/// The request could not be built (e.g. a header value with bad bytes); nothing was sent.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{provider} {operation}: invalid request: {message}")]
pub struct InvalidRequest {
    pub(crate) provider: &'static str,
    pub(crate) operation: &'static str,
    pub(crate) message: String,
}

impl InvalidRequest {
    /// What progenitor or reqwest refused.
    pub fn message(&self) -> &str {
        &self.message
    }
}

/// Connecting, sending or reading failed, or the request timed out.
#[derive(Debug, thiserror::Error)]
#[error("{provider} {operation}: {}", self.describe())]
pub struct TransportError {
    pub(crate) provider: &'static str,
    pub(crate) operation: &'static str,
    pub(crate) kind: TransportKind,
    pub(crate) host: String,
    pub(crate) timeout: Option<Duration>,
    #[source]
    pub(crate) source: BoxError,
}

impl TransportError {
    /// What kind of failure.
    pub fn kind(&self) -> TransportKind {
        self.kind
    }
    /// The host (and port) the request went to; never userinfo, path or query.
    pub fn host(&self) -> &str {
        &self.host
    }
    /// The time limit that applied, for [`TransportKind::Timeout`] and
    /// [`TransportKind::DeadlineBudget`].
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout
    }

    /// What happened, without the provider and operation.
    pub(crate) fn describe(&self) -> String {
        let what = self.kind.describe(&self.host);
        match (self.kind, self.timeout) {
            (TransportKind::Timeout, Some(t)) => format!("{what} (request timeout of {})", seconds(t)),
            (TransportKind::DeadlineBudget, Some(t)) => format!("{what} ({} were left)", seconds(t)),
            _ => what,
        }
    }

    /// A copy; the source (not `Clone`) is kept as its text.
    pub(crate) fn duplicate(&self) -> Self {
        TransportError { host: self.host.clone(), source: self.source.to_string().into(), ..*self }
    }
}

/// The provider answered with an HTTP error that is not a task.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{provider} {operation}: HTTP {status}{}", message.as_ref().map(|m| format!(": {m}")).unwrap_or_default())]
pub struct ApiError {
    pub(crate) provider: &'static str,
    pub(crate) operation: &'static str,
    pub(crate) status: u16,
    pub(crate) message: Option<String>,
    pub(crate) body_excerpt: String,
    pub(crate) body_is_json: bool,
    pub(crate) retry_after: Option<Duration>,
}

impl ApiError {
    /// The HTTP status.
    pub fn status(&self) -> u16 {
        self.status
    }
    /// The provider's error message, when the body had one (server text: escape it before printing).
    pub fn message(&self) -> Option<&str> {
        self.message.as_deref()
    }
    /// The start of the body (at most 512 characters; server text).
    pub fn body_excerpt(&self) -> &str {
        &self.body_excerpt
    }
    /// Whether the body was JSON.
    pub fn body_is_json(&self) -> bool {
        self.body_is_json
    }
    /// The `Retry-After` hint, if the answer had one.
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }
}

/// A success answer whose body is not a task (HTML, malformed JSON, a non-object).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{provider} {operation}: HTTP {status} body is not a task ({reason})")]
pub struct InvalidBody {
    pub(crate) provider: &'static str,
    pub(crate) operation: &'static str,
    pub(crate) status: u16,
    pub(crate) reason: String,
    pub(crate) body_excerpt: String,
}

impl InvalidBody {
    /// The HTTP status.
    pub fn status(&self) -> u16 {
        self.status
    }
    /// What was wrong.
    pub fn reason(&self) -> &str {
        &self.reason
    }
    /// The start of the body (server text).
    pub fn body_excerpt(&self) -> &str {
        &self.body_excerpt
    }
}

/// A task's body does not read as the type asked for with
/// [`crate::Task::typed`] (a field missing, of another type, …).
#[derive(Debug, Clone, thiserror::Error)]
#[error("task {task}: the body does not read as `{type_name}` at `{path}`: {message}")]
pub struct TypedBody {
    pub(crate) task: String,
    pub(crate) type_name: &'static str,
    pub(crate) path: String,
    pub(crate) message: String,
}

impl TypedBody {
    /// The task, as `provider:id`.
    pub fn task(&self) -> &str {
        &self.task
    }
    /// The type asked for (its full Rust path).
    pub fn type_name(&self) -> &'static str {
        self.type_name
    }
    /// Where in the body it failed, as serde walked it (`data.status`; `.` for the body itself).
    pub fn path(&self) -> &str {
        &self.path
    }
    /// What serde found wrong there (server text is not repeated beyond what serde quotes).
    pub fn message(&self) -> &str {
        &self.message
    }
}

/// The body was larger than the configured cap and was not read.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{provider} {operation}: HTTP {status} body exceeds the {limit}-byte cap")]
pub struct BodyTooLarge {
    pub(crate) provider: &'static str,
    pub(crate) operation: &'static str,
    pub(crate) status: u16,
    pub(crate) limit: usize,
}

impl BodyTooLarge {
    /// The HTTP status.
    pub fn status(&self) -> u16 {
        self.status
    }
    /// The cap, in bytes.
    pub fn limit(&self) -> usize {
        self.limit
    }
}

/// The answer came from another origin than the request's (a redirect
/// followed by a caller-supplied HTTP client); it was not read.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "{provider} {operation}: refused an answer from another origin ({origin}); disable redirects on the HTTP client given to ClientBuilder::http_client"
)]
pub struct CrossOriginAnswer {
    pub(crate) provider: &'static str,
    pub(crate) operation: &'static str,
    pub(crate) origin: String,
}

impl CrossOriginAnswer {
    /// The origin that answered (`scheme://host:port`).
    pub fn origin(&self) -> &str {
        &self.origin
    }
}

/// The answer is about another task than the one asked for (the body's id,
/// where the spec says it is, differs); it is not taken as the task.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{provider} {operation}: asked for task {requested:?} but the answer is about task {answered:?}")]
pub struct TaskIdMismatch {
    pub(crate) provider: &'static str,
    pub(crate) operation: &'static str,
    pub(crate) requested: String,
    pub(crate) answered: String,
}

impl TaskIdMismatch {
    /// The id asked for (an excerpt).
    pub fn requested(&self) -> &str {
        &self.requested
    }
    /// The id in the answer, as text (an excerpt; server text).
    pub fn answered(&self) -> &str {
        &self.answered
    }
}

/// A batch answer did not include this id.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{provider}: task {id:?} is missing from the batch answer")]
pub struct MissingFromBatch {
    pub(crate) provider: &'static str,
    pub(crate) id: String,
}

impl MissingFromBatch {
    /// The provider.
    pub fn provider(&self) -> &'static str {
        self.provider
    }
    /// The id asked for.
    pub fn id(&self) -> &str {
        &self.id
    }
}

/// A call through a generated client (`taskpoll::generated::<provider>::client`)
/// failed; `?` converts progenitor's error into this one.
#[derive(Debug, thiserror::Error)]
#[error("generated client: {message}")]
pub struct GeneratedCallError {
    pub(crate) status: Option<u16>,
    pub(crate) message: String,
    pub(crate) kind: Option<TransportKind>,
    #[source]
    pub(crate) source: Option<BoxError>,
}

impl GeneratedCallError {
    /// The HTTP status, when the server answered.
    pub fn status(&self) -> Option<u16> {
        self.status
    }
    /// What went wrong (never the body or a credential).
    pub fn message(&self) -> &str {
        &self.message
    }
    /// The kind of transport failure, when the request did not get an answer.
    pub fn kind(&self) -> Option<TransportKind> {
        self.kind
    }
}
