//! What taskpoll reports about itself, named in one place: the spans of
//! waits and reads (`tracing`), and, with the feature `metrics`, the metrics
//! (the `metrics` facade: the application installs the recorder).
//!
//! The engine and the transport call in here with a line each; the names
//! and labels below are the whole vocabulary. HTTP reads use OpenTelemetry's
//! HTTP client conventions; what has no convention is named `taskpoll.*`.
//! A task id is an attribute of its wait's span, never a metric label (one
//! series per task would grow without bound).
//!
//! Spans, all at INFO level (nothing is built unless a subscriber wants them):
//! - `taskpoll.wait`: one per wait, from its start to its end: `provider`,
//!   `task_id`, `policy`; `outcome` and `polls` when it ends. Its single
//!   reads are its children.
//! - `taskpoll.batch`: one per batch read: `provider`, `taskpoll.batch.size`.
//! - `taskpoll.http`: one per HTTP request (named `GET /tasks/{id}` for
//!   OpenTelemetry through `otel.name`): `http.request.method`,
//!   `url.template` (the spec's path, relative to the base URL),
//!   `server.address`, `server.port`, `http.response.status_code`,
//!   `error.type`, `http.request.resend_count` (on a resend only: the read
//!   after a refreshed credential counts 1, each redirect followed one more).
//! - `taskpoll.rate_budget.wait`: from when a provider's due reads are first
//!   held by its rate budget (or its `Retry-After` pause) until the budget
//!   lets one go: `provider`, `reason`.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tracing::Instrument as _;

use crate::error::TransportKind;
use futures_util::future::BoxFuture;

use crate::spec::ProviderSpec;
use crate::{Clock, Error, Result, Task, TaskRef};

/// The metric names (the spans' names are in the module's documentation).
#[cfg_attr(not(feature = "metrics"), allow(dead_code))]
pub(crate) mod names {
    /// Histogram, seconds: one HTTP request, until its answer's head
    /// (OpenTelemetry's `http.request.method`, `server.address`,
    /// `server.port`, `url.template`, `http.response.status_code`, `error.type`).
    pub(crate) const HTTP_DURATION: &str = "http.client.request.duration";
    /// Histogram, seconds: one wait, start to end (`provider`, `outcome`).
    pub(crate) const WAIT_DURATION: &str = "taskpoll.wait.duration";
    /// Histogram: the polls one wait made (`provider`, `outcome`).
    pub(crate) const WAIT_POLLS: &str = "taskpoll.wait.polls";
    /// Gauge: waits in progress (`provider`).
    pub(crate) const WAITS_ACTIVE: &str = "taskpoll.waits.active";
    /// Histogram: tasks per batch read (`provider`).
    pub(crate) const BATCH_SIZE: &str = "taskpoll.batch.size";
    /// Counter: times due reads were held by the rate budget (`provider`,
    /// `reason`: `rate`, `shared` (a wait store's budget) or `paused`).
    pub(crate) const THROTTLED: &str = "taskpoll.ratelimit.throttled";
    /// Counter: provider-wide pauses on a 429 or 503 with `Retry-After` (`provider`).
    pub(crate) const PAUSED: &str = "taskpoll.provider.paused";
    /// Counter: webhook deliveries checked (`provider`, `verified`: `true` or `false`).
    pub(crate) const WEBHOOK_RECEIVED: &str = "taskpoll.webhook.received";
    /// Counter: verified deliveries that reached a wait (`provider`, `won`:
    /// `true` when the delivery ended the wait, `false` when polling had).
    pub(crate) const WEBHOOK_RACE: &str = "taskpoll.webhook.race";
    /// Counter: deliveries dropped unclaimed (nobody waited on their task
    /// and the hub was full) (`provider`).
    pub(crate) const DELIVERIES_DROPPED: &str = "taskpoll.webhook.dropped";
    /// Counter: waits a store worker let go because its lease was lost.
    pub(crate) const LEASES_LOST: &str = "taskpoll.lease.lost";
}

/// How a wait ended, as the `outcome` label and span attribute.
pub(crate) fn outcome(result: &Result<Task>) -> &'static str {
    let Err(error) = result else { return OUTCOMES[0] };
    match error {
        Error::TaskFailed(_) => OUTCOMES[1],
        Error::TaskCancelled(_) => OUTCOMES[2],
        Error::DeadlineExceeded(_) | Error::RetryAfterPastDeadline(_) => OUTCOMES[3],
        Error::StillPending(_) => OUTCOMES[4],
        Error::UnknownStatus(_) => OUTCOMES[5],
        Error::WaitCancelled(_) => OUTCOMES[6],
        _ => OUTCOMES[7],
    }
}

/// Every `outcome` value, [`outcome`]'s results in order.
const OUTCOMES: [&str; 8] =
    ["succeeded", "failed", "cancelled", "deadline", "still_pending", "unknown_status", "wait_cancelled", "error"];

// ---------------------------------------------------------------- one wait

/// A wait's span, kept with the wait from its start to its end. Boxed and
/// absent when no subscriber wants it: a wait then carries one pointer.
pub(crate) struct WaitSpan(Option<Box<tracing::Span>>);

impl WaitSpan {
    /// The span of a wait starting now, a child of the caller's current span.
    pub(crate) fn new(task_ref: &TaskRef, policy: &str) -> Self {
        let span = tracing::info_span!(
            "taskpoll.wait",
            provider = task_ref.provider(),
            task_id = task_ref.id(),
            policy,
            outcome = tracing::field::Empty,
            polls = tracing::field::Empty,
        );
        Self((!span.is_disabled()).then(|| Box::new(span)))
    }

    /// Enters the span (what is logged meanwhile is the wait's).
    fn enter(&self) -> Option<tracing::span::Entered<'_>> {
        self.0.as_deref().map(tracing::Span::enter)
    }

    /// The span, to enter while the wait's poll is observed (none when nobody wants it).
    pub(crate) fn current(&self) -> tracing::Span {
        self.0.as_deref().cloned().unwrap_or_else(tracing::Span::none)
    }

    /// A single read of the wait, its HTTP request a child of the wait's span.
    pub(crate) fn read<T: 'static>(&self, read: BoxFuture<'static, T>) -> BoxFuture<'static, T> {
        match &self.0 {
            Some(span) => Box::pin(read.instrument((**span).clone())),
            None => read,
        }
    }

    /// Ends the span with the wait's outcome and polls.
    fn end(self, outcome: &'static str, polls: u32, error: Option<&Error>) {
        let _entered = self.enter();
        if let Some(span) = &self.0 {
            span.record("outcome", outcome).record("polls", polls);
        }
        match error {
            None => tracing::debug!(polls, outcome, "wait ended"),
            Some(error) => tracing::debug!(polls, outcome, %error, "wait ended"),
        }
    }
}

// ---------------------------------------------------------------- one provider's lane

/// What one provider's scheduler reports: its waits' ends, its batch reads,
/// pauses and webhook races. Metric handles are registered once, when the
/// scheduler starts (install the recorder before the first wait).
pub(crate) struct Lane {
    provider: &'static str,
    #[cfg(feature = "metrics")]
    metrics: LaneMetrics,
}

#[cfg(feature = "metrics")]
struct LaneMetrics {
    active: metrics::Gauge,
    /// What `active` counts for this lane (several lanes may serve one provider).
    reported: usize,
    batch: metrics::Histogram,
    paused: metrics::Counter,
    /// `[lost, won]`.
    race: [metrics::Counter; 2],
    /// Duration and polls, by [`OUTCOMES`]' order, registered on the first
    /// wait that ends so (a series per outcome that never happens would be noise).
    ends: [std::sync::OnceLock<(metrics::Histogram, metrics::Histogram)>; OUTCOMES.len()],
}

impl Lane {
    pub(crate) fn new(provider: &'static str) -> Self {
        #[cfg(feature = "metrics")]
        let metrics = {
            describe();
            LaneMetrics {
                active: metrics::gauge!(names::WAITS_ACTIVE, "provider" => provider),
                reported: 0,
                batch: metrics::histogram!(names::BATCH_SIZE, "provider" => provider),
                paused: metrics::counter!(names::PAUSED, "provider" => provider),
                race: ["false", "true"]
                    .map(|won| metrics::counter!(names::WEBHOOK_RACE, "provider" => provider, "won" => won)),
                ends: Default::default(),
            }
        };
        Self {
            provider,
            #[cfg(feature = "metrics")]
            metrics,
        }
    }

    /// The lane holds `waits` waits now.
    pub(crate) fn waits_active(&mut self, waits: usize) {
        #[cfg(feature = "metrics")]
        if waits != self.metrics.reported {
            self.metrics.active.increment(waits as f64 - self.metrics.reported as f64);
            self.metrics.reported = waits;
        }
        let _ = waits;
    }

    /// A wait ended after `elapsed` (on its clock) and `polls` polls.
    pub(crate) fn wait_ended(&self, span: WaitSpan, result: &Result<Task>, polls: u32, elapsed: Duration) {
        let outcome = outcome(result);
        #[cfg(feature = "metrics")]
        if let Some(at) = OUTCOMES.iter().position(|o| *o == outcome) {
            let provider = self.provider;
            let (duration, polls_of) = self.metrics.ends[at].get_or_init(|| {
                let labels = [("provider", provider), ("outcome", outcome)];
                (metrics::histogram!(names::WAIT_DURATION, &labels), metrics::histogram!(names::WAIT_POLLS, &labels))
            });
            duration.record(elapsed.as_secs_f64());
            polls_of.record(f64::from(polls));
        }
        let _ = elapsed;
        span.end(outcome, polls, result.as_ref().err());
    }

    /// A batch read of `size` tasks, in its own span (its HTTP requests are its children).
    pub(crate) fn batch<T: 'static>(&self, size: usize, read: BoxFuture<'static, T>) -> BoxFuture<'static, T> {
        #[cfg(feature = "metrics")]
        self.metrics.batch.record(size as f64);
        let span = tracing::info_span!("taskpoll.batch", provider = self.provider, "taskpoll.batch.size" = size);
        if span.is_disabled() { read } else { Box::pin(read.instrument(span)) }
    }

    /// The provider is paused for `pause` (a 429 or 503 with `Retry-After`).
    pub(crate) fn paused(&self, pause: Duration) {
        #[cfg(feature = "metrics")]
        self.metrics.paused.increment(1);
        tracing::debug!(provider = self.provider, pause_ms = pause.as_millis() as u64, "provider paused");
    }

    /// A verified webhook delivery reached a wait: it ended it (`won`), or
    /// polling had ended it first.
    pub(crate) fn webhook_race(&self, won: bool) {
        #[cfg(feature = "metrics")]
        self.metrics.race[usize::from(won)].increment(1);
        tracing::debug!(provider = self.provider, won, "webhook delivery reached its wait");
    }
}

#[cfg(feature = "metrics")]
impl Drop for Lane {
    fn drop(&mut self) {
        self.waits_active(0);
    }
}

// ---------------------------------------------------------------- the rate budget

/// Why the rate budget held a read.
#[derive(Debug, Clone, Copy)]
pub(crate) enum HeldBy {
    /// The provider's rate.
    Rate = 0,
    /// A wait store's budget shared by every process.
    Shared = 1,
    /// A provider-wide pause after a `Retry-After`.
    Paused = 2,
}

/// The rate budget's holds: a span from the first refusal until the next
/// grant, and a count per hold (not per refusal: a scheduler asks again on
/// every turn while held).
pub(crate) struct Throttle {
    provider: &'static str,
    holding: bool,
    span: Option<tracing::Span>,
    #[cfg(feature = "metrics")]
    counts: [metrics::Counter; 3],
}

impl Throttle {
    pub(crate) fn new(provider: &'static str) -> Self {
        Self {
            provider,
            holding: false,
            span: None,
            #[cfg(feature = "metrics")]
            counts: ["rate", "shared", "paused"]
                .map(|reason| metrics::counter!(names::THROTTLED, "provider" => provider, "reason" => reason)),
        }
    }

    /// The budget refused a read, for `wait` at least.
    pub(crate) fn held(&mut self, by: HeldBy, wait: Duration) {
        if std::mem::replace(&mut self.holding, true) {
            return;
        }
        #[cfg(feature = "metrics")]
        self.counts[by as usize].increment(1);
        let reason = ["rate", "shared", "paused"][by as usize];
        let span = tracing::info_span!("taskpoll.rate_budget.wait", provider = self.provider, reason);
        span.in_scope(|| tracing::debug!(wait_ms = wait.as_millis() as u64, "reads held by the rate budget"));
        self.span = (!span.is_disabled()).then_some(span);
    }

    /// The budget let a read go: a hold, if any, ends.
    pub(crate) fn released(&mut self) {
        if std::mem::take(&mut self.holding) {
            self.span = None;
        }
    }
}

// ---------------------------------------------------------------- one HTTP request

/// One HTTP request's span and duration, from when it is sent until its
/// answer's head arrives (or it fails). Dropped before that, it ends as a
/// `timeout`: what drops a request in flight is the read's time limit.
pub(crate) struct HttpRead {
    span: tracing::Span,
    #[cfg(feature = "metrics")]
    metric: Option<HttpMetric>,
}

#[cfg(feature = "metrics")]
struct HttpMetric {
    started: std::time::Instant,
    clock: Arc<dyn Clock>,
    method: &'static str,
    template: &'static str,
    host: String,
    port: u16,
}

impl HttpRead {
    /// The request `operation_id` of `provider` is about to be sent.
    pub(crate) fn start(
        provider: &'static ProviderSpec,
        operation_id: &str,
        request: &reqwest::Request,
        clock: &Arc<dyn Clock>,
    ) -> Self {
        let method = method_name(request.method());
        let template = provider.operation(operation_id).map_or("", |operation| operation.path);
        let url = request.url();
        let span = tracing::info_span!(
            "taskpoll.http",
            "otel.name" = tracing::field::Empty,
            "otel.kind" = "client",
            provider = provider.name,
            operation = operation_id,
            "http.request.method" = method,
            "url.template" = template,
            "server.address" = url.host_str(),
            "server.port" = url.port_or_known_default(),
            "http.response.status_code" = tracing::field::Empty,
            "error.type" = tracing::field::Empty,
            "http.request.resend_count" = tracing::field::Empty,
        );
        if !span.is_disabled() {
            span.record("otel.name", format!("{method} {template}").as_str());
            if let Some(count) = resends_before() {
                span.record("http.request.resend_count", count);
            }
        }
        #[cfg(feature = "metrics")]
        let metric = Some(HttpMetric {
            started: clock.now(),
            clock: clock.clone(),
            method,
            template,
            host: url.host_str().unwrap_or_default().to_string(),
            port: url.port_or_known_default().unwrap_or(0),
        });
        let _ = clock;
        Self {
            span,
            #[cfg(feature = "metrics")]
            metric,
        }
    }

    /// Runs the request in the span (what reqwest and hyper log is its).
    pub(crate) fn in_span<F: Future>(&self, request: F) -> tracing::instrument::Instrumented<F> {
        request.instrument(self.span.clone())
    }

    /// The answer's head arrived with `status`, or no answer: `error_type`.
    pub(crate) fn answered(mut self, answer: std::result::Result<u16, &'static str>) {
        self.finish(answer);
    }

    fn finish(&mut self, answer: std::result::Result<u16, &'static str>) {
        let error_type = match answer {
            Ok(status) => {
                self.span.record("http.response.status_code", status);
                (status >= 400).then(|| status.to_string())
            }
            Err(kind) => Some(kind.to_string()),
        };
        if let Some(error_type) = &error_type {
            self.span.record("error.type", error_type.as_str());
        }
        #[cfg(feature = "metrics")]
        if let Some(m) = self.metric.take() {
            let seconds = m.clock.now().saturating_duration_since(m.started).as_secs_f64();
            let mut labels = Vec::with_capacity(6);
            labels.push(metrics::Label::new("http.request.method", m.method));
            labels.push(metrics::Label::new("server.address", m.host));
            labels.push(metrics::Label::new("server.port", m.port.to_string()));
            labels.push(metrics::Label::new("url.template", m.template));
            if let Ok(status) = answer {
                labels.push(metrics::Label::new("http.response.status_code", status.to_string()));
            }
            if let Some(error_type) = error_type {
                labels.push(metrics::Label::new("error.type", error_type));
            }
            metrics::histogram!(names::HTTP_DURATION, labels).record(seconds);
        }
        // The span ends when the last clone (the request's) is dropped.
        self.span = tracing::Span::none();
    }
}

impl Drop for HttpRead {
    fn drop(&mut self) {
        let open = !self.span.is_none();
        #[cfg(feature = "metrics")]
        let open = open || self.metric.is_some();
        if open {
            self.finish(Err("timeout"));
        }
    }
}

tokio::task_local! {
    /// How many times the request about to be sent was sent before (set
    /// around a read sent again after a refreshed credential): a task-local,
    /// because the request is built deep inside the generated client.
    static RESENDS: u32;
}

/// Runs `read` as the `count`-th resend of a request (`count` ≥ 1).
pub(crate) async fn as_resend<F: Future>(count: u32, read: F) -> F::Output {
    RESENDS.scope(count, read).await
}

fn resends_before() -> Option<u32> {
    RESENDS.try_with(|count| *count).ok()
}

/// A redirect is being followed: `hops` is its number within the request
/// (1 for the first). Called from the redirect policy, which reqwest runs
/// inside the request's own poll, where its `taskpoll.http` span is entered:
/// so the current span is that request's.
pub(crate) fn redirect_followed(hops: usize) {
    let count = resends_before().unwrap_or(0).saturating_add(u32::try_from(hops).unwrap_or(u32::MAX));
    tracing::Span::current().record("http.request.resend_count", count);
}

/// A transport failure's `error.type`.
pub(crate) fn error_type(kind: TransportKind) -> &'static str {
    match kind {
        TransportKind::Connect => "connect",
        TransportKind::Refused => "refused",
        TransportKind::Dns => "dns",
        TransportKind::Tls => "tls",
        TransportKind::Reset => "reset",
        TransportKind::TruncatedBody => "truncated_body",
        TransportKind::Timeout => "timeout",
        TransportKind::DeadlineBudget => "deadline_budget",
        TransportKind::Other => "other",
    }
}

/// OpenTelemetry's method names: the known methods as they are, any other `_OTHER`.
fn method_name(method: &reqwest::Method) -> &'static str {
    use reqwest::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        Method::TRACE => "TRACE",
        Method::CONNECT => "CONNECT",
        _ => "_OTHER",
    }
}

// ---------------------------------------------------------------- webhooks and stores

/// A webhook delivery was checked: `verified`, or refused.
pub(crate) fn webhook_received(provider: &str, verified: bool) {
    #[cfg(feature = "metrics")]
    metrics::counter!(names::WEBHOOK_RECEIVED, "provider" => provider.to_ascii_lowercase(), "verified" => if verified { "true" } else { "false" })
        .increment(1);
    let _ = (provider, verified);
}

/// A delivery nobody waited on was dropped (the hub was full).
pub(crate) fn delivery_dropped(provider: &str) {
    #[cfg(feature = "metrics")]
    metrics::counter!(names::DELIVERIES_DROPPED, "provider" => provider.to_ascii_lowercase()).increment(1);
    tracing::debug!(provider, "unclaimed webhook delivery dropped");
}

/// A store worker let `waits` waits go: its lease on them was lost.
#[cfg_attr(not(any(feature = "store-sqlite", feature = "store-postgres")), allow(dead_code))]
pub(crate) fn leases_lost(waits: usize) {
    #[cfg(feature = "metrics")]
    metrics::counter!(names::LEASES_LOST).increment(waits as u64);
    let _ = waits;
}

/// Units and descriptions, given to the recorder with the first lane.
#[cfg(feature = "metrics")]
fn describe() {
    use metrics::Unit;
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        metrics::describe_histogram!(names::HTTP_DURATION, Unit::Seconds, "Duration of HTTP client requests.");
        metrics::describe_histogram!(names::WAIT_DURATION, Unit::Seconds, "Duration of waits, start to end.");
        metrics::describe_histogram!(names::WAIT_POLLS, Unit::Count, "Polls per wait.");
        metrics::describe_gauge!(names::WAITS_ACTIVE, Unit::Count, "Waits in progress.");
        metrics::describe_histogram!(names::BATCH_SIZE, Unit::Count, "Tasks per batch read.");
        metrics::describe_counter!(names::THROTTLED, Unit::Count, "Times due reads were held by the rate budget.");
        metrics::describe_counter!(names::PAUSED, Unit::Count, "Provider-wide pauses after a Retry-After.");
        metrics::describe_counter!(names::WEBHOOK_RECEIVED, Unit::Count, "Webhook deliveries checked.");
        metrics::describe_counter!(names::WEBHOOK_RACE, Unit::Count, "Verified deliveries that reached a wait.");
        metrics::describe_counter!(names::DELIVERIES_DROPPED, Unit::Count, "Unclaimed deliveries dropped.");
        metrics::describe_counter!(names::LEASES_LOST, Unit::Count, "Waits let go after a lost lease.");
    });
}

#[cfg(all(test, feature = "metrics"))]
mod tests {
    use super::*;

    /// The value of one rendered series, by its name and labels.
    fn value(text: &str, series: &str) -> Option<f64> {
        text.lines().find(|l| l.starts_with(series)).and_then(|l| l.rsplit(' ').next()).and_then(|v| v.parse().ok())
    }

    #[test]
    fn holds_count_once_lanes_add_up_and_outcomes_label_ends() {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        // The lane outlives the closure: dropped, it would take its waits off the gauge.
        let _lane = metrics::with_local_recorder(&recorder, || {
            let mut throttle = Throttle::new("factpulse");
            // One hold, however often a held scheduler asks again.
            for by in [HeldBy::Rate, HeldBy::Rate, HeldBy::Paused] {
                throttle.held(by, Duration::from_millis(10));
            }
            throttle.released();
            throttle.held(HeldBy::Paused, Duration::from_millis(10));

            // Two lanes of one provider (two clients): the gauge is their sum.
            let (mut a, mut b) = (Lane::new("factpulse"), Lane::new("factpulse"));
            a.waits_active(3);
            b.waits_active(2);
            a.waits_active(1);
            drop(b);
            let task_ref = TaskRef::new("factpulse", "t-1").expect("ref");
            let done = Task::new(task_ref, crate::Phase::Succeeded, None, None, None, 200, serde_json::Value::Null);
            a.wait_ended(WaitSpan(None), &Ok(done), 2, Duration::from_millis(1500));
            a.wait_ended(WaitSpan(None), &Err(Error::config("gone")), 1, Duration::ZERO);
            a.webhook_race(true);
            a
        });
        let text = handle.render();
        let series = |s: &str| value(&text, s);
        assert_eq!(series(r#"taskpoll_ratelimit_throttled{provider="factpulse",reason="rate"}"#), Some(1.0), "{text}");
        assert_eq!(series(r#"taskpoll_ratelimit_throttled{provider="factpulse",reason="paused"}"#), Some(1.0));
        assert_eq!(series(r#"taskpoll_ratelimit_throttled{provider="factpulse",reason="shared"}"#), Some(0.0));
        assert_eq!(series(r#"taskpoll_waits_active{provider="factpulse"}"#), Some(1.0), "{text}");
        assert_eq!(series(r#"taskpoll_wait_polls_sum{provider="factpulse",outcome="succeeded"}"#), Some(2.0));
        assert_eq!(series(r#"taskpoll_wait_duration_sum{provider="factpulse",outcome="succeeded"}"#), Some(1.5));
        assert_eq!(series(r#"taskpoll_wait_polls_count{provider="factpulse",outcome="error"}"#), Some(1.0));
        assert!(!text.contains(r#"outcome="failed""#), "an outcome no wait had: {text}");
        assert_eq!(series(r#"taskpoll_webhook_race{provider="factpulse",won="true"}"#), Some(1.0));
        assert!(!text.contains("t-1"), "no task id as a label: {text}");
    }
}
