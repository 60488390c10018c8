//! What every generated client does on every request, through progenitor's
//! `ClientHooks` (`__generated_glue!` in glue.rs writes the impls that call into here): auth from the
//! spec's security table, no `api-version`, our `User-Agent`, the per-request
//! timeout, the body size cap, and capturing the raw answer for the unified
//! layer.

use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderName, HeaderValue, USER_AGENT};
use secrecy::{ExposeSecret, SecretString};

use crate::spec::{ProviderSpec, SchemeKind};

/// A credential for one security scheme. Debug never shows the secret.
#[derive(Clone)]
#[non_exhaustive]
pub enum Credential {
    /// Username and password for `http`/`basic`.
    Basic {
        /// The user (e.g. an API key); not secret.
        username: String,
        /// The password (e.g. an API secret).
        password: SecretString,
    },
    /// A bearer token (also OAuth2), or an API key for an `apiKey` header.
    Token(SecretString),
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credential::Basic { username, .. } => {
                f.debug_struct("Basic").field("username", username).field("password", &"[redacted]").finish()
            }
            Credential::Token(_) => f.write_str("Token([redacted])"),
        }
    }
}

/// The per-client state the generated clients carry (progenitor's "inner type").
#[derive(Clone)]
pub struct Ctx {
    pub(crate) provider: &'static ProviderSpec,
    /// scheme name -> credential (replaced by a refresher after a 401)
    pub(crate) credentials: Arc<RwLock<Vec<(&'static str, Credential)>>>,
    pub(crate) user_agent: HeaderValue,
    pub(crate) max_body_bytes: usize,
    /// The provider's request timeout, for calls made outside the unified
    /// layer (through `generated::<provider>::client`), which set none.
    pub(crate) request_timeout: Duration,
}

impl std::fmt::Debug for Ctx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx")
            .field("provider", &self.provider.name)
            .field("credentials", &self.credentials)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("request_timeout", &self.request_timeout)
            .finish()
    }
}

/// What one call through the glue saw, filled by the hooks.
#[derive(Debug, Default)]
pub(crate) struct CallRecord {
    pub(crate) response: Option<RawResponse>,
    pub(crate) missing_credentials: Option<String>,
    pub(crate) too_large: Option<(u16, usize)>,
    /// The origin of an answer that came from elsewhere than the request's
    /// origin (a redirect followed by a caller-supplied HTTP client).
    pub(crate) other_origin: Option<String>,
    /// The host and port the request went to (for transport errors).
    pub(crate) host: Option<String>,
    /// The time limit of the call, and whether it was the wait's remaining budget.
    pub(crate) timeout: Option<(Duration, bool)>,
}

/// One HTTP answer, as received (body capped).
#[derive(Debug, Clone)]
pub(crate) struct RawResponse {
    pub(crate) status: u16,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
    /// For a 3xx: where its `Location` points (an origin, or "the same origin").
    pub(crate) redirect: Option<String>,
}

#[derive(Debug, Default)]
pub(crate) struct CallScope {
    /// The per-request timeout, and whether it is the wait's remaining budget.
    pub(crate) timeout: Option<(Duration, bool)>,
    pub(crate) record: Mutex<CallRecord>,
}

tokio::task_local! {
    static CALL: Arc<CallScope>;
}

/// Runs one glue call with a per-request timeout and returns what the hooks
/// saw, saying whether the timeout is the wait's remaining budget (shorter than
/// the request timeout), so a timeout error can say which it was.
pub(crate) async fn scoped_by<F, T>(timeout: Option<(Duration, bool)>, call: F) -> (T, CallRecord)
where
    F: std::future::Future<Output = T>,
{
    let scope = Arc::new(CallScope { timeout, record: Mutex::new(CallRecord { timeout, ..CallRecord::default() }) });
    let out = CALL.scope(scope.clone(), call).await;
    let record = std::mem::take(&mut *scope.record.lock().unwrap_or_else(|e| e.into_inner()));
    (out, record)
}

/// `host:port` of a URL, never its userinfo, path or query.
pub(crate) fn host_of(url: &reqwest::Url) -> String {
    match (url.host_str(), url.port_or_known_default()) {
        (Some(host), Some(port)) => format!("{host}:{port}"),
        (Some(host), None) => host.to_string(),
        (None, _) => "the server".to_string(),
    }
}

fn with_record(f: impl FnOnce(&mut CallRecord)) {
    let _ = CALL.try_with(|scope| f(&mut scope.record.lock().unwrap_or_else(|e| e.into_inner())));
}

/// `ClientHooks::pre`: strip `api-version`, set the user agent, the timeout and auth.
pub fn pre(ctx: &Ctx, request: &mut reqwest::Request, operation_id: &str) -> Result<(), String> {
    let headers = request.headers_mut();
    // progenitor sends `api-version: <info.version>` for Dropshot servers; third-party APIs do not expect it.
    headers.remove("api-version");
    headers.insert(USER_AGENT, ctx.user_agent.clone());
    match CALL.try_with(|scope| scope.timeout) {
        Ok(Some((timeout, _))) => *request.timeout_mut() = Some(timeout),
        Ok(None) => {}
        // No scope: a call through `generated::<provider>::client` gets the provider's request timeout.
        Err(_) => *request.timeout_mut() = Some(ctx.request_timeout),
    }
    let security = ctx.provider.security;
    let alternatives: &[&[&str]] = security.iter().find(|(id, _)| *id == operation_id).map(|(_, a)| *a).unwrap_or(&[]);
    if alternatives.is_empty() || alternatives.iter().any(|alt| alt.is_empty()) {
        return Ok(());
    }
    let credentials = ctx.credentials.read().unwrap_or_else(|e| e.into_inner());
    let has = |scheme: &str| credentials.iter().any(|(name, _)| *name == scheme);
    // The satisfiable alternative that uses the most configured schemes (Deepomatic: key + app id).
    // Ties go to the spec's order (its first alternative is the preferred one).
    let chosen =
        alternatives.iter().filter(|alt| alt.iter().all(|s| has(s))).fold(None::<&&[&str]>, |best, alt| match best {
            Some(b) if b.len() >= alt.len() => Some(b),
            _ => Some(alt),
        });
    let Some(chosen) = chosen else {
        let needed: Vec<String> = alternatives.iter().map(|alt| alt.join(" + ")).collect();
        let message = format!("no credentials for `{operation_id}` (needs {})", needed.join(" or "));
        with_record(|r| r.missing_credentials = Some(needed.join(" or ")));
        return Err(message);
    };
    for scheme_name in chosen.iter() {
        let Some(scheme) = ctx.provider.scheme(scheme_name) else { continue };
        let Some((_, credential)) = credentials.iter().find(|(name, _)| name == scheme_name) else { continue };
        let (name, value) =
            header_for(scheme.kind, credential).map_err(|e| format!("credential for `{scheme_name}`: {e}"))?;
        request.headers_mut().insert(name, value);
    }
    Ok(())
}

fn header_for(kind: SchemeKind, credential: &Credential) -> Result<(HeaderName, HeaderValue), String> {
    use base64::Engine as _;
    let (name, text) = match (kind, credential) {
        (SchemeKind::Basic, Credential::Basic { username, password }) => {
            let raw = format!("{username}:{}", password.expose_secret());
            (AUTHORIZATION, format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(raw)))
        }
        (SchemeKind::Bearer, Credential::Token(token)) => (AUTHORIZATION, format!("Bearer {}", token.expose_secret())),
        (SchemeKind::ApiKeyHeader(header), Credential::Token(key)) => (
            HeaderName::from_bytes(header.as_bytes()).map_err(|_| "bad header name".to_string())?,
            key.expose_secret().to_string(),
        ),
        _ => return Err("wrong kind of credential for this scheme".into()),
    };
    let mut value =
        HeaderValue::from_str(&text).map_err(|_| "contains characters not allowed in a header".to_string())?;
    value.set_sensitive(true);
    Ok((name, value))
}

/// `ClientHooks::exec`: send, read the body up to the cap, keep a copy.
pub async fn exec(
    http: &reqwest::Client,
    ctx: &Ctx,
    request: reqwest::Request,
    operation_id: &str,
) -> reqwest::Result<reqwest::Response> {
    let method = request.method().clone();
    let request_url = request.url().clone();
    with_record(|r| r.host = Some(host_of(&request_url)));
    let started = std::time::Instant::now();
    // Headers are never logged: they carry the credentials.
    let mut response = match http.execute(request).await {
        Ok(response) => response,
        Err(e) => {
            tracing::debug!(provider = ctx.provider.name, operation = operation_id, %method, error = %e, "request failed");
            return Err(e);
        }
    };
    tracing::debug!(
        provider = ctx.provider.name,
        operation = operation_id,
        %method,
        status = response.status().as_u16(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "response"
    );
    let status = response.status();
    let headers = response.headers().clone();
    let version = response.version();
    // A caller-supplied client may follow redirects: never take another origin's answer.
    if response.url().origin() != request_url.origin() {
        let origin = response.url().origin().ascii_serialization();
        tracing::warn!(provider = ctx.provider.name, operation = operation_id, %origin, "answer from another origin refused");
        with_record(|r| r.other_origin = Some(origin));
        return Ok(rebuild(status, version, headers, Bytes::new()));
    }
    let redirect = status.is_redirection().then(|| redirect_target(&request_url, &headers));
    let limit = ctx.max_body_bytes;
    if response.content_length().is_some_and(|len| len > limit as u64) {
        with_record(|r| r.too_large = Some((status.as_u16(), limit)));
        return Ok(rebuild(status, version, headers, Bytes::new()));
    }
    let mut body = BytesMut::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > limit {
            with_record(|r| r.too_large = Some((status.as_u16(), limit)));
            return Ok(rebuild(status, version, headers, Bytes::new()));
        }
        body.extend_from_slice(&chunk);
    }
    let body = body.freeze();
    // Inside the unified layer's scope the answer travels in the record and is
    // decoded there once; progenitor gets an empty body rather than decoding the
    // same bytes into a typed value nobody reads (its decode error is ignored).
    // Calls through `generated::<provider>::client` have no scope and get the body.
    let recorded = CALL
        .try_with(|scope| {
            let raw = RawResponse { status: status.as_u16(), headers: headers.clone(), body: body.clone(), redirect };
            scope.record.lock().unwrap_or_else(|e| e.into_inner()).response = Some(raw);
        })
        .is_ok();
    Ok(rebuild(status, version, headers, if recorded { Bytes::new() } else { body }))
}

/// Where a redirect points, as an origin only (no path, query or userinfo).
fn redirect_target(request_url: &reqwest::Url, headers: &HeaderMap) -> String {
    let location = headers.get(reqwest::header::LOCATION).and_then(|v| v.to_str().ok());
    match location.map(|l| request_url.join(l)) {
        Some(Ok(target)) if target.origin() == request_url.origin() => "the same origin".to_string(),
        Some(Ok(target)) => target.origin().ascii_serialization(),
        Some(Err(_)) | None => "no usable Location".to_string(),
    }
}

fn rebuild(
    status: reqwest::StatusCode,
    version: reqwest::Version,
    headers: HeaderMap,
    body: Bytes,
) -> reqwest::Response {
    let mut response = http::Response::new(body);
    *response.status_mut() = status;
    *response.version_mut() = version;
    *response.headers_mut() = headers;
    reqwest::Response::from(response)
}

/// Whether a credential is of the kind a scheme sends and can be sent in a header.
pub(crate) fn fits(kind: SchemeKind, credential: &Credential) -> bool {
    sendable(kind, credential).is_ok()
}

/// Why a credential cannot be sent for a scheme (wrong kind, or bytes a
/// header may not carry, such as a newline). The reason never shows the secret.
pub(crate) fn sendable(kind: SchemeKind, credential: &Credential) -> Result<(), String> {
    header_for(kind, credential).map(|_| ())
}

/// Replaces one scheme's credential (after a refresher produced a new one).
pub(crate) fn replace_credential(ctx: &Ctx, scheme: &'static str, credential: Credential) {
    let mut credentials = ctx.credentials.write().unwrap_or_else(|e| e.into_inner());
    credentials.retain(|(name, _)| *name != scheme);
    credentials.push((scheme, credential));
}

/// Produces a fresh credential when the provider answers 401 (see
/// [`crate::ProviderConfig::refresh_credential`]).
#[derive(Clone)]
pub struct Refresher(
    pub(crate) Arc<dyn Fn() -> crate::spec::BoxFuture<'static, Result<Credential, String>> + Send + Sync>,
);

impl std::fmt::Debug for Refresher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Refresher(..)")
    }
}
