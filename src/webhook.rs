//! Webhooks raced against polling.
//!
//! A provider whose spec has an `x-taskpoll.webhook` block (specs/README.md,
//! "Webhooks") signs the deliveries it sends; [`crate::Client::verify_webhook`]
//! checks one (signature in constant time, timestamp within the spec's
//! tolerance on the client's [`crate::Clock`], body size and shape) and reads
//! it into the same [`crate::Task`] a poll gives, marked [`crate::Via::Webhook`].
//!
//! [`crate::Client::accept_webhook`] also hands a verified delivery to the
//! client's [`WebhookHub`]: every [`crate::Client::wait`] and
//! [`crate::Waiter`] wait on that task ends on the first terminal observation,
//! from either source; a delivery for a task nobody waits on yet is kept
//! (bounded: the oldest is dropped first) until a wait on it starts. Polling
//! goes on underneath as the reconciliation path, so a lost webhook costs
//! only time; while a provider's webhooks arrive, its polls are spaced by the
//! spec's `poll-factor`.
//!
//! With the `webhook` feature, [`router`] is an axum router to mount in your
//! own server and [`serve`] runs one on its own, with a cap on the
//! connections senders hold open at once and a time limit on each
//! ([`ReceiverLimits`], [`serve_with`]); both answer 204 to a verified
//! delivery, 401 to a bad signature or timestamp, 400 to a malformed body,
//! 413 to an oversized one and 404 to an unknown provider.
//!
//! A provider whose status endpoint never carries the result (Cloudinary
//! Analysis: `result-only-by-webhook`) is treated so: when a poll sees the
//! success first and the hub is listening ([`WebhookHub::set_listening`],
//! done by [`router`] and [`serve`]), the wait keeps waiting for the webhook
//! for the spec's `grace` (never past the deadline), then returns the
//! webhook's task, or the polled success without a result if none came. A
//! [`crate::Wait`] yields the polled success's event, then (after up to the
//! grace) the webhook's; the webhook's verdict wins (its `error` makes the
//! task failed).

#[cfg(feature = "webhook")]
mod connections;
mod hub;
#[cfg(feature = "webhook")]
mod receiver;
mod verify;

#[cfg(feature = "webhook")]
pub use connections::ReceiverLimits;
pub use hub::{Delivery, WebhookHub};
#[cfg(feature = "webhook")]
pub use receiver::{WebhookServer, router, serve, serve_with};

pub(crate) use hub::{Registration, Sink};
#[cfg_attr(not(feature = "simulator"), allow(unused_imports))]
pub(crate) use verify::sign;
pub(crate) use verify::verify;

/// Default number of deliveries kept for tasks nobody waits on yet.
pub const DEFAULT_UNCLAIMED_CAPACITY: usize = 10_000;

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

pub(crate) fn refused(provider: &str, reason: WebhookRefusal) -> crate::Error {
    crate::Error::WebhookRefused(crate::error::WebhookRefused { provider: crate::task::excerpt(provider, 40), reason })
}

impl crate::Client {
    /// Checks a webhook delivery that claims to come from `provider` (the
    /// request's headers and raw body, byte for byte as received) against the
    /// scheme its spec declares, and reads it as a [`crate::Task`] (marked
    /// [`crate::Via::Webhook`]). The timestamp is checked against the
    /// client's clock ([`crate::ClientBuilder::clock`]).
    ///
    /// Fails with [`crate::Error::WebhookRefused`] (see [`WebhookRefusal`])
    /// for a bad or missing signature, a stale or future timestamp, an
    /// oversized or non-JSON body, no scheme in the spec or no secret;
    /// [`crate::Error::UnknownProvider`] or
    /// [`crate::Error::ProviderNotConfigured`] for a provider this client
    /// does not know. Verifying hands nothing to the waits: see
    /// [`crate::Client::accept_webhook`].
    pub fn verify_webhook(
        &self,
        provider: &str,
        headers: &http::HeaderMap,
        raw_body: &[u8],
    ) -> crate::Result<crate::Task> {
        let configured = self.configured(provider)?;
        let spec = configured.spec;
        let hook = spec.webhook.as_ref().ok_or_else(|| refused(spec.name, WebhookRefusal::NotDeclared))?;
        let secret = webhook_secret(configured, hook).ok_or_else(|| refused(spec.name, WebhookRefusal::NoSecret))?;
        let now = self.inner().webhooks.clock().wall();
        let result = verify(spec, &secret, headers, raw_body, now);
        match &result {
            Ok(task) => tracing::debug!(task = %task.task_ref(), phase = %task.phase(), "webhook verified"),
            Err(error) => tracing::info!(provider = spec.name, error = %error, "webhook refused"),
        }
        result
    }

    /// [`Client::verify_webhook`], then hands the verified task to the waits
    /// on it (or keeps it for the first one: see [`WebhookHub::deliver`]).
    /// What a receiver calls for each delivery.
    ///
    /// [`Client::verify_webhook`]: crate::Client::verify_webhook
    pub fn accept_webhook(
        &self,
        provider: &str,
        headers: &http::HeaderMap,
        raw_body: &[u8],
    ) -> crate::Result<crate::Task> {
        let task = self.verify_webhook(provider, headers, raw_body)?;
        self.inner().webhooks.deliver(task.clone());
        Ok(task)
    }

    /// The hub that hands verified deliveries to this client's waits.
    pub fn webhooks(&self) -> &WebhookHub {
        &self.inner().webhooks
    }
}

/// The secret for a provider's webhooks: the configured one, else the
/// credential of the scheme the spec names (a basic scheme's password).
fn webhook_secret(
    configured: &crate::client::Configured,
    hook: &crate::spec::WebhookSpec,
) -> Option<secrecy::SecretString> {
    if let Some(secret) = &configured.webhook_secret {
        return Some(secret.clone());
    }
    let scheme = hook.secret_scheme?;
    let credentials = configured.ctx.credentials.read().unwrap_or_else(|e| e.into_inner());
    credentials.iter().find(|held| held.scheme == scheme).map(|held| match &held.credential {
        crate::Credential::Basic { password, .. } => password.clone(),
        crate::Credential::Token(token) => token.clone(),
    })
}
