//! One provider's scheduler: every wait on the provider, one queue ordered by
//! due time, due polls coalesced into batch reads, at most `max_in_flight`
//! requests at once, one rate budget, and a provider-wide pause on a
//! `Retry-After`. Each wait keeps its own [`Poller`], so every single-task
//! guarantee (the deadline, hints, guards) holds per task.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use futures_util::stream::FuturesUnordered;
use tokio::sync::mpsc;
use tokio_util::task::AbortOnDropHandle;

use super::budget::{Budget, SharedTokens};
use super::source::{BatchIds, Limits, Source};
use crate::observe::Seen;
use crate::policy::Durations;
use crate::spec::{BoxFuture, RateSpec, WebhookSpec};
use crate::wait::{Decision, Poller};
use crate::webhook::WebhookHub;
use crate::{Clock, Error, PollEvent, Result, Task, TaskRef, WaitState};

/// A wait's number within its client's engine.
pub(crate) type Key = u64;

/// What the engine asks of a scheduler.
pub(crate) enum Command {
    /// Start polling for a new wait.
    Add(Box<Entry>),
    /// Start polling for new waits, all before the next launch.
    #[allow(clippy::vec_box)] // each box moves into the table as it is (one allocation per wait)
    AddMany(Vec<Box<Entry>>),
    /// Stop one wait (it ends with [`Error::WaitCancelled`]).
    Cancel(Key),
    /// Stop every wait of a group (each ends with [`Error::WaitCancelled`]).
    CancelGroup(u64),
    /// Forget every wait of a group: nobody listens to it any more.
    DropGroup(u64),
    /// A verified webhook delivery reported the wait's task finished.
    Webhook(Key, Box<Task>),
    /// The consumer of a stepped wait asks for its next poll.
    Step(Key),
    /// Durations learned elsewhere (a wait store's, from earlier runs), for
    /// the estimate of the waits with this duration key (see [`Learned`]).
    #[cfg_attr(not(any(feature = "store-sqlite", feature = "store-postgres")), allow(dead_code))]
    Learn(Option<Arc<str>>, Vec<(Duration, Duration)>),
}

/// What a wait added to its scheduler's estimate of durations when its task
/// ended (a wait store keeps it, so that its next worker starts warm).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Learned {
    pub(crate) provider: &'static str,
    /// The wait's duration key, if its options gave one.
    pub(crate) key: Option<Arc<str>>,
    /// The task ended after the first and by the second (elapsed from the wait's start).
    pub(crate) between: (Duration, Duration),
}

/// A wait that ended.
pub(crate) struct Finished {
    pub(crate) task_ref: TaskRef,
    pub(crate) result: Result<Task>,
    /// Polls the wait made.
    pub(crate) polls: u32,
}

/// Who hears of a set of waits: a [`Waiter`](crate::Waiter), or the handle
/// of one wait. Its waits may sit on several schedulers (one per provider),
/// next to other groups' waits.
pub(crate) struct Group {
    /// Unique within the engine, to name the group in commands.
    pub(crate) id: u64,
    /// Where its waits go when they end, a scheduler turn's worth at a time.
    finished: mpsc::UnboundedSender<Vec<Finished>>,
    /// Each poll's event, once someone watches (only then are events built:
    /// one clones the task and the wait state).
    events: OnceLock<mpsc::UnboundedSender<PollEvent>>,
    /// Each wait's state after every poll that plans another (a wait store saves it).
    progress: Option<mpsc::UnboundedSender<WaitState>>,
    /// What each wait added to the estimate of durations (a wait store keeps it).
    learned: Option<mpsc::UnboundedSender<Learned>>,
    /// Status reads sent for its waits (a batch read counts once).
    requests: AtomicU64,
    /// While watched, each poll waits for [`Command::Step`] after the
    /// previous event (a lone wait stepped one poll at a time).
    stepped: bool,
}

impl Group {
    /// A group and the receiver of its waits' ends.
    pub(crate) fn new(
        id: u64,
        progress: Option<mpsc::UnboundedSender<WaitState>>,
        learned: Option<mpsc::UnboundedSender<Learned>>,
    ) -> (Arc<Self>, mpsc::UnboundedReceiver<Vec<Finished>>) {
        Self::build(id, (progress, learned), false)
    }

    /// A group of one wait whose polls, while watched, wait for [`Command::Step`].
    pub(crate) fn stepped(id: u64) -> (Arc<Self>, mpsc::UnboundedReceiver<Vec<Finished>>) {
        Self::build(id, (None, None), true)
    }

    fn build(
        id: u64,
        (progress, learned): (Option<mpsc::UnboundedSender<WaitState>>, Option<mpsc::UnboundedSender<Learned>>),
        stepped: bool,
    ) -> (Arc<Self>, mpsc::UnboundedReceiver<Vec<Finished>>) {
        let (finished, receiver) = mpsc::unbounded_channel();
        let events = OnceLock::new();
        let group = Group { id, finished, events, progress, learned, requests: AtomicU64::new(0), stepped };
        (Arc::new(group), receiver)
    }

    /// Starts building an event for every poll of the group's waits; `None`
    /// if someone watches already.
    pub(crate) fn watch(&self) -> Option<mpsc::UnboundedReceiver<PollEvent>> {
        let (sender, receiver) = mpsc::unbounded_channel();
        self.events.set(sender).ok()?;
        Some(receiver)
    }

    /// Status reads sent for the group's waits.
    pub(crate) fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Where to send events, while someone listens.
    fn watcher(&self) -> Option<&mpsc::UnboundedSender<PollEvent>> {
        self.events.get().filter(|sender| !sender.is_closed())
    }
}

/// How far past the due entries a batch looks for waits it may poll early.
const EARLY_SCAN: usize = 1_000;

/// One wait in a scheduler. Built by the engine (boxed once: the box travels
/// in the command and stays in the table, so adding a wait allocates it once).
pub(crate) struct Entry {
    /// The wait's key, to tell it from a later wait in the same slot.
    key: Key,
    poller: Poller,
    group: Arc<Group>,
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
    /// Its next poll (`due`) waits for the consumer's [`Command::Step`].
    parked: bool,
    /// A batch answer left it out: it is read singly from then on.
    single_only: bool,
    /// A polled success without a result, held until the webhook brings it
    /// or the grace ends (`end`), when the provider's results come only by webhook.
    held: Option<Box<Task>>,
    span: crate::telemetry::WaitSpan,
}

impl Entry {
    pub(crate) fn new(key: Key, poller: Poller, group: Arc<Group>) -> Box<Self> {
        let end = poller.deadline();
        Box::new(Entry {
            key,
            due: None,
            early: end,
            end,
            end_queued: false,
            in_flight: false,
            parked: false,
            single_only: false,
            held: None,
            span: crate::telemetry::WaitSpan::new(poller.task_ref(), poller.policy().name()),
            poller,
            group,
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
    /// Waits that ended this turn, not yet sent, with their groups.
    done: Vec<(Arc<Group>, Finished)>,
    /// The client's webhook hub and the provider's scheme, when it declares one.
    webhook: Option<(WebhookHub, &'static WebhookSpec)>,
    /// How long the provider's tasks take, learned from the waits that ended
    /// here: the provider's estimate and one per key a wait gives.
    durations: Learning,
    /// How long the provider's answers take to arrive (sent to answered), for
    /// the attempt timeout.
    latencies: Durations,
    telemetry: crate::telemetry::Lane,
    /// The salt every wait here draws its jitter from (see [`Poller::share_jitter`]).
    jitter_salt: u64,
}

/// The estimates of one provider's task durations.
#[derive(Default)]
struct Learning {
    all: Arc<Mutex<Durations>>,
    /// At most [`Learning::MAX_KEYS`]: waits with later keys share `all`.
    by_key: HashMap<Arc<str>, Arc<Mutex<Durations>>>,
}

impl Learning {
    /// Bounds the memory the keys a caller gives can take (about 32 KiB each).
    const MAX_KEYS: usize = 1_000;

    fn of(&mut self, key: Option<&Arc<str>>) -> Arc<Mutex<Durations>> {
        let Some(key) = key else { return self.all.clone() };
        if let Some(durations) = self.by_key.get(key) {
            return durations.clone();
        }
        if self.by_key.len() >= Self::MAX_KEYS {
            return self.all.clone();
        }
        self.by_key.entry(key.clone()).or_default().clone()
    }
}

impl Scheduler {
    /// `shared`: the share of a rate budget held elsewhere (a wait store's), if any.
    pub(crate) fn new(
        provider: &'static str,
        source: Arc<dyn Source>,
        clock: Arc<dyn Clock>,
        (rate, shared): (RateSpec, Option<Arc<SharedTokens>>),
        max_in_flight: usize,
        commands: mpsc::UnboundedReceiver<Command>,
    ) -> Self {
        Self {
            provider,
            source,
            budget: Budget::new(provider, rate, clock.clone(), shared),
            clock,
            max_in_flight: max_in_flight.max(1),
            entries: slab::Slab::new(),
            slots: HashMap::new(),
            by_due: BTreeSet::new(),
            by_end: BinaryHeap::new(),
            singles: VecDeque::new(),
            in_flight: FuturesUnordered::new(),
            commands,
            done: Vec::new(),
            webhook: None,
            durations: Learning::default(),
            latencies: Durations::new(),
            telemetry: crate::telemetry::Lane::new(provider),
            jitter_salt: fastrand::u64(..),
        }
    }

    /// Paces polls and holds webhook-only results as the provider's webhook scheme says.
    pub(crate) fn with_webhooks(mut self, webhook: Option<(WebhookHub, &'static WebhookSpec)>) -> Self {
        self.webhook = webhook;
        self
    }

    /// Runs until the engine and every handle on it are dropped (its command channel closes).
    pub(crate) async fn run(mut self) {
        loop {
            let now = self.clock.now();
            self.end_due(now);
            let next_read = self.launch(now);
            // Again, to drop the ends of the waits just sent (their answers
            // queue them anew): nothing sleeps until the deadline of a wait
            // whose read is in flight (a manual clock would jump there).
            self.end_due(now);
            self.report();
            self.telemetry.waits_active(self.entries.len());
            let next_end = self.by_end.peek().map(|Reverse((end, _, _))| *end);
            let wake = match (next_read, next_end) {
                (Some(read), Some(end)) => Some(read.min(end)),
                (read, end) => read.or(end),
            };
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
                // Nobody can reach the scheduler any more: drop every wait and every request in flight.
                Event::Command(None) => return,
                Event::Woke => {}
            }
        }
    }

    fn apply(&mut self, command: Command) {
        match command {
            Command::Add(mut entry) => {
                let key = entry.key;
                let durations = self.durations.of(entry.poller.duration_key());
                entry.poller.attach(durations);
                entry.poller.share_jitter(self.jitter_salt);
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
            Command::AddMany(entries) => {
                for entry in entries {
                    self.apply(Command::Add(entry));
                }
            }
            Command::Cancel(key) => self.cancel(key),
            Command::Webhook(key, task) => {
                // A read in flight for it lands on no entry and is dropped.
                let entry = self.slots.get(&key).copied().and_then(|slot| self.remove((key, slot)));
                self.telemetry.webhook_race(entry.is_some());
                if let Some(mut entry) = entry {
                    let (event, decision) = entry.poller.observe_webhook(self.clock.now(), *task);
                    if let Some(watcher) = entry.group.watcher() {
                        let _ = watcher.send(event);
                    }
                    let result = match decision {
                        Decision::Done(task) => Ok(task),
                        Decision::Fail(error) => Err(error),
                        // Only finished tasks are handed over.
                        Decision::Poll { .. } | Decision::Expire { .. } => Err(entry.poller.expire(self.clock.now())),
                    };
                    self.finish(entry, result);
                }
            }
            Command::Step(key) => {
                if let Some(slot) = self.slots.get(&key).copied()
                    && let Some(entry) = self.entry((key, slot))
                    && std::mem::take(&mut entry.parked)
                    && let Some(due) = entry.due
                {
                    let end = entry.end;
                    self.by_due.insert((due, key, slot));
                    self.queue_end((key, slot), end);
                }
            }
            Command::CancelGroup(group) => {
                for key in self.keys_of(group) {
                    self.cancel(key);
                }
            }
            Command::DropGroup(group) => {
                for key in self.keys_of(group) {
                    if let Some(slot) = self.slots.get(&key).copied() {
                        self.remove((key, slot));
                    }
                }
            }
            Command::Learn(key, seen) => {
                let durations = self.durations.of(key.as_ref());
                let mut durations = durations.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                for (after, by) in seen {
                    durations.record_between(after, by);
                }
            }
        }
    }

    /// The waits of a group.
    fn keys_of(&self, group: u64) -> Vec<Key> {
        self.entries.iter().filter(|(_, entry)| entry.group.id == group).map(|(_, entry)| entry.key).collect()
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
                // Nothing happens to a parked wait until its consumer asks (which queues the end again).
                Some(entry) if entry.parked => entry.end_queued = false,
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
    /// allow; returns when the next read may go.
    fn launch(&mut self, now: Instant) -> Option<Instant> {
        let mut wake: Option<Instant> = None;
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
            if let Some(tag) = self.singles.pop_front() {
                self.send_one(tag, now);
            } else {
                self.send_due(now);
            }
        }
        wake
    }

    /// Reads the first due wait: alone with the provider's single-task
    /// operation, or in a batch read when other waits are due or may ride along.
    fn send_due(&mut self, now: Instant) {
        let Some(&(_, key, slot)) = self.by_due.first() else { return };
        let alone = self.entries.get(slot).is_none_or(|entry| entry.single_only);
        match self.source.batch_size() {
            Some(size) if !alone => {
                let picked = self.pick_batch(size, now);
                match picked.as_slice() {
                    [] | [_] => self.send_one((key, slot), now),
                    _ => self.send_batch(picked, now),
                }
            }
            _ => self.send_one((key, slot), now),
        }
    }

    fn send_one(&mut self, tag: Tag, now: Instant) {
        let Some(budget) = self.take_off(tag, now) else { return };
        let limits = Limits { budget, attempt: self.attempt_timeout(budget) };
        let Some(entry) = at(&mut self.entries, tag) else { return };
        entry.group.requests.fetch_add(1, Ordering::Relaxed);
        // A watched wait's events show whole observations; others keep no body between polls.
        let keep_body = entry.group.watcher().is_some();
        let task_ref = entry.poller.task_ref().clone();
        let read = on_a_worker(entry.span.read(self.source.read_one(task_ref, limits, keep_body)));
        self.in_flight.push(Box::pin(async move { Flight::One { tag, sent: now, result: read.await } }));
    }

    /// The waits of one batch read: the due waits first, in due order, then
    /// waits far enough into their delay to be polled a little early, so
    /// waits that were polled together stay together and a round costs
    /// ⌈pending / size⌉ reads. Waits read singly only are left to [`Self::send_one`].
    fn pick_batch(&self, size: usize, now: Instant) -> Vec<Tag> {
        let mut picked = Vec::with_capacity(size.min(self.by_due.len()));
        let mut ahead = 0;
        for &(due, key, slot) in &self.by_due {
            if picked.len() == size {
                break;
            }
            let Some(entry) = self.entries.get(slot) else { continue };
            if due > now {
                ahead += 1;
                if ahead > EARLY_SCAN {
                    break;
                }
                if entry.early > now {
                    continue;
                }
            }
            if !entry.single_only {
                picked.push((key, slot));
            }
        }
        picked
    }

    fn send_batch(&mut self, picked: Vec<Tag>, now: Instant) {
        let mut tags = Vec::with_capacity(picked.len());
        let mut ids = BatchIds::with_capacity(picked.len(), 16 * picked.len());
        let mut budget = Duration::MAX;
        // One read for each group that has waits in it (groups per batch are few).
        let mut counted: Vec<u64> = Vec::new();
        for tag in picked {
            if let Some(left) = self.take_off(tag, now)
                && let Some(entry) = self.entries.get(tag.1)
            {
                budget = budget.min(left);
                ids.push(entry.poller.task_ref().id());
                tags.push(tag);
                if !counted.contains(&entry.group.id) {
                    counted.push(entry.group.id);
                    entry.group.requests.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        if tags.is_empty() {
            return;
        }
        let limits = Limits { budget, attempt: self.attempt_timeout(budget) };
        let read = on_a_worker(self.telemetry.batch(tags.len(), self.source.read_many(ids, limits)));
        self.in_flight.push(Box::pin(async move { Flight::Many { tags, sent: now, result: read.await } }));
    }

    /// How long one read may take before it is given up and retried on a
    /// new connection: four times the 99th percentile of the provider's
    /// answer times once 20 answers were seen, else half the time left
    /// before the wait's deadline (`remaining`); never under one second (a
    /// cold connection's TLS handshake), never past the deadline, and never
    /// over the client's request timeout (the read applies it).
    fn attempt_timeout(&mut self, remaining: Duration) -> Duration {
        const FLOOR: Duration = Duration::from_secs(1);
        let bound = match self.latencies.cached_quantile(0.99) {
            Some(p99) => p99.saturating_mul(4),
            None => remaining / 2,
        };
        bound.max(FLOOR).min(remaining)
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
        // Only answers: a read that got none says nothing of how long answers take.
        let answered = match &flight {
            Flight::One { sent, result, .. } => {
                result.as_ref().err().is_none_or(|e| e.status().is_some()).then_some(*sent)
            }
            Flight::Many { sent, result, .. } => {
                result.as_ref().err().is_none_or(|e| e.status().is_some()).then_some(*sent)
            }
        };
        if let Some(sent) = answered {
            self.latencies.record(received.saturating_duration_since(sent));
        }
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

    /// A wait a batch answer left out: read singly now and from then on (a
    /// server whose batch answers miss a task its single read finds is still
    /// followed to the end; one that does not find it answers as it would any
    /// single read).
    fn left_out(&mut self, tag: Tag) {
        let Some(entry) = self.entry(tag) else { return };
        entry.single_only = true;
        entry.in_flight = false;
        let end = entry.end;
        self.queue_end(tag, end);
        self.singles.push_back(tag);
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
            self.telemetry.paused(bounded);
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
        let hinted = match &result {
            Ok(Seen::InProgress { .. }) => false,
            Ok(Seen::Task(task)) => task.retry_after().is_some(),
            Err(error) => error.retry_after().is_some(),
        };
        let span = entry.span.current();
        let _entered = span.enter();
        let decision = match (entry.group.watcher(), result) {
            (Some(watcher), result) => {
                let result = result.map(|seen| seen_task(entry.poller.task_ref(), seen));
                let (event, decision) = entry.poller.observe(sent, received, result);
                let _ = watcher.send(event);
                decision
            }
            (None, Ok(Seen::InProgress { phase, status, http_status })) => {
                entry.poller.observe_in_progress(sent, received, phase, status.as_deref(), http_status)
            }
            (None, Ok(Seen::Task(task))) => entry.poller.observe_quietly(sent, received, Ok(*task)),
            (None, Err(error)) => entry.poller.observe_quietly(sent, received, Err(error)),
        };
        if entry.group.watcher().is_none() {
            // A watched poll's event was logged as it was built.
            let state = entry.poller.state();
            tracing::debug!(
                attempt = state.attempts,
                phase = state.last_phase.map(crate::Phase::as_str),
                status = state.last_status.as_deref(),
                next_delay_ms = state.next_delay_ms,
                "poll"
            );
        }
        match decision {
            Decision::Poll { at, delay } => {
                // Between polls a wait keeps phase, status and timings, not the raw body.
                entry.poller.forget_last_task();
                entry.due = Some(at);
                entry.early = if hinted { at } else { at.checked_sub(delay / 2).unwrap_or(at) };
                if let Some(progress) = &entry.group.progress {
                    let _ = progress.send(entry.poller.state().clone());
                }
                let end = entry.end;
                // A stepped wait's consumer asks for each poll; its deadline still ends it.
                entry.parked = entry.group.stepped && entry.group.watcher().is_some();
                if !entry.parked {
                    self.by_due.insert((at, tag.0, tag.1));
                }
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
                    // A wait store saves the hold (its state's phase is the success), so that a
                    // restarted worker waits out the grace instead of polling again.
                    if let Some(progress) = &entry.group.progress {
                        let _ = progress.send(entry.poller.state().clone());
                    }
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
        let Entry { poller, group, span, .. } = *entry;
        if let (Some(learned), Some(between)) = (&group.learned, poller.learned()) {
            let key = poller.duration_key().cloned();
            let _ = learned.send(Learned { provider: self.provider, key, between });
        }
        let polls = poller.state().attempts;
        self.telemetry.wait_ended(span, &result, polls, poller.elapsed(self.clock.now()));
        self.done.push((group, Finished { task_ref: poller.into_task_ref(), result, polls }));
    }

    /// Sends the waits that ended this turn, one message per group: a
    /// waiter's reader is woken once for a whole batch answer rather than once per task.
    fn report(&mut self) {
        let mut done = std::mem::take(&mut self.done).into_iter().peekable();
        while let Some((group, first)) = done.next() {
            let mut turn = vec![first];
            while let Some((_, next)) = done.next_if(|(next, _)| Arc::ptr_eq(next, &group)) {
                turn.push(next);
            }
            // Nobody listening (a dropped handle) is not an error.
            let _ = group.finished.send(turn);
        }
    }
}

/// The wait at `tag` in `entries`, if it is still there.
fn at(entries: &mut slab::Slab<Box<Entry>>, (key, slot): Tag) -> Option<&mut Box<Entry>> {
    entries.get_mut(slot).filter(|entry| entry.key == key)
}

/// The task a read saw, whole or (in progress, from a batch item read in
/// place) without its body, for a watched wait's event.
fn seen_task(task_ref: &TaskRef, seen: Seen) -> Task {
    match seen {
        Seen::Task(task) => *task,
        Seen::InProgress { phase, status, http_status } => {
            Task::new(task_ref.clone(), phase, status, None, None, http_status, serde_json::Value::Null)
        }
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
            let task = AbortOnDropHandle::new(runtime.spawn(read));
            Box::pin(async move {
                task.await.unwrap_or_else(|stopped| Err(Error::config(format!("the status read stopped: {stopped}"))))
            })
        }
        _ => read,
    }
}
