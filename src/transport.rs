//! What every generated client does on every request, through progenitor's
//! `ClientHooks` (`__generated_glue!` in glue.rs writes the impls that call into here): auth from the
//! spec's security table, no `api-version`, our `User-Agent`, the per-request
//! timeout, the body size cap, and capturing the raw answer for the unified
//! layer.

use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use progenitor_client::{ByteStream, ResponseValue};
use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderMap, HeaderName, HeaderValue, LOCATION, RETRY_AFTER, USER_AGENT};
use secrecy::{ExposeSecret, SecretString};

use futures_util::future::BoxFuture;

use crate::Error;
use crate::error::{BoxError, GeneratedCallError, TransportKind};
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
    /// scheme name -> the header its credential is sent as, made once (replaced by a refresher after a 401)
    pub(crate) credentials: Arc<RwLock<Vec<Held>>>,
    pub(crate) user_agent: HeaderValue,
    pub(crate) max_body_bytes: usize,
    /// The provider's request timeout, for calls made outside the unified
    /// layer (through `generated::<provider>::client`), which set none.
    pub(crate) request_timeout: Duration,
    /// The base URL: answers from any other origin are refused.
    pub(crate) base: reqwest::Url,
    /// The client's clock: a `Retry-After` HTTP date is read against its wall time.
    pub(crate) clock: Arc<dyn crate::Clock>,
}

impl std::fmt::Debug for Ctx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx")
            .field("provider", &self.provider.name)
            .field("credentials", &self.credentials.read().unwrap_or_else(|e| e.into_inner()))
            .field("max_body_bytes", &self.max_body_bytes)
            .field("request_timeout", &self.request_timeout)
            .finish()
    }
}

/// A configured credential, as the header it is sent as (made once, not per
/// request). Debug shows the scheme only.
#[derive(Clone)]
pub(crate) struct Held {
    pub(crate) scheme: &'static str,
    /// The credential itself (a webhook's secret may be its password).
    pub(crate) credential: Credential,
    header: (HeaderName, HeaderValue),
}

impl std::fmt::Debug for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: [redacted]", self.scheme)
    }
}

impl Held {
    /// The credential of `scheme`, ready to send; why not when it cannot be
    /// (wrong kind, or bytes a header may not carry; never shows the secret).
    pub(crate) fn new(provider: &ProviderSpec, scheme: &'static str, credential: &Credential) -> Result<Self, String> {
        let kind = provider.scheme(scheme).ok_or_else(|| format!("no security scheme `{scheme}`"))?.kind;
        Ok(Held { scheme, credential: credential.clone(), header: header_for(kind, credential)? })
    }
}

/// What an answer-client call returns (the status and batch reads of the
/// unified layer): any status with its headers and body stream, or why there
/// is no answer (a transport failure, a request that could not be built, or a
/// hook's refusal).
pub type Answer = Result<ResponseValue<ByteStream>, progenitor_client::Error<ByteStream>>;

/// One HTTP answer, as received (body capped): what classification reads.
#[derive(Debug)]
pub(crate) struct RawResponse {
    pub(crate) status: u16,
    pub(crate) body: Bytes,
    /// The server's pacing hint (`Retry-After` and its millisecond variants).
    pub(crate) retry_after: Option<Duration>,
    /// The provider's suggested delay before the next poll (its spec's `next-poll-header`).
    pub(crate) next_poll: Option<Duration>,
    /// For a 3xx: why it was not followed, and where its `Location` points (an origin only).
    pub(crate) redirect: Option<String>,
}

/// What became of one answer-client call: an answer, whatever its status, or
/// why there is none to classify.
pub(crate) type Received = Result<RawResponse, NoAnswer>;

/// Why an answer-client call brought no answer to classify.
#[derive(Debug)]
pub(crate) enum NoAnswer {
    /// The body is over the cap (status, cap).
    TooLarge(u16, usize),
    /// The answer came from another origin (a redirect followed by a caller-supplied client).
    OtherOrigin(String),
    /// No credentials satisfy the operation (the alternatives, as text).
    MissingCredentials(String),
    /// No answer: the request failed or could not be built (boxed: rare, and large).
    Failed(Box<progenitor_client::Error<ByteStream>>),
}

/// Set by [`exec`] on the (empty) answer it hands back instead of one
/// from another origin (its value: that origin).
static OTHER_ORIGIN: HeaderName = HeaderName::from_static("x-taskpoll-other-origin");
/// Set by [`exec`] on the (empty) answer it hands back instead of one whose
/// `Content-Length` is over the cap.
static TOO_LARGE: HeaderName = HeaderName::from_static("x-taskpoll-too-large");
/// The millisecond variants of `Retry-After`, named once: looking a header up
/// by `&str` parses the name every time.
pub(crate) static RETRY_AFTER_MS: [HeaderName; 2] =
    [HeaderName::from_static("retry-after-ms"), HeaderName::from_static("x-ms-retry-after-ms")];

/// Whether classification reads this header of an answer (see
/// [`keep_read_headers`]): the pacing hints, a redirect's target, and the
/// provider's next-poll header when its spec names one.
fn is_read(name: &HeaderName, ctx: &Ctx) -> bool {
    *name == RETRY_AFTER
        || *name == LOCATION
        || RETRY_AFTER_MS.iter().any(|ms| name == ms)
        || ctx.provider.next_poll_header.is_some_and(|next| name.as_str() == next)
}

/// Leaves an answer-client answer with only the headers classification reads:
/// progenitor copies the headers of every answer it wraps, and most answers
/// then have none left to copy. A server's own `x-taskpoll-*` headers go too,
/// so only [`exec`] can mark an answer.
fn keep_read_headers(headers: &mut HeaderMap, ctx: &Ctx) {
    if !headers.keys().any(|name| is_read(name, ctx)) {
        // Not `clear`, which keeps the table (and progenitor would copy it).
        *headers = HeaderMap::new();
        return;
    }
    // `into_iter` names a header once, before the first of its values.
    let mut current: Option<HeaderName> = None;
    for (name, value) in std::mem::take(headers) {
        if name.is_some() {
            current = name;
        }
        if let Some(name) = current.as_ref().filter(|name| is_read(name, ctx)) {
            headers.append(name.clone(), value);
        }
    }
}

/// Reads an answer-client call's answer: status, pacing hint and body up to
/// `ctx.max_body_bytes`, with no copy of a body that arrives in one chunk.
///
/// The answer is taken apart when this is called: the future holds only the
/// body stream and what classification needs of the headers (every read's
/// future holds this one, and a smaller one is cheaper to move).
pub(crate) fn receive(ctx: &Ctx, operation_id: &str, answer: Answer) -> impl Future<Output = Received> + Send + use<> {
    let head = match answer {
        Ok(value) | Err(progenitor_client::Error::ErrorResponse(value)) => {
            let headers = value.headers();
            if let Some(origin) = headers.get(&OTHER_ORIGIN) {
                Err(NoAnswer::OtherOrigin(String::from_utf8_lossy(origin.as_bytes()).into_owned()))
            } else if headers.contains_key(&TOO_LARGE) {
                Err(NoAnswer::TooLarge(value.status().as_u16(), ctx.max_body_bytes))
            } else {
                Ok((Meta::of(value.status().as_u16(), headers, ctx), value.into_inner_stream()))
            }
        }
        Err(progenitor_client::Error::Custom(message)) => Err(match unsatisfied(ctx, operation_id) {
            Some(needed) => NoAnswer::MissingCredentials(needed),
            None => NoAnswer::Failed(Box::new(progenitor_client::Error::Custom(message))),
        }),
        Err(other) => Err(NoAnswer::Failed(Box::new(other))),
    };
    let limit = ctx.max_body_bytes;
    async move {
        use futures_util::StreamExt as _;
        let (meta, mut chunks) = head?;
        // The first chunk is kept as it came; a second one starts a copy.
        let mut first = Bytes::new();
        let mut joined: Option<BytesMut> = None;
        while let Some(chunk) = chunks.next().await {
            let chunk = match chunk {
                Ok(chunk) => chunk,
                Err(e) => return Err(NoAnswer::Failed(Box::new(progenitor_client::Error::ResponseBodyError(e)))),
            };
            if joined.as_ref().map_or(first.len(), BytesMut::len) + chunk.len() > limit {
                return Err(NoAnswer::TooLarge(meta.status, limit));
            }
            match &mut joined {
                Some(joined) => joined.extend_from_slice(&chunk),
                None if first.is_empty() => first = chunk,
                None => {
                    let mut copy = BytesMut::from(std::mem::take(&mut first));
                    copy.extend_from_slice(&chunk);
                    joined = Some(copy);
                }
            }
        }
        let body = joined.map_or(first, BytesMut::freeze);
        Ok(RawResponse {
            status: meta.status,
            body,
            retry_after: meta.retry_after,
            next_poll: meta.next_poll,
            redirect: meta.redirect,
        })
    }
}

/// What classification needs of an answer's status line and headers (so the
/// headers themselves are neither cloned nor kept).
struct Meta {
    status: u16,
    retry_after: Option<Duration>,
    next_poll: Option<Duration>,
    redirect: Option<String>,
}

impl Meta {
    fn of(status: u16, headers: &HeaderMap, ctx: &Ctx) -> Self {
        Meta {
            status,
            retry_after: retry_after(headers, || ctx.clock.wall()),
            next_poll: ctx.provider.next_poll_header.and_then(|name| milliseconds(headers, name)),
            redirect: (300..400).contains(&status).then(|| redirect_note(status, &ctx.base, headers)),
        }
    }
}

/// The alternatives of an operation's security when none can be satisfied
/// with the configured credentials; `None` when one can (or none is needed).
fn unsatisfied(ctx: &Ctx, operation_id: &str) -> Option<String> {
    let alternatives = ctx.provider.required_security(operation_id)?;
    let credentials = ctx.credentials.read().unwrap_or_else(|e| e.into_inner());
    match satisfied(alternatives, &credentials).next() {
        Some(_) => None,
        None => Some(needed(alternatives)),
    }
}

/// The alternatives the configured credentials satisfy, in the spec's order.
fn satisfied<'a>(
    alternatives: &'a [&'a [&'a str]],
    credentials: &'a [Held],
) -> impl Iterator<Item = &'a &'a [&'a str]> + 'a {
    alternatives.iter().filter(|alt| alt.iter().all(|scheme| credentials.iter().any(|held| held.scheme == *scheme)))
}

#[cold]
fn no_credentials(operation_id: &str, alternatives: &[&[&str]]) -> String {
    format!("no credentials for `{operation_id}` (needs {})", needed(alternatives))
}

/// The alternatives as text: `key + app_id or token`.
fn needed(alternatives: &[&[&str]]) -> String {
    alternatives.iter().map(|alt| alt.join(" + ")).collect::<Vec<_>>().join(" or ")
}

/// `host:port` of a URL, never its userinfo, path or query.
pub(crate) fn host_of(url: &reqwest::Url) -> String {
    match (url.host_str(), url.port_or_known_default()) {
        (Some(host), Some(port)) => format!("{host}:{port}"),
        (Some(host), None) => host.to_string(),
        (None, _) => "the server".to_string(),
    }
}

/// Which generated client a hook serves.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The typed client (`generated::<provider>::client`): bodies decoded by progenitor.
    Typed,
    /// The answer client of the unified layer: bodies handed over raw.
    Answer,
}

/// `ClientHooks::pre`: strip `api-version`, set the user agent, the timeout and auth.
pub fn pre(ctx: &Ctx, request: &mut reqwest::Request, operation_id: &str, mode: Mode) -> Result<(), String> {
    let credentials = ctx.credentials.read().unwrap_or_else(|e| e.into_inner());
    // The satisfiable alternative that uses the most configured schemes (Deepomatic: key + app id).
    // Ties go to the spec's order (its first alternative is the preferred one).
    let chosen: &[&str] = match ctx.provider.required_security(operation_id) {
        None => &[],
        Some(alternatives) => {
            match satisfied(alternatives, &credentials)
                .reduce(|best, alt| if best.len() >= alt.len() { best } else { alt })
            {
                Some(chosen) => chosen,
                None => return Err(no_credentials(operation_id, alternatives)),
            }
        }
    };
    let headers = request.headers_mut();
    // progenitor sends `api-version: <info.version>` for Dropshot servers; third-party APIs do not expect it.
    static API_VERSION: HeaderName = HeaderName::from_static("api-version");
    headers.remove(&API_VERSION);
    // Room for what follows, made once.
    headers.reserve(2 + chosen.len());
    headers.insert(USER_AGENT, ctx.user_agent.clone());
    for scheme in chosen {
        if let Some(held) = credentials.iter().find(|held| held.scheme == *scheme) {
            let (name, value) = &held.header;
            headers.insert(name.clone(), value.clone());
        }
    }
    match mode {
        // The same request as the typed client's (progenitor sends no Accept for raw bodies). The
        // unified layer bounds the whole call, answer body included, with the time it has left.
        Mode::Answer => {
            headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
        }
        Mode::Typed => *request.timeout_mut() = Some(ctx.request_timeout),
    }
    Ok(())
}

/// The header that carries `credential` for a scheme of this kind (its value marked sensitive).
pub(crate) fn header_for(kind: SchemeKind, credential: &Credential) -> Result<(HeaderName, HeaderValue), String> {
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

/// `ClientHooks::exec`: send; refuse an answer from another origin; for the
/// typed client, read the body up to the cap (the unified layer reads the
/// answer client's bodies itself, see `receive`).
///
/// The request is handed to reqwest when this is called, so the future keeps
/// reqwest's small handle rather than the request: every read's future
/// holds this one, and a smaller one is cheaper to move.
pub fn exec<'a>(
    http: &reqwest::Client,
    ctx: &'a Ctx,
    request: reqwest::Request,
    operation_id: &'a str,
    mode: Mode,
) -> impl Future<Output = reqwest::Result<reqwest::Response>> + Send + 'a {
    // What the debug lines say, taken only when they are written.
    let logged = tracing::enabled!(tracing::Level::DEBUG).then(|| (request.method().clone(), ctx.clock.now()));
    let read = crate::telemetry::HttpRead::start(ctx.provider, operation_id, &request, &ctx.clock);
    let sent = read.in_span(http.execute(request));
    async move {
        // In a block, so that nothing of the answer is kept across the typed client's await.
        let typed = {
            let result = sent.await;
            read.answered(
                result
                    .as_ref()
                    .map(|r| r.status().as_u16())
                    .map_err(|e| crate::telemetry::error_type(transport_kind(e))),
            );
            if let Some((method, started)) = logged {
                log_answer(ctx, operation_id, &method, started, &result);
            }
            let mut response = result?;
            let (status, version) = (response.status(), response.version());
            // taskpoll's own client follows redirects to the same origin only (`redirect_policy`); a
            // caller-supplied one may follow any: never take another origin's answer.
            if !same_origin(response.url(), &ctx.base) {
                return Ok(other_origin(ctx, operation_id, &response));
            }
            let too_large = response.content_length().is_some_and(|len| len > ctx.max_body_bytes as u64);
            match mode {
                Mode::Answer if too_large => {
                    return Ok(marked(status, version, &TOO_LARGE, HeaderValue::from_static("1")));
                }
                Mode::Answer => {
                    keep_read_headers(response.headers_mut(), ctx);
                    return Ok(response);
                }
                // Boxed: the answer client's reads, the many, need no room for it.
                Mode::Typed => Box::pin(read_capped(response, ctx.max_body_bytes, too_large)),
            }
        };
        typed.await
    }
}

/// The debug line of an answer (out of line: every read runs past it, and few
/// write it). Headers are never logged: they carry the credentials.
#[cold]
fn log_answer(
    ctx: &Ctx,
    operation_id: &str,
    method: &reqwest::Method,
    started: std::time::Instant,
    result: &reqwest::Result<reqwest::Response>,
) {
    match result {
        Ok(response) => tracing::debug!(
            provider = ctx.provider.name,
            operation = operation_id,
            %method,
            status = response.status().as_u16(),
            elapsed_ms = ctx.clock.now().saturating_duration_since(started).as_millis() as u64,
            "response"
        ),
        Err(e) => {
            tracing::debug!(provider = ctx.provider.name, operation = operation_id, %method, error = %e, "request failed")
        }
    }
}

/// The empty answer handed back instead of one from another origin, marked with that origin.
#[cold]
fn other_origin(ctx: &Ctx, operation_id: &str, response: &reqwest::Response) -> reqwest::Response {
    let origin = response.url().origin().ascii_serialization();
    tracing::warn!(provider = ctx.provider.name, operation = operation_id, %origin, "answer from another origin refused");
    let value = HeaderValue::from_str(&origin).unwrap_or(HeaderValue::from_static("an origin that is no header value"));
    marked(response.status(), response.version(), &OTHER_ORIGIN, value)
}

/// An empty answer whose only header is one of `exec`'s marks.
#[cold]
fn marked(
    status: reqwest::StatusCode,
    version: reqwest::Version,
    mark: &HeaderName,
    value: HeaderValue,
) -> reqwest::Response {
    let mut headers = HeaderMap::new();
    headers.insert(mark.clone(), value);
    rebuild(status, version, headers, Bytes::new())
}

/// A typed-client answer with its body read up to `limit` bytes (an empty
/// body in its place when it is over).
async fn read_capped(
    mut response: reqwest::Response,
    limit: usize,
    too_large: bool,
) -> reqwest::Result<reqwest::Response> {
    let (status, version) = (response.status(), response.version());
    let headers = std::mem::take(response.headers_mut());
    if too_large {
        return Ok(rebuild(status, version, headers, Bytes::new()));
    }
    let mut body = BytesMut::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > limit {
            return Ok(rebuild(status, version, headers, Bytes::new()));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(rebuild(status, version, headers, body.freeze()))
}

/// Whether two URLs share scheme, host and port (no allocation, unlike `Url::origin`).
fn same_origin(a: &reqwest::Url, b: &reqwest::Url) -> bool {
    a.scheme() == b.scheme() && a.host_str() == b.host_str() && a.port_or_known_default() == b.port_or_known_default()
}

/// The most redirects taskpoll's own HTTP client follows for one request
/// (each to the origin the request was sent to).
pub(crate) const MAX_REDIRECTS: usize = 5;

/// The redirect policy of taskpoll's own HTTP client: a redirect to the
/// request's origin (scheme, host and port) is followed, up to
/// [`MAX_REDIRECTS`] in a row, as the official clients do (a server's
/// `APPEND_SLASH` 301, a moved path); a redirect anywhere else is not, and its
/// 3xx is reported as it came. reqwest keeps every header on a same-origin
/// hop, so the credentials go along, and only there.
pub(crate) fn redirect_policy() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        // `previous` starts with the request's own URL and grows by one per hop.
        let hops = attempt.previous().len();
        let origin = attempt.previous().first();
        if hops <= MAX_REDIRECTS && origin.is_some_and(|origin| same_origin(attempt.url(), origin)) {
            crate::telemetry::redirect_followed(hops);
            attempt.follow()
        } else {
            attempt.stop()
        }
    })
}

/// Why a 3xx answer was not followed, for its error: where its `Location`
/// points, as an origin only (no path, query or userinfo).
fn redirect_note(status: u16, request_url: &reqwest::Url, headers: &HeaderMap) -> String {
    let location = headers.get(LOCATION).and_then(|v| v.to_str().ok());
    match location.map(|l| request_url.join(l)) {
        Some(Ok(target)) if target.origin() == request_url.origin() => {
            if matches!(status, 301 | 302 | 303 | 307 | 308) {
                format!(
                    "too many redirects on the same origin (a loop?): taskpoll follows at most {MAX_REDIRECTS} \
                     in a row (a client given to ClientBuilder::http_client follows its own policy)"
                )
            } else {
                "redirect to the same origin not followed (not a redirect status HTTP clients follow)".to_string()
            }
        }
        Some(Ok(target)) => format!(
            "redirect to {} not followed (credentials stay with the configured origin)",
            target.origin().ascii_serialization()
        ),
        Some(Err(_)) | None => "redirect with no usable Location not followed".to_string(),
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

/// Replaces one scheme's credential (after a refresher produced a new one).
pub(crate) fn replace_credential(ctx: &Ctx, scheme: &'static str, credential: Credential) -> Result<(), String> {
    let held = Held::new(ctx.provider, scheme, &credential)?;
    let mut credentials = ctx.credentials.write().unwrap_or_else(|e| e.into_inner());
    credentials.retain(|held| held.scheme != scheme);
    credentials.push(held);
    Ok(())
}

/// Produces a fresh credential when the provider answers 401 (see
/// [`crate::ProviderConfig::refresh_credential`]).
#[derive(Clone)]
pub(crate) struct Refresher(pub(crate) Arc<dyn Fn() -> BoxFuture<'static, Result<Credential, String>> + Send + Sync>);

impl std::fmt::Debug for Refresher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Refresher(..)")
    }
}

/// The glue the generator writes for each provider: calls into the generated client.
pub trait ProviderOps: Send + Sync {
    /// Reads one task: the answer as it came.
    fn get<'a>(&'a self, id: &'a str, inputs: &'a std::collections::BTreeMap<String, String>) -> BoxFuture<'a, Answer>;
    /// Reads a page of several tasks: the answer as it came.
    fn list<'a>(&'a self, ids: &'a [String], page: &'a [(String, String)]) -> BoxFuture<'a, Answer> {
        let _ = (ids, page);
        Box::pin(async { Err(progenitor_client::Error::InvalidRequest("this provider has no batch operation".into())) })
    }
}

/// How a generated module makes its [`ProviderOps`] for a configured
/// client. A descriptor holds it type-erased (`ProviderSpec::connect`):
/// the descriptors are plain data below this layer, so they cannot name
/// `Ctx`; configuration downcasts it once per provider it resolves.
#[derive(Debug, Clone, Copy)]
pub struct Connect(pub fn(&str, reqwest::Client, Ctx) -> Box<dyn ProviderOps>);

/// What a generated typed client takes from the unified client whose
/// settings it shares (its base URL, HTTP client and hooks' state).
/// Implemented by [`crate::Client`] in the client layer, so the generated
/// modules, which the registry lists, never name the client.
pub trait SharedSettings {
    /// The settings of `provider` on this client, or why there are none.
    fn shared_settings(&self, provider: &'static ProviderSpec) -> Result<(String, reqwest::Client, Ctx), Error>;
}

/// A generated client's error, as a call of the typed clients returns it.
impl<E> From<progenitor_client::Error<E>> for Error {
    fn from(error: progenitor_client::Error<E>) -> Self {
        use progenitor_client::Error as P;
        let status = error.status().map(|s| s.as_u16());
        let generated = |message: String, kind: Option<TransportKind>, source: Option<BoxError>| {
            Error::GeneratedCall(GeneratedCallError { status, message, kind, source })
        };
        match error {
            P::InvalidRequest(message) => generated(format!("invalid request: {message}"), None, None),
            // The hooks' refusal (no credentials for the operation): nothing was sent.
            P::Custom(message) => generated(message, None, None),
            P::CommunicationError(e) | P::ResponseBodyError(e) | P::InvalidUpgrade(e) => {
                let kind = transport_kind(&e);
                let host = e.url().map_or_else(|| "the server".to_string(), host_of);
                generated(kind.describe(&host), Some(kind), Some(Box::new(e.without_url())))
            }
            P::ErrorResponse(response) => generated(format!("HTTP {}", response.status().as_u16()), None, None),
            P::UnexpectedResponse(response) => {
                generated(format!("unexpected HTTP {}", response.status().as_u16()), None, None)
            }
            P::InvalidResponsePayload(_, e) => {
                generated("the answer's body does not match the spec".to_string(), None, Some(Box::new(e)))
            }
        }
    }
}

/// What kind of transport failure a reqwest error is, from its chain of sources.
pub(crate) fn transport_kind(error: &reqwest::Error) -> TransportKind {
    use std::io::ErrorKind;
    if error.is_timeout() {
        return TransportKind::Timeout;
    }
    let mut text = String::new();
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            #[cfg(feature = "rustls")]
            if wraps_rustls(io) {
                return TransportKind::Tls;
            }
            match io.kind() {
                ErrorKind::ConnectionRefused => return TransportKind::Refused,
                ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe => {
                    return TransportKind::Reset;
                }
                ErrorKind::UnexpectedEof => return TransportKind::TruncatedBody,
                ErrorKind::TimedOut => return TransportKind::Timeout,
                _ => {}
            }
        }
        #[cfg(feature = "rustls")]
        if e.is::<rustls::Error>() {
            return TransportKind::Tls;
        }
        if e.downcast_ref::<hyper::Error>().is_some_and(hyper::Error::is_incomplete_message) {
            return TransportKind::Reset;
        }
        text.push_str(&e.to_string().to_ascii_lowercase());
        text.push('\n');
        source = e.source();
    }
    // The resolver's and native-tls's error types are private to hyper-util
    // and native-tls, so these two are recognised by their text.
    if text.contains("dns error") || text.contains("failed to lookup address") {
        TransportKind::Dns
    } else if ["tls", "ssl", "certificate", "handshake"].iter().any(|word| text.contains(word)) {
        TransportKind::Tls
    } else if error.is_connect() {
        TransportKind::Connect
    } else {
        TransportKind::Other
    }
}

/// Whether an io error is (around) a rustls error: rustls reports a failed
/// handshake as io errors around its own, whose text names no TLS, and an io
/// error's `source` skips what it wraps.
#[cfg(feature = "rustls")]
fn wraps_rustls(io: &std::io::Error) -> bool {
    let mut inner = io.get_ref();
    while let Some(error) = inner {
        if error.is::<rustls::Error>() {
            return true;
        }
        inner = error.downcast_ref::<std::io::Error>().and_then(std::io::Error::get_ref);
    }
    false
}

/// `Retry-After` (seconds or HTTP date), or `retry-after-ms` / `x-ms-retry-after-ms`.
/// `now` is read only for an HTTP date (most answers have no hint at all).
/// A header whose value is a whole number of milliseconds; `None` when
/// absent or malformed (a hint, never an error).
fn milliseconds(headers: &HeaderMap, name: &str) -> Option<Duration> {
    let text = headers.get(name)?.to_str().ok()?;
    text.trim().parse::<u64>().ok().map(Duration::from_millis)
}

pub(crate) fn retry_after(headers: &HeaderMap, now: impl FnOnce() -> SystemTime) -> Option<Duration> {
    for name in &RETRY_AFTER_MS {
        if let Some(ms) = headers.get(name).and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse::<f64>().ok())
            && ms.is_finite()
            && ms >= 0.0
        {
            return Some(Duration::from_secs_f64((ms / 1000.0).min(1e9)));
        }
    }
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds.min(1_000_000_000)));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now()).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // property tests of `Retry-After` dates against the real clock
mod retry_after_tests {
    use std::time::{Duration, SystemTime};

    use proptest::prelude::*;
    use reqwest::header::{HeaderMap, HeaderValue};

    use super::retry_after;

    #[test]
    fn retry_after_variants_parse() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut headers = HeaderMap::new();
        headers.insert("retry-after", HeaderValue::from_static("3"));
        assert_eq!(retry_after(&headers, || now), Some(Duration::from_secs(3)));
        headers.insert("retry-after-ms", HeaderValue::from_static("250"));
        assert_eq!(retry_after(&headers, || now), Some(Duration::from_millis(250)));
        let mut headers = HeaderMap::new();
        headers.insert("x-ms-retry-after-ms", HeaderValue::from_static("1500"));
        assert_eq!(retry_after(&headers, || now), Some(Duration::from_millis(1500)));
        let mut headers = HeaderMap::new();
        let date = httpdate::fmt_http_date(now + Duration::from_secs(30));
        headers.insert("retry-after", HeaderValue::from_str(&date).expect("ascii"));
        assert_eq!(retry_after(&headers, || now), Some(Duration::from_secs(30)));
        headers.insert("retry-after", HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&headers, || now), None);
    }

    proptest! {
    /// `Retry-After` in seconds is read as is (capped), an HTTP date as the
    /// time until it (never negative), and any other text never panics.
    #[test]
    fn retry_after_parses_seconds_dates_and_survives_anything(
        seconds in any::<u64>(),
        ahead in 0u64..100_000,
        text in "\\PC{0,40}",
        bytes in proptest::collection::vec(any::<u8>(), 0..40),
    ) {
        let now = SystemTime::now();
        let header = |value: HeaderValue| {
            let mut headers = HeaderMap::new();
            headers.insert("retry-after", value);
            headers
        };
        let hint = retry_after(&header(HeaderValue::from(seconds)), || now);
        prop_assert_eq!(hint, Some(Duration::from_secs(seconds.min(1_000_000_000))));

        let at = now + Duration::from_secs(ahead);
        let date = HeaderValue::from_str(&httpdate::fmt_http_date(at)).unwrap();
        let hint = retry_after(&header(date), || now).unwrap();
        // HTTP dates have whole seconds.
        prop_assert!(hint <= Duration::from_secs(ahead) && hint + Duration::from_secs(1) >= Duration::from_secs(ahead), "{:?} for {}", hint, ahead);

        let past = HeaderValue::from_str(&httpdate::fmt_http_date(now - Duration::from_secs(ahead + 1))).unwrap();
        prop_assert_eq!(retry_after(&header(past), || now), Some(Duration::ZERO));

        if let Ok(value) = HeaderValue::from_str(&text) {
            let _ = retry_after(&header(value), || now);
        }
        if let Ok(value) = HeaderValue::from_bytes(&bytes) {
            let mut headers = header(value.clone());
            headers.insert("retry-after-ms", value);
            let _ = retry_after(&headers, || now);
        }
    }

    }
}
