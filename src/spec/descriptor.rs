//! The provider descriptors: plain data, no logic imports (the spec-data
//! layer of ARCHITECTURE.md).

use std::fmt;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Where a task is in its life, whatever the provider calls it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Phase {
    /// Accepted, not started (or, at Celery-backed providers, possibly unknown).
    Queued,
    /// Being worked on.
    Running,
    /// Finished well; the result is available.
    Succeeded,
    /// Finished badly; see the failure message.
    Failed,
    /// Stopped before finishing.
    Cancelled,
    /// A status value the spec does not list; the raw value is kept on the task.
    Unknown,
}

impl Phase {
    /// Succeeded, Failed or Cancelled.
    pub fn is_terminal(self) -> bool {
        matches!(self, Phase::Succeeded | Phase::Failed | Phase::Cancelled)
    }

    /// Lower-case name (`queued`, `running`, …), as in JSON output.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Queued => "queued",
            Phase::Running => "running",
            Phase::Succeeded => "succeeded",
            Phase::Failed => "failed",
            Phase::Cancelled => "cancelled",
            Phase::Unknown => "unknown",
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Declares a descriptor type: its fields are the crate's, each has a
/// public `const` accessor with the field's doc, and `XFields`, a twin with
/// public fields, lets generated code (in this crate or a user's) write it as
/// a literal: `XFields { .. }.build()` is a `const fn`, so a provider
/// generated in another crate is still a `static` (see `__private`).
macro_rules! descriptor {
    (
        $(#[$meta:meta])*
        pub struct $name:ident / $fields:ident {
            $( $(#[$fmeta:meta])* $field:ident: $ty:ty ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        pub struct $name {
            $( $(#[$fmeta])* pub(crate) $field: $ty, )*
        }

        impl $name {
            $( $(#[$fmeta])* pub const fn $field(&self) -> $ty { self.$field } )*
        }

        #[doc(hidden)]
        #[allow(missing_docs, missing_debug_implementations)]
        pub struct $fields {
            $( pub $field: $ty, )*
        }

        impl $fields {
            #[doc(hidden)]
            pub const fn build(self) -> $name {
                $name { $( $field: self.$field, )* }
            }
        }
    };
}

descriptor! {
    /// Everything taskpoll knows about one provider, generated from its spec.
    #[derive(Debug)]
    #[non_exhaustive]
    pub struct ProviderSpec / ProviderSpecFields {
        /// Name used in task references and on the command line (`deepomatic`).
        name: &'static str,
        /// Human name (`Deepomatic`).
        title: &'static str,
        /// The generated module (`crate::generated::<module>`).
        module: &'static str,
        /// `servers[0].url`, possibly with `{variable}` placeholders.
        default_base_url: &'static str,
        /// The variables of `servers[0]`.
        server_variables: &'static [ServerVariable],
        /// An environment variable that overrides the base URL.
        base_url_env: Option<&'static str>,
        /// An environment variable holding `scheme://user:pass@host` credentials.
        credentials_url: Option<CredentialsUrl>,
        /// The provider answers PENDING for unknown or expired ids (Celery).
        celery_backed: bool,
        /// The operation that reads one task.
        get: GetSpec,
        /// The operation that reads several tasks at once, if any.
        many: Option<ManySpec>,
        /// The request budget the provider should be held to (`x-taskpoll.rate`),
        /// shared by every wait on it; `None`: taskpoll's default.
        rate: Option<RateSpec>,
        /// Where the interesting fields are in a task body.
        task: TaskShape,
        /// Where an error answer (a 4xx/5xx that is not a task) puts its message,
        /// tried in order before the generic `/message`, `/detail`, `/error`.
        error_message: &'static [&'static str],
        /// Raw status (lower case) to phase.
        phases: &'static [(&'static str, Phase)],
        /// Ordered rules that win over `phases`.
        rules: &'static [Rule],
        /// The provider's polite default polling policy.
        polite: PolicySpec,
        /// Default pending-forever budget, in milliseconds.
        pending_budget_ms: Option<u64>,
        /// Named parity presets.
        presets: &'static [(&'static str, PolicySpec)],
        /// Security schemes.
        schemes: &'static [Scheme],
        /// Security alternatives per operation id.
        security: &'static [(&'static str, &'static [&'static [&'static str]])],
        /// Every operation of the spec.
        operations: &'static [OperationSpec],
        /// Every documented example body of the spec.
        examples: &'static [Example],
        /// How the provider signs the webhooks it sends, and what they carry
        /// (`x-taskpoll.webhook`); `None`: it sends none taskpoll can verify.
        webhook: Option<WebhookSpec>,
        /// How the generated module connects a configured client: transport's
        /// `Connect`, type-erased because the descriptors sit below transport.
        #[doc(hidden)]
        connect: &'static (dyn std::any::Any + Send + Sync),
        #[doc(hidden)]
        parse_documented: fn(&str, &str) -> Option<Result<(), serde_json::Error>>,
    }
}

impl ProviderSpec {
    /// `TASKPOLL_<PROVIDER>_BASE_URL`: the base-URL override every provider
    /// reads from the environment, whether or not its spec names a variable of
    /// its own (that one wins when both are set).
    pub fn generic_base_url_env(&self) -> String {
        let name: String =
            self.name.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' }).collect();
        format!("TASKPOLL_{name}_BASE_URL")
    }

    /// The operation with this id.
    pub fn operation(&self, id: &str) -> Option<&'static OperationSpec> {
        self.operations.iter().find(|op| op.id == id)
    }

    /// The named scheme.
    pub fn scheme(&self, name: &str) -> Option<&'static Scheme> {
        self.schemes.iter().find(|s| s.name == name)
    }

    /// A named parity preset of this provider.
    pub fn preset(&self, name: &str) -> Option<&'static PolicySpec> {
        self.presets.iter().find(|(n, _)| *n == name).map(|(_, p)| p)
    }

    /// The pending-forever guard that applies by default (Celery-backed providers only).
    pub fn default_pending_budget(&self) -> Option<Duration> {
        if self.celery_backed { self.pending_budget_ms.map(Duration::from_millis) } else { None }
    }

    /// Parses a JSON body into the generated type of the named component
    /// schema; `None` when the spec has no such response schema.
    pub fn parse_as_schema(&self, schema: &str, json: &str) -> Option<Result<(), serde_json::Error>> {
        (self.parse_documented)(schema, json)
    }

    /// The security alternatives of the read operation (each a list of
    /// scheme names that must all be sent); empty when it needs no credential.
    pub fn get_security(&self) -> &'static [&'static [&'static str]] {
        self.security_of(self.get.operation)
    }

    /// The security alternatives of an operation, as the spec lists them.
    pub(crate) fn security_of(&self, operation: &str) -> &'static [&'static [&'static str]] {
        self.security.iter().find(|(op, _)| *op == operation).map_or(&[], |(_, alternatives)| *alternatives)
    }

    /// The security alternatives of an operation that needs a credential;
    /// `None` when it needs none (no alternatives, or an empty one).
    pub(crate) fn required_security(&self, operation: &str) -> Option<&'static [&'static [&'static str]]> {
        let alternatives = self.security_of(operation);
        (!alternatives.is_empty() && alternatives.iter().all(|alt| !alt.is_empty())).then_some(alternatives)
    }

    /// The sets of environment variables that each suffice to configure this
    /// provider from the environment, smallest first within the spec's order
    /// of security alternatives: the variables of one alternative's schemes,
    /// plus those of required server variables, or the credentials-URL
    /// variable in place of what it supplies (`CLOUDINARY_URL`). A set that is
    /// a superset of another is left out, so every name in a set is needed.
    /// `[[]]` when the provider needs no variable at all; empty when the
    /// environment cannot configure it.
    ///
    /// ```
    /// let deepomatic = taskpoll::spec::provider("deepomatic").unwrap();
    /// assert_eq!(deepomatic.env_alternatives(), vec![vec!["DEEPOMATIC_API_KEY"]]);
    /// ```
    pub fn env_alternatives(&self) -> Vec<Vec<&'static str>> {
        let required: Vec<&'static ServerVariable> = self
            .server_variables
            .iter()
            .filter(|v| v.required && self.default_base_url.contains(&format!("{{{}}}", v.name)))
            .collect();
        // The variables of the required server variables, except one the credentials URL supplies;
        // `None` when one of them has no variable.
        let server_env = |supplied: Option<&str>| -> Option<Vec<&'static str>> {
            required.iter().filter(|v| Some(v.name) != supplied).map(|v| v.env).collect()
        };
        let alternatives: &[&[&str]] = match self.get_security() {
            [] => &[&[]],
            some => some,
        };
        let mut sets: Vec<Vec<&'static str>> = Vec::new();
        for alternative in alternatives {
            let schemes: Option<Vec<&'static Scheme>> =
                alternative.iter().map(|name| self.scheme(name).filter(|s| !s.env.is_empty())).collect();
            let Some(schemes) = schemes else { continue };
            if let Some(server) = server_env(None) {
                sets.push(schemes.iter().flat_map(|s| s.env.iter().copied()).chain(server).collect());
            }
            if let Some(url) = self.credentials_url
                && alternative.contains(&url.scheme)
                && let Some(server) = server_env(Some(url.server_variable))
            {
                let others = schemes.iter().filter(|s| s.name != url.scheme).flat_map(|s| s.env.iter().copied());
                sets.push(std::iter::once(url.var).chain(others).chain(server).collect());
            }
        }
        let mut minimal: Vec<Vec<&'static str>> = Vec::new();
        for set in &sets {
            let has_smaller = sets.iter().any(|other| other.len() < set.len() && other.iter().all(|v| set.contains(v)));
            if !has_smaller && !minimal.contains(set) {
                minimal.push(set.clone());
            }
        }
        minimal.sort_by_key(Vec::len);
        minimal
    }

    /// The documented examples of one operation and status.
    pub fn examples_for(&self, operation: &str, status: &str) -> impl Iterator<Item = &'static Example> + use<> {
        let operation = operation.to_string();
        let status = status.to_string();
        self.examples.iter().filter(move |e| e.operation == operation && e.status == status)
    }
}

descriptor! {
    /// How a provider's webhooks are signed and read (`x-taskpoll.webhook`,
    /// specs/README.md "Webhooks"). [`crate::Client::verify_webhook`] is driven by
    /// it alone: a new provider's scheme needs no code.
    #[derive(Debug, Clone, Copy)]
    #[non_exhaustive]
    pub struct WebhookSpec / WebhookSpecFields {
        /// The header that carries the signature (`X-Cld-Signature`).
        signature_header: &'static str,
        /// The algorithms a signature may use; one that matches is enough
        /// (Cloudinary signs with SHA-1 or SHA-256).
        algorithms: &'static [SignatureAlgorithm],
        /// How the digest is written in the header.
        encoding: SignatureEncoding,
        /// Text before the digest in the header (`sha256=`); empty for none.
        prefix: &'static str,
        /// What is signed, in order (for an HMAC the secret is the key, not a part).
        message: &'static [MessagePart],
        /// The header with the Unix time (seconds) of the delivery, when signed.
        timestamp_header: Option<&'static str>,
        /// How far a delivery's timestamp may be from now, either way.
        tolerance_ms: u64,
        /// The security scheme whose credential is the secret (the password of a
        /// basic scheme, the token of another), when it is one.
        secret_scheme: Option<&'static str>,
        /// The environment variable holding a separate webhook secret, when it is one
        /// (also given with [`crate::ProviderConfig::webhook_secret`]).
        secret_env: Option<&'static str>,
        /// The largest body read.
        max_body_bytes: usize,
        /// Pointer to the task id in the payload.
        id: &'static str,
        /// Pointer to the raw status, mapped with the provider's `phases` and
        /// `rules` (read from the payload); `None`: the outcome is derived.
        status: Option<&'static str>,
        /// Pointer to the result.
        result: Option<&'static str>,
        /// Pointers tried in order for the failure message.
        error: &'static [&'static str],
        /// Without a status: failed when any of these is present and not null.
        failed_if_present: &'static [&'static str],
        /// Without a status: failed when the number here is 400 or more.
        http_status: Option<&'static str>,
        /// The status endpoint never carries the result: a wait that polls a
        /// success first keeps waiting for the webhook up to `grace_ms`.
        result_only_by_webhook: bool,
        /// See `result_only_by_webhook`.
        grace_ms: u64,
        /// Poll delays are multiplied by this while the provider's webhooks arrive.
        poll_factor: f64,
        /// How long after a verified delivery the provider counts as delivering.
        active_window_ms: u64,
    }
}

/// A signature algorithm of a [`WebhookSpec`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SignatureAlgorithm {
    /// SHA-1 of the message (the secret is one of its parts).
    Sha1,
    /// SHA-256 of the message (the secret is one of its parts).
    Sha256,
    /// HMAC-SHA1 of the message, keyed with the secret.
    HmacSha1,
    /// HMAC-SHA256 of the message, keyed with the secret.
    HmacSha256,
}

/// How a signature's digest is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SignatureEncoding {
    /// Hexadecimal (either case).
    Hex,
    /// Standard base64 with padding.
    Base64,
}

/// A part of a signed message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum MessagePart {
    /// The raw body, byte for byte.
    Body,
    /// The timestamp header's value, as sent.
    Timestamp,
    /// The secret.
    Secret,
}

descriptor! {
    /// A variable of the provider's server URL.
    #[derive(Debug, Clone, Copy)]
    #[non_exhaustive]
    pub struct ServerVariable / ServerVariableFields {
        /// Its name in `{braces}`.
        name: &'static str,
        /// The spec's default (a placeholder when `required`).
        default: &'static str,
        /// The environment variable that sets it.
        env: Option<&'static str>,
        /// Leaving it unset is a configuration error.
        required: bool,
    }
}

descriptor! {
    /// `scheme://user:pass@host` in one environment variable (`CLOUDINARY_URL`).
    #[derive(Debug, Clone, Copy)]
    #[non_exhaustive]
    pub struct CredentialsUrl / CredentialsUrlFields {
        /// The variable.
        var: &'static str,
        /// The basic scheme fed by `user:pass`.
        scheme: &'static str,
        /// The server variable fed by `host`.
        server_variable: &'static str,
    }
}

descriptor! {
    /// How to read one task.
    #[derive(Debug, Clone, Copy)]
    #[non_exhaustive]
    pub struct GetSpec / GetSpecFields {
        /// The operationId.
        operation: &'static str,
        /// `path`, `query` or `body`.
        id_location: &'static str,
        /// The parameter or body field that carries the id.
        id_name: &'static str,
        /// Characters refused in ids by default (`/`, `;`) that this spec allows
        /// (`x-taskpoll.get.id.allow`).
        id_allow: &'static str,
        /// Extra inputs a task reference may carry.
        inputs: &'static [InputSpec],
    }
}

descriptor! {
    /// An extra input of a task reference (Qolaba's `refID`).
    #[derive(Debug, Clone, Copy)]
    #[non_exhaustive]
    pub struct InputSpec / InputSpecFields {
        /// Its name, as written in a task reference.
        name: &'static str,
        /// `path`, `query` or `body`.
        location: &'static str,
        /// What it is.
        description: &'static str,
    }
}

descriptor! {
    /// How to read several tasks in one call.
    #[derive(Debug, Clone, Copy)]
    #[non_exhaustive]
    pub struct ManySpec / ManySpecFields {
        /// The operationId.
        operation: &'static str,
        /// The array query parameter that takes the ids.
        ids_param: &'static str,
        /// Ids per request.
        max_ids: u64,
        /// JSON pointer to the array of task bodies.
        items: &'static str,
        /// JSON pointer to the id inside one item.
        id: &'static str,
        /// JSON pointer to the next page's absolute URL.
        next: Option<&'static str>,
        /// Query parameters copied from the `next` URL.
        page_params: &'static [&'static str],
        /// The page parameter that sets the page size; taskpoll sends `max_ids`
        /// in it, so the page size never depends on the server's default.
        page_size_param: Option<&'static str>,
    }
}

descriptor! {
    /// A provider's request budget: a sustained rate and a burst.
    #[derive(Debug, Clone, Copy, PartialEq)]
    #[non_exhaustive]
    pub struct RateSpec / RateSpecFields {
        /// Sustained requests per second.
        per_second: f64,
        /// Requests that may be sent at once after a quiet period.
        burst: u32,
    }
}

impl RateSpec {
    /// The highest sustained rate a budget may allow.
    pub const MAX_PER_SECOND: f64 = 1e6;

    /// Whether `per_second` can be a budget's sustained rate: finite, above 0
    /// and at most [`Self::MAX_PER_SECOND`].
    pub fn usable_per_second(per_second: f64) -> bool {
        per_second.is_finite() && per_second > 0.0 && per_second <= Self::MAX_PER_SECOND
    }
}

descriptor! {
    /// Where the fields of a task body are (JSON pointers).
    #[derive(Debug, Clone, Copy)]
    #[non_exhaustive]
    pub struct TaskShape / TaskShapeFields {
        /// The raw status.
        status: &'static str,
        /// The task id, if the body carries it.
        id: Option<&'static str>,
        /// Candidates for the failure message, tried in order.
        error: &'static [&'static str],
        /// The result payload.
        result: Option<&'static str>,
        /// Non-2xx statuses whose JSON body is still a task.
        task_body_statuses: &'static [u16],
    }
}

descriptor! {
    /// A mapping rule that looks at several fields.
    #[derive(Debug, Clone, Copy)]
    #[non_exhaustive]
    pub struct Rule / RuleFields {
        /// Pointer and value pairs, all of which must match (case-insensitively).
        when: &'static [(&'static str, &'static str)],
        /// The phase when they do.
        phase: Phase,
        /// Where the failure message is for this rule.
        error: Option<&'static str>,
    }
}

descriptor! {
    /// Polling schedule numbers as written in a spec (see [`crate::Policy`]).
    #[derive(Debug, Clone, Copy, PartialEq)]
    #[non_exhaustive]
    pub struct PolicySpec / PolicySpecFields {
        /// Delay before the first poll.
        first_poll_ms: u64,
        /// Fixed delays used before the exponential part.
        delays_ms: &'static [u64],
        /// First exponential delay.
        initial_delay_ms: u64,
        /// Growth factor.
        factor: f64,
        /// Cap on the exponential part.
        max_delay_ms: u64,
        /// Jitter.
        jitter: Jitter,
        /// Constant added after jitter and cap.
        offset_ms: u64,
        /// Suggested deadline.
        deadline_ms: u64,
    }
}

/// Randomisation of a delay `d`. Jitter never exceeds `d`, so a cap holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Jitter {
    /// Exactly `d` (the default: one wait has nobody to de-synchronise from).
    #[default]
    None,
    /// Uniform in `[0, d]`.
    Full,
    /// `d/2` plus uniform in `[0, d/2]`.
    Equal,
}

descriptor! {
    /// A security scheme of the spec.
    #[derive(Debug, Clone, Copy)]
    #[non_exhaustive]
    pub struct Scheme / SchemeFields {
        /// Its name in `components.securitySchemes`.
        name: &'static str,
        /// What goes on the wire.
        kind: SchemeKind,
        /// The environment variables that feed it (username then password for basic).
        env: &'static [&'static str],
    }
}

/// What a security scheme sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SchemeKind {
    /// `Authorization: Basic base64(user:pass)`.
    Basic,
    /// `Authorization: Bearer <token>` (also OAuth2).
    Bearer,
    /// The key in the named header.
    ApiKeyHeader(&'static str),
}

descriptor! {
    /// One operation of the spec.
    #[derive(Debug, Clone, Copy)]
    #[non_exhaustive]
    pub struct OperationSpec / OperationSpecFields {
        /// operationId.
        id: &'static str,
        /// HTTP method, upper case.
        method: &'static str,
        /// Path template relative to the base URL (`/tasks/{task_id}`).
        path: &'static str,
        /// HTTP status (`200`, `4XX`, `default`) to the response's component schema, where it names one.
        responses: &'static [(&'static str, &'static str)],
    }
}

impl OperationSpec {
    /// The component schema documented for this HTTP status: an exact
    /// status first, then its range (`4XX`), then `default`.
    pub fn response_schema(&self, status: u16) -> Option<&'static str> {
        let exact = status.to_string();
        let range = format!("{}XX", status / 100);
        [exact.as_str(), range.as_str(), "default"]
            .iter()
            .find_map(|key| self.responses.iter().find(|(s, _)| s.eq_ignore_ascii_case(key)).map(|(_, schema)| *schema))
    }
}

descriptor! {
    /// A documented example body.
    #[derive(Debug, Clone, Copy)]
    #[non_exhaustive]
    pub struct Example / ExampleFields {
        /// The operation it answers.
        operation: &'static str,
        /// The HTTP status it is documented under.
        status: &'static str,
        /// The response's component schema (empty when none).
        schema: &'static str,
        /// The example's name in the spec.
        name: &'static str,
        /// The body, as JSON text.
        json: &'static str,
    }
}
