//! What do metrics cost: the client CPU of 100,000 waits with no recorder
//! installed, and with the Prometheus recorder (`metrics-exporter-prometheus`,
//! set up as `taskpoll --metrics-listen` sets it up), in the same run.
//!
//! As `benches/many_waits.rs` does, the server runs in a child process (the
//! simulator, this binary again with `METRICS_COST_ROLE=server`), so the
//! CPU figure is the client's alone; each client run is a child process of
//! its own too (a global recorder cannot be removed once installed), its CPU
//! read with `getrusage(RUSAGE_SELF)` from just before the first wait is
//! added to just after the last one ends and the metrics are rendered once
//! (as one scrape would). The sides alternate, each round starting with the
//! other one, and the figures are medians over the rounds.
//!
//! Each of `TASKS` Deepomatic tasks is queued for one poll and then succeeds
//! (two polls each, whatever the timing), polled every 100 ms through one
//! `Waiter` (batch reads of 100 ids): the same requests on both sides.
//! Not a test: it asserts nothing; it prints the figures and the ratio next
//! to the goal of issue 26 (at most 3 % more CPU with the recorder).
//!
//! Run with `cargo bench --bench metrics_cost --features simulator,metrics`.
//! Environment: `TASKS=100000`, `ROUNDS=3`.

#![allow(clippy::disallowed_methods)] // reads real time: a benchmark's own timing

use std::error::Error as StdError;
use std::io::{BufRead as _, BufReader, Write as _};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use taskpoll::spec::SchemeKind;
use taskpoll::{Client, Credential, Policy, ProviderConfig, TaskRef, WaitOptions};

type BoxResult<T> = Result<T, Box<dyn StdError + Send + Sync>>;

const ROLE: &str = "METRICS_COST_ROLE";
const PROVIDER: &str = "deepomatic";
/// Ids: nine digits, like Deepomatic's.
const ID_BASE: usize = 100_000_000;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok()).unwrap_or(default)
}

fn main() -> BoxResult<()> {
    match std::env::var(ROLE).as_deref() {
        Ok("server") => server(),
        Ok("none") => client(false),
        Ok("prometheus") => client(true),
        _ => bench(),
    }
}

/// The simulator with `TASKS` tasks; prints its URL and credentials as one
/// JSON line, then serves until its stdin closes.
fn server() -> BoxResult<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        use taskpoll::simulator::{Lifecycle, Simulator};
        let sim = Simulator::start().await?;
        for i in 0..env_usize("TASKS", 100_000) {
            sim.add_task_with_id(
                PROVIDER,
                &(ID_BASE + i).to_string(),
                Lifecycle::new().queued_for_polls(1).then_succeed(),
            )?;
        }
        let env: serde_json::Map<String, Value> = sim
            .credentials()
            .into_iter()
            .filter(|v| v.provider == PROVIDER)
            .map(|v| (v.name, json!(v.value)))
            .collect();
        println!("{}", json!({ "url": sim.base_url(PROVIDER), "env": env }));
        std::io::stdout().flush()?;
        // Serve until the bench closes stdin.
        tokio::task::spawn_blocking(|| std::io::stdin().lines().count()).await?;
        BoxResult::Ok(())
    })
}

/// The process's CPU time so far (user, system), in seconds.
fn cpu() -> (f64, f64) {
    use nix::sys::resource::{UsageWho, getrusage};
    let Ok(usage) = getrusage(UsageWho::RUSAGE_SELF) else { return (0.0, 0.0) };
    let secs = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
    (secs(usage.user_time()), secs(usage.system_time()))
}

/// One side: waits on every task, prints its figures as one JSON line.
fn client(prometheus: bool) -> BoxResult<()> {
    let handle = if prometheus {
        use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
        // As `taskpoll --metrics-listen` builds it (src/bin/taskpoll/telemetry.rs).
        let seconds = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0];
        let counts = [1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 50.0, 100.0, 500.0, 1000.0];
        let recorder = PrometheusBuilder::new()
            .with_recommended_naming(true)
            .set_buckets_for_metric(Matcher::Suffix("duration".into()), &seconds)?
            .set_buckets_for_metric(Matcher::Full("taskpoll.wait.polls".into()), &counts)?
            .set_buckets_for_metric(Matcher::Full("taskpoll.batch.size".into()), &counts)?
            .build_recorder();
        let handle = recorder.handle();
        metrics::set_global_recorder(recorder)?;
        Some(handle)
    } else {
        None
    };
    let setup: Value = serde_json::from_str(&std::env::var("METRICS_COST_SERVER")?)?;
    let value = |name: &str| setup["env"][name].as_str().unwrap_or_default().to_string();
    let spec = taskpoll::spec::provider(PROVIDER).ok_or("no deepomatic")?;
    let mut config =
        ProviderConfig::new(PROVIDER).base_url(setup["url"].as_str().ok_or("no url")?).rate_limit(5_000.0, 1_000);
    for scheme in spec.schemes() {
        if let (SchemeKind::ApiKeyHeader(_), [var]) = (scheme.kind(), scheme.env()) {
            config = config.credential(scheme.name(), Credential::Token(secrecy::SecretString::from(value(var))));
        }
    }
    let client = Client::builder().provider(config).build()?;
    let policy = Policy::builder()
        .name("fixed-100ms")
        .first_poll(Duration::ZERO)
        .initial_delay(Duration::from_millis(100))
        .factor(1.0)
        .max_delay(Duration::from_millis(100))
        .build()?;
    let options = WaitOptions::new(Duration::from_secs(300)).policy(policy);
    let tasks = env_usize("TASKS", 100_000);

    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let (cpu0, started) = (cpu(), Instant::now());
    let (succeeded, rendered) = runtime.block_on(async {
        let mut waiter = client.waiter();
        for i in 0..tasks {
            waiter.add(TaskRef::new(PROVIDER, (ID_BASE + i).to_string())?, &options)?;
        }
        let mut succeeded = 0;
        while let Some(outcome) = waiter.next_outcome().await {
            succeeded += usize::from(outcome.result.is_ok());
        }
        // One scrape's worth of rendering.
        let rendered = handle.as_ref().map(|h| h.render());
        BoxResult::Ok((succeeded, rendered))
    })?;
    let (cpu1, wall) = (cpu(), started.elapsed());
    // What the recorder saw: the waits it counted (so the side did record).
    let recorded = rendered.as_deref().and_then(|text| {
        text.lines()
            .find(|l| l.starts_with("taskpoll_wait_duration_seconds_count{") && l.contains("succeeded"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
    });
    println!(
        "{}",
        json!({
            "user_s": cpu1.0 - cpu0.0,
            "system_s": cpu1.1 - cpu0.1,
            "wall_s": wall.as_secs_f64(),
            "succeeded": succeeded,
            "recorded_waits": recorded,
        })
    );
    Ok(())
}

/// Runs one side against a fresh server; its figures.
fn run(side: &str) -> BoxResult<Value> {
    let exe = std::env::current_exe()?;
    let mut server = Command::new(&exe).env(ROLE, "server").stdin(Stdio::piped()).stdout(Stdio::piped()).spawn()?;
    let mut line = String::new();
    BufReader::new(server.stdout.take().ok_or("server stdout")?).read_line(&mut line)?;
    let out = Command::new(&exe).env(ROLE, side).env("METRICS_COST_SERVER", line.trim()).output()?;
    drop(server.stdin.take());
    server.wait()?;
    if !out.status.success() {
        return Err(format!("the {side} side failed: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 { values[n / 2] } else { (values[n / 2 - 1] + values[n / 2]) / 2.0 }
}

fn bench() -> BoxResult<()> {
    let (tasks, rounds) = (env_usize("TASKS", 100_000), env_usize("ROUNDS", 3));
    println!("metrics_cost: {tasks} Deepomatic waits (two polls each, batches of 100) per run, {rounds} rounds");
    let mut cpu: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    let sides = ["none", "prometheus"];
    for round in 0..rounds {
        for turn in 0..2 {
            let side = (round + turn) % 2;
            let figures = run(sides[side])?;
            let total = figures["user_s"].as_f64().unwrap_or(0.0) + figures["system_s"].as_f64().unwrap_or(0.0);
            println!("  round {} {:<10} client CPU {total:.3} s  {figures}", round + 1, sides[side]);
            cpu[side].push(total);
        }
    }
    let pairs: Vec<f64> = cpu[1].iter().zip(&cpu[0]).map(|(with, without)| with / without).collect();
    let (none, prometheus) = (median(cpu[0].clone()), median(cpu[1].clone()));
    println!("client CPU, median of {rounds}: no recorder {none:.3} s, Prometheus recorder {prometheus:.3} s");
    println!(
        "ratio (recorder / none): {:.3} (per round: {}); goal: at most 1.03",
        prometheus / none,
        pairs.iter().map(|r| format!("{r:.3}")).collect::<Vec<_>>().join(", ")
    );
    Ok(())
}
