//! Signed webhook deliveries of simulated tasks, from the spec's
//! `x-taskpoll.webhook` block alone.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use secrecy::SecretString;
use serde_json::{Value, json};

use super::bodies::{self, Rendered, set_pointer};
use super::record::WebhookDelivery;
use super::server::Shared;
use crate::spec::{ProviderSpec, SchemeKind, WebhookSpec};
use crate::{Phase, TaskRef};

/// How often a watched task's answer is looked at for its end (tokio time).
const WATCH_EVERY: Duration = Duration::from_millis(20);
/// Sends of a refused delivery after the first, by default.
const DEFAULT_RETRIES: u32 = 8;
/// The wait before the first resend of a refused delivery; doubled after
/// each, up to [`LAST_BACKOFF`] (each wait drawn between half and all of it).
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const LAST_BACKOFF: Duration = Duration::from_secs(8);
/// How long one send may take before it counts as failed (and is sent again).
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the simulator sends a task's webhook when the task finishes, and
/// how it misbehaves ([`super::Simulator::add_task_with_callback`]).
///
/// As providers do, a delivery the receiver refuses (no connection, no
/// answer within 10 s, or an answer of 408, 429 or 5xx) is sent again, with
/// exponential backoff (from 250 ms, doubling, at most 8 s, with jitter), up
/// to [`Callback::retries`] times, each time signed anew. Another answer
/// (2xx, or a 4xx such as 401 for a bad signature) ends it.
///
/// ```
/// use std::time::Duration;
/// use taskpoll::simulator::Callback;
/// let lossy = Callback::to("http://127.0.0.1:9000/cloudinary").drop_rate(0.5).delay(Duration::from_millis(200));
/// # let _ = lossy;
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct Callback {
    pub(crate) url: String,
    pub(crate) drop_rate: f64,
    pub(crate) delay: Duration,
    pub(crate) seed: Option<u64>,
    pub(crate) retries: u32,
}

impl Callback {
    /// Deliveries go to `url` (a POST with the provider's signature headers).
    pub fn to(url: impl Into<String>) -> Self {
        Self { url: url.into(), drop_rate: 0.0, delay: Duration::ZERO, seed: None, retries: DEFAULT_RETRIES }
    }

    /// The share of deliveries lost on the way, from 0 (none, the default)
    /// to 1 (all): a lost delivery is never sent, as when a provider gives up.
    pub fn drop_rate(mut self, rate: f64) -> Self {
        self.drop_rate = if rate.is_finite() { rate.clamp(0.0, 1.0) } else { 0.0 };
        self
    }

    /// How long after the task finishes the delivery is sent (tokio time).
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// How many times a refused delivery is sent again (default 8; 0: sent
    /// once, whatever the answer).
    pub fn retries(mut self, retries: u32) -> Self {
        self.retries = retries;
        self
    }

    /// A seed for the drop draws, for reproducible runs.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }
}

/// The secret that signs a provider's demo webhooks: the demo credential of
/// the scheme the spec names, or a demo webhook secret (what
/// [`super::Simulator::client_config`] configures).
pub(crate) fn demo_secret(spec: &ProviderSpec, hook: &WebhookSpec) -> Option<SecretString> {
    if let Some(name) = hook.secret_scheme {
        let scheme = spec.scheme(name)?;
        return Some(SecretString::from(match scheme.kind {
            SchemeKind::Basic => super::auth::demo_basic(spec, scheme).1,
            _ => super::auth::demo_token(spec, scheme),
        }));
    }
    hook.secret_env.map(|_| SecretString::from(demo_webhook_secret(spec)))
}

/// The demo value of a separate webhook secret.
pub(crate) fn demo_webhook_secret(spec: &ProviderSpec) -> String {
    format!("sim-{}-webhook-secret", spec.name)
}

/// The payload that reports a finished task: the status answer's body when
/// the payload carries a status (its shape is the status endpoint's), else
/// one built at the spec's pointers (Cloudinary: `error` and `http_status`
/// for a failure, a simulated result at `result` for a success).
pub(crate) fn payload(hook: &WebhookSpec, id: &str, phase: Phase, error: Option<&str>, answer: &Value) -> Value {
    if hook.status.is_some() {
        let mut body = answer.clone();
        set_pointer(&mut body, hook.id, Value::String(id.to_string()));
        return body;
    }
    let mut body = json!({});
    set_pointer(&mut body, hook.id, Value::String(id.to_string()));
    let failed = phase != Phase::Succeeded;
    if let Some(pointer) = hook.http_status {
        set_pointer(&mut body, pointer, json!(if failed { 400 } else { 200 }));
    }
    if failed {
        let message = error.unwrap_or("simulated failure");
        match (hook.error.first(), hook.failed_if_present.first()) {
            (Some(at), _) => set_pointer(&mut body, at, json!(message)),
            (None, Some(at)) => set_pointer(&mut body, at, json!({ "message": message })),
            (None, None) => {}
        }
    } else if let Some(pointer) = hook.result {
        set_pointer(&mut body, pointer, json!({ "simulated_result": { "task_id": id } }));
    }
    body
}

/// Watches a task until it finishes, then sends (or drops) its webhook.
pub(crate) async fn watch_and_send(shared: Arc<Shared>, spec: &'static ProviderSpec, id: String, callback: Callback) {
    let Some(hook) = spec.webhook.as_ref() else { return };
    let Some(secret) = demo_secret(spec, hook) else { return };
    let Ok(task_ref) = TaskRef::of_spec(spec, id.clone()) else { return };
    let mut shutdown = shared.shutdown.clone();
    let (rendered, task) = loop {
        let answer = {
            let state = shared.lock();
            match state.tasks.get(&(spec.name, id.clone())) {
                Some(entry) => entry.progress.peek(tokio::time::Instant::now()),
                None => return,
            }
        };
        if let Ok(rendered) = bodies::render(spec, spec.get.operation, &id, &answer) {
            let task = crate::observe::task_from_body(spec, task_ref.clone(), rendered.status, rendered.body.clone());
            if task.is_terminal() {
                break (rendered, task);
            }
        }
        tokio::select! {
            () = tokio::time::sleep(WATCH_EVERY) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
    };
    tokio::time::sleep(callback.delay).await;
    let Rendered { body, .. } = rendered;
    let payload = payload(hook, &id, task.phase(), task.error(), &body);
    let mut rng = callback.seed.map_or_else(fastrand::Rng::new, fastrand::Rng::with_seed);
    let dropped = callback.drop_rate > 0.0 && rng.f64() < callback.drop_rate;
    let mut record = WebhookDelivery { task: task_ref, phase: task.phase(), sent: !dropped, status: None, attempts: 0 };
    if !dropped {
        let sender = shared.webhook_sender.get_or_init(|| {
            reqwest::Client::builder().timeout(SEND_TIMEOUT).build().unwrap_or_else(|_| reqwest::Client::new())
        });
        let bytes = payload.to_string().into_bytes();
        let mut backoff = FIRST_BACKOFF;
        loop {
            record.attempts += 1;
            // Signed at each send: a resend carries a fresh timestamp, as a provider's does.
            let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
            let mut request = sender.post(&callback.url).header("content-type", "application/json");
            for (name, value) in crate::webhook::sign(hook, &secret, &bytes, now) {
                request = request.header(name, value);
            }
            let refused = match request.body(bytes.clone()).send().await {
                Ok(response) => {
                    let status = response.status();
                    record.status = Some(status.as_u16());
                    status.is_server_error() || status.as_u16() == 408 || status.as_u16() == 429
                }
                Err(e) => {
                    record.status = None;
                    tracing::info!(error = %e, attempt = record.attempts, "simulator: webhook delivery failed");
                    true
                }
            };
            if !refused || record.attempts > callback.retries {
                break;
            }
            // Between half and all of the backoff, so refused senders do not come back all at once.
            let wait = backoff.mul_f64(0.5 + rng.f64() / 2.0);
            backoff = (backoff * 2).min(LAST_BACKOFF);
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                _ = shutdown.wait_for(|stop| *stop) => break,
            }
        }
    }
    shared.lock().webhooks.push(record);
}
