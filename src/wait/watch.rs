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
use crate::spec::BoxFuture;
use crate::{Error, Phase, Result, Task};

/// Reads the task once with the given budget (time left before the deadline).
pub(crate) type Read = Box<dyn FnMut(Duration) -> BoxFuture<'static, Result<Task>> + Send>;

pub(crate) enum Step {
    Event(Box<PollEvent>),
    Done(Task),
    Failed(Error),
    Ended,
}

pub(crate) struct Run {
    poller: Poller,
    read: Read,
    next: Option<Decision>,
    span: tracing::Span,
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
        Self { poller, read, next, span }
    }

    /// Sleeps until the next poll, makes it and observes it; or ends the wait.
    pub(crate) async fn step(&mut self) -> Step {
        let clock = self.poller.clock().clone();
        let step = match self.next.take() {
            None => return Step::Ended,
            Some(Decision::Poll { at, .. }) => {
                clock.sleep_until(at).await;
                let sent = clock.now();
                let budget = self.poller.remaining(sent);
                if budget.is_zero() {
                    Step::Failed(self.poller.expire(sent))
                } else {
                    let result = (self.read)(budget).await;
                    let received = clock.now();
                    let (event, next) = self.poller.observe(sent, received, result);
                    self.next = Some(next);
                    return Step::Event(Box::new(event));
                }
            }
            Some(Decision::Expire { at }) => {
                clock.sleep_until(at).await;
                Step::Failed(self.poller.expire(clock.now()))
            }
            Some(Decision::Done(task)) => Step::Done(task),
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
        let span = self.span.clone();
        async move {
            loop {
                match self.step().await {
                    Step::Event(_) => continue,
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
            match run.step().instrument(span).await {
                Step::Event(event) => Some((Ok(*event), Some(run))),
                Step::Failed(error) => Some((Err(error), None)),
                Step::Done(_) | Step::Ended => None,
            }
        });
        Self { inner: Box::pin(stream) }
    }

    pub(crate) fn failed(error: Error) -> Self {
        Self { inner: Box::pin(futures_util::stream::once(std::future::ready(Err(error)))) }
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
            _ => Err(Error::Config { message: "the watch ended without a succeeded task".into() }),
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
