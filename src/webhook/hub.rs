//! The delivery hub: task key -> the waits on it, plus a bounded store of
//! deliveries nobody waits on yet. No HTTP here, so any server can feed it.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use crate::{Clock, Task, TaskRef};

/// Default number of deliveries kept for tasks nobody waits on yet.
pub const DEFAULT_UNCLAIMED_CAPACITY: usize = 10_000;

/// A task's key: provider (lower case) and id. Inputs are not part of it:
/// a delivery names only the id.
type Key = (String, String);

fn key_of(task: &TaskRef) -> Key {
    (task.provider().to_ascii_lowercase(), task.id().to_string())
}

/// Something waiting on a task: called with each delivery for it.
pub(crate) type Sink = Arc<dyn Fn(&Task) + Send + Sync>;

/// What became of a delivery handed to [`WebhookHub::deliver`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Delivery {
    /// Handed to this many waits on the task.
    HandedOver(usize),
    /// Nobody waits on the task yet: kept for the first wait that starts.
    Stored,
}

/// Hands verified deliveries to the waits on their tasks; keeps the latest
/// delivery of tasks nobody waits on yet, at most `capacity` of them (the
/// oldest is dropped first), so a flood of unknown ids cannot grow memory.
/// Each [`crate::Client`] has one ([`crate::Client::webhooks`]). Cheap to clone.
#[derive(Clone)]
pub struct WebhookHub {
    shared: Arc<Shared>,
}

struct Shared {
    clock: Arc<dyn Clock>,
    capacity: usize,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    listening: bool,
    next_id: u64,
    waiting: HashMap<Key, Vec<(u64, Sink)>>,
    /// key -> (generation, latest delivery).
    unclaimed: HashMap<Key, (u64, Task)>,
    /// Insertion order of `unclaimed`, for eviction; entries whose generation
    /// no longer matches are stale and skipped.
    order: VecDeque<(u64, Key)>,
    /// Provider -> when its last verified delivery arrived (the clock's time).
    last_delivery: HashMap<String, Instant>,
    evicted: u64,
}

impl fmt::Debug for WebhookHub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.lock();
        f.debug_struct("WebhookHub")
            .field("listening", &state.listening)
            .field("waiting", &state.waiting.len())
            .field("unclaimed", &state.unclaimed.len())
            .field("capacity", &self.shared.capacity)
            .finish()
    }
}

impl WebhookHub {
    /// A hub keeping at most `capacity` unclaimed deliveries (at least 1), on `clock`.
    pub(crate) fn new(capacity: usize, clock: Arc<dyn Clock>) -> Self {
        let shared = Shared { clock, capacity: capacity.max(1), state: Mutex::new(State::default()) };
        Self { shared: Arc::new(shared) }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.shared.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Says whether webhooks are being received (set by the receiver; set it
    /// yourself when your own server feeds [`crate::Client::accept_webhook`]).
    /// A wait whose provider's results come only by webhook waits for one
    /// after a polled success only while the hub is listening.
    pub fn set_listening(&self, listening: bool) {
        self.lock().listening = listening;
    }

    /// Whether webhooks are being received (see [`WebhookHub::set_listening`]).
    pub fn is_listening(&self) -> bool {
        self.lock().listening
    }

    /// Deliveries kept for tasks nobody waits on yet.
    pub fn unclaimed(&self) -> usize {
        self.lock().unclaimed.len()
    }

    /// The most deliveries kept for tasks nobody waits on yet.
    pub fn capacity(&self) -> usize {
        self.shared.capacity
    }

    /// Unclaimed deliveries dropped to stay within the capacity, so far.
    pub fn evicted(&self) -> u64 {
        self.lock().evicted
    }

    /// Hands a delivery to the waits on its task, or keeps it for the first
    /// one. Give it only verified deliveries ([`crate::Client::verify_webhook`];
    /// [`crate::Client::accept_webhook`] does both). A later delivery replaces
    /// a kept one, except that a finished task's is never replaced by one
    /// still in progress (deliveries may arrive out of order).
    pub fn deliver(&self, task: Task) -> Delivery {
        let key = key_of(task.task_ref());
        let sinks: Vec<Sink> = {
            let mut state = self.lock();
            state.last_delivery.insert(key.0.clone(), self.shared.clock.now());
            match state.waiting.get(&key) {
                Some(waits) if !waits.is_empty() => waits.iter().map(|(_, sink)| sink.clone()).collect(),
                _ => {
                    self.store(&mut state, key, task);
                    return Delivery::Stored;
                }
            }
        };
        // Outside the lock: a sink may take other locks (a waiter's channel).
        for sink in &sinks {
            sink(&task);
        }
        Delivery::HandedOver(sinks.len())
    }

    fn store(&self, state: &mut State, key: Key, task: Task) {
        if let Some((_, kept)) = state.unclaimed.get(&key)
            && kept.is_terminal()
            && !task.is_terminal()
        {
            return;
        }
        state.next_id += 1;
        let generation = state.next_id;
        state.unclaimed.insert(key.clone(), (generation, task));
        state.order.push_back((generation, key));
        while state.unclaimed.len() > self.shared.capacity {
            let Some((generation, key)) = state.order.pop_front() else { break };
            if state.unclaimed.get(&key).is_some_and(|(g, _)| *g == generation) {
                state.unclaimed.remove(&key);
                state.evicted += 1;
                crate::telemetry::delivery_dropped(&key.0);
            }
        }
        // Claimed and replaced entries leave stale order entries behind; drop them now and then.
        if state.order.len() > 2 * self.shared.capacity {
            let State { order, unclaimed, .. } = state;
            order.retain(|(g, k)| unclaimed.get(k).is_some_and(|(kept, _)| kept == g));
        }
    }

    /// Registers `sink` for deliveries on `task`; a kept delivery for it is
    /// handed over at once. Dropping the guard unregisters.
    pub(crate) fn register(&self, task: &TaskRef, sink: Sink) -> Registration {
        let key = key_of(task);
        let (id, kept) = {
            let mut state = self.lock();
            state.next_id += 1;
            let id = state.next_id;
            state.waiting.entry(key.clone()).or_default().push((id, sink.clone()));
            (id, state.unclaimed.remove(&key).map(|(_, task)| task))
        };
        if let Some(task) = kept {
            sink(&task);
        }
        Registration { hub: Arc::downgrade(&self.shared), key, id }
    }

    /// Whether a verified delivery of `provider` arrived within `window`.
    pub(crate) fn active(&self, provider: &str, window: Duration) -> bool {
        let now = self.shared.clock.now();
        let state = self.lock();
        state
            .last_delivery
            .get(&provider.to_ascii_lowercase())
            .is_some_and(|at| now.saturating_duration_since(*at) <= window)
    }

    /// The hub's clock.
    pub(crate) fn clock(&self) -> &Arc<dyn Clock> {
        &self.shared.clock
    }
}

/// Unregisters a wait from the hub when dropped.
pub(crate) struct Registration {
    hub: Weak<Shared>,
    key: Key,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let Some(shared) = self.hub.upgrade() else { return };
        let mut state = shared.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(waits) = state.waiting.get_mut(&self.key) {
            waits.retain(|(id, _)| *id != self.id);
            if waits.is_empty() {
                state.waiting.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use serde_json::Value;

    use super::*;
    use crate::{Phase, TokioClock};

    fn task(id: &str, phase: Phase) -> Task {
        let task_ref = TaskRef::new("factpulse", id).expect("ref");
        Task::new(task_ref, phase, None, None, None, 200, Value::Null).delivered_by_webhook()
    }

    #[test]
    fn the_store_stays_bounded_through_claims_and_replacements() {
        let hub = WebhookHub::new(3, Arc::new(TokioClock));
        for n in 0..10 {
            assert_eq!(hub.deliver(task(&format!("t{n}"), Phase::Succeeded)), Delivery::Stored);
        }
        assert_eq!((hub.unclaimed(), hub.evicted()), (3, 7));
        // Claimed and replaced entries leave order entries behind: they are compacted.
        for round in 0..200 {
            let id = format!("r{}", round % 5);
            hub.deliver(task(&id, Phase::Running));
            hub.deliver(task(&id, Phase::Succeeded));
            if round % 2 == 0 {
                let seen = Arc::new(AtomicUsize::new(0));
                let counter = seen.clone();
                let sink: Sink = Arc::new(move |_: &Task| {
                    counter.fetch_add(1, Ordering::Relaxed);
                });
                drop(hub.register(&TaskRef::new("factpulse", &id).expect("ref"), sink));
                assert_eq!(seen.load(Ordering::Relaxed), 1, "a kept delivery is handed to the first wait");
            }
            let state = hub.lock();
            assert!(state.unclaimed.len() <= 3 && state.order.len() <= 2 * 3 + 1, "{}", state.order.len());
        }
        assert!(hub.lock().waiting.is_empty(), "dropped registrations are gone");
    }
}
