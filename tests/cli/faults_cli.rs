//! The fault matrix of issue 9 through the `taskpoll` binary: every provider,
//! `get` and `wait`, against a loopback server (the simulator, or wiremock for
//! hostile error bodies, or a closed port). Each cell checks the exit code,
//! the JSON line's `outcome`, that nothing panicked (exit 101), and that no
//! raw control character reached stdout or stderr. The counts are printed.
#![cfg(feature = "cli")]

use std::process::Output;

use serde_json::{Value, json};
use taskpoll::simulator::{Fault, Lifecycle, Simulator};
use taskpoll::spec::ProviderSpec;

use crate::support::TestResult;
use crate::support::cli::{raw_control, sim_env};

/// Clears the screen, forges a line, reverses what follows.
const HOSTILE: &str = "\u{1b}[2J\r\ntaskpoll: task succeeded \u{202e}deliaf\u{7f}\u{9b}31m\u{2066}";

#[derive(Debug, Clone, Copy)]
enum Case {
    Refused,
    Status(u16),
    Html502,
    Unavailable503,
    RateLimited,
    MalformedJson,
    UnknownStatus,
    HostileFailure,
    HostileStatus,
    HostileApiError,
}

const CASES: &[Case] = &[
    Case::Refused,
    Case::Status(401),
    Case::Status(403),
    Case::Status(404),
    Case::Status(500),
    Case::Html502,
    Case::Unavailable503,
    Case::RateLimited,
    Case::MalformedJson,
    Case::UnknownStatus,
    Case::HostileFailure,
    Case::HostileStatus,
    Case::HostileApiError,
];

/// What a cell must end with: the exit code and the JSON line's `outcome`.
struct Expect {
    code: i32,
    outcome: &'static str,
    /// Whether stderr must say "retrying" (true) or must not (false).
    retrying: Option<bool>,
}

/// (The simulator's JSON 500 is an error body at every provider; Qolaba's
/// HTTP 500 with a FAILED task is the hostile-failure case.)
fn expect(case: Case, wait: bool) -> Expect {
    let e = |code, outcome, retrying| Expect { code, outcome, retrying };
    match (case, wait) {
        (Case::Refused, false) => e(4, "error", None),
        (Case::Refused, true) => e(2, "deadline", None),
        (Case::Status(401 | 403), _) => e(4, "auth_error", Some(false)),
        (Case::Status(_), _) | (Case::HostileApiError, _) => e(4, "error", Some(false)),
        (Case::Html502 | Case::Unavailable503 | Case::RateLimited | Case::MalformedJson, false) => e(4, "error", None),
        // Transient: one bad answer, then the task; the wait retries and succeeds.
        (Case::Html502 | Case::Unavailable503 | Case::RateLimited | Case::MalformedJson, true) => {
            e(0, "succeeded", Some(true))
        }
        (Case::UnknownStatus | Case::HostileStatus, false) => e(0, "unknown", None),
        (Case::UnknownStatus | Case::HostileStatus, true) => e(1, "unknown_status", None),
        (Case::HostileFailure, false) => e(0, "failed", None),
        (Case::HostileFailure, true) => e(1, "failed", None),
    }
}

/// `{}` with `text` at a JSON pointer such as `/error/message`.
fn body_with(pointer: &str, text: &str) -> Value {
    let mut value = json!(text);
    for token in pointer.trim_start_matches('/').rsplit('/') {
        value = match token.parse::<usize>() {
            Ok(0) => json!([value]),
            _ => json!({ token: value }),
        };
    }
    value
}

struct Cell {
    provider: &'static str,
    case: Case,
    wait: bool,
    out: Output,
}

async fn run_cell(spec: &'static ProviderSpec, case: Case, wait: bool, sim: &Simulator) -> Result<Cell, String> {
    let env = sim_env(sim);
    let err = |e: taskpoll::Error| e.to_string();
    let lifecycle = match case {
        Case::UnknownStatus => Lifecycle::new().status_for_polls("MYSTERY", 1000).then_succeed(),
        Case::HostileStatus => Lifecycle::new().status_for_polls(HOSTILE, 1000).then_succeed(),
        Case::HostileFailure => Lifecycle::new().then_fail(HOSTILE),
        _ => Lifecycle::new().then_succeed(),
    };
    let task = sim.add_task(spec.name(), lifecycle).map_err(err)?;
    let fault = match case {
        Case::Status(status) => Some(Fault::Status(status)),
        Case::Html502 => Some(Fault::Html502),
        Case::Unavailable503 => Some(Fault::Unavailable503),
        Case::RateLimited => Some(Fault::RateLimited { retry_after: Some(std::time::Duration::from_secs(1)) }),
        Case::MalformedJson => Some(Fault::MalformedJson),
        _ => None,
    };
    if let Some(fault) = fault {
        sim.inject(&task, fault, 1).map_err(err)?;
    }
    let mut _server = None;
    let base_url = match case {
        Case::Refused => {
            // A port that was just free: nothing listens there.
            let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
            let addr = listener.local_addr().map_err(|e| e.to_string())?;
            drop(listener);
            Some(format!("http://{addr}"))
        }
        Case::HostileApiError => {
            let server = wiremock::MockServer::start().await;
            let pointer = spec.error_message().first().copied().unwrap_or("/error");
            wiremock::Mock::given(wiremock::matchers::any())
                .respond_with(wiremock::ResponseTemplate::new(404).set_body_json(body_with(pointer, HOSTILE)))
                .mount(&server)
                .await;
            let uri = server.uri();
            _server = Some(server);
            Some(uri)
        }
        _ => None,
    };
    let mut args: Vec<String> = if wait {
        let timeout = if matches!(case, Case::Refused) { "1s" } else { "20s" };
        ["wait", "--timeout", timeout, "--policy", "deepomatic_client", "--unknown", "fail"].map(String::from).to_vec()
    } else {
        vec!["get".into()]
    };
    match base_url {
        Some(url) => args.extend(["--provider".into(), spec.name().into(), "--base-url".into(), url, task.id().into()]),
        None => args.push(task.to_string()),
    }
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_taskpoll"))
        .args(&args)
        .env_clear()
        .envs(env)
        .output()
        .await
        .map_err(|e| e.to_string())?;
    Ok(Cell { provider: spec.name(), case, wait, out })
}

fn check(cell: &Cell) -> Result<(), String> {
    let expected = expect(cell.case, cell.wait);
    let (stdout, stderr) = (String::from_utf8_lossy(&cell.out.stdout), String::from_utf8_lossy(&cell.out.stderr));
    let what = format!("{} {:?} {}", cell.provider, cell.case, if cell.wait { "wait" } else { "get" });
    let code = cell.out.status.code();
    if code == Some(101) || stderr.contains("panicked") {
        return Err(format!("{what}: panic: {stderr}"));
    }
    if code != Some(expected.code) {
        return Err(format!("{what}: exit {code:?}, expected {}: {stderr}", expected.code));
    }
    let line: Value = serde_json::from_str(stdout.lines().next().unwrap_or("")).map_err(|e| format!("{what}: {e}"))?;
    if line["outcome"] != expected.outcome {
        return Err(format!("{what}: outcome {}, expected {}", line["outcome"], expected.outcome));
    }
    if stdout.chars().chain(stderr.chars()).any(raw_control) {
        return Err(format!("{what}: raw control character: {stdout:?} {stderr:?}"));
    }
    if let Some(retrying) = expected.retrying
        && stderr.contains("retrying") != retrying
    {
        return Err(format!("{what}: says retrying: {}, expected {retrying}: {stderr}", !retrying));
    }
    if matches!(cell.case, Case::Refused) && cell.wait && !line["last_error"].is_string() {
        return Err(format!("{what}: no last_error on the deadline line: {line}"));
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_matrix_through_the_cli() -> TestResult {
    let sim = Simulator::start().await?;
    let mut cells = Vec::new();
    for case in CASES {
        for wait in [false, true] {
            // One provider after another would take minutes of retry delays; all four at once.
            let runs = taskpoll::spec::providers().iter().map(|spec| run_cell(spec, *case, wait, &sim));
            for cell in futures_util::future::join_all(runs).await {
                cells.push(cell?);
            }
        }
    }
    let failures: Vec<String> = cells.iter().filter_map(|c| check(c).err()).collect();
    let mut by_code = std::collections::BTreeMap::new();
    for cell in &cells {
        *by_code.entry(cell.out.status.code().unwrap_or(-1)).or_insert(0) += 1;
    }
    eprintln!(
        "CLI fault matrix: {} faults x {} providers x 2 commands = {} cells, {} as expected; exit codes {by_code:?}",
        CASES.len(),
        taskpoll::spec::providers().len(),
        cells.len(),
        cells.len() - failures.len()
    );
    assert!(failures.is_empty(), "{} cell(s) wrong:\n{}", failures.len(), failures.join("\n"));
    Ok(())
}
