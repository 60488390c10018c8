//! How long a provider's tasks take, learned from the waits that saw them
//! end, and the learned schedule that plans polls from it.
//!
//! The estimate is a DDSketch (sketches-ddsketch: a quantile sketch with a
//! relative error of 1 % and a bounded number of bins), kept in two windows
//! of [`Durations::WINDOW`] completions: the estimate reads the current
//! window and the one before, so memory stays bounded whatever the number of
//! tasks, and a change in the provider's durations takes over within two
//! windows.
//!
//! The learned schedule: with at least [`Durations::MIN_HISTORY`]
//! completions, the polls of a wait go at offsets from its start chosen
//! from the estimate: as few polls as the estimate allows for a detection
//! lag (when a poll first sees the task ended, less when it ended) no worse
//! than the policy's own schedule would give on the same durations, at the
//! median and at the 99th percentile. Each poll goes where the chance that
//! the task ended since the previous one, traded against the lag of those
//! that ended early, pays most: a dynamic program over a grid of the
//! estimate's quantiles minimises `E[polls] + λ·E[lag]`, with no gap longer
//! than the policy's lag p99, and `λ` is the smallest for which the lag
//! targets hold. Past the planned polls (a task longer than any seen), or
//! with too little history, the policy's own delays apply.

use std::time::Duration;

use sketches_ddsketch::{Config, DDSketch};

/// The points of the cached quantile table (every 1 %).
const STEPS: usize = 100;

/// The most grid points the schedule is chosen from (its cost is quadratic in them).
const MAX_GRID: usize = 300;

/// How long tasks take: a bounded streaming estimate of their durations.
///
/// The engine keeps one per provider (and per key a wait gives, see
/// [`WaitOptions::duration_key`](crate::WaitOptions::duration_key)), fed by
/// every wait that sees its task end; [`Policy::learned`](crate::Policy::learned)
/// plans from it and the ETA of a pending task comes from it. It can also be
/// built and fed by hand, to dry-run a learned schedule
/// ([`Policy::learned_poll_times`](crate::Policy::learned_poll_times)).
#[derive(Clone)]
pub struct Durations {
    current: DDSketch,
    previous: Option<DDSketch>,
    /// Completions recorded since the table was built.
    stale: usize,
    table: Option<Table>,
    /// The schedule planned from `table` for one baseline policy, by its key.
    plan: Option<(u64, Vec<f64>)>,
}

impl std::fmt::Debug for Durations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Durations")
            .field("len", &self.len())
            .field("p50", &self.quantile(0.5))
            .field("p90", &self.quantile(0.9))
            .finish()
    }
}

impl Default for Durations {
    fn default() -> Self {
        Self::new()
    }
}

/// When a pending task is expected to end, as time from its wait's start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Eta {
    /// Even odds that it has ended by then.
    pub p50: Duration,
    /// Nine chances in ten that it has ended by then.
    pub p90: Duration,
}

impl Durations {
    /// Completions per window: the estimate reads the last one or two windows.
    pub const WINDOW: usize = 100;

    /// Completions needed before the estimate is used.
    pub const MIN_HISTORY: usize = 20;

    /// An empty estimate.
    pub fn new() -> Self {
        Self { current: sketch(), previous: None, stale: 0, table: None, plan: None }
    }

    /// Records how long one task took (from its wait's start to its end).
    pub fn record(&mut self, took: Duration) {
        if self.current.count() >= Self::WINDOW {
            self.previous = Some(std::mem::replace(&mut self.current, sketch()));
        }
        // DDSketch keeps positive values; a task seen ended at once took "almost nothing".
        self.current.add(took.as_secs_f64().max(1e-3));
        self.stale += 1;
    }

    /// Records a task seen ended by `by` that was still running at `after`
    /// (elapsed times from its wait's start: the poll that saw it pending
    /// last, and the one that saw it ended): its duration is taken as the
    /// middle of the two.
    pub(crate) fn record_between(&mut self, after: Duration, by: Duration) {
        let after = after.min(by);
        self.record(after + (by - after) / 2);
    }

    /// Completions the estimate reads (at most two windows).
    pub fn len(&self) -> usize {
        self.current.count() + self.previous.as_ref().map_or(0, DDSketch::count)
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The `q`-quantile of the durations (`q` in 0..=1), if any were recorded.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        let merged = self.merged();
        let value = merged.quantile(q.clamp(0.0, 1.0)).ok().flatten()?;
        Duration::try_from_secs_f64(value).ok()
    }

    /// The `q`-quantile from the cached table (cheap: for every read), with
    /// at least [`Durations::MIN_HISTORY`] recorded.
    pub(crate) fn cached_quantile(&mut self, q: f64) -> Option<Duration> {
        let table = self.table()?;
        Duration::try_from_secs_f64(table.quantile(q)).ok()
    }

    /// When a task still pending at `elapsed` is expected to end (from its
    /// wait's start); `None` with too little history, or past every duration seen.
    pub fn eta(&mut self, elapsed: Duration) -> Option<Eta> {
        let table = self.table()?;
        let u = table.cdf(elapsed.as_secs_f64());
        if u >= 1.0 {
            return None;
        }
        let at = |p: f64| Duration::try_from_secs_f64(table.quantile(u + p * (1.0 - u))).ok();
        Some(Eta { p50: at(0.5)?.max(elapsed), p90: at(0.9)?.max(elapsed) })
    }

    /// The next planned poll after `elapsed` (an offset from the wait's
    /// start), at least `min_gap` later; `None` with too little history or
    /// past the planned polls. `baseline` names the policy whose lag the plan
    /// must not exceed and gives its mean poll times up to a horizon (seconds).
    pub(crate) fn next_poll(
        &mut self,
        elapsed: Duration,
        min_gap: Duration,
        baseline: (u64, &dyn Fn(f64) -> Vec<f64>),
    ) -> Option<Duration> {
        let rebuilt = self.refresh();
        let (key, polite_times) = baseline;
        if rebuilt || self.plan.as_ref().is_none_or(|(k, _)| *k != key) {
            let table = self.table.as_ref()?;
            let plan = table.plan(polite_times(table.points[STEPS] * 2.0 + 1.0), min_gap.as_secs_f64());
            self.plan = Some((key, plan));
        }
        let (_, plan) = self.plan.as_ref()?;
        let after = (elapsed + min_gap).as_secs_f64();
        let next = plan[plan.partition_point(|&t| t < after).min(plan.len())..].first()?;
        Duration::try_from_secs_f64(*next).ok()
    }

    /// The quantile table, rebuilt when enough was recorded since (a rebuild
    /// reads the sketch 101 times and plans anew: not on every completion of
    /// 100,000 waits).
    fn table(&mut self) -> Option<&Table> {
        self.refresh();
        self.table.as_ref()
    }

    /// Rebuilds the table when it is stale; whether it did.
    fn refresh(&mut self) -> bool {
        let len = self.len();
        if len < Self::MIN_HISTORY {
            self.table = None;
            return false;
        }
        if self.table.is_some() && self.stale < (len / 16).max(1) {
            return false;
        }
        let merged = self.merged();
        let points: Option<Vec<f64>> =
            (0..=STEPS).map(|i| merged.quantile(i as f64 / STEPS as f64).ok().flatten()).collect();
        // A sketch's bin values may step past the exact maximum it also
        // keeps: the table must not decrease.
        self.table = points.map(|mut points| {
            for i in 1..points.len() {
                points[i] = points[i].max(points[i - 1]);
            }
            Table { points }
        });
        self.stale = 0;
        true
    }

    fn merged(&self) -> DDSketch {
        let mut merged = self.current.clone();
        if let Some(previous) = &self.previous {
            // Same configuration on both: merging cannot fail.
            let _ = merged.merge(previous);
        }
        merged
    }
}

fn sketch() -> DDSketch {
    // 1 % relative error, at most 1,024 bins (about 16 KiB), values from 1 ms.
    DDSketch::new(Config::new(0.01, 1024, 1e-3))
}

/// Quantiles at every 1 %, non-decreasing: `points[i]` is `Q(i / STEPS)`, in seconds.
#[derive(Clone)]
struct Table {
    points: Vec<f64>,
}

impl Table {
    /// `Q(u)`, interpolated.
    fn quantile(&self, u: f64) -> f64 {
        let x = u.clamp(0.0, 1.0) * STEPS as f64;
        let i = (x.floor() as usize).min(STEPS - 1);
        let (a, b) = (self.points[i], self.points[i + 1]);
        a + (b - a) * (x - i as f64)
    }

    /// `F(t)`, interpolated: the share of durations at or below `t`.
    fn cdf(&self, t: f64) -> f64 {
        let points = &self.points;
        if t < points[0] {
            return 0.0;
        }
        if t >= points[STEPS] {
            return 1.0;
        }
        // The last point at or below t.
        let i = points.partition_point(|&p| p <= t).saturating_sub(1).min(STEPS - 1);
        let (a, b) = (points[i], points[i + 1]);
        let within = if b > a { (t - a) / (b - a) } else { 1.0 };
        (i as f64 + within) / STEPS as f64
    }

    /// The detection lags, at `qs`, of a wait polling at `times` (seconds,
    /// increasing) on tasks with these durations (each 1 % slice of them
    /// taken at 8 points).
    fn lags(&self, times: &[f64], qs: &[f64]) -> Vec<f64> {
        let mut lags = Vec::with_capacity(STEPS * 8);
        for m in 0..STEPS {
            let (a, b) = (self.points[m], self.points[m + 1]);
            for s in 0..8 {
                let took = a + (b - a) * (f64::from(s) + 0.5) / 8.0;
                let i = times.partition_point(|&t| t < took);
                lags.push(times.get(i).map_or(f64::INFINITY, |t| t - took));
            }
        }
        lags.sort_by(f64::total_cmp);
        qs.iter().map(|q| lags[((lags.len() - 1) as f64 * q).round() as usize]).collect()
    }

    /// The learned schedule (see the module's documentation): poll offsets
    /// from the start, ending at the longest duration seen; empty when no
    /// schedule meets the baseline's lags (the baseline's delays then apply).
    fn plan(&self, baseline: Vec<f64>, min_gap: f64) -> Vec<f64> {
        let target = self.lags(&baseline, &[0.5, 0.99]);
        let (p50, p99) = (target[0], target[1]);
        if !p99.is_finite() {
            return Vec::new();
        }
        let max_gap = p99.max(min_gap).max(1e-3);
        let grid = Grid::new(self, max_gap / 3.0);
        let (mut low, mut high) = (1e-3_f64, 1e4_f64);
        let mut best = Vec::new();
        for _ in 0..14 {
            let lambda = (low * high).sqrt();
            let plan = grid.cheapest(lambda, max_gap, min_gap);
            let lags = if plan.is_empty() { vec![f64::INFINITY; 2] } else { self.lags(&plan, &[0.5, 0.99]) };
            if lags[0] <= p50 && lags[1] <= p99 {
                best = plan;
                high = lambda;
            } else {
                low = lambda;
            }
        }
        best
    }
}

/// Candidate poll times: the table's points, each 1 % slice cut finer
/// where it is wider than `step`, with the share of durations at or below each.
struct Grid {
    at: Vec<f64>,
    share: Vec<f64>,
    /// `lagged[i]`: Σ over slices below point i of (slice share × slice midpoint).
    lagged: Vec<f64>,
}

impl Grid {
    fn new(table: &Table, step: f64) -> Self {
        let spread = table.points[STEPS] - table.points[0];
        // Finer cuts where the durations are sparse, within MAX_GRID points in all.
        let step = step.max(spread / (MAX_GRID - STEPS) as f64);
        let (mut at, mut share) = (vec![table.points[0]], vec![0.0]);
        for m in 0..STEPS {
            let (a, b) = (table.points[m], table.points[m + 1]);
            let cuts =
                if b > a && step > 0.0 { ((b - a) / step).ceil().clamp(1.0, MAX_GRID as f64) as usize } else { 1 };
            for c in 1..=cuts {
                let f = c as f64 / cuts as f64;
                at.push(a + (b - a) * f);
                share.push((m as f64 + f) / STEPS as f64);
            }
        }
        let mut lagged = vec![0.0];
        for i in 0..at.len() - 1 {
            let last = lagged[i];
            lagged.push(last + (share[i + 1] - share[i]) * (at[i] + at[i + 1]) / 2.0);
        }
        Self { at, share, lagged }
    }

    /// The poll times minimising `E[polls] + λ·E[lag]` over the grid, no gap
    /// (nor the first poll after the shortest duration) longer than
    /// `max_gap`, none shorter than `min_gap`; empty when none reaches the end.
    fn cheapest(&self, lambda: f64, max_gap: f64, min_gap: f64) -> Vec<f64> {
        let (at, share, lagged) = (&self.at, &self.share, &self.lagged);
        let n = at.len();
        // Expected lag of the tasks ending in (at[j], at[k]], all seen by a poll at at[k].
        let lag = |j: usize, k: usize| at[k] * (share[k] - share[j]) - (lagged[k] - lagged[j]);
        let mut cost = vec![f64::INFINITY; n];
        let mut previous = vec![usize::MAX; n];
        for k in 0..n {
            if at[k] - at[0] <= max_gap {
                cost[k] = 1.0 + lambda * lag(0, k);
            }
            // Earlier polls within reach: at[k] - max_gap <= at[j] <= at[k] - min_gap.
            let first = at.partition_point(|&t| t < at[k] - max_gap);
            for j in first..k {
                if at[k] - at[j] < min_gap || !cost[j].is_finite() {
                    continue;
                }
                // The poll at k is made when the task outlasted the poll at j.
                let c = cost[j] + (1.0 - share[j]) + lambda * lag(j, k);
                if c < cost[k] {
                    cost[k] = c;
                    previous[k] = j;
                }
            }
        }
        if !cost[n - 1].is_finite() {
            return Vec::new();
        }
        let mut plan = Vec::new();
        let mut k = n - 1;
        loop {
            plan.push(at[k]);
            if previous[k] == usize::MAX {
                break;
            }
            k = previous[k];
        }
        plan.reverse();
        plan
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    #[test]
    fn quantiles_follow_what_was_recorded_within_the_sketch_error() {
        let mut d = Durations::new();
        assert!(d.quantile(0.5).is_none() && d.is_empty());
        for i in 1..=100 {
            d.record(secs(f64::from(i) / 10.0));
        }
        let p50 = d.quantile(0.5).expect("p50").as_secs_f64();
        assert!((p50 - 5.0).abs() < 0.2, "{p50}");
        let eta = d.eta(secs(8.0)).expect("eta");
        // Still pending at 8 s: between 8 and 10 s, p50 about 9 s.
        assert!(eta.p50 > secs(8.6) && eta.p50 < secs(9.4), "{eta:?}");
        assert!(eta.p90 > eta.p50 && eta.p90 <= secs(10.2), "{eta:?}");
        assert!(d.eta(secs(11.0)).is_none(), "past every duration seen");
    }

    /// Mean poll times of a policy polling every second from the start.
    fn every_second(horizon: f64) -> Vec<f64> {
        (0..=horizon.ceil() as u32).map(f64::from).collect()
    }

    #[test]
    fn too_little_history_plans_nothing() {
        let mut d = Durations::new();
        for _ in 0..Durations::MIN_HISTORY - 1 {
            d.record(secs(1.0));
        }
        assert!(d.next_poll(Duration::ZERO, secs(0.1), (1, &every_second)).is_none());
        d.record(secs(1.0));
        assert!(d.next_poll(Duration::ZERO, secs(0.1), (1, &every_second)).is_some());
    }

    #[test]
    fn memory_is_two_windows_and_a_shift_takes_over_within_them() {
        let mut d = Durations::new();
        for _ in 0..10 * Durations::WINDOW {
            d.record(secs(1.0));
        }
        assert_eq!(d.len(), 2 * Durations::WINDOW);
        for _ in 0..2 * Durations::WINDOW {
            d.record(secs(5.0));
        }
        let p50 = d.quantile(0.5).expect("p50").as_secs_f64();
        assert!((p50 - 5.0).abs() < 0.1, "{p50}");
    }

    #[test]
    fn the_plan_polls_less_than_its_baseline_and_lags_no_more() {
        let mut d = Durations::new();
        for i in 0..200 {
            d.record(secs(10.0 + f64::from(i % 100) / 20.0)); // 10 s to 15 s, uniform
        }
        let mut plan = vec![d.next_poll(Duration::ZERO, Duration::ZERO, (1, &every_second)).expect("first")];
        while let Some(next) = d.next_poll(*plan.last().expect("one"), secs(0.5), (1, &every_second)) {
            plan.push(next);
        }
        let times: Vec<f64> = plan.iter().map(Duration::as_secs_f64).collect();
        // Nothing before the shortest duration seen, and the last at the longest.
        assert!(times[0] >= 9.9 && (times[times.len() - 1] - 15.0).abs() < 0.2, "{times:?}");
        // Far fewer polls than once a second from the start (16 for a 15 s task) ...
        assert!(times.len() <= 8, "{times:?}");
        // ... with a lag no worse than it at the median and the 99th percentile.
        let table = d.table().expect("table").clone();
        let ours = table.lags(&times, &[0.5, 0.99]);
        let baseline = table.lags(&every_second(40.0), &[0.5, 0.99]);
        assert!(ours[0] <= baseline[0] && ours[1] <= baseline[1], "{ours:?} vs {baseline:?}");
    }
}
