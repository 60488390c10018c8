//! PostgreSQL stopped for 10 s and started again under two `taskpoll wait
//! --store` workers (leases of 3 s, so they run out during the outage): the
//! workers keep going, every task ends exactly once, nothing is lost, and no
//! task is read by two workers at once. It stops the server, so it runs
//! alone: `cargo test --all-features --test store outage -- --ignored`
//! (`.ci/run` does, with the server `.ci/postgres` started).
#![cfg(all(feature = "cli", feature = "store-sqlite", feature = "store-postgres"))]
#![allow(clippy::disallowed_methods)] // reads real time: a test's own timing

use std::collections::HashMap;
use std::time::Duration;

use taskpoll::simulator::{Lifecycle, Simulator};
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::Child;

use crate::support::TestResult;
use crate::support::store::{fresh_postgres, postgres_url};

const TASKS: usize = 300;
const DIR_ENV: &str = "TASKPOLL_TEST_POSTGRES_DIR";

fn worker(sim: &Simulator, url: &str, name: &str, extra: &[&str]) -> std::io::Result<Child> {
    let settings = ["--lease", "3s", "--max-held", "200", "--rate", "200:200"];
    crate::store_workers::spawn_worker(sim, url, name, &settings, extra)
}

/// A worker's stdout (task ids of its outcomes) and stderr, once it ends.
async fn output(mut child: Child) -> Result<(bool, Vec<String>, String), String> {
    let stdout = child.stdout.take().ok_or("stdout")?;
    let stderr = child.stderr.take().ok_or("stderr")?;
    let fail = |e: &dyn std::fmt::Display| e.to_string();
    let ids = tokio::spawn(async move {
        let mut ids = Vec::new();
        let mut lines = BufReader::new(stdout).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let value: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
            ids.push(value["id"].as_str().unwrap_or(&line).to_string());
        }
        ids
    });
    let errors = tokio::spawn(async move {
        let mut text = String::new();
        let mut lines = BufReader::new(stderr).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            text.push_str(&line);
            text.push('\n');
        }
        text
    });
    let status = tokio::time::timeout(Duration::from_secs(150), child.wait())
        .await
        .map_err(|e| fail(&e))?
        .map_err(|e| fail(&e))?;
    Ok((status.success(), ids.await.map_err(|e| fail(&e))?, errors.await.map_err(|e| fail(&e))?))
}

fn ci_postgres(action: &str, dir: &str) -> TestResult {
    let status = std::process::Command::new("bash")
        .args([concat!(env!("CARGO_MANIFEST_DIR"), "/.ci/postgres"), action, dir])
        .status()?;
    if status.success() { Ok(()) } else { Err(format!(".ci/postgres {action}: {status}").into()) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "stops the PostgreSQL server: run alone (.ci/run does)"]
async fn a_postgres_outage_loses_and_duplicates_nothing() -> TestResult {
    let Some(server) = postgres_url() else { return Ok(()) };
    let Ok(dir) = std::env::var(DIR_ENV) else {
        if std::env::var_os("CI").is_some() {
            return Err(format!("CI is set but {DIR_ENV} is not (.ci/postgres start sets it)").into());
        }
        eprintln!("skipped: set {DIR_ENV} to the directory `.ci/postgres start` was given");
        return Ok(());
    };
    let url = fresh_postgres(&server).await?;
    let sim = Simulator::start().await?;
    let mut ids = String::new();
    for i in 0..TASKS {
        // Running 4 to 26 s from the first read: many end during and after the outage.
        let running = Duration::from_secs(4 + (i % 12) as u64 * 2);
        let task = sim.add_task("deepomatic", Lifecycle::new().running_for(running).then_succeed())?;
        ids.push_str(&format!("{}\n", task.id()));
    }
    let files = tempfile::tempdir()?;
    let ids_file = files.path().join("ids.txt");
    std::fs::write(&ids_file, ids)?;
    let a = worker(&sim, &url, "a", &["--from", ids_file.to_str().ok_or("a path")?])?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let b = worker(&sim, &url, "b", &[])?;
    let (a, b) = (tokio::spawn(output(a)), tokio::spawn(output(b)));
    tokio::time::sleep(Duration::from_secs(3)).await;
    ci_postgres("pause", &dir)?;
    let stopped_at = tokio::time::Instant::now();
    tokio::time::sleep(Duration::from_secs(10)).await;
    ci_postgres("resume", &dir)?;
    eprintln!("PostgreSQL was down for {:.1} s", stopped_at.elapsed().as_secs_f64());
    let (a_ok, a_ids, a_err) = a.await??;
    let (b_ok, b_ids, b_err) = b.await??;
    let errors = format!("a:\n{a_err}\nb:\n{b_err}");
    assert!(a_ok && b_ok, "{errors}");
    assert!(errors.contains("(retrying)"), "the workers saw the outage: {errors}");

    // Every task printed once, by one worker.
    let mut printed: HashMap<&str, usize> = HashMap::new();
    for id in a_ids.iter().chain(&b_ids) {
        *printed.entry(id.as_str()).or_default() += 1;
    }
    assert_eq!(printed.len(), TASKS, "{errors}");
    assert!(printed.values().all(|n| *n == 1), "an outcome printed twice");
    let store = taskpoll::store::PostgresStore::connect(&url).await?;
    use taskpoll::store::WaitStore as _;
    assert_eq!(store.unfinished(&["deepomatic"]).await?, 0);
    assert!(store.outcomes(1_000).await?.is_empty(), "every outcome written was printed and consumed");

    // No task read by two workers at once: each worker's reads of a task are one run.
    let mut reads: HashMap<String, Vec<(tokio::time::Instant, String)>> = HashMap::new();
    for request in sim.requests() {
        let who = request.header("user-agent").and_then(|ua| ua.split("worker/").nth(1)).unwrap_or("?").to_string();
        for id in &request.task_ids {
            reads.entry(id.clone()).or_default().push((request.at, who.clone()));
        }
    }
    let mut handed_over = 0;
    for (id, mut reads) in reads {
        reads.sort();
        let mut runs: Vec<&str> = Vec::new();
        for (_, who) in &reads {
            if runs.last() != Some(&who.as_str()) {
                runs.push(who);
            }
        }
        let mut seen = runs.clone();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), runs.len(), "task {id} read by {runs:?} in turn: two workers at once");
        handed_over += usize::from(runs.len() > 1);
    }
    eprintln!("{handed_over} tasks handed over between workers");
    sim.shutdown().await;
    Ok(())
}
