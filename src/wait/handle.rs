//! [`Wait`]: the one handle on a wait, whichever way it is driven.

use std::fmt;
use std::future::IntoFuture;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_core::Stream;
use futures_util::StreamExt as _;
use futures_util::future::BoxFuture;
use tokio::sync::mpsc;

#[cfg(test)]
use super::Poller;
use super::WaitOptions;
use crate::wait::waiter::{Engine, Finished, Group, Key, Lane, next_id};
use crate::webhook::Registration;
use crate::{Client, Error, PollEvent, Result, Task, TaskRef, WaitState};

/// A wait on one task, returned by [`Client::wait`] and [`Client::resume`].
///
/// Three ways to drive it, as google-cloud-rust's LRO `Poller` has them:
/// - `.await` it (it is [`IntoFuture`]) or call [`Wait::until_done`]: the
///   final task, or the error that ended the wait;
/// - step it with [`Wait::poll`]: the next [`PollEvent`] as each poll
///   returns, or the error that ended the wait, then `None`;
/// - use it as a [`Stream`] of the same items ([`Wait::transitions`] keeps
///   only phase changes).
///
/// The wait starts when first awaited, polled or streamed, on the client's
/// engine: it shares its provider's rate budget, requests in flight and
/// `Retry-After` pauses with every other wait of the client, and is read in
/// a batch with them when its provider has a batch operation. The stream
/// ends after the event of a succeeded task; a wait that ends otherwise
/// (task failed or cancelled, deadline, permanent error, guard) yields that
/// error as its last item. Dropping the handle stops the wait.
#[must_use = "a wait does nothing unless it is awaited or polled"]
pub struct Wait {
    stage: Stage,
    /// Only the events where the phase changed ([`Wait::transitions`]).
    only_changes: bool,
}

enum Stage {
    /// Not started yet.
    Ready(Box<Start>),
    Running(Running),
    /// Over: the stream has handed out its last item. A success is kept for
    /// [`Wait::until_done`] after the stream ended.
    Ended(Option<Task>),
}

struct Start {
    client: Client,
    origin: Origin,
    options: WaitOptions,
}

enum Origin {
    New(TaskRef),
    Saved(Box<WaitState>),
}

/// A wait on a scheduler.
struct Running {
    lane: Lane,
    key: Key,
    finished: mpsc::UnboundedReceiver<Vec<Finished>>,
    /// The poll events, when someone watches.
    events: Option<mpsc::UnboundedReceiver<PollEvent>>,
    /// Set while the wait's events are still being handed out.
    outcome: Option<Result<Task>>,
    /// The outcome was received: nothing to stop when the handle goes.
    ended: bool,
    /// The next poll was asked for (or is on its way without asking: the first).
    asked: bool,
    /// The group, to start watching after the start.
    group: Arc<Group>,
    /// Hears the provider's webhook deliveries for the task while it lives.
    _registration: Option<Registration>,
    /// Kept so the client lives as long as its wait.
    _client: Option<Client>,
}

impl Client {
    /// Waits until the task finishes or the deadline passes: `.await` the
    /// returned [`Wait`] for the final task, or step it and stream its
    /// [`PollEvent`]s.
    ///
    /// The final task when it succeeded; [`Error::TaskFailed`] or
    /// [`Error::TaskCancelled`] (holding the final task) when it did not;
    /// [`Error::DeadlineExceeded`] (elapsed time, polls, last observation and
    /// the [`WaitState`] to re-attach) when time ran out; a permanent error
    /// (401/403/404, bad request) unchanged, at once.
    ///
    /// When the provider's spec declares webhooks, verified deliveries handed
    /// to this client ([`Client::accept_webhook`], the `webhook` feature's
    /// receiver) race the polls: the first finished observation ends the wait
    /// (see [`crate::webhook`]).
    pub fn wait(&self, task: &TaskRef, options: WaitOptions) -> Wait {
        Wait::ready(self, Origin::New(task.clone()), options)
    }

    /// Continues a wait from its saved [`WaitState`] (after a deadline, a
    /// cancellation or a restart) with a fresh deadline: the options', from
    /// now. Attempt numbers, the queued time, the unknown-status count and the
    /// next planned poll carry on.
    pub fn resume(&self, state: WaitState, options: WaitOptions) -> Wait {
        Wait::ready(self, Origin::Saved(Box::new(state)), options)
    }
}

impl Wait {
    fn ready(client: &Client, origin: Origin, options: WaitOptions) -> Self {
        let start = Start { client: client.clone(), origin, options };
        Self { stage: Stage::Ready(Box::new(start)), only_changes: false }
    }

    /// A wait already on `lane` (the engine's tests drive a scripted source this way).
    /// Events are built once it is streamed (tests run on one thread: no poll goes unseen).
    #[cfg(test)]
    pub(crate) fn on_lane(lane: Lane, poller: Poller) -> Result<Self> {
        let group = Group::stepped(u64::MAX);
        let key = 0;
        if !lane.send(crate::wait::waiter::Command::Add(crate::wait::waiter::Entry::new(key, poller, group.0.clone())))
        {
            return Err(Error::config("the scheduler has stopped"));
        }
        let running = Running::new(lane, key, group, None, None, None);
        Ok(Self { stage: Stage::Running(running), only_changes: false })
    }

    /// Starts the wait on its provider's scheduler, if it has not started.
    fn start(&mut self, watched: bool) -> Result<&mut Running> {
        if matches!(self.stage, Stage::Ready(_))
            && let Stage::Ready(start) = std::mem::replace(&mut self.stage, Stage::Ended(None))
        {
            self.stage = Stage::Running(start.run(watched)?);
        }
        match &mut self.stage {
            Stage::Running(running) => {
                if watched && running.events.is_none() {
                    running.events = running.group.watch();
                }
                Ok(running)
            }
            _ => Err(Error::config("the wait has already ended")),
        }
    }

    /// Polls once (or takes the delivery that ends the wait): the next event,
    /// or the error that ended the wait; `None` once the wait is over.
    pub async fn poll(&mut self) -> Option<Result<PollEvent>> {
        self.next().await
    }

    /// Only the events where the phase changed (the first observation
    /// counts as a change), plus the final error if any.
    pub fn transitions(mut self) -> Self {
        self.only_changes = true;
        self
    }

    /// Runs the wait to its end: the succeeded task, or the error that ended
    /// it. After some events were read, the wait goes on from there.
    pub async fn until_done(mut self) -> Result<Task> {
        if let Stage::Ended(task) = &mut self.stage {
            return task.take().ok_or_else(|| Error::config("the wait has already ended"));
        }
        let running = self.start(false)?;
        // Nobody reads the events any more: the scheduler stops building them,
        // and polls on without being asked.
        if running.events.take().is_some() {
            running.lane.send(crate::wait::waiter::Command::Step(running.key));
        }
        if let Some(outcome) = running.outcome.take() {
            return outcome;
        }
        let outcome = running.finished.recv().await;
        running.end(outcome)
    }
}

impl Start {
    /// `watched`: events are built from the first poll on.
    fn run(self, watched: bool) -> Result<Running> {
        let Start { client, origin, options } = self;
        let task = match &origin {
            Origin::New(task) => task,
            Origin::Saved(state) => &state.task_ref,
        };
        let provider = client.configured_for(task)?.spec.name;
        let engine = Engine::of(&client)?;
        let lane = engine.lane(&client, provider, options.clock.as_ref(), None)?;
        let poller = match origin {
            Origin::New(task) => engine.start(task, &options, &lane)?,
            Origin::Saved(state) => engine.resume(*state, &options, &lane)?,
        };
        let group = if watched { Group::stepped(next_id()) } else { Group::new(next_id(), None, None) };
        // Watched before the wait is added: its first poll may land (on another
        // worker) before this function returns, and its event must be built.
        let events = if watched { group.0.watch() } else { None };
        let (key, registration) = engine.add(&client, &lane, &group.0, poller)?;
        Ok(Running::new(lane, key, group, events, registration, Some(client)))
    }
}

impl Running {
    /// A wait just added to `lane`; `events`: its events, when watched from the first poll on.
    fn new(
        lane: Lane,
        key: Key,
        (group, finished): (Arc<Group>, mpsc::UnboundedReceiver<Vec<Finished>>),
        events: Option<mpsc::UnboundedReceiver<PollEvent>>,
        registration: Option<Registration>,
        client: Option<Client>,
    ) -> Self {
        Running {
            lane,
            key,
            finished,
            events,
            outcome: None,
            ended: false,
            asked: true,
            group,
            _registration: registration,
            _client: client,
        }
    }

    /// The wait's outcome from what its scheduler reported.
    fn end(&mut self, turn: Option<Vec<Finished>>) -> Result<Task> {
        self.ended = true;
        match turn.and_then(|mut turn| turn.pop()) {
            Some(finished) => finished.result,
            None => Err(Error::config("the provider's scheduler stopped (its tokio runtime shut down)")),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // A wait nobody waits on any more stops (one that ended is already gone).
        if !self.ended {
            self.lane.send(crate::wait::waiter::Command::Cancel(self.key));
        }
    }
}

impl Stream for Wait {
    type Item = Result<PollEvent>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let only_changes = this.only_changes;
        if matches!(this.stage, Stage::Ended(_)) {
            return Poll::Ready(None);
        }
        let running = match this.start(true) {
            Ok(running) => running,
            Err(error) => {
                this.stage = Stage::Ended(None);
                return Poll::Ready(Some(Err(error)));
            }
        };
        loop {
            // The events before the outcome come first: the scheduler sent them before it.
            if let Some(events) = running.events.as_mut()
                && let Poll::Ready(Some(event)) = events.poll_recv(cx)
            {
                running.asked = false;
                if only_changes && !event.changed {
                    continue;
                }
                return Poll::Ready(Some(Ok(event)));
            }
            if running.outcome.is_none() {
                match running.finished.poll_recv(cx) {
                    Poll::Ready(turn) => {
                        running.outcome = Some(running.end(turn));
                        continue;
                    }
                    Poll::Pending => {
                        // Stepped one poll at a time: the next goes when the consumer asks.
                        if !std::mem::replace(&mut running.asked, true) {
                            running.lane.send(crate::wait::waiter::Command::Step(running.key));
                        }
                        return Poll::Pending;
                    }
                }
            }
            return match running.outcome.take() {
                Some(Ok(task)) => {
                    this.stage = Stage::Ended(Some(task));
                    Poll::Ready(None)
                }
                Some(Err(error)) => {
                    this.stage = Stage::Ended(None);
                    Poll::Ready(Some(Err(error)))
                }
                None => Poll::Ready(None),
            };
        }
    }
}

impl IntoFuture for Wait {
    type Output = Result<Task>;
    type IntoFuture = BoxFuture<'static, Result<Task>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.until_done())
    }
}

impl fmt::Debug for Wait {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let stage = match &self.stage {
            Stage::Ready(_) => "not started",
            Stage::Running(_) => "running",
            Stage::Ended(_) => "ended",
        };
        f.debug_struct("Wait").field("stage", &stage).finish_non_exhaustive()
    }
}
