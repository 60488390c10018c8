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
//! A poll does not see when a task ended, only that it ended since the last
//! poll that saw it pending: each completion is an interval (interval
//! censoring). Recording one point of it (its midpoint, say) would blur the
//! estimate by the gaps between polls, and a learned schedule polls
//! sparsely. So each completion adds [`SHARES`] points to the sketch, spread
//! over its interval as the estimate so far spreads the durations there (an
//! online step of Turnbull's self-consistent estimator: the estimate is then
//! the average of the completions' intervals, each shaped by the estimate),
//! mixed with an even spread where the estimate expects few completions.
//!
//! The learned schedule: with at least [`Durations::MIN_HISTORY`]
//! completions, the polls of a wait go at offsets from its start chosen
//! from the estimate: as few polls as the estimate allows for a detection
//! lag (when a poll first sees the task ended, less when it ended) no worse
//! than the policy's own schedule would give on the same durations (under
//! its jitter), at the median and at the 99th percentile. A dynamic program
//! over a grid of the estimate's quantiles minimises
//! `E[polls] + μ₅₀·P(lag > lag₅₀) + μ₉₉·P(lag > lag₉₉)`, with no gap longer
//! than the policy's longest delay; the multipliers are searched for the
//! plan with the fewest expected polls that meets both lag targets, each
//! [`LAG_MARGIN`] of the baseline's (the estimate is least sure within the
//! plan's own gaps). Past the
//! planned polls (a task longer than any seen), or with too little history,
//! the policy's own delays apply.

use std::time::Duration;

use sketches_ddsketch::{Config, DDSketch};

/// The points of the cached quantile table (every 1 %).
const STEPS: usize = 100;

/// The most grid points the schedule is chosen from (its cost is quadratic in them).
const MAX_GRID: usize = 300;

/// The points of the sketch one completion adds (spread over its interval).
const SHARES: usize = 8;

/// How many completions' worth of an even spread the spread of a
/// completion over its interval mixes in: where the estimate expects few
/// completions (durations it has not seen), the interval is spread evenly.
const PRIOR_COMPLETIONS: f64 = 0.25;

/// The share of the baseline's lags (median, 99th percentile) the plan
/// aims at on the estimate. A sparse plan does not see where within its
/// gaps tasks end, so the estimate's shape there lags behind the truth
/// (measured in `benches/schedules.rs`: aiming at the baseline's lags
/// themselves gave 4 % to 18 % more lag than the baseline on fresh tasks).
const LAG_MARGIN: f64 = 0.8;

/// The lag-penalty weights the plan search tries for the 99th percentile
/// (for each, the median's weight is found by bisection).
const P99_WEIGHTS: [f64; 6] = [0.0, 2.0, 8.0, 32.0, 128.0, 512.0];

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
    current: Window,
    previous: Option<Window>,
    /// Completions recorded since the table was built.
    stale: usize,
    table: Option<Table>,
    /// The schedule planned from `table` for one baseline policy, by its key.
    plan: Option<(u64, Vec<f64>)>,
}

/// One window of completions: [`SHARES`] sketch points each.
#[derive(Clone)]
struct Window {
    sketch: DDSketch,
    completions: usize,
}

impl Window {
    fn new() -> Self {
        // 1 % relative error, at most 1,024 bins (about 16 KiB), values from 1 ms.
        Self { sketch: DDSketch::new(Config::new(0.01, 1024, 1e-3)), completions: 0 }
    }
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
        Self { current: Window::new(), previous: None, stale: 0, table: None, plan: None }
    }

    /// Records how long one task took (from its wait's start to its end),
    /// when that is known exactly (a webhook told when it ended).
    pub fn record(&mut self, took: Duration) {
        let took = took.as_secs_f64();
        self.add([took; SHARES]);
    }

    /// Records a task that a poll saw pending at `pending_at` and a later
    /// one saw ended at `ended_by` (offsets from its wait's start): it took
    /// somewhere in between. The estimate spreads it over that interval the
    /// way the durations recorded so far spread there, so polls far apart
    /// do not blur it (see the module's documentation).
    pub fn record_between(&mut self, pending_at: Duration, ended_by: Duration) {
        let (low, high) = (pending_at.as_secs_f64(), ended_by.as_secs_f64());
        if high <= low {
            return self.record(ended_by);
        }
        self.refresh();
        let points = self.spread(low, high);
        self.add(points);
    }

    /// Adds one completion, as its [`SHARES`] points.
    fn add(&mut self, points: [f64; SHARES]) {
        if self.current.completions >= Self::WINDOW {
            self.previous = Some(std::mem::replace(&mut self.current, Window::new()));
        }
        for point in points {
            // DDSketch keeps positive values; a task seen ended at once took "almost nothing".
            self.current.sketch.add(point.max(1e-3));
        }
        self.current.completions += 1;
        self.stale += 1;
    }

    /// [`SHARES`] points spreading one completion over `(low, high]`: at the
    /// middles of equal shares of the estimate there, mixed with an even
    /// spread weighted as [`PRIOR_COMPLETIONS`] completions.
    ///
    /// The mixture's distribution is piecewise linear (the table interpolates
    /// linearly between its points, the even part is a line), so each share is
    /// found exactly, in one walk over the table's points within the interval:
    /// every completion of every wait pays for this (a bisection per share
    /// was a sixth of the client's CPU at 100,000 waits).
    fn spread(&self, low: f64, high: f64) -> [f64; SHARES] {
        let share = |i: usize| (i as f64 + 0.5) / SHARES as f64;
        let even = || std::array::from_fn(|i| low + (high - low) * share(i));
        let Some(table) = &self.table else { return even() };
        let below = table.cdf(low);
        let mass = table.cdf(high) - below;
        let expected = mass * self.len() as f64;
        let evenly = PRIOR_COMPLETIONS / (PRIOR_COMPLETIONS + expected);
        if evenly >= 1.0 || mass <= 0.0 {
            return even();
        }
        // The mixture's distribution over the interval, from 0 at `low` to 1 at
        // `high`, given the table's share at `t`.
        let mixed = |t: f64, cdf: f64| {
            ((1.0 - evenly) * (cdf - below) / mass + evenly * (t - low) / (high - low)).clamp(0.0, 1.0)
        };
        // Knots: each table point within the interval, where the table's share
        // is its index over STEPS (repeated points make a vertical run: a step).
        let points = &table.points;
        let first = points.partition_point(|&p| p <= low);
        let knots = points[first..points.partition_point(|&p| p < high)]
            .iter()
            .enumerate()
            .map(|(j, &t)| (t, mixed(t, (first + j) as f64 / STEPS as f64)))
            .chain(std::iter::once((high, 1.0)));
        let mut out = [high; SHARES];
        let (mut i, mut from, mut at_from) = (0, low, 0.0);
        for (t, at_t) in knots {
            // The mixture is linear from `from` to `t`.
            while i < SHARES && share(i) <= at_t {
                out[i] = if at_t > at_from { from + (t - from) * (share(i) - at_from) / (at_t - at_from) } else { t };
                i += 1;
            }
            (from, at_from) = (t, at_t);
        }
        out
    }

    /// Completions the estimate reads (at most two windows).
    pub fn len(&self) -> usize {
        self.current.completions + self.previous.as_ref().map_or(0, |w| w.completions)
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
    /// must not exceed, gives the shortest gap between its polls, and its
    /// poll times up to a horizon (seconds), one schedule per draw of its jitter.
    pub(crate) fn next_poll(
        &mut self,
        elapsed: Duration,
        min_gap: Duration,
        baseline: (u64, Duration, &dyn Fn(f64) -> Vec<Vec<f64>>),
    ) -> Option<Duration> {
        self.refresh();
        let (key, plan_gap, polite_times) = baseline;
        if self.plan.as_ref().is_none_or(|(k, _)| *k != key) {
            let table = self.table.as_ref()?;
            let plan = table.plan(&polite_times(table.points[STEPS] * 2.0 + 1.0), plan_gap.as_secs_f64());
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

    /// Rebuilds the table (and drops the plan made from it) when it is stale.
    fn refresh(&mut self) {
        let len = self.len();
        if len < Self::MIN_HISTORY {
            self.table = None;
            self.plan = None;
            return;
        }
        if self.table.is_some() && self.stale < (len / 16).max(1) {
            return;
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
        self.plan = None;
        self.stale = 0;
    }

    fn merged(&self) -> DDSketch {
        let mut merged = self.current.sketch.clone();
        if let Some(previous) = &self.previous {
            // Same configuration on both: merging cannot fail.
            let _ = merged.merge(&previous.sketch);
        }
        merged
    }
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

    /// The detection lags, at `qs`, of waits polling at each of `schedules`
    /// (seconds, increasing; as many waits on each) on tasks with these
    /// durations (each 1 % slice of them taken at 8 points).
    fn lags(&self, schedules: &[Vec<f64>], qs: &[f64]) -> Vec<f64> {
        let mut lags = Vec::with_capacity(STEPS * 8 * schedules.len());
        for times in schedules {
            for m in 0..STEPS {
                let (a, b) = (self.points[m], self.points[m + 1]);
                for s in 0..8 {
                    let took = a + (b - a) * (f64::from(s) + 0.5) / 8.0;
                    let i = times.partition_point(|&t| t < took);
                    lags.push(times.get(i).map_or(f64::INFINITY, |t| t - took));
                }
            }
        }
        if lags.is_empty() {
            return vec![f64::INFINITY; qs.len()];
        }
        lags.sort_by(f64::total_cmp);
        qs.iter().map(|q| lags[((lags.len() - 1) as f64 * q).round() as usize]).collect()
    }

    /// The polls a wait following `times` is expected to send on these durations.
    fn expected_polls(&self, times: &[f64]) -> f64 {
        1.0 + times.iter().take(times.len().saturating_sub(1)).map(|&t| 1.0 - self.cdf(t)).sum::<f64>()
    }

    /// The learned schedule (see the module's documentation): poll offsets
    /// from the start, ending at the longest duration seen; empty when no
    /// schedule meets the baseline's lags (the baseline's delays then apply).
    /// `baseline`: the baseline policy's poll times, one schedule per draw of its jitter.
    fn plan(&self, baseline: &[Vec<f64>], min_gap: f64) -> Vec<f64> {
        let target = self.lags(baseline, &[0.5, 0.99]);
        let (p50, p99) = (target[0] * LAG_MARGIN, target[1] * LAG_MARGIN);
        if !p99.is_finite() {
            return Vec::new();
        }
        let longest_delay =
            baseline.iter().flat_map(|times| times.windows(2).map(|w| w[1] - w[0])).fold(0.0_f64, f64::max);
        let max_gap = longest_delay.max(p99).max(min_gap).max(1e-3);
        let grid = Grid::new(self, (p50.min(max_gap) / 2.0).max(1e-3), p50, p99);
        let mut best: Option<(f64, Vec<f64>)> = None;
        for weight99 in P99_WEIGHTS {
            let (mut low, mut high) = (1e-2_f64, 1e4_f64);
            for _ in 0..12 {
                let weight50 = (low * high).sqrt();
                let plan = grid.cheapest(weight50, weight99, max_gap, min_gap);
                let lags = if plan.is_empty() {
                    vec![f64::INFINITY; 2]
                } else {
                    self.lags(std::slice::from_ref(&plan), &[0.5, 0.99])
                };
                if lags[0] <= p50 && lags[1] <= p99 {
                    let polls = self.expected_polls(&plan);
                    if best.as_ref().is_none_or(|(fewest, _)| polls < *fewest) {
                        best = Some((polls, plan));
                    }
                    high = weight50;
                } else {
                    low = weight50;
                }
            }
        }
        best.map(|(_, plan)| plan).unwrap_or_default()
    }
}

/// Candidate poll times: the table's points, each 1 % slice cut finer
/// where it is wider than `step`, with the share of durations at or below
/// each, and the shares a poll there leaves with too long a lag.
struct Grid {
    at: Vec<f64>,
    share: Vec<f64>,
    /// `late50[k]`: the share of durations at or below `at[k] - lag₅₀` (a poll at `at[k]`
    /// sees those that ended since the previous poll and by then later than lag₅₀).
    late50: Vec<f64>,
    /// As `late50`, for lag₉₉.
    late99: Vec<f64>,
}

impl Grid {
    fn new(table: &Table, step: f64, lag50: f64, lag99: f64) -> Self {
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
        let late50 = at.iter().map(|t| table.cdf(t - lag50)).collect();
        let late99 = at.iter().map(|t| table.cdf(t - lag99)).collect();
        Self { at, share, late50, late99 }
    }

    /// The poll times minimising `E[polls] + w₅₀·P(lag > lag₅₀) + w₉₉·P(lag > lag₉₉)`
    /// over the grid, no gap (nor the first poll after the shortest duration)
    /// longer than `max_gap`, none shorter than `min_gap`; empty when none
    /// reaches the end.
    fn cheapest(&self, weight50: f64, weight99: f64, max_gap: f64, min_gap: f64) -> Vec<f64> {
        let (at, share) = (&self.at, &self.share);
        let n = at.len();
        // A poll at k after one at j (or after none, at share 0): sent when the
        // task outlasted j, and the tasks it sees that ended too long ago.
        let step = |from_share: f64, k: usize| {
            (1.0 - from_share)
                + weight50 * (self.late50[k] - from_share).max(0.0)
                + weight99 * (self.late99[k] - from_share).max(0.0)
        };
        let mut cost = vec![f64::INFINITY; n];
        let mut previous = vec![usize::MAX; n];
        for k in 0..n {
            if at[k] - at[0] <= max_gap {
                cost[k] = step(0.0, k);
            }
            // Earlier polls within reach: at[k] - max_gap <= at[j] <= at[k] - min_gap.
            let first = at.partition_point(|&t| t < at[k] - max_gap);
            for j in first..k {
                if at[k] - at[j] < min_gap || !cost[j].is_finite() {
                    continue;
                }
                let c = cost[j] + step(share[j], k);
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

    /// Poll times of a policy polling every second from the start (one schedule, no jitter).
    fn every_second(horizon: f64) -> Vec<Vec<f64>> {
        vec![(0..=horizon.ceil() as u32).map(f64::from).collect()]
    }

    /// Poll times of a polite-like policy: at 0, then delays from 0.5 s growing
    /// 1.5 times to at most 5 s, each drawn in its upper half (equal jitter).
    fn polite_like(horizon: f64) -> Vec<Vec<f64>> {
        let mut rng = fastrand::Rng::with_seed(3);
        (0..8)
            .map(|_| {
                let (mut at, mut delay, mut times) = (0.0, 0.5_f64, vec![0.0]);
                while at < horizon {
                    at += delay * (0.5 + rng.f64() / 2.0);
                    times.push(at);
                    delay = (delay * 1.5).min(5.0);
                }
                times
            })
            .collect()
    }

    /// The whole plan `d` gives for `baseline`, as the engine walks it.
    fn plan_of(d: &mut Durations, baseline: &dyn Fn(f64) -> Vec<Vec<f64>>, min_gap: f64) -> Vec<f64> {
        let baseline = (1, secs(min_gap), baseline);
        let mut plan = vec![d.next_poll(Duration::ZERO, Duration::ZERO, baseline).expect("first")];
        while let Some(next) = d.next_poll(*plan.last().expect("one"), secs(min_gap), baseline) {
            plan.push(next);
        }
        plan.iter().map(Duration::as_secs_f64).collect()
    }

    #[test]
    fn too_little_history_plans_nothing() {
        let mut d = Durations::new();
        for _ in 0..Durations::MIN_HISTORY - 1 {
            d.record(secs(1.0));
        }
        assert!(d.next_poll(Duration::ZERO, secs(0.1), (1, secs(0.5), &every_second)).is_none());
        d.record(secs(1.0));
        assert!(d.next_poll(Duration::ZERO, secs(0.1), (1, secs(0.5), &every_second)).is_some());
    }

    #[test]
    fn memory_is_two_windows_and_a_shift_takes_over_within_them() {
        let mut d = Durations::new();
        for _ in 0..10 * Durations::WINDOW {
            d.record(secs(1.0));
        }
        assert_eq!(d.len(), 2 * Durations::WINDOW);
        for _ in 0..2 * Durations::WINDOW {
            d.record_between(secs(4.0), secs(6.0));
        }
        assert_eq!(d.len(), 2 * Durations::WINDOW);
        let p50 = d.quantile(0.5).expect("p50").as_secs_f64();
        assert!((p50 - 5.0).abs() < 0.2, "{p50}");
    }

    #[test]
    fn the_plan_polls_less_than_its_baseline_and_lags_no_more() {
        let mut d = Durations::new();
        for i in 0..200 {
            d.record(secs(10.0 + f64::from(i % 100) / 20.0)); // 10 s to 15 s, uniform
        }
        let times = plan_of(&mut d, &every_second, 0.5);
        // Nothing before the shortest duration seen, and the last at the longest.
        assert!(times[0] >= 9.9 && (times[times.len() - 1] - 15.0).abs() < 0.2, "{times:?}");
        // Far fewer polls than once a second from the start (16 for a 15 s task) ...
        assert!(times.len() <= 8, "{times:?}");
        // ... with a lag no worse than it at the median and the 99th percentile.
        let table = d.table().expect("table").clone();
        let ours = table.lags(std::slice::from_ref(&times), &[0.5, 0.99]);
        let baseline = table.lags(&every_second(40.0), &[0.5, 0.99]);
        assert!(ours[0] <= baseline[0] && ours[1] <= baseline[1], "{ours:?} vs {baseline:?}");
    }

    #[test]
    fn without_history_an_interval_is_spread_evenly() {
        let mut d = Durations::new();
        for _ in 0..Durations::MIN_HISTORY {
            d.record_between(secs(2.0), secs(4.0));
        }
        // Each completion is 8 points, 0.25 s apart, from 2.125 s to 3.875 s.
        for (q, expected) in [(0.1, 2.2), (0.5, 3.0), (0.9, 3.8)] {
            let got = d.quantile(q).expect("quantile").as_secs_f64();
            assert!((got - expected).abs() <= 0.15, "q{q}: {got}");
        }
    }

    #[test]
    fn a_completion_is_spread_at_the_exact_shares_of_the_mixture() {
        let mut rng = fastrand::Rng::with_seed(9);
        let mut d = Durations::new();
        // A third of them exactly 0.5 s: the table repeats points there (a step).
        for i in 0..150 {
            d.record(secs(if i % 3 == 0 { 0.5 } else { 2.0 + rng.f64() * 6.0 }));
        }
        d.refresh();
        let table = d.table.clone().expect("a table");
        for _ in 0..300 {
            let low = rng.f64() * 7.0;
            let high = low + 0.01 + rng.f64() * 6.0;
            let got = d.spread(low, high);
            // The smallest t where the mixture reaches each share, by bisection.
            let below = table.cdf(low);
            let mass = table.cdf(high) - below;
            let evenly = PRIOR_COMPLETIONS / (PRIOR_COMPLETIONS + mass * d.len() as f64);
            let mixed = |t: f64| {
                let even = (t - low) / (high - low);
                if mass <= 0.0 { even } else { (1.0 - evenly) * (table.cdf(t) - below) / mass + evenly * even }
            };
            for (i, &x) in got.iter().enumerate() {
                let share = (i as f64 + 0.5) / SHARES as f64;
                let (mut a, mut b) = (low, high);
                for _ in 0..60 {
                    let mid = (a + b) / 2.0;
                    if mixed(mid) < share { a = mid } else { b = mid }
                }
                assert!((x - b).abs() <= 1e-9 * high.max(1.0), "({low}, {high}] share {share}: {x} against {b}");
            }
        }
    }

    #[test]
    fn a_coarse_interval_is_spread_as_the_finer_ones_before_it() {
        // Half the tasks take 0.3 s, half 20 s, seen ended exactly ...
        let mut d = Durations::new();
        for i in 0..100 {
            d.record(secs(if i % 2 == 0 { 0.3 } else { 20.0 }));
        }
        // ... then as many seen only between the start and 25 s.
        for _ in 0..100 {
            d.record_between(Duration::ZERO, secs(25.0));
        }
        // The modes stay where they were: a midpoint would have put half of
        // these at 12.5 s, and an even spread a fifth of them under 5 s.
        let p25 = d.quantile(0.25).expect("p25").as_secs_f64();
        let p75 = d.quantile(0.75).expect("p75").as_secs_f64();
        assert!((p25 - 0.3).abs() < 0.05, "{p25}");
        assert!((p75 - 20.0).abs() < 1.0, "{p75}");
        let under_5s = (1..100).filter(|&i| d.quantile(f64::from(i) / 100.0).expect("q") < secs(5.0)).count();
        assert!((45..=55).contains(&under_5s), "{under_5s} % under 5 s");
    }

    /// Log-normal durations around `median` (σ = 0.2), half of them around 0.3 s
    /// and half around 20 s when `median` is 0.
    fn bimodal(rng: &mut fastrand::Rng) -> f64 {
        let normal = (-2.0 * rng.f64().max(1e-12).ln()).sqrt() * (std::f64::consts::TAU * rng.f64()).cos();
        (if rng.bool() { 0.3 } else { 20.0 }) * (0.2 * normal).exp()
    }

    /// Runs `tasks` waits one after another on durations from `draw`: each
    /// polls at the learned plan (the baseline's first schedule without
    /// history, or past the plan) and records what its polls saw, as the
    /// engine does. Returns the estimate.
    fn learn(tasks: usize, draw: &mut dyn FnMut() -> f64) -> Durations {
        let mut d = Durations::new();
        for _ in 0..tasks {
            let took = draw();
            let (mut pending_seen, mut at) = (0.0, 0.0);
            let mut fallback = polite_like(took * 2.0 + 10.0).swap_remove(0).into_iter();
            loop {
                let min_gap = if at > 0.0 { secs(0.125) } else { Duration::ZERO };
                let next = d.next_poll(secs(at), min_gap, (1, secs(0.125), &polite_like));
                at = match next {
                    Some(next) => next.as_secs_f64(),
                    None => fallback.find(|&t| t > at).expect("a schedule past the task"),
                };
                if at >= took {
                    break;
                }
                pending_seen = at;
            }
            d.record_between(secs(pending_seen), secs(at));
        }
        d
    }

    #[test]
    fn polling_by_its_own_plan_keeps_a_bimodal_estimate_in_place() {
        let mut rng = fastrand::Rng::with_seed(11);
        let mut d = learn(1_000, &mut || bimodal(&mut rng));
        // The learned plan polls sparsely, yet the short mode stays around
        // 0.3 s (a midpoint would drift it down) and the long one around 20 s.
        let p25 = d.quantile(0.25).expect("p25").as_secs_f64();
        let p75 = d.quantile(0.75).expect("p75").as_secs_f64();
        assert!((0.25..=0.36).contains(&p25), "{p25}");
        assert!((17.0..=23.0).contains(&p75), "{p75}");
        // The first polls go near the short mode; between the modes, only
        // the polls that the baseline's longest delay (5 s) forces.
        let plan = plan_of(&mut d, &polite_like, 0.125);
        assert!(plan[0] > 0.15 && plan[0] < 0.5, "{plan:?}");
        let short_polls = plan.iter().filter(|&&t| t < 1.0).count();
        assert!((1..=3).contains(&short_polls), "{plan:?}");
        let between = plan.iter().filter(|&&t| t > 1.0 && t < 13.0).count();
        assert!(between <= 3, "{plan:?}");
    }

    #[test]
    fn a_plan_learned_from_its_own_polls_halves_the_baselines_polls_without_more_lag() {
        let mut rng = fastrand::Rng::with_seed(5);
        let mut log_normal = move || {
            let normal = (-2.0 * rng.f64().max(1e-12).ln()).sqrt() * (std::f64::consts::TAU * rng.f64()).cos();
            10.0 * (0.4 * normal).exp()
        };
        let mut d = learn(400, &mut log_normal);
        let mut plan = plan_of(&mut d, &polite_like, 0.125);
        // Past the plan (a task longer than any seen) the engine falls back
        // to the baseline's delays, by then at their longest (5 s).
        while plan.last().is_some_and(|&t| t < 200.0) {
            plan.push(plan[plan.len() - 1] + 5.0);
        }
        // Judged on fresh durations, not on the estimate.
        let (mut ours, mut theirs) = ((0.0, Vec::new()), (0.0, Vec::new()));
        let baseline = polite_like(100.0);
        for i in 0..2_000 {
            let took = log_normal();
            for (times, (polls, lags)) in [(&plan, &mut ours), (&baseline[i % baseline.len()], &mut theirs)] {
                let k = times.partition_point(|&t| t < took);
                *polls += (k + 1) as f64;
                lags.push(times.get(k).map_or(f64::INFINITY, |t| t - took));
            }
        }
        let quantile = |lags: &mut Vec<f64>, q: f64| {
            lags.sort_by(f64::total_cmp);
            lags[((lags.len() - 1) as f64 * q).round() as usize]
        };
        assert!(ours.0 <= theirs.0 / 2.0, "{} polls against {}", ours.0, theirs.0);
        let (a, b) = (quantile(&mut ours.1, 0.5), quantile(&mut theirs.1, 0.5));
        assert!(a <= b, "lag p50: {a} against {b}");
        // The 99th percentile is set by the tasks longer than the 400 the
        // estimate saw, polled at the fallback's 5 s: here 5.4 s against 4.5 s.
        let (a, b) = (quantile(&mut ours.1, 0.99), quantile(&mut theirs.1, 0.99));
        assert!(a <= b * 1.25, "lag p99: {a} against {b}");
    }
}
