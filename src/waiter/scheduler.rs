//! One provider's scheduler: every wait on the provider, one queue ordered by
//! due time, due polls coalesced into batch reads, at most `max_in_flight`
//! requests at once, one rate budget, and a provider-wide pause on a
//! `Retry-After`. Each wait keeps its own [`Poller`], so every single-task
//! guarantee (the deadline, hints, guards) holds per task.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use futures_util::stream::FuturesUnordered;
use tokio::sync::mpsc;

use super::budget::{Budget, SharedTokens};
use super::source::Source;
use crate::spec::{BoxFuture, RateSpec, WebhookSpec};
use crate::wait::{Decision, Poller};
use crate::webhook::WebhookHub;
use crate::{Clock, Error, Result, Task, TaskRef, WaitState};

/// A wait's number within its waiter.
pub(super) type Key = u64;

/// What the waiter asks of a scheduler.
pub(super) enum Command {
    /// Start polling for a new wait.
    Add(Key, Box<Entry>),
    /// Stop one wait (it ends with [`Error::WaitCancelled`]).
    Cancel(Key),
    /// Stop every wait.
    CancelAll,
    /// A verified webhook delivery reported the wait's task finished.
    Webhook(Key, Box<Task>),
}

/// A wait that ended.
pub(super) struct Finished {
    pub(super) task_ref: TaskRef,
    pub(super) result: Result<Task>,
    /// Polls the wait made.
    pub(super) polls: u32,
}

/// How far past the due entries a batch looks for waits it may poll early.
const EARLY_SCAN: usize = 1_000;

/// One wait in a scheduler. Built by the waiter (boxed once: the box travels
/// in the command and stays in the table, so adding a wait allocates it once).
pub(super) struct Entry {
    poller: Poller,
    /// When the next poll is due; `None` while a read is in flight or the wait is ending.
    due: Option<Instant>,
    /// From when the wait may ride along in a batch before `due`: half its
    /// planned delay, or `due` itself when a server's hint set the delay.
    early: Instant,
    /// When the wait ends if no answer ends it first: its deadline, or sooner
    /// when its poller found no time for another poll.
    end: Instant,
    in_flight: bool,
    /// A batch answer left it out once (it was then read singly).
    missing_once: bool,
    /// A polled success without a result, held until the webhook brings it
    /// or the grace ends (`end`), when the provider's results come only by webhook.
    held: Option<Box<Task>>,
}

impl Entry {
    pub(super) fn new(poller: Poller) -> Box<Self> {
        let end = poller.deadline();
        Box::new(Entry { due: None, early: end, end, in_flight: false, missing_once: false, held: None, poller })
    }
}

enum Flight {
    One { key: Key, sent: Instant, result: Result<Task> },
    Many { keys: Vec<Key>, sent: Instant, result: Result<HashMap<String, Task>> },
}

enum Event {
    Landed(Box<Flight>),
    Command(Option<Command>),
    Woke,
}

pub(super) struct Scheduler {
    provider: &'static str,
    source: Arc<dyn Source>,
    clock: Arc<dyn Clock>,
    budget: Budget,
    max_in_flight: usize,
    /// Boxed: the table's spare capacity then costs a pointer per slot, not a wait.
    entries: HashMap<Key, Box<Entry>>,
    by_due: BTreeSet<(Instant, Key)>,
    /// Every entry not in flight, by when it ends.
    by_end: BTreeSet<(Instant, Key)>,
    /// Entries to read singly next (left out of a batch answer).
    singles: VecDeque<Key>,
    in_flight: FuturesUnordered<BoxFuture<'static, Flight>>,
    commands: mpsc::UnboundedReceiver<Command>,
    finished: mpsc::UnboundedSender<Finished>,
    requests: Arc<AtomicU64>,
    /// Where each wait's state goes after every poll that plans another (a wait store saves it).
    progress: Option<mpsc::UnboundedSender<WaitState>>,
    /// The client's webhook hub and the provider's scheme, when it declares one.
    webhook: Option<(WebhookHub, &'static WebhookSpec)>,
}

impl Scheduler {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        provider: &'static str,
        source: Arc<dyn Source>,
        clock: Arc<dyn Clock>,
        rate: RateSpec,
        max_in_flight: usize,
        commands: mpsc::UnboundedReceiver<Command>,
        finished: mpsc::UnboundedSender<Finished>,
        requests: Arc<AtomicU64>,
        hooks: (Option<Arc<SharedTokens>>, Option<mpsc::UnboundedSender<WaitState>>),
    ) -> Self {
        let (shared, progress) = hooks;
        Self {
            provider,
            source,
            budget: Budget::new(rate, clock.clone(), shared),
            clock,
            max_in_flight: max_in_flight.max(1),
            entries: HashMap::new(),
            by_due: BTreeSet::new(),
            by_end: BTreeSet::new(),
            singles: VecDeque::new(),
            in_flight: FuturesUnordered::new(),
            commands,
            finished,
            requests,
            progress,
            webhook: None,
        }
    }

    /// Paces polls and holds webhook-only results as the provider's webhook scheme says.
    pub(super) fn with_webhooks(mut self, webhook: Option<(WebhookHub, &'static WebhookSpec)>) -> Self {
        self.webhook = webhook;
        self
    }

    /// Runs until the waiter is dropped (its command channel closes).
    pub(super) async fn run(mut self) {
        loop {
            let now = self.clock.now();
            self.end_due(now);
            let wake = self.launch(now);
            let clock = self.clock.clone();
            // The sleep is created only when polled: a virtual clock moves its
            // time when a sleep is created, and a command or an answer may win.
            let sleep = async move {
                match wake {
                    Some(at) => clock.sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            let event = tokio::select! {
                biased;
                Some(flight) = self.in_flight.next(), if !self.in_flight.is_empty() => Event::Landed(Box::new(flight)),
                command = self.commands.recv() => Event::Command(command),
                () = sleep => Event::Woke,
            };
            match event {
                Event::Landed(flight) => self.land(*flight),
                Event::Command(Some(command)) => {
                    self.apply(command);
                    // Everything already queued (a burst of adds) before the next launch,
                    // so the first batch is full rather than one read per add.
                    while let Ok(command) = self.commands.try_recv() {
                        self.apply(command);
                    }
                }
                // The waiter is gone: drop every wait and every request in flight.
                Event::Command(None) => return,
                Event::Woke => {}
            }
        }
    }

    fn apply(&mut self, command: Command) {
        match command {
            Command::Add(key, mut entry) => {
                match entry.poller.start() {
                    Decision::Poll { at, .. } => {
                        entry.due = Some(at);
                        entry.early = at;
                        self.by_due.insert((at, key));
                    }
                    Decision::Expire { at } => entry.end = entry.end.min(at),
                    // A wait never ends before its first poll otherwise.
                    Decision::Done(task) => return self.finish(&entry.poller, Ok(task)),
                    Decision::Fail(error) => return self.finish(&entry.poller, Err(error)),
                }
                self.by_end.insert((entry.end, key));
                self.entries.insert(key, entry);
            }
            Command::Cancel(key) => self.cancel(key),
            Command::Webhook(key, task) => {
                // A read in flight for it lands on no entry and is dropped.
                if let Some(mut entry) = self.remove(key) {
                    let (_, decision) = entry.poller.observe_webhook(self.clock.now(), *task);
                    let result = match decision {
                        Decision::Done(task) => Ok(task),
                        Decision::Fail(error) => Err(error),
                        // Only finished tasks are handed over.
                        Decision::Poll { .. } | Decision::Expire { .. } => Err(entry.poller.expire(self.clock.now())),
                    };
                    self.finish(&entry.poller, result);
                }
            }
            Command::CancelAll => {
                let keys: Vec<Key> = self.entries.keys().copied().collect();
                for key in keys {
                    self.cancel(key);
                }
            }
        }
    }

    fn cancel(&mut self, key: Key) {
        if let Some(mut entry) = self.remove(key) {
            // A success already polled (held for its webhook's result) is reported as such.
            if let Some(task) = entry.held.take() {
                return self.finish(&entry.poller, Ok(*task));
            }
            let state = entry.poller.state().clone();
            let error = Error::WaitCancelled(crate::error::WaitCancelled { state: Box::new(state) });
            self.finish(&entry.poller, Err(error));
        }
    }

    /// Ends the waits whose end has come (deadline, or no poll left before it).
    fn end_due(&mut self, now: Instant) {
        while let Some(&(end, key)) = self.by_end.first() {
            if end > now {
                break;
            }
            if let Some(mut entry) = self.remove(key) {
                // A held success whose webhook did not come within the grace ends as polled.
                let result = match entry.held.take() {
                    Some(task) => Ok(*task),
                    None => Err(entry.poller.expire(now)),
                };
                self.finish(&entry.poller, result);
            } else {
                self.by_end.pop_first();
            }
        }
    }

    /// Sends what is due, as far as the in-flight bound and the rate budget
    /// allow; returns when something next needs doing.
    fn launch(&mut self, now: Instant) -> Option<Instant> {
        let mut wake = self.by_end.first().map(|&(end, _)| end);
        let mut earliest = |at: Instant| wake = Some(wake.map_or(at, |w| w.min(at)));
        while self.in_flight.len() < self.max_in_flight {
            while self.singles.front().is_some_and(|key| !self.entries.contains_key(key)) {
                self.singles.pop_front();
            }
            let due = if self.singles.is_empty() { self.by_due.first().map(|&(due, _)| due) } else { Some(now) };
            let Some(due) = due else { break };
            if due > now {
                earliest(due);
                break;
            }
            if let Err(retry_at) = self.budget.take(now) {
                earliest(retry_at);
                break;
            }
            self.requests.fetch_add(1, Ordering::Relaxed);
            if let Some(key) = self.singles.pop_front() {
                self.send_one(key, now);
            } else if let Some(size) = self.source.batch_size() {
                self.send_batch(size, now);
            } else if let Some((_, key)) = self.by_due.pop_first() {
                self.send_one(key, now);
            }
        }
        wake
    }

    fn send_one(&mut self, key: Key, now: Instant) {
        let Some(budget) = self.take_off(key, now) else { return };
        let Some(entry) = self.entries.get(&key) else { return };
        let read = on_a_worker(self.source.read_one(entry.poller.task_ref().clone(), budget));
        self.in_flight.push(Box::pin(async move { Flight::One { key, sent: now, result: read.await } }));
    }

    /// One batch read: the due waits first, in due order, then waits far
    /// enough into their delay to be polled a little early, so waits that
    /// were polled together stay together and a round costs ⌈pending / size⌉ reads.
    fn send_batch(&mut self, size: usize, now: Instant) {
        let mut picked: Vec<(Instant, Key)> = Vec::with_capacity(size.min(self.by_due.len()));
        for &(due, key) in self.by_due.iter() {
            if due > now || picked.len() == size {
                break;
            }
            picked.push((due, key));
        }
        if picked.len() < size {
            let ahead = self.by_due.iter().skip(picked.len()).take(EARLY_SCAN);
            let ready = ahead.filter(|(_, key)| self.entries.get(key).is_some_and(|e| e.early <= now));
            picked.extend(ready.take(size - picked.len()));
        }
        let mut keys = Vec::with_capacity(picked.len());
        let mut ids = Vec::with_capacity(picked.len());
        let mut budget = Duration::MAX;
        for (due, key) in picked {
            self.by_due.remove(&(due, key));
            if let Some(left) = self.take_off(key, now)
                && let Some(entry) = self.entries.get(&key)
            {
                budget = budget.min(left);
                ids.push(entry.poller.task_ref().id().to_string());
                keys.push(key);
            }
        }
        if keys.is_empty() {
            return;
        }
        let read = on_a_worker(self.source.read_many(ids, budget));
        self.in_flight.push(Box::pin(async move { Flight::Many { keys, sent: now, result: read.await } }));
    }

    /// Marks a wait in flight and returns its request budget (the time left
    /// before its deadline); `None` if it is gone.
    fn take_off(&mut self, key: Key, now: Instant) -> Option<Duration> {
        let entry = self.entries.get_mut(&key)?;
        if let Some(due) = entry.due.take() {
            self.by_due.remove(&(due, key));
        }
        self.by_end.remove(&(entry.end, key));
        entry.in_flight = true;
        Some(entry.poller.remaining(now))
    }

    fn land(&mut self, flight: Flight) {
        let received = self.clock.now();
        match flight {
            Flight::One { key, sent, result } => {
                if let Err(error) = &result {
                    self.pause_on(error, key, received);
                }
                self.observe(key, sent, received, result);
            }
            Flight::Many { keys, sent, result: Ok(mut found) } => {
                for key in keys {
                    let Some(entry) = self.entries.get_mut(&key) else { continue };
                    match found.remove(entry.poller.task_ref().id()) {
                        Some(task) => self.observe(key, sent, received, Ok(task)),
                        // Left out of the answer: read it singly once before calling it missing.
                        None if !entry.missing_once => {
                            entry.missing_once = true;
                            entry.in_flight = false;
                            self.by_end.insert((entry.end, key));
                            self.singles.push_back(key);
                        }
                        None => {
                            let id = entry.poller.task_ref().id().to_string();
                            if let Some(entry) = self.remove(key) {
                                let error = Error::MissingFromBatch(crate::error::MissingFromBatch {
                                    provider: self.provider,
                                    id,
                                });
                                self.finish(&entry.poller, Err(error));
                            }
                        }
                    }
                }
            }
            Flight::Many { keys, sent, result: Err(error) } => {
                if let Some(&key) = keys.first() {
                    self.pause_on(&error, key, received);
                }
                for key in keys {
                    self.observe(key, sent, received, Err(error.duplicate()));
                }
            }
        }
    }

    /// A 429 or 503 with `Retry-After` holds the whole provider until the
    /// hint (bounded by the wait's ceiling), not only the wait that got it.
    fn pause_on(&mut self, error: &Error, key: Key, received: Instant) {
        let (Some(429 | 503), Some(hint)) = (error.status(), error.retry_after()) else { return };
        let Some(entry) = self.entries.get(&key) else { return };
        let bounded = hint.min(entry.poller.retry_after_ceiling());
        if !bounded.is_zero()
            && let Some(until) = received.checked_add(bounded)
        {
            tracing::debug!(provider = self.provider, pause_ms = bounded.as_millis() as u64, "provider paused");
            self.budget.pause_until(until);
        }
    }

    fn observe(&mut self, key: Key, sent: Instant, received: Instant, result: Result<Task>) {
        let Some(entry) = self.entries.get_mut(&key) else { return };
        entry.in_flight = false;
        let hinted = match &result {
            Ok(task) => task.retry_after().is_some(),
            Err(error) => error.retry_after().is_some(),
        };
        if let Some((hub, hook)) = &self.webhook {
            let active = hub.active(self.provider, Duration::from_millis(hook.active_window_ms));
            entry.poller.set_delay_factor(if active { hook.poll_factor } else { 1.0 });
        }
        let decision = entry.poller.observe_quietly(sent, received, result);
        match decision {
            Decision::Poll { at, delay } => {
                // Between polls a wait keeps phase, status and timings, not the raw body.
                entry.poller.forget_last_task();
                entry.due = Some(at);
                entry.early = if hinted { at } else { at.checked_sub(delay / 2).unwrap_or(at) };
                if let Some(progress) = &self.progress {
                    let _ = progress.send(entry.poller.state().clone());
                }
                self.by_due.insert((at, key));
                self.by_end.insert((entry.end, key));
            }
            Decision::Expire { at } => {
                entry.end = entry.end.min(at);
                self.by_end.insert((entry.end, key));
            }
            Decision::Done(task) => {
                if let Some(grace) = grace_for(self.webhook.as_ref(), &task) {
                    // Wait for the webhook's result: no more polls, end at the grace or the deadline.
                    entry.end = entry.end.min(received.checked_add(grace).unwrap_or(entry.end));
                    entry.held = Some(Box::new(task));
                    self.by_end.insert((entry.end, key));
                } else if let Some(entry) = self.entries.remove(&key) {
                    self.finish(&entry.poller, Ok(task));
                }
            }
            Decision::Fail(error) => {
                if let Some(entry) = self.entries.remove(&key) {
                    self.finish(&entry.poller, Err(error));
                }
            }
        }
    }

    /// Takes a wait out of the scheduler and out of every index.
    fn remove(&mut self, key: Key) -> Option<Box<Entry>> {
        let entry = self.entries.remove(&key)?;
        if let Some(due) = entry.due {
            self.by_due.remove(&(due, key));
        }
        self.by_end.remove(&(entry.end, key));
        Some(entry)
    }

    fn finish(&self, poller: &Poller, result: Result<Task>) {
        let task_ref = poller.task_ref().clone();
        let polls = poller.state().attempts;
        // The receiver lives as long as the waiter; if it is gone, nobody is listening.
        let _ = self.finished.send(Finished { task_ref, result, polls });
    }
}

/// How long to hold a polled success for its webhook: a success without a
/// result, at a provider whose results come only by webhook, while the hub listens.
fn grace_for(webhook: Option<&(WebhookHub, &'static WebhookSpec)>, task: &Task) -> Option<Duration> {
    let (hub, hook) = webhook?;
    let wanted = hook.result_only_by_webhook && task.result().is_none() && hub.is_listening();
    wanted.then(|| Duration::from_millis(hook.grace_ms))
}

/// Runs a read as its own task on a multi-thread runtime, so answers are
/// decoded on every worker rather than on the scheduler's thread alone; on a
/// current-thread runtime (and in virtual-time tests) it stays inline.
fn on_a_worker<T: Send + 'static>(read: BoxFuture<'static, Result<T>>) -> BoxFuture<'static, Result<T>> {
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) if runtime.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            let task = AbortOnDrop(runtime.spawn(read));
            Box::pin(async move {
                task.await.unwrap_or_else(|stopped| Err(Error::config(format!("the status read stopped: {stopped}"))))
            })
        }
        _ => read,
    }
}

/// A spawned read that stops when the scheduler drops it (the waiter is gone).
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> std::future::Future for AbortOnDrop<T> {
    type Output = std::result::Result<T, tokio::task::JoinError>;

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.0).poll(cx)
    }
}

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}
