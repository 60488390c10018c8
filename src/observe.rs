//! Turns what one status call saw (HTTP status, headers, body, or a transport
//! failure) into a [`Task`] or an [`Error`], using only the provider's spec data.
//! This is the one place where answers are classified.

use std::borrow::Cow;
use std::time::Duration;

use serde_json::Value;

use crate::error::{
    ApiError, BodyTooLarge, CrossOriginAnswer, InvalidBody, InvalidRequest, MissingCredentials, TaskIdMismatch,
    TransportError, TransportKind,
};
use crate::raw_json::pointer as at_pointer;
use crate::spec::{ProviderSpec, Rule, WebhookSpec};
use crate::task::Body;
use crate::text::excerpt;
use crate::transport::{NoAnswer, RawResponse, Received};
use crate::{Error, Phase, Task, TaskRef};

/// How a poll loop should treat one observation.
#[derive(Debug)]
#[non_exhaustive]
pub(crate) enum Class {
    /// Finished: succeeded, failed or cancelled.
    Terminal(Task),
    /// Not finished yet (queued, running or unknown).
    Pending(Task),
    /// Could not read the status this time; worth trying again.
    Transient(Error),
    /// Trying again will not help (auth, not found, bad request, bad input).
    Permanent(Error),
}

impl Class {
    /// Classifies the result of one status read.
    pub(crate) fn of(result: Result<Task, Error>) -> Self {
        match result {
            Ok(task) if task.phase().is_terminal() => Class::Terminal(task),
            Ok(task) => Class::Pending(task),
            Err(e) if e.is_retryable() => Class::Transient(e),
            Err(e) => Class::Permanent(e),
        }
    }
}

/// Maps one status read to a task or an error.
pub(crate) fn single(
    spec: &'static ProviderSpec,
    operation: &'static str,
    task_ref: &TaskRef,
    received: Received,
    base: &reqwest::Url,
) -> Result<Task, Error> {
    let raw = answer(spec, operation, received, base)?;
    from_raw(spec, operation, task_ref, raw)
}

fn from_raw(
    spec: &'static ProviderSpec,
    operation: &'static str,
    task_ref: &TaskRef,
    raw: RawResponse,
) -> Result<Task, Error> {
    let body = task_body(spec, operation, &raw)?;
    check_id(spec, operation, task_ref, &body)?;
    let task = task_from_body(spec, task_ref.clone(), raw.status, body);
    Ok(task.with_retry_after(raw.retry_after).with_next_poll(raw.next_poll))
}

/// Classifies an answer obtained elsewhere exactly as a read would (see [`Task::decode`]).
pub(crate) fn decode(
    spec: &'static ProviderSpec,
    task_ref: &TaskRef,
    http_status: u16,
    body: &[u8],
) -> Result<Task, Error> {
    if !task_ref.provider().eq_ignore_ascii_case(spec.name) {
        return Err(Error::config(format!("task {task_ref} is not a {} task", spec.name)));
    }
    let raw = RawResponse {
        status: http_status,
        body: bytes::Bytes::copy_from_slice(body),
        retry_after: None,
        next_poll: None,
        redirect: None,
    };
    from_raw(spec, spec.get.operation, task_ref, raw)
}

/// Refuses a task body whose id (where the spec says the body carries it) is
/// not the requested one. Ids are compared as text: providers send them as
/// strings or integers. A body without an id (absent, null or `""`) is taken as it is.
fn check_id(
    spec: &'static ProviderSpec,
    operation: &'static str,
    task_ref: &TaskRef,
    body: &Value,
) -> Result<(), Error> {
    let answered: Cow<'_, str> = match spec.task.id.and_then(|pointer| at_pointer(body, pointer)) {
        // Absent, null or empty (Qolaba documents `task_id: ""`): the body names no task.
        None | Some(Value::Null) => return Ok(()),
        Some(Value::String(s)) if s.is_empty() => return Ok(()),
        Some(Value::String(s)) => Cow::Borrowed(s),
        Some(other) => Cow::Owned(other.to_string()),
    };
    if answered == task_ref.id() {
        return Ok(());
    }
    Err(id_mismatch(spec, operation, task_ref, &answered))
}

#[cold]
fn id_mismatch(spec: &'static ProviderSpec, operation: &'static str, task_ref: &TaskRef, answered: &str) -> Error {
    Error::TaskIdMismatch(TaskIdMismatch {
        provider: spec.name,
        operation,
        requested: excerpt(task_ref.id(), 80),
        answered: excerpt(answered, 80),
    })
}

/// The raw answer of a call, or the error that prevented one.
pub(crate) fn answer(
    spec: &'static ProviderSpec,
    operation: &'static str,
    received: Received,
    base: &reqwest::Url,
) -> Result<RawResponse, Error> {
    received.map_err(|why| no_answer(spec, operation, why, base))
}

/// Why a call brought no answer to classify. Cold, like every error
/// constructor here: kept out of the way of the code every read runs.
#[cold]
fn no_answer(spec: &'static ProviderSpec, operation: &'static str, why: NoAnswer, base: &reqwest::Url) -> Error {
    let failure = match why {
        NoAnswer::MissingCredentials(needed) => {
            return Error::MissingCredentials(MissingCredentials { provider: spec.name, operation, needed });
        }
        NoAnswer::OtherOrigin(origin) => {
            return Error::CrossOriginAnswer(CrossOriginAnswer { provider: spec.name, operation, origin });
        }
        NoAnswer::TooLarge(status, limit) => {
            return Error::BodyTooLarge(BodyTooLarge { provider: spec.name, operation, status, limit });
        }
        NoAnswer::Failed(failure) => *failure,
    };
    match failure {
        progenitor_client::Error::CommunicationError(e) | progenitor_client::Error::ResponseBodyError(e) => {
            // The unified layer's own limit is applied around the call (see `timed_out`); a
            // timeout here is one of a caller-supplied HTTP client.
            let kind = crate::transport::transport_kind(&e);
            let host = e.url().unwrap_or(base);
            let host = crate::transport::host_of(host);
            Error::Transport(TransportError {
                provider: spec.name,
                operation,
                kind,
                host,
                timeout: None,
                source: Box::new(e.without_url()),
            })
        }
        progenitor_client::Error::InvalidRequest(message) | progenitor_client::Error::Custom(message) => {
            Error::InvalidRequest(InvalidRequest { provider: spec.name, operation, message })
        }
        other => Error::InvalidRequest(InvalidRequest { provider: spec.name, operation, message: other.to_string() }),
    }
}

/// The error of a call cut off by its time limit (`from_deadline`: the limit
/// was the wait's remaining budget, shorter than the request timeout).
#[cold]
pub(crate) fn timed_out(
    spec: &'static ProviderSpec,
    operation: &'static str,
    base: &reqwest::Url,
    timeout: Duration,
    from_deadline: bool,
) -> Error {
    Error::Transport(TransportError {
        provider: spec.name,
        operation,
        kind: if from_deadline { TransportKind::DeadlineBudget } else { TransportKind::Timeout },
        host: crate::transport::host_of(base),
        timeout: Some(timeout),
        source: format!("no answer within {timeout:?}").into(),
    })
}

/// The error of a read that had no time left to send its request.
#[cold]
pub(crate) fn no_time_left(spec: &'static ProviderSpec, base: &reqwest::Url) -> Error {
    let host = crate::transport::host_of(base);
    Error::Transport(TransportError {
        provider: spec.name,
        operation: spec.get.operation,
        kind: TransportKind::DeadlineBudget,
        host,
        timeout: Some(std::time::Duration::ZERO),
        source: "no time left for the request".into(),
    })
}

/// The JSON body of an answer that carries a task (2xx, or a status the spec
/// says still carries one, like Qolaba's 500 + FAILED), or the error it is.
pub(crate) fn task_body(
    spec: &'static ProviderSpec,
    operation: &'static str,
    raw: &RawResponse,
) -> Result<Value, Error> {
    let parsed: Option<Value> = serde_json::from_slice(&raw.body).ok();
    let is_success = (200..300).contains(&raw.status);
    if is_success {
        return match parsed {
            Some(body @ Value::Object(_)) => Ok(body),
            Some(_) => Err(invalid_body(spec, operation, raw, "not a JSON object")),
            None if raw.body.is_empty() => Err(invalid_body(spec, operation, raw, "empty body")),
            None => Err(invalid_body(spec, operation, raw, "not JSON")),
        };
    }
    if spec.task.task_body_statuses.contains(&raw.status)
        && let Some(body @ Value::Object(_)) = parsed
    {
        if matches!(at_pointer(&body, spec.task.status), Some(Value::String(s)) if !s.is_empty()) {
            return Ok(body);
        }
        return Err(api_error(spec, operation, raw, Some(&body)));
    }
    Err(api_error(spec, operation, raw, parsed.as_ref()))
}

#[cold]
fn invalid_body(spec: &'static ProviderSpec, operation: &'static str, raw: &RawResponse, reason: &str) -> Error {
    Error::InvalidBody(InvalidBody {
        provider: spec.name,
        operation,
        status: raw.status,
        reason: reason.into(),
        body_excerpt: body_excerpt(&raw.body),
    })
}

#[cold]
fn api_error(spec: &'static ProviderSpec, operation: &'static str, raw: &RawResponse, parsed: Option<&Value>) -> Error {
    Error::Api(ApiError {
        provider: spec.name,
        operation,
        status: raw.status,
        message: match &raw.redirect {
            Some(note) => Some(note.clone()),
            None => parsed.and_then(|body| error_message(spec, body)),
        },
        body_excerpt: body_excerpt(&raw.body),
        body_is_json: parsed.is_some(),
        retry_after: raw.retry_after,
    })
}

/// The message of an error answer: where the spec says (`x-taskpoll.error-message`),
/// else the places most APIs use.
fn error_message(spec: &ProviderSpec, body: &Value) -> Option<String> {
    const GENERIC: &[&str] = &["/message", "/detail", "/error"];
    spec.error_message.iter().chain(GENERIC).find_map(|p| text_at(body, p)).map(|m| excerpt(&m, 300))
}

pub(crate) fn body_excerpt(body: &[u8]) -> String {
    excerpt(&String::from_utf8_lossy(body), 512)
}

/// The string at a pointer; numbers and booleans are rendered, null and absent are `None`.
pub(crate) fn text_at(body: &Value, pointer: &str) -> Option<String> {
    value_text(at_pointer(body, pointer)?)
}

/// A value as text: a non-empty string as it is, numbers, booleans, objects
/// and arrays rendered; null and `""` are `None`.
fn value_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Object(_) | Value::Array(_) => Some(value.to_string()),
        _ => None,
    }
}

/// A raw status or an id as text: a string as it is (borrowed), a number as written.
pub(crate) fn scalar_text(found: Option<&Value>) -> Option<Cow<'_, str>> {
    match found? {
        Value::String(s) => Some(Cow::Borrowed(s)),
        Value::Number(n) => Some(Cow::Owned(n.to_string())),
        _ => None,
    }
}

/// The rule that matches (its `when` values read through `at`), and the phase.
fn phase_of<'v>(
    spec: &'static ProviderSpec,
    status: Option<&str>,
    at: impl Fn(&str) -> Option<&'v Value>,
) -> (Option<&'static Rule>, Phase) {
    let rule = spec.rules.iter().find(|rule| {
        rule.when.iter().all(|(pointer, expected)| match at(pointer) {
            Some(Value::String(actual)) => !actual.is_empty() && actual.eq_ignore_ascii_case(expected),
            Some(Value::Null) | None => false,
            Some(other) => value_text(other).is_some_and(|actual| actual.eq_ignore_ascii_case(expected)),
        })
    });
    let phase = match (rule, status) {
        (Some(rule), _) => rule.phase,
        // Spec phase names are stored lower-cased; an ASCII status needs no lower-cased copy.
        (None, Some(raw)) => spec
            .phases
            .iter()
            .find(|(known, _)| known.eq_ignore_ascii_case(raw) || (!raw.is_ascii() && *known == raw.to_lowercase()))
            .map_or(Phase::Unknown, |(_, p)| *p),
        (None, None) => Phase::Unknown,
    };
    (rule, phase)
}

/// What a many-task waiter takes of one batch item.
#[derive(Debug)]
pub(crate) enum Seen {
    /// Still queued or running: the phase, the status and the answer's HTTP
    /// status are all a wait keeps between polls.
    InProgress {
        phase: Phase,
        /// The status as the provider wrote it: borrowed from the spec when it is one of its names.
        status: Option<Cow<'static, str>>,
        http_status: u16,
    },
    /// Any other task (finished, unknown status, not readable in place),
    /// built whole (boxed: most items are in progress, and small).
    Task(Box<Task>),
}

impl Seen {
    /// A task read whole, without its body when it is still in progress
    /// (a scripted source's answers, in the waiter's tests).
    #[cfg(test)]
    pub(crate) fn of(task: Task) -> Self {
        match task.phase() {
            Phase::Queued | Phase::Running => Seen::InProgress {
                phase: task.phase(),
                status: task.status().map(|s| Cow::Owned(s.to_string())),
                http_status: task.http_status(),
            },
            _ => Seen::Task(Box::new(task)),
        }
    }
}

/// One item of a batch answer, for a many-task waiter: its id (borrowed from
/// the item when it has no escape) and what the waiter takes of it. A task
/// still queued or running is classified from the few values it needs, read
/// in place in one pass over the item, and becomes [`Seen::InProgress`]; a
/// succeeded task becomes a [`Task`] whose body is the item's text, built
/// when first asked for; any other task (one that may carry a failure
/// message) is built whole by [`read_task`]. Both classify the status with
/// [`read_status`]; only the reading of the values differs (in place or built).
/// `None` for an item without a usable id.
pub(crate) fn batch_item<'a>(
    spec: &'static ProviderSpec,
    id_pointer: &str,
    http_status: u16,
    item: &'a serde_json::value::RawValue,
) -> Option<(Cow<'a, str>, Seen)> {
    use crate::raw_json::{raw_at_each, scalar_text};
    let whole = || {
        let (id, task) = item_task(spec, id_pointer, http_status, serde_json::from_str(item.get()).ok()?)?;
        Some((Cow::Owned(id), Seen::Task(Box::new(task))))
    };
    let base = [id_pointer, spec.task.status];
    // Rules name more values: read them all in the same pass (rarely more than a few).
    let with_rules: Vec<&str>;
    let pointers: &[&str] = if spec.rules.is_empty() {
        &base
    } else {
        with_rules = base.into_iter().chain(spec.rules.iter().flat_map(|r| r.when.iter().map(|(p, _)| *p))).collect();
        &with_rules
    };
    let mut on_stack = [None; 4];
    let mut on_heap: Vec<Option<&serde_json::value::RawValue>>;
    let found: &mut [Option<&serde_json::value::RawValue>] = match on_stack.get_mut(..pointers.len()) {
        Some(found) => found,
        None => {
            on_heap = vec![None; pointers.len()];
            &mut on_heap
        }
    };
    if raw_at_each(item, pointers, found).is_err() {
        return whole();
    }
    let id = scalar_text(found[0]?)?;
    let status = found[1].and_then(scalar_text);
    let rule_values: Vec<(&str, Option<Value>)> = match pointers.get(2..) {
        Some(rest) if !rest.is_empty() => {
            let built =
                |raw: Option<&serde_json::value::RawValue>| raw.and_then(|r| serde_json::from_str(r.get()).ok());
            rest.iter().zip(&found[2..]).map(|(p, raw)| (*p, built(*raw))).collect()
        }
        _ => Vec::new(),
    };
    let at = |pointer: &str| rule_values.iter().find(|(p, _)| *p == pointer).and_then(|(_, v)| v.as_ref());
    let Reading { phase, status, .. } = read_status(spec, status, at);
    match phase {
        Phase::Queued | Phase::Running => Some((id, Seen::InProgress { phase, status, http_status })),
        // A success takes nothing else from its body (no failure message):
        // the body is kept as its text and built only if it is asked for.
        Phase::Succeeded => {
            let task_ref = TaskRef::of_spec(spec, id.as_ref()).ok()?;
            let body = Body::text(item.to_owned());
            let task = Task::new(task_ref, phase, status, None, spec.task.result, http_status, body);
            Some((id, Seen::Task(Box::new(task))))
        }
        _ => whole(),
    }
}

/// One item of a batch answer, built whole: its id (at `id_pointer`) and its
/// task; `None` for an item without a usable id.
pub(crate) fn item_task(
    spec: &'static ProviderSpec,
    id_pointer: &str,
    http_status: u16,
    body: Value,
) -> Option<(String, Task)> {
    identified_task(spec, Fields::of_answer(spec), id_pointer, http_status, body)
}

/// The task a verified webhook payload describes; `None` without a usable id.
pub(crate) fn webhook_task(spec: &'static ProviderSpec, hook: &WebhookSpec, payload: Value) -> Option<Task> {
    let (_, task) = identified_task(spec, Fields::of_webhook(hook), hook.id, 200, payload)?;
    Some(task.delivered_by_webhook())
}

/// A body that names its own task (a batch item, a webhook payload): its id
/// (at `id_pointer`) and its task.
fn identified_task(
    spec: &'static ProviderSpec,
    fields: Fields,
    id_pointer: &str,
    http_status: u16,
    body: Value,
) -> Option<(String, Task)> {
    let id = scalar_text(at_pointer(&body, id_pointer))?.into_owned();
    let task_ref = TaskRef::of_spec(spec, id.clone()).ok()?;
    Some((id, read_task(spec, fields, task_ref, http_status, body)))
}

/// A status spelt as the spec spells it needs no copy of its own.
fn spelt_as_in(spec: &'static ProviderSpec, status: Cow<'_, str>) -> Cow<'static, str> {
    match spec.phases.iter().find(|(known, _)| *known == status) {
        Some((known, _)) => Cow::Borrowed(*known),
        None => Cow::Owned(status.into_owned()),
    }
}

/// Maps a status answer's task body with the spec's pointers, rules and phases.
pub(crate) fn task_from_body(spec: &'static ProviderSpec, task_ref: TaskRef, http_status: u16, body: Value) -> Task {
    read_task(spec, Fields::of_answer(spec), task_ref, http_status, body)
}

/// Where one kind of body puts a task's fields: a status answer (a single
/// read or a batch item; the spec's `task`) or a webhook payload (its
/// `webhook` block). Every body is read by [`read_task`], so each field
/// means the same whatever brought it.
#[derive(Debug, Clone, Copy)]
struct Fields {
    /// The raw status; `None`: the phase is derived from `failed_if_present`
    /// and `http_status` (a webhook payload that carries no status).
    status: Option<&'static str>,
    /// Candidates for the failure message, tried in order after a matching rule's.
    error: &'static [&'static str],
    /// The result payload.
    result: Option<&'static str>,
    /// Without a status: failed when any of these is present and not null.
    failed_if_present: &'static [&'static str],
    /// Without a status: failed when the number here is 400 or more.
    http_status: Option<&'static str>,
}

impl Fields {
    fn of_answer(spec: &ProviderSpec) -> Self {
        let task = &spec.task;
        Fields {
            status: Some(task.status),
            error: task.error,
            result: task.result,
            failed_if_present: &[],
            http_status: None,
        }
    }

    fn of_webhook(hook: &WebhookSpec) -> Self {
        Fields {
            status: hook.status,
            error: hook.error,
            result: hook.result,
            failed_if_present: hook.failed_if_present,
            http_status: hook.http_status,
        }
    }

    /// The phase of a body without a status: failed when an error is
    /// present or the HTTP status written in it is a failure.
    fn derived_phase(&self, body: &Value) -> Phase {
        let error_present = self.failed_if_present.iter().any(|p| at_pointer(body, p).is_some_and(|v| !v.is_null()));
        let http_failed =
            self.http_status.and_then(|p| at_pointer(body, p)).and_then(Value::as_f64).is_some_and(|s| s >= 400.0);
        if error_present || http_failed { Phase::Failed } else { Phase::Succeeded }
    }
}

/// What a status says: the rule that matched, the phase, and the status as
/// the provider wrote it (borrowed from the spec when it is one of its names).
struct Reading {
    rule: Option<&'static Rule>,
    phase: Phase,
    status: Option<Cow<'static, str>>,
}

/// The one classification of a status, whether the body is read whole or in
/// place (`at` reads the values the spec's rules name).
fn read_status<'v>(
    spec: &'static ProviderSpec,
    status: Option<Cow<'_, str>>,
    at: impl Fn(&str) -> Option<&'v Value>,
) -> Reading {
    let (rule, phase) = phase_of(spec, status.as_deref(), at);
    Reading { rule, phase, status: status.map(|status| spelt_as_in(spec, status)) }
}

/// The one body reader: a task body of any kind (see [`Fields`]) as a task.
fn read_task(spec: &'static ProviderSpec, fields: Fields, task_ref: TaskRef, http_status: u16, body: Value) -> Task {
    let Reading { rule, phase, status } = match fields.status {
        Some(pointer) => read_status(spec, scalar_text(at_pointer(&body, pointer)), |p| at_pointer(&body, p)),
        None => Reading { rule: None, phase: fields.derived_phase(&body), status: None },
    };
    let error = if matches!(phase, Phase::Failed | Phase::Cancelled | Phase::Unknown) {
        rule.and_then(|r| r.error)
            .and_then(|p| text_at(&body, p))
            .or_else(|| fields.error.iter().find_map(|p| text_at(&body, p)))
    } else {
        None
    };
    Task::new(task_ref, phase, status, error, fields.result, http_status, body)
}

// Here rather than in task.rs: reading an answer is this layer's job.
impl Task {
    /// Classifies an answer to a status read that was obtained elsewhere (a
    /// recorded answer, a test fixture, a body from a queue) exactly as
    /// [`crate::Client::get`] would: the task, or the error the answer is.
    /// Never panics, whatever the bytes.
    ///
    /// ```
    /// use taskpoll::{Phase, Task, TaskRef};
    /// let task_ref = TaskRef::new("deepomatic", "42")?;
    /// let task = Task::decode(&task_ref, 200, br#"{"id": 42, "status": "success"}"#)?;
    /// assert_eq!(task.phase(), Phase::Succeeded);
    /// assert!(Task::decode(&task_ref, 503, b"<html>busy</html>").unwrap_err().is_retryable());
    /// # Ok::<(), taskpoll::Error>(())
    /// ```
    pub fn decode(task_ref: &TaskRef, http_status: u16, body: &[u8]) -> Result<Task, Error> {
        decode(task_ref.spec(), task_ref, http_status, body)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::{Seen, batch_item, item_task};
    use crate::Phase;

    /// `body` with `value` set at `pointer`, objects made on the way.
    fn set(body: &mut Value, pointer: &str, value: Value) {
        let mut here = body;
        for token in pointer.trim_start_matches('/').split('/') {
            let token = token.replace("~1", "/").replace("~0", "~");
            if !here.is_object() {
                *here = json!({});
            }
            here = here.as_object_mut().expect("an object").entry(token).or_insert(Value::Null);
        }
        *here = value;
    }

    /// Read in place or built whole, an item gives the same task: same id,
    /// phase and status always, the very same task when it has finished.
    #[test]
    fn a_batch_item_read_in_place_is_classified_as_when_built_whole() {
        let (mut checked, mut slim_bodies) = (0, 0);
        for spec in crate::spec::providers() {
            let mut statuses: Vec<Value> = spec.phases.iter().map(|(name, _)| Value::from(*name)).collect();
            statuses.extend(spec.phases.iter().map(|(name, _)| Value::from(name.to_uppercase())));
            statuses.extend([json!("no-such-status"), json!(""), json!(7), json!(null), json!({"x": 1})]);
            let mut items = Vec::new();
            for status in &statuses {
                let mut item = json!({"other": [1, {"deep": "x"}], "tail": null});
                set(&mut item, "/id", json!("42"));
                set(&mut item, spec.task.status, status.clone());
                items.push(item.clone());
                // Every rule's conditions, met on top of each status.
                for rule in spec.rules {
                    let mut with_rule = item.clone();
                    for (pointer, expected) in rule.when {
                        set(&mut with_rule, pointer, Value::from(*expected));
                    }
                    items.push(with_rule);
                }
            }
            // A numeric id, and an escaped key on the way (read whole).
            items.push(json!({"id": 42, "status": "x"}));
            items.push(serde_json::from_str(r#"{"i\u0064": "42"}"#).expect("JSON"));
            for item in items {
                let text = serde_json::value::to_raw_value(&item).expect("JSON");
                let escaped =
                    serde_json::value::RawValue::from_string(item.to_string().replace("\"id\"", "\"i\\u0064\""))
                        .expect("JSON");
                for (raw, in_place) in [(&text, true), (&escaped, false)] {
                    let slim = batch_item(spec, "/id", 200, raw);
                    let whole = item_task(spec, "/id", 200, serde_json::from_str(raw.get()).expect("JSON"));
                    match (slim, whole) {
                        (None, None) => {}
                        (Some((slim_id, slim)), Some((whole_id, whole))) => {
                            assert_eq!(slim_id, whole_id, "{}: {item}", spec.name);
                            match slim {
                                // An escaped key cannot be walked in place: built whole.
                                Seen::InProgress { phase, status, http_status } => {
                                    assert!(in_place, "{}: {item}", spec.name);
                                    assert_eq!(
                                        (phase, status.as_deref(), http_status),
                                        (whole.phase(), whole.status(), whole.http_status()),
                                        "{}: {item}",
                                        spec.name
                                    );
                                    assert!(matches!(phase, Phase::Queued | Phase::Running));
                                    slim_bodies += 1;
                                }
                                Seen::Task(slim) => {
                                    assert!(!matches!(slim.phase(), Phase::Queued | Phase::Running) || !in_place);
                                    assert_eq!(*slim, whole, "{}: {item}", spec.name);
                                }
                            }
                            checked += 1;
                        }
                        (slim, whole) => panic!("{}: {item}: {slim:?} / {whole:?}", spec.name),
                    }
                }
            }
        }
        assert!(checked > 100 && slim_bodies > 10, "{checked} {slim_bodies}");
    }

    /// A succeeded item keeps its body as text: the task reads, compares,
    /// prints and serialises as the one built whole.
    #[test]
    fn a_succeeded_batch_item_built_on_demand_is_the_task_built_whole() {
        let spec = crate::spec::provider("deepomatic").expect("deepomatic");
        let item = json!({"id": "7", "status": "success", "error": null,
            "data": {"outputs": [{"labels": {"predicted": [{"label_name": "dog", "score": 0.9}]}}]}, "subtasks": null});
        let raw = serde_json::value::to_raw_value(&item).expect("JSON");
        let Some((_, Seen::Task(slim))) = batch_item(spec, "/id", 200, &raw) else { panic!("a finished task") };
        let (_, whole) = item_task(spec, "/id", 200, item.clone()).expect("a task");
        assert_eq!(slim.phase(), Phase::Succeeded);
        assert_eq!(format!("{slim:?}"), format!("{whole:?}"));
        assert_eq!(serde_json::to_value(&*slim).expect("JSON"), serde_json::to_value(&whole).expect("JSON"));
        assert_eq!(slim.result(), Some(&item["data"]));
        assert_eq!(slim.body(), &item);
        assert_eq!(slim.clone().body(), &item);
    }

    /// Text `Value` cannot hold (a number beyond `f64`) is not lost: the
    /// body is that text, as a string.
    #[test]
    fn a_kept_body_that_value_cannot_hold_is_kept_as_its_text() {
        let spec = crate::spec::provider("deepomatic").expect("deepomatic");
        let text = r#"{"id": "7", "status": "success", "data": {"big": 1e400}}"#;
        let raw = serde_json::value::RawValue::from_string(text.to_owned()).expect("JSON");
        let Some((_, Seen::Task(task))) = batch_item(spec, "/id", 200, &raw) else { panic!("a finished task") };
        assert_eq!(task.phase(), Phase::Succeeded);
        assert_eq!(task.body(), &Value::from(text));
        assert_eq!(task.result(), None);
    }
}
