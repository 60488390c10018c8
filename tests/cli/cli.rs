//! The `taskpoll` binary end to end against the simulator: output lines, exit
//! codes 0–4, deadlines, bad flags, missing credentials and hostile ids.
#![cfg(feature = "cli")]

use std::process::Output;

use serde_json::Value;
use taskpoll::TaskRef;
use taskpoll::simulator::{Fault, Lifecycle, Simulator};

use crate::support::TestResult;
use crate::support::cli::{lines, raw_control, sim_env, stderr, taskpoll};

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
    // Two ids went in one batch read; one id alone goes to the single-task
    // read the official client sends (`GET /tasks/{id}/`), not a batch of one.
    let reads: Vec<(Option<&str>, String)> =
        sim.requests().iter().map(|r| (r.operation, r.relative_path.clone())).collect();
    let single = format!("/tasks/{}/", b.id());
    assert_eq!(reads, [(Some("list_tasks"), "/tasks/".to_string()), (Some("get_task"), single)], "{reads:?}");
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
    // Lines come as tasks finish: found by id.
    let line = lines.iter().find(|l| l["id"].as_str() == Some(failed.id())).ok_or("no line")?;
    assert_eq!(lines.len(), 2);
    // Each line counts its task's polls, whether it succeeded or failed: `failed`
    // was queued once then failed; `ok` had already succeeded in the first wait.
    assert_eq!(line["polls"].as_u64(), Some(u64::from(sim.reads(&failed))), "{line}");
    assert_eq!(line["polls"].as_u64(), Some(2), "{line}");
    let ok_line = lines.iter().find(|l| l["id"].as_str() == Some(ok.id())).ok_or("no line")?;
    assert_eq!(ok_line["polls"].as_u64(), Some(1), "{ok_line}");
    assert_eq!(line["phase"], "failed");
    assert_eq!(line["http_status"], 500);
    assert!(line["error"].as_str().is_some_and(|e| e.contains("Internal Error")), "{line}");

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

// ---- issue 9: hostile server text, closed pipes, exit codes, honest messages ----

/// Server text that would clear the screen, forge a line and reverse what follows.
const HOSTILE: &str = "\u{1b}[2J\u{1b}[1;1H\r\ntaskpoll: deepomatic:1 succeeded \u{202e}deliaf\u{7f}\u{9b}31m";

fn assert_escaped(out: &Output, lines_on_stderr: usize) {
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), stderr(out));
    assert!(!stdout.chars().any(raw_control), "raw control character on stdout: {stdout:?}");
    assert!(!stderr.chars().any(raw_control), "raw control character on stderr: {stderr:?}");
    // No forged line: every stderr line is one the CLI wrote.
    assert_eq!(stderr.lines().count(), lines_on_stderr, "{stderr}");
    assert!(!stderr.lines().any(|l| l.starts_with("taskpoll: deepomatic:1 succeeded")), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_text_is_escaped_on_stderr_and_stdout() -> TestResult {
    let sim = Simulator::start().await?;
    let env = sim_env(&sim);
    // A failure message: the stderr error line, and the JSON line.
    let failed = sim.add_task("qolaba", Lifecycle::new().then_fail(HOSTILE))?;
    let out = taskpoll(&["wait", "--timeout", "10s", &failed.to_string()], &env).await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_escaped(&out, 2);
    assert!(lines(&out)[0]["error"].as_str().is_some_and(|e| e.contains(HOSTILE)), "JSON keeps the text exactly");

    // A raw status: progress lines, the unknown-status error, JSON lines of `watch`.
    let unknown = sim.add_task("deepomatic", Lifecycle::new().status_for_polls(HOSTILE, 5).then_succeed())?;
    let out = taskpoll(&["wait", "--timeout", "10s", "--unknown", "fail", &unknown.to_string()], &env).await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_escaped(&out, 2);
    assert_eq!(lines(&out)[0]["status"], HOSTILE);
    let out = taskpoll(&["watch", "--timeout", "10s", "--unknown", "fail", &unknown.to_string()], &env).await;
    assert_escaped(&out, 2);
    assert_eq!(lines(&out)[0]["status"], HOSTILE);

    // An API error message (the message the server puts in a 404 body).
    let server = wiremock::MockServer::start().await;
    wiremock::Mock::given(wiremock::matchers::any())
        .respond_with(wiremock::ResponseTemplate::new(404).set_body_json(serde_json::json!({ "error": HOSTILE })))
        .mount(&server)
        .await;
    let out = taskpoll(&["get", "-p", "deepomatic", "--base-url", &server.uri(), "--api-key", "k", "1"], &[]).await;
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert_escaped(&out, 1);
    assert!(stderr(&out).contains("\\u{1b}[2J"), "escaped, not dropped: {}", stderr(&out));
    Ok(())
}

/// Runs the binary with stdout and stderr on pipes whose read ends are
/// already closed, so every write fails with EPIPE.
fn run_with_closed_pipes(args: &[&str], env: &[(String, String)]) -> std::io::Result<std::process::ExitStatus> {
    let (out_reader, out_writer) = std::io::pipe()?;
    let (err_reader, err_writer) = std::io::pipe()?;
    drop((out_reader, err_reader));
    std::process::Command::new(env!("CARGO_BIN_EXE_taskpoll"))
        .args(args)
        .env_clear()
        .envs(env.iter().cloned())
        .stdout(out_writer)
        .stderr(err_writer)
        .status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_pipes_do_not_panic_and_keep_the_exit_codes() -> TestResult {
    let sim = Simulator::start().await?;
    let env = sim_env(&sim);
    let ok = sim.add_task("deepomatic", Lifecycle::new().queued_for_polls(1).then_succeed())?;
    let failed = sim.add_task("qolaba", Lifecycle::new().queued_for_polls(1).then_fail("no"))?;
    let stuck = sim.add_task("deepomatic", Lifecycle::new().pending_forever())?;
    let limited = sim.add_task("deepomatic", Lifecycle::new().then_succeed())?;
    sim.inject(&limited, Fault::RateLimited { retry_after: None }, 1)?;
    let (ok, failed, stuck, limited) = (ok.to_string(), failed.to_string(), stuck.to_string(), limited.to_string());
    let cases: Vec<(Vec<&str>, i32)> = vec![
        (vec!["wait", "--timeout", "10s", "--policy", "deepomatic_client", &ok, &limited], 0),
        (vec!["wait", "--timeout", "10s", &failed], 1),
        (vec!["wait", "--timeout", "1s", &stuck], 2),
        (vec!["watch", "--timeout", "10s", &ok], 0),
        (vec!["get", &failed, "deepomatic:no-such-task"], 4),
        (vec!["get", "--provider", "deepomatic", "--input", "x=1", "1"], 3),
        (vec!["frobnicate"], 3),
        (vec!["--help"], 0),
        (vec!["demo"], 0),
    ];
    for (args, code) in cases {
        let env = env.clone();
        let args_owned: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let status = tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args_owned.iter().map(String::as_str).collect();
            run_with_closed_pipes(&args, &env)
        })
        .await??;
        assert_eq!(status.code(), Some(code), "{args:?} (101 is a panic)");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configuration_errors_found_before_sending_exit_3() -> TestResult {
    let sim = Simulator::start().await?;
    let task = sim.add_task("deepomatic", Lifecycle::new().then_succeed())?;
    let url = ("DEEPOMATIC_API_URL".to_string(), sim.base_url("deepomatic"));
    let app_id = sim.credentials().into_iter().find(|v| v.name == "DEEPOMATIC_APP_ID").ok_or("app id")?;
    let full = task.to_string();
    type Case<'a> = (Vec<&'a str>, Vec<(String, String)>, &'a str);
    let cases: Vec<Case> = vec![
        (vec!["get", &full], vec![url.clone(), (app_id.name.clone(), app_id.value.clone())], "DEEPOMATIC_APP_ID alone"),
        (
            vec!["wait", "--timeout", "5s", &full],
            vec![url.clone(), (app_id.name, app_id.value)],
            "set DEEPOMATIC_API_KEY",
        ),
        (
            vec!["get", &full],
            vec![url.clone(), ("DEEPOMATIC_API_KEY".into(), "abc\ndef".into())],
            "DEEPOMATIC_API_KEY contains",
        ),
        (vec!["get", "-p", "deepomatic", "--api-key", "abc\r\ndef", task.id()], vec![url.clone()], "from a flag"),
        (
            vec!["get", "-p", "factpulse", "--token", "t\u{1b}k", "1"],
            vec![url.clone()],
            "FACTPULSE_TOKEN (from a flag)",
        ),
    ];
    for (args, env, needle) in cases {
        let out = taskpoll(&args, &env).await;
        assert_eq!(out.status.code(), Some(3), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(needle), "{args:?}: {}", stderr(&out));
        assert!(
            !stderr(&out).contains("abc") && !stderr(&out).contains("t\\u{1b}k"),
            "no secret echoed: {}",
            stderr(&out)
        );
    }
    assert!(sim.requests().is_empty(), "nothing was sent: {:?}", sim.requests());

    // The hint names only variables that suffice on their own.
    let out = taskpoll(&["get", "-p", "deepomatic", "1"], &[]).await;
    assert!(stderr(&out).contains("set DEEPOMATIC_API_KEY in the environment"), "{}", stderr(&out));
    assert!(!stderr(&out).contains("DEEPOMATIC_APP_ID"), "APP_ID alone does not suffice: {}", stderr(&out));
    let out = taskpoll(&["get", "-p", "cloudinary", "1"], &[]).await;
    assert!(
        stderr(&out).contains(
            "set CLOUDINARY_URL, or CLOUDINARY_OAUTH_TOKEN + CLOUDINARY_CLOUD_NAME, or CLOUDINARY_API_KEY + CLOUDINARY_API_SECRET + CLOUDINARY_CLOUD_NAME"
        ),
        "{}",
        stderr(&out)
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retrying_is_said_only_when_a_retry_follows() -> TestResult {
    let sim = Simulator::start().await?;
    let env = sim_env(&sim);
    for status in [401, 403, 404] {
        let task = sim.add_task("deepomatic", Lifecycle::new().then_succeed())?;
        sim.inject(&task, Fault::Status(status), 1)?;
        let out = taskpoll(&["wait", "--timeout", "10s", &task.to_string()], &env).await;
        assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
        assert!(
            stderr(&out).contains(&format!("poll 1 at 0.0s failed: deepomatic get_task: HTTP {status}")),
            "{}",
            stderr(&out)
        );
        assert!(!stderr(&out).contains("retrying"), "{status}: {}", stderr(&out));
    }
    let task = sim.add_task("deepomatic", Lifecycle::new().then_succeed())?;
    sim.inject(&task, Fault::Unavailable503, 1)?;
    let out = taskpoll(&["wait", "--timeout", "10s", "--policy", "deepomatic_client", &task.to_string()], &env).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("failed, retrying: deepomatic get_task: HTTP 503"), "{}", stderr(&out));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deadline_line_names_the_last_cause_and_the_wait_end() -> TestResult {
    let sim = Simulator::start().await?;
    let env = sim_env(&sim);
    // At two providers: a batch read would carry the 503 of one task to both.
    let failing = sim.add_task("qolaba", Lifecycle::new().pending_forever())?;
    sim.inject(&failing, Fault::Unavailable503, 1000)?;
    let queued = sim.add_task("deepomatic", Lifecycle::new().pending_forever())?;
    let args = ["wait", "--timeout", "1500ms", "--policy", "deepomatic_client"];
    let out = taskpoll(&[&args[..], &[failing.to_string().as_str(), queued.to_string().as_str()]].concat(), &env).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let lines = lines(&out);
    let line_of = |task: &TaskRef| lines.iter().find(|l| l["id"].as_str() == Some(task.id())).ok_or("no line");
    let (failed_line, queued_line) = (line_of(&failing)?, line_of(&queued)?);
    assert_eq!((failed_line["outcome"].as_str(), failed_line["http_status"].as_u64()), (Some("deadline"), Some(503)));
    assert!(failed_line["last_error"].as_str().is_some_and(|e| e.contains("HTTP 503")), "{failed_line}");
    assert_eq!((queued_line["http_status"].as_u64(), queued_line["phase"].as_str()), (Some(200), Some("queued")));
    assert!(queued_line["last_error"].is_null(), "{queued_line}");
    for line in &lines {
        // The wait's end, not the end of its last poll; and the message on the same line agrees.
        let elapsed_ms = line["elapsed_ms"].as_u64().ok_or("elapsed_ms")?;
        assert!(elapsed_ms >= 1500, "{line}");
        let error = line["error"].as_str().ok_or("error")?;
        assert!(error.contains(&format!("({:.1}s,", elapsed_ms as f64 / 1000.0)), "{line}");
        assert!(error.contains("run the same `taskpoll wait` again"), "{line}");
    }
    let err = stderr(&out);
    assert!(err.contains("last poll failed: qolaba ") && err.contains(": HTTP 503"), "{err}");
    assert!(err.contains("last seen queued (pending), HTTP 200"), "{err}");
    assert!(!err.contains("re-attach") && !err.contains("wait state"), "advice the CLI cannot act on: {err}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_task_ref_with_provider_is_the_task_of_that_provider() -> TestResult {
    let sim = Simulator::start().await?;
    let env = sim_env(&sim);
    let task = sim.add_task("deepomatic", Lifecycle::new().then_succeed())?;
    let out = taskpoll(&["get", "--provider", "deepomatic", &task.to_string()], &env).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(lines(&out)[0]["id"].as_str(), Some(task.id()));
    assert_eq!(sim.requests_for(&task).len(), 1);
    let out = taskpoll(&["get", "--provider", "deepomatic", "qolaba:1"], &env).await;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("a qolaba task, but --provider is deepomatic"), "{}", stderr(&out));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durations_inputs_and_base_urls_are_checked_by_flag() -> TestResult {
    let sim = Simulator::start().await?;
    let env = sim_env(&sim);
    let task = sim.add_task("deepomatic", Lifecycle::new().then_succeed())?;
    let out = taskpoll(&["wait", "--timeout", "1m30s", "--request-timeout", "1.5s", &task.to_string()], &env).await;
    assert_eq!(out.status.code(), Some(0), "compound durations: {}", stderr(&out));
    sim.clear_requests();

    let cases: Vec<(Vec<&str>, &[&str])> = vec![
        (vec!["wait", "--timeout", "0s"], &["--timeout", "rounds to zero"]),
        (vec!["wait", "--timeout", "0.4ms"], &["--timeout", "rounds to zero"]),
        (vec!["wait", "--timeout", "0"], &["--timeout", "rounds to zero"]),
        (vec!["wait", "--timeout", "99999999999999999999s"], &["--timeout", "too large"]),
        (vec!["wait", "--timeout", "1e300"], &["--timeout", "too large"]),
        (vec!["wait", "--timeout", "20y"], &["--timeout", "too large"]),
        (vec!["get", "--request-timeout", "0s"], &["--request-timeout", "rounds to zero"]),
        (vec!["wait", "--pending-budget", "0ms"], &["--pending-budget", "rounds to zero"]),
        (vec!["wait", "--unknown", "0s"], &["--unknown", "rounds to zero"]),
        (vec!["get", "--input", "refID=a", "--input", "refID=b", "qolaba:1"], &["refID", "more than once"]),
        (vec!["get", "--input", "refID=b", "qolaba:1?refID=a"], &["refID", "more than once"]),
        (vec!["get", "--input", "refID=", "qolaba:1"], &["refID", "no value"]),
        (vec!["get", "-p", "deepomatic", "--base-url", ""], &["--base-url is empty"]),
        (vec!["get", "-p", "deepomatic", "--base-url", " "], &["--base-url is empty"]),
        (vec!["wait", "--rate", "0"], &["--rate", "above 0"]),
        (vec!["wait", "--rate", "fast"], &["--rate", "not a number"]),
        (vec!["wait", "--rate", "10:0"], &["--rate", "burst `0`"]),
        (vec!["wait", "--max-in-flight", "0"], &["--max-in-flight"]),
    ];
    for (args, needles) in cases {
        let with_id = if args.iter().any(|a| a.starts_with("qolaba:")) { &[][..] } else { &["deepomatic:1"][..] };
        let out = taskpoll(&[&args[..], with_id].concat(), &env).await;
        assert_eq!(out.status.code(), Some(3), "{args:?}: {}", stderr(&out));
        for needle in needles {
            assert!(stderr(&out).contains(needle), "{args:?}: {}", stderr(&out));
        }
        assert!(
            !stderr(&out).contains("must be positive") && !stderr(&out).contains("request_timeout"),
            "{}",
            stderr(&out)
        );
    }
    assert!(sim.requests().is_empty(), "nothing was sent: {:?}", sim.requests());
    Ok(())
}

// ---- issue 10: many ids, lines as tasks finish, Ctrl-C ----

/// Runs the binary with `input` on its standard input.
async fn taskpoll_with_stdin(args: &[&str], env: &[(String, String)], input: &str) -> std::io::Result<Output> {
    use tokio::io::AsyncWriteExt as _;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_taskpoll"))
        .args(args)
        .env_clear()
        .envs(env.iter().cloned())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let mut stdin = child.stdin.take().ok_or(std::io::ErrorKind::BrokenPipe)?;
    // Written while the output is read, so neither side waits on a full pipe.
    let write = async move {
        let written = stdin.write_all(input.as_bytes()).await;
        drop(stdin);
        written
    };
    let (written, output) = tokio::join!(write, child.wait_with_output());
    written?;
    output
}

/// A running `taskpoll` whose stdout and stderr are read line by line.
struct Running {
    child: tokio::process::Child,
    stdout: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
    stderr: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStderr>>,
}

impl Running {
    fn spawn(args: &[&str], env: &[(String, String)]) -> std::io::Result<Self> {
        use tokio::io::AsyncBufReadExt as _;
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_taskpoll"))
            .args(args)
            .env_clear()
            .envs(env.iter().cloned())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let stdout = child.stdout.take().ok_or(std::io::ErrorKind::BrokenPipe)?;
        let stderr = child.stderr.take().ok_or(std::io::ErrorKind::BrokenPipe)?;
        Ok(Self {
            child,
            stdout: tokio::io::BufReader::new(stdout).lines(),
            stderr: tokio::io::BufReader::new(stderr).lines(),
        })
    }

    /// The next stdout line as JSON (a generous guard against a hang, not a timing assertion).
    async fn next_line(&mut self) -> Result<Value, Box<dyn std::error::Error>> {
        let line = tokio::time::timeout(std::time::Duration::from_secs(60), self.stdout.next_line()).await??;
        Ok(serde_json::from_str(&line.ok_or("stdout ended")?)?)
    }

    async fn next_err_line(&mut self) -> Result<String, Box<dyn std::error::Error>> {
        let line = tokio::time::timeout(std::time::Duration::from_secs(60), self.stderr.next_line()).await??;
        Ok(line.ok_or("stderr ended")?)
    }

    fn interrupt(&self) -> std::io::Result<()> {
        let pid = self.child.id().ok_or(std::io::ErrorKind::NotFound)?;
        let status = std::process::Command::new("kill").args(["-INT", &pid.to_string()]).status()?;
        if status.success() { Ok(()) } else { Err(std::io::Error::other("kill -INT failed")) }
    }

    /// Every remaining stdout line, then the exit code.
    async fn finish(mut self) -> Result<(Vec<Value>, Option<i32>), Box<dyn std::error::Error>> {
        let mut lines = Vec::new();
        while let Some(line) =
            tokio::time::timeout(std::time::Duration::from_secs(60), self.stdout.next_line()).await??
        {
            lines.push(serde_json::from_str(&line)?);
        }
        while tokio::time::timeout(std::time::Duration::from_secs(60), self.stderr.next_line()).await??.is_some() {}
        let status = tokio::time::timeout(std::time::Duration::from_secs(60), self.child.wait()).await??;
        Ok((lines, status.code()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_come_from_standard_input_or_a_file() -> TestResult {
    let sim = Simulator::start().await?;
    let env = sim_env(&sim);
    let a = sim.add_task("deepomatic", Lifecycle::new().then_succeed())?;
    let b = sim.add_task("factpulse", Lifecycle::new().queued_for_polls(1).then_succeed())?;
    let input = format!("# my tasks\n\n{a}\r\n   {b}  \n# done\n");

    let out = taskpoll_with_stdin(&["get", "-"], &env, &input).await?;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let ids: Vec<Value> = lines(&out).iter().map(|l| l["id"].clone()).collect();
    assert_eq!(ids, [a.id(), b.id()]);

    let dir = std::env::temp_dir().join(format!("taskpoll-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let file = dir.join("ids.txt");
    std::fs::write(&file, &input)?;
    let out = taskpoll(&["wait", "--timeout", "30s", "--from", file.to_str().ok_or("path")?], &env).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let mut ids: Vec<String> = lines(&out).iter().map(|l| l["id"].as_str().unwrap_or("?").to_string()).collect();
    ids.sort();
    let mut expected = vec![a.id().to_string(), b.id().to_string()];
    expected.sort();
    assert_eq!(ids, expected);

    // Plain ids with --provider.
    let out = taskpoll_with_stdin(&["get", "--provider", "deepomatic", "-"], &env, &format!("{}\n", a.id())).await?;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(lines(&out)[0]["id"].as_str(), Some(a.id()));

    // A bad line is a usage error naming its line; nothing is sent.
    sim.clear_requests();
    std::fs::write(&file, format!("{a}\n# fine\nnot-a-ref\n{b}\n"))?;
    let out = taskpoll(&["wait", "--from", file.to_str().ok_or("path")?], &env).await;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("line 3") && stderr(&out).contains("not-a-ref"), "{}", stderr(&out));
    let out = taskpoll_with_stdin(&["get", "-"], &env, &format!("{a}\n{}..\n", "deepomatic:")).await?;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("standard input, line 2"), "{}", stderr(&out));
    let out = taskpoll_with_stdin(&["get", "-"], &env, "# nothing\n\n").await?;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("names no task"), "{}", stderr(&out));
    let out = taskpoll(&["get", "-", &a.to_string()], &env).await;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("must be the only ID"), "{}", stderr(&out));
    let out = taskpoll(&["get", "--from", dir.join("missing.txt").to_str().ok_or("path")?], &env).await;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("--from"), "{}", stderr(&out));
    assert!(sim.requests().is_empty(), "nothing was sent: {:?}", sim.requests());
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_reads_many_ids_of_a_batch_provider_in_batches_in_input_order() -> TestResult {
    let sim = Simulator::start().await?;
    let env = sim_env(&sim);
    let mut input = String::new();
    let mut expected = Vec::new();
    for i in 0..250 {
        let lifecycle = if i % 2 == 0 { Lifecycle::new().then_succeed() } else { Lifecycle::new().pending_forever() };
        let task = sim.add_task("deepomatic", lifecycle)?;
        input.push_str(&format!("{}\n", task.id()));
        expected.push(task.id().to_string());
    }
    // Another provider's task in the middle, read on its own.
    let other = sim.add_task("factpulse", Lifecycle::new().then_succeed())?;
    input = input.replacen('\n', &format!("\n{other}\n"), 1);
    expected.insert(1, other.id().to_string());
    let input = input.lines().map(|l| if l.contains(':') { l.to_string() } else { format!("deepomatic:{l}") });
    let input: String = input.map(|l| l + "\n").collect();

    let out = taskpoll_with_stdin(&["get", "-"], &env, &input).await?;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let lines = lines(&out);
    let ids: Vec<&str> = lines.iter().map(|l| l["id"].as_str().unwrap_or("?")).collect();
    assert_eq!(ids, expected, "one line per id, in input order");
    assert_eq!(lines[0]["phase"], "succeeded");
    assert_eq!(lines[2]["phase"], "queued");
    let deepomatic: Vec<_> = sim.requests().into_iter().filter(|r| r.provider == Some("deepomatic")).collect();
    assert_eq!(deepomatic.len(), 250_usize.div_ceil(100), "⌈n/100⌉ batch reads: {deepomatic:?}");
    assert!(deepomatic.iter().all(|r| r.task_ids.len() <= 100));

    // A batch read refused as a whole: a line per task, the error said once on stderr.
    let base = sim.base_url("deepomatic");
    let args = ["get", "-p", "deepomatic", "--base-url", &base, "--api-key", "wrong", &expected[0], &expected[2], "7"];
    let out = taskpoll(&args, &[]).await;
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    let refused = self::lines(&out);
    assert!(refused.iter().all(|l| l["outcome"] == "auth_error"), "{refused:?}");
    assert_eq!(refused.len(), 3);
    assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));
    assert!(stderr(&out).contains("deepomatic (3 tasks)") && stderr(&out).contains("401"), "{}", stderr(&out));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_prints_each_line_as_its_task_finishes() -> TestResult {
    let sim = Simulator::start().await?;
    let env = sim_env(&sim);
    let slow = sim.add_task("deepomatic", Lifecycle::new().pending_forever())?;
    let fast = sim.add_task("deepomatic", Lifecycle::new().queued_for_polls(1).then_succeed())?;
    let args = ["wait", "--timeout", "120s", "--policy", "deepomatic_client"];
    let mut running =
        Running::spawn(&[&args[..], &[slow.to_string().as_str(), fast.to_string().as_str()]].concat(), &env)?;
    let first = running.next_line().await?;
    assert_eq!((first["id"].as_str(), first["outcome"].as_str()), (Some(fast.id()), Some("succeeded")));
    // The slow task has not finished: the process is still waiting on it.
    assert!(running.child.try_wait()?.is_none(), "the fast line came only at the end");
    // Now the slow task ends (it is gone: 404 on its next read).
    assert!(sim.remove_task(&slow));
    let (rest, code) = running.finish().await?;
    assert_eq!(rest.len(), 1, "{rest:?}");
    assert_eq!((rest[0]["id"].as_str(), rest[0]["outcome"].as_str()), (Some(slow.id()), Some("error")));
    assert_eq!(rest[0]["http_status"], 404);
    assert_eq!(code, Some(4));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_prints_a_line_per_pending_task_and_exits_130() -> TestResult {
    let sim = Simulator::start().await?;
    let env = sim_env(&sim);
    let fast = sim.add_task("factpulse", Lifecycle::new().then_succeed())?;
    let mut pending = Vec::new();
    for provider in ["deepomatic", "deepomatic", "qolaba", "cloudinary"] {
        pending.push(sim.add_task(provider, Lifecycle::new().pending_forever())?);
    }
    let mut args: Vec<String> = ["wait", "--timeout", "120s", "--policy", "deepomatic_client"].map(String::from).into();
    args.push(fast.to_string());
    args.extend(pending.iter().map(ToString::to_string));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut running = Running::spawn(&args, &env)?;
    assert_eq!(running.next_line().await?["id"].as_str(), Some(fast.id()));
    // Every pending task has been read at least once before the interrupt.
    while pending.iter().any(|t| sim.reads(t) == 0) {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    running.interrupt()?;
    let (lines, code) = running.finish().await?;
    assert_eq!(code, Some(130), "{lines:?}");
    assert_eq!(lines.len(), pending.len(), "{lines:?}");
    for task in &pending {
        let line = lines.iter().find(|l| l["id"].as_str() == Some(task.id())).ok_or("no line")?;
        assert_eq!(line["outcome"], "interrupted", "{line}");
        assert_eq!(line["phase"], "queued", "{line}");
        assert!(line["status"].is_string(), "{line}");
        assert!(line["polls"].as_u64().is_some_and(|n| n >= 1), "{line}");
        assert!(line["elapsed_ms"].is_u64(), "{line}");
        assert!(line["error"].as_str().is_some_and(|e| e.contains("interrupted after")), "{line}");
    }

    // One task (its own watch): the same line and code.
    let stuck = &pending[0];
    let mut running = Running::spawn(&["wait", "--timeout", "120s", &stuck.to_string()], &env)?;
    // Its first poll is reported on stderr (not a terminal: a line per phase change).
    let progress = running.next_err_line().await?;
    assert!(progress.contains("queued"), "{progress}");
    running.interrupt()?;
    let (lines, code) = running.finish().await?;
    assert_eq!(code, Some(130), "{lines:?}");
    assert_eq!((lines.len(), lines[0]["outcome"].as_str()), (1, Some("interrupted")));
    assert!(lines[0]["polls"].as_u64().is_some_and(|n| n >= 1), "{}", lines[0]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_ids_are_each_reported_before_the_deadline() -> TestResult {
    let sim = Simulator::start().await?;
    let env = sim_env(&sim);
    let mut input = String::new();
    let mut expected = std::collections::HashMap::new();
    for i in 0..10_000 {
        let (lifecycle, phase) = match i % 10 {
            0 => (Lifecycle::new().then_fail("bad image"), "failed"),
            n if n % 2 == 0 => (Lifecycle::new().queued_for_polls(1).then_succeed(), "succeeded"),
            _ => (Lifecycle::new().then_succeed(), "succeeded"),
        };
        let task = sim.add_task("deepomatic", lifecycle)?;
        input.push_str(&format!("{task}\n"));
        expected.insert(task.id().to_string(), phase);
    }
    let args = ["wait", "--timeout", "60s", "--rate", "200:50", "--max-in-flight", "8", "-"];
    let out = taskpoll_with_stdin(&args, &env, &input).await?;
    assert_eq!(out.status.code(), Some(1), "a task failed: {}", stderr(&out));
    let lines = lines(&out);
    assert_eq!(lines.len(), 10_000);
    let mut seen = std::collections::HashMap::new();
    for line in &lines {
        let id = line["id"].as_str().ok_or("id")?.to_string();
        assert_eq!(line["outcome"], line["phase"], "{line}");
        assert!(seen.insert(id, line["phase"].as_str().unwrap_or("?").to_string()).is_none(), "twice: {line}");
    }
    let expected: std::collections::HashMap<String, String> =
        expected.into_iter().map(|(id, phase)| (id, phase.to_string())).collect();
    assert_eq!(seen, expected);
    // Batch reads: two rounds of ⌈10,000 / 100⌉, with room for rounds split by timing.
    let requests = sim.requests().len();
    assert!(requests <= 4 * 100, "{requests} requests for 10,000 tasks");
    // Not a terminal: nothing on stderr per success, one line per failure.
    assert_eq!(stderr(&out).lines().count(), 1_000, "{}", stderr(&out).lines().take(3).collect::<Vec<_>>().join("\n"));
    Ok(())
}

/// The saved states of a `--save-state` file, one per line.
fn saved_states(path: &std::path::Path) -> Result<Vec<Value>, Box<dyn std::error::Error>> {
    let text = std::fs::read_to_string(path)?;
    Ok(text.lines().map(serde_json::from_str).collect::<Result<_, _>>()?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saved_wait_resumes_with_a_fresh_deadline_and_the_same_output() -> TestResult {
    let sim = Simulator::start().await?;
    let env = sim_env(&sim);
    let dir = tempdir()?;
    let file = dir.join("waits.jsonl");
    let file_arg = file.to_string_lossy().into_owned();
    let done = sim.add_task("factpulse", Lifecycle::new().then_succeed())?;
    // Queued for 3 s from their first read: past the first wait's deadline, within the resumed one.
    let slow: Vec<TaskRef> = (0..2)
        .map(|_| {
            sim.add_task("deepomatic", Lifecycle::new().queued_for(std::time::Duration::from_secs(3)).then_succeed())
        })
        .collect::<Result<_, _>>()?;
    let mut args: Vec<String> =
        ["wait", "--timeout", "1500ms", "--policy", "deepomatic_client", "--save-state", &file_arg]
            .map(String::from)
            .into();
    args.push(done.to_string());
    args.extend(slow.iter().map(ToString::to_string));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = taskpoll(&args, &env).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));

    // The file holds the two unfinished waits, not the finished one.
    let states = saved_states(&file)?;
    assert_eq!(states.len(), 2, "{states:?}");
    let mut saved_polls = std::collections::HashMap::new();
    for task in &slow {
        let state = states.iter().find(|s| s["task_ref"]["id"].as_str() == Some(task.id())).ok_or("not saved")?;
        assert_eq!(state["policy"], "deepomatic_client", "{state}");
        let attempts = state["attempts"].as_u64().ok_or("no attempts")?;
        assert_eq!(attempts, u64::from(sim.reads(task)), "{state}");
        saved_polls.insert(task.id().to_string(), attempts);
    }

    // The saved deadline is long past by the time the resumed wait ends: the
    // resumed wait runs on its own --timeout, counting polls on from the file.
    let out = taskpoll(&["resume", "--timeout", "20s", "--save-state", &file_arg, &file_arg], &env).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let lines = lines(&out);
    assert_eq!(lines.len(), 2, "{lines:?}");
    for task in &slow {
        let line = lines.iter().find(|l| l["id"].as_str() == Some(task.id())).ok_or("no line")?;
        assert_eq!((line["outcome"].as_str(), line["phase"].as_str()), (Some("succeeded"), Some("succeeded")));
        let polls = line["polls"].as_u64().ok_or("no polls")?;
        assert!(polls > saved_polls[task.id()], "{line}");
        assert_eq!(polls, u64::from(sim.reads(task)), "{line}");
    }
    // Every wait finished: the file is now empty.
    assert!(saved_states(&file)?.is_empty());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_saves_the_pending_waits_and_resume_takes_the_credential_flags() -> TestResult {
    let sim = Simulator::start().await?;
    let env = sim_env(&sim);
    let dir = tempdir()?;
    let file = dir.join("waits.jsonl");
    let file_arg = file.to_string_lossy().into_owned();
    let stuck = sim.add_task("factpulse", Lifecycle::new().queued_for_polls(3).then_succeed())?;
    let args = ["wait", "--timeout", "120s", "--save-state", &file_arg, &stuck.to_string()];
    let mut running = Running::spawn(&args, &env)?;
    let progress = running.next_err_line().await?;
    assert!(progress.contains("queued"), "{progress}");
    running.interrupt()?;
    let (lines, code) = running.finish().await?;
    assert_eq!((code, lines.len()), (Some(130), 1), "{lines:?}");
    let states = saved_states(&file)?;
    assert_eq!(states.len(), 1, "{states:?}");
    assert_eq!(states[0]["task_ref"]["id"].as_str(), Some(stuck.id()));

    // No environment: the provider's flags, as for `wait` (the provider is the saved tasks' one).
    let token = sim.credentials().into_iter().find(|v| v.name == "FACTPULSE_TOKEN").ok_or("token")?.value;
    let base = sim.base_url("factpulse");
    let out = taskpoll(&["resume", "--timeout", "30s", "--base-url", &base, "--token", &token, &file_arg], &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(self::lines(&out)[0]["outcome"], "succeeded");
    // Without credentials: exit 3, nothing sent.
    let reads = sim.reads(&stuck);
    let out = taskpoll(&["resume", "--timeout", "30s", &file_arg], &[]).await;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert_eq!(sim.reads(&stuck), reads);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_state_file_is_refused_by_line_before_any_request() -> TestResult {
    let sim = Simulator::start().await?;
    let env = sim_env(&sim);
    let dir = tempdir()?;
    let task = sim.add_task("deepomatic", Lifecycle::new().then_succeed())?;
    let state = serde_json::json!({
        "task_ref": {"provider": "deepomatic", "id": task.id()}, "policy": "deepomatic:polite",
        "started_at_ms": 1, "deadline_at_ms": 2, "attempts": 1, "last_phase": "queued", "last_status": "pending",
        "last_poll_ms": 0, "next_delay_ms": 500, "next_poll_ms": 500, "queued_ms": 0, "unknown_count": 0, "unknown_ms": 0,
    });
    let mut tampered = state.clone();
    tampered["task_ref"]["id"] = Value::from("../admin");
    for (name, text, needle) in [
        ("not-json", format!("{state}\n\nnot json\n"), "line 3"),
        ("tampered", format!("{tampered}\n"), "line 1"),
        ("unknown-provider", format!("{}\n", state.to_string().replace("\"deepomatic\"", "\"nope\"")), "line 1"),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, text)?;
        let out = taskpoll(&["resume", "--timeout", "5s", &path.to_string_lossy()], &env).await;
        assert_eq!(out.status.code(), Some(3), "{name}: {}", stderr(&out));
        assert!(stderr(&out).contains(needle), "{name}: {}", stderr(&out));
    }
    let out = taskpoll(&["resume", "--timeout", "5s", &dir.join("absent").to_string_lossy()], &env).await;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert_eq!(sim.reads(&task), 0);

    // A good line resumes even though its saved deadline (Unix ms 2) is long gone.
    let path = dir.join("good");
    std::fs::write(&path, format!("{state}\n"))?;
    let out = taskpoll(&["resume", "--timeout", "10s", &path.to_string_lossy()], &env).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(lines(&out)[0]["polls"], 2);
    Ok(())
}

/// A fresh directory under the target's tmp dir (removed with `cargo clean`).
fn tempdir() -> std::io::Result<std::path::PathBuf> {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("cli-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_with_a_webhook_listener_says_how_each_task_ended() -> TestResult {
    use std::time::Duration;
    use taskpoll::simulator::Callback;
    let sim = Simulator::start().await?;
    let env = sim_env(&sim);
    // A free port for the CLI's receiver.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let listen = format!("127.0.0.1:{port}");
    // Cloudinary's result comes only by webhook: sent a moment after the task finishes.
    let hooked = sim.add_task_with_callback(
        "cloudinary",
        Lifecycle::new().running_for(Duration::from_millis(1500)).then_succeed(),
        Callback::to(format!("http://{listen}/cloudinary")).delay(Duration::from_millis(200)),
    )?;
    // FactPulse's webhook is lost: polling finds the end.
    let lost = sim.add_task_with_callback(
        "factpulse",
        Lifecycle::new().running_for_polls(1).then_succeed(),
        Callback::to(format!("http://{listen}/factpulse")).drop_rate(1.0),
    )?;
    let args = ["wait", "--timeout", "60s", "--webhook-listen", &listen, &hooked.to_string(), &lost.to_string()];
    let out = taskpoll(&args, &env).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains(&format!("receiving webhooks at http://{listen}/")), "{}", stderr(&out));
    let ended = lines(&out);
    let line = |id: &str| ended.iter().find(|l| l["id"].as_str() == Some(id)).cloned().ok_or("no line");
    let hooked_line = line(hooked.id())?;
    assert_eq!((hooked_line["outcome"].as_str(), hooked_line["via"].as_str()), (Some("succeeded"), Some("webhook")));
    assert_eq!(hooked_line["result"]["simulated_result"]["task_id"].as_str(), Some(hooked.id()));
    let lost_line = line(lost.id())?;
    assert_eq!((lost_line["outcome"].as_str(), lost_line["via"].as_str()), (Some("succeeded"), Some("poll")));
    // `resume` takes the same listener: a continued Cloudinary wait gets its result by webhook.
    let resumed = sim.add_task_with_callback(
        "cloudinary",
        Lifecycle::new().running_for(Duration::from_millis(1500)).then_succeed(),
        Callback::to(format!("http://{listen}/cloudinary")).delay(Duration::from_millis(200)),
    )?;
    let state = serde_json::json!({
        "task_ref": {"provider": "cloudinary", "id": resumed.id()}, "policy": "cloudinary:polite",
        "started_at_ms": 1, "deadline_at_ms": 2, "attempts": 0, "last_phase": null, "last_status": null,
        "last_poll_ms": null, "next_delay_ms": null, "next_poll_ms": null, "queued_ms": 0, "unknown_count": 0,
        "unknown_ms": 0,
    });
    let path = tempdir()?.join("states");
    std::fs::write(&path, format!("{state}\n"))?;
    let out =
        taskpoll(&["resume", "--timeout", "60s", "--webhook-listen", &listen, &path.to_string_lossy()], &env).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let line = &lines(&out)[0];
    assert_eq!((line["outcome"].as_str(), line["via"].as_str()), (Some("succeeded"), Some("webhook")), "{line}");
    assert_eq!(line["result"]["simulated_result"]["task_id"].as_str(), Some(resumed.id()));
    // Without a listener the line still says how the wait ended.
    let plain = sim.add_task("deepomatic", Lifecycle::new().then_succeed())?;
    let out = taskpoll(&["wait", "--timeout", "20s", &plain.to_string()], &env).await;
    assert_eq!(lines(&out)[0]["via"].as_str(), Some("poll"));
    Ok(())
}
