//! Building a [`Client`](crate::Client): per-provider credentials, base URLs and timeouts,
//! from code or from the environment variables each spec names.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use percent_encoding::percent_decode_str;
use reqwest::header::HeaderValue;
use secrecy::SecretString;

use crate::spec::{ProviderSpec, RateSpec, SchemeKind};
use crate::transport::ProviderOps;
use crate::transport::{Credential, Ctx, Refresher};
use crate::{Error, Result};

#[derive(Debug, Clone)]
enum Selector {
    Scheme(String),
    Basic,
    Bearer,
    ApiKey,
}

/// The settings of one provider: credentials, base URL, server variables.
///
/// ```
/// use taskpoll::ProviderConfig;
/// let deepomatic = ProviderConfig::new("deepomatic").api_key("my-key");
/// let cloudinary = ProviderConfig::new("cloudinary")
///     .basic("api-key", "api-secret")
///     .server_variable("cloud_name", "demo");
/// # let _ = (deepomatic, cloudinary);
/// ```
#[derive(Clone)]
pub struct ProviderConfig {
    name: String,
    credentials: Vec<(Selector, Credential)>,
    base_url: Option<String>,
    variables: BTreeMap<String, String>,
    request_timeout: Option<Duration>,
    refresh: Option<(Selector, Refresher)>,
    rate: Option<RateSpec>,
    max_in_flight: Option<usize>,
    webhook_secret: Option<SecretString>,
}

impl std::fmt::Debug for ProviderConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The base URL is shown without userinfo, query or fragment (they may carry secrets).
        f.debug_struct("ProviderConfig")
            .field("name", &self.name)
            .field("credentials", &self.credentials)
            .field("base_url", &self.base_url.as_deref().map(redact_url))
            .field("variables", &self.variables)
            .field("request_timeout", &self.request_timeout)
            .field("refresh", &self.refresh)
            .field("webhook_secret", &self.webhook_secret.as_ref().map(|_| "[redacted]"))
            .finish()
    }
}

impl ProviderConfig {
    /// Settings for the provider of this name (checked when the client is built).
    pub fn new(provider: impl Into<String>) -> Self {
        Self {
            name: provider.into(),
            credentials: Vec::new(),
            base_url: None,
            variables: BTreeMap::new(),
            request_timeout: None,
            refresh: None,
            rate: None,
            max_in_flight: None,
            webhook_secret: None,
        }
    }

    /// The secret that signs this provider's webhooks, when its spec says it
    /// is a separate one (`x-taskpoll.webhook.secret.env`, e.g. FactPulse's
    /// `FACTPULSE_WEBHOOK_SECRET`, read by [`ClientBuilder::providers_from_env`]). A
    /// provider whose webhooks are signed with an API credential (Cloudinary's
    /// API secret) needs nothing more; this overrides it.
    pub fn webhook_secret(mut self, secret: SecretString) -> Self {
        self.webhook_secret = Some(secret);
        self
    }

    /// Username and password for the provider's `http basic` scheme.
    pub fn basic(mut self, username: impl Into<String>, password: impl Into<String>) -> Self {
        let credential = Credential::Basic { username: username.into(), password: SecretString::from(password.into()) };
        self.credentials.push((Selector::Basic, credential));
        self
    }

    /// A token for the provider's bearer (or OAuth2) scheme.
    pub fn bearer(mut self, token: impl Into<String>) -> Self {
        self.credentials.push((Selector::Bearer, Credential::Token(SecretString::from(token.into()))));
        self
    }

    /// A key for the provider's first API-key header scheme.
    pub fn api_key(mut self, key: impl Into<String>) -> Self {
        self.credentials.push((Selector::ApiKey, Credential::Token(SecretString::from(key.into()))));
        self
    }

    /// A credential for a scheme named in the spec (e.g. Deepomatic's `AppId`).
    pub fn credential(mut self, scheme: impl Into<String>, credential: Credential) -> Self {
        self.credentials.push((Selector::Scheme(scheme.into()), credential));
        self
    }

    /// Overrides the spec's server URL (a simulator, a proxy, a regional host).
    /// `{variable}` placeholders in it are filled like the default's.
    ///
    /// [`ClientBuilder::build`] refuses an empty URL, one with credentials in
    /// it (`user:password@`: use the credential setters) and one with a query
    /// or fragment (the task path would be lost or land inside the query).
    pub fn base_url(mut self, url: impl Into<String>) -> Self {
        self.base_url = Some(url.into());
        self
    }

    /// Sets a server variable (Cloudinary's `cloud_name`).
    pub fn server_variable(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.variables.insert(name.into(), value.into());
        self
    }

    /// A per-request timeout for this provider (default: the client's).
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = Some(timeout);
        self
    }

    /// The request budget a [`crate::Waiter`] holds this provider to, shared by
    /// all its waits: `per_second` sustained, bursts of `burst` (default: the
    /// spec's `x-taskpoll.rate`, else [`ClientBuilder::DEFAULT_RATE`]).
    pub fn rate_limit(mut self, per_second: f64, burst: u32) -> Self {
        self.rate = Some(RateSpec { per_second, burst });
        self
    }

    /// How many status requests a [`crate::Waiter`] keeps in flight at once
    /// for this provider (default [`ClientBuilder::DEFAULT_MAX_IN_FLIGHT`]).
    pub fn max_in_flight(mut self, requests: usize) -> Self {
        self.max_in_flight = Some(requests);
        self
    }

    /// A one-shot re-authentication for the provider's bearer scheme: when a
    /// read is answered 401, `refresh` is called once for a new token and the
    /// read is retried once with it (FactPulse JWTs expire after 30 minutes).
    /// A second 401, or a refresh error, is returned as the auth error it is,
    /// so a bad credential never turns into a tight re-login loop.
    pub fn refresh_bearer<F, Fut>(self, refresh: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<String, String>> + Send + 'static,
    {
        let refresh = Arc::new(refresh);
        self.refresher(Selector::Bearer, move || {
            let refresh = refresh.clone();
            async move { refresh().await.map(|token| Credential::Token(SecretString::from(token))) }
        })
    }

    /// Like [`Self::refresh_bearer`], for any scheme of the spec by name.
    pub fn refresh_credential<F, Fut>(self, scheme: impl Into<String>, refresh: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Credential, String>> + Send + 'static,
    {
        self.refresher(Selector::Scheme(scheme.into()), refresh)
    }

    fn refresher<F, Fut>(mut self, selector: Selector, refresh: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Credential, String>> + Send + 'static,
    {
        let boxed = Refresher(Arc::new(move || Box::pin(refresh())));
        self.refresh = Some((selector, boxed));
        self
    }

    /// The provider name.
    pub fn provider(&self) -> &str {
        &self.name
    }

    fn has_credentials(&self) -> bool {
        !self.credentials.is_empty()
    }
}

/// Builds a [`Client`](crate::Client). Errors are reported by [`ClientBuilder::build`].
#[derive(Debug)]
pub struct ClientBuilder {
    providers: Vec<ProviderConfig>,
    http: Option<reqwest::Client>,
    user_agent: Option<String>,
    request_timeout: Duration,
    connect_timeout: Duration,
    max_body_bytes: usize,
    concurrency: usize,
    rate: Option<RateSpec>,
    max_in_flight: Option<usize>,
    /// Why a [`ClientBuilder::register`] failed, reported by `build`.
    register_error: Option<String>,
    clock: Option<Arc<dyn crate::Clock>>,
    webhook_capacity: usize,
    /// What [`ClientBuilder::providers_from_env`] looked for, for the error
    /// when nothing got configured (variable names only, never values).
    env_search: Option<EnvSearch>,
}

impl Default for ClientBuilder {
    fn default() -> Self {
        Self {
            providers: Vec::new(),
            http: None,
            user_agent: None,
            request_timeout: ClientBuilder::DEFAULT_REQUEST_TIMEOUT,
            connect_timeout: ClientBuilder::DEFAULT_CONNECT_TIMEOUT,
            max_body_bytes: ClientBuilder::DEFAULT_MAX_BODY_BYTES,
            concurrency: ClientBuilder::DEFAULT_CONCURRENCY,
            rate: None,
            max_in_flight: None,
            register_error: None,
            clock: None,
            webhook_capacity: crate::webhook::hub::DEFAULT_UNCLAIMED_CAPACITY,
            env_search: None,
        }
    }
}

impl ClientBuilder {
    /// Default per-request timeout.
    pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
    /// Default connect timeout.
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
    /// Default cap on a response body.
    pub const DEFAULT_MAX_BODY_BYTES: usize = 4 * 1024 * 1024;
    /// Default number of concurrent single reads in `get_many`.
    pub const DEFAULT_CONCURRENCY: usize = 8;
    /// Default number of status requests the waits keep in flight per provider.
    pub const DEFAULT_MAX_IN_FLIGHT: usize = 4;
    /// The request budget of a provider whose spec declares none: 10 per second, bursts of 20.
    pub const DEFAULT_RATE: RateSpec = RateSpec { per_second: 10.0, burst: 20 };

    /// The clock of the client's waits (unless their options name one), that
    /// webhook timestamps and `Retry-After` dates are read against and that
    /// times webhook activity (default: [`crate::clock::TokioClock`]).
    pub fn clock(mut self, clock: Arc<dyn crate::Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// How many webhook deliveries are kept for tasks nobody waits on yet
    /// (default [`crate::webhook::DEFAULT_UNCLAIMED_CAPACITY`]; the oldest go first).
    pub fn webhook_capacity(mut self, deliveries: usize) -> Self {
        self.webhook_capacity = deliveries;
        self
    }

    /// Adds (or replaces) a provider's settings.
    pub fn provider(mut self, config: ProviderConfig) -> Self {
        self.providers.retain(|p| !p.name.eq_ignore_ascii_case(&config.name));
        self.providers.push(config);
        self
    }

    /// Uses this `reqwest::Client` as is (its own timeouts, proxies, TLS).
    ///
    /// **Disable redirects on it** (`reqwest::redirect::Policy::none()`):
    /// taskpoll cannot change a given client's redirect policy, and reqwest
    /// strips only `Authorization` when it follows a redirect to another
    /// origin, so API-key headers would be sent there. taskpoll refuses an
    /// answer that came from another origin ([`Error::CrossOriginAnswer`]),
    /// but by then the request has left. taskpoll's own client follows a
    /// redirect to the same origin only (at most 5 in a row).
    ///
    /// With the `rustls` feature and not `native-tls`, a client you build
    /// needs a rustls crypto provider (reqwest panics without one): pass it a
    /// `rustls::ClientConfig`, or install a provider for the process first.
    pub fn http_client(mut self, client: reqwest::Client) -> Self {
        self.http = Some(client);
        self
    }

    /// The `User-Agent` (default `taskpoll/<version>`).
    pub fn user_agent(mut self, user_agent: impl Into<String>) -> Self {
        self.user_agent = Some(user_agent.into());
        self
    }

    /// The per-request timeout (default 30 s). A wait clips it to the time left.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// The connect timeout (default 10 s; ignored with [`Self::http_client`]).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The largest response body read (default 4 MiB); a larger one is [`Error::BodyTooLarge`].
    pub fn max_body_bytes(mut self, bytes: usize) -> Self {
        self.max_body_bytes = bytes;
        self
    }

    /// How many single reads `get_many` runs at once when a provider has no batch call (default 8).
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n;
        self
    }

    /// The request budget of every provider that does not set its own with
    /// [`ProviderConfig::rate_limit`] (it replaces the specs' budgets).
    pub fn rate_limit(mut self, per_second: f64, burst: u32) -> Self {
        self.rate = Some(RateSpec { per_second, burst });
        self
    }

    /// How many status requests a [`crate::Waiter`] keeps in flight per
    /// provider, for every provider that does not set its own with
    /// [`ProviderConfig::max_in_flight`] (default [`ClientBuilder::DEFAULT_MAX_IN_FLIGHT`]).
    pub fn max_in_flight(mut self, requests: usize) -> Self {
        self.max_in_flight = Some(requests);
        self
    }

    /// Makes a provider generated in another crate known, so that
    /// [`Self::provider`], task references and the simulator find it by name
    /// (see [`crate::spec::register`] and the README, "Your own provider, in
    /// your own crate"). Register before [`Self::providers_from_env`] for the
    /// environment to configure it. A name already taken fails [`Self::build`].
    pub fn register(mut self, spec: &'static ProviderSpec) -> Self {
        if let Err(e) = crate::spec::register(spec) {
            let message = match e {
                Error::Config(crate::error::ConfigError { message }) => message,
                other => other.to_string(),
            };
            self.register_error.get_or_insert(message);
        }
        self
    }

    /// Adds every provider configured in the environment (see [`Client::from_env`](crate::Client::from_env)).
    ///
    /// When no provider gets configured, [`Self::build`] says which variables
    /// were looked for, and names any set variable that looks like a
    /// provider's credential (`*_API_KEY`, `*_API_TOKEN`, …) but that no known
    /// spec reads: a provider generated in your own crate that was not
    /// registered first.
    pub fn providers_from_env(self) -> Result<Self> {
        let set: Vec<String> = std::env::vars_os().filter_map(|(name, _)| name.into_string().ok()).collect();
        self.read_env(&|name| std::env::var(name).ok(), &set)
    }

    /// Like [`Self::providers_from_env`], reading variables through `lookup` (for tests).
    pub fn providers_from_env_with(self, lookup: impl Fn(&str) -> Option<String>) -> Result<Self> {
        self.read_env(&lookup, &[])
    }

    /// `set`: the names of the variables that are set, when they can be listed.
    fn read_env(mut self, lookup: &dyn Fn(&str) -> Option<String>, set: &[String]) -> Result<Self> {
        let known = crate::spec::providers();
        for spec in known {
            if let Some(config) = env_config(spec, lookup)? {
                self = self.provider(config);
            }
        }
        self.env_search = Some(EnvSearch::new(known, set));
        Ok(self)
    }

    /// The resolved configuration of [`ClientBuilder::build`].
    pub(crate) fn resolve(self) -> Result<ClientInner> {
        if let Some(message) = self.register_error {
            return Err(Error::Config(crate::error::ConfigError { message }));
        }
        if self.providers.is_empty() {
            return Err(Error::config(match &self.env_search {
                Some(search) => search.nothing_configured(),
                None => "no provider configured (add one with ClientBuilder::provider, or set its environment \
                         variables and call ClientBuilder::providers_from_env)"
                    .to_string(),
            }));
        }
        if self.concurrency == 0 {
            return Err(Error::config("concurrency must be at least 1"));
        }
        if self.max_body_bytes == 0 {
            return Err(Error::config("max_body_bytes must be at least 1"));
        }
        if self.request_timeout.is_zero() {
            return Err(Error::config("request_timeout must be positive"));
        }
        let user_agent = self.user_agent.unwrap_or_else(|| format!("taskpoll/{}", env!("CARGO_PKG_VERSION")));
        let user_agent = HeaderValue::from_str(&user_agent)
            .map_err(|_| Error::config("the user agent contains characters not allowed in a header"))?;
        let http = match self.http {
            Some(http) => http,
            // Redirects are followed to the same origin only: the credential headers
            // (`X-API-KEY`, …) would go to whatever origin a `Location` names (reqwest
            // strips only `Authorization`). Any other 3xx is reported as the API error it is.
            None => {
                let builder = reqwest::Client::builder()
                    .connect_timeout(self.connect_timeout)
                    .redirect(crate::transport::redirect_policy());
                #[cfg(feature = "rustls")]
                let builder = builder.tls_backend_preconfigured(rustls_config()?);
                builder.build().map_err(|e| Error::config(format!("cannot build the HTTP client: {e}")))?
            }
        };
        let clock = self.clock.unwrap_or_else(|| Arc::new(crate::TokioClock));
        let mut providers = Vec::new();
        for config in self.providers {
            let spec = crate::spec::known_provider(&config.name)?;
            let credentials = resolve_credentials(spec, &config)?;
            let refresh = match &config.refresh {
                Some((selector, refresher)) => Some((resolve_scheme(spec, selector)?.name, refresher.clone())),
                None => None,
            };
            let base_url = resolve_base_url(spec, &config)?;
            let rate = config.rate.or(self.rate).or(spec.rate).unwrap_or(ClientBuilder::DEFAULT_RATE);
            if !RateSpec::usable_per_second(rate.per_second) || rate.burst == 0 {
                return Err(Error::config(format!(
                    "{}: the rate limit needs a positive rate (at most 1e6 per second) and a burst of at least 1",
                    spec.name
                )));
            }
            let max_in_flight =
                config.max_in_flight.or(self.max_in_flight).unwrap_or(ClientBuilder::DEFAULT_MAX_IN_FLIGHT);
            if max_in_flight == 0 {
                return Err(Error::config(format!("{}: max_in_flight must be at least 1", spec.name)));
            }
            let ctx = Ctx {
                provider: spec,
                credentials: Arc::new(RwLock::new(credentials)),
                user_agent: user_agent.clone(),
                max_body_bytes: self.max_body_bytes,
                request_timeout: config.request_timeout.unwrap_or(self.request_timeout),
                clock: clock.clone(),
                base: reqwest::Url::parse(&base_url)
                    .map_err(|e| Error::config(format!("{}: base URL: {e}", spec.name)))?,
            };
            let ops = (connect_of(spec)?.0)(&base_url, http.clone(), ctx.clone());
            providers.push(Configured {
                spec,
                ops,
                http: http.clone(),
                ctx,
                refresh,
                base_url,
                request_timeout: config.request_timeout.unwrap_or(self.request_timeout),
                rate,
                max_in_flight,
                webhook_secret: config.webhook_secret.clone(),
            });
        }
        let webhooks = crate::webhook::hub::WebhookHub::new(self.webhook_capacity, clock);
        Ok(ClientInner { providers, concurrency: self.concurrency, webhooks, engine: std::sync::OnceLock::new() })
    }
}

/// The TLS of taskpoll's own HTTP client with the feature `rustls` (also when
/// `native-tls` is on: asking for rustls is the choice). What reqwest's own
/// rustls sets up (the platform's verifier, HTTP/2 offered), with the `ring`
/// crypto provider: reqwest's is aws-lc-rs, a long C build.
#[cfg(feature = "rustls")]
fn rustls_config() -> Result<rustls::ClientConfig> {
    use rustls_platform_verifier::BuilderVerifierExt as _;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|builder| builder.with_platform_verifier())
        .map_err(|e| Error::config(format!("cannot set up TLS (rustls): {e}")))?
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// The descriptor's `connect`, typed again (the descriptor holds it
/// type-erased, see `transport::Connect`). Only a descriptor written by hand
/// instead of by `taskpoll::codegen` can hold anything else.
fn connect_of(spec: &'static ProviderSpec) -> Result<crate::transport::Connect> {
    spec.connect.downcast_ref::<crate::transport::Connect>().copied().ok_or_else(|| {
        Error::config(format!(
            "{}: the descriptor's `connect` is not a taskpoll connect function (generate it with taskpoll::codegen)",
            spec.name
        ))
    })
}

fn resolve_credentials(spec: &'static ProviderSpec, config: &ProviderConfig) -> Result<Vec<crate::transport::Held>> {
    let mut out: Vec<crate::transport::Held> = Vec::new();
    for (selector, credential) in &config.credentials {
        let scheme = resolve_scheme(spec, selector)?;
        let held = crate::transport::Held::new(spec, scheme.name, credential).map_err(|reason| {
            Error::config(format!("{}: the credential for scheme `{}`: {reason}", spec.name, scheme.name))
        })?;
        out.retain(|h| h.scheme != scheme.name);
        out.push(held);
    }
    if !out.is_empty() {
        check_alternatives(spec, &out)?;
    }
    Ok(out)
}

/// Refuses credentials that satisfy none of the read operation's security
/// alternatives (Deepomatic's app id without its key): nothing could be sent.
/// Configuring no credential at all is left to the call, which reports
/// [`Error::MissingCredentials`] without sending.
fn check_alternatives(spec: &'static ProviderSpec, configured: &[crate::transport::Held]) -> Result<()> {
    let alternatives = spec.get_security();
    let has = |scheme: &&str| configured.iter().any(|held| held.scheme == *scheme);
    if alternatives.is_empty() || alternatives.iter().any(|alt| alt.iter().all(has)) {
        return Ok(());
    }
    let describe = |scheme: &str| {
        let env = spec.scheme(scheme).map(|s| s.env.join(" + ")).unwrap_or_default();
        if env.is_empty() { scheme.to_string() } else { format!("{scheme} ({env})") }
    };
    let have: Vec<&str> = configured.iter().map(|held| held.scheme).collect();
    let fewest = alternatives.iter().map(|alt| alt.iter().filter(|s| !has(s)).count()).min().unwrap_or(0);
    let mut missing: Vec<String> = Vec::new();
    for alt in alternatives.iter().filter(|alt| alt.iter().filter(|s| !has(s)).count() == fewest) {
        let needed = alt.iter().filter(|s| !has(s)).map(|s| describe(s)).collect::<Vec<_>>().join(" + ");
        if !missing.contains(&needed) {
            missing.push(needed);
        }
    }
    Err(Error::config(format!(
        "{}: {} alone cannot authenticate `{}`; also configure {}",
        spec.name,
        have.join(" + "),
        spec.get.operation,
        missing.join(" or ")
    )))
}

/// The scheme a selector names (`basic`, `bearer`, `api key` or a name).
fn resolve_scheme(spec: &'static ProviderSpec, selector: &Selector) -> Result<&'static crate::spec::Scheme> {
    let wanted = |kind: &dyn Fn(SchemeKind) -> bool, what: &str| {
        spec.schemes.iter().find(|s| kind(s.kind)).ok_or_else(|| {
            Error::config(format!("{} has no {what} scheme (schemes: {})", spec.name, scheme_names(spec)))
        })
    };
    match selector {
        Selector::Basic => wanted(&|k| k == SchemeKind::Basic, "basic"),
        Selector::Bearer => wanted(&|k| k == SchemeKind::Bearer, "bearer"),
        Selector::ApiKey => wanted(&|k| matches!(k, SchemeKind::ApiKeyHeader(_)), "API-key"),
        Selector::Scheme(name) => spec.scheme(name).ok_or_else(|| {
            Error::config(format!("{} has no scheme `{name}` (schemes: {})", spec.name, scheme_names(spec)))
        }),
    }
}

fn scheme_names(spec: &ProviderSpec) -> String {
    spec.schemes.iter().map(|s| s.name).collect::<Vec<_>>().join(", ")
}

fn resolve_base_url(spec: &'static ProviderSpec, config: &ProviderConfig) -> Result<String> {
    let template = config.base_url.clone().unwrap_or_else(|| spec.default_base_url.to_string());
    if template.trim().is_empty() {
        return Err(Error::config(format!("{}: the base URL is empty", spec.name)));
    }
    let mut url = template.clone();
    for var in spec.server_variables {
        let placeholder = format!("{{{}}}", var.name);
        if !url.contains(&placeholder) {
            continue;
        }
        let value = match config.variables.get(var.name) {
            Some(v) => v.clone(),
            None if var.required => {
                let hint = var.env.map(|e| format!(" (or set {e})")).unwrap_or_default();
                return Err(Error::config(format!(
                    "{}: server variable `{}` is required; set it with ProviderConfig::server_variable{hint}",
                    spec.name, var.name
                )));
            }
            None => var.default.to_string(),
        };
        if value.is_empty()
            || value.contains(['/', '?', '#', '@', ':'])
            || value.chars().any(|c| c.is_control() || c == ' ')
        {
            return Err(Error::config(format!("{}: server variable `{}` has an unusable value", spec.name, var.name)));
        }
        url = url.replace(&placeholder, &value);
    }
    // Messages show the URL redacted: userinfo, query and fragment may hold secrets.
    let shown = redact_url(&url);
    if url.contains('{') {
        return Err(Error::config(format!("{}: base URL {shown:?} has an unknown placeholder", spec.name)));
    }
    let parsed = reqwest::Url::parse(&url)
        .map_err(|e| Error::config(format!("{}: base URL {shown:?} is not a URL: {e}", spec.name)))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.cannot_be_a_base() {
        return Err(Error::config(format!("{}: base URL {shown:?} must be http or https", spec.name)));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(Error::config(format!(
            "{}: base URL {shown:?} must not contain credentials (user:password@); set them with the credential setters or variables",
            spec.name
        )));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(Error::config(format!(
            "{}: base URL {shown:?} must not have a query or fragment (the task path would be lost)",
            spec.name
        )));
    }
    Ok(url.trim_end_matches('/').to_string())
}

/// One provider's settings from the environment, or `None` if it has no credentials there.
fn env_config(spec: &'static ProviderSpec, lookup: &dyn Fn(&str) -> Option<String>) -> Result<Option<ProviderConfig>> {
    let get = |name: &str| lookup(name).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
    let mut config = ProviderConfig::new(spec.name);
    if let Some(cu) = spec.credentials_url
        && let Some(text) = get(cu.var)
    {
        let url = reqwest::Url::parse(&text)
            .map_err(|_| Error::config(format!("{} must look like scheme://user:secret@host", cu.var)))?;
        let decode = |s: &str| percent_decode_str(s).decode_utf8_lossy().into_owned();
        let (user, pass, host) =
            (decode(url.username()), url.password().map(decode), url.host_str().map(str::to_string));
        match (user.is_empty(), pass, host) {
            (false, Some(pass), Some(host)) => {
                config = config
                    .credential(cu.scheme, Credential::Basic { username: user, password: SecretString::from(pass) })
                    .server_variable(cu.server_variable, host);
            }
            _ => return Err(Error::config(format!("{} must look like scheme://user:secret@host", cu.var))),
        }
    }
    for scheme in spec.schemes {
        match (scheme.kind, scheme.env) {
            (SchemeKind::Basic, [user_var, pass_var]) => {
                if let (Some(user), Some(pass)) = (get(user_var), get(pass_var)) {
                    config = config.credential(
                        scheme.name,
                        Credential::Basic { username: user, password: SecretString::from(pass) },
                    );
                }
            }
            (SchemeKind::Bearer | SchemeKind::ApiKeyHeader(_), [var]) => {
                if let Some(token) = get(var) {
                    config = config.credential(scheme.name, Credential::Token(SecretString::from(token)));
                }
            }
            _ => {}
        }
    }
    if let Some(secret) = spec.webhook.and_then(|w| w.secret_env).and_then(get) {
        config = config.webhook_secret(SecretString::from(secret));
    }
    // A provider that needs credentials is configured when they are set; one
    // whose spec declares no security at all is always available.
    if !config.has_credentials() && !spec.schemes.is_empty() {
        return Ok(None);
    }
    for var in spec.server_variables {
        if let Some(value) = var.env.and_then(get) {
            config = config.server_variable(var.name, value);
        }
    }
    // The spec's own variable, else the generic `TASKPOLL_<PROVIDER>_BASE_URL` every provider has.
    if let Some(url) = spec.base_url_env.and_then(get).or_else(|| get(&spec.generic_base_url_env())) {
        config = config.base_url(with_server_path(spec, &url));
    }
    Ok(Some(config))
}

/// What [`ClientBuilder::providers_from_env`] looked for: variable names only.
#[derive(Debug)]
struct EnvSearch {
    /// Per provider, the credential variables that configure it.
    looked_for: Vec<String>,
    /// Set variables that look like a provider's credential or base URL but
    /// that no known spec reads (sorted).
    unclaimed: Vec<String>,
}

/// The endings of variable names that usually hold a provider's credential.
const CREDENTIAL_ENDINGS: [&str; 5] = ["_API_KEY", "_API_TOKEN", "_API_SECRET", "_ACCESS_TOKEN", "_AUTH_TOKEN"];

/// The most unclaimed variables an error names.
const MAX_UNCLAIMED_SHOWN: usize = 5;

impl EnvSearch {
    fn new(known: &[&'static ProviderSpec], set: &[String]) -> Self {
        let mut claimed: Vec<String> = Vec::new();
        let mut looked_for = Vec::new();
        for spec in known {
            // The read operation's security alternatives, each as the variables that make it up.
            let env_of = |scheme: &str| spec.scheme(scheme).map(|s| s.env.join(" + ")).filter(|e| !e.is_empty());
            let mut alternatives: Vec<String> = spec.credentials_url.iter().map(|cu| cu.var.to_string()).collect();
            for alternative in spec.get_security() {
                let vars: Option<Vec<String>> = alternative.iter().map(|scheme| env_of(scheme)).collect();
                if let Some(vars) = vars.filter(|v| !v.is_empty())
                    && !alternatives.contains(&vars.join(" + "))
                {
                    alternatives.push(vars.join(" + "));
                }
            }
            if !alternatives.is_empty() {
                looked_for.push(format!("{}: {}", spec.name, alternatives.join(" or ")));
            }
            claimed.extend(spec.credentials_url.iter().map(|cu| cu.var.to_string()));
            claimed.extend(spec.schemes.iter().flat_map(|s| s.env.iter().map(|v| v.to_string())));
            claimed.extend(spec.server_variables.iter().filter_map(|v| v.env.map(str::to_string)));
            claimed.extend(spec.base_url_env.map(str::to_string));
            claimed.extend(spec.webhook.and_then(|w| w.secret_env).map(str::to_string));
            claimed.push(spec.generic_base_url_env());
        }
        let looks_like_a_provider_s = |name: &str| {
            CREDENTIAL_ENDINGS.iter().any(|end| name.len() > end.len() && name.ends_with(end))
                || (name.starts_with("TASKPOLL_") && name.ends_with("_BASE_URL"))
        };
        let mut unclaimed: Vec<String> =
            set.iter().filter(|name| looks_like_a_provider_s(name) && !claimed.contains(name)).cloned().collect();
        unclaimed.sort();
        unclaimed.dedup();
        EnvSearch { looked_for, unclaimed }
    }

    /// The error text when the environment configured no provider.
    fn nothing_configured(&self) -> String {
        let looked_for = if self.looked_for.is_empty() { "none".to_string() } else { self.looked_for.join("; ") };
        let mut message = format!("no provider configured: none of the variables looked for is set ({looked_for})");
        let register = "ClientBuilder::register before providers_from_env, or taskpoll::spec::register before \
                        Client::from_env";
        match self.unclaimed.as_slice() {
            [] => message.push_str(&format!(
                "; a provider generated in your own crate is read from the environment once registered ({register})"
            )),
            unclaimed => {
                let mut names: Vec<&str> = unclaimed.iter().take(MAX_UNCLAIMED_SHOWN).map(String::as_str).collect();
                if unclaimed.len() > MAX_UNCLAIMED_SHOWN {
                    names.push("…");
                }
                let (verb, pronoun) = if unclaimed.len() == 1 { ("is", "it") } else { ("are", "them") };
                message.push_str(&format!(
                    "; {} {verb} set, but no known provider reads {pronoun}: register the provider generated in your \
                     own crate first ({register})",
                    names.join(", ")
                ));
            }
        }
        message
    }
}

/// A URL as it may be shown: no userinfo, query or fragment, even when it
/// does not parse.
fn redact_url(text: &str) -> String {
    let text = text.find(['?', '#']).map_or(text, |end| &text[..end]);
    let (scheme, rest) = match text.split_once("://") {
        Some((scheme, rest)) => (format!("{scheme}://"), rest),
        None => (String::new(), text),
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let host = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
    format!("{scheme}{host}{path}")
}

/// A host-only URL from the environment (`https://api.deepomatic.com`) keeps
/// the spec server's path (`/v0.7`), as the official clients do with their
/// host variables; a URL with a path is used as it is.
fn with_server_path(spec: &ProviderSpec, url: &str) -> String {
    let host_only =
        reqwest::Url::parse(url).is_ok_and(|u| u.path() == "/" && u.query().is_none() && u.fragment().is_none());
    // The default's path, placeholders kept (`/v2/analysis/{cloud_name}`).
    let server_path = spec.default_base_url.split_once("://").and_then(|(_, rest)| rest.find('/').map(|i| &rest[i..]));
    match server_path {
        Some(path) if host_only => format!("{}{path}", url.trim_end_matches('/')),
        _ => url.to_string(),
    }
}

/// A client's resolved configuration and shared state (what a `Client` holds).
pub(crate) struct ClientInner {
    pub(crate) providers: Vec<Configured>,
    pub(crate) concurrency: usize,
    /// Verified webhook deliveries, handed to the waits (see `webhook.rs`).
    pub(crate) webhooks: crate::webhook::WebhookHub,
    /// The schedulers every wait of this client runs on, made on the first
    /// wait. Typed `Any` because the engine sits above the client (it reads
    /// through it): the wait layer stores its `Engine` here and downcasts it.
    pub(crate) engine: std::sync::OnceLock<Box<dyn std::any::Any + Send + Sync>>,
}

/// One configured provider, resolved once.
pub(crate) struct Configured {
    pub(crate) spec: &'static ProviderSpec,
    pub(crate) ops: Box<dyn ProviderOps>,
    pub(crate) http: reqwest::Client,
    pub(crate) ctx: crate::transport::Ctx,
    /// The scheme to re-authenticate after a 401, and how.
    pub(crate) refresh: Option<(&'static str, crate::transport::Refresher)>,
    pub(crate) base_url: String,
    pub(crate) request_timeout: Duration,
    /// The request budget a waiter holds the provider to.
    pub(crate) rate: crate::spec::RateSpec,
    /// Status requests a waiter keeps in flight at once.
    pub(crate) max_in_flight: usize,
    /// A separate webhook secret (`ProviderConfig::webhook_secret`).
    pub(crate) webhook_secret: Option<secrecy::SecretString>,
}
