//! Worker processes sharing a store: `taskpoll wait --store` started as
//! child processes against one simulator (a loopback provider server) with
//! 10,000 waits (2,000 on SQLite). The first worker is killed (SIGKILL) mid-way; two others
//! finish. Each task has exactly one outcome, none is printed twice, none is
//! lost, no task is read by two workers, and the successors stay within one
//! rate budget between them. Run on a SQLite file and on PostgreSQL.
#![cfg(all(feature = "cli", feature = "store-sqlite", feature = "store-postgres"))]
#![allow(clippy::disallowed_methods)] // reads real time: a test's or benchmark's own timing

use std::collections::{HashMap, HashSet};
use std::process::Stdio;
use std::time::Duration;

use crate::support::store::{TestStore, postgres, sqlite};
use taskpoll::simulator::{Lifecycle, Simulator};
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

use crate::support::TestResult;

/// PostgreSQL gets the 10,000 waits; the SQLite file (one writer at
/// a time) 2,000, to keep the test's time reasonable.
const POSTGRES_TASKS: usize = 10_000;
const SQLITE_TASKS: usize = 2_000;
const RATE: f64 = 100.0;
const BURST: u32 = 100;

/// A worker: `taskpoll wait --store URL` at the simulator's Deepomatic.
fn worker(sim: &Simulator, url: &str, name: &str, extra: &[&str]) -> std::io::Result<Child> {
    spawn_worker(sim, url, name, &["--lease", "2s", "--rate", &format!("{RATE}:{BURST}")], extra)
}

/// A `taskpoll wait --store` worker process on the simulator's Deepomatic,
/// with its lease and rate `settings`, then `extra` flags.
pub(crate) fn spawn_worker(
    sim: &Simulator,
    url: &str,
    name: &str,
    settings: &[&str],
    extra: &[&str],
) -> std::io::Result<Child> {
    let mut command = Command::new(env!("CARGO_BIN_EXE_taskpoll"));
    command
        .args(["wait", "--store", url, "--provider", "deepomatic", "--base-url", &sim.base_url("deepomatic")])
        .args(["--worker", name])
        .args(settings)
        .args(["--timeout", "120s"])
        .args(extra)
        .env_remove("TASKPOLL_STORE")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for var in sim.credentials() {
        command.env(&var.name, &var.value);
    }
    command.spawn()
}

/// Sends each stdout line of a worker, as (worker, task id).
fn read_lines(child: &mut Child, name: &'static str, lines: mpsc::UnboundedSender<(&'static str, String)>) {
    if let Some(stdout) = child.stdout.take() {
        tokio::spawn(async move {
            let mut reader = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                let id = serde_json::from_str::<serde_json::Value>(&line)
                    .ok()
                    .and_then(|v| v["id"].as_str().map(str::to_string))
                    .unwrap_or(line);
                if lines.send((name, id)).is_err() {
                    return;
                }
            }
        });
    }
}

async fn stderr_of(child: &mut Child) -> String {
    let mut text = String::new();
    if let Some(stderr) = child.stderr.take() {
        let mut reader = BufReader::new(stderr).lines();
        while let Ok(Some(line)) = reader.next_line().await {
            text.push_str(&line);
            text.push('\n');
        }
    }
    text
}

async fn finished_rows(test_store: &TestStore) -> Result<(i64, i64, i64), Box<dyn std::error::Error>> {
    let sql = "SELECT COUNT(*), COUNT(DISTINCT task), COUNT(*) FILTER (WHERE finished_at_ms IS NOT NULL) \
               FROM taskpoll_waits";
    let row: (i64, i64, i64) = if test_store.name == "sqlite" {
        let pool = sqlx::SqlitePool::connect(&test_store.url).await?;
        sqlx::query_as(sql).fetch_one(&pool).await?
    } else {
        let pool = sqlx::PgPool::connect(&test_store.url).await?;
        sqlx::query_as(sql).fetch_one(&pool).await?
    };
    Ok(row)
}

async fn kill_one_worker_and_let_two_finish(test_store: TestStore, tasks: usize) -> TestResult {
    let name = test_store.name;
    let kill_after = tasks * 3 / 10;
    let sim = Simulator::start().await?;
    let dir = tempfile::tempdir()?;
    let ids_file = dir.path().join("ids.txt");
    let mut ids = String::new();
    for i in 0..tasks {
        // 2 to 6 polls each: with Deepomatic's polite schedule, a few seconds in all.
        let task = sim.add_task("deepomatic", Lifecycle::new().running_for_polls(1 + (i % 5) as u32).then_succeed())?;
        ids.push_str(task.id());
        ids.push('\n');
    }
    std::fs::write(&ids_file, ids)?;
    let url = test_store.url.clone();
    let started = tokio::time::Instant::now();

    let (lines, mut printed) = mpsc::unbounded_channel();
    let mut first = worker(&sim, &url, "a", &["--from", ids_file.to_str().ok_or("a path")?])?;
    read_lines(&mut first, "a", lines.clone());
    let mut by_task: HashMap<String, Vec<&'static str>> = HashMap::new();
    while by_task.len() < kill_after {
        let (who, id) = printed.recv().await.ok_or("the first worker ended before it could be killed")?;
        by_task.entry(id).or_default().push(who);
    }
    first.start_kill()?;
    first.wait().await?;
    let killed_at = tokio::time::Instant::now();
    eprintln!("{name}: killed after {:.1} s", killed_at.duration_since(started).as_secs_f64());

    // Two workers continue, each holding at most half the waits, so both work.
    let max_held = (tasks / 2).to_string();
    let mut second = worker(&sim, &url, "b", &["--max-held", &max_held])?;
    let mut third = worker(&sim, &url, "c", &["--max-held", &max_held])?;
    read_lines(&mut second, "b", lines.clone());
    read_lines(&mut third, "c", lines.clone());
    drop(lines);
    let (second_err, third_err) = (stderr_of(&mut second), stderr_of(&mut third));
    let (second_err, third_err) =
        tokio::time::timeout(Duration::from_secs(120), async { tokio::join!(second_err, third_err) }).await?;
    let (b, c) = (second.wait().await?, third.wait().await?);
    eprintln!("{name}: finished {:.1} s after the kill", killed_at.elapsed().as_secs_f64());
    eprintln!("{second_err}{third_err}");
    assert!(b.success() && c.success(), "{name}: {b} {c}\n{second_err}\n{third_err}");
    while let Some((who, id)) = printed.recv().await {
        by_task.entry(id).or_default().push(who);
    }

    // No outcome printed twice; every task has exactly one outcome row, and
    // those not printed (written by the killed worker just before it died)
    // are there, unconsumed, for `taskpoll outcomes`.
    let twice: Vec<_> = by_task.iter().filter(|(_, who)| who.len() > 1).collect();
    assert!(twice.is_empty(), "{name}: printed twice: {:?}", &twice[..twice.len().min(5)]);
    let (rows, distinct, finished) = finished_rows(&test_store).await?;
    assert_eq!((rows, distinct, finished), (tasks as i64, tasks as i64, tasks as i64), "{name}");
    // Unconsumed: written but not printed, or printed but not yet marked
    // consumed, by the killed worker only (the others exited cleanly).
    let unconsumed = test_store.store.outcomes(tasks as u32).await?;
    let mut unprinted = 0;
    for outcome in &unconsumed {
        match by_task.get(outcome.task_ref.id()) {
            Some(who) => assert_eq!(who[0], "a", "{name}: {} printed by {} and not consumed", outcome.task_ref, who[0]),
            None => unprinted += 1,
        }
    }
    assert_eq!(by_task.len() + unprinted, tasks, "{name}: every task printed or waiting to be read");

    // `taskpoll outcomes` prints exactly those, once.
    let outcomes = |keep: bool| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_taskpoll"));
        command.args(["outcomes", "--store", &url]).env_remove("TASKPOLL_STORE");
        if keep {
            command.arg("--keep");
        }
        command.output()
    };
    let ids_of = |output: &std::process::Output| -> HashSet<String> {
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter_map(|v| v["id"].as_str().map(str::to_string))
            .collect()
    };
    let wanted: HashSet<String> = unconsumed.iter().map(|o| o.task_ref.id().to_string()).collect();
    let kept = outcomes(true)?;
    assert!(kept.status.success(), "{name}: {}", String::from_utf8_lossy(&kept.stderr));
    assert_eq!(ids_of(&kept), wanted, "{name}: outcomes --keep");
    assert_eq!(ids_of(&outcomes(false)?), wanted, "{name}: outcomes");
    assert!(ids_of(&outcomes(false)?).is_empty(), "{name}: consumed by the first `outcomes`");
    assert!(by_task.values().any(|who| who[0] == "b") && by_task.values().any(|who| who[0] == "c"), "{name}");

    // No task was read by two workers: the killed one's reads all came first,
    // then one successor's only.
    let mut readers: HashMap<&str, Vec<(tokio::time::Instant, String)>> = HashMap::new();
    let requests = sim.requests();
    for request in &requests {
        let who = request.header("user-agent").and_then(|ua| ua.split("worker/").nth(1)).unwrap_or("?").to_string();
        for id in &request.task_ids {
            readers.entry(id.as_str()).or_default().push((request.at, who.clone()));
        }
    }
    assert_eq!(readers.len(), tasks, "{name}: every task was read");
    for (id, reads) in &readers {
        let successors: HashSet<&str> = reads.iter().filter(|(_, w)| w != "a").map(|(_, w)| w.as_str()).collect();
        assert!(successors.len() <= 1, "{name}: task {id} read by {successors:?}");
        // Never two workers at once: every read by the killed worker comes before
        // the first read by its successor (a read the killed worker sent just
        // before it died may reach the server after the kill, never after that).
        let killed_last = reads.iter().filter(|(_, w)| w == "a").map(|(at, _)| *at).max();
        let successor_first = reads.iter().filter(|(_, w)| w != "a").map(|(at, _)| *at).min();
        if let (Some(last), Some(first)) = (killed_last, successor_first) {
            assert!(last < first, "{name}: task {id} read by the killed worker after its successor");
        }
    }

    // The successors held one budget between them: what they sent is at most
    // the rate over their time plus one burst.
    let after: Vec<tokio::time::Instant> = requests.iter().filter(|r| r.at > killed_at).map(|r| r.at).collect();
    let span = after.iter().max().map_or(Duration::ZERO, |last| last.duration_since(killed_at));
    let allowed = RATE * span.as_secs_f64() + f64::from(BURST);
    assert!((after.len() as f64) <= allowed, "{name}: {} requests in {span:?} (budget {allowed:.0})", after.len());
    // And in every one-second window, all workers together: at most one burst
    // plus a second of the rate (grants lapse, and the store's bucket leaves
    // room for them), with 10% for requests that arrive bunched on a busy machine.
    let mut all: Vec<tokio::time::Instant> = requests.iter().map(|r| r.at).collect();
    all.sort_unstable();
    let window = Duration::from_secs(1);
    let most = (0..all.len()).map(|i| all[i..].partition_point(|at| at.duration_since(all[i]) < window)).max();
    let bound = f64::from(BURST) + RATE * 1.1;
    assert!(most.is_some_and(|n| n as f64 <= bound), "{name}: {most:?} requests in one second (bound {bound:.0})");
    eprintln!(
        "{name}: {} requests for {tasks} tasks ({:.3} per task); after the kill {} requests in {:.1} s",
        requests.len(),
        requests.len() as f64 / tasks as f64,
        after.len(),
        span.as_secs_f64()
    );
    eprintln!("{name}: busiest second {most:?} requests (bound {bound:.0})");
    sim.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_worker_loses_nothing_on_sqlite() -> TestResult {
    kill_one_worker_and_let_two_finish(sqlite().await?, SQLITE_TASKS).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_worker_loses_nothing_on_postgres() -> TestResult {
    match postgres().await? {
        Some(store) => kill_one_worker_and_let_two_finish(store, POSTGRES_TASKS).await,
        None => Ok(()),
    }
}
