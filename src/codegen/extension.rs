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

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;

pub use super::values::{DurationText, OneOrMany, Pointer, Scalar};

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
    /// How the provider signs its webhooks and what they carry.
    pub webhook: Option<Webhook>,
}

/// `webhook`: how the provider signs its webhooks and what they carry
/// (specs/README.md, "Webhooks").
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Webhook {
    /// Where the signature is and how it is made.
    pub signature: WebhookSignature,
    /// The signed timestamp header, when the provider sends one.
    pub timestamp: Option<WebhookTimestamp>,
    /// Which secret signs.
    pub secret: WebhookSecret,
    /// The largest body read, in bytes (default 1048576).
    pub max_body: Option<u64>,
    /// Where the task's fields are in a delivery.
    pub payload: WebhookPayload,
    /// The status endpoint never carries the result: a wait that polls a
    /// success first keeps waiting for the webhook up to `grace`.
    #[serde(default)]
    pub result_only_by_webhook: bool,
    /// How long to wait for the webhook after polling saw a success (default 30s).
    pub grace: Option<DurationText>,
    /// Poll delays are multiplied by this while the provider's webhooks arrive (default 1, at least 1).
    pub poll_factor: Option<f64>,
    /// How long after a verified delivery the provider counts as delivering (default 10m).
    pub active_window: Option<DurationText>,
}

/// `webhook.signature`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct WebhookSignature {
    /// The header that carries it.
    pub header: String,
    /// The algorithm, or several accepted ones.
    pub algorithm: OneOrMany<SignatureAlgorithm>,
    /// How the digest is written (default hex).
    #[serde(default)]
    pub encoding: SignatureEncoding,
    /// Text before the digest (`sha256=`).
    #[serde(default)]
    pub prefix: String,
    /// What is signed, in order.
    pub message: OneOrMany<MessagePart>,
}

/// A signature algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum SignatureAlgorithm {
    /// SHA-1 of the message, which must include the secret.
    Sha1,
    /// SHA-256 of the message, which must include the secret.
    Sha256,
    /// HMAC-SHA1 keyed with the secret.
    HmacSha1,
    /// HMAC-SHA256 keyed with the secret.
    HmacSha256,
}

impl SignatureAlgorithm {
    /// Whether the secret is the key (not a part of the message).
    pub fn is_hmac(self) -> bool {
        matches!(self, SignatureAlgorithm::HmacSha1 | SignatureAlgorithm::HmacSha256)
    }
}

/// How a digest is written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SignatureEncoding {
    /// Hexadecimal.
    #[default]
    Hex,
    /// Standard base64.
    Base64,
}

/// A part of the signed message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum MessagePart {
    /// The raw body.
    Body,
    /// The timestamp header's value.
    Timestamp,
    /// The secret.
    Secret,
}

/// `webhook.timestamp`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct WebhookTimestamp {
    /// The header (Unix seconds).
    pub header: String,
    /// How far from now a timestamp may be, either way.
    pub tolerance: DurationText,
}

/// `webhook.secret`: exactly one of `scheme` and `env`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct WebhookSecret {
    /// A security scheme whose credential is the secret (a basic scheme's password).
    pub scheme: Option<String>,
    /// A variable holding a separate webhook secret.
    pub env: Option<String>,
}

/// `webhook.payload`: where a delivery's fields are (JSON pointers).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct WebhookPayload {
    /// The task id.
    pub id: Pointer,
    /// The raw status, mapped with `phases` and `rules`; absent: the outcome
    /// is derived from `failed-if-present` and `http-status`.
    pub status: Option<Pointer>,
    /// The result.
    pub result: Option<Pointer>,
    /// Candidates for the failure message.
    #[serde(default)]
    pub error: OneOrMany<Pointer>,
    /// Without `status`: failed when any of these is present and not null.
    #[serde(default)]
    pub failed_if_present: OneOrMany<Pointer>,
    /// Without `status`: failed when the number here is 400 or more.
    pub http_status: Option<Pointer>,
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
    /// A response header in which the provider suggests the delay before the
    /// next poll, in milliseconds (OpenAI's `openai-poll-after-ms`, Azure's
    /// `retry-after-ms` on a 200); the engine follows it within the policy's
    /// shortest and longest delays.
    pub next_poll_header: Option<String>,
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
}
