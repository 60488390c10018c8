//! The HTTP side: routing by the spec's operations, auth, faults, answers.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::response::Response;
use http::{HeaderValue, StatusCode, header};
use percent_encoding::percent_decode_str;
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::time::Instant;

use super::auth;
use super::bodies::{self, Rendered};
use super::fault::{Fault, FaultQueue};
use super::lifecycle::{Answer, Progress};
use super::record::{RecordedRequest, WebhookDelivery};
use crate::Phase;
use crate::spec::{OperationSpec, ProviderSpec};

/// The largest request body read.
const MAX_REQUEST_BODY: usize = 1024 * 1024;

/// Paging settings of batch operations.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Paging {
    pub(crate) page_size: usize,
    pub(crate) max_page_size: usize,
}

/// A simulated task.
#[derive(Debug)]
pub(crate) struct TaskEntry {
    pub(crate) progress: Progress,
    pub(crate) reads: u32,
}

/// Everything the handler and the `Simulator` handle share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) paging: Paging,
    pub(crate) addr: SocketAddr,
    pub(crate) state: Mutex<SimState>,
    pub(crate) shutdown: watch::Receiver<bool>,
    /// Sends the webhook deliveries (made on the first: one connection pool for all).
    pub(crate) webhook_sender: std::sync::OnceLock<reqwest::Client>,
}

#[derive(Debug, Default)]
pub(crate) struct SimState {
    pub(crate) tasks: HashMap<(&'static str, String), TaskEntry>,
    pub(crate) provider_faults: HashMap<&'static str, FaultQueue>,
    pub(crate) task_faults: HashMap<(&'static str, String), FaultQueue>,
    pub(crate) requests: Vec<RecordedRequest>,
    pub(crate) next_id: u64,
    /// Webhooks sent or dropped, in order.
    pub(crate) webhooks: Vec<WebhookDelivery>,
}

impl Shared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, SimState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set_outcome(&self, index: usize, status: Option<u16>, fault: Option<Fault>) {
        if let Some(record) = self.lock().requests.get_mut(index) {
            record.status = status;
            record.fault = fault;
        }
    }
}

/// Matches a path against a template (`/tasks/{task_id}/`), returning the
/// decoded path parameters.
fn match_template(template: &str, path: &str) -> Option<Vec<(String, String)>> {
    let want: Vec<&str> = template.split('/').collect();
    let got: Vec<&str> = path.split('/').collect();
    if want.len() != got.len() {
        return None;
    }
    let mut params = Vec::new();
    for (w, g) in want.iter().zip(&got) {
        if let Some(name) = w.strip_prefix('{').and_then(|n| n.strip_suffix('}')) {
            if g.is_empty() {
                return None;
            }
            params.push((name.to_string(), percent_decode_str(g).decode_utf8_lossy().into_owned()));
        } else if w != g {
            return None;
        }
    }
    Some(params)
}

fn query_pairs(query: Option<&str>) -> Vec<(String, String)> {
    let Some(query) = query else { return Vec::new() };
    match reqwest::Url::parse(&format!("http://simulator/?{query}")) {
        Ok(url) => url.query_pairs().map(|(k, v)| (k.into_owned(), v.into_owned())).collect(),
        Err(_) => Vec::new(),
    }
}

fn json_response(status: u16, body: &Value) -> Response {
    let text = serde_json::to_vec(body).unwrap_or_default();
    raw_response(status, "application/json", Body::from(text))
}

fn raw_response(status: u16, content_type: &'static str, body: Body) -> Response {
    let mut response = Response::new(body);
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// What a request asks about, once routed.
struct Routed {
    spec: &'static ProviderSpec,
    op: &'static OperationSpec,
    /// The batch operation.
    many: bool,
    ids: Vec<String>,
    query: Vec<(String, String)>,
    /// `scheme://host/provider` as the client addressed it.
    base: String,
}

/// The axum fallback handler: every request lands here.
pub(crate) async fn handle(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, MAX_REQUEST_BODY).await.unwrap_or_default();
    let path = parts.uri.path().to_string();
    let query = parts.uri.query().map(str::to_string);
    let method = parts.method.as_str().to_ascii_uppercase();

    let mut segments = path.trim_start_matches('/').splitn(2, '/');
    let prefix = segments.next().unwrap_or_default();
    let relative = format!("/{}", segments.next().unwrap_or_default());
    let spec = crate::spec::providers().iter().copied().find(|p| p.name.eq_ignore_ascii_case(prefix));

    // Route: the operation whose method and path template match.
    let mut path_matched = false;
    let mut found: Option<(&'static OperationSpec, Vec<(String, String)>)> = None;
    if let Some(spec) = spec {
        for op in spec.operations {
            if let Some(params) = match_template(op.path, &relative) {
                path_matched = true;
                if op.method.eq_ignore_ascii_case(&method) {
                    found = Some((op, params));
                    break;
                }
            }
        }
    }
    let pairs = query_pairs(query.as_deref());
    let routed = match (spec, found) {
        (Some(spec), Some((op, params))) => {
            let many = spec.many.is_some_and(|m| m.operation == op.id);
            let ids = if many {
                task_ids_of_batch(spec, &pairs)
            } else {
                task_id_of(spec, &params, &pairs, &body).into_iter().collect()
            };
            let host = parts
                .headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_string)
                .unwrap_or_else(|| shared.addr.to_string());
            Some(Routed { spec, op, many, ids, query: pairs, base: format!("http://{host}/{}", spec.name) })
        }
        _ => None,
    };

    let authenticated = routed.as_ref().is_none_or(|r| auth::authorized(r.spec, r.op.id, &parts.headers));
    let index = {
        let mut state = shared.lock();
        state.requests.push(RecordedRequest {
            provider: spec.map(|s| s.name),
            operation: routed.as_ref().map(|r| r.op.id),
            task_ids: routed.as_ref().map(|r| r.ids.clone()).unwrap_or_default(),
            method: method.clone(),
            path: path.clone(),
            relative_path: if spec.is_some() { relative.clone() } else { path.clone() },
            query: query.clone(),
            headers: auth::redacted(&parts.headers),
            body: String::from_utf8_lossy(&body).into_owned(),
            at: Instant::now(),
            authenticated,
            fault: None,
            status: None,
        });
        state.requests.len() - 1
    };

    let Some(routed) = routed else {
        let (status, detail) = if path_matched { (405, "Method Not Allowed") } else { (404, "Not Found") };
        shared.set_outcome(index, Some(status), None);
        return json_response(status, &json!({ "detail": detail }));
    };

    let fault = take_fault(&shared, &routed);
    let mut response_fault = fault.clone();
    if let Some(Fault::Slow(delay)) = &fault {
        let mut shutdown = shared.shutdown.clone();
        let sleep = Box::pin(tokio::time::sleep(*delay));
        let stop = Box::pin(async move {
            let _ = shutdown.wait_for(|stop| *stop).await;
        });
        futures_util::future::select(sleep, stop).await;
        response_fault = None;
    }
    let response = match response_fault {
        Some(fault) => fault_response(&shared, &routed, &fault),
        None if !authenticated => unauthorized(&routed),
        None => answer(&shared, &routed),
    };
    let status = if matches!(fault, Some(Fault::DropConnection)) { None } else { Some(response.status().as_u16()) };
    shared.set_outcome(index, status, fault);
    response
}

/// The task id of a single read: the path parameter named like the get
/// operation's id (or the only one), else that query parameter or body field.
fn task_id_of(
    spec: &ProviderSpec,
    params: &[(String, String)],
    query: &[(String, String)],
    body: &Bytes,
) -> Option<String> {
    let name = spec.get.id_name;
    if let Some((_, v)) = params.iter().find(|(n, _)| n == name) {
        return Some(v.clone());
    }
    if let [(_, only)] = params {
        return Some(only.clone());
    }
    if let Some((_, v)) = query.iter().find(|(n, _)| n == name) {
        return Some(v.clone());
    }
    let json: Value = serde_json::from_slice(body).ok()?;
    crate::observe::scalar_text(json.get(name)).map(std::borrow::Cow::into_owned)
}

fn task_ids_of_batch(spec: &ProviderSpec, query: &[(String, String)]) -> Vec<String> {
    let Some(many) = spec.many else { return Vec::new() };
    let mut ids: Vec<String> = Vec::new();
    for (k, v) in query {
        if (k == many.ids_param || k.strip_suffix("[]") == Some(many.ids_param)) && !ids.contains(v) {
            ids.push(v.clone());
        }
    }
    ids
}

fn take_fault(shared: &Shared, routed: &Routed) -> Option<Fault> {
    let mut state = shared.lock();
    for id in &routed.ids {
        if let Some(queue) = state.task_faults.get_mut(&(routed.spec.name, id.clone()))
            && let Some(fault) = queue.take()
        {
            return Some(fault);
        }
    }
    state.provider_faults.get_mut(routed.spec.name).and_then(FaultQueue::take)
}

fn unauthorized(routed: &Routed) -> Response {
    let body =
        bodies::documented(routed.spec, routed.op.id, 401).unwrap_or_else(|| json!({"detail": "Not authenticated"}));
    let mut response = json_response(401, &body);
    if let Some(challenge) = auth::challenge(routed.spec, routed.op.id).and_then(|c| HeaderValue::from_str(&c).ok()) {
        response.headers_mut().insert(header::WWW_AUTHENTICATE, challenge);
    }
    response
}

const HTML_502: &str = "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n";

fn fault_response(shared: &Shared, routed: &Routed, fault: &Fault) -> Response {
    match fault {
        Fault::RateLimited { retry_after } => {
            let body = bodies::documented(routed.spec, routed.op.id, 429)
                .unwrap_or_else(|| json!({"detail": "Too Many Requests"}));
            let mut response = json_response(429, &body);
            if let Some(after) = retry_after {
                let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
                response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
                if after.subsec_nanos() > 0 {
                    let ms = u64::try_from(after.as_millis()).unwrap_or(u64::MAX);
                    response.headers_mut().insert("retry-after-ms", HeaderValue::from(ms));
                }
            }
            response
        }
        Fault::Html502 => raw_response(502, "text/html", Body::from(HTML_502)),
        Fault::Unavailable503 => raw_response(503, "text/plain", Body::from("unavailable")),
        Fault::DropConnection => {
            let broken = futures_util::stream::once(async {
                Err::<Bytes, std::io::Error>(std::io::Error::new(
                    std::io::ErrorKind::ConnectionReset,
                    "dropped by the simulator",
                ))
            });
            raw_response(200, "application/json", Body::from_stream(broken))
        }
        Fault::MalformedJson => {
            let (status, body) = peek(shared, routed);
            let text = serde_json::to_string(&body).unwrap_or_else(|_| "{}".into());
            let mut cut = (text.len() / 2).max(1);
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            let status = if (200..300).contains(&status) { status } else { 200 };
            raw_response(status, "application/json", Body::from(text[..cut].to_string()))
        }
        Fault::Status(code) => {
            let body = bodies::documented(routed.spec, routed.op.id, *code).unwrap_or_else(|| {
                let reason = StatusCode::from_u16(*code).ok().and_then(|s| s.canonical_reason()).unwrap_or("Error");
                json!({ "detail": reason })
            });
            json_response(*code, &body)
        }
        // A delay was already served; answer normally.
        Fault::Slow(_) => answer(shared, routed),
    }
}

/// The body a read would get now, without advancing any script.
fn peek(shared: &Shared, routed: &Routed) -> (u16, Value) {
    let now = Instant::now();
    let state = shared.lock();
    let Some(id) = routed.ids.first() else { return (200, json!({})) };
    let answer = match state.tasks.get(&(routed.spec.name, id.clone())) {
        Some(entry) => entry.progress.peek(now),
        None => Answer::Phase(Phase::Queued),
    };
    let operation = if routed.many { routed.spec.get.operation } else { routed.op.id };
    match bodies::render(routed.spec, operation, id, &answer) {
        Ok(Rendered { status, body }) => (status, body),
        Err(_) => (200, json!({})),
    }
}

fn answer(shared: &Shared, routed: &Routed) -> Response {
    if routed.many {
        return batch(shared, routed);
    }
    let spec = routed.spec;
    let Some(id) = routed.ids.first() else {
        if path_has_params(routed.op) || routed.op.id == spec.get.operation {
            // A task read without an id.
            let (status, body) = [422, 400]
                .into_iter()
                .find_map(|status| bodies::documented(spec, routed.op.id, status).map(|body| (status, body)))
                .unwrap_or_else(|| (422, json!({"detail": format!("missing `{}`", spec.get.id_name)})));
            return json_response(status, &body);
        }
        // An operation that reads no task: its first documented answer.
        let body = bodies::first_success(spec, routed.op.id).unwrap_or_else(|| json!({}));
        return json_response(200, &body);
    };
    let answer = {
        let mut state = shared.lock();
        match state.tasks.get_mut(&(spec.name, id.clone())) {
            Some(entry) => {
                entry.reads += 1;
                Some(entry.progress.read(Instant::now()))
            }
            // Celery-backed providers answer PENDING for ids they do not know.
            None if spec.celery_backed => Some(Answer::Phase(Phase::Queued)),
            None => None,
        }
    };
    let Some(answer) = answer else {
        let body = bodies::documented(spec, routed.op.id, 404).unwrap_or_else(|| json!({"detail": "Not found."}));
        return json_response(404, &body);
    };
    match bodies::render(spec, routed.op.id, id, &answer) {
        Ok(rendered) => json_response(rendered.status, &rendered.body),
        Err(message) => json_response(500, &json!({ "detail": format!("simulator: {message}") })),
    }
}

fn path_has_params(op: &OperationSpec) -> bool {
    op.path.contains('{')
}

/// Which page parameter is the offset, which the page size, which a page number.
struct PageRoles {
    offset: Option<&'static str>,
    limit: Option<&'static str>,
    page: Option<&'static str>,
}

fn page_roles(names: &'static [&'static str]) -> PageRoles {
    let mut roles = PageRoles { offset: None, limit: None, page: None };
    let mut rest = Vec::new();
    for name in names {
        let lower = name.to_ascii_lowercase();
        if roles.offset.is_none() && ["offset", "skip", "start", "from"].iter().any(|w| lower.contains(w)) {
            roles.offset = Some(name);
        } else if roles.limit.is_none()
            && ["limit", "size", "per_page", "count", "max"].iter().any(|w| lower.contains(w))
        {
            roles.limit = Some(name);
        } else if roles.page.is_none() && lower.contains("page") {
            roles.page = Some(name);
        } else {
            rest.push(*name);
        }
    }
    let mut rest = rest.into_iter();
    if roles.offset.is_none() && roles.page.is_none() {
        roles.offset = rest.next();
    }
    if roles.limit.is_none() {
        roles.limit = rest.next();
    }
    roles
}

fn batch(shared: &Shared, routed: &Routed) -> Response {
    let spec = routed.spec;
    let Some(many) = spec.many else { return json_response(500, &json!({"detail": "no batch operation"})) };
    if routed.ids.is_empty() {
        let body = bodies::documented(spec, routed.op.id, 400)
            .unwrap_or_else(|| json!({"detail": format!("`{}` is required", many.ids_param)}));
        return json_response(400, &body);
    }
    let roles = page_roles(many.page_params);
    let param = |name: Option<&str>| -> Option<usize> {
        let name = name?;
        routed.query.iter().find(|(k, _)| k == name).and_then(|(_, v)| v.trim().parse().ok())
    };
    let limit = param(roles.limit).unwrap_or(shared.paging.page_size).clamp(1, shared.paging.max_page_size.max(1));
    let offset = match (param(roles.offset), param(roles.page)) {
        (Some(offset), _) => offset,
        (None, Some(page)) => page.saturating_sub(1).saturating_mul(limit),
        (None, None) => 0,
    };

    let now = Instant::now();
    let mut items = Vec::new();
    let total;
    {
        let mut state = shared.lock();
        let known: Vec<&String> = routed
            .ids
            .iter()
            .filter(|id| spec.celery_backed || state.tasks.contains_key(&(spec.name, (*id).clone())))
            .collect();
        total = known.len();
        let page: Vec<String> = known.into_iter().skip(offset).take(limit).cloned().collect();
        for id in page {
            let answer = match state.tasks.get_mut(&(spec.name, id.clone())) {
                Some(entry) => {
                    entry.reads += 1;
                    entry.progress.read(now)
                }
                None => Answer::Phase(Phase::Queued),
            };
            // A task scripted to answer an error (a named 4xx/5xx example) has no item.
            let mut item = match bodies::render(spec, spec.get.operation, &id, &answer) {
                Ok(rendered) if bodies::is_task_status(spec, rendered.status) => rendered.body,
                _ => continue,
            };
            bodies::set_item_id(&mut item, many.id, &id);
            items.push(item);
        }
    }

    let page_url = |offset: usize| -> Option<String> {
        let mut url = reqwest::Url::parse(&format!("{}{}", routed.base, routed.op.path)).ok()?;
        {
            let mut q = url.query_pairs_mut();
            for id in &routed.ids {
                q.append_pair(many.ids_param, id);
            }
            match (roles.offset, roles.page) {
                (Some(name), _) => {
                    q.append_pair(name, &offset.to_string());
                }
                (None, Some(name)) => {
                    q.append_pair(name, &(offset / limit + 1).to_string());
                }
                (None, None) => {}
            }
            if let Some(name) = roles.limit {
                q.append_pair(name, &limit.to_string());
            }
        }
        Some(url.to_string())
    };
    let next = (offset.saturating_add(limit) < total).then(|| page_url(offset + limit)).flatten();
    let previous = (offset > 0).then(|| page_url(offset.saturating_sub(limit))).flatten();

    let mut body = bodies::first_success(spec, many.operation).unwrap_or_else(|| json!({}));
    bodies::set_pointer(&mut body, many.items, Value::Array(items));
    if let Some(pointer) = many.next {
        bodies::set_pointer(&mut body, pointer, next.map(Value::String).unwrap_or(Value::Null));
        // Usual siblings of `next` in a paginated list, when the example has them.
        let parent = pointer.rsplit_once('/').map(|(p, _)| p).unwrap_or("");
        let has = |body: &Value, key: &str| body.pointer(&format!("{parent}/{key}")).is_some();
        for key in ["previous", "prev"] {
            if has(&body, key) {
                let value = previous.clone().map(Value::String).unwrap_or(Value::Null);
                bodies::set_pointer(&mut body, &format!("{parent}/{key}"), value);
            }
        }
        for key in ["count", "total"] {
            if body.pointer(&format!("{parent}/{key}")).is_some_and(Value::is_number) {
                bodies::set_pointer(&mut body, &format!("{parent}/{key}"), Value::from(total));
            }
        }
    }
    json_response(200, &body)
}

/// How long `shutdown` waits for in-flight answers before giving up on them.
pub(crate) const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_match_segments() {
        assert_eq!(match_template("/tasks/{task_id}/", "/tasks/4%202/"), Some(vec![("task_id".into(), "4 2".into())]));
        assert_eq!(match_template("/tasks/{task_id}/", "/tasks//"), None);
        assert_eq!(match_template("/tasks/", "/tasks/"), Some(vec![]));
        assert_eq!(match_template("/tasks/", "/tasks/1/"), None);
        assert_eq!(match_template("/getImage", "/getImage"), Some(vec![]));
    }

    #[test]
    fn page_roles_by_name_then_position() {
        let r = page_roles(&["offset", "limit"]);
        assert_eq!((r.offset, r.limit, r.page), (Some("offset"), Some("limit"), None));
        let r = page_roles(&["page", "per_page"]);
        assert_eq!((r.offset, r.limit, r.page), (None, Some("per_page"), Some("page")));
        let r = page_roles(&["a", "b"]);
        assert_eq!((r.offset, r.limit), (Some("a"), Some("b")));
    }
}
