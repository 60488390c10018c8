//! Fixed schedules against the learned one, in virtual time (no network, no
//! sleeping): requests per task and detection lag (when a poll first sees the
//! task ended, less when it ended) for tasks whose durations come from a
//! distribution.
//!
//! Each mix runs 2,000 tasks one after another; a wait follows its policy's
//! dry-run schedule ([`Policy::poll_times`], and [`Policy::learned_poll_times`]
//! with the estimate as it stands when the task starts), and each task that
//! ends adds to the estimate the way the engine does (the interval between
//! the last poll that saw it pending and the one that saw it ended). The
//! jitter of a schedule is drawn anew for each task, from `SEED`, so
//! the figures are the same on every run. Figures
//! are over the tasks after the first 200 completions. The shift mix runs
//! 1,000 tasks from a log-normal around 10 s, then 1,000 five times longer;
//! its "after" figures are the 200 tasks right after the first 200
//! completions of the new durations, to set against a run that had only the
//! longer durations from the start.
//!
//! Beside each mix, the floor: the fewest requests per task that any
//! schedule, knowing every duration in advance, needs to keep polite's lag
//! p50 and p99 on the same tasks (see [`floor_requests`]); the goal is
//! within reach of a schedule only where the floor is below 0.5x.
//!
//! Run with `cargo bench --bench schedules`. Environment: `TASKS=2000`,
//! `SEED=7`, `PROVIDERS=deepomatic,cloudinary`, `PLANS=1` (print the last
//! learned plan of each mix, and the estimate's quantiles against those of
//! the last 200 durations), `EXACT=1` (each completion is recorded at its
//! exact duration, as a webhook's time would be, instead of as the interval
//! between two polls: what a perfect observation of the durations gives).

#![allow(clippy::print_stdout)]

use std::collections::VecDeque;
use std::time::Duration;

use taskpoll::Policy;
use taskpoll::wait::Durations;

/// Warm-up completions excluded from the figures.
const WARMUP: usize = 200;

struct Figures {
    requests: f64,
    lag_p50: f64,
    lag_p99: f64,
}

/// How a wait that follows `schedule` sees a task that took `took`: its
/// requests, its detection lag, and what the engine would record (the last
/// poll that saw the task pending, and the one that saw it ended).
fn detect(schedule: &[Duration], took: f64) -> Option<(usize, f64, Duration, Duration)> {
    let mut pending_seen = Duration::ZERO;
    for (i, &at) in schedule.iter().enumerate() {
        if at.as_secs_f64() >= took {
            return Some((i + 1, at.as_secs_f64() - took, pending_seen, at));
        }
        pending_seen = at;
    }
    None
}

/// Runs `durations` (seconds) through `policy`; figures over `measured`
/// (task indexes). `seed` draws the jitter of each task's schedule.
fn run(policy: &Policy, durations: &[f64], measured: std::ops::Range<usize>, seed: u64) -> Figures {
    let mut jitter = fastrand::Rng::with_seed(seed);
    let mut learned = Durations::new();
    let exact = std::env::var_os("EXACT").is_some();
    let (mut requests, mut lags) = (0usize, Vec::new());
    let longest = durations.iter().copied().fold(0.0, f64::max);
    let deadline = Duration::from_secs_f64(longest * 3.0 + 60.0);
    for (i, &took) in durations.iter().enumerate() {
        let policy = policy.to_builder().seed(jitter.u64(..)).build().expect("a valid policy");
        let schedule = if policy.is_learned() {
            policy.learned_poll_times(deadline, &mut learned)
        } else {
            policy.poll_times(deadline)
        };
        let Some((polls, lag, pending_seen, ended_seen)) = detect(&schedule, took) else { continue };
        if exact {
            learned.record(Duration::from_secs_f64(took));
        } else {
            learned.record_between(pending_seen, ended_seen);
        }
        if measured.contains(&i) {
            requests += polls;
            lags.push(lag);
        }
    }
    if policy.is_learned() && std::env::var_os("PLANS").is_some() {
        let plan = policy.learned_poll_times(deadline, &mut learned);
        let plan: Vec<String> = plan.iter().take(40).map(|t| format!("{:.2}", t.as_secs_f64())).collect();
        println!("  plan: {}", plan.join(" "));
        let q = |q: f64| learned.quantile(q).map_or(f64::NAN, |d| d.as_secs_f64());
        let mut truth: Vec<f64> = durations[durations.len().saturating_sub(200)..].to_vec();
        truth.sort_by(f64::total_cmp);
        let t = |q: f64| truth[((truth.len() - 1) as f64 * q).round() as usize];
        println!(
            "  estimate p1 / p5 / p25 / p50 / p90: {:.2} / {:.2} / {:.2} / {:.2} / {:.2} (last 200 durations: {:.2} / {:.2} / {:.2} / {:.2} / {:.2})",
            q(0.01),
            q(0.05),
            q(0.25),
            q(0.5),
            q(0.9),
            t(0.01),
            t(0.05),
            t(0.25),
            t(0.5),
            t(0.9)
        );
    }
    lags.sort_by(f64::total_cmp);
    let at = |q: f64| lags.get(((lags.len() as f64 - 1.0) * q).round() as usize).copied().unwrap_or(f64::NAN);
    Figures { requests: requests as f64 / lags.len().max(1) as f64, lag_p50: at(0.5), lag_p99: at(0.99) }
}

/// A floor under the requests per task of any schedule that keeps the
/// detection lag p50 and p99 over all of `phases` at or below `lag_p50` and
/// `lag_p99`, one schedule per phase (fixed or drawn at random), knowing
/// every duration in advance: what no schedule, learned or not, can beat.
///
/// The polls split a phase's sorted durations into runs; a run's poll goes
/// no earlier than its last duration (it must see it ended) and, in the
/// cheapest schedule, no later (the same tasks pay for it, with less lag). A
/// poll costs one request for each task still running, and each task one
/// more for the poll that sees it ended. The lag goals ask for at least
/// `round((n - 1) q) + 1` tasks seen within each lag; pricing the tasks seen
/// in time instead (Lagrange multipliers) leaves a shortest path over the
/// runs of each phase, whose value plus the price of the goals is a floor
/// for every pair of prices (weak duality). The best pair found on a grid,
/// then on a finer one around it, is kept.
fn floor_requests(phases: &[&[f64]], lag_p50: f64, lag_p99: f64, max_gap: Option<f64>) -> f64 {
    let phases: Vec<Runs> = phases.iter().map(|d| Runs::new(d, lag_p50, lag_p99)).collect();
    let n: usize = phases.iter().map(|r| r.d.len()).sum();
    if n == 0 {
        return f64::NAN;
    }
    let need = |q: f64| ((n - 1) as f64 * q).round() + 1.0;
    let floor = |p50: f64, p99: f64| {
        let priced: f64 = phases.iter().map(|r| r.cheapest(p50, p99, max_gap)).sum();
        priced + p50 * need(0.5) + p99 * need(0.99)
    };
    // Prices from 0.01 to 1,000 (0 below), every quarter of a decade, then a
    // finer grid around the best pair: the floor holds for every pair, so
    // the search only decides how tight it is.
    let price = |step: f64| if step < 0.0 { 0.0 } else { 0.01 * 10f64.powf(step / 4.0) };
    let grid = (-1..=20).map(f64::from);
    let mut best = (f64::NEG_INFINITY, 0.0, 0.0);
    for a in grid.clone() {
        for b in grid.clone() {
            let value = floor(price(a), price(b));
            if value > best.0 {
                best = (value, a, b);
            }
        }
    }
    let (_, a, b) = best;
    for da in -4..=4 {
        for db in -4..=4 {
            let (a, b) = (a + f64::from(da) / 4.0, b + f64::from(db) / 4.0);
            best.0 = best.0.max(floor(price(a), price(b)));
        }
    }
    best.0 / n as f64
}

/// One phase's sorted durations, for [`floor_requests`].
struct Runs {
    d: Vec<f64>,
    /// `lo50[j]`: the first task of those that end within `lag_p50` of task `j - 1`.
    lo50: Vec<usize>,
    /// As `lo50`, within `lag_p99`.
    lo99: Vec<usize>,
}

impl Runs {
    fn new(durations: &[f64], lag_p50: f64, lag_p99: f64) -> Self {
        let mut d = durations.to_vec();
        d.sort_by(f64::total_cmp);
        let first_within = |lag: f64| {
            let mut lo = vec![0; d.len() + 1];
            let mut k = 0;
            for j in 1..=d.len() {
                while d[k] < d[j - 1] - lag {
                    k += 1;
                }
                lo[j] = k;
            }
            lo
        };
        let (lo50, lo99) = (first_within(lag_p50), first_within(lag_p99));
        Self { d, lo50, lo99 }
    }

    /// The fewest requests, less `p50` (`p99`) for each task seen within
    /// `lag_p50` (`lag_p99`); with `max_gap`, no two polls more than that
    /// apart (after the first): a run may not span `max_gap`, and the empty
    /// stretch before it needs a poll every `max_gap`, at a request for each
    /// task still running.
    fn cheapest(&self, p50: f64, p99: f64, max_gap: Option<f64>) -> f64 {
        let (d, n) = (&self.d, self.d.len());
        // f[j]: the cheapest handling of tasks 0..j, a run ending at task j - 1,
        // its requests less the prices. The run's start i lies in one of three
        // windows (as its tasks are within either lag, one or none), each
        // searched with a monotone queue of `f[i] + slope * i`.
        let mut f = vec![0.0_f64; n + 1];
        let mut queues: [VecDeque<(usize, f64)>; 3] = Default::default();
        let mut pushed = [0usize; 2];
        let push = |queue: &mut VecDeque<(usize, f64)>, i: usize, key: f64| {
            while queue.back().is_some_and(|&(_, k)| k >= key) {
                queue.pop_back();
            }
            queue.push_back((i, key));
        };
        let mut spans = 0;
        for j in 1..=n {
            let (l50, l99, jf, last) = (self.lo50[j], self.lo99[j], j as f64, d[j - 1]);
            let seen = |i: usize, lo: usize| (j - lo.max(i)) as f64;
            let mut value = f64::INFINITY;
            // The earliest start whose run, and the gap before it, fit in
            // max_gap; the start just before that may still begin a run after
            // an empty stretch, with polls every max_gap through it.
            let mut first = 0;
            if let Some(gap) = max_gap {
                while last - d[spans] >= gap {
                    spans += 1;
                }
                if spans > 0 {
                    first = spans + 1;
                    let fillers = ((last - d[spans - 1]) / gap).ceil().max(1.0) - 1.0;
                    value = f[spans] + fillers * (n - spans) as f64 - p50 * seen(spans, l50) - p99 * seen(spans, l99);
                }
            }
            let [early, middle, late] = &mut queues;
            // Starting at or before l99: tasks from l99 (l50) on are in time.
            while pushed[0] <= l99 {
                push(early, pushed[0], f[pushed[0]]);
                pushed[0] += 1;
            }
            // Starting in (l99, l50]: the whole run is within lag_p99.
            while pushed[1] <= l50 {
                push(middle, pushed[1], f[pushed[1]] + p99 * pushed[1] as f64);
                pushed[1] += 1;
            }
            // Starting in (l50, j - 1]: the whole run is within both lags.
            push(late, j - 1, f[j - 1] + (p50 + p99) * (j - 1) as f64);
            while early.front().is_some_and(|&(i, _)| i < first) {
                early.pop_front();
            }
            while middle.front().is_some_and(|&(i, _)| i <= l99 || i < first) {
                middle.pop_front();
            }
            while late.front().is_some_and(|&(i, _)| i <= l50 || i < first) {
                late.pop_front();
            }
            if let Some(&(_, key)) = early.front() {
                value = value.min(key - p50 * (jf - l50 as f64) - p99 * (jf - l99 as f64));
            }
            if let Some(&(_, key)) = middle.front() {
                value = value.min(key - p50 * (jf - l50 as f64) - p99 * jf);
            }
            if let Some(&(_, key)) = late.front() {
                value = value.min(key - (p50 + p99) * jf);
            }
            // The run's poll: one request for each task it sees and each later one.
            f[j] = (n - j) as f64 + value;
        }
        n as f64 + f[n]
    }
}

/// A standard normal draw (Box–Muller).
fn normal(rng: &mut fastrand::Rng) -> f64 {
    let (u, v) = (rng.f64().max(1e-12), rng.f64());
    (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
}

fn log_normal(rng: &mut fastrand::Rng, median: f64, sigma: f64) -> f64 {
    median * (sigma * normal(rng)).exp()
}

fn main() {
    let tasks: usize = std::env::var("TASKS").ok().and_then(|v| v.parse().ok()).unwrap_or(2_000);
    let seed: u64 = std::env::var("SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(7);
    let providers = std::env::var("PROVIDERS").unwrap_or_else(|_| "deepomatic,cloudinary".into());
    let mut rng = fastrand::Rng::with_seed(seed);
    let half = tasks / 2;
    let mixes: Vec<(&str, Vec<f64>)> = vec![
        ("log-normal ~1 s", (0..tasks).map(|_| log_normal(&mut rng, 1.0, 0.4)).collect()),
        ("log-normal ~10 s", (0..tasks).map(|_| log_normal(&mut rng, 10.0, 0.4)).collect()),
        ("log-normal ~60 s", (0..tasks).map(|_| log_normal(&mut rng, 60.0, 0.4)).collect()),
        (
            "bimodal 0.3 s / 20 s",
            (0..tasks)
                .map(|_| if rng.bool() { log_normal(&mut rng, 0.3, 0.2) } else { log_normal(&mut rng, 20.0, 0.2) })
                .collect(),
        ),
        // Pareto with shape 1.5 from 2 s: a heavy tail (p99 about 43 s).
        ("heavy tail (Pareto 1.5)", (0..tasks).map(|_| 2.0 / rng.f64().max(1e-9).powf(1.0 / 1.5)).collect()),
        (
            "5x shift mid-run",
            (0..tasks).map(|i| log_normal(&mut rng, if i < half { 10.0 } else { 50.0 }, 0.4)).collect(),
        ),
    ];
    for provider in providers.split(',') {
        let polite = Policy::polite(provider).expect("a known provider");
        let learned = polite.to_builder().name("learned").learned(Policy::DEFAULT_LEARNED_TARGET).build();
        let learned = learned.expect("a valid policy");
        let mut policies = vec![("polite", polite.clone()), ("learned", learned.clone())];
        for preset in ["deepomatic_client", "factpulse_helper"] {
            if let Ok(p) = Policy::preset(preset)
                && preset.starts_with(provider)
            {
                policies.push((preset, p));
            }
        }
        println!("\n{provider}: requests per task, detection lag p50 / p99 (s), tasks {WARMUP}..{tasks}");
        println!("{:<26} {:<18} {:>9} {:>9} {:>9}", "mix", "policy", "requests", "lag p50", "lag p99");
        for (mix, durations) in &mixes {
            let mut rows = Vec::new();
            for (name, policy) in &policies {
                let f = run(policy, durations, WARMUP..tasks, seed);
                println!("{mix:<26} {name:<18} {:>9.2} {:>9.2} {:>9.2}", f.requests, f.lag_p50, f.lag_p99);
                rows.push((*name, f));
            }
            if let [(_, p), (_, l), ..] = rows.as_slice() {
                let ok = l.requests <= p.requests / 2.0 && l.lag_p50 <= p.lag_p50 && l.lag_p99 <= p.lag_p99;
                println!(
                    "{:<26} {:<18} {:>8.2}x {:>8.2}x {:>8.2}x  goal (<= 0.5x, <= 1x, <= 1x): {}",
                    "",
                    "learned / polite",
                    l.requests / p.requests,
                    l.lag_p50 / p.lag_p50,
                    l.lag_p99 / p.lag_p99,
                    if ok { "met" } else { "MISSED" }
                );
                // The shift mix's two halves may each have their own schedule.
                let phases: Vec<&[f64]> = if mix.contains("shift") {
                    vec![&durations[WARMUP..half], &durations[half..]]
                } else {
                    vec![&durations[WARMUP..]]
                };
                let floor = floor_requests(&phases, p.lag_p50, p.lag_p99, None);
                let gap = polite.max_delay().as_secs_f64();
                let bounded = floor_requests(&phases, p.lag_p50, p.lag_p99, Some(gap));
                // A self-check: every schedule here that keeps polite's lags
                // (polite itself, at least) pays at least the floor.
                for (name, f) in &rows {
                    if f.lag_p50 <= p.lag_p50 && f.lag_p99 <= p.lag_p99 {
                        assert!(
                            f.requests >= floor - 1e-9,
                            "{name} beats the floor on {mix}: {} < {floor}",
                            f.requests
                        );
                    }
                }
                println!(
                    "{:<26} {:<18} {:>8.3}x  (no schedule needs fewer for polite's lags; {:.3}x with no gap over {gap} s)",
                    "",
                    "floor / polite",
                    floor / p.requests,
                    bounded / p.requests
                );
            }
            if mix.contains("shift") {
                let after = run(&learned, durations, half + WARMUP..half + 2 * WARMUP, seed);
                let steady: Vec<f64> = durations[half..].iter().chain(&durations[half..]).copied().collect();
                let settled = run(&learned, &steady, WARMUP..steady.len(), seed);
                // Back within 10 % of the settled figures: no more than 1.1 times
                // them (fewer requests or a lower lag is not a miss).
                let within = |a: f64, b: f64| a <= 1.1 * b;
                println!(
                    "{:<26} {:<18} {:>9.2} {:>9.2} {:>9.2}  (settled: {:.2} / {:.2} / {:.2}; within 10 %: {})",
                    "",
                    "learned, after",
                    after.requests,
                    after.lag_p50,
                    after.lag_p99,
                    settled.requests,
                    settled.lag_p50,
                    settled.lag_p99,
                    if within(after.requests, settled.requests)
                        && within(after.lag_p50, settled.lag_p50)
                        && within(after.lag_p99, settled.lag_p99)
                    {
                        "met"
                    } else {
                        "MISSED"
                    }
                );
            }
        }
    }
}
