//! The durations a stored waiter's waits learned, kept in its store
//! (issue 24): a worker that starts reads them first, so its learned
//! schedules and ETAs start warm, also after a restart or on a second
//! worker; what its own waits learn is written back every few seconds.
//! Only an estimate: a write that fails is dropped with a warning, never
//! retried at the expense of the waits.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::{SeenDuration, WaitStore, millis};
use crate::policy::Durations;
use crate::spec::RateSpec;
use crate::wait::waiter::Learned;
use crate::{Result, Waiter};

/// Durations kept per provider and key: the two windows the estimate reads.
const KEEP: usize = 2 * Durations::WINDOW;
/// How often what was learned is written.
const WRITE_EVERY: Duration = Duration::from_secs(5);

pub(super) struct Journal {
    learned: mpsc::UnboundedReceiver<Learned>,
    unwritten: Vec<SeenDuration>,
    next_write_ms: u64,
    /// Whether the store's durations were fed to the waiter.
    warm: bool,
}

impl Journal {
    /// A journal, and the sender the waiter's waits report to.
    pub(super) fn new() -> (Self, mpsc::UnboundedSender<Learned>) {
        let (sender, learned) = mpsc::unbounded_channel();
        (Self { learned, unwritten: Vec::new(), next_write_ms: 0, warm: false }, sender)
    }

    /// What a wait learned, once it arrives.
    pub(super) async fn next(&mut self) -> Option<Learned> {
        self.learned.recv().await
    }

    /// Notes what a wait learned, and whatever else has arrived, to write
    /// with the next batch (one turn of the driver for a batch answer's worth).
    pub(super) fn push(&mut self, learned: Learned) {
        self.note(learned);
        while let Ok(learned) = self.learned.try_recv() {
            self.note(learned);
        }
    }

    fn note(&mut self, learned: Learned) {
        // Bounded while the store cannot be written: the oldest are the least worth keeping.
        if self.unwritten.len() >= KEEP * 8 {
            self.unwritten.drain(..KEEP);
        }
        let (after, by) = learned.between;
        let key = learned.key.as_deref().unwrap_or_default();
        self.unwritten.push(SeenDuration::new(learned.provider, key, millis(after), millis(by)));
    }

    /// Once, before the first claim: feeds the durations kept in the store
    /// to the estimates of the waiter's waits of `providers`.
    pub(super) async fn warm_up(
        &mut self,
        store: &dyn WaitStore,
        waiter: &Waiter,
        providers: &[(&'static str, RateSpec)],
    ) -> Result<()> {
        if self.warm {
            return Ok(());
        }
        let mut lanes: BTreeMap<(&'static str, String), Vec<(Duration, Duration)>> = BTreeMap::new();
        for seen in store.durations().await? {
            let Some((provider, _)) = providers.iter().find(|(name, _)| *name == seen.provider) else { continue };
            let between = (Duration::from_millis(seen.after_ms), Duration::from_millis(seen.by_ms));
            lanes.entry((provider, seen.key)).or_default().push(between);
        }
        for ((provider, key), seen) in lanes {
            let key = (!key.is_empty()).then(|| Arc::<str>::from(key));
            tracing::debug!(
                provider,
                key = key.as_deref(),
                durations = seen.len(),
                "learned durations read from the store"
            );
            waiter.learn(provider, key, seen)?;
        }
        self.warm = true;
        Ok(())
    }

    /// Writes everything learned so far (the worker stops).
    pub(super) async fn flush(&mut self, store: &dyn WaitStore, now_ms: u64) {
        while let Ok(learned) = self.learned.try_recv() {
            self.note(learned);
        }
        self.write(store, now_ms, true).await;
    }

    /// Writes what was learned, when due (or with `now`).
    pub(super) async fn write(&mut self, store: &dyn WaitStore, now_ms: u64, now: bool) {
        if self.unwritten.is_empty() || (!now && now_ms < self.next_write_ms) {
            return;
        }
        self.next_write_ms = now_ms.saturating_add(millis(WRITE_EVERY));
        let seen = std::mem::take(&mut self.unwritten);
        if let Err(error) = store.keep_durations(&seen, KEEP as u32).await {
            tracing::warn!(%error, dropped = seen.len(), "wait store: learned durations not kept");
        }
    }
}
