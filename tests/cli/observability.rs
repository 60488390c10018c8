//! What the binary tells about itself (issue 26): logs on stderr with `-v`,
//! `--log-format json` and `RUST_LOG`, never a credential; metrics for
//! Prometheus with `--metrics-listen`, scraped during a wait.
#![cfg(feature = "cli")]

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use taskpoll::simulator::{Lifecycle, Simulator};
use tokio::io::{AsyncBufReadExt as _, BufReader};

use crate::support::TestResult;
use crate::support::cli::{raw_control, sim_env, stderr, taskpoll};

/// The simulator's secret values (tokens, keys, passwords, webhook secrets).
fn secrets(sim: &Simulator) -> Vec<String> {
    let secrets: Vec<String> = sim.credentials().into_iter().filter(|v| v.secret).map(|v| v.value).collect();
    assert!(secrets.len() >= 4 && secrets.iter().all(|s| s.len() >= 8), "{secrets:?}");
    secrets
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verbose_logs_show_each_poll_json_lines_parse_and_no_credential_is_logged() -> TestResult {
    let sim = Simulator::start().await?;
    let env = sim_env(&sim);
    let task = sim.add_task("factpulse", Lifecycle::new().queued_for_polls(1).then_succeed())?;
    let batch = sim.add_task("deepomatic", Lifecycle::new().queued_for_polls(1).then_succeed())?;
    let other = sim.add_task("deepomatic", Lifecycle::new().then_succeed())?;

    // Without a flag: warnings only, so a plain wait logs nothing.
    let quiet = taskpoll(&["wait", "--timeout", "20s", &task.to_string()], &env).await;
    assert_eq!(quiet.status.code(), Some(0), "{}", stderr(&quiet));
    assert!(!stderr(&quiet).contains("DEBUG") && !stderr(&quiet).contains("taskpoll.wait{"), "{}", stderr(&quiet));

    // -v: a text line per poll, in its wait's span.
    let task = sim.add_task("factpulse", Lifecycle::new().queued_for_polls(1).then_succeed())?;
    let verbose = taskpoll(&["-v", "wait", "--timeout", "20s", &task.to_string()], &env).await;
    assert_eq!(verbose.status.code(), Some(0), "{}", stderr(&verbose));
    let text = stderr(&verbose);
    let polls: Vec<&str> = text.lines().filter(|l| l.contains("DEBUG") && l.contains(" poll ")).collect();
    assert_eq!(polls.len(), 2, "{text}");
    let span = format!("taskpoll.wait{{provider=\"factpulse\" task_id=\"{}\"", task.id());
    assert!(polls.iter().all(|l| l.contains(&span)), "{text}");
    assert!(polls[0].contains("attempt=1") && polls[0].contains("phase=\"queued\""), "{}", polls[0]);
    assert!(text.contains("outcome=\"succeeded\" polls=2"), "{text}");

    // -vv and RUST_LOG=trace (everything: reqwest's and hyper's own lines too), as JSON.
    let mut traced = env.clone();
    traced.push(("RUST_LOG".into(), "trace".into()));
    let args = ["-vv", "--log-format", "json", "wait", "--timeout", "20s", &batch.to_string(), &other.to_string()];
    let out = taskpoll(&args, &traced).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stderr(&out);
    let logs: Vec<Value> = text
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON log line: {l:?}: {e}")))
        .collect();
    assert!(logs.len() > 10, "{text}");
    assert!(logs.iter().all(|l| l["level"].is_string() && l["target"].is_string()), "{text}");
    let polls = logs.iter().filter(|l| l["fields"]["message"] == "poll").count();
    assert!(polls >= 3, "two waits, one read twice: {text}");
    assert!(logs.iter().any(|l| l["target"].as_str().is_some_and(|t| !t.starts_with("taskpoll"))), "{text}");
    assert!(!text.chars().any(raw_control), "{text}");

    // No credential anywhere in what the three runs printed.
    for secret in secrets(&sim) {
        for output in [&quiet, &verbose, &out] {
            let printed = format!("{}{}", stderr(output), String::from_utf8_lossy(&output.stdout));
            assert!(!printed.contains(&secret), "{secret} printed");
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_rust_log_is_a_usage_error() -> TestResult {
    let env = vec![("RUST_LOG".to_string(), "taskpoll=loud".to_string())];
    let out = taskpoll(&["get", "deepomatic:1"], &env).await;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("RUST_LOG"), "{}", stderr(&out));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_listen_serves_prometheus_while_waiting() -> TestResult {
    let sim = Simulator::start().await?;
    let env = sim_env(&sim);
    let quick = sim.add_task("deepomatic", Lifecycle::new().then_succeed())?;
    let slow = sim.add_task("deepomatic", Lifecycle::new().queued_for(Duration::from_secs(4)).then_succeed())?;

    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_taskpoll"))
        .args(["--metrics-listen", "127.0.0.1:0", "wait", "--timeout", "30s", &quick.to_string(), &slow.to_string()])
        .env_clear()
        .envs(env.iter().cloned())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let mut err_lines = BufReader::new(child.stderr.take().ok_or("stderr")?).lines();
    let url = loop {
        let line = err_lines.next_line().await?.ok_or("stderr closed before the metrics line")?;
        if let Some(at) = line.strip_prefix("taskpoll: metrics for Prometheus at ") {
            break at.to_string();
        }
    };
    // The quick task's line comes first; the slow one is still being waited on.
    let mut out_lines = BufReader::new(child.stdout.take().ok_or("stdout")?).lines();
    let first: Value = serde_json::from_str(&out_lines.next_line().await?.ok_or("no line")?)?;
    assert_eq!(first["id"].as_str(), Some(quick.id()), "{first}");

    let scrape = reqwest::Client::new().get(&url).send().await?;
    assert_eq!(scrape.status(), 200);
    let text = scrape.text().await?;
    let value = |series: &str| -> Option<f64> {
        text.lines().find(|l| l.starts_with(series)).and_then(|l| l.rsplit(' ').next()).and_then(|v| v.parse().ok())
    };
    assert_eq!(value("taskpoll_waits_active{provider=\"deepomatic\"}"), Some(1.0), "{text}");
    assert_eq!(
        value("taskpoll_wait_duration_seconds_count{provider=\"deepomatic\",outcome=\"succeeded\"}"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(value("taskpoll_wait_polls_sum{provider=\"deepomatic\",outcome=\"succeeded\"}"), Some(1.0), "{text}");
    // Each read with OpenTelemetry's attribute names.
    let reads = text
        .lines()
        .filter(|l| l.starts_with("http_client_request_duration_seconds_count{"))
        .filter(|l| l.contains("http_request_method=\"GET\"") && l.contains("http_response_status_code=\"200\""))
        .filter(|l| l.contains("server_address=\"127.0.0.1\"") && l.contains("url_template=\"/tasks/"))
        .count();
    assert!(reads >= 1, "{text}");
    // Whether the first read was one batch of both tasks depends on whether both adds reached the
    // scheduler before it sent: a batch read (`/tasks/`) is counted in the batch-size histogram.
    let batch_reads = text
        .lines()
        .filter(|l| {
            l.starts_with("http_client_request_duration_seconds_count{") && l.contains("url_template=\"/tasks/\"")
        })
        .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
        .sum::<f64>();
    let batches = value("taskpoll_batch_size_count{provider=\"deepomatic\"}").unwrap_or(0.0);
    assert_eq!(batches, batch_reads, "{text}");
    assert!(!text.contains(slow.id()) && !text.contains(quick.id()), "a task id as a label: {text}");

    let status = tokio::time::timeout(Duration::from_secs(30), child.wait()).await??;
    assert_eq!(status.code(), Some(0));
    Ok(())
}
