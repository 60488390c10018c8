//! The loop around the poll step: sleep on the clock, read with the remaining
//! budget, observe. `wait` and `watch` both run it.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_core::Stream;
use futures_util::StreamExt as _;
use tracing::Instrument as _;

use super::PollEvent;
use super::poller::{Decision, Poller, millis};
use crate::spec::{BoxFuture, WebhookSpec};
use crate::webhook::Subscription;
use crate::{Error, Phase, Result, Task};

/// Reads the task once with the given budget (time left before the deadline).
pub(crate) type Read = Box<dyn FnMut(Duration) -> BoxFuture<'static, Result<Task>> + Send>;

pub(crate) enum Step {
    Event(Box<PollEvent>),
    /// A poll observed with no event built (nobody watches: `until_done`).
    Polled,
    Done(Task),
    Failed(Error),
    Ended,
}

pub(crate) struct Run {
    poller: Poller,
    read: Read,
    next: Option<Decision>,
    span: tracing::Span,
    /// The provider's webhook scheme and this task's deliveries, raced against the polls.
    webhook: Option<(&'static WebhookSpec, Subscription)>,
    /// Nobody watches the events (`until_done`): polls are observed without
    /// building a `PollEvent` (a clone of the task and the wait state each).
    quiet: bool,
}

/// A future's output, or the finished task a webhook delivered first.
async fn race<T>(webhook: Option<&mut Subscription>, work: impl Future<Output = T>) -> std::result::Result<T, Task> {
    match webhook {
        None => Ok(work.await),
        Some(subscription) => tokio::select! {
            biased;
            task = subscription.terminal() => Err(task),
            output = work => Ok(output),
        },
    }
}

impl Run {
    pub(crate) fn new(mut poller: Poller, read: Read) -> Self {
        let task_ref = poller.task_ref();
        let span = tracing::info_span!(
            "taskpoll.wait",
            provider = task_ref.provider(),
            task_id = task_ref.id(),
            policy = poller.policy().name(),
            deadline_ms = poller.state().deadline_at_ms.saturating_sub(poller.state().started_at_ms),
            resumed_at_attempt = poller.state().attempts,
            polls = tracing::field::Empty,
            outcome = tracing::field::Empty,
        );
        let next = Some(poller.start());
        Self { poller, read, next, span, webhook: None, quiet: false }
    }

    /// Races the polls against verified webhook deliveries for the task.
    pub(crate) fn with_webhook(mut self, webhook: Option<(&'static WebhookSpec, Subscription)>) -> Self {
        self.webhook = webhook;
        self
    }

    /// The event of a webhook's finished task; the wait ends with it next.
    fn webhook_event(&mut self, task: Task) -> Step {
        let (event, next) = self.poller.observe_webhook(self.poller.clock().now(), task);
        self.next = Some(next);
        Step::Event(Box::new(event))
    }

    /// While the provider's webhooks arrive, polls are spaced by the spec's factor.
    fn pace(&mut self) {
        if let Some((hook, subscription)) = &self.webhook {
            let window = Duration::from_millis(hook.active_window_ms);
            let active = subscription.hub().active(self.poller.task_ref().provider(), window);
            self.poller.set_delay_factor(if active { hook.poll_factor } else { 1.0 });
        }
    }

    /// After a polled success without a result at a provider whose results
    /// come only by webhook, with a receiver listening: the webhook's task if
    /// it comes within the spec's grace (never past the deadline).
    async fn await_result(&mut self, task: &Task) -> Option<Task> {
        let (hook, subscription) = self.webhook.as_mut()?;
        let wanted = hook.result_only_by_webhook
            && task.result().is_none()
            && task.via() == crate::Via::Poll
            && subscription.hub().is_listening();
        if !wanted {
            return None;
        }
        let clock = self.poller.clock().clone();
        let now = clock.now();
        let grace = Duration::from_millis(hook.grace_ms).min(self.poller.remaining(now));
        tracing::debug!(grace_ms = millis(grace), "polled success without a result; waiting for the webhook");
        race(Some(subscription), clock.sleep(grace)).await.err()
    }

    /// Sleeps until the next poll, makes it and observes it; or ends the wait.
    pub(crate) async fn step(&mut self) -> Step {
        let clock = self.poller.clock().clone();
        let step = match self.next.take() {
            None => return Step::Ended,
            Some(Decision::Poll { at, .. }) => {
                if let Err(task) = race(self.webhook.as_mut().map(|(_, s)| s), clock.sleep_until(at)).await {
                    return self.webhook_event(task);
                }
                let sent = clock.now();
                let budget = self.poller.remaining(sent);
                if budget.is_zero() {
                    Step::Failed(self.poller.expire(sent))
                } else {
                    let read = (self.read)(budget);
                    let result = match race(self.webhook.as_mut().map(|(_, s)| s), read).await {
                        Ok(result) => result,
                        // The webhook won: the read in flight is dropped.
                        Err(task) => return self.webhook_event(task),
                    };
                    let received = clock.now();
                    self.pace();
                    if self.quiet {
                        self.next = Some(self.poller.observe_quietly(sent, received, result));
                        let state = self.poller.state();
                        tracing::debug!(
                            parent: &self.span,
                            attempt = state.attempts,
                            phase = state.last_phase.map(Phase::as_str),
                            status = state.last_status.as_deref(),
                            next_delay_ms = state.next_delay_ms,
                            "poll"
                        );
                        return Step::Polled;
                    }
                    let (event, next) = self.poller.observe(sent, received, result);
                    self.next = Some(next);
                    return Step::Event(Box::new(event));
                }
            }
            Some(Decision::Expire { at }) => {
                if let Err(task) = race(self.webhook.as_mut().map(|(_, s)| s), clock.sleep_until(at)).await {
                    return self.webhook_event(task);
                }
                Step::Failed(self.poller.expire(clock.now()))
            }
            Some(Decision::Done(task)) => match self.await_result(&task).await {
                Some(delivered) => return self.webhook_event(delivered),
                None => Step::Done(task),
            },
            Some(Decision::Fail(error)) => Step::Failed(error),
        };
        let outcome = match &step {
            Step::Done(_) => "succeeded".to_string(),
            Step::Failed(error) => error.to_string(),
            _ => String::new(),
        };
        self.span.record("polls", self.poller.state().attempts);
        self.span.record("outcome", outcome.as_str());
        let elapsed_ms = millis(self.poller.elapsed(clock.now()));
        match &step {
            Step::Done(_) => tracing::debug!(parent: &self.span, elapsed_ms, "wait succeeded"),
            Step::Failed(error) => tracing::debug!(parent: &self.span, elapsed_ms, error = %error, "wait ended"),
            _ => {}
        }
        step
    }

    pub(crate) async fn until_done(mut self) -> Result<Task> {
        self.quiet = true;
        let span = self.span.clone();
        async move {
            loop {
                match self.step().await {
                    Step::Event(_) | Step::Polled => continue,
                    Step::Done(task) => return Ok(task),
                    Step::Failed(error) => return Err(error),
                    Step::Ended => {
                        let now = self.poller.clock().now();
                        return Err(self.poller.expire(now));
                    }
                }
            }
        }
        .instrument(span)
        .await
    }
}

/// A stream of [`PollEvent`]s, one as soon as each poll returns.
///
/// It ends after the event of a succeeded task; a wait that ends otherwise
/// (task failed or cancelled, deadline, permanent error, guard) yields that
/// error as its last item. Dropping it stops the wait.
#[must_use = "streams do nothing unless polled"]
pub struct Watch {
    inner: Pin<Box<dyn Stream<Item = Result<PollEvent>> + Send>>,
}

impl fmt::Debug for Watch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Watch").finish_non_exhaustive()
    }
}

impl Watch {
    pub(crate) fn from_run(run: Run) -> Self {
        let stream = futures_util::stream::unfold(Some(run), |state| async move {
            let mut run = state?;
            let span = run.span.clone();
            loop {
                match run.step().instrument(span.clone()).await {
                    Step::Event(event) => return Some((Ok(*event), Some(run))),
                    // Not produced for a stream (it is not quiet).
                    Step::Polled => continue,
                    Step::Failed(error) => return Some((Err(error), None)),
                    Step::Done(_) | Step::Ended => return None,
                }
            }
        });
        Self { inner: Box::pin(stream) }
    }

    pub(crate) fn failed(error: Error) -> Self {
        Self { inner: Box::pin(futures_util::stream::once(std::future::ready(Err(error)))) }
    }

    /// Polls once (or takes the delivery that ends the wait): the next event,
    /// or the error that ended the wait; `None` once the wait is over. The
    /// first of the three ways to drive a wait, as google-cloud-rust's
    /// `Poller` has them: [`Self::poll`], [`Self::until_done`], and the
    /// `Stream` this is.
    pub async fn poll(&mut self) -> Option<Result<PollEvent>> {
        self.inner.next().await
    }

    /// Only the events where the phase changed (the first observation
    /// counts as a change), plus the final error if any.
    pub fn transitions(self) -> Watch {
        let filtered = self.filter(|item| std::future::ready(item.as_ref().map_or(true, |event| event.changed)));
        Self { inner: Box::pin(filtered) }
    }

    /// Drives the stream to its end: the succeeded task, or the error that ended the wait.
    pub async fn until_done(mut self) -> Result<Task> {
        let mut last: Option<Task> = None;
        while let Some(item) = self.next().await {
            if let Some(task) = item?.task {
                last = Some(task);
            }
        }
        match last {
            Some(task) if task.phase() == Phase::Succeeded => Ok(task),
            _ => Err(Error::Config(crate::error::ConfigError {
                message: "the watch ended without a succeeded task".into(),
            })),
        }
    }
}

impl Stream for Watch {
    type Item = Result<PollEvent>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().inner.as_mut().poll_next(cx)
    }
}

/// Boxes a read function.
pub(crate) fn boxed<F, Fut>(mut read: F) -> Read
where
    F: FnMut(Duration) -> Fut + Send + 'static,
    Fut: Future<Output = Result<Task>> + Send + 'static,
{
    Box::new(move |budget| Box::pin(read(budget)))
}
