//! A client's wait engine: one scheduler per provider (and clock), shared by
//! every wait of the client, whoever started it: [`Client::wait`], a
//! [`Waiter`](crate::Waiter), a wait store. So every wait shares its
//! provider's rate budget, bound on requests in flight and `Retry-After`
//! pause, and is read in batches with the others when its provider has a
//! batch operation.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use super::budget::SharedTokens;
use super::scheduler::{Command, Entry, Group, Key, Scheduler};
use super::source::{ClientSource, Source};
use crate::spec::{RateSpec, WebhookSpec};
use crate::wait::Poller;
use crate::webhook::{Registration, WebhookHub};
use crate::{Client, Clock, Error, Policy, Result, Task, TaskRef, WaitOptions, WaitState};

/// The schedulers of one client.
pub(crate) struct Engine {
    /// The clock of waits whose options name none.
    clock: Arc<dyn Clock>,
    state: Mutex<State>,
}

/// A number no other wait or group of this process has (a scheduler tells
/// waits and groups apart by it).
pub(crate) fn next_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

#[derive(Default)]
struct State {
    lanes: HashMap<LaneKey, Lane>,
    /// Each provider's polite policy, shared by the waits that set none.
    polite: HashMap<&'static str, Arc<Policy>>,
}

/// What tells schedulers apart: the provider, the clock, and the rate budget
/// shared with a store, if any (by address: the lane holds both, so an
/// address cannot be reused while the lane lives).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct LaneKey {
    provider: &'static str,
    clock: usize,
    tokens: usize,
}

/// One running scheduler.
#[derive(Clone)]
pub(crate) struct Lane {
    commands: mpsc::UnboundedSender<Command>,
    clock: Arc<dyn Clock>,
    /// Held so that the budget's address stays this lane's.
    _tokens: Option<Arc<SharedTokens>>,
}

impl Lane {
    /// Starts a scheduler on the current tokio runtime.
    pub(crate) fn spawn(
        provider: &'static str,
        source: Arc<dyn Source>,
        clock: Arc<dyn Clock>,
        (rate, tokens): (RateSpec, Option<Arc<SharedTokens>>),
        max_in_flight: usize,
        webhook: Option<(WebhookHub, &'static WebhookSpec)>,
    ) -> Result<Self> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| Error::config("waiting needs a tokio runtime (none is running)"))?;
        let (commands, receiver) = mpsc::unbounded_channel();
        let scheduler =
            Scheduler::new(provider, source, clock.clone(), (rate, tokens.clone()), max_in_flight, receiver)
                .with_webhooks(webhook);
        // The scheduler runs until every sender is gone: the engine's and the handles'.
        drop(runtime.spawn(scheduler.run()));
        Ok(Self { commands, clock, _tokens: tokens })
    }

    /// Sends a command; false if the scheduler has stopped (its runtime shut down).
    pub(crate) fn send(&self, command: Command) -> bool {
        self.commands.send(command).is_ok()
    }
}

impl Engine {
    /// The client's engine, made on its first wait: its waits run on the
    /// client's clock unless their options name another.
    pub(crate) fn of(client: &Client) -> Result<&Engine> {
        let slot = client.inner().engine.get_or_init(|| Box::new(Engine::new(client.webhooks().clock().clone())));
        slot.downcast_ref::<Engine>().ok_or_else(|| Error::config("the client's wait engine is of another type"))
    }

    fn new(clock: Arc<dyn Clock>) -> Self {
        Self { clock, state: Mutex::default() }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The scheduler of `provider` on `clock` (the engine's when `None`),
    /// started on first use, and started anew if its runtime has shut down.
    pub(crate) fn lane(
        &self,
        client: &Client,
        provider: &'static str,
        clock: Option<&Arc<dyn Clock>>,
        tokens: Option<&Arc<SharedTokens>>,
    ) -> Result<Lane> {
        let clock = clock.unwrap_or(&self.clock);
        let key = LaneKey {
            provider,
            clock: Arc::as_ptr(clock).cast::<()>() as usize,
            tokens: tokens.map_or(0, |tokens| Arc::as_ptr(tokens) as usize),
        };
        let mut state = self.state();
        if let Some(lane) = state.lanes.get(&key).filter(|lane| !lane.commands.is_closed()) {
            return Ok(lane.clone());
        }
        let configured = client.configured(provider)?;
        let lane = Lane::spawn(
            provider,
            Arc::new(ClientSource::new(client, provider)?),
            clock.clone(),
            (configured.rate, tokens.cloned()),
            configured.max_in_flight,
            configured.spec.webhook.as_ref().map(|hook| (client.webhooks().clone(), hook)),
        )?;
        state.lanes.insert(key, lane.clone());
        Ok(lane)
    }

    /// A new wait's poller on the lane's clock, with the provider's polite
    /// policy (one, shared by every wait that sets none) when the options set no policy.
    pub(crate) fn start(&self, task: TaskRef, options: &WaitOptions, lane: &Lane) -> Result<Poller> {
        let provider = task.spec().name;
        Poller::new(task, &self.with_policy(provider, options.clone().clock(lane.clock.clone()))?)
    }

    /// A saved wait's poller on the lane's clock. Options without a policy
    /// keep the saved one (see [`Poller::resume`]): no polite policy is put in.
    pub(crate) fn resume(&self, state: WaitState, options: &WaitOptions, lane: &Lane) -> Result<Poller> {
        Poller::resume(state, &options.clone().clock(lane.clock.clone()))
    }

    fn with_policy(&self, provider: &'static str, options: WaitOptions) -> Result<WaitOptions> {
        if options.has_policy() {
            return Ok(options);
        }
        let mut state = self.state();
        let policy = match state.polite.get(provider) {
            Some(policy) => policy.clone(),
            None => {
                let policy = Arc::new(Policy::polite(provider)?);
                state.polite.insert(provider, policy.clone());
                policy
            }
        };
        Ok(options.shared_policy(policy))
    }

    /// Starts a wait on `lane` for `group`, and registers it for its
    /// provider's webhook deliveries when the spec declares any (a delivery
    /// kept for the task is handed over at once). The wait stops hearing of
    /// deliveries when the registration is dropped.
    pub(crate) fn add(
        &self,
        client: &Client,
        lane: &Lane,
        group: &Arc<Group>,
        poller: Poller,
    ) -> Result<(Key, Option<Registration>)> {
        let key = next_id();
        let hooked = poller.task_ref().spec().webhook.is_some().then(|| poller.task_ref().clone());
        if !lane.send(Command::Add(Entry::new(key, poller, group.clone()))) {
            return Err(stopped());
        }
        // After the add: a kept delivery is handed over as a command after it.
        Ok((key, hooked.map(|task| register(client, lane, key, &task))))
    }

    /// [`Engine::add`] of many waits on one lane, in one command: the
    /// scheduler takes them all before its next launch (one round).
    pub(crate) fn add_many(
        &self,
        client: &Client,
        lane: &Lane,
        group: &Arc<Group>,
        pollers: Vec<Poller>,
    ) -> Result<Vec<(Key, Option<Registration>)>> {
        let mut hooked = Vec::new();
        let entries: Vec<Box<Entry>> = pollers
            .into_iter()
            .map(|poller| {
                let key = next_id();
                let task = poller.task_ref();
                hooked.push((key, task.spec().webhook.is_some().then(|| task.clone())));
                Entry::new(key, poller, group.clone())
            })
            .collect();
        if !lane.send(Command::AddMany(entries)) {
            return Err(stopped());
        }
        Ok(hooked.into_iter().map(|(key, task)| (key, task.map(|task| register(client, lane, key, &task)))).collect())
    }
}

fn stopped() -> Error {
    Error::config("the provider's scheduler has stopped (its tokio runtime shut down)")
}

/// Registers wait `key` for `task`'s webhook deliveries: a terminal one reaches it as a command.
fn register(client: &Client, lane: &Lane, key: Key, task: &TaskRef) -> Registration {
    let commands = lane.commands.clone();
    let sink: crate::webhook::Sink = Arc::new(move |task: &Task| {
        if task.is_terminal() {
            let _ = commands.send(Command::Webhook(key, Box::new(task.clone())));
        }
    });
    client.webhooks().register(task, sink)
}
