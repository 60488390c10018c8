//! Errors of configuration and input (nothing was sent), of webhook
//! deliveries and of wait stores.

use super::BoxError;

/// The client configuration is unusable (bad URL, bad variable, nothing configured).
#[derive(Debug, Clone, thiserror::Error)]
#[error("configuration: {message}")]
pub struct ConfigError {
    pub(crate) message: String,
}

impl ConfigError {
    /// What is wrong.
    pub fn message(&self) -> &str {
        &self.message
    }
}

/// No provider of that name is built into this crate or registered.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "unknown provider `{name}` (known: {known}); a provider generated in your own crate is known once \
     registered: ClientBuilder::register or taskpoll::spec::register"
)]
pub struct UnknownProvider {
    pub(crate) name: String,
    pub(crate) known: String,
}

impl UnknownProvider {
    /// The name asked for (an excerpt).
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The names that exist, comma-separated.
    pub fn known(&self) -> &str {
        &self.known
    }
}

/// The provider exists but this client was not configured for it.
#[derive(Debug, Clone, thiserror::Error)]
#[error("provider `{provider}` is not configured on this client")]
pub struct ProviderNotConfigured {
    pub(crate) provider: String,
}

impl ProviderNotConfigured {
    /// The provider.
    pub fn provider(&self) -> &str {
        &self.provider
    }
}

/// The task id cannot be sent safely; nothing was sent.
#[derive(Debug, Clone, thiserror::Error)]
#[error("invalid task id {id:?}: {reason}")]
pub struct InvalidTaskId {
    pub(crate) id: String,
    pub(crate) reason: &'static str,
}

impl InvalidTaskId {
    /// The id (an excerpt).
    pub fn id(&self) -> &str {
        &self.id
    }
    /// Why it was refused.
    pub fn reason(&self) -> &'static str {
        self.reason
    }
}

/// A task reference string or input is malformed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("invalid task reference {input:?}: {reason}")]
pub struct InvalidTaskRef {
    pub(crate) input: String,
    pub(crate) reason: String,
}

impl InvalidTaskRef {
    /// The input (an excerpt).
    pub fn input(&self) -> &str {
        &self.input
    }
    /// Why it was refused.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

/// A polling policy was rejected by its builder.
#[derive(Debug, Clone, thiserror::Error)]
#[error("invalid policy: {message}")]
pub struct InvalidPolicy {
    pub(crate) message: String,
}

impl InvalidPolicy {
    /// What is wrong.
    pub fn message(&self) -> &str {
        &self.message
    }
}

/// A webhook delivery was refused (bad or missing signature, stale or future
/// timestamp, oversized or malformed body, no scheme or secret to check it
/// with); nothing was handed to a wait. Never shows the secret, the signature
/// or the body.
#[derive(Debug, Clone, thiserror::Error)]
#[error("webhook from {provider} refused: {reason}")]
pub struct WebhookRefused {
    pub(crate) provider: String,
    pub(crate) reason: WebhookRefusal,
}

impl WebhookRefused {
    /// The provider the delivery claimed to come from (an excerpt).
    pub fn provider(&self) -> &str {
        &self.provider
    }
    /// Why it was refused.
    pub fn reason(&self) -> WebhookRefusal {
        self.reason
    }
}

/// Why a webhook delivery was refused ([`crate::Error::WebhookRefused`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WebhookRefusal {
    /// The provider's spec declares no webhook scheme.
    #[error("the provider's spec declares no webhook scheme")]
    NotDeclared,
    /// No secret is configured to check the signature with.
    #[error("no webhook secret is configured for it")]
    NoSecret,
    /// A header the scheme needs is missing (or not text).
    #[error("the `{0}` header is missing")]
    MissingHeader(&'static str),
    /// The signature does not match the body (or is not in the declared encoding).
    #[error("the signature does not match")]
    BadSignature,
    /// The timestamp header is not a Unix time in seconds.
    #[error("the timestamp is not a Unix time")]
    BadTimestamp,
    /// The timestamp is older than the tolerance (a replay, or a late retry).
    #[error("the timestamp is too old")]
    StaleTimestamp,
    /// The timestamp is further in the future than the tolerance.
    #[error("the timestamp is in the future")]
    FutureTimestamp,
    /// The body is larger than the scheme's `max-body`.
    #[error("the body exceeds the {limit}-byte cap")]
    BodyTooLarge {
        /// The cap.
        limit: usize,
    },
    /// The body is not a JSON object.
    #[error("the body is not a JSON object")]
    NotJson,
    /// The payload has no usable task id where the spec says.
    #[error("the payload has no usable task id")]
    NoTaskId,
}

impl WebhookRefusal {
    /// The HTTP status a receiver answers: 413 for an oversized body, 400 for
    /// a malformed one, 401 for a signature or timestamp that does not check
    /// out, 404 when no scheme is declared, 503 when no secret is configured.
    pub fn http_status(self) -> u16 {
        match self {
            WebhookRefusal::BodyTooLarge { .. } => 413,
            WebhookRefusal::NotJson | WebhookRefusal::NoTaskId => 400,
            WebhookRefusal::NotDeclared => 404,
            WebhookRefusal::NoSecret => 503,
            WebhookRefusal::MissingHeader(_)
            | WebhookRefusal::BadSignature
            | WebhookRefusal::BadTimestamp
            | WebhookRefusal::StaleTimestamp
            | WebhookRefusal::FutureTimestamp => 401,
        }
    }
}

/// A wait store (`taskpoll::store`) could not be opened, read or written.
#[derive(Debug, thiserror::Error)]
#[error("wait store: {message}")]
pub struct StoreError {
    pub(crate) message: String,
    pub(crate) fault: StoreFault,
    #[source]
    pub(crate) source: Option<BoxError>,
}

impl StoreError {
    /// What was being done.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// What went wrong with the database, as far as its error says.
    pub fn fault(&self) -> StoreFault {
        self.fault
    }
}

/// What went wrong with a store's database ([`StoreError::fault`]), so that
/// a caller can tell a fault that passes (retry) from one that needs a person.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StoreFault {
    /// The database cannot be reached (down, restarting, connection lost,
    /// no connection free in time): writes resume when it is back.
    Unavailable,
    /// Another writer held the database's lock beyond the busy timeout (SQLite).
    Locked,
    /// The database or its file is read-only.
    ReadOnly,
    /// The disk (or the file-size limit) is full.
    Full,
    /// Anything else (a constraint, bad data, a bug).
    Other,
}
