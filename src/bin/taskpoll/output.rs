//! JSON lines on stdout, and exit codes.

use std::io::Write as _;
use std::time::Duration;

use serde_json::{Value, json};
use taskpoll::{Error, Phase, Task, TaskRef};

/// The process exit codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Exit {
    /// Every task succeeded.
    Ok = 0,
    /// A task failed or was cancelled.
    TaskFailed = 1,
    /// The deadline passed first.
    Deadline = 2,
    /// Usage or configuration error.
    Usage = 3,
    /// API, auth or transport error.
    Api = 4,
}

impl Exit {
    /// The exit code for a wait or read that ended with this error.
    pub fn for_error(error: &Error) -> Self {
        if error.is_task_failure() {
            Exit::TaskFailed
        } else if error.is_deadline() || error.is_still_pending() {
            Exit::Deadline
        } else if error.is_config() {
            Exit::Usage
        } else if matches!(error, Error::UnknownStatus { .. }) {
            Exit::TaskFailed
        } else {
            Exit::Api
        }
    }

    /// For several tasks: a failure wins over an API error, which wins over the deadline.
    pub fn combine(codes: impl IntoIterator<Item = Exit>) -> Exit {
        let codes: Vec<Exit> = codes.into_iter().collect();
        for wanted in [Exit::Usage, Exit::TaskFailed, Exit::Api, Exit::Deadline] {
            if codes.contains(&wanted) {
                return wanted;
            }
        }
        Exit::Ok
    }
}

/// The JSON object of a task observation.
pub fn task_json(task: &Task) -> Value {
    json!({
        "provider": task.provider(),
        "id": task.id(),
        "phase": task.phase(),
        "status": task.status(),
        "http_status": task.http_status(),
        "error": task.error(),
        "result": task.result(),
    })
}

/// What one task's read or wait ended with, as one JSON object.
pub fn outcome_json(
    task_ref: &TaskRef,
    result: &Result<Task, Error>,
    polls: Option<u32>,
    elapsed: Option<Duration>,
) -> Value {
    let mut line = match result {
        Ok(task) => {
            let mut line = task_json(task);
            line["outcome"] = json!(task.phase());
            line
        }
        Err(error) => {
            let last = error.task();
            let mut line = match last {
                Some(task) => task_json(task),
                None => json!({
                    "provider": task_ref.provider(), "id": task_ref.id(), "phase": Value::Null,
                    "status": Value::Null, "http_status": error.status(), "result": Value::Null,
                }),
            };
            line["error"] = json!(error.to_string());
            line["outcome"] = json!(outcome_name(error));
            line
        }
    };
    if !task_ref.inputs().is_empty() {
        line["inputs"] = json!(task_ref.inputs());
    }
    if let Some(polls) = polls {
        line["polls"] = json!(polls);
    }
    if let Some(elapsed) = elapsed {
        line["elapsed_ms"] = json!(elapsed.as_millis() as u64);
    }
    line
}

fn outcome_name(error: &Error) -> &'static str {
    match error.task().map(Task::phase) {
        Some(Phase::Failed) if error.is_task_failure() => "failed",
        Some(Phase::Cancelled) if error.is_task_failure() => "cancelled",
        _ if error.is_deadline() => "deadline",
        _ if error.is_still_pending() => "still_pending",
        _ if matches!(error, Error::UnknownStatus { .. }) => "unknown_status",
        _ if error.is_auth() => "auth_error",
        _ if error.is_config() => "usage_error",
        _ => "error",
    }
}

/// Prints one JSON line on stdout (a closed stdout is not an error worth a panic).
pub fn print_line(value: &Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{value}");
    let _ = out.flush();
}
