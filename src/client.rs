//! The unified client: one status read, many status reads.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt as _;
use serde_json::Value;

use crate::config::{ClientBuilder, ClientInner, Configured};
use crate::spec::ProviderSpec;
use crate::{Error, Result, Task, TaskRef, observe, transport};

/// Reads tasks at every configured provider. Cheap to clone.
///
/// ```no_run
/// # async fn demo() -> taskpoll::Result<()> {
/// use taskpoll::{Client, ProviderConfig};
/// let client = Client::builder().provider(ProviderConfig::new("deepomatic").api_key("key")).build()?;
/// let task = client.get(&"deepomatic:269999729".parse()?).await?;
/// println!("{} is {}", task.id(), task.phase());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Client {
    inner: Arc<ClientInner>,
}

impl ClientBuilder {
    /// Checks everything and builds the client.
    pub fn build(self) -> Result<Client> {
        Ok(Client::from_inner(self.resolve()?))
    }
}

/// The settings a generated typed client shares (`generated::<provider>::client`).
impl transport::SharedSettings for Client {
    fn shared_settings(&self, provider: &'static ProviderSpec) -> Result<(String, reqwest::Client, transport::Ctx)> {
        let configured = match self.inner.providers.iter().find(|p| std::ptr::eq(p.spec, provider)) {
            Some(p) => p,
            None => self.configured(provider.name)?,
        };
        Ok((configured.base_url.clone(), configured.http.clone(), configured.ctx.clone()))
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let providers: Vec<(&str, &str)> =
            self.inner.providers.iter().map(|p| (p.spec.name, p.base_url.as_str())).collect();
        f.debug_struct("Client").field("providers", &providers).finish_non_exhaustive()
    }
}

/// The most pages `get_many` follows for one chunk of ids (a loop guard).
const MAX_PAGES: usize = 1000;

impl Client {
    /// A builder with no provider configured.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// A client for every provider whose variables are set: `CLOUDINARY_URL`
    /// (`cloudinary://key:secret@cloud`) or `CLOUDINARY_CLOUD_NAME` +
    /// `CLOUDINARY_API_KEY` + `CLOUDINARY_API_SECRET` (or `CLOUDINARY_OAUTH_TOKEN`);
    /// `QOLABA_API_KEY`; `FACTPULSE_API_KEY` or `FACTPULSE_TOKEN`;
    /// `DEEPOMATIC_API_KEY` (+ `DEEPOMATIC_APP_ID`, `DEEPOMATIC_API_URL`).
    /// The names come from each spec's `x-taskpoll-env`; any provider's server
    /// can also be overridden with `TASKPOLL_<PROVIDER>_BASE_URL` (a host-only
    /// URL keeps the spec's path, e.g. `/v0.7`). No provider set is an error.
    pub fn from_env() -> Result<Self> {
        ClientBuilder::default().providers_from_env()?.build()
    }

    pub(crate) fn inner(&self) -> &ClientInner {
        &self.inner
    }

    pub(crate) fn from_inner(inner: ClientInner) -> Self {
        Self { inner: Arc::new(inner) }
    }

    /// The client, held weakly (by its own schedulers).
    pub(crate) fn downgrade(&self) -> std::sync::Weak<ClientInner> {
        Arc::downgrade(&self.inner)
    }

    /// The client a weak hold points to, while someone else holds it.
    pub(crate) fn upgrade(weak: &std::sync::Weak<ClientInner>) -> Option<Self> {
        weak.upgrade().map(|inner| Self { inner })
    }

    /// The configured providers.
    pub fn providers(&self) -> impl Iterator<Item = &'static ProviderSpec> + '_ {
        self.inner.providers.iter().map(|p| p.spec)
    }

    /// The base URL in use for a provider.
    pub fn base_url(&self, provider: &str) -> Option<&str> {
        self.configured(provider).ok().map(|p| p.base_url.as_str())
    }

    /// The configuration of a task's provider (resolved when the task reference was made).
    pub(crate) fn configured_for(&self, task: &TaskRef) -> Result<&Configured> {
        let spec = task.spec();
        match self.inner.providers.iter().find(|p| std::ptr::eq(p.spec, spec)) {
            Some(p) => Ok(p),
            None => self.configured(spec.name),
        }
    }

    pub(crate) fn configured(&self, provider: &str) -> Result<&Configured> {
        match self.inner.providers.iter().find(|p| p.spec.name.eq_ignore_ascii_case(provider)) {
            Some(p) => Ok(p),
            None => {
                crate::spec::known_provider(provider)?;
                Err(Error::ProviderNotConfigured(crate::error::ProviderNotConfigured {
                    provider: provider.to_string(),
                }))
            }
        }
    }

    /// Reads a task's status once.
    pub async fn get(&self, task: &TaskRef) -> Result<Task> {
        self.get_within(task, None, None).await
    }

    /// Reads a task's status once, with the request timeout clipped to `budget`
    /// (the polling engine passes the time left before its deadline) and to
    /// `attempt` (the engine's attempt timeout: on expiry the read is a
    /// timeout to retry, not the end of the wait's time).
    pub(crate) async fn get_within(
        &self,
        task: &TaskRef,
        budget: Option<Duration>,
        attempt: Option<Duration>,
    ) -> Result<Task> {
        let provider = self.configured_for(task)?;
        let request_timeout = attempt.map_or(provider.request_timeout, |a| a.min(provider.request_timeout));
        let timeout = budget.map_or(request_timeout, |b| b.min(request_timeout));
        if timeout.is_zero() {
            return Err(observe::no_time_left(provider.spec, &provider.ctx.base));
        }
        // The whole call, re-authentication included, stays within `timeout`:
        // the call's own elapsed time, on tokio's timer like the timeouts it
        // bounds (taken only when a 401 can lead to a second read).
        #[allow(clippy::disallowed_methods)]
        let started = provider.refresh.as_ref().map(|_| tokio::time::Instant::now());
        // Whether the limit is the wait's remaining budget rather than the
        // request (or attempt) timeout: the attempt timeout never exceeds the
        // budget, so equal means the deadline is what cuts the read.
        let from_deadline = budget.is_some_and(|b| b <= request_timeout);
        let mut result = read_once(provider, task, timeout, from_deadline).await;
        if let (Err(e), Some(refresh), Some(started)) = (&result, &provider.refresh, started)
            && e.status() == Some(401)
        {
            // Boxed: rare, and a read's future need not make room for it.
            let again = reauthenticate(provider, refresh, task, (started, timeout), from_deadline);
            if let Some(second) = Box::pin(again).await {
                result = second;
            }
        }
        if tracing::enabled!(tracing::Level::DEBUG) {
            log_read(task, &result);
        }
        result
    }

    /// Reads several tasks of one provider, one result per id in input order.
    ///
    /// Uses the provider's batch operation when its spec declares one (ids in
    /// chunks, `next` pages followed through the generated client so
    /// credentials never go to another host); otherwise runs single reads,
    /// at most [`ClientBuilder::concurrency`] at a time. An empty list makes no
    /// request. The outer error is a failure of the whole batch.
    pub async fn get_many<S: AsRef<str>>(&self, provider: &str, ids: &[S]) -> Result<Vec<Result<Task>>> {
        let configured = self.configured(provider)?;
        let refs: Vec<Result<TaskRef>> = ids.iter().map(|id| TaskRef::of_spec(configured.spec, id.as_ref())).collect();
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        // One id is read with the single-task operation, as the official clients do.
        if configured.spec.many.is_none() || ids.len() == 1 {
            let reads = refs.into_iter().map(|r| async move {
                match r {
                    Ok(task_ref) => self.get(&task_ref).await,
                    Err(e) => Err(e),
                }
            });
            return Ok(futures_util::stream::iter(reads).buffered(self.inner.concurrency).collect().await);
        }
        let valid: Vec<String> = refs.iter().filter_map(|r| r.as_ref().ok().map(|t| t.id().to_string())).collect();
        let (spec, id) = (configured.spec, configured.spec.many.map_or("", |many| many.id));
        let mut found = HashMap::with_capacity(valid.len());
        self.read_batch(configured, &valid, (configured.request_timeout, None), |item, http_status| {
            let body = match item {
                BatchItem::InPlace(raw) => serde_json::from_str(raw.get()).ok(),
                BatchItem::Built(body) => Some(body),
            };
            if let Some((id, task)) = body.and_then(|body| observe::item_task(spec, id, http_status, body)) {
                found.insert(id, task);
            }
        })
        .await?;
        let mut repeated: HashMap<String, Task> = HashMap::new();
        Ok(refs
            .into_iter()
            .map(|r| {
                let task_ref = r?;
                // Each answer is moved out for its first id; a repeated id gets a copy of it.
                if let Some(task) = found.remove(task_ref.id()) {
                    repeated.insert(task_ref.id().to_string(), task.clone());
                    return Ok(task);
                }
                repeated.get(task_ref.id()).cloned().ok_or_else(|| {
                    Error::MissingFromBatch(crate::error::MissingFromBatch {
                        provider: configured.spec.name,
                        id: task_ref.id().to_string(),
                    })
                })
            })
            .collect())
    }

    /// Reads tasks of one provider with its batch operation: unique ids in
    /// chunks of `max_ids`, the page size sent explicitly, `next` pages
    /// followed; the whole read, pages included, stays within `budget`. Each
    /// item of each answer goes to `each`, with the answer's HTTP status.
    pub(crate) async fn read_batch(
        &self,
        provider: &Configured,
        ids: &[String],
        (budget, attempt): (Duration, Option<Duration>),
        mut each: impl FnMut(BatchItem<'_>, u16) + Send,
    ) -> Result<()> {
        let request_timeout = attempt.map_or(provider.request_timeout, |a| a.min(provider.request_timeout));
        let spec = provider.spec;
        let Some(many) = spec.many else { return Ok(()) };
        // Ids are copied only when one is repeated (the waiter's never are).
        let mut seen = HashSet::with_capacity(ids.len());
        let unique: Vec<String>;
        let ids = if ids.iter().all(|id| seen.insert(id.as_str())) {
            ids
        } else {
            seen.clear();
            unique = ids.iter().filter(|id| seen.insert(id.as_str())).cloned().collect();
            &unique
        };
        // The call's own elapsed time, on tokio's timer like the timeouts it bounds.
        #[allow(clippy::disallowed_methods)]
        let started = tokio::time::Instant::now();
        let chunk_size = usize::try_from(many.max_ids).unwrap_or(usize::MAX).max(1);
        let first_page: Vec<(String, String)> =
            many.page_size_param.map(|name| (name.to_string(), many.max_ids.to_string())).into_iter().collect();
        for chunk in ids.chunks(chunk_size) {
            let mut page = first_page.clone();
            for _ in 0..MAX_PAGES {
                let left = budget.saturating_sub(started.elapsed());
                let timeout = request_timeout.min(left);
                if timeout.is_zero() {
                    return Err(observe::no_time_left(spec, &provider.ctx.base));
                }
                // Whether the whole read's budget cuts this page (a wait's deadline, for the engine).
                let from_deadline =
                    if attempt.is_some() { left <= request_timeout } else { timeout < provider.request_timeout };
                let call = async {
                    transport::receive(&provider.ctx, many.operation, provider.ops.list(chunk, &page).await).await
                };
                let raw = match tokio::time::timeout(timeout, call).await {
                    Ok(received) => observe::answer(spec, many.operation, received, &provider.ctx.base)?,
                    Err(_) => {
                        return Err(observe::timed_out(
                            spec,
                            many.operation,
                            &provider.ctx.base,
                            timeout,
                            from_deadline,
                        ));
                    }
                };
                let walked = (200..300).contains(&raw.status).then(|| walk_page(&raw.body, many.items, many.next));
                let next = match walked.flatten() {
                    // Items read in place: only what a task needs is built.
                    Some((items, next)) => {
                        for item in items {
                            each(BatchItem::InPlace(item), raw.status);
                        }
                        next
                    }
                    // Not a 2xx JSON object, or not walkable in place: built whole
                    // (and an answer that is no task list becomes its error here).
                    None => {
                        let mut body = observe::task_body(spec, many.operation, &raw)?;
                        let next = many.next.and_then(|p| body.pointer(p)).and_then(Value::as_str).map(str::to_string);
                        if let Some(Value::Array(items)) = body.pointer_mut(many.items) {
                            for item in std::mem::take(items) {
                                each(BatchItem::Built(item), raw.status);
                            }
                        }
                        next
                    }
                };
                let Some(next_page) = next.and_then(|url| page_params(&url, many.page_params)) else { break };
                if next_page == page || next_page.is_empty() {
                    break;
                }
                page = next_page;
            }
        }
        Ok(())
    }
}

/// The debug line of a read. Out of line, like the other debug lines of the
/// read path: every read runs past it, and few write it.
#[cold]
fn log_read(task: &TaskRef, result: &Result<Task>) {
    match result {
        Ok(t) => {
            tracing::debug!(task = %task, phase = %t.phase(), status = t.status(), http = t.http_status(), "read task")
        }
        Err(e) => tracing::debug!(task = %task, error = %e, "read failed"),
    }
}

/// One status read of `task`, the whole call (connection, request and the
/// answer's body) within `timeout` (`from_deadline`: a wait's budget, which
/// the error on timing out says).
async fn read_once(provider: &Configured, task: &TaskRef, timeout: Duration, from_deadline: bool) -> Result<Task> {
    let (spec, ctx) = (provider.spec, &provider.ctx);
    let call =
        async { transport::receive(ctx, spec.get.operation, provider.ops.get(task.id(), task.inputs()).await).await };
    match tokio::time::timeout(timeout, call).await {
        Ok(received) => observe::single(spec, spec.get.operation, task, received, &ctx.base),
        Err(_) => Err(observe::timed_out(spec, spec.get.operation, &ctx.base, timeout, from_deadline)),
    }
}

/// After a 401: one refresh of the credential, and one more read if it
/// worked and time is left before `started + timeout`; `None` when there was
/// no second read (the 401 stands).
async fn reauthenticate(
    provider: &Configured,
    (scheme, refresher): &(&'static str, transport::Refresher),
    task: &TaskRef,
    (started, timeout): (tokio::time::Instant, Duration),
    from_deadline: bool,
) -> Option<Result<Task>> {
    let left = || timeout.saturating_sub(started.elapsed());
    let name = provider.spec.name;
    match tokio::time::timeout(left(), (refresher.0)()).await {
        // Refused when of the wrong kind or not sendable in a header (the reason says which).
        Ok(Ok(credential)) => match transport::replace_credential(&provider.ctx, scheme, credential) {
            Ok(()) => {
                tracing::info!(provider = name, scheme, "credential refreshed after a 401");
                let left = left();
                if left.is_zero() {
                    return None;
                }
                Some(crate::telemetry::as_resend(1, read_once(provider, task, left, from_deadline)).await)
            }
            Err(reason) => {
                tracing::warn!(provider = name, scheme, %reason, "refreshed credential cannot be sent");
                None
            }
        },
        Ok(Err(message)) => {
            tracing::warn!(provider = name, scheme, %message, "credential refresh failed");
            None
        }
        Err(_) => {
            tracing::warn!(provider = name, scheme, "credential refresh timed out");
            None
        }
    }
}

/// One item of a batch answer, as [`Client::read_batch`] hands it over.
pub(crate) enum BatchItem<'a> {
    /// Read in place from a 2xx JSON object answer.
    InPlace(&'a serde_json::value::RawValue),
    /// Built whole, from an answer that could not be walked in place.
    Built(Value),
}

/// A 2xx batch answer's items and `next` link, read in place (in one pass
/// over the answer); `None` when the body is not a JSON object that can be walked so.
fn walk_page<'a>(
    body: &'a [u8],
    items: &str,
    next: Option<&str>,
) -> Option<(Vec<&'a serde_json::value::RawValue>, Option<String>)> {
    let (items, next) = crate::raw_json::page_in_body(body, items, next.unwrap_or("")).ok()?;
    let next = next.and_then(|link| serde_json::from_str::<Value>(link.get()).ok());
    Some((items, next.as_ref().and_then(Value::as_str).map(str::to_string)))
}

/// The page parameters named by the spec, read from a `next` URL's query.
fn page_params(next: &str, names: &[&str]) -> Option<Vec<(String, String)>> {
    let url = reqwest::Url::parse(next).ok()?;
    let pairs: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(k, _)| names.contains(&k.as_ref()))
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    Some(pairs)
}
