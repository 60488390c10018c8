//! Waiting on many tasks at once: [`Waiter`].
//!
//! Every wait keeps its own [`Poller`], so each task has the guarantees of
//! [`Client::wait`] (one deadline, no request at or after it, `Retry-After`
//! honoured, guards). What the waiter adds is one scheduler per provider:
//!
//! - due polls of a provider whose spec declares a batch operation
//!   (`x-taskpoll.many`) are coalesced into batch reads of up to `max-ids`
//!   tasks (the page size sent explicitly, `next` pages followed); a task an
//!   answer leaves out is read singly once, then reported as
//!   [`Error::MissingFromBatch`]. Waits that are far enough into their delay
//!   ride along early, so waits polled together stay together;
//! - providers without one get single reads;
//! - at most [`ProviderConfig::max_in_flight`] requests are in flight per
//!   provider, so connections stay few and are reused;
//! - one rate budget per provider (the spec's `x-taskpoll.rate`, or
//!   [`ProviderConfig::rate_limit`]), and a 429 or 503 with `Retry-After`
//!   pauses the whole provider until the hint, not only the task that got it.
//!
//! Between polls a wait keeps phase, status and timings, not the raw body
//! (a pending task costs well under a kilobyte; see the `many_waits` benchmark).
//!
//! ```no_run
//! # async fn run() -> taskpoll::Result<()> {
//! use std::time::Duration;
//! use futures_util::StreamExt as _;
//! use taskpoll::{Client, TaskRef, WaitOptions};
//!
//! let client = Client::from_env()?;
//! let mut waiter = client.waiter();
//! let options = WaitOptions::new(Duration::from_secs(120));
//! for id in ["269999729", "269999730"] {
//!     waiter.add(TaskRef::new("deepomatic", id)?, &options)?;
//! }
//! // Each task as soon as it finishes.
//! while let Some((task_ref, outcome)) = waiter.next().await {
//!     match outcome {
//!         Ok(task) => println!("{task_ref} succeeded: {:?}", task.result()),
//!         Err(e) => println!("{task_ref}: {e}"),
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! [`ProviderConfig::max_in_flight`]: crate::ProviderConfig::max_in_flight
//! [`ProviderConfig::rate_limit`]: crate::ProviderConfig::rate_limit

mod budget;
mod engine;
mod scheduler;
mod source;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_core::Stream;
use futures_util::StreamExt as _;
use tokio::sync::mpsc;

use crate::policy::Eta;
use crate::wait::Poller;
use crate::webhook::Registration;
use crate::{Client, Clock, Error, PollEvent, Result, Task, TaskRef, WaitOptions, WaitState};
#[cfg(any(feature = "store-sqlite", feature = "store-postgres"))]
pub(crate) use budget::SharedGrant;
pub(crate) use budget::SharedTokens;
pub(crate) use engine::{Engine, Lane, next_id};
#[cfg(test)]
pub(crate) use scheduler::Entry;
#[cfg(any(feature = "store-sqlite", feature = "store-postgres"))]
pub(crate) use scheduler::Learned;
pub(crate) use scheduler::{Command, Finished, Group, Key};
#[cfg(test)]
pub(crate) use source::{BatchIds, Limits, Source};

/// Waits on many tasks, of any providers, at once; a [`Stream`] of
/// `(TaskRef, Result<Task>)` in the order the tasks finish.
///
/// Each outcome is what [`Client::wait`] would have returned for that task:
/// the waits run on the client's engine, next to every other wait of the
/// client. Tasks can be added while the waiter runs (also through a
/// [`WaiterHandle`]); the stream ends when no task is left (adding one later
/// starts it again). Dropping the waiter stops its waits at once;
/// [`Waiter::cancel`] and [`Waiter::cancel_all`] stop some of them, each
/// reported as [`Error::WaitCancelled`] with its [`WaitState`].
/// [`Waiter::finish`] runs to the end and sorts the outcomes;
/// [`Waiter::events`] shows every poll of every wait.
///
/// Needs a tokio runtime (a provider's scheduler starts on its first wait).
#[must_use = "a waiter does nothing unless its outcomes are read"]
pub struct Waiter {
    shared: Arc<Shared>,
    /// Waits that ended, a scheduler turn's worth at a time.
    finished: mpsc::UnboundedReceiver<Vec<Finished>>,
    /// Of the last turn received, those not yet handed out.
    ready: std::vec::IntoIter<Finished>,
}

/// Adds and cancels waits of a [`Waiter`] from elsewhere (another task)
/// while the waiter's outcomes are being read. Cheap to clone.
#[derive(Clone)]
pub struct WaiterHandle {
    shared: Arc<Shared>,
}

struct Shared {
    client: Client,
    /// The clock of every wait of this waiter (`None`: the engine's).
    clock: Option<Arc<dyn Clock>>,
    group: Arc<Group>,
    /// Each provider's share of a rate budget held by a wait store.
    tokens: HashMap<&'static str, Arc<SharedTokens>>,
    registry: Mutex<Registry>,
}

/// What a wait store adds to a waiter (nothing, for a plain one).
#[derive(Default)]
pub(crate) struct Hooks {
    /// Each provider's share of a rate budget held by the store.
    pub(crate) tokens: HashMap<&'static str, Arc<SharedTokens>>,
    /// Receives each wait's state after every poll that plans another.
    pub(crate) progress: Option<mpsc::UnboundedSender<WaitState>>,
    /// Receives what each wait added to the estimate of durations.
    pub(crate) learned: Option<mpsc::UnboundedSender<scheduler::Learned>>,
}

#[derive(Default)]
struct Registry {
    /// False once the waiter is dropped: nothing more is accepted.
    closed: bool,
    /// The schedulers this waiter's waits went to.
    lanes: HashMap<&'static str, Lane>,
    /// The waits not yet reported, to route cancellations (to the lane of
    /// the provider the client configures for the reference) and end the stream.
    waiting: HashMap<TaskRef, Key>,
    /// Each wait's registration with the client's webhook hub (providers that declare webhooks).
    webhooks: HashMap<TaskRef, Registration>,
}

impl Client {
    /// A [`Waiter`] for many tasks, on the client's engine.
    pub fn waiter(&self) -> Waiter {
        Waiter::with_hooks(self, None, Hooks::default())
    }
}

impl Waiter {
    /// A waiter whose every wait, sleep and rate budget runs on `clock` (the
    /// clock of the [`WaitOptions`] given to [`Waiter::add`] is replaced by it).
    pub fn with_clock(client: &Client, clock: Arc<dyn Clock>) -> Self {
        Self::with_hooks(client, Some(clock), Hooks::default())
    }

    pub(crate) fn with_hooks(client: &Client, clock: Option<Arc<dyn Clock>>, hooks: Hooks) -> Self {
        let (group, finished) = Group::new(engine::next_id(), hooks.progress, hooks.learned);
        let shared = Shared {
            client: client.clone(),
            clock,
            group,
            tokens: hooks.tokens,
            registry: Mutex::new(Registry::default()),
        };
        Self { shared: Arc::new(shared), finished, ready: Vec::new().into_iter() }
    }

    /// Starts waiting on a task. Refused: a provider this client does not
    /// configure, an invalid policy, a task already being waited on, no tokio runtime.
    pub fn add(&self, task: TaskRef, options: &WaitOptions) -> Result<()> {
        self.shared.add(task, options)
    }

    /// Starts waiting on many tasks at once, all or none: their first polls
    /// go out together, in full batch reads where the provider has them (one
    /// round over the tasks, as a loop over them would read them), where
    /// adding them one by one may send the first few before the rest arrive.
    /// Refused as [`Waiter::add`], and also when a task is listed twice;
    /// when refused, no task of the list is added.
    pub fn add_many(&self, tasks: impl IntoIterator<Item = TaskRef>, options: &WaitOptions) -> Result<()> {
        self.shared.add_many(tasks, options)
    }

    /// Continues a saved wait (see [`Client::resume`]) alongside the others.
    pub fn resume(&self, state: WaitState, options: &WaitOptions) -> Result<()> {
        self.shared.resume(state, options)
    }

    /// Stops waiting on a task: it is reported as [`Error::WaitCancelled`]
    /// with its [`WaitState`]. False if it is not being waited on.
    pub fn cancel(&self, task: &TaskRef) -> bool {
        self.shared.cancel(task)
    }

    /// Stops every wait; each is reported as [`Error::WaitCancelled`].
    pub fn cancel_all(&self) {
        self.shared.cancel_all();
    }

    /// A handle to add and cancel waits while the outcomes are read.
    pub fn handle(&self) -> WaiterHandle {
        WaiterHandle { shared: self.shared.clone() }
    }

    /// Tasks added and not yet reported.
    pub fn pending(&self) -> usize {
        self.shared.registry().waiting.len()
    }

    /// Status reads sent so far for this waiter's tasks (a batch read counts once).
    pub fn requests_sent(&self) -> u64 {
        self.shared.group.requests()
    }

    /// Every poll of every wait of this waiter from now on, as it returns
    /// (retried reads, phase changes, the webhook deliveries that end waits):
    /// the [`PollEvent`]s a lone wait's stream has. Events are built only once
    /// this is called; `None` if it was called before.
    pub fn events(&self) -> Option<impl Stream<Item = PollEvent> + Send + Unpin + 'static> {
        let mut events = self.shared.group.watch()?;
        Some(futures_util::stream::poll_fn(move |cx| events.poll_recv(cx)))
    }

    /// Feeds durations learned elsewhere (a wait store's) to the estimate
    /// the waits of `provider` with duration key `key` read.
    #[cfg(any(feature = "store-sqlite", feature = "store-postgres"))]
    pub(crate) fn learn(
        &self,
        provider: &'static str,
        key: Option<Arc<str>>,
        seen: Vec<(Duration, Duration)>,
    ) -> Result<()> {
        let lane = self.shared.lane(provider)?;
        lane.send(scheduler::Command::Learn(key, seen));
        self.shared.registry().lanes.entry(provider).or_insert(lane);
        Ok(())
    }

    /// Runs until every wait has ended, and sorts the outcomes.
    pub async fn finish(mut self) -> Outcomes {
        let mut outcomes = Outcomes::default();
        while let Some((task_ref, result)) = self.next().await {
            outcomes.push(task_ref, result);
        }
        outcomes
    }
}

impl WaiterHandle {
    /// See [`Waiter::add`]; refused once the waiter is dropped.
    pub fn add(&self, task: TaskRef, options: &WaitOptions) -> Result<()> {
        self.shared.add(task, options)
    }

    /// See [`Waiter::add_many`].
    pub fn add_many(&self, tasks: impl IntoIterator<Item = TaskRef>, options: &WaitOptions) -> Result<()> {
        self.shared.add_many(tasks, options)
    }

    /// See [`Waiter::resume`].
    pub fn resume(&self, state: WaitState, options: &WaitOptions) -> Result<()> {
        self.shared.resume(state, options)
    }

    /// See [`Waiter::cancel`].
    pub fn cancel(&self, task: &TaskRef) -> bool {
        self.shared.cancel(task)
    }

    /// See [`Waiter::cancel_all`].
    pub fn cancel_all(&self) {
        self.shared.cancel_all();
    }
}

impl Shared {
    fn registry(&self) -> MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn add(&self, task: TaskRef, options: &WaitOptions) -> Result<()> {
        let provider = self.client.configured_for(&task)?.spec.name;
        let lane = self.lane(provider)?;
        let poller = Engine::of(&self.client)?.start(task.clone(), options, &lane)?;
        self.enqueue(provider, lane, task, poller)
    }

    fn add_many(&self, tasks: impl IntoIterator<Item = TaskRef>, options: &WaitOptions) -> Result<()> {
        let engine = Engine::of(&self.client)?;
        // The new waits by provider (few per call), each provider's in one command.
        let mut lanes: Vec<(&'static str, Lane, Vec<Poller>)> = Vec::new();
        for task in tasks {
            let provider = self.client.configured_for(&task)?.spec.name;
            let index = match lanes.iter().position(|(p, ..)| *p == provider) {
                Some(index) => index,
                None => {
                    lanes.push((provider, self.lane(provider)?, Vec::new()));
                    lanes.len() - 1
                }
            };
            let (_, lane, pollers) = &mut lanes[index];
            pollers.push(engine.start(task, options, lane)?);
        }
        let mut guard = self.registry();
        let registry = &mut *guard;
        if registry.closed {
            return Err(Error::config("the waiter was dropped"));
        }
        let mut listed = std::collections::HashSet::new();
        for poller in lanes.iter().flat_map(|(_, _, pollers)| pollers) {
            let task = poller.task_ref();
            if registry.waiting.contains_key(task) || !listed.insert(task) {
                return Err(Error::config(format!("already waiting on {task}")));
            }
        }
        drop(listed);
        for (provider, lane, pollers) in lanes {
            let tasks: Vec<TaskRef> = pollers.iter().map(|poller| poller.task_ref().clone()).collect();
            let added = engine.add_many(&self.client, &lane, &self.group, pollers)?;
            for (task, (key, registration)) in tasks.into_iter().zip(added) {
                if let Some(registration) = registration {
                    registry.webhooks.insert(task.clone(), registration);
                }
                registry.waiting.insert(task, key);
            }
            registry.lanes.entry(provider).or_insert(lane);
        }
        Ok(())
    }

    fn resume(&self, state: WaitState, options: &WaitOptions) -> Result<()> {
        let task = state.task_ref.clone();
        let provider = self.client.configured_for(&task)?.spec.name;
        let lane = self.lane(provider)?;
        let poller = Engine::of(&self.client)?.resume(state, options, &lane)?;
        self.enqueue(provider, lane, task, poller)
    }

    /// The provider's scheduler for this waiter's clock and budget.
    fn lane(&self, provider: &'static str) -> Result<Lane> {
        if let Some(lane) = self.registry().lanes.get(provider) {
            return Ok(lane.clone());
        }
        let engine = Engine::of(&self.client)?;
        engine.lane(&self.client, provider, self.clock.as_ref(), self.tokens.get(provider))
    }

    fn enqueue(&self, provider: &'static str, lane: Lane, task: TaskRef, poller: Poller) -> Result<()> {
        let mut guard = self.registry();
        let registry = &mut *guard;
        if registry.closed {
            return Err(Error::config("the waiter was dropped"));
        }
        // One hash of the task for the check and the insert (100,000 adds in a row are common).
        let std::collections::hash_map::Entry::Vacant(waiting) = registry.waiting.entry(task) else {
            return Err(Error::config(format!("already waiting on {}", poller.task_ref())));
        };
        let (key, registration) = Engine::of(&self.client)?.add(&self.client, &lane, &self.group, poller)?;
        if let Some(registration) = registration {
            registry.webhooks.insert(waiting.key().clone(), registration);
        }
        waiting.insert(key);
        registry.lanes.entry(provider).or_insert(lane);
        Ok(())
    }

    fn cancel(&self, task: &TaskRef) -> bool {
        let registry = self.registry();
        let Some(key) = registry.waiting.get(task) else { return false };
        let Ok(configured) = self.client.configured_for(task) else { return false };
        registry.lanes.get(configured.spec.name).is_some_and(|lane| lane.send(scheduler::Command::Cancel(*key)))
    }

    fn cancel_all(&self) {
        for lane in self.registry().lanes.values() {
            lane.send(scheduler::Command::CancelGroup(self.group.id));
        }
    }
}

impl Waiter {
    /// The next wait to end, with the number of polls it made (the stream
    /// gives the same outcomes without it); `None` when no task is left.
    pub async fn next_outcome(&mut self) -> Option<WaitOutcome> {
        std::future::poll_fn(|cx| self.poll_outcome(cx)).await
    }

    fn poll_outcome(&mut self, cx: &mut Context<'_>) -> Poll<Option<WaitOutcome>> {
        loop {
            if let Some(done) = self.ready.next() {
                let mut registry = self.shared.registry();
                registry.waiting.remove(&done.task_ref);
                registry.webhooks.remove(&done.task_ref);
                drop(registry);
                return Poll::Ready(Some(WaitOutcome {
                    task_ref: done.task_ref,
                    result: done.result,
                    polls: done.polls,
                }));
            }
            match self.finished.poll_recv(cx) {
                Poll::Ready(Some(turn)) => self.ready = turn.into_iter(),
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending if self.shared.registry().waiting.is_empty() => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// How one wait of a [`Waiter`] ended (see [`Waiter::next_outcome`]).
#[derive(Debug)]
#[non_exhaustive]
pub struct WaitOutcome {
    /// The task.
    pub task_ref: TaskRef,
    /// What [`Client::wait`] would have returned for it.
    pub result: Result<Task>,
    /// The polls its wait made (a batch read counts once for each of its tasks).
    pub polls: u32,
}

impl Stream for Waiter {
    type Item = (TaskRef, Result<Task>);

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().poll_outcome(cx).map(|outcome| outcome.map(|o| (o.task_ref, o.result)))
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        let mut registry = self.shared.registry();
        registry.closed = true;
        for lane in registry.lanes.values() {
            lane.send(scheduler::Command::DropGroup(self.shared.group.id));
        }
        registry.waiting.clear();
        registry.webhooks.clear();
    }
}

impl fmt::Debug for Waiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Waiter")
            .field("pending", &self.pending())
            .field("requests_sent", &self.requests_sent())
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for WaiterHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WaiterHandle").finish_non_exhaustive()
    }
}

/// Every outcome of a [`Waiter`], sorted: what succeeded, what failed, and
/// what was still pending when its wait ended (deadline or cancellation).
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct Outcomes {
    /// Tasks that succeeded, in the order they finished.
    pub succeeded: Vec<Task>,
    /// Tasks that failed or were cancelled at the provider, and waits that
    /// ended with any other error (auth, not found, guards, …).
    pub failed: Vec<(TaskRef, Error)>,
    /// Waits that ended before their task did: at the deadline, or cancelled.
    pub pending: Vec<PendingTask>,
}

/// A task still pending when its wait ended.
#[derive(Debug)]
#[non_exhaustive]
pub struct PendingTask {
    /// The task.
    pub task_ref: TaskRef,
    /// Where its wait stood: give it to [`Waiter::resume`] or [`Client::resume`].
    pub state: WaitState,
    /// How the wait ended ([`Error::is_deadline`] or [`Error::is_wait_cancelled`]).
    pub error: Error,
}

impl PendingTask {
    /// When the task is expected to end (from its wait's start), from how
    /// long the provider's tasks took; `None` without enough history.
    pub fn eta(&self) -> Option<Eta> {
        let p50 = Duration::from_millis(self.state.eta_p50_ms?);
        let p90 = Duration::from_millis(self.state.eta_p90_ms?);
        Some(Eta { p50, p90 })
    }
}

impl Outcomes {
    /// Sorts one outcome in.
    pub fn push(&mut self, task_ref: TaskRef, result: Result<Task>) {
        match result {
            Ok(task) => self.succeeded.push(task),
            Err(error) => match error.wait_state() {
                Some(state) if error.is_deadline() || error.is_wait_cancelled() => {
                    let state = state.clone();
                    self.pending.push(PendingTask { task_ref, state, error });
                }
                _ => self.failed.push((task_ref, error)),
            },
        }
    }

    /// How many outcomes in all.
    pub fn len(&self) -> usize {
        self.succeeded.len() + self.failed.len() + self.pending.len()
    }

    /// No outcome at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
