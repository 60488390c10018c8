//! What the extension's types cannot say: `x-taskpoll…` keys only where they
//! mean something, and the extension checked against the document
//! (operations, parameters and schemes that exist, delays that fit), giving
//! the `Provider` the generator writes.

use serde::Deserialize;
use serde_json::Value;

use super::extension::{
    AllowedIdChar, DurationText, Extension, Jitter, Location, MessagePart, PhaseName, PolicyDoc, Webhook,
};
use super::naming::{is_snake_ident, module_name};
use super::openapi::{Operations, ParamLocation, ParamType};

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
pub(super) fn check_placement(doc: &Value) -> Result<(), String> {
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
#[derive(Debug, Clone, Deserialize)]
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
    /// `poll.next-poll-header`, lower case.
    pub next_poll_header: Option<String>,
    /// `poll.presets`, by name.
    pub presets: Vec<(String, Policy)>,
    /// Security schemes, by name.
    pub schemes: Vec<Scheme>,
    /// `webhook` with its defaults applied.
    pub webhook: Option<WebhookResolved>,
}

/// `webhook`'s numbers with their defaults applied.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct WebhookResolved {
    /// `timestamp.tolerance`, in milliseconds (0 without a timestamp).
    pub tolerance_ms: u64,
    /// `max-body`.
    pub max_body_bytes: u64,
    /// `grace`, in milliseconds.
    pub grace_ms: u64,
    /// `poll-factor`.
    pub poll_factor: f64,
    /// `active-window`, in milliseconds.
    pub active_window_ms: u64,
}

impl Extension {
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

        let webhook = match &self.webhook {
            Some(webhook) => Some(check_webhook(webhook, &schemes)?),
            None => None,
        };

        Ok(Provider {
            webhook,
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
            next_poll_header: self.poll.next_poll_header.as_ref().map(|h| h.to_ascii_lowercase()),
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

/// What the webhook block's types cannot say: a scheme that can be verified
/// (a plain digest must sign the secret, an HMAC must not put it in the
/// message, a timestamp header exactly when the message names it), one
/// secret, and numbers that fit.
fn check_webhook(webhook: &Webhook, schemes: &[Scheme]) -> Result<WebhookResolved, String> {
    let signature = &webhook.signature;
    if !is_header_name(&signature.header) {
        return Err(format!("`webhook.signature.header`: `{}` is not a header name", signature.header));
    }
    if signature.algorithm.0.is_empty() {
        return Err("`webhook.signature.algorithm` must name at least one algorithm".into());
    }
    let parts = &signature.message.0;
    if !parts.contains(&MessagePart::Body) {
        return Err("`webhook.signature.message` must include `body` (otherwise the payload is not signed)".into());
    }
    let secret_in_message = parts.contains(&MessagePart::Secret);
    for algorithm in &signature.algorithm.0 {
        match (algorithm.is_hmac(), secret_in_message) {
            (true, true) => {
                return Err(format!(
                    "`webhook.signature.message`: {algorithm:?} is keyed with the secret; `secret` must not be a part of the message"
                ));
            }
            (false, false) => {
                return Err(format!(
                    "`webhook.signature.message`: a plain {algorithm:?} digest must include `secret`, or anyone could sign"
                ));
            }
            _ => {}
        }
    }
    let names_timestamp = parts.contains(&MessagePart::Timestamp);
    match (&webhook.timestamp, names_timestamp) {
        (None, true) => {
            return Err("`webhook.signature.message` names `timestamp` but `webhook.timestamp` is missing".into());
        }
        (Some(_), false) => {
            return Err(
                "`webhook.timestamp` is set but `webhook.signature.message` does not sign it (a replayed delivery could carry any timestamp)"
                    .into(),
            );
        }
        _ => {}
    }
    let tolerance_ms = match &webhook.timestamp {
        Some(timestamp) => {
            if !is_header_name(&timestamp.header) {
                return Err(format!("`webhook.timestamp.header`: `{}` is not a header name", timestamp.header));
            }
            if timestamp.tolerance.0 == 0 {
                return Err("`webhook.timestamp.tolerance` must be positive".into());
            }
            timestamp.tolerance.0
        }
        None => 0,
    };
    match (&webhook.secret.scheme, &webhook.secret.env) {
        (Some(scheme), None) => {
            if !schemes.iter().any(|s| &s.name == scheme) {
                return Err(format!("`webhook.secret.scheme`: no security scheme `{scheme}`"));
            }
        }
        (None, Some(var)) => {
            if var.is_empty() {
                return Err("`webhook.secret.env` must name a variable".into());
            }
        }
        _ => return Err("`webhook.secret` needs exactly one of `scheme` and `env`".into()),
    }
    let payload = &webhook.payload;
    if payload.status.is_some() && (!payload.failed_if_present.0.is_empty() || payload.http_status.is_some()) {
        return Err(
            "`webhook.payload`: with `status`, the phase comes from `phases` and `rules`; `failed-if-present` and `http-status` are for payloads without one"
                .into(),
        );
    }
    let max_body_bytes = webhook.max_body.unwrap_or(1 << 20);
    if !(1..=(64 << 20)).contains(&max_body_bytes) {
        return Err("`webhook.max-body` must be from 1 to 67108864 bytes".into());
    }
    let poll_factor = webhook.poll_factor.unwrap_or(1.0);
    if !poll_factor.is_finite() || !(1.0..=1000.0).contains(&poll_factor) {
        return Err("`webhook.poll-factor` must be a number from 1 to 1000".into());
    }
    let grace_ms = webhook.grace.map_or(30_000, |g| g.0);
    if webhook.grace.is_some() && !webhook.result_only_by_webhook {
        return Err("`webhook.grace` applies only with `result-only-by-webhook: true`".into());
    }
    Ok(WebhookResolved {
        tolerance_ms,
        max_body_bytes,
        grace_ms,
        poll_factor,
        active_window_ms: webhook.active_window.map_or(600_000, |w| w.0),
    })
}

fn is_header_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
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
