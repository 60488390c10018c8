//! Everything the CLI prints (JSON lines on stdout, text on stderr), with
//! server text escaped and closed pipes ignored, and the exit codes.

use std::borrow::Cow;
use std::time::Duration;

use serde_json::{Value, json};
use taskpoll::{Error, Phase, Task, TaskRef};

/// The process exit codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Exit {
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
    /// Interrupted (Ctrl-C, SIGINT) before every task ended; 128 + SIGINT, as shells report it.
    Interrupted = 130,
}

impl Exit {
    /// The exit code for a wait or read that ended with this error.
    pub(crate) fn for_error(error: &Error) -> Self {
        if error.is_task_failure() {
            Exit::TaskFailed
        } else if error.is_wait_cancelled() {
            // The CLI cancels waits only when interrupted.
            Exit::Interrupted
        } else if error.is_deadline() || error.is_still_pending() {
            Exit::Deadline
        } else if error.is_config() || matches!(error, Error::MissingCredentials(_) | Error::InvalidRequest(_)) {
            // Found before anything was sent: the configuration, not the server, is at fault.
            Exit::Usage
        } else if error.is_unknown_status() {
            Exit::TaskFailed
        } else {
            Exit::Api
        }
    }

    /// For several tasks: an interruption wins (the run is incomplete), then a
    /// usage error, a failure, an API error, the deadline.
    pub(crate) fn combine(codes: impl IntoIterator<Item = Exit>) -> Exit {
        codes.into_iter().fold(Exit::Ok, Exit::worse)
    }

    /// The one of two codes that [`Exit::combine`] keeps.
    pub(crate) fn worse(self, other: Exit) -> Exit {
        const ORDER: [Exit; 6] =
            [Exit::Interrupted, Exit::Usage, Exit::TaskFailed, Exit::Api, Exit::Deadline, Exit::Ok];
        let rank = |code: Exit| ORDER.iter().position(|c| *c == code).unwrap_or(ORDER.len());
        if rank(other) < rank(self) { other } else { self }
    }
}

/// The JSON object of a task observation.
pub(crate) fn task_json(task: &Task) -> Value {
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

/// What one task's read or wait ended with, as one JSON object. `polls` is
/// written for waits (`null` when the waiter does not say, e.g. for a success).
pub(crate) fn outcome_json(
    task_ref: &TaskRef,
    result: Result<&Task, &Error>,
    polls: Option<Option<u32>>,
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
            // A cancelled wait has no observation, but its state keeps the last phase and status.
            let state = error.wait_state().filter(|_| last.is_none());
            let mut line = match last {
                Some(task) => task_json(task),
                None => json!({
                    "provider": task_ref.provider(), "id": task_ref.id(),
                    "phase": state.and_then(|s| s.last_phase),
                    "status": state.and_then(|s| s.last_status.as_deref()),
                    "http_status": error.status(), "result": Value::Null,
                }),
            };
            line["error"] = json!(error_text(error, elapsed));
            line["outcome"] = json!(outcome_name(error));
            if error.is_deadline() {
                let (last_error, http_status) = last_cause(error);
                line["last_error"] = json!(last_error.map(|e| e.to_string()));
                line["http_status"] = json!(http_status);
            }
            line
        }
    };
    if !task_ref.inputs().is_empty() {
        line["inputs"] = json!(task_ref.inputs());
    }
    if let Some(polls) = polls {
        line["polls"] = json!(polls);
        // How a wait ended: by a poll or a verified webhook; `null` when no observation ended it.
        let ended_by = match result {
            Ok(task) => Some(task.via()),
            Err(error) if error.is_task_failure() => error.task().map(Task::via),
            Err(_) => None,
        };
        line["via"] = json!(ended_by.map(|via| via.as_str()));
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
        // The CLI cancels waits only on Ctrl-C.
        _ if error.is_wait_cancelled() => "interrupted",
        _ if error.is_deadline() => "deadline",
        _ if error.is_still_pending() => "still_pending",
        _ if error.is_unknown_status() => "unknown_status",
        _ if error.is_auth() => "auth_error",
        _ if error.is_config() => "usage_error",
        _ => "error",
    }
}

/// What the CLI says about an error: the library's text, except when the
/// deadline ended the wait, where it names the last cause and the one way
/// the CLI can continue. `elapsed` is the wait's own length, when known.
pub(crate) fn error_text(error: &Error, elapsed: Option<Duration>) -> String {
    // Resuming from a saved wait state is a library feature the CLI does not offer yet.
    const CONTINUE: &str = "run the same `taskpoll wait` again to keep waiting (a new wait with a new deadline)";
    let cause = || {
        let (last_error, _) = last_cause(error);
        match (last_error, error.task()) {
            (Some(e), _) => format!("; last poll failed: {e}"),
            (None, Some(task)) => format!(
                "; last seen {} ({}), HTTP {}",
                task.phase(),
                task.status().unwrap_or("no status"),
                task.http_status()
            ),
            (None, None) => String::new(),
        }
    };
    match error {
        Error::DeadlineExceeded(e) => format!(
            "task {} not finished at the deadline ({:.1}s, {} polls{}); it may still finish: {CONTINUE}",
            e.task_ref(),
            elapsed.unwrap_or(e.elapsed()).as_secs_f64(),
            e.polls(),
            cause()
        ),
        Error::WaitCancelled(e) => format!(
            "task {}: interrupted after {} polls ({:.1}s{}); it may still finish: {CONTINUE}",
            e.task_ref(),
            e.polls(),
            elapsed.map_or(0.0, |e| e.as_secs_f64()),
            match (e.wait_state().last_phase, &e.wait_state().last_status) {
                (Some(phase), status) => format!(", last seen {phase} ({})", status.as_deref().unwrap_or("no status")),
                (None, _) => String::new(),
            },
        ),
        Error::RetryAfterPastDeadline(e) => format!(
            "task {}: the server asked to retry after {:.1}s, past the deadline ({:.1}s left{}); \
             it may still finish: {CONTINUE}, later",
            e.task_ref(),
            e.retry_after().as_secs_f64(),
            e.remaining().as_secs_f64(),
            cause()
        ),
        other => other.to_string(),
    }
}

/// After a deadline: the error of the last poll, if it failed, and the HTTP
/// status of the last answer (of that error, else of the last observation).
fn last_cause(error: &Error) -> (Option<&Error>, Option<u16>) {
    let last_error = match error {
        Error::DeadlineExceeded(e) => e.last_error(),
        Error::RetryAfterPastDeadline(e) => e.hint_error(),
        _ => None,
    };
    let http_status = match last_error {
        Some(e) => e.status(),
        None => error.task().map(Task::http_status),
    };
    (last_error, http_status)
}

/// Bidirectional-text controls: invisible, and they reorder what a terminal
/// shows (a forged `…succeeded` can be made to read backwards).
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

fn needs_escape(c: char) -> bool {
    c.is_control() || is_bidi_control(c)
}

/// Escapes control characters (C0, DEL, C1: newlines, carriage returns, ANSI
/// escapes) and bidirectional controls, so that text from a server can
/// neither move the cursor nor forge a line. Every line the CLI writes goes
/// through it; the CLI's own text has no such characters.
pub(crate) fn escape_controls(text: &str) -> Cow<'_, str> {
    if !text.chars().any(needs_escape) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if needs_escape(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// One JSON value as one line. serde_json escapes C0 controls but passes DEL,
/// C1 and bidirectional controls through raw; they are escaped here as
/// `\uXXXX` (all are in the BMP), which is still the same JSON string.
pub(crate) fn json_line(value: &Value) -> String {
    escape_json_text(&value.to_string()).into_owned()
}

/// [`json_line`]'s escaping of a JSON text already written (a JSON log line).
pub(crate) fn escape_json_text(text: &str) -> Cow<'_, str> {
    if !text.chars().any(needs_escape) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 12);
    for c in text.chars() {
        if needs_escape(c) {
            out.push_str(&format!("\\u{:04x}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Prints one JSON line on stdout.
pub(crate) fn print_line(value: &Value) {
    write_line(&mut std::io::stdout().lock(), &json_line(value));
}

/// Prints a line of text on stdout, escaped.
pub(crate) fn out_line(text: &str) {
    write_line(&mut std::io::stdout().lock(), &escape_controls(text));
}

/// Prints a line on stderr, escaped.
pub(crate) fn err_line(text: &str) {
    write_line(&mut std::io::stderr().lock(), &escape_controls(text));
}

/// A closed stdout or stderr (`taskpoll wait … | head -0`) is not an error
/// worth a panic, and must not change the exit code: write errors are dropped.
fn write_line(out: &mut dyn std::io::Write, line: &str) {
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_interruption_wins_then_usage_failure_api_deadline() {
        use Exit::*;
        assert_eq!(Exit::combine([]), Ok);
        assert_eq!(Exit::combine([Ok, Deadline, Api]), Api);
        assert_eq!(Exit::combine([Deadline, TaskFailed, Api]), TaskFailed);
        assert_eq!(Exit::combine([TaskFailed, Usage]), Usage);
        assert_eq!(Exit::combine([Ok, Interrupted, Usage, TaskFailed]), Interrupted);
        assert_eq!(Interrupted as u8, 130);
    }

    #[test]
    fn control_and_bidi_characters_are_escaped() {
        let hostile = "ok\u{1b}[2J\rSUCCEEDED\n\u{7f}\u{85}\u{202e}x\u{2066}";
        let escaped = escape_controls(hostile);
        assert_eq!(escaped, "ok\\u{1b}[2J\\rSUCCEEDED\\n\\u{7f}\\u{85}\\u{202e}x\\u{2066}");
        assert!(!escaped.chars().any(needs_escape));
        assert!(matches!(escape_controls("plain: é ✓"), Cow::Borrowed(_)));

        let line = json_line(&json!({ "status": hostile }));
        assert!(!line.chars().any(needs_escape), "{line}");
        let back: Value = serde_json::from_str(&line).expect("still JSON");
        assert_eq!(back["status"], hostile, "the same string once decoded");
    }
}
