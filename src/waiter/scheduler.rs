//! One provider's scheduler: every wait on the provider, one queue ordered by
//! due time, due polls coalesced into batch reads, at most `max_in_flight`
//! requests at once, one rate budget, and a provider-wide pause on a
//! `Retry-After`. Each wait keeps its own [`Poller`], so every single-task
//! guarantee (the deadline, hints, guards) holds per task.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use futures_util::stream::FuturesUnordered;
use tokio::sync::mpsc;

use super::budget::{Budget, SharedTokens};
use super::source::{BatchIds, Source};
use crate::observe::Seen;
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
    /// The wait's key, to tell it from a later wait in the same slot.
    key: Key,
    poller: Poller,
    /// When the next poll is due; `None` while a read is in flight or the wait is ending.
    due: Option<Instant>,
    /// From when the wait may ride along in a batch before `due`: half its
    /// planned delay, or `due` itself when a server's hint set the delay.
    early: Instant,
    /// When the wait ends if no answer ends it first: its deadline, or sooner
    /// when its poller found no time for another poll.
    end: Instant,
    /// `(end, key, slot)` is in `by_end`.
    end_queued: bool,
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
        Box::new(Entry {
            key: 0,
            due: None,
            early: end,
            end,
            end_queued: false,
            in_flight: false,
            missing_once: false,
            held: None,
            poller,
        })
    }
}

/// Where a wait is in the scheduler's table.
type Slot = usize;

/// A wait as the queues and reads name it: its key (a slot is reused once its wait ends) and its slot.
type Tag = (Key, Slot);

enum Flight {
    One {
        tag: Tag,
        sent: Instant,
        result: Result<Task>,
    },
    /// `result[i]` answers `tags[i]`.
    Many {
        tags: Vec<Tag>,
        sent: Instant,
        result: Result<Vec<Option<Seen>>>,
    },
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
    /// Every wait, by slot: reads and queues name waits by slot, so each
    /// answer finds its wait without a hash (100,000 waits are read every
    /// interval). Boxed: the table's spare capacity then costs a pointer per slot, not a wait.
    entries: slab::Slab<Box<Entry>>,
    /// Each wait's slot by key, for the waiter's commands.
    slots: HashMap<Key, Slot>,
    by_due: BTreeSet<(Instant, Key, Slot)>,
    /// When waits end, earliest first. Kept lazily, so a poll costs no
    /// update here: an item whose wait is gone or whose end moved is dropped
    /// when it comes up, and one whose wait is in flight is queued again when
    /// the answer lands.
    by_end: BinaryHeap<Reverse<(Instant, Key, Slot)>>,
    /// Entries to read singly next (left out of a batch answer).
    singles: VecDeque<Tag>,
    in_flight: FuturesUnordered<BoxFuture<'static, Flight>>,
    commands: mpsc::UnboundedReceiver<Command>,
    finished: mpsc::UnboundedSender<Vec<Finished>>,
    /// Waits that ended this turn, not yet sent.
    done: Vec<Finished>,
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
        finished: mpsc::UnboundedSender<Vec<Finished>>,
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
            entries: slab::Slab::new(),
            slots: HashMap::new(),
            by_due: BTreeSet::new(),
            by_end: BinaryHeap::new(),
            singles: VecDeque::new(),
            in_flight: FuturesUnordered::new(),
            commands,
            finished,
            done: Vec::new(),
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
            self.report();
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
                entry.key = key;
                let decision = entry.poller.start();
                let place = self.entries.vacant_entry();
                let slot = place.key();
                match decision {
                    Decision::Poll { at, .. } => {
                        entry.due = Some(at);
                        entry.early = at;
                        self.by_due.insert((at, key, slot));
                    }
                    Decision::Expire { at } => entry.end = entry.end.min(at),
                    // A wait never ends before its first poll otherwise.
                    Decision::Done(task) => return self.finish(entry, Ok(task)),
                    Decision::Fail(error) => return self.finish(entry, Err(error)),
                }
                entry.end_queued = true;
                self.by_end.push(Reverse((entry.end, key, slot)));
                place.insert(entry);
                self.slots.insert(key, slot);
            }
            Command::Cancel(key) => self.cancel(key),
            Command::Webhook(key, task) => {
                // A read in flight for it lands on no entry and is dropped.
                if let Some(mut entry) = self.slots.get(&key).copied().and_then(|slot| self.remove((key, slot))) {
                    let (_, decision) = entry.poller.observe_webhook(self.clock.now(), *task);
                    let result = match decision {
                        Decision::Done(task) => Ok(task),
                        Decision::Fail(error) => Err(error),
                        // Only finished tasks are handed over.
                        Decision::Poll { .. } | Decision::Expire { .. } => Err(entry.poller.expire(self.clock.now())),
                    };
                    self.finish(entry, result);
                }
            }
            Command::CancelAll => {
                let keys: Vec<Key> = self.slots.keys().copied().collect();
                for key in keys {
                    self.cancel(key);
                }
            }
        }
    }

    fn cancel(&mut self, key: Key) {
        if let Some(mut entry) = self.slots.get(&key).copied().and_then(|slot| self.remove((key, slot))) {
            // A success already polled (held for its webhook's result) is reported as such.
            if let Some(task) = entry.held.take() {
                return self.finish(entry, Ok(*task));
            }
            let state = entry.poller.state().clone();
            let error = Error::WaitCancelled(crate::error::WaitCancelled { state: Box::new(state) });
            self.finish(entry, Err(error));
        }
    }

    /// The wait at `tag`, if it is still there.
    fn entry(&mut self, tag: Tag) -> Option<&mut Box<Entry>> {
        at(&mut self.entries, tag)
    }

    /// Ends the waits whose end has come (deadline, or no poll left before
    /// it). Leaves at the head of `by_end` the next end of a wait not in
    /// flight, as the old items are dropped on the way.
    fn end_due(&mut self, now: Instant) {
        while let Some(&Reverse((end, key, slot))) = self.by_end.peek() {
            match at(&mut self.entries, (key, slot)) {
                // Gone, or its end moved (the move queued it again).
                None => {}
                Some(entry) if entry.end != end => {}
                // Its read ends before the deadline; the answer decides, and queues the end again.
                Some(entry) if entry.in_flight => entry.end_queued = false,
                Some(_) if end > now => break,
                Some(_) => {
                    if let Some(mut entry) = self.remove((key, slot)) {
                        // A held success whose webhook did not come within the grace ends as polled.
                        let result = match entry.held.take() {
                            Some(task) => Ok(*task),
                            None => Err(entry.poller.expire(now)),
                        };
                        self.finish(entry, result);
                    }
                }
            }
            self.by_end.pop();
        }
        // Items of ended waits wait for their time in the heap: sweep them out
        // when they outnumber the waits (waits end far sooner than their deadlines).
        if self.by_end.len() > 1_024 + 2 * self.entries.len() {
            let entries = &self.entries;
            self.by_end.retain(|&Reverse((end, key, slot))| {
                entries.get(slot).is_some_and(|entry| entry.key == key && entry.end == end && entry.end_queued)
            });
        }
    }

    /// Queues the wait's end unless it is queued already (an end that moved is queued anew).
    fn queue_end(&mut self, (key, slot): Tag, end: Instant) {
        let Some(entry) = self.entry((key, slot)) else { return };
        if entry.end_queued && entry.end == end {
            return;
        }
        entry.end = end;
        entry.end_queued = true;
        self.by_end.push(Reverse((end, key, slot)));
    }

    /// Sends what is due, as far as the in-flight bound and the rate budget
    /// allow; returns when something next needs doing.
    fn launch(&mut self, now: Instant) -> Option<Instant> {
        let mut wake = self.by_end.peek().map(|Reverse((end, _, _))| *end);
        let mut earliest = |at: Instant| wake = Some(wake.map_or(at, |w| w.min(at)));
        while self.in_flight.len() < self.max_in_flight {
            while self.singles.front().is_some_and(|&(key, slot)| self.entries.get(slot).is_none_or(|e| e.key != key)) {
                self.singles.pop_front();
            }
            let due = if self.singles.is_empty() { self.by_due.first().map(|&(due, _, _)| due) } else { Some(now) };
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
            if let Some(tag) = self.singles.pop_front() {
                self.send_one(tag, now);
            } else if let Some(size) = self.source.batch_size() {
                self.send_batch(size, now);
            } else if let Some((_, key, slot)) = self.by_due.pop_first() {
                self.send_one((key, slot), now);
            }
        }
        wake
    }

    fn send_one(&mut self, tag: Tag, now: Instant) {
        let Some(budget) = self.take_off(tag, now) else { return };
        let Some(entry) = at(&mut self.entries, tag) else { return };
        let read = on_a_worker(self.source.read_one(entry.poller.task_ref().clone(), budget));
        self.in_flight.push(Box::pin(async move { Flight::One { tag, sent: now, result: read.await } }));
    }

    /// One batch read: the due waits first, in due order, then waits far
    /// enough into their delay to be polled a little early, so waits that
    /// were polled together stay together and a round costs ⌈pending / size⌉ reads.
    fn send_batch(&mut self, size: usize, now: Instant) {
        let mut picked: Vec<(Instant, Key, Slot)> = Vec::with_capacity(size.min(self.by_due.len()));
        for &(due, key, slot) in self.by_due.iter() {
            if due > now || picked.len() == size {
                break;
            }
            picked.push((due, key, slot));
        }
        if picked.len() < size {
            let ahead = self.by_due.iter().skip(picked.len()).take(EARLY_SCAN);
            let ready = ahead.filter(|(_, _, slot)| self.entries.get(*slot).is_some_and(|e| e.early <= now));
            picked.extend(ready.take(size - picked.len()));
        }
        let mut tags = Vec::with_capacity(picked.len());
        let mut ids = BatchIds::with_capacity(picked.len(), 16 * picked.len());
        let mut budget = Duration::MAX;
        for (_, key, slot) in picked {
            if let Some(left) = self.take_off((key, slot), now)
                && let Some(entry) = self.entries.get(slot)
            {
                budget = budget.min(left);
                ids.push(entry.poller.task_ref().id());
                tags.push((key, slot));
            }
        }
        if tags.is_empty() {
            return;
        }
        let read = on_a_worker(self.source.read_many(ids, budget));
        self.in_flight.push(Box::pin(async move { Flight::Many { tags, sent: now, result: read.await } }));
    }

    /// Marks a wait in flight and returns its request budget (the time left
    /// before its deadline); `None` if it is gone.
    fn take_off(&mut self, tag: Tag, now: Instant) -> Option<Duration> {
        let entry = at(&mut self.entries, tag)?;
        if let Some(due) = entry.due.take() {
            self.by_due.remove(&(due, tag.0, tag.1));
        }
        entry.in_flight = true;
        Some(entry.poller.remaining(now))
    }

    fn land(&mut self, flight: Flight) {
        let received = self.clock.now();
        match flight {
            Flight::One { tag, sent, result } => {
                if let Err(error) = &result {
                    self.pause_on(error, tag, received);
                }
                self.observe(tag, sent, received, result.map(|task| Seen::Task(Box::new(task))));
            }
            Flight::Many { tags, sent, result: Ok(seen) } => {
                for (tag, seen) in tags.into_iter().zip(seen) {
                    match seen {
                        Some(seen) => self.observe(tag, sent, received, Ok(seen)),
                        None => self.left_out(tag),
                    }
                }
            }
            Flight::Many { tags, sent, result: Err(error) } => {
                if let Some(&tag) = tags.first() {
                    self.pause_on(&error, tag, received);
                }
                for tag in tags {
                    self.observe(tag, sent, received, Err(error.duplicate()));
                }
            }
        }
    }

    /// A wait a batch answer left out: read singly once before calling it missing.
    fn left_out(&mut self, tag: Tag) {
        let Some(entry) = self.entry(tag) else { return };
        if !entry.missing_once {
            entry.missing_once = true;
            entry.in_flight = false;
            let end = entry.end;
            self.queue_end(tag, end);
            self.singles.push_back(tag);
        } else if let Some(entry) = self.remove(tag) {
            let id = entry.poller.task_ref().id().to_string();
            let error = Error::MissingFromBatch(crate::error::MissingFromBatch { provider: self.provider, id });
            self.finish(entry, Err(error));
        }
    }

    /// A 429 or 503 with `Retry-After` holds the whole provider until the
    /// hint (bounded by the wait's ceiling), not only the wait that got it.
    fn pause_on(&mut self, error: &Error, tag: Tag, received: Instant) {
        let (Some(429 | 503), Some(hint)) = (error.status(), error.retry_after()) else { return };
        let Some(entry) = self.entry(tag) else { return };
        let bounded = hint.min(entry.poller.retry_after_ceiling());
        if !bounded.is_zero()
            && let Some(until) = received.checked_add(bounded)
        {
            tracing::debug!(provider = self.provider, pause_ms = bounded.as_millis() as u64, "provider paused");
            self.budget.pause_until(until);
        }
    }

    fn observe(&mut self, tag: Tag, sent: Instant, received: Instant, result: Result<Seen>) {
        let webhook_factor = self.webhook.as_ref().map(|(hub, hook)| {
            let active = hub.active(self.provider, Duration::from_millis(hook.active_window_ms));
            if active { hook.poll_factor } else { 1.0 }
        });
        let Some(entry) = at(&mut self.entries, tag) else { return };
        entry.in_flight = false;
        if let Some(factor) = webhook_factor {
            entry.poller.set_delay_factor(factor);
        }
        let (decision, hinted) = match result {
            Ok(Seen::InProgress { phase, status, http_status }) => {
                (entry.poller.observe_in_progress(sent, received, phase, status.as_deref(), http_status), false)
            }
            Ok(Seen::Task(task)) => {
                let hinted = task.retry_after().is_some();
                (entry.poller.observe_quietly(sent, received, Ok(*task)), hinted)
            }
            Err(error) => {
                let hinted = error.retry_after().is_some();
                (entry.poller.observe_quietly(sent, received, Err(error)), hinted)
            }
        };
        match decision {
            Decision::Poll { at, delay } => {
                // Between polls a wait keeps phase, status and timings, not the raw body.
                entry.poller.forget_last_task();
                entry.due = Some(at);
                entry.early = if hinted { at } else { at.checked_sub(delay / 2).unwrap_or(at) };
                if let Some(progress) = &self.progress {
                    let _ = progress.send(entry.poller.state().clone());
                }
                let end = entry.end;
                self.by_due.insert((at, tag.0, tag.1));
                self.queue_end(tag, end);
            }
            Decision::Expire { at } => {
                let end = entry.end.min(at);
                self.queue_end(tag, end);
            }
            Decision::Done(task) => {
                if let Some(grace) = grace_for(self.webhook.as_ref(), &task) {
                    // Wait for the webhook's result: no more polls, end at the grace or the deadline.
                    let end = entry.end.min(received.checked_add(grace).unwrap_or(entry.end));
                    entry.held = Some(Box::new(task));
                    self.queue_end(tag, end);
                } else if let Some(entry) = self.remove(tag) {
                    self.finish(entry, Ok(task));
                }
            }
            Decision::Fail(error) => {
                if let Some(entry) = self.remove(tag) {
                    self.finish(entry, Err(error));
                }
            }
        }
    }

    /// Takes a wait out of the scheduler and out of the due queue (its end
    /// item is dropped when it comes up).
    fn remove(&mut self, tag: Tag) -> Option<Box<Entry>> {
        self.entry(tag)?;
        let entry = self.entries.remove(tag.1);
        self.slots.remove(&tag.0);
        if let Some(due) = entry.due {
            self.by_due.remove(&(due, tag.0, tag.1));
        }
        Some(entry)
    }

    /// Reports a wait's end (sent with the others of this turn, see [`Scheduler::report`]).
    fn finish(&mut self, entry: Box<Entry>, result: Result<Task>) {
        let polls = entry.poller.state().attempts;
        let task_ref = entry.poller.into_task_ref();
        self.done.push(Finished { task_ref, result, polls });
    }

    /// Sends the waits that ended this turn, in one message: the waiter's
    /// reader is woken once for a whole batch answer rather than once per task.
    fn report(&mut self) {
        if !self.done.is_empty() {
            // The receiver lives as long as the waiter; if it is gone, nobody is listening.
            let next = Vec::with_capacity(self.done.len());
            let _ = self.finished.send(std::mem::replace(&mut self.done, next));
        }
    }
}

/// The wait at `tag` in `entries`, if it is still there.
fn at(entries: &mut slab::Slab<Box<Entry>>, (key, slot): Tag) -> Option<&mut Box<Entry>> {
    entries.get_mut(slot).filter(|entry| entry.key == key)
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
