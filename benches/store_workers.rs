//! Worker processes sharing a wait store: 1 worker on SQLite, then 1, 2 and
//! 4 workers on one PostgreSQL (skipped, with a message, when
//! `TASKPOLL_TEST_POSTGRES_URL` is not set), each a `taskpoll wait --store`
//! process against one simulator (a loopback provider server) with the same
//! waits. Prints requests per task, the observed request rate against the
//! budget they share, throughput, and store writes per poll. Asserts nothing.
//!
//! `cargo bench --bench store_workers --features cli` (with
//! `TASKPOLL_TEST_POSTGRES_URL` set for the PostgreSQL rows; see README).

#![allow(clippy::disallowed_methods)] // reads real time: a test's or benchmark's own timing

use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use taskpoll::simulator::{Lifecycle, Simulator};
use taskpoll::store::{PostgresStore, SqliteStore, StoredWaiter, WaitStore};
use taskpoll::{Client, WaitOptions};
use tokio::io::AsyncReadExt as _;
use tokio::process::Command;

// The tests' store helpers (a fresh PostgreSQL database per run).
#[path = "../tests/support/store.rs"]
mod store_common;

type BenchResult<T = ()> = Result<T, Box<dyn std::error::Error>>;

const TASKS: usize = 10_000;
/// The budget every worker shares (Deepomatic batch reads of up to 100 tasks).
const RATE: f64 = 50.0;
const BURST: u32 = 50;

#[derive(Default)]
struct Figures {
    requests: u64,
    polls: u64,
    store_writes: u64,
    outcomes: u64,
}

fn main() -> BenchResult {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(run())
}

async fn run() -> BenchResult {
    println!(
        "store_workers: {TASKS} Deepomatic waits (2 to 6 polls each), one shared budget of {RATE}/s (burst {BURST})"
    );
    println!(
        "{:<10} {:>7} {:>8} {:>10} {:>9} {:>12} {:>11} {:>12} {:>13}",
        "store", "workers", "wall s", "tasks/s", "req/task", "req/s (avg)", "peak 1 s", "writes/poll", "writes/req"
    );
    let dir = tempfile::tempdir()?;
    let sqlite_url = format!("sqlite:{}", dir.path().join("bench.db").display());
    let sqlite: Arc<dyn WaitStore> = Arc::new(SqliteStore::connect(&sqlite_url).await?);
    measure("sqlite", &sqlite_url, sqlite, 1).await?;
    match std::env::var(store_common::POSTGRES_ENV) {
        Ok(base) if !base.trim().is_empty() => {
            for workers in [1, 2, 4] {
                let url = store_common::fresh_postgres(&base).await?;
                let store: Arc<dyn WaitStore> = Arc::new(PostgresStore::connect(&url).await?);
                measure("postgres", &url, store, workers).await?;
            }
        }
        _ => println!("postgres: skipped: set TASKPOLL_TEST_POSTGRES_URL (see README)"),
    }
    Ok(())
}

async fn measure(label: &str, url: &str, store: Arc<dyn WaitStore>, workers: usize) -> BenchResult {
    let sim = Simulator::start().await?;
    let client = Client::builder().provider(sim.client_config("deepomatic")).build()?;
    let options = WaitOptions::new(Duration::from_secs(300));
    let mut waits = Vec::with_capacity(TASKS);
    for i in 0..TASKS {
        let task = sim.add_task("deepomatic", Lifecycle::new().running_for_polls(1 + (i % 5) as u32).then_succeed())?;
        waits.push((task, options.clone()));
    }
    StoredWaiter::new(&client, store).add_all(waits).await?;

    let started = Instant::now();
    let mut children = Vec::new();
    for w in 0..workers {
        let mut command = Command::new(env!("CARGO_BIN_EXE_taskpoll"));
        command
            .args(["wait", "--store", url, "--provider", "deepomatic", "--base-url", &sim.base_url("deepomatic")])
            .args(["--worker", &format!("w{w}"), "--rate", &format!("{RATE}:{BURST}")])
            .args(["--max-held", &TASKS.div_ceil(workers).to_string()])
            .env_remove("TASKPOLL_STORE")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for var in sim.credentials() {
            command.env(&var.name, &var.value);
        }
        children.push(command.spawn()?);
    }
    let mut figures = Figures::default();
    for mut child in children {
        let mut stderr = String::new();
        if let Some(mut pipe) = child.stderr.take() {
            pipe.read_to_string(&mut stderr).await?;
        }
        child.wait().await?;
        let done = stderr.lines().find(|line| line.contains(" done: ")).ok_or(format!("a worker failed: {stderr}"))?;
        let field = |name: &str| -> u64 {
            done.split_whitespace()
                .find_map(|pair| pair.strip_prefix(&format!("{name}=")))
                .and_then(|n| n.parse().ok())
                .unwrap_or(0)
        };
        figures.requests += field("requests");
        figures.polls += field("polls");
        figures.store_writes += field("store_writes");
        figures.outcomes += field("outcomes");
    }
    let wall = started.elapsed();
    let requests = sim.requests();
    let (first, last) = match (requests.first(), requests.last()) {
        (Some(first), Some(last)) => (first.at, last.at),
        _ => return Err("no request".into()),
    };
    let span = last.duration_since(first).as_secs_f64().max(1e-3);
    // The busiest second: the most requests within any one-second window.
    let times: Vec<_> = requests.iter().map(|r| r.at).collect();
    let mut peak = 0;
    let mut start = 0;
    for end in 0..times.len() {
        while times[end].duration_since(times[start]) > Duration::from_secs(1) {
            start += 1;
        }
        peak = peak.max(end - start + 1);
    }
    println!(
        "{:<10} {:>7} {:>8.1} {:>10.0} {:>9.3} {:>12.1} {:>11} {:>12.3} {:>13.2}",
        label,
        workers,
        wall.as_secs_f64(),
        figures.outcomes as f64 / wall.as_secs_f64(),
        requests.len() as f64 / TASKS as f64,
        requests.len() as f64 / span,
        peak,
        figures.store_writes as f64 / figures.polls.max(1) as f64,
        figures.store_writes as f64 / figures.requests.max(1) as f64,
    );
    if figures.outcomes != TASKS as u64 {
        println!("  note: {} outcomes written for {TASKS} waits", figures.outcomes);
    }
    sim.shutdown().await;
    Ok(())
}
