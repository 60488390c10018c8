//! Errors of configuration and input (nothing was sent), of webhook
//! deliveries and of wait stores.

use super::BoxError;
use crate::webhook::WebhookRefusal;

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

/// No provider of that name is built into this crate.
#[derive(Debug, Clone, thiserror::Error)]
#[error("unknown provider `{name}` (known: {known})")]
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

/// A wait store (`taskpoll::store`) could not be opened, read or written.
#[derive(Debug, thiserror::Error)]
#[error("wait store: {message}")]
pub struct StoreError {
    pub(crate) message: String,
    #[source]
    pub(crate) source: Option<BoxError>,
}

impl StoreError {
    /// What was being done.
    pub fn message(&self) -> &str {
        &self.message
    }
}
