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
//! webhook's task, or the polled success without a result if none came.
//! A watched [`crate::Wait`] yields the polled success's event, then (after up to the
//! grace) the webhook's; the webhook's verdict wins (its `error` makes the
//! task failed).

#[cfg(feature = "webhook")]
mod connections;
pub(crate) mod hub;
#[cfg(feature = "webhook")]
mod receiver;
mod verify;

#[cfg(feature = "webhook")]
pub use connections::ReceiverLimits;
pub use hub::{DEFAULT_UNCLAIMED_CAPACITY, Delivery, WebhookHub};
#[cfg(feature = "webhook")]
pub use receiver::{WebhookServer, router, serve, serve_with};
#[cfg(all(feature = "webhook", any(feature = "store-sqlite", feature = "store-postgres")))]
pub use receiver::{serve_store, store_router};

pub use crate::error::WebhookRefusal;
pub(crate) use hub::{Registration, Sink};
#[cfg_attr(not(feature = "simulator"), allow(unused_imports))]
pub(crate) use verify::sign;
pub(crate) use verify::verify;

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
        let hook = spec
            .webhook
            .as_ref()
            .ok_or_else(|| crate::Error::webhook_refused(spec.name, WebhookRefusal::NotDeclared))?;
        let secret = webhook_secret(configured, hook)
            .ok_or_else(|| crate::Error::webhook_refused(spec.name, WebhookRefusal::NoSecret))?;
        let now = self.inner().webhooks.clock().wall();
        let result = verify(spec, &secret, headers, raw_body, now);
        crate::telemetry::webhook_received(spec.name, result.is_ok());
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
    configured: &crate::config::Configured,
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
