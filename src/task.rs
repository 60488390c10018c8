//! The unified task model: [`Phase`], [`TaskRef`] and [`Task`], as plain
//! data. The checked constructors of a `TaskRef` (by name, parsed, read back)
//! are in `checks`, above the errors and the registry they use.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, OnceLock};

use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

pub use crate::spec::Phase;
use crate::spec::ProviderSpec;

mod checks;

/// A task at a provider: provider name, task id and any extra inputs the
/// provider's status call takes (Qolaba's `refID`).
///
/// Its string form is `provider:id`, with extra inputs as a query:
/// `qolaba:6f1c2d9e?refID=order-7`. `%`, `?`, `&`, `=` and control characters
/// in the id or inputs are percent-encoded. Parsing refuses an input given
/// twice, an empty input value and an empty `name=value` part.
///
/// ```
/// let task: taskpoll::TaskRef = "deepomatic:269999729".parse()?;
/// assert_eq!(task.provider(), "deepomatic");
/// assert_eq!(task.id(), "269999729");
/// assert_eq!(task.to_string(), "deepomatic:269999729");
/// # Ok::<(), taskpoll::Error>(())
/// ```
///
/// A reference carries its provider's descriptor, resolved once when it is
/// made (parsed, built or deserialised), so a read never looks the provider
/// up by name. It serialises as `{"provider", "id", "inputs"}` and is checked
/// again when read back.
#[derive(Clone)]
pub struct TaskRef {
    provider: &'static ProviderSpec,
    /// Shared, not copied, by a reference's clones: a many-task wait keeps
    /// its task's reference in its state and in its waiter's registry.
    id: Arc<str>,
    inputs: BTreeMap<String, String>,
}

/// The serialised form of a [`TaskRef`].
#[derive(Deserialize, JsonSchema)]
#[schemars(rename = "TaskRef")]
struct TaskRefFields {
    provider: String,
    id: String,
    #[serde(default)]
    inputs: BTreeMap<String, String>,
}

impl Serialize for TaskRef {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct as _;
        let mut fields = serializer.serialize_struct("TaskRef", 3)?;
        fields.serialize_field("provider", self.provider.name)?;
        fields.serialize_field("id", &*self.id)?;
        if self.inputs.is_empty() {
            fields.skip_field("inputs")?;
        } else {
            fields.serialize_field("inputs", &self.inputs)?;
        }
        fields.end()
    }
}

impl JsonSchema for TaskRef {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "TaskRef".into()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        TaskRefFields::json_schema(generator)
    }
}

impl TaskRef {
    /// The longest task id taskpoll will send.
    pub const MAX_ID_LEN: usize = 512;

    /// What identifies the reference (provider names are unique).
    fn key(&self) -> (&'static str, &str, &BTreeMap<String, String>) {
        (self.provider.name, &*self.id, &self.inputs)
    }
}

impl fmt::Debug for TaskRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskRef")
            .field("provider", &self.provider.name)
            .field("id", &self.id)
            .field("inputs", &self.inputs)
            .finish()
    }
}

impl PartialEq for TaskRef {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for TaskRef {}

impl std::hash::Hash for TaskRef {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.key().hash(state);
    }
}

impl PartialOrd for TaskRef {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for TaskRef {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.key().cmp(&other.key())
    }
}

const REF_ESCAPES: &AsciiSet = &CONTROLS.add(b'%').add(b'?').add(b'&').add(b'=').add(b'#').add(b' ');

impl TaskRef {
    /// The provider's name.
    pub fn provider(&self) -> &'static str {
        self.provider.name
    }

    /// The provider's descriptor.
    pub fn spec(&self) -> &'static ProviderSpec {
        self.provider
    }

    /// The task id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The extra inputs.
    pub fn inputs(&self) -> &BTreeMap<String, String> {
        &self.inputs
    }
}

impl fmt::Display for TaskRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.provider.name, utf8_percent_encode(&self.id, REF_ESCAPES))?;
        for (i, (k, v)) in self.inputs.iter().enumerate() {
            let sep = if i == 0 { '?' } else { '&' };
            write!(f, "{sep}{}={}", utf8_percent_encode(k, REF_ESCAPES), utf8_percent_encode(v, REF_ESCAPES))?;
        }
        Ok(())
    }
}

/// One observation of a task: what the provider answered, mapped to the
/// unified model, with the whole raw body kept.
///
/// Serialises as one JSON object: the task reference's fields, `phase`,
/// `status`, `error`, `result`, `http_status`, `retry_after_ms` (when set) and
/// `body`, and `"via": "webhook"` for a verified webhook delivery; it reads
/// back from the same object.
#[derive(Debug, Clone)]
pub struct Task {
    task_ref: TaskRef,
    phase: Phase,
    /// Borrowed from the spec when spelt as the spec spells it (no copy per read).
    status: Option<Cow<'static, str>>,
    error: Option<String>,
    result: TaskResult,
    http_status: u16,
    /// The answer's `Retry-After`, in milliseconds (an in-progress answer may pace the client).
    retry_after_ms: Option<u64>,
    /// The provider's suggested delay before the next poll, in milliseconds
    /// (its spec's `next-poll-header`); a hint for the engine, not serialised.
    next_poll_ms: Option<u64>,
    body: Body,
    via: Via,
}

/// A task's body: built, or kept as the answer's text and built the first
/// time it is asked for. A many-task wait reads a finished batch item's
/// status in place, and most callers never look at its whole body: building
/// (and later dropping) every finished item's tree was over a third of the
/// client's CPU at 100,000 waits.
///
/// The text and its build share one box, so a `Task` is no larger than with
/// a built body.
#[derive(Clone)]
pub(crate) enum Body {
    Built(Value),
    Text(Box<(Box<RawValue>, OnceLock<Value>)>),
}

impl Body {
    /// A body kept as its text (valid JSON: a part of an answer already read).
    pub(crate) fn text(text: Box<RawValue>) -> Self {
        Body::Text(Box::new((text, OnceLock::new())))
    }

    fn get(&self) -> &Value {
        match self {
            Body::Built(value) => value,
            // serde_json's `Value` refuses only a number beyond `f64` (`1e400`)
            // in text it read as JSON: such a body is kept as its text, in a string.
            Body::Text(kept) => {
                let (text, built) = &**kept;
                built.get_or_init(|| serde_json::from_str(text.get()).unwrap_or_else(|_| Value::from(text.get())))
            }
        }
    }
}

impl From<Value> for Body {
    fn from(value: Value) -> Self {
        Body::Built(value)
    }
}

/// As the built body, whichever way it is kept.
impl fmt::Debug for Body {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.get().fmt(f)
    }
}

/// Where an observation of a task came from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Via {
    /// A status read (a poll).
    #[default]
    Poll,
    /// A verified webhook delivery ([`crate::Client::verify_webhook`]).
    Webhook,
}

impl Via {
    /// `poll` or `webhook`.
    pub fn as_str(self) -> &'static str {
        match self {
            Via::Poll => "poll",
            Via::Webhook => "webhook",
        }
    }
}

/// Where a task's result is. An answer's result is a part of its body, read
/// in place (not copied: a result can be most of a large body); a task read
/// back from JSON owns the one it was given.
#[derive(Debug, Clone)]
enum TaskResult {
    /// At this JSON pointer in the body (the spec's `task.result`).
    At(&'static str),
    Owned(Option<Value>),
}

/// [`Task`]'s serialised form, written from borrowed fields.
#[derive(Serialize)]
struct TaskOut<'a> {
    #[serde(flatten)]
    task_ref: &'a TaskRef,
    phase: Phase,
    status: Option<&'a str>,
    error: Option<&'a str>,
    result: Option<&'a Value>,
    http_status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    retry_after_ms: Option<u64>,
    body: &'a Value,
    #[serde(skip_serializing_if = "is_poll")]
    via: Via,
}

fn is_poll(via: &Via) -> bool {
    *via == Via::Poll
}

/// [`Task`]'s serialised form, read back; also its JSON Schema.
#[derive(Deserialize, JsonSchema)]
#[schemars(rename = "Task")]
struct TaskIn {
    #[serde(flatten)]
    task_ref: TaskRef,
    /// Where the task is in its life, whatever the provider calls it.
    phase: Phase,
    /// The raw status value as the provider sent it.
    status: Option<String>,
    /// The failure message, when the provider gave one.
    error: Option<String>,
    /// The result payload (absent or null when there is none).
    result: Option<Value>,
    /// The HTTP status of the answer.
    http_status: u16,
    /// The answer's `Retry-After`, in milliseconds.
    #[serde(default)]
    retry_after_ms: Option<u64>,
    /// The whole body as received.
    body: Value,
    /// Where the observation came from (absent: a poll).
    #[serde(default)]
    via: Via,
}

impl Serialize for Task {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        TaskOut {
            task_ref: &self.task_ref,
            phase: self.phase,
            status: self.status.as_deref(),
            error: self.error.as_deref(),
            result: self.result(),
            http_status: self.http_status,
            retry_after_ms: self.retry_after_ms,
            body: self.body(),
            via: self.via,
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Task {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let read = TaskIn::deserialize(deserializer)?;
        Ok(Task {
            task_ref: read.task_ref,
            phase: read.phase,
            status: read.status.map(Cow::Owned),
            error: read.error,
            result: TaskResult::Owned(read.result.filter(|v| !v.is_null())),
            http_status: read.http_status,
            retry_after_ms: read.retry_after_ms,
            next_poll_ms: None,
            body: Body::Built(read.body),
            via: read.via,
        })
    }
}

impl JsonSchema for Task {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Task".into()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        TaskIn::json_schema(generator)
    }
}

/// Equal when every field is, the result compared by value (wherever it is kept).
impl PartialEq for Task {
    fn eq(&self, other: &Self) -> bool {
        self.task_ref == other.task_ref
            && self.phase == other.phase
            && self.status == other.status
            && self.error == other.error
            && self.result() == other.result()
            && self.http_status == other.http_status
            && self.retry_after_ms == other.retry_after_ms
            && self.body() == other.body()
            && self.via == other.via
    }
}

impl Task {
    /// `result_at`: where the result is in `body` (the spec's pointer).
    pub(crate) fn new(
        task_ref: TaskRef,
        phase: Phase,
        status: Option<Cow<'static, str>>,
        error: Option<String>,
        result_at: Option<&'static str>,
        http_status: u16,
        body: impl Into<Body>,
    ) -> Self {
        let result = result_at.map_or(TaskResult::Owned(None), TaskResult::At);
        let (retry_after_ms, next_poll_ms, body) = (None, None, body.into());
        Self { task_ref, phase, status, error, result, http_status, retry_after_ms, next_poll_ms, body, via: Via::Poll }
    }

    /// The same observation, marked as delivered by a verified webhook.
    pub(crate) fn delivered_by_webhook(mut self) -> Self {
        self.via = Via::Webhook;
        self
    }

    /// Whether this observation came from a poll or a verified webhook.
    pub fn via(&self) -> Via {
        self.via
    }

    /// The observation without its body and result, for a task still queued
    /// or running: what a many-task waiter keeps of an answer that does not
    /// end its wait (phase, raw status, HTTP status and `Retry-After`).
    pub(crate) fn shed_in_progress_body(&mut self) {
        if matches!(self.phase, Phase::Queued | Phase::Running) {
            self.body = Body::Built(Value::Null);
            self.result = TaskResult::Owned(None);
        }
    }

    pub(crate) fn with_retry_after(mut self, hint: Option<std::time::Duration>) -> Self {
        self.retry_after_ms = hint.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        self
    }

    pub(crate) fn with_next_poll(mut self, hint: Option<std::time::Duration>) -> Self {
        self.next_poll_ms = hint.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        self
    }

    /// The provider's suggested delay before the next poll, when its spec
    /// names a header for it (`next-poll-header`) and the answer had one: the
    /// polling engine follows it within the policy's shortest and longest delays.
    pub fn next_poll(&self) -> Option<std::time::Duration> {
        self.next_poll_ms.map(std::time::Duration::from_millis)
    }

    /// The `Retry-After` hint of the answer, if it had one (the polling engine
    /// takes it as a floor for the next delay).
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        self.retry_after_ms.map(std::time::Duration::from_millis)
    }

    /// The reference to re-read or wait on this task.
    pub fn task_ref(&self) -> &TaskRef {
        &self.task_ref
    }

    /// The provider's name.
    pub fn provider(&self) -> &str {
        self.task_ref.provider()
    }

    /// The task id.
    pub fn id(&self) -> &str {
        self.task_ref.id()
    }

    /// The unified phase.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// The raw status value as the provider sent it (`None` if the body had none).
    pub fn status(&self) -> Option<&str> {
        self.status.as_deref()
    }

    /// The failure message, when the provider gave one.
    pub fn error(&self) -> Option<&str> {
        self.error.as_deref()
    }

    /// The result payload (`None` when absent or null).
    pub fn result(&self) -> Option<&Value> {
        match &self.result {
            TaskResult::At(pointer) => self.body().pointer(pointer).filter(|v| !v.is_null()),
            TaskResult::Owned(result) => result.as_ref(),
        }
    }

    /// The HTTP status of the answer.
    pub fn http_status(&self) -> u16 {
        self.http_status
    }

    /// The whole body as received. A many-task wait keeps a finished batch
    /// item's body as its text and builds it here, on first use; text that
    /// a [`Value`] cannot hold (a number beyond `f64`, such as `1e400`)
    /// gives that text as a string rather than losing it.
    pub fn body(&self) -> &Value {
        self.body.get()
    }

    /// Whether the task has finished (succeeded, failed or cancelled).
    pub fn is_terminal(&self) -> bool {
        self.phase.is_terminal()
    }
}
