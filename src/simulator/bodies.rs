//! Answers built from the spec's documented examples, patched with the task's
//! id, status and failure message. Nothing here names a provider.

use serde_json::Value;

use super::lifecycle::Answer;
use crate::spec::{Example, ProviderSpec};
use crate::{Phase, TaskRef, observe};

/// A body to serve and its HTTP status.
#[derive(Debug, Clone)]
pub(crate) struct Rendered {
    pub(crate) status: u16,
    pub(crate) body: Value,
}

/// An example with its body parsed and classified.
struct Candidate {
    example: &'static Example,
    status: u16,
    body: Value,
    raw: Option<String>,
    /// The phase the unified layer reads from the body (rules included).
    phase: Phase,
    /// The phase from the status value alone (no rule matched).
    direct: bool,
    /// The error pointer of the rule that matched, if any.
    rule_error: Option<&'static str>,
}

fn raw_status(spec: &ProviderSpec, body: &Value) -> Option<String> {
    match body.pointer(spec.task.status) {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    }
}

/// The phase a raw status maps to through `spec.phases` alone.
pub(crate) fn phase_of_status(spec: &ProviderSpec, raw: &str) -> Option<Phase> {
    let lower = raw.to_lowercase();
    spec.phases.iter().find(|(known, _)| *known == lower).map(|(_, p)| *p)
}

fn classify(spec: &'static ProviderSpec, example: &'static Example) -> Option<Candidate> {
    let status: u16 = example.status.parse().ok()?;
    let body: Value = serde_json::from_str(example.json).ok()?;
    if !body.is_object() {
        return None;
    }
    let raw = raw_status(spec, &body);
    let task_ref = TaskRef::of_spec(spec, "simulated").ok()?;
    let phase = observe::task_from_body(spec, task_ref, status, body.clone()).phase();
    let rule = spec.rules.iter().find(|rule| {
        rule.when.iter().all(|(pointer, expected)| {
            observe::text_at(&body, pointer).is_some_and(|actual| actual.eq_ignore_ascii_case(expected))
        })
    });
    Some(Candidate {
        example,
        status,
        raw,
        phase,
        direct: rule.is_none(),
        rule_error: rule.and_then(|r| r.error),
        body,
    })
}

/// Whether an HTTP status answers with a task body at this provider.
fn carries_task(spec: &ProviderSpec, status: u16) -> bool {
    (200..300).contains(&status) || spec.task.task_body_statuses.contains(&status)
}

/// The task-carrying examples of an operation (falling back to the get
/// operation's when it documents none).
fn task_examples(spec: &'static ProviderSpec, operation: &str) -> Vec<Candidate> {
    let of = |op: &str| -> Vec<Candidate> {
        spec.examples
            .iter()
            .filter(|e| e.operation == op)
            .filter_map(|e| classify(spec, e))
            .filter(|c| carries_task(spec, c.status))
            .collect()
    };
    let own = of(operation);
    if own.is_empty() && operation != spec.get.operation { of(spec.get.operation) } else { own }
}

/// Whether the spec has any way to say `phase`.
fn expressible(spec: &'static ProviderSpec, phase: Phase) -> bool {
    spec.phases.iter().any(|(_, p)| *p == phase)
        || spec.rules.iter().any(|r| r.phase == phase)
        || task_examples(spec, spec.get.operation).iter().any(|c| c.phase == phase)
}

/// The phase a simulated task in `phase` is served as at this provider: the
/// phase itself when the spec can express it, otherwise the nearest one it
/// can (running -> queued, queued -> running, cancelled -> failed).
pub fn served_phase(spec: &'static ProviderSpec, phase: Phase) -> Phase {
    if expressible(spec, phase) {
        return phase;
    }
    let fallback = match phase {
        Phase::Running => Phase::Queued,
        Phase::Queued => Phase::Running,
        Phase::Cancelled => Phase::Failed,
        other => other,
    };
    if fallback != phase && expressible(spec, fallback) { fallback } else { phase }
}

/// The first raw status the spec lists for a phase, cased like the examples.
fn listed_status(spec: &'static ProviderSpec, phase: Phase) -> Option<String> {
    let lower = spec.phases.iter().find(|(_, p)| *p == phase).map(|(raw, _)| (*raw).to_string())?;
    let examples = task_examples(spec, spec.get.operation);
    let upper = examples
        .iter()
        .filter_map(|c| c.raw.as_deref())
        .filter(|r| r.chars().any(char::is_alphabetic))
        .any(|r| !r.chars().any(char::is_lowercase));
    Some(if upper { lower.to_uppercase() } else { lower })
}

/// Picks the best example for a phase among candidates.
fn best_for_phase(spec: &'static ProviderSpec, candidates: Vec<Candidate>, phase: Phase) -> Option<Candidate> {
    let order: Vec<&str> = spec.phases.iter().filter(|(_, p)| *p == phase).map(|(raw, _)| *raw).collect();
    let mut matching: Vec<(usize, Candidate)> =
        candidates.into_iter().filter(|c| c.phase == phase).enumerate().collect();
    matching.sort_by_key(|(i, c)| {
        let lower_raw = c.raw.as_deref().map(str::to_lowercase).unwrap_or_default();
        let name = c.example.name.to_lowercase();
        let task_body_status = phase == Phase::Failed && spec.task.task_body_statuses.contains(&c.status);
        let named = name == lower_raw || name == phase.as_str() || name == format!("{}_status", lower_raw);
        let listed = order.iter().position(|r| *r == lower_raw).unwrap_or(usize::MAX);
        (!task_body_status, !c.direct, !named, listed, *i)
    });
    matching.into_iter().next().map(|(_, c)| c)
}

/// Builds the answer for one read of task `id` through `operation`.
pub(crate) fn render(
    spec: &'static ProviderSpec,
    operation: &str,
    id: &str,
    answer: &Answer,
) -> Result<Rendered, String> {
    let mut out = match answer {
        Answer::Example(name) => by_name(spec, operation, name)?,
        Answer::Status(raw) => with_status(spec, operation, raw)?,
        Answer::Phase(phase) => for_phase(spec, operation, *phase, None)?,
        Answer::Fail(message) => for_phase(spec, operation, Phase::Failed, message.as_deref())?,
    };
    patch_id(spec, &mut out.body, id);
    Ok(out)
}

/// A documented example by name: `NAME` or `STATUS:NAME` (names repeat across
/// statuses; without a status a 2xx one is preferred). Matches exactly, then
/// as a `_NAME` suffix, then as a part of the name.
fn by_name(spec: &'static ProviderSpec, operation: &str, name: &str) -> Result<Rendered, String> {
    let (status, name) = match name.split_once(':') {
        Some((status, rest)) if status.chars().all(|c| c.is_ascii_digit()) && !status.is_empty() => {
            (Some(status), rest)
        }
        _ => (None, name),
    };
    let find = |op: &str| -> Option<&'static Example> {
        let mut of_op: Vec<&'static Example> =
            spec.examples.iter().filter(|e| e.operation == op && status.is_none_or(|s| e.status == s)).collect();
        of_op.sort_by_key(|e| !e.status.starts_with('2'));
        let suffix = format!("_{name}");
        of_op
            .iter()
            .find(|e| e.name == name)
            .or_else(|| of_op.iter().find(|e| e.name.ends_with(&suffix)))
            .or_else(|| of_op.iter().find(|e| e.name.contains(name)))
            .copied()
    };
    let example = find(operation)
        .or_else(|| find(spec.get.operation))
        .ok_or_else(|| format!("{} documents no example named `{name}` for `{operation}`", spec.name))?;
    let status = example.status.parse().map_err(|_| format!("example `{}` has a non-numeric status", example.name))?;
    let body =
        serde_json::from_str(example.json).map_err(|e| format!("example `{}` is not JSON: {e}", example.name))?;
    Ok(Rendered { status, body })
}

/// Whether an answer of this status carries a task body at this provider.
pub(crate) fn is_task_status(spec: &ProviderSpec, status: u16) -> bool {
    carries_task(spec, status)
}

fn with_status(spec: &'static ProviderSpec, operation: &str, raw: &str) -> Result<Rendered, String> {
    let candidates = task_examples(spec, operation);
    // An example documenting this very status, else one of the phase it maps to,
    // else (unknown status) one of an unknown status, else a queued one.
    let same =
        candidates.iter().position(|c| c.raw.as_deref().is_some_and(|r| r.eq_ignore_ascii_case(raw)) && c.direct);
    let base = match same {
        Some(i) => candidates.into_iter().nth(i),
        None => match phase_of_status(spec, raw) {
            Some(phase) => best_for_phase(spec, candidates, served_phase(spec, phase)),
            None => {
                let unknown = candidates
                    .iter()
                    .position(|c| c.phase == Phase::Unknown && c.raw.as_deref().is_some_and(|r| !r.is_empty()));
                match unknown {
                    Some(i) => candidates.into_iter().nth(i),
                    None => best_for_phase(spec, candidates, served_phase(spec, Phase::Queued)),
                }
            }
        },
    };
    let mut base = match base {
        Some(c) => Rendered { status: c.status, body: c.body },
        None => any_task_body(spec, operation)?,
    };
    set_pointer(&mut base.body, spec.task.status, Value::String(raw.to_string()));
    Ok(base)
}

fn for_phase(
    spec: &'static ProviderSpec,
    operation: &str,
    phase: Phase,
    message: Option<&str>,
) -> Result<Rendered, String> {
    let phase = served_phase(spec, phase);
    let candidates = task_examples(spec, operation);
    let (mut rendered, error_pointer) = match best_for_phase(spec, candidates, phase) {
        Some(c) => (Rendered { status: c.status, body: c.body }, c.rule_error),
        None => {
            // No example of this phase: any task body with the listed status.
            let mut any = any_task_body(spec, operation)?;
            let raw = listed_status(spec, phase).unwrap_or_else(|| phase.as_str().to_string());
            set_pointer(&mut any.body, spec.task.status, Value::String(raw));
            (any, None)
        }
    };
    if let Some(message) = message
        && let Some(pointer) = error_pointer.or_else(|| spec.task.error.first().copied())
    {
        set_pointer(&mut rendered.body, pointer, Value::String(message.to_string()));
    }
    Ok(rendered)
}

fn any_task_body(spec: &'static ProviderSpec, operation: &str) -> Result<Rendered, String> {
    let candidates = task_examples(spec, operation);
    let pick = candidates
        .iter()
        .position(|c| c.raw.as_deref().is_some_and(|r| !r.is_empty()) && (200..300).contains(&c.status))
        .or(if candidates.is_empty() { None } else { Some(0) });
    match pick.and_then(|i| candidates.into_iter().nth(i)) {
        Some(c) => Ok(Rendered { status: c.status, body: c.body }),
        None => Ok(Rendered { status: 200, body: Value::Object(serde_json::Map::new()) }),
    }
}

/// Writes the task id at the spec's id pointer when the example carries one
/// there (a documented `null`, e.g. Qolaba's finished tasks, stays `null`).
fn patch_id(spec: &ProviderSpec, body: &mut Value, id: &str) {
    let Some(pointer) = spec.task.id else { return };
    let value = match body.pointer(pointer) {
        None | Some(Value::Null) => return,
        Some(Value::Number(_)) => id.parse::<u64>().map(Value::from).unwrap_or_else(|_| Value::String(id.into())),
        Some(_) => Value::String(id.to_string()),
    };
    set_pointer(body, pointer, value);
}

/// Writes `id` at `pointer` in a batch item, always (the client needs it there).
pub(crate) fn set_item_id(item: &mut Value, pointer: &str, id: &str) {
    let value = match item.pointer(pointer) {
        Some(Value::Number(_)) => id.parse::<u64>().map(Value::from).unwrap_or_else(|_| Value::String(id.into())),
        _ => Value::String(id.to_string()),
    };
    set_pointer(item, pointer, value);
}

/// Sets the value at a JSON pointer, creating objects on the way (RFC 6901).
pub(crate) fn set_pointer(root: &mut Value, pointer: &str, value: Value) {
    if pointer.is_empty() {
        *root = value;
        return;
    }
    let tokens: Vec<String> =
        pointer.trim_start_matches('/').split('/').map(|t| t.replace("~1", "/").replace("~0", "~")).collect();
    let mut node = root;
    for (i, token) in tokens.iter().enumerate() {
        let last = i + 1 == tokens.len();
        if !node.is_object() && !node.is_array() {
            *node = Value::Object(serde_json::Map::new());
        }
        let next = match node {
            Value::Array(items) => match token.parse::<usize>().ok().and_then(|n| items.get_mut(n)) {
                Some(slot) => slot,
                None => return,
            },
            Value::Object(map) => map.entry(token.clone()).or_insert(Value::Null),
            _ => return,
        };
        if last {
            *next = value;
            return;
        }
        node = next;
    }
}

/// The documented example of an operation for a non-task status (401, 404,
/// 429, ...), if any.
pub(crate) fn documented(spec: &'static ProviderSpec, operation: &str, status: u16) -> Option<Value> {
    let status = status.to_string();
    spec.examples_for(operation, &status)
        .chain(spec.examples_for(spec.get.operation, &status))
        .find_map(|e| serde_json::from_str(e.json).ok())
}

/// The first 2xx example of an operation (for a batch page template or an
/// operation that reads no task).
pub(crate) fn first_success(spec: &'static ProviderSpec, operation: &str) -> Option<Value> {
    spec.examples
        .iter()
        .filter(|e| e.operation == operation && e.status.starts_with('2'))
        .find_map(|e| serde_json::from_str(e.json).ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn set_pointer_creates_and_replaces() {
        let mut v = json!({"data": {"status": "x"}, "list": [1, 2]});
        set_pointer(&mut v, "/data/status", json!("y"));
        set_pointer(&mut v, "/error/message", json!("m"));
        set_pointer(&mut v, "/list/1", json!(3));
        set_pointer(&mut v, "/list/9", json!(3));
        set_pointer(&mut v, "/a~1b", json!(true));
        assert_eq!(v, json!({"data": {"status": "y"}, "error": {"message": "m"}, "list": [1, 3], "a/b": true}));
    }
}
