//! The many-task waiter on a store: [`StoredWaiter`].
//!
//! One driver task per waiter claims due waits from the store and hands them
//! to an in-memory [`Waiter`] (the same schedulers, batch reads and rate
//! budgets), renews the leases of the waits it holds, saves their states
//! after polls (coalesced: the latest state of each wait, every
//! `save_every`), tops up each provider's share of the shared rate budget,
//! and writes each outcome to the store before it reports it.
//!
//! Webhook deliveries written to the store by any process
//! ([`WaitStore::deliver`]: a `taskpoll receive`, a worker's receiver) reach
//! the waits this worker holds: every [`DELIVERY_EVERY`] (and at once on
//! PostgreSQL's `NOTIFY` hint) it reads the deliveries of its waits and hands
//! each to the client's hub, the path a local delivery takes. A held success
//! (the grace for a webhook-only result) is saved with the wait's state, so
//! a worker that claims it after a crash waits out the grace without polling.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::FutureExt as _;
use tokio::sync::mpsc;

use super::durations::Journal;
use super::{Claim, DeliveryLimits, NewWait, Policies, StoredOutcome, WaitId, WaitStore, wall_ms};
use crate::spec::RateSpec;
use crate::wait::waiter::{Hooks, SharedGrant, SharedTokens};
use crate::wait::{Decision, Poller, WaitOutcome};
use crate::{Client, Clock, Error, Phase, Policy, Result, Task, TaskRef, WaitOptions, WaitState, Waiter};

/// How often the driver looks at its clocks when nothing else happens.
const TICK: Duration = Duration::from_millis(20);
/// Outcomes written in one store write, at most.
const FINISH_BATCH: usize = 1_000;
/// How often the deliveries of held waits are read from the store (sooner on a hint).
pub(crate) const DELIVERY_EVERY: Duration = Duration::from_millis(250);
/// Deliveries read at once, at most.
const DELIVERY_BATCH: u32 = 1_000;
/// How often the store is swept (expired deliveries, workers gone).
const SWEEP_EVERY: Duration = Duration::from_secs(10);
/// A worker whose lease ran out this long ago, holding nothing, is forgotten.
const GONE_AFTER: Duration = Duration::from_secs(3_600);
/// The first and the longest wait between retries of a failing store.
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The many-task waiter on a [`WaitStore`]: waits survive a restart and
/// several processes share them (see the [module](super) documentation).
///
/// Each outcome is written to the store before [`StoredWaiter::next_outcome`]
/// returns it; mark it consumed ([`WaitStore::consume`]) once handled, and
/// read the ones a crash left unconsumed with [`WaitStore::outcomes`].
#[must_use = "a stored waiter does nothing unless its outcomes are read"]
pub struct StoredWaiter {
    store: Arc<dyn WaitStore>,
    config: Config,
    running: Option<Running>,
    stats: Arc<Counters>,
}

struct Running {
    outcomes: mpsc::UnboundedReceiver<Result<StoredOutcome>>,
    commands: mpsc::UnboundedSender<Command>,
    driver: tokio::task::JoinHandle<()>,
}

#[derive(Clone)]
struct Config {
    client: Client,
    clock: Arc<dyn Clock>,
    worker: String,
    lease: Duration,
    claim_batch: u32,
    max_held: usize,
    save_every: Duration,
    shared_budget: bool,
    policies: Policies,
    webhooks: bool,
    hints: bool,
    delivery_limits: DeliveryLimits,
}

enum Command {
    /// Claim now (waits were added).
    Claim,
    /// Give every held wait back to the store and end.
    Stop(tokio::sync::oneshot::Sender<()>),
}

/// What a [`StoredWaiter`] did so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoreStats {
    /// Status reads sent (a batch read counts once).
    pub requests: u64,
    /// Polls made (a batch read counts once for each of its tasks).
    pub polls: u64,
    /// Store writes (statements or transactions that write: claims,
    /// renewals, saves, outcomes, shared-budget takes).
    pub store_writes: u64,
    /// Waits claimed.
    pub claimed: u64,
    /// Outcomes written.
    pub outcomes: u64,
}

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    polls: AtomicU64,
    store_writes: AtomicU64,
    claimed: AtomicU64,
    outcomes: AtomicU64,
}

impl Counters {
    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

impl StoredWaiter {
    /// A waiter on `store` for the providers `client` configures.
    pub fn new(client: &Client, store: Arc<dyn WaitStore>) -> Self {
        let config = Config {
            client: client.clone(),
            // The client's clock: the same scheduler as the client's other waits.
            clock: client.webhooks().clock().clone(),
            worker: format!("{}-{:016x}", std::process::id(), fastrand::u64(..)),
            lease: Duration::from_secs(30),
            claim_batch: 500,
            max_held: 10_000,
            save_every: Duration::from_secs(1),
            shared_budget: true,
            policies: Policies::default(),
            webhooks: false,
            hints: true,
            delivery_limits: DeliveryLimits::default(),
        };
        Self { store, config, running: None, stats: Arc::new(Counters::default()) }
    }

    /// This worker's name in the store (default: the process id and a random number).
    /// Two running waiters must not share one.
    pub fn worker(mut self, name: impl Into<String>) -> Self {
        self.config.worker = name.into();
        self
    }

    /// How long a claim holds a wait without being renewed (default 30 s; at
    /// least 300 ms). Renewed every third of it; after a crash, another
    /// worker continues the waits once it has run out.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.config.lease = lease.max(Duration::from_millis(300));
        self
    }

    /// Waits claimed at once (default 500).
    pub fn claim_batch(mut self, n: u32) -> Self {
        self.config.claim_batch = n.max(1);
        self
    }

    /// The most waits this worker holds at once (default 10,000): lower it
    /// so that several workers share the waits.
    pub fn max_held(mut self, n: usize) -> Self {
        self.config.max_held = n.max(1);
        self
    }

    /// How often the states of polled waits are saved (default 1 s): a
    /// worker that continues after a crash starts from states at most this old.
    pub fn save_every(mut self, every: Duration) -> Self {
        self.config.save_every = every;
        self
    }

    /// Whether each provider's rate budget is shared through the store by
    /// every process (default: yes). Off, each process has the whole budget.
    pub fn shared_budget(mut self, shared: bool) -> Self {
        self.config.shared_budget = shared;
        self
    }

    /// A policy waits are resumed with when their state names it (waits
    /// keep their policy by name; without one registered, a preset of that
    /// name or the provider's polite policy).
    pub fn policy(mut self, policy: Policy) -> Self {
        self.config.policies.0.insert(policy.name().to_string(), Arc::new(policy));
        self
    }

    /// Whether webhook deliveries reach this worker's waits through the store
    /// (default: no): a receiver writes them there (`taskpoll receive`,
    /// [`crate::webhook::store_router`]). On, the client's hub is marked
    /// listening ([`crate::webhook::WebhookHub::set_listening`]), so a polled
    /// success of a provider whose result comes only by webhook is held for
    /// its grace rather than ended without its result. Deliveries in the store
    /// are applied either way.
    pub fn webhooks_from_store(mut self, on: bool) -> Self {
        self.config.webhooks = on;
        self
    }

    /// Whether to wake up on the store's delivery hint (PostgreSQL's
    /// `NOTIFY`; default: yes) rather than only read deliveries every 250 ms.
    pub fn delivery_hints(mut self, on: bool) -> Self {
        self.config.hints = on;
        self
    }

    /// The bounds this worker's sweeps apply to kept deliveries (default
    /// [`DeliveryLimits::default`]: 10,000 per provider, one hour).
    pub fn delivery_limits(mut self, limits: DeliveryLimits) -> Self {
        self.config.delivery_limits = limits;
        self
    }

    /// The clock for every wait, lease and due time (default: the client's,
    /// [`ClientBuilder::clock`](crate::ClientBuilder::clock)).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.config.clock = clock;
        self
    }

    /// Adds a wait to the store (any process sharing the store may run it).
    /// Returns false if the store already has the task.
    pub async fn add(&self, task: TaskRef, options: &WaitOptions) -> Result<bool> {
        let added = self.add_all(vec![(task, options.clone())]).await?;
        Ok(added == 1)
    }

    /// Adds many waits in one store write; returns how many were new.
    pub async fn add_all(&self, waits: Vec<(TaskRef, WaitOptions)>) -> Result<u64> {
        let mut new = Vec::with_capacity(waits.len());
        for (task, options) in waits {
            self.config.client.configured_for(&task)?;
            new.push(NewWait::new(task, &options.clock(self.config.clock.clone()))?);
        }
        let added = self.store.add(&new).await?;
        Counters::add(&self.stats.store_writes, 1);
        if let Some(running) = &self.running {
            let _ = running.commands.send(Command::Claim);
        }
        Ok(added)
    }

    /// The next outcome, once written to the store; `Ok(None)` when no wait
    /// of the client's providers is left unfinished in the store. An error
    /// is a store error the driver met (it keeps going; call again to go on).
    pub async fn next_outcome(&mut self) -> Result<Option<StoredOutcome>> {
        if self.running.is_none() {
            self.running = Some(self.start()?);
        }
        match &mut self.running {
            Some(running) => running.outcomes.recv().await.transpose(),
            None => Ok(None),
        }
    }

    /// What this waiter did so far.
    pub fn stats(&self) -> StoreStats {
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        StoreStats {
            requests: read(&self.stats.requests),
            polls: read(&self.stats.polls),
            store_writes: read(&self.stats.store_writes),
            claimed: read(&self.stats.claimed),
            outcomes: read(&self.stats.outcomes),
        }
    }

    /// Stops: every wait this worker holds is saved and released, so
    /// another worker (or a later run) continues it at once.
    pub async fn stop(mut self) {
        if let Some(running) = self.running.take() {
            let (done, stopped) = tokio::sync::oneshot::channel();
            if running.commands.send(Command::Stop(done)).is_ok() {
                let _ = stopped.await;
            }
            let _ = running.driver.await;
        }
    }

    fn start(&self) -> Result<Running> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| Error::config("a StoredWaiter needs a tokio runtime (none is running)"))?;
        let config = self.config.clone();
        let providers: Vec<(&'static str, RateSpec)> = config
            .client
            .providers()
            .filter_map(|spec| config.client.configured(spec.name).ok().map(|c| (spec.name, c.rate)))
            .collect();
        let tokens: HashMap<&'static str, Arc<SharedTokens>> = if config.shared_budget {
            providers.iter().map(|(name, _)| (*name, Arc::new(SharedTokens::default()))).collect()
        } else {
            HashMap::new()
        };
        let tokens_list: Vec<(&'static str, RateSpec, Arc<SharedTokens>)> =
            providers.iter().filter_map(|(name, rate)| tokens.get(name).map(|t| (*name, *rate, t.clone()))).collect();
        if config.webhooks {
            config.client.webhooks().set_listening(true);
        }
        let hints = if config.hints { self.store.delivery_hints() } else { None };
        let (progress, progress_rx) = mpsc::unbounded_channel();
        let (journal, learned) = Journal::new();
        let hooks = Hooks { tokens: tokens.clone(), progress: Some(progress), learned: Some(learned) };
        let waiter = Waiter::with_hooks(&config.client, Some(config.clock.clone()), hooks);
        let (out, outcomes) = mpsc::unbounded_channel();
        let (commands, commands_rx) = mpsc::unbounded_channel();
        let driver = Driver {
            store: self.store.clone(),
            stats: self.stats.clone(),
            providers,
            waiter,
            progress: progress_rx,
            journal,
            commands: commands_rx,
            out,
            held: HashMap::new(),
            lost: HashSet::new(),
            dirty: HashSet::new(),
            unwritten: Vec::new(),
            restored: HashMap::new(),
            holding: HashSet::new(),
            applied: HashSet::new(),
            hints,
            next_deliveries_ms: 0,
            next_sweep_ms: 0,
            backoff_ms: 0,
            retry_at_ms: 0,
            held_until_ms: 0,
            next_renew_ms: 0,
            next_save_ms: 0,
            next_claim_ms: 0,
            next_idle_check_ms: 0,
            _budget: None,
            config,
        };
        let budget = (!tokens_list.is_empty()).then(|| {
            let task = top_up(self.store.clone(), self.config.clock.clone(), tokens_list, self.stats.clone());
            AbortOnDrop(runtime.spawn(task))
        });
        let driver = Driver { _budget: budget, ..driver };
        Ok(Running { outcomes, commands, driver: runtime.spawn(driver.run()) })
    }
}

impl std::fmt::Debug for StoredWaiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredWaiter")
            .field("worker", &self.config.worker)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl Drop for StoredWaiter {
    fn drop(&mut self) {
        // The driver sees its commands close and gives the held waits back.
        self.running.take();
    }
}

/// A wait this worker holds.
struct Held {
    id: WaitId,
    /// Its latest state (saved every `save_every`, and with its outcome).
    state: WaitState,
}

struct Driver {
    config: Config,
    store: Arc<dyn WaitStore>,
    stats: Arc<Counters>,
    providers: Vec<(&'static str, RateSpec)>,
    waiter: Waiter,
    progress: mpsc::UnboundedReceiver<WaitState>,
    /// What the waits learned of durations, and whether the store's were read.
    journal: Journal,
    commands: mpsc::UnboundedReceiver<Command>,
    out: mpsc::UnboundedSender<Result<StoredOutcome>>,
    held: HashMap<TaskRef, Held>,
    /// Waits whose lease was lost: cancelled here, their outcome is not ours to write.
    lost: HashSet<TaskRef>,
    /// Held waits polled since the last save.
    dirty: HashSet<TaskRef>,
    /// Outcomes a store error kept from being written; retried.
    unwritten: Vec<StoredOutcome>,
    /// Held successes claimed from the store (another worker polled them):
    /// not polled, ended by their delivery or at the end of the grace.
    restored: HashMap<TaskRef, Restored>,
    /// Held waits whose success the scheduler holds for its webhook.
    holding: HashSet<TaskRef>,
    /// Held waits whose delivery was handed to the hub.
    applied: HashSet<TaskRef>,
    /// The store's delivery hints, if any.
    hints: Option<tokio::sync::watch::Receiver<u64>>,
    next_deliveries_ms: u64,
    next_sweep_ms: u64,
    /// After failed store operations, how long the next waits (0: the last worked).
    backoff_ms: u64,
    /// No store operation before then (Unix ms), after a failure.
    retry_at_ms: u64,
    /// Until when the last renewal holds every held wait.
    held_until_ms: u64,
    next_renew_ms: u64,
    next_save_ms: u64,
    next_claim_ms: u64,
    next_idle_check_ms: u64,
    /// The shared-budget task; ends with the driver.
    _budget: Option<AbortOnDrop>,
}

/// A held success claimed from the store.
struct Restored {
    /// Reads the delivery as a wait on the task would (its verdict wins).
    poller: Poller,
    /// When the grace ends (Unix ms): the polled success is the outcome then.
    grace_end_ms: u64,
}

/// A task aborted when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Driver {
    async fn run(mut self) {
        loop {
            let pending = self.waiter.pending() > 0;
            tokio::select! {
                biased;
                command = self.commands.recv() => match command {
                    Some(Command::Claim) => self.next_claim_ms = 0,
                    Some(Command::Stop(done)) => {
                        self.stop().await;
                        let _ = done.send(());
                        return;
                    }
                    None => return self.stop().await,
                },
                // Before hints and progress: an ended wait's outcome is on the way to its
                // caller, and a steady stream of hints must not hold it back.
                Some(outcome) = self.waiter.next_outcome(), if pending => {
                    let batch = self.ready_outcomes(vec![outcome]);
                    self.finished(batch).await;
                }
                Ok(()) = changed(&mut self.hints) => self.next_deliveries_ms = 0,
                Some(state) = self.progress.recv() => {
                    self.progressed(state);
                    while let Ok(state) = self.progress.try_recv() {
                        self.progressed(state);
                    }
                }
                Some(learned) = self.journal.next() => self.journal.push(learned),
                () = tokio::time::sleep(TICK) => {}
            }
            if !self.housekeep().await {
                let now_ms = self.now_ms();
                self.journal.flush(self.store.as_ref(), now_ms).await;
                return;
            }
        }
    }

    fn progressed(&mut self, state: WaitState) {
        Counters::add(&self.stats.polls, 1);
        if let Some(held) = self.held.get_mut(&state.task_ref) {
            // The scheduler reports a held success once (with a success phase): no more polls.
            if state.last_phase == Some(Phase::Succeeded) {
                self.holding.insert(state.task_ref.clone());
            }
            self.dirty.insert(state.task_ref.clone());
            held.state = state;
        }
    }

    /// Writes the outcomes of ended waits, then reports the ones written.
    async fn finished(&mut self, batch: Vec<WaitOutcome>) {
        // Progress reported before these ends first (outcomes are taken before progress).
        while let Ok(state) = self.progress.try_recv() {
            self.progressed(state);
        }
        let now_ms = self.now_ms();
        for WaitOutcome { task_ref, result, polls, .. } in batch {
            if polls > 0 {
                Counters::add(&self.stats.polls, 1);
            }
            if self.lost.remove(&task_ref) {
                continue;
            }
            let Some(held) = self.held.remove(&task_ref) else { continue };
            self.forget(&task_ref);
            let mut state = result.as_ref().err().and_then(Error::wait_state).cloned().unwrap_or(held.state);
            state.attempts = state.attempts.max(polls);
            self.unwritten.push(StoredOutcome::of(held.id, task_ref, &result, state, now_ms));
        }
        self.write_outcomes().await;
    }

    async fn write_outcomes(&mut self) {
        if self.unwritten.is_empty() {
            return;
        }
        Counters::add(&self.stats.store_writes, 1);
        match self.store.finish(&self.config.worker, &self.unwritten).await {
            Ok(written) => {
                self.store_ok();
                let written: HashSet<WaitId> = written.into_iter().collect();
                Counters::add(&self.stats.outcomes, written.len() as u64);
                for outcome in self.unwritten.drain(..) {
                    if written.contains(&outcome.id) {
                        let _ = self.out.send(Ok(outcome));
                    } else {
                        // Another worker holds it now; its outcome is that worker's to write.
                        tracing::debug!(task = %outcome.task_ref, "outcome not written: the lease was lost");
                        crate::telemetry::leases_lost(1);
                    }
                }
            }
            Err(error) => self.report(error),
        }
    }

    /// Renews, saves, claims and tops up budgets when due; false once every
    /// wait in the store has finished.
    async fn housekeep(&mut self) -> bool {
        let now_ms = self.now_ms();
        let lease_ms = super::millis(self.config.lease);
        // The store failed lately: nothing is asked of it before the backoff
        // has passed, but a lease that may have run out is still let go.
        // (A restored held success whose grace is over waits too: its
        // delivery may be in the store, and its outcome could not be written.)
        if now_ms < self.retry_at_ms {
            self.check_lease(now_ms, lease_ms);
            return true;
        }
        if !self.unwritten.is_empty() {
            self.write_outcomes().await;
        }
        // Before the first claim, so that the first waits plan from what earlier workers learned.
        if let Err(error) = self.journal.warm_up(self.store.as_ref(), &self.waiter, &self.providers).await {
            self.report(error);
            return true;
        }
        self.journal.write(self.store.as_ref(), now_ms, false).await;
        // A restored held success whose grace is over ends as polled only if
        // its delivery is not in the store now: it may have come while the
        // worker that held it was dying, or while this one claimed it.
        let grace_over = self.restored.values().any(|restored| restored.grace_end_ms <= now_ms);
        if !self.held.is_empty() && (now_ms >= self.next_deliveries_ms || grace_over) {
            self.next_deliveries_ms = now_ms.saturating_add(super::millis(DELIVERY_EVERY));
            self.apply_deliveries().await;
        }
        if now_ms >= self.retry_at_ms {
            self.end_restored(now_ms);
        }
        if now_ms >= self.next_sweep_ms {
            self.between_steps().await;
            self.next_sweep_ms = now_ms.saturating_add(super::millis(SWEEP_EVERY));
            let gone_before = now_ms.saturating_sub(super::millis(GONE_AFTER));
            if let Err(error) = self.store.sweep(now_ms, &self.config.delivery_limits, gone_before).await {
                tracing::warn!(worker = %self.config.worker, %error, "wait store: sweep");
            }
        }
        if !self.held.is_empty() && now_ms >= self.next_renew_ms {
            self.between_steps().await;
            self.renew(now_ms, lease_ms).await;
        }
        self.check_lease(now_ms, lease_ms);
        if now_ms >= self.next_save_ms {
            self.between_steps().await;
            self.next_save_ms = now_ms.saturating_add(super::millis(self.config.save_every));
            self.save().await;
        }
        if now_ms >= self.next_claim_ms {
            self.between_steps().await;
            // Claimed waits are this worker's while its lease lives: a fresh one first.
            if now_ms.saturating_add(lease_ms / 2) >= self.held_until_ms {
                self.renew(now_ms, lease_ms).await;
            }
            let claimed =
                now_ms.saturating_add(lease_ms / 2) < self.held_until_ms && self.claim(now_ms, lease_ms).await;
            // A full claim may leave more: claim again at the next tick.
            self.next_claim_ms = if claimed { now_ms } else { now_ms.saturating_add(claim_interval(lease_ms)) };
            if !claimed && self.held.is_empty() && self.waiter.pending() == 0 && self.unwritten.is_empty() {
                return !self.idle(now_ms, lease_ms).await;
            }
        }
        true
    }

    /// Run between the slower housekeeping steps (sweep, renewal, save,
    /// claim): writes the outcomes of waits that ended meanwhile and applies
    /// the deliveries a hint announced meanwhile, so that neither waits for
    /// the rest of the housekeeping (a claim can take a while on a busy database).
    async fn between_steps(&mut self) {
        if self.now_ms() < self.retry_at_ms {
            return;
        }
        let batch = self.ready_outcomes(Vec::new());
        if !batch.is_empty() {
            self.finished(batch).await;
        }
        let hinted = self.hints.as_ref().is_some_and(|hints| hints.has_changed().unwrap_or(false));
        if hinted
            && !self.held.is_empty()
            && let Some(hints) = self.hints.as_mut()
        {
            hints.borrow_and_update();
            self.apply_deliveries().await;
        }
    }

    /// `batch` and the outcomes ready now, up to [`FINISH_BATCH`].
    fn ready_outcomes(&mut self, mut batch: Vec<WaitOutcome>) -> Vec<WaitOutcome> {
        while batch.len() < FINISH_BATCH {
            match self.waiter.next_outcome().now_or_never() {
                Some(Some(outcome)) => batch.push(outcome),
                _ => break,
            }
        }
        batch
    }

    /// A lease this worker could not renew in time: stop polling before another worker may start.
    fn check_lease(&mut self, now_ms: u64, lease_ms: u64) {
        if !self.held.is_empty() && now_ms.saturating_add(lease_ms / 4) >= self.held_until_ms {
            tracing::warn!(worker = %self.config.worker, "leases not renewed in time: letting the waits go");
            crate::telemetry::leases_lost(self.held.len());
            self.let_go_all();
        }
    }

    async fn renew(&mut self, now_ms: u64, lease_ms: u64) {
        // Run out here already (a paused process): let go before the store may say it is new.
        if !self.held.is_empty() && now_ms >= self.held_until_ms {
            self.let_go_all();
        }
        let until = now_ms.saturating_add(lease_ms);
        Counters::add(&self.stats.store_writes, 1);
        match self.store.renew(&self.config.worker, now_ms, until).await {
            Ok(kept) => {
                self.store_ok();
                if !kept {
                    // It ran out before this renewal: the store took every wait back.
                    tracing::warn!(worker = %self.config.worker, "lease ran out: letting the waits go");
                    crate::telemetry::leases_lost(self.held.len());
                    self.let_go_all();
                }
                self.held_until_ms = until;
                self.next_renew_ms = now_ms.saturating_add(lease_ms / 3);
            }
            Err(error) => {
                // Retried after the backoff; the waits are let go once the lease would have run out.
                self.next_renew_ms = now_ms;
                self.report(error);
            }
        }
    }

    /// Stops polling a wait this worker no longer holds (its outcome will be ignored).
    fn let_go(&mut self, task: &TaskRef) {
        if self.held.remove(task).is_some() {
            self.forget(task);
            if self.restored.remove(task).is_some() {
                return;
            }
            if self.waiter.cancel(task) {
                self.lost.insert(task.clone());
            }
        }
    }

    /// Forgets what is noted about a wait that ended or was let go.
    fn forget(&mut self, task: &TaskRef) {
        self.dirty.remove(task);
        self.holding.remove(task);
        self.applied.remove(task);
    }

    /// Reads the deliveries of held waits from the store and applies each:
    /// a restored held success ends with it here; any other wait gets it
    /// through the client's hub, as a local delivery (once per wait).
    async fn apply_deliveries(&mut self) {
        let tasks = match self.store.deliveries(&self.config.worker, DELIVERY_BATCH).await {
            Ok(tasks) => tasks,
            Err(error) => return self.report(error),
        };
        if tasks.is_empty() {
            return;
        }
        let now_ms = self.now_ms();
        let now = self.config.clock.now();
        for task in tasks {
            let same =
                |held: &TaskRef| held.provider() == task.task_ref().provider() && held.id() == task.task_ref().id();
            let tasks_held: Vec<TaskRef> = self.held.keys().filter(|held| same(held)).cloned().collect();
            let mut to_hub = false;
            for held_task in tasks_held {
                if let Some(mut restored) = self.restored.remove(&held_task) {
                    let Some(held) = self.held.remove(&held_task) else { continue };
                    self.forget(&held_task);
                    let (_, decision) = restored.poller.observe_webhook(now, task.clone());
                    let result = match decision {
                        Decision::Done(task) => Ok(task),
                        Decision::Fail(error) => Err(error),
                        Decision::Poll { .. } | Decision::Expire { .. } => Err(restored.poller.expire(now)),
                    };
                    let state = restored.poller.state().clone();
                    self.unwritten.push(StoredOutcome::of(held.id, held_task, &result, state, now_ms));
                } else if self.applied.insert(held_task) {
                    to_hub = true;
                }
            }
            if to_hub {
                let _ = self.config.client.webhooks().deliver(task);
            }
        }
        self.write_outcomes().await;
    }

    /// Ends the restored held successes whose grace is over, as polled.
    fn end_restored(&mut self, now_ms: u64) {
        if self.restored.is_empty() {
            return;
        }
        let over: Vec<TaskRef> =
            self.restored.iter().filter(|(_, r)| r.grace_end_ms <= now_ms).map(|(task, _)| task.clone()).collect();
        for task_ref in over {
            self.restored.remove(&task_ref);
            let Some(held) = self.held.remove(&task_ref) else { continue };
            self.forget(&task_ref);
            let result = Ok(polled_success(&held.state));
            self.unwritten.push(StoredOutcome::of(held.id, task_ref, &result, held.state, now_ms));
        }
    }

    fn let_go_all(&mut self) {
        let tasks: Vec<TaskRef> = self.held.keys().cloned().collect();
        for task in tasks {
            self.let_go(&task);
        }
    }

    async fn save(&mut self) {
        if self.dirty.is_empty() {
            return;
        }
        let states: Vec<(WaitId, WaitState)> = self
            .dirty
            .drain()
            .filter_map(|task| self.held.get(&task).map(|held| (held.id, held.state.clone())))
            .collect();
        Counters::add(&self.stats.store_writes, 1);
        if let Err(error) = self.store.save(&self.config.worker, &states).await {
            for (_, state) in states {
                self.dirty.insert(state.task_ref);
            }
            self.report(error);
        }
    }

    /// Claims due waits for every provider, as room allows; true if a claim came back full.
    async fn claim(&mut self, now_ms: u64, lease_ms: u64) -> bool {
        let mut full = false;
        for (provider, _) in self.providers.clone() {
            let room = self.config.max_held.saturating_sub(self.held.len());
            if room == 0 {
                break;
            }
            let limit = u32::try_from(room).unwrap_or(u32::MAX).min(self.config.claim_batch);
            let claim = Claim {
                provider: provider.to_string(),
                worker: self.config.worker.clone(),
                now_ms,
                // Waits due within half a lease: those it will poll before renewing twice.
                due_by_ms: now_ms.saturating_add(lease_ms / 2),
                limit,
            };
            Counters::add(&self.stats.store_writes, 1);
            let claimed = match self.store.claim(&claim).await {
                Ok(claimed) => claimed,
                Err(error) => {
                    self.report(error);
                    continue;
                }
            };
            full |= claimed.len() == limit as usize;
            Counters::add(&self.stats.claimed, claimed.len() as u64);
            if !claimed.is_empty() {
                // Deliveries that came before the claim are applied at once.
                self.next_deliveries_ms = 0;
            }
            for wait in claimed {
                let task = wait.state.task_ref.clone();
                let policy = self.config.policies.0.get(&wait.state.policy).cloned();
                let options = wait.options.to_options(&wait.state, &self.config.clock, policy);
                self.held.insert(task.clone(), Held { id: wait.id, state: wait.state.clone() });
                if let Some(grace_end_ms) =
                    held_success(&wait.state, self.config.client.webhooks().is_listening(), now_ms)
                {
                    match Poller::resume(wait.state.clone(), &options) {
                        Ok(poller) => {
                            self.restored.insert(task, Restored { poller, grace_end_ms });
                            continue;
                        }
                        Err(error) => {
                            self.held.remove(&task);
                            self.unwritten.push(StoredOutcome::of(wait.id, task, &Err(error), wait.state, now_ms));
                            continue;
                        }
                    }
                }
                if let Err(error) = self.waiter.resume(wait.state.clone(), &options) {
                    // Written as its outcome, so it is not claimed again and again.
                    self.held.remove(&task);
                    self.unwritten.push(StoredOutcome::of(wait.id, task, &Err(error), wait.state, now_ms));
                }
            }
        }
        full
    }

    /// True when no wait of the client's providers is left unfinished.
    async fn idle(&mut self, now_ms: u64, lease_ms: u64) -> bool {
        if now_ms < self.next_idle_check_ms {
            return false;
        }
        self.next_idle_check_ms = now_ms.saturating_add(claim_interval(lease_ms));
        let providers: Vec<&str> = self.providers.iter().map(|(name, _)| *name).collect();
        match self.store.unfinished(&providers).await {
            Ok(count) => count == 0,
            Err(error) => {
                self.report(error);
                false
            }
        }
    }

    /// Cancels every held wait and gives it back to the store with its state.
    async fn stop(&mut self) {
        self.waiter.cancel_all();
        let mut states = Vec::with_capacity(self.held.len());
        // Restored held successes go back as they are: the next worker waits out the grace.
        for (task, _) in std::mem::take(&mut self.restored) {
            if let Some(held) = self.held.remove(&task) {
                states.push((held.id, held.state));
            }
        }
        while !self.held.is_empty() {
            let Some(WaitOutcome { task_ref, result, .. }) = self.waiter.next_outcome().await else { break };
            let Some(held) = self.held.remove(&task_ref) else { continue };
            match result {
                Err(error) if error.is_wait_cancelled() => {
                    let state = error.wait_state().cloned().unwrap_or(held.state);
                    states.push((held.id, state));
                }
                // A success held for its webhook goes back held (its saved state says so),
                // so the next worker keeps waiting for the result rather than ending without it.
                Ok(_) if self.holding.remove(&task_ref) => states.push((held.id, held.state)),
                // Ended before the cancellation reached it: an outcome like any other.
                result => {
                    let state = result.as_ref().err().and_then(Error::wait_state).cloned().unwrap_or(held.state);
                    let outcome = StoredOutcome::of(held.id, task_ref, &result, state, self.now_ms());
                    self.unwritten.push(outcome);
                }
            }
        }
        self.write_outcomes().await;
        let now_ms = self.now_ms();
        self.journal.flush(self.store.as_ref(), now_ms).await;
        if !states.is_empty() {
            Counters::add(&self.stats.store_writes, 1);
            if let Err(error) = self.store.release(&self.config.worker, &states).await {
                self.report(error);
            }
        }
        self.sync_requests();
    }

    /// Reports a store error and backs off: no store operation until the
    /// backoff has passed, doubled on each failure in a row from
    /// [`MIN_BACKOFF`] to [`MAX_BACKOFF`] (a store that works again resets it).
    fn report(&mut self, error: Error) {
        tracing::warn!(worker = %self.config.worker, %error, "wait store");
        let _ = self.out.send(Err(error));
        self.backoff_ms =
            (self.backoff_ms.saturating_mul(2)).clamp(super::millis(MIN_BACKOFF), super::millis(MAX_BACKOFF));
        self.retry_at_ms = self.now_ms().saturating_add(self.backoff_ms);
    }

    /// A store operation worked: no backoff.
    fn store_ok(&mut self) {
        self.backoff_ms = 0;
    }

    fn now_ms(&self) -> u64 {
        self.sync_requests();
        wall_ms(self.config.clock.as_ref())
    }

    fn sync_requests(&self) {
        self.stats.requests.store(self.waiter.requests_sent(), Ordering::Relaxed);
    }
}

/// Keeps each provider's schedulers supplied with requests from the budget
/// the store shares between processes: a grant of at most half a second's
/// worth ([`SharedGrant`]), taken when the last one is spent or lapsed and the
/// schedulers keep asking. Grants lapse and the store's bucket leaves room
/// for them, so every process together stays within `burst + rate × T` in
/// any window of T seconds. Its own task, so that a slow store write of the
/// driver never starves the schedulers.
async fn top_up(
    store: Arc<dyn WaitStore>,
    clock: Arc<dyn Clock>,
    providers: Vec<(&'static str, RateSpec, Arc<SharedTokens>)>,
    stats: Arc<Counters>,
) {
    // Per provider: the schedulers' asks when the last take worked, and after
    // a failed take, when to try again (backing off as the driver does).
    let mut asked_before: Vec<u64> = vec![0; providers.len()];
    let mut retry: Vec<Option<(std::time::Instant, Duration)>> = vec![None; providers.len()];
    loop {
        for (((provider, rate, tokens), asked_before), retry) in
            providers.iter().zip(asked_before.iter_mut()).zip(retry.iter_mut())
        {
            let asked = tokens.asked();
            let now = clock.now();
            // Taken once the last grant is spent or lapsed: a renewal drops what is left.
            if asked == *asked_before || tokens.available(now) > 0 || retry.is_some_and(|(at, _)| now < at) {
                continue;
            }
            let grant = SharedGrant::for_rate(*rate);
            Counters::add(&stats.store_writes, 1);
            match store.take_tokens(provider, grant.bucket, grant.size, wall_ms(clock.as_ref())).await {
                // The lifetime counts from the take's start: the bound holds however slow the store is.
                Ok(granted) => {
                    tokens.renew(u64::from(granted), now + grant.lifetime);
                    (*asked_before, *retry) = (asked, None);
                }
                // Asked again without waiting for the schedulers to ask anew:
                // a worker whose store came back polls on at once.
                Err(error) => {
                    tracing::warn!(%error, provider, "wait store: shared rate budget");
                    let backoff = retry.map_or(MIN_BACKOFF, |(_, last)| (last * 2).min(MAX_BACKOFF));
                    *retry = Some((clock.now() + backoff, backoff));
                }
            }
        }
        clock.sleep(TICK).await;
    }
}

/// The next change of the store's delivery hints; never ready without them.
async fn changed(hints: &mut Option<tokio::sync::watch::Receiver<u64>>) -> std::result::Result<(), ()> {
    match hints {
        Some(hints) => match hints.changed().await {
            Ok(()) => Ok(()),
            // The listener is gone: no more hints (deliveries are still read every tick).
            Err(_) => {
                std::future::pending::<()>().await;
                Err(())
            }
        },
        None => std::future::pending().await,
    }
}

/// When a claimed wait is a held success (its state's last phase is a
/// success at a provider whose results come only by webhook), when its
/// grace ends (Unix ms): at once if webhooks are not received here.
fn held_success(state: &WaitState, listening: bool, now_ms: u64) -> Option<u64> {
    let hook = state.task_ref.spec().webhook.as_ref()?;
    if !hook.result_only_by_webhook || state.last_phase != Some(Phase::Succeeded) {
        return None;
    }
    if !listening {
        return Some(now_ms);
    }
    let polled_at = state.started_at_ms.saturating_add(state.last_poll_ms.unwrap_or(0));
    Some(polled_at.saturating_add(hook.grace_ms).min(state.deadline_at_ms))
}

/// The success a held wait polled, rebuilt from its saved state (the polled
/// body is not saved: it carries no result, which comes only by webhook).
fn polled_success(state: &WaitState) -> Task {
    let status = state.last_status.clone().map(std::borrow::Cow::Owned);
    Task::new(state.task_ref.clone(), Phase::Succeeded, status, None, None, 200, serde_json::Value::Null)
}

/// How often to look for new waits when the last claim found none.
fn claim_interval(lease_ms: u64) -> u64 {
    (lease_ms / 10).clamp(50, 1_000)
}
