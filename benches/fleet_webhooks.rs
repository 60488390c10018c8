//! Delivery-to-outcome latency across processes: this process receives the
//! simulator's signed Cloudinary deliveries and writes them to a PostgreSQL
//! store (`webhook::serve_store`); a `taskpoll wait --store` worker process
//! holds the waits and ends each with its delivery. Latency: from the
//! delivery's arrival at the receiver (`received_at_ms` in the store, taken
//! before the write, so the write counts) to its outcome's write
//! (`finished_at_ms`), both wall clock on this machine. The simulator sends
//! from this process too, from one pooled HTTP client: a client built per
//! delivery (about 60 ms of CPU each here, on this process's runtime threads)
//! starved the receiver at 50 deliveries a second, for p99s over 10 s. Twice: with the
//! wake-up hint (`NOTIFY`/`LISTEN`) and without it (the worker reads the
//! deliveries table every 250 ms). Goal: p99 <= 1 s without the hint,
//! <= 100 ms with it. Skipped, with a message, without
//! `TASKPOLL_TEST_POSTGRES_URL`. Asserts nothing.
//!
//! `cargo bench --bench fleet_webhooks --features cli`

#![allow(clippy::disallowed_methods)] // reads real time: a benchmark's own timing

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use sqlx::Connection as _;
use taskpoll::simulator::{Callback, Lifecycle, Simulator};
use taskpoll::store::{DeliveryLimits, PostgresStore};
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::Command;

#[path = "../tests/support/store.rs"]
mod store_common;

type BenchResult<T = ()> = Result<T, Box<dyn std::error::Error>>;

const TASKS: usize = 300;

fn main() -> BenchResult {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(async {
        let Ok(server) = std::env::var(store_common::POSTGRES_ENV) else {
            println!("skipped: set {} (see README) to run this benchmark", store_common::POSTGRES_ENV);
            return Ok(());
        };
        println!("{TASKS} Cloudinary waits held by one worker process; deliveries written by this process");
        println!("{:<22} {:>8} {:>8} {:>8}", "wake-up", "p50 ms", "p99 ms", "max ms");
        for hint in [false, true] {
            let latencies = run(&server, hint).await?;
            let at = |q: f64| latencies[((latencies.len() as f64 - 1.0) * q).round() as usize];
            let label = if hint { "NOTIFY hint" } else { "table read (250 ms)" };
            println!("{label:<22} {:>8} {:>8} {:>8}", at(0.5), at(0.99), at(1.0));
        }
        Ok(())
    })
}

/// Sorted latencies (ms) of one run.
async fn run(server: &str, hint: bool) -> BenchResult<Vec<u64>> {
    let url = store_common::fresh_postgres(server).await?;
    let sim = Simulator::start().await?;
    let store = Arc::new(PostgresStore::connect(&url).await?.notify_deliveries(hint));
    let receiver =
        taskpoll::webhook::serve_store(sim.client()?, store.clone(), DeliveryLimits::default(), "127.0.0.1:0".parse()?)
            .await?;
    let mut ids = String::new();
    for i in 0..TASKS {
        // Finished at once (a poll sees the success, held for its webhook); delivered 4 to 10 s
        // after the start, once the worker holds every wait.
        let callback = Callback::to(receiver.url("cloudinary")).delay(Duration::from_millis(4_000 + i as u64 * 20));
        let task = sim.add_task_with_callback("cloudinary", Lifecycle::new().then_succeed(), callback)?;
        ids.push_str(&format!("{}\n", task.id()));
    }
    let dir = tempfile::tempdir()?;
    let ids_file = dir.path().join("ids.txt");
    std::fs::write(&ids_file, ids)?;
    let mut command = Command::new(env!("CARGO_BIN_EXE_taskpoll"));
    command
        .args(["wait", "--store", &url, "--provider", "cloudinary", "--base-url", &sim.base_url("cloudinary")])
        .args(["--from", ids_file.to_str().ok_or("a path")?, "--webhooks-from-store", "--timeout", "60s"])
        .env_remove("TASKPOLL_STORE")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    for var in sim.credentials() {
        command.env(&var.name, &var.value);
    }
    let mut worker = command.spawn()?;
    let stdout = worker.stdout.take().ok_or("stdout")?;
    // Each delivery's write time, read as it appears (the worker's sweep removes applied ones,
    // every 10 s): only recent rows, so that watching costs this process little (a window
    // back, as a row may commit after one with a later sequence number).
    let watch_url = url.clone();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watching = done.clone();
    let written = tokio::spawn(async move {
        let mut seen: HashMap<String, i64> = HashMap::new();
        let Ok(mut conn) = sqlx::PgConnection::connect(&watch_url).await else { return seen };
        let mut last_seq = 0_i64;
        while !watching.load(std::sync::atomic::Ordering::Relaxed) {
            let rows: Vec<(i64, String, i64)> = sqlx::query_as(
                "SELECT seq, task_id, received_at_ms FROM taskpoll_deliveries WHERE seq > $1 ORDER BY seq",
            )
            .bind(last_seq - 100)
            .fetch_all(&mut conn)
            .await
            .unwrap_or_default();
            for (seq, task_id, received_at_ms) in rows {
                last_seq = last_seq.max(seq);
                seen.insert(task_id, received_at_ms);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        seen
    });
    let mut finished: HashMap<String, i64> = HashMap::new();
    let mut lines = BufReader::new(stdout).lines();
    while let Some(line) = tokio::time::timeout(Duration::from_secs(90), lines.next_line()).await?? {
        let value: serde_json::Value = serde_json::from_str(&line)?;
        if let (Some(id), Some(at)) = (value["id"].as_str(), value["finished_at_ms"].as_i64()) {
            finished.insert(id.to_string(), at);
        }
    }
    worker.wait().await?;
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let written = tokio::time::timeout(Duration::from_secs(10), written).await??;
    let mut latencies: Vec<u64> = finished
        .iter()
        .filter_map(|(id, at)| written.get(id).map(|received| u64::try_from(at - received).unwrap_or(0)))
        .collect();
    latencies.sort_unstable();
    if latencies.len() < TASKS {
        println!("(only {} of {TASKS} deliveries were seen in the table before they were applied)", latencies.len());
    }
    receiver.shutdown().await;
    sim.shutdown().await;
    if latencies.is_empty() {
        return Err("no latency measured".into());
    }
    Ok(latencies)
}
