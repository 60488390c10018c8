//! The `x-taskpoll` extension (specs/README.md) as typed data.
//!
//! The extension is deserialised into these types, which deny unknown fields,
//! so a misspelt or misplaced key fails with its path and the accepted keys
//! (`x-taskpoll.poll.polite: unknown field `intial-delay`, expected one of
//! ...`). The same types give the extension's JSON Schema
//! ([`json_schema()`], published as `specs/x-taskpoll.schema.json`).
//! `Extension::resolve` then checks what the types cannot say (operations,
//! parameters and schemes that exist, delays that fit) and gives the
//! `Provider` that the generator writes.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::Deserialize;
use serde::de::{self, Deserializer, IntoDeserializer, SeqAccess, Visitor};
use serde_json::Value;

use super::naming::{is_snake_ident, module_name};
use super::openapi::{Operations, ParamLocation, ParamType};

/// The `x-taskpoll` extension at the top level of a spec.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
#[schemars(
    title = "x-taskpoll",
    description = "taskpoll's extension of an OpenAPI 3.0.3 provider spec (specs/README.md)."
)]
pub struct Extension {
    /// Provider name in task references (`deepomatic:42`), the CLI and the
    /// module under `generated::`: lower-case ascii letters, digits, `-`, `_`.
    pub name: String,
    /// Human name (default: `name`).
    pub title: Option<String>,
    /// An environment variable that overrides the base URL.
    pub base_url_env: Option<String>,
    /// One environment variable holding `scheme://user:pass@host`.
    pub credentials_url_env: Option<CredentialsUrlEnv>,
    /// The provider answers PENDING for unknown or expired ids (Celery); the
    /// pending-forever guard is on by default.
    #[serde(default)]
    pub celery_backed: bool,
    /// The operation that reads one task.
    pub get: Get,
    /// The operation that reads several tasks at once.
    pub many: Option<Many>,
    /// The request budget shared by every wait on this provider.
    pub rate: Option<Rate>,
    /// Where the interesting fields of a task body are.
    pub task: TaskShape,
    /// Where an error answer (a 4xx/5xx that is not a task) puts its message.
    #[serde(default)]
    pub error_message: OneOrMany<Pointer>,
    /// Raw status values per phase, matched case-insensitively.
    pub phases: Phases,
    /// Ordered rules; the first match wins over `phases`.
    #[serde(default)]
    pub rules: Vec<Rule>,
    /// Polling policies.
    #[serde(default)]
    pub poll: Poll,
}

/// `credentials-url-env`: one variable holding `scheme://user:pass@host`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct CredentialsUrlEnv {
    /// The variable (`CLOUDINARY_URL`).
    pub var: String,
    /// The `http`/`basic` security scheme fed by `user:pass`.
    pub scheme: String,
    /// The server variable fed by `host`.
    pub server_variable: String,
}

/// `get`: the operation that reads one task.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Get {
    /// The operationId.
    pub operation: String,
    /// Where the task id goes.
    pub id: IdSpec,
    /// Extra inputs a task reference may carry.
    #[serde(default)]
    pub inputs: Vec<Input>,
}

/// `get.id`: where the task id goes.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct IdSpec {
    /// Where the id goes.
    #[serde(rename = "in")]
    pub location: Location,
    /// The parameter or JSON body field.
    pub name: String,
    /// Characters refused in ids by default that this provider's ids may contain.
    #[serde(default)]
    pub allow: OneOrMany<AllowedIdChar>,
}

/// Where an id or an input goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Location {
    /// A path parameter.
    Path,
    /// A query parameter.
    Query,
    /// A field of the JSON request body.
    Body,
}

impl Location {
    /// As written in the spec (and in [`crate::spec::GetSpec::id_location`]).
    pub fn as_str(self) -> &'static str {
        match self {
            Location::Path => "path",
            Location::Query => "query",
            Location::Body => "body",
        }
    }
}

/// A character refused in ids by default (specs/README.md, "Task ids").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
pub enum AllowedIdChar {
    /// `/`.
    #[serde(rename = "/")]
    Slash,
    /// `;`.
    #[serde(rename = ";")]
    Semicolon,
}

/// `get.inputs[]`: an extra input a task reference may carry (`?name=value`).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Input {
    /// Its name in the spec and in task references.
    pub name: String,
    /// Where it goes.
    #[serde(rename = "in")]
    pub location: Location,
    /// What it is.
    #[serde(default)]
    pub description: String,
}

/// `many`: the operation that reads several tasks at once.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Many {
    /// The operationId.
    pub operation: String,
    /// The array query parameter that takes the ids.
    pub ids: String,
    /// Ids per request (default 100).
    pub max_ids: Option<u64>,
    /// Pointer to the array of task bodies in a page.
    pub items: Pointer,
    /// Pointer to the id inside one item.
    pub id: Pointer,
    /// Pointer to the next page's absolute URL (null or absent: last page).
    pub next: Option<Pointer>,
    /// Query parameters copied from the `next` URL into the next call.
    #[serde(default)]
    pub page_params: OneOrMany<String>,
    /// The page parameter that sets the page size (one of `page-params`).
    pub page_size: Option<String>,
}

/// `rate`: the request budget shared by every wait on this provider.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Rate {
    /// Sustained requests per second (above 0, at most 1e6).
    pub per_second: f64,
    /// Requests allowed at once after a quiet spell (default: `per-second`, rounded up).
    pub burst: Option<u64>,
}

/// `task`: where the fields of a task body are (JSON pointers).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct TaskShape {
    /// Pointer to the raw status string.
    pub status: Pointer,
    /// Pointer to the task id in the body.
    pub id: Option<Pointer>,
    /// Pointers tried in order for the failure message.
    #[serde(default)]
    pub error: OneOrMany<Pointer>,
    /// Pointer to the result payload.
    pub result: Option<Pointer>,
    /// Non-2xx HTTP statuses whose JSON body is still a task.
    #[serde(default)]
    pub task_body_statuses: OneOrMany<u16>,
}

/// `phases`: raw status values per phase.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Phases {
    /// Accepted, not started.
    #[serde(default)]
    pub queued: OneOrMany<Scalar>,
    /// Started.
    #[serde(default)]
    pub running: OneOrMany<Scalar>,
    /// Finished with a result.
    #[serde(default)]
    pub succeeded: OneOrMany<Scalar>,
    /// Finished with an error.
    #[serde(default)]
    pub failed: OneOrMany<Scalar>,
    /// Stopped before finishing.
    #[serde(default)]
    pub cancelled: OneOrMany<Scalar>,
    /// Known values that say nothing about progress.
    #[serde(default)]
    pub unknown: OneOrMany<Scalar>,
}

impl Phases {
    /// Each phase with its values, in the order the descriptor lists them.
    pub fn by_phase(&self) -> [(PhaseName, &[Scalar]); 6] {
        [
            (PhaseName::Cancelled, &self.cancelled.0),
            (PhaseName::Failed, &self.failed.0),
            (PhaseName::Queued, &self.queued.0),
            (PhaseName::Running, &self.running.0),
            (PhaseName::Succeeded, &self.succeeded.0),
            (PhaseName::Unknown, &self.unknown.0),
        ]
    }
}

/// A phase (`crate::Phase`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum PhaseName {
    /// `Phase::Queued`.
    Queued,
    /// `Phase::Running`.
    Running,
    /// `Phase::Succeeded`.
    Succeeded,
    /// `Phase::Failed`.
    Failed,
    /// `Phase::Cancelled`.
    Cancelled,
    /// `Phase::Unknown`.
    Unknown,
}

/// `rules[]`: a mapping that looks at several fields; wins over `phases`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Pointer -> value; all must match (case-insensitively).
    pub when: BTreeMap<Pointer, Scalar>,
    /// The phase when they do.
    pub phase: PhaseName,
    /// Pointer to the failure message for this rule.
    pub error: Option<Pointer>,
}

/// `poll`: polling policies.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Poll {
    /// The provider's default policy.
    pub polite: Option<PolicyDoc>,
    /// Default pending-forever guard (time spent queued).
    pub pending_budget: Option<DurationText>,
    /// Named parity presets (snake_case names).
    #[serde(default)]
    pub presets: BTreeMap<String, PolicyDoc>,
}

/// A polling policy (`poll.polite`, `poll.presets.<name>`).
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct PolicyDoc {
    /// Delay before the first poll (default 0s).
    pub first_poll: Option<DurationText>,
    /// First exponential delay (default 1s).
    pub initial_delay: Option<DurationText>,
    /// Growth factor, at least 1 (default 1.5).
    pub factor: Option<f64>,
    /// Cap on the exponential part (default 15s).
    pub max_delay: Option<DurationText>,
    /// Randomisation of each delay (default none).
    #[serde(default)]
    pub jitter: Jitter,
    /// Constant added after jitter and cap (default 0s).
    pub offset: Option<DurationText>,
    /// Fixed delays used before the exponential part.
    #[serde(default)]
    pub delays: OneOrMany<DurationText>,
    /// Suggested deadline (default 300s).
    pub deadline: Option<DurationText>,
}

/// Jitter (`crate::Jitter`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Jitter {
    /// Exactly the delay.
    #[default]
    None,
    /// Uniform in `[0, d]`.
    Full,
    /// `d/2` plus uniform in `[0, d/2]`.
    Equal,
}

/// A JSON pointer (`/status`, `/result/errorMessage`; empty: the whole body).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(try_from = "String")]
pub struct Pointer(pub String);

impl TryFrom<String> for Pointer {
    type Error = String;
    fn try_from(p: String) -> Result<Self, String> {
        if p.is_empty() || p.starts_with('/') {
            Ok(Self(p))
        } else {
            Err(format!("`{p}` is not a JSON pointer (it must start with `/`)"))
        }
    }
}

impl JsonSchema for Pointer {
    fn schema_name() -> Cow<'static, str> {
        "Pointer".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": "^(/.*)?$",
            "description": "A JSON pointer (`/status`); empty for the whole body."
        })
    }
}

/// A duration: `50ms`, `1s`, `1.5s`, `2m`, `1h` (milliseconds once read).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct DurationText(pub u64);

impl TryFrom<String> for DurationText {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        duration_ms(&text).map(Self)
    }
}

impl JsonSchema for DurationText {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": "^\\s*[0-9]+(\\.[0-9]+)?\\s*(ms|s|m|h)\\s*$",
            "description": "A duration: `50ms`, `1s`, `1.5s`, `2m`, `1h`."
        })
    }
}

/// Parses `50ms`, `1s`, `1.5s`, `2m`, `1h` into milliseconds.
pub fn duration_ms(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (number, unit) = text
        .find(|c: char| c.is_ascii_alphabetic())
        .map(|i| text.split_at(i))
        .ok_or_else(|| format!("`{text}` needs a unit (ms, s, m, h)"))?;
    let value: f64 = number.trim().parse().map_err(|_| format!("`{text}` is not a duration"))?;
    let scale = match unit {
        "ms" => 1.0,
        "s" => 1000.0,
        "m" => 60_000.0,
        "h" => 3_600_000.0,
        _ => return Err(format!("`{text}`: unknown unit `{unit}` (ms, s, m, h)")),
    };
    let ms = value * scale;
    if !ms.is_finite() || !(0.0..=1e12).contains(&ms) {
        return Err(format!("`{text}` is out of range"));
    }
    Ok(ms.round() as u64)
}

/// A raw status value: a string, or a number or boolean read as its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scalar(pub String);

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ScalarVisitor;
        impl Visitor<'_> for ScalarVisitor {
            type Value = Scalar;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string, number or boolean")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Scalar, E> {
                Ok(Scalar(Value::from(v).to_string()))
            }
        }
        deserializer.deserialize_any(ScalarVisitor)
    }
}

impl JsonSchema for Scalar {
    fn schema_name() -> Cow<'static, str> {
        "Scalar".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({"type": ["string", "number", "boolean"]})
    }
}

/// One value or a list of them (`error: /error` or `error: [/error, /detail]`).
///
/// Hand-written rather than `#[serde(untagged)]`: an untagged enum reports
/// only "did not match any variant", losing the item's own error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OneOrMany<T>(pub Vec<T>);

impl<T> Default for OneOrMany<T> {
    fn default() -> Self {
        Self(Vec::new())
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for OneOrMany<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct OneOrManyVisitor<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for OneOrManyVisitor<T> {
            type Value = OneOrMany<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a value or a list of values")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(OneOrMany(items))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(OneOrMany(Vec::new()))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                T::deserialize(v.into_deserializer()).map(|one| OneOrMany(vec![one]))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
                T::deserialize(v.into_deserializer()).map(|one| OneOrMany(vec![one]))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                T::deserialize(v.into_deserializer()).map(|one| OneOrMany(vec![one]))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                T::deserialize(v.into_deserializer()).map(|one| OneOrMany(vec![one]))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                T::deserialize(v.into_deserializer()).map(|one| OneOrMany(vec![one]))
            }
        }
        deserializer.deserialize_any(OneOrManyVisitor(PhantomData))
    }
}

impl<T: JsonSchema> JsonSchema for OneOrMany<T> {
    fn inline_schema() -> bool {
        true
    }
    fn schema_name() -> Cow<'static, str> {
        format!("OneOrMany_{}", T::schema_name()).into()
    }
    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let one = generator.subschema_for::<T>();
        let many = generator.subschema_for::<Vec<T>>();
        json_schema!({"anyOf": [one, many]})
    }
}

/// The JSON Schema of a spec file as far as taskpoll is concerned: an object
/// whose `x-taskpoll` is an [`Extension`] (published as
/// `specs/x-taskpoll.schema.json`, for editors; the rest of the document is
/// OpenAPI's business).
pub fn json_schema() -> Value {
    let mut extension = schemars::schema_for!(Extension).to_value();
    let (defs, dialect) = match extension.as_object_mut() {
        Some(root) => (root.remove("$defs"), root.remove("$schema")),
        None => (None, None),
    };
    serde_json::json!({
        "$schema": dialect,
        "title": "taskpoll provider spec",
        "description": "An OpenAPI 3.0.3 document with taskpoll's `x-taskpoll` extension (specs/README.md). Only the extension is described here.",
        "type": "object",
        "required": ["x-taskpoll"],
        "properties": {"x-taskpoll": extension},
        "$defs": defs,
    })
}

// ---------------------------------------------------------------------------
// Placement of the `x-taskpoll*` keys

/// Where `x-taskpoll*` keys may appear (JSON pointer patterns, `*` = any key).
const PLACES: &[(&str, &str)] = &[
    ("/x-taskpoll", "the extension itself, at the top level"),
    ("/servers/0/variables/*/x-taskpoll-env", "the variable that sets a server variable"),
    ("/servers/0/variables/*/x-taskpoll-required", "whether a server variable must be set"),
    ("/components/securitySchemes/*/x-taskpoll-env", "the variables that feed a security scheme"),
];

/// Refuses an `x-taskpoll…` key anywhere it has no meaning (a typo such as
/// `x-taskpoll-evn`, or `x-taskpoll-env` on the wrong object), naming where
/// such keys are accepted.
pub fn check_placement(doc: &Value) -> Result<(), String> {
    fn walk(value: &Value, at: &mut Vec<String>) -> Result<(), String> {
        match value {
            Value::Object(map) => {
                for (key, child) in map {
                    at.push(key.clone());
                    if key.to_ascii_lowercase().starts_with("x-taskpoll") && !allowed(at) {
                        let places: Vec<String> = PLACES.iter().map(|(p, what)| format!("`{p}` ({what})")).collect();
                        return Err(format!(
                            "`{}`: unknown or misplaced key `{key}`; taskpoll keys go at {}",
                            display_path(at),
                            places.join(", ")
                        ));
                    }
                    // Examples are data; the extension's own content is checked by its types.
                    let skip = key == "example" || key == "examples" || key == "x-taskpoll";
                    if !skip {
                        walk(child, at)?;
                    }
                    at.pop();
                }
            }
            Value::Array(items) => {
                for (i, child) in items.iter().enumerate() {
                    at.push(i.to_string());
                    walk(child, at)?;
                    at.pop();
                }
            }
            _ => {}
        }
        Ok(())
    }
    fn allowed(at: &[String]) -> bool {
        PLACES.iter().any(|(pattern, _)| {
            let parts: Vec<&str> = pattern.trim_start_matches('/').split('/').collect();
            parts.len() == at.len() && parts.iter().zip(at).all(|(p, a)| *p == "*" || p == a)
        })
    }
    walk(doc, &mut Vec::new())
}

fn display_path(at: &[String]) -> String {
    let mut out = String::new();
    for part in at {
        if part.chars().all(|c| c.is_ascii_digit()) {
            out.push_str(&format!("[{part}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(part);
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Reading and checking

/// What a security scheme sends (`crate::spec::SchemeKind`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SchemeKind {
    /// `Authorization: Basic …`.
    Basic,
    /// `Authorization: Bearer …` (also OAuth2 and OpenID Connect).
    Bearer,
    /// The key in the named header.
    ApiKeyHeader(String),
}

/// A security scheme of the spec.
#[derive(Debug, Clone)]
pub(crate) struct Scheme {
    /// Its name in `components.securitySchemes`.
    pub name: String,
    /// What it sends.
    pub kind: SchemeKind,
    /// The variables that feed it (username then password for basic).
    pub env: Vec<String>,
}

/// `x-taskpoll-env` of a basic scheme.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct BasicEnv {
    username: String,
    password: String,
}

/// A variable of `servers[0]`.
#[derive(Debug, Clone)]
pub(crate) struct ServerVariable {
    /// Its name.
    pub name: String,
    /// Its default.
    pub default: String,
    /// `x-taskpoll-env`.
    pub env: Option<String>,
    /// `x-taskpoll-required`.
    pub required: bool,
}

/// A polling policy with its defaults applied, in milliseconds.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Policy {
    /// Delay before the first poll.
    pub first_poll_ms: u64,
    /// Fixed delays.
    pub delays_ms: Vec<u64>,
    /// First exponential delay.
    pub initial_delay_ms: u64,
    /// Growth factor.
    pub factor: f64,
    /// Cap.
    pub max_delay_ms: u64,
    /// Jitter.
    pub jitter: Jitter,
    /// Offset.
    pub offset_ms: u64,
    /// Deadline.
    pub deadline_ms: u64,
}

/// Everything the descriptor needs: the extension, checked against the
/// document, with defaults applied.
#[derive(Debug, Clone)]
pub(crate) struct Provider {
    /// The extension as written.
    pub ext: Extension,
    /// `x-taskpoll.name`.
    pub name: String,
    /// The title (default: the name).
    pub title: String,
    /// The module under `generated::`.
    pub module: String,
    /// `info.title`.
    pub description: String,
    /// `servers[0].url` without a trailing `/`.
    pub base_url: String,
    /// The variables of `servers[0]`, by name.
    pub server_variables: Vec<ServerVariable>,
    /// Characters allowed in ids (`/`, `;`).
    pub id_allow: String,
    /// Ids per batch request.
    pub max_ids: u64,
    /// The request budget: (per second, burst).
    pub rate: Option<(f64, u32)>,
    /// Raw status (lower case) to phase, by phase then spec order.
    pub phases: Vec<(String, PhaseName)>,
    /// `poll.polite` with defaults.
    pub polite: Policy,
    /// `poll.pending-budget`.
    pub pending_budget_ms: Option<u64>,
    /// `poll.presets`, by name.
    pub presets: Vec<(String, Policy)>,
    /// Security schemes, by name.
    pub schemes: Vec<Scheme>,
}

impl Extension {
    /// Reads `x-taskpoll` from a document; errors give the key path and, for
    /// an unknown key, the accepted ones.
    pub fn read(doc: &Value) -> Result<Self, String> {
        let ext = doc.get("x-taskpoll").ok_or("x-taskpoll: missing (see specs/README.md)")?;
        serde_path_to_error::deserialize(ext).map_err(|e| {
            let path = e.path().to_string();
            let at = if path == "." { "x-taskpoll".to_string() } else { format!("x-taskpoll.{path}") };
            format!("{at}: {}", e.into_inner())
        })
    }

    /// Checks the extension against the document and applies defaults.
    pub(crate) fn resolve(self, api: &openapiv3::OpenAPI, ops: &Operations) -> Result<Provider, String> {
        let name = self.name.clone();
        if name.is_empty()
            || !name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        {
            return Err(format!("`name` must be lower-case ascii letters, digits, `-` or `_`, got `{name}`"));
        }
        let server = api.servers.first().ok_or("the spec needs `servers[0]` (the default base URL)")?;
        let base_url = server.url.trim_end_matches('/').to_string();
        let mut server_variables: Vec<ServerVariable> = Vec::new();
        for (var, spec) in server.variables.iter().flatten() {
            let at = format!("servers[0].variables.{var}");
            let env = match spec.extensions.get("x-taskpoll-env") {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) => Some(s.clone()),
                Some(_) => return Err(format!("`{at}.x-taskpoll-env` must be a string")),
            };
            let required = match spec.extensions.get("x-taskpoll-required") {
                None | Some(Value::Null) => false,
                Some(Value::Bool(b)) => *b,
                Some(_) => return Err(format!("`{at}.x-taskpoll-required` must be true or false")),
            };
            server_variables.push(ServerVariable { name: var.clone(), default: spec.default.clone(), env, required });
        }
        server_variables.sort_by(|a, b| a.name.cmp(&b.name));
        for placeholder in placeholders(&base_url) {
            if !server_variables.iter().any(|v| v.name == placeholder) {
                return Err(format!("servers[0].url uses `{{{placeholder}}}` but declares no such variable"));
            }
        }
        let schemes = schemes(api)?;
        if let Some(url) = &self.credentials_url_env {
            if !schemes.iter().any(|s| s.name == url.scheme && s.kind == SchemeKind::Basic) {
                return Err(format!("`credentials-url-env.scheme`: `{}` is not an http basic scheme", url.scheme));
            }
            if !server_variables.iter().any(|v| v.name == url.server_variable) {
                return Err(format!(
                    "`credentials-url-env.server-variable`: no server variable `{}`",
                    url.server_variable
                ));
            }
        }

        let mut id_allow = String::new();
        for allowed in &self.get.id.allow.0 {
            id_allow.push(match allowed {
                AllowedIdChar::Slash => '/',
                AllowedIdChar::Semicolon => ';',
            });
        }
        self.check_operations(ops, &schemes)?;

        let max_ids = match self.many.as_ref().and_then(|m| m.max_ids) {
            Some(0) => return Err("`many.max-ids` must be at least 1".into()),
            Some(n) => n,
            None => 100,
        };
        let rate = match &self.rate {
            None => None,
            Some(r) => {
                if !(r.per_second.is_finite() && r.per_second > 0.0 && r.per_second <= 1e6) {
                    return Err(
                        "`rate.per-second` must be a number of requests per second above 0 (at most 1e6)".into()
                    );
                }
                let burst = match r.burst {
                    Some(b) if (1..=1_000_000).contains(&b) => b as u32,
                    Some(_) => return Err("`rate.burst` must be a whole number from 1 to 1000000".into()),
                    None => r.per_second.ceil().max(1.0) as u32,
                };
                Some((r.per_second, burst))
            }
        };

        let mut phases: Vec<(String, PhaseName)> = Vec::new();
        for (phase, values) in self.phases.by_phase() {
            for raw in values {
                let lower = raw.0.to_lowercase();
                if let Some((_, other)) = phases.iter().find(|(r, _)| *r == lower) {
                    return Err(format!(
                        "`phases`: status `{}` is listed under two phases ({other:?} and {phase:?})",
                        raw.0
                    ));
                }
                phases.push((lower, phase));
            }
        }

        let polite = policy(self.poll.polite.as_ref().unwrap_or(&PolicyDoc::default()), "poll.polite")?;
        let mut presets = Vec::new();
        for (preset, doc) in &self.poll.presets {
            if !is_snake_ident(preset) {
                return Err(format!("`poll.presets`: preset name `{preset}` must be a snake_case identifier"));
            }
            presets.push((preset.clone(), policy(doc, &format!("poll.presets.{preset}"))?));
        }

        Ok(Provider {
            title: self.title.clone().unwrap_or_else(|| name.clone()),
            module: module_name(&name),
            description: api.info.title.clone(),
            name,
            base_url,
            server_variables,
            id_allow,
            max_ids,
            rate,
            phases,
            polite,
            pending_budget_ms: self.poll.pending_budget.map(|d| d.0),
            presets,
            schemes,
            ext: self,
        })
    }

    /// Checks that the extension names operations, parameters and schemes that exist.
    fn check_operations(&self, ops: &Operations, schemes: &[Scheme]) -> Result<(), String> {
        let get = ops.get(&self.get.operation).map_err(|e| format!("`get.operation`: {e}"))?;
        let op_name = &self.get.operation;
        let check = |name: &str, location: Location, at: &str| -> Result<(), String> {
            match location {
                Location::Body => {
                    let ty = get
                        .body_type
                        .as_ref()
                        .ok_or(format!("`{at}` is `in: body` but `{op_name}` has no JSON body"))?;
                    if !get.body_properties.iter().any(|p| p == name) {
                        return Err(format!("`{at}`: body schema `{ty}` has no property `{name}`"));
                    }
                }
                Location::Path | Location::Query => {
                    let wanted = if location == Location::Path { ParamLocation::Path } else { ParamLocation::Query };
                    if get.params.get(name).is_none_or(|p| p.location != wanted) {
                        return Err(format!("`{at}`: `{op_name}` has no {} parameter `{name}`", location.as_str()));
                    }
                }
            }
            Ok(())
        };
        check(&self.get.id.name, self.get.id.location, "get.id")?;
        for (i, input) in self.get.inputs.iter().enumerate() {
            check(&input.name, input.location, &format!("get.inputs[{i}]"))?;
        }
        if let Some(many) = &self.many {
            let op = ops.get(&many.operation).map_err(|e| format!("`many.operation`: {e}"))?;
            if !op.params.get(&many.ids).is_some_and(|p| p.location == ParamLocation::Query && p.ty == ParamType::Array)
            {
                return Err(format!("`many.ids`: `{}` has no array query parameter `{}`", many.operation, many.ids));
            }
            for page in &many.page_params.0 {
                if op.params.get(page).is_none_or(|p| p.location != ParamLocation::Query) {
                    return Err(format!("`many.page-params`: `{}` has no query parameter `{page}`", many.operation));
                }
            }
            if let Some(size) = &many.page_size
                && !many.page_params.0.contains(size)
            {
                return Err(format!("`many.page-size`: `{size}` must be one of `many.page-params`"));
            }
        }
        for op in ops.0.values() {
            for alternative in op.security.iter().flatten() {
                for scheme in alternative {
                    if !schemes.iter().any(|s| &s.name == scheme) {
                        return Err(format!(
                            "{} {}: security names unknown scheme `{scheme}`",
                            op.method.to_uppercase(),
                            op.path
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

fn placeholders(url: &str) -> Vec<String> {
    url.split('{').skip(1).filter_map(|s| s.split_once('}').map(|(name, _)| name.to_string())).collect()
}

fn schemes(api: &openapiv3::OpenAPI) -> Result<Vec<Scheme>, String> {
    use openapiv3::{APIKeyLocation, ReferenceOr, SecurityScheme};
    let mut out = Vec::new();
    let Some(components) = &api.components else { return Ok(out) };
    for (name, scheme) in &components.security_schemes {
        let ReferenceOr::Item(scheme) = scheme else {
            return Err(format!("security scheme `{name}`: references are not supported"));
        };
        let (kind, extensions) = match scheme {
            SecurityScheme::HTTP { scheme: http, extensions, .. } => match http.to_lowercase().as_str() {
                "basic" => (SchemeKind::Basic, extensions),
                "bearer" => (SchemeKind::Bearer, extensions),
                other => return Err(format!("security scheme `{name}`: http scheme `{other}` is not supported")),
            },
            SecurityScheme::OAuth2 { extensions, .. } | SecurityScheme::OpenIDConnect { extensions, .. } => {
                (SchemeKind::Bearer, extensions)
            }
            SecurityScheme::APIKey { location, name: header, extensions, .. } => {
                if *location != APIKeyLocation::Header {
                    return Err(format!("security scheme `{name}`: only `in: header` api keys are supported"));
                }
                if header.is_empty() || !header.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
                    return Err(format!("security scheme `{name}`: `{header}` is not a header name"));
                }
                (SchemeKind::ApiKeyHeader(header.clone()), extensions)
            }
        };
        let at = format!("components.securitySchemes.{name}.x-taskpoll-env");
        let env = match extensions.get("x-taskpoll-env") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::String(s)) => vec![s.clone()],
            Some(value @ Value::Object(_)) if kind == SchemeKind::Basic => {
                let basic: BasicEnv = serde_path_to_error::deserialize(value).map_err(|e| {
                    let path = e.path().to_string();
                    let at = if path == "." { at.clone() } else { format!("{at}.{path}") };
                    format!("`{at}`: {}", e.into_inner())
                })?;
                vec![basic.username, basic.password]
            }
            Some(_) => {
                return Err(format!(
                    "`{at}` must be a variable name (or `{{username: VAR, password: VAR}}` for an http basic scheme)"
                ));
            }
        };
        out.push(Scheme { name: name.clone(), kind, env });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

fn policy(doc: &PolicyDoc, at: &str) -> Result<Policy, String> {
    let ms = |d: Option<DurationText>, default: u64| d.map_or(default, |d| d.0);
    let factor = doc.factor.unwrap_or(1.5);
    if !factor.is_finite() || factor < 1.0 {
        return Err(format!("`{at}.factor` must be a number >= 1"));
    }
    let policy = Policy {
        first_poll_ms: ms(doc.first_poll, 0),
        delays_ms: doc.delays.0.iter().map(|d| d.0).collect(),
        initial_delay_ms: ms(doc.initial_delay, 1000),
        factor,
        max_delay_ms: ms(doc.max_delay, 15_000),
        jitter: doc.jitter,
        offset_ms: ms(doc.offset, 0),
        deadline_ms: ms(doc.deadline, 300_000),
    };
    if policy.initial_delay_ms > policy.max_delay_ms {
        return Err(format!("`{at}`: initial-delay is larger than max-delay"));
    }
    if policy.deadline_ms == 0 {
        return Err(format!("`{at}.deadline` must be positive"));
    }
    Ok(policy)
}
