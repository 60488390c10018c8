//! The `taskpoll` binary end to end against the simulator: output lines, exit
//! codes 0–4, deadlines, bad flags, missing credentials and hostile ids.
#![cfg(feature = "cli")]

use std::process::Output;

use serde_json::Value;
use taskpoll::simulator::{Fault, Lifecycle, Simulator};

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// Runs the binary with a clean environment plus `env`.
async fn taskpoll(args: &[&str], env: &[(String, String)]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_taskpoll"))
        .args(args)
        .env_clear()
        .envs(env.iter().cloned())
        .output()
        .await
        .expect("the binary runs")
}

fn sim_env(sim: &Simulator) -> Vec<(String, String)> {
    sim.credentials().into_iter().map(|v| (v.name, v.value)).collect()
}

fn lines(output: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line: {l:?}: {e}")))
        .collect()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_prints_one_json_line_per_task() -> TestResult {
    let sim = Simulator::start().await?;
    let env = sim_env(&sim);
    let a = sim.add_task("deepomatic", Lifecycle::new().pending_forever())?;
    let b = sim.add_task("deepomatic", Lifecycle::new().then_succeed())?;
    let out = taskpoll(&["get", "--provider", "deepomatic", a.id(), b.id()], &env).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let lines = lines(&out);
    assert_eq!(lines.len(), 2);
    for key in ["provider", "id", "phase", "status", "http_status", "error", "result"] {
        assert!(lines[0].get(key).is_some(), "{key} missing in {}", lines[0]);
    }
    assert_eq!((lines[0]["id"].as_str(), lines[0]["phase"].as_str()), (Some(a.id()), Some("queued")));
    assert_eq!((lines[1]["phase"].as_str(), lines[1]["status"].as_str()), (Some("succeeded"), Some("success")));
    assert_eq!(lines[1]["http_status"], 200);
    // Full task references work without --provider.
    let out = taskpoll(&["get", &b.to_string()], &env).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_exit_codes_follow_the_outcomes() -> TestResult {
    let sim = Simulator::start().await?;
    let env = sim_env(&sim);
    let ok = sim.add_task("factpulse", Lifecycle::new().queued_for_polls(1).then_succeed())?;
    let failed = sim.add_task("qolaba", Lifecycle::new().queued_for_polls(1).then_fail("Internal Error"))?;
    let stuck = sim.add_task("deepomatic", Lifecycle::new().pending_forever())?;

    let out = taskpoll(&["wait", "--timeout", "20s", &ok.to_string()], &env).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let line = &lines(&out)[0];
    assert_eq!((line["phase"].as_str(), line["outcome"].as_str()), (Some("succeeded"), Some("succeeded")));

    let out = taskpoll(&["wait", "--timeout", "20s", &ok.to_string(), &failed.to_string()], &env).await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let lines = lines(&out);
    assert_eq!(lines[1]["phase"], "failed");
    assert_eq!(lines[1]["http_status"], 500);
    assert!(lines[1]["error"].as_str().is_some_and(|e| e.contains("Internal Error")), "{}", lines[1]);

    let out = taskpoll(&["wait", "--timeout", "1500ms", &stuck.to_string()], &env).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let line = &self::lines(&out)[0];
    assert_eq!((line["outcome"].as_str(), line["phase"].as_str()), (Some("deadline"), Some("queued")));
    assert!(stderr(&out).contains("deadline"), "{}", stderr(&out));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_and_transport_errors_exit_4() -> TestResult {
    let sim = Simulator::start().await?;
    let task = sim.add_task("deepomatic", Lifecycle::new().then_succeed())?;
    let base = sim.base_url("deepomatic");
    let out =
        taskpoll(&["get", "--provider", "deepomatic", "--base-url", &base, "--api-key", "wrong", task.id()], &[]).await;
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(stderr(&out).contains("401"), "{}", stderr(&out));
    assert!(!stderr(&out).contains("wrong"), "the key is not echoed: {}", stderr(&out));

    sim.inject(&task, Fault::Status(404), 1)?;
    let out = taskpoll(&["wait", "--timeout", "10s", &task.to_string()], &sim_env(&sim)).await;
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert_eq!(lines(&out)[0]["outcome"], "error");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_and_configuration_errors_exit_3_without_a_request() -> TestResult {
    let sim = Simulator::start().await?;
    let env = sim_env(&sim);
    type Case<'a> = (Vec<&'a str>, Vec<(String, String)>, &'a str);
    let cases: Vec<Case> = vec![
        (vec!["wait", "--timeout", "soon", "deepomatic:1"], env.clone(), "soon"),
        (vec!["frobnicate"], env.clone(), "frobnicate"),
        (vec!["get"], env.clone(), "ID"),
        (vec!["get", "--provider", "deepomatic", ".."], env.clone(), "dot segment"),
        (vec!["get", "--provider", "deepomatic", "a\\b"], env.clone(), "backslash"),
        (vec!["get", "deepomatic"], env.clone(), "provider:id"),
        (vec!["get", "--provider", "mars", "1"], env.clone(), "unknown provider"),
        (vec!["get", "--provider", "deepomatic", "1"], vec![], "deepomatic is not configured: set DEEPOMATIC_API_KEY"),
        (vec!["get", "--provider", "deepomatic", "--input", "refID=x", "1"], env.clone(), "refID"),
        (vec!["wait", "--policy", "nope", "deepomatic:1"], env.clone(), "nope"),
    ];
    for (args, env, needle) in cases {
        let out = taskpoll(&args, &env).await;
        assert_eq!(out.status.code(), Some(3), "{args:?}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(!err.contains("panicked") && !err.contains("RUST_BACKTRACE"), "{args:?}: {err}");
    }
    assert!(sim.requests().is_empty(), "nothing reached the simulator");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_prints_each_change() -> TestResult {
    let sim = Simulator::start().await?;
    let task = sim.add_task("cloudinary", Lifecycle::new().queued_for_polls(2).running_for_polls(2).then_succeed())?;
    let out = taskpoll(&["watch", "--timeout", "30s", &task.to_string()], &sim_env(&sim)).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let phases: Vec<String> = lines(&out).iter().map(|l| l["phase"].as_str().unwrap_or("?").to_string()).collect();
    assert_eq!(phases, ["queued", "running", "succeeded"]);
    assert!(lines(&out).iter().all(|l| l["attempt"].is_u64() && l["elapsed_ms"].is_u64()));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flags_configure_a_provider_without_the_environment() -> TestResult {
    let sim = Simulator::start().await?;
    let task = sim.add_task("factpulse", Lifecycle::new().then_succeed())?;
    let token = sim.credentials().into_iter().find(|v| v.name == "FACTPULSE_TOKEN").ok_or("token")?.value;
    let base = sim.base_url("factpulse");
    let out = taskpoll(&["get", "-p", "factpulse", "--base-url", &base, "--token", &token, task.id()], &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(lines(&out)[0]["phase"], "succeeded");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_runs_and_every_task_ends_as_scripted() -> TestResult {
    let out = taskpoll(&["demo"], &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}\n{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("Every task ended as scripted."), "{stdout}");
    for provider in ["cloudinary", "qolaba", "factpulse", "deepomatic"] {
        assert!(stdout.contains(&format!("{provider}:")), "{provider} missing: {stdout}");
    }
    Ok(())
}

/// The made-up provider of tests/specs works from the CLI with no Rust written for it.
#[cfg(feature = "fixture-provider")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_from_a_spec_alone_works_in_the_cli() -> TestResult {
    let sim = Simulator::start().await?;
    let env = sim_env(&sim);
    let task = sim.add_task("acme", Lifecycle::new().queued_for_polls(1).running_for_polls(1).then_succeed())?;
    let out = taskpoll(&["wait", "--timeout", "10s", "--policy", "acme_fast", &task.to_string()], &env).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(lines(&out)[0]["phase"], "succeeded");
    let out = taskpoll(&["get", "--provider", "acme", task.id()], &env).await;
    assert_eq!(lines(&out)[0]["status"], "DONE");
    Ok(())
}

/// `taskpoll simulate` prints exports and sample tasks that work with the other commands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulate_prints_a_working_environment() -> TestResult {
    use tokio::io::{AsyncBufReadExt as _, BufReader};
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_taskpoll"))
        .args(["simulate", "--port", "0"])
        .env_clear()
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let stdout = child.stdout.take().ok_or("stdout")?;
    let mut reader = BufReader::new(stdout).lines();
    let mut env = Vec::new();
    let mut samples = Vec::new();
    while let Some(line) = tokio::time::timeout(std::time::Duration::from_secs(30), reader.next_line()).await?? {
        if let Some((name, value)) = line.strip_prefix("export ").and_then(|kv| kv.split_once('=')) {
            env.push((name.to_string(), value.to_string()));
        } else if let Some(sample) = line.strip_prefix("#   ") {
            samples.push(sample.split_whitespace().next().ok_or("sample")?.to_string());
        } else if line.starts_with("Press Ctrl-C") {
            break;
        }
    }
    assert!(env.iter().any(|(k, _)| k == "DEEPOMATIC_API_KEY"), "{env:?}");
    assert!(samples.len() >= 12, "{samples:?}");
    // The first sample of each provider succeeds after a few polls.
    let first = &samples[0];
    let out = taskpoll(&["wait", "--timeout", "30s", "--policy", "polite", first], &env).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(lines(&out)[0]["phase"], "succeeded");
    child.kill().await?;
    Ok(())
}
