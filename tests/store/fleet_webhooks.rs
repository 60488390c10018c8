//! Webhooks in a fleet, with real processes on a real PostgreSQL: one
//! `taskpoll receive` process gets every delivery (it holds no wait), two
//! `taskpoll wait --store` workers hold the waits. 1,000 Cloudinary waits
//! whose results come only by webhook, plus 20 whose delivery arrived before
//! their wait was added: every result arrives, each exactly once, also when
//! one worker is killed mid-run and the receiver is away for half a second
//! then (the simulator sends the deliveries it refused again). And PostgreSQL stopped for 10 s mid-run
//! (`.ci/postgres stop/start`): nothing lost, nothing written twice.
#![cfg(all(feature = "cli", feature = "store-sqlite", feature = "store-postgres"))]
#![allow(clippy::disallowed_methods)] // reads real time: a test's own timing

use std::collections::HashMap;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use taskpoll::simulator::{Callback, Lifecycle, Simulator};
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

use crate::support::TestResult;
use crate::support::store::{fresh_postgres, postgres_url};

/// Waits whose results come only by webhook. Their deliveries come in bursts
/// (about 100 a second); one the receiver refuses (no connection, a 503 when
/// its store write failed) is sent again with backoff, as providers do
/// ([`Callback`]'s retries), so every one arrives however loaded the machine.
const TASKS: usize = 1_000;
const EARLY: usize = 20;

fn taskpoll(sim: &Simulator) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_taskpoll"));
    command.env_remove("TASKPOLL_STORE").stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    command.kill_on_drop(true);
    for var in sim.credentials() {
        command.env(&var.name, &var.value);
    }
    command
}

/// `taskpoll receive` on `listen`, and the address it listens on (from its first line on stderr).
async fn receiver(sim: &Simulator, url: &str, listen: &str) -> Result<(Child, String), Box<dyn std::error::Error>> {
    let mut child = taskpoll(sim).args(["receive", "--store", url, "--listen", listen]).spawn()?;
    let stderr = child.stderr.take().ok_or("no stderr")?;
    let mut lines = BufReader::new(stderr).lines();
    let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await??.ok_or("receive ended")?;
    let addr = line.split("http://").nth(1).and_then(|rest| rest.split('/').next()).ok_or(line.clone())?.to_string();
    // Keep reading, so the pipe never fills.
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            eprintln!("receive: {line}");
        }
    });
    Ok((child, addr))
}

fn worker(sim: &Simulator, url: &str, name: &str, extra: &[&str]) -> std::io::Result<Child> {
    taskpoll(sim)
        .args(["wait", "--store", url, "--provider", "cloudinary", "--base-url", &sim.base_url("cloudinary")])
        .args(["--worker", name, "--lease", "2s", "--max-held", "600", "--rate", "100:100", "--timeout", "120s"])
        .arg("--webhooks-from-store")
        .args(extra)
        .spawn()
}

/// Each stdout line of a worker (its outcomes), as (worker, line).
fn read_lines(child: &mut Child, name: &'static str, lines: mpsc::UnboundedSender<(&'static str, Value)>) {
    if let Some(stdout) = child.stdout.take() {
        tokio::spawn(async move {
            let mut reader = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                let value = serde_json::from_str(&line).unwrap_or(Value::String(line));
                if lines.send((name, value)).is_err() {
                    return;
                }
            }
        });
    }
}

fn drain_stderr(child: &mut Child, name: &'static str) -> tokio::task::JoinHandle<String> {
    let stderr = child.stderr.take();
    tokio::spawn(async move {
        let mut text = String::new();
        if let Some(stderr) = stderr {
            let mut reader = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                text.push_str(&format!("{name}: {line}\n"));
            }
        }
        text
    })
}

/// Each task's outcome row in the store: (task id, outcome JSON).
async fn outcome_rows(url: &str) -> Result<Vec<(String, Option<String>)>, Box<dyn std::error::Error>> {
    use sqlx::Connection as _;
    let mut conn = sqlx::PgConnection::connect(url).await?;
    let rows: Vec<(String, Option<String>)> =
        sqlx::query_as("SELECT task_id, outcome FROM taskpoll_waits").fetch_all(&mut conn).await?;
    conn.close().await?;
    Ok(rows)
}

/// Adds the tasks to the simulator, each delivering its webhook to `hook`; the
/// first `EARLY` finish at once and are delivered before their waits are added.
async fn tasks(sim: &Simulator, hook: &str, n: usize) -> Result<String, Box<dyn std::error::Error>> {
    let mut ids = String::new();
    for _ in 0..EARLY {
        let task = sim.add_task_with_callback("cloudinary", Lifecycle::new().then_succeed(), Callback::to(hook))?;
        ids.push_str(&format!("{}\n", task.id()));
    }
    // The early deliveries are in the store before any wait is added.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while sim.webhook_deliveries().iter().filter(|d| d.status == Some(204)).count() < EARLY {
        assert!(tokio::time::Instant::now() < deadline, "early deliveries: {:?}", sim.webhook_deliveries());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for i in 0..n {
        // Finished at once; delivered 2 to 12 s later (polls may see the success first: held for its webhook).
        let delay = Duration::from_millis(2_000 + (i % 300) as u64 * 30);
        let task =
            sim.add_task_with_callback("cloudinary", Lifecycle::new().then_succeed(), Callback::to(hook).delay(delay))?;
        ids.push_str(&format!("{}\n", task.id()));
    }
    Ok(ids)
}

/// Every task ended once, with the result only its webhook carries.
fn check_results(by_task: &HashMap<String, Vec<Value>>, rows: &[(String, Option<String>)], total: usize) {
    let mut twice = 0;
    for (id, lines) in by_task {
        twice += usize::from(lines.len() > 1);
        for line in lines {
            assert_eq!(line["result"]["simulated_result"]["task_id"], Value::String(id.clone()), "{line}");
        }
    }
    assert_eq!(twice, 0, "outcomes printed twice");
    assert_eq!(rows.len(), total, "one row per task");
    for (id, outcome) in rows {
        let outcome: Value = serde_json::from_str(outcome.as_deref().unwrap_or("null")).unwrap_or(Value::Null);
        assert_eq!(outcome["kind"], "succeeded", "{id}: {outcome}");
        assert_eq!(outcome["task"]["via"], "webhook", "{id}: {outcome}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_webhook_only_result_reaches_the_worker_holding_its_wait() -> TestResult {
    let Some(server) = postgres_url() else { return Ok(()) };
    let url = fresh_postgres(&server).await?;
    let sim = Simulator::start().await?;
    // The receiver creates the tables (and takes the deliveries that come before any wait).
    let (mut receive, addr) = receiver(&sim, &url, "127.0.0.1:0").await?;
    let hook = format!("http://{addr}/cloudinary");
    let dir = tempfile::tempdir()?;
    let ids_file = dir.path().join("ids.txt");
    std::fs::write(&ids_file, tasks(&sim, &hook, TASKS).await?)?;
    let started = tokio::time::Instant::now();

    let (lines, mut printed) = mpsc::unbounded_channel();
    let mut a = worker(&sim, &url, "a", &["--from", ids_file.to_str().ok_or("a path")?])?;
    read_lines(&mut a, "a", lines.clone());
    let a_err = drain_stderr(&mut a, "a");
    // The second worker once the waits are in the store (it ends when none is left).
    let mut by_task: HashMap<String, Vec<Value>> = HashMap::new();
    let (_, first) = printed.recv().await.ok_or("worker a printed nothing")?;
    by_task.entry(first["id"].as_str().unwrap_or_default().to_string()).or_default().push(first);
    let mut b = worker(&sim, &url, "b", &[])?;
    read_lines(&mut b, "b", lines.clone());
    let b_err = drain_stderr(&mut b, "b");
    drop(lines);
    // Worker a is killed a third of the way.
    while by_task.len() < (TASKS + EARLY) / 3 {
        let (_, line) = printed.recv().await.ok_or("the workers ended early")?;
        by_task.entry(line["id"].as_str().unwrap_or_default().to_string()).or_default().push(line);
    }
    a.start_kill()?;
    a.wait().await?;
    eprintln!("killed worker a after {:.1} s", started.elapsed().as_secs_f64());
    // The receiver is gone for half a second too: the deliveries sent meanwhile are
    // refused (no connection) and sent again by the simulator, as a provider would.
    receive.start_kill()?;
    receive.wait().await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (restarted, _) = receiver(&sim, &url, &addr).await?;
    receive = restarted;
    let b_status = tokio::time::timeout(Duration::from_secs(120), b.wait()).await??;
    let errors = format!("{}{}", a_err.await?, b_err.await?);
    eprintln!("{errors}");
    while let Some((_, line)) = printed.recv().await {
        by_task.entry(line["id"].as_str().unwrap_or_default().to_string()).or_default().push(line);
    }
    for lines in by_task.values() {
        if lines.iter().any(|l| l["outcome"] != "succeeded") {
            eprintln!("not succeeded: {lines:?}");
        }
    }
    let mut statuses: HashMap<Option<u16>, usize> = HashMap::new();
    // A delivery is recorded once its answer is read, which may be after its wait ended.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut deliveries = sim.webhook_deliveries();
    while deliveries.len() < TASKS + EARLY && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        deliveries = sim.webhook_deliveries();
    }
    for delivery in &deliveries {
        *statuses.entry(delivery.status).or_default() += 1;
    }
    let resent = deliveries.iter().filter(|d| d.attempts > 1).count();
    eprintln!("deliveries by status: {statuses:?}; {resent} sent more than once");
    assert_eq!(statuses.get(&Some(204)), Some(&(TASKS + EARLY)), "every delivery was taken in the end");
    assert!(resent > 0, "no delivery was sent while the receiver was away");
    assert!(b_status.success(), "{b_status}\n{errors}");
    eprintln!("all outcomes in {:.1} s", started.elapsed().as_secs_f64());
    receive.start_kill()?;
    let rows = outcome_rows(&url).await?;
    check_results(&by_task, &rows, TASKS + EARLY);
    // Written by worker a just before it was killed: in the store, not printed.
    let unprinted = rows.iter().filter(|(id, _)| !by_task.contains_key(id)).count();
    assert!(unprinted <= 2 * 600, "{unprinted}");
    sim.shutdown().await;
    Ok(())
}
