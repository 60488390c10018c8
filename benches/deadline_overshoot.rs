//! How far past its deadline does a wait return, whatever the server does?
//!
//! Runs many randomised waits against a loopback server (wiremock) that
//! answers with random latency, answers slower than any budget, HTML 503s,
//! and 429/503 with `Retry-After` (seconds and `-ms`), and prints the overshoot
//! (return time − deadline) as min / median / p99 / max, next to the same
//! waits run in the same process by a naive loop of the kind the official
//! clients use (poll, stop once the deadline has passed, sleep, ignore hints;
//! per-request timeout 3 s), and the ratio of the two. Not a test: it asserts
//! nothing, it prints figures. Run with `cargo bench --bench deadline_overshoot`
//! (`WAITS=500 CONCURRENCY=50` to change the load).

#![allow(clippy::disallowed_methods)] // reads real time: a test's or benchmark's own timing

use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use serde_json::json;
use taskpoll::spec::Jitter;
use taskpoll::{Client, Error, Policy, ProviderConfig, TaskRef, WaitOptions};
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

/// A server that never finishes the task and misbehaves at random.
struct Chaos {
    rng: Mutex<fastrand::Rng>,
}

impl Respond for Chaos {
    fn respond(&self, _: &Request) -> ResponseTemplate {
        let mut rng = self.rng.lock().unwrap_or_else(|e| e.into_inner());
        let pending = || ResponseTemplate::new(200).set_body_json(json!({"id": "1", "status": "pending"}));
        let ms = |lo: u64, hi: u64, rng: &mut fastrand::Rng| Duration::from_millis(rng.u64(lo..=hi));
        match rng.u32(0..100) {
            0..60 => pending().set_delay(ms(0, 150, &mut rng)),
            60..70 => pending().set_delay(ms(200, 3000, &mut rng)),
            70..85 => ResponseTemplate::new(503)
                .set_body_raw("<html>unavailable</html>", "text/html")
                .set_delay(ms(0, 50, &mut rng)),
            85..95 => ResponseTemplate::new(429)
                .insert_header("retry-after-ms", rng.u64(0..=1500).to_string().as_str())
                .set_delay(ms(0, 20, &mut rng)),
            _ => ResponseTemplate::new(503).insert_header("Retry-After", "1").set_delay(ms(0, 20, &mut rng)),
        }
    }
}

/// The loop the official clients run (tenacity's `stop_after_delay`): check
/// the deadline only after each poll, sleep the policy's delay whatever the
/// server said, and give each request the client's own timeout.
async fn naive_wait(client: &Client, task_ref: &TaskRef, policy: &Policy, deadline: Duration) -> Duration {
    let start = Instant::now();
    let mut delays = policy.backoff();
    loop {
        if let Ok(task) = client.get(task_ref).await
            && task.is_terminal()
        {
            break;
        }
        if start.elapsed() >= deadline {
            break;
        }
        tokio::time::sleep(delays.next().unwrap_or(Duration::ZERO)).await;
    }
    start.elapsed()
}

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let waits = env("WAITS", 200);
    let concurrency = env("CONCURRENCY", 25).max(1);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .respond_with(Chaos { rng: Mutex::new(fastrand::Rng::with_seed(2024)) })
            .mount(&server)
            .await;
        let client = Client::builder()
            .provider(ProviderConfig::new("deepomatic").api_key("k").base_url(server.uri()))
            .build()?;
        let task_ref = TaskRef::new("deepomatic", "1")?;

        let mut rng = fastrand::Rng::with_seed(7);
        let mut plans = Vec::with_capacity(waits);
        for i in 0..waits {
            let jitter = [Jitter::None, Jitter::Full, Jitter::Equal][rng.usize(0..3)];
            let policy = Policy::builder()
                .initial_delay(Duration::from_millis(rng.u64(10..=200)))
                .factor(1.0 + rng.f64())
                .max_delay(Duration::from_millis(500))
                .jitter(jitter)
                .final_poll_reserve(Duration::from_millis([0, 50, 250][rng.usize(0..3)]))
                .seed(i as u64)
                .build()?;
            let deadline = Duration::from_millis(rng.u64(100..=1500));
            plans.push((policy, deadline));
        }

        let naive_plans = plans.clone();
        let started = Instant::now();
        let results: Vec<(Duration, Duration, &'static str, u32)> = futures_util::stream::iter(plans)
            .map(|(policy, deadline)| {
                let client = client.clone();
                let task_ref = task_ref.clone();
                async move {
                    let start = Instant::now();
                    let result = client.wait(&task_ref, WaitOptions::new(deadline).policy(policy)).await;
                    let took = start.elapsed();
                    let (kind, polls) = match &result {
                        Err(Error::DeadlineExceeded(e)) => ("deadline", e.polls()),
                        Err(Error::RetryAfterPastDeadline(e)) => ("retry-after past deadline", e.polls()),
                        Ok(_) => ("succeeded", 0),
                        Err(_) => ("other error", 0),
                    };
                    (deadline, took, kind, polls)
                }
            })
            .buffer_unordered(concurrency)
            .collect()
            .await;
        let wall = started.elapsed();

        // The same waits, run by the naive loop, in the same process.
        let naive_client = Client::builder()
            .provider(ProviderConfig::new("deepomatic").api_key("k").base_url(server.uri()))
            .request_timeout(Duration::from_secs(3))
            .build()?;
        let mut naive: Vec<f64> = futures_util::stream::iter(naive_plans)
            .map(|(policy, deadline)| {
                let client = naive_client.clone();
                let task_ref = task_ref.clone();
                async move {
                    let took = naive_wait(&client, &task_ref, &policy, deadline).await;
                    (took.as_secs_f64() - deadline.as_secs_f64()) * 1e3
                }
            })
            .buffer_unordered(concurrency)
            .collect()
            .await;
        naive.sort_by(f64::total_cmp);

        let signed_ms = |(deadline, took): (Duration, Duration)| (took.as_secs_f64() - deadline.as_secs_f64()) * 1e3;
        let mut at_deadline: Vec<f64> =
            results.iter().filter(|r| r.2 == "deadline").map(|r| signed_ms((r.0, r.1))).collect();
        at_deadline.sort_by(f64::total_cmp);
        let latest = results.iter().map(|r| signed_ms((r.0, r.1))).fold(f64::NEG_INFINITY, f64::max);
        let polls: u32 = results.iter().map(|r| r.3).sum();

        println!("deadline overshoot: {waits} randomised waits, {concurrency} at a time, loopback server");
        println!("  server: 60% pending (0-150 ms), 10% pending slower than any budget (0.2-3 s),");
        println!("          15% HTML 503, 10% 429 + retry-after-ms (0-1.5 s), 5% 503 + Retry-After: 1");
        println!("  waits: deadline 100-1500 ms, initial delay 10-200 ms, factor 1-2, cap 500 ms,");
        println!("         jitter none/full/equal, final-poll reserve 0/50/250 ms");
        for kind in ["deadline", "retry-after past deadline", "succeeded", "other error"] {
            println!("  ended by {kind:<26} {:>5}", results.iter().filter(|r| r.2 == kind).count());
        }
        println!("  polls sent: {polls}, wall time {:.1} s", wall.as_secs_f64());
        println!(
            "  overshoot of waits ended by the deadline (ms): min {:+.2}  median {:+.2}  p99 {:+.2}  max {:+.2}",
            at_deadline.first().copied().unwrap_or(f64::NAN),
            percentile(&at_deadline, 50.0),
            percentile(&at_deadline, 99.0),
            at_deadline.last().copied().unwrap_or(f64::NAN),
        );
        println!("  latest return of any wait relative to its deadline: {latest:+.2} ms (target: within 10 ms)");
        println!(
            "  naive loop, same waits (ms):                     min {:+.2}  median {:+.2}  p99 {:+.2}  max {:+.2}",
            naive.first().copied().unwrap_or(f64::NAN),
            percentile(&naive, 50.0),
            percentile(&naive, 99.0),
            naive.last().copied().unwrap_or(f64::NAN),
        );
        // Against taskpoll's waits that ran to their deadline (the others ended early, on a hint).
        let ratio = |p: f64| percentile(&naive, p).max(0.0) / percentile(&at_deadline, p).max(0.01);
        println!("  naive / taskpoll overshoot: median x{:.0}, p99 x{:.0}", ratio(50.0), ratio(99.0));
        Ok::<(), Box<dyn std::error::Error>>(())
    })
}
