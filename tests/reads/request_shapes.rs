//! Wire-level request shapes: every operation the unified layer calls, with
//! every auth alternative, captured on a loopback `wiremock` server and
//! snapshotted (method, path, query, headers, body) into `snapshots/`.
//!
//! Secrets are redacted by [`shape`] *before* insta sees anything; the real
//! header values are asserted separately. The `Host` header (random port) is
//! redacted by insta.

#![allow(clippy::unwrap_used)] // In tests a panic is the failure report.

use std::collections::BTreeMap;

use base64::Engine as _;
use secrecy::SecretString;
use serde_json::{Value, json};
use taskpoll::{Client, Credential, Error, ProviderConfig, TaskRef};
use wiremock::matchers::{any, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::support::{answering, client, received};

// ---------------------------------------------------------------------------
// Fake credentials. None of them may appear in a snapshot.

const CLOUDINARY_KEY: &str = "cl-key-4417";
const CLOUDINARY_SECRET: &str = "cl-secret-s3cr3t-9b1c";
const CLOUDINARY_OAUTH: &str = "cl-oauth-tok-5d2e";
const QOLABA_TOKEN: &str = "ql-bearer-tok-77aa";
const FACTPULSE_JWT: &str = "fp-jwt-tok-e3f0";
const FACTPULSE_KEY: &str = "fp-apikey-c0ffee";
const DEEPOMATIC_KEY: &str = "dp-apikey-beef01";
const DEEPOMATIC_APP: &str = "dp-appid-4242";

fn cloudinary_basic() -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("{CLOUDINARY_KEY}:{CLOUDINARY_SECRET}"))
}

/// Every secret value, including the encoded Basic pair.
fn secrets() -> Vec<String> {
    let mut all: Vec<String> = [
        CLOUDINARY_SECRET,
        CLOUDINARY_OAUTH,
        QOLABA_TOKEN,
        FACTPULSE_JWT,
        FACTPULSE_KEY,
        DEEPOMATIC_KEY,
        DEEPOMATIC_APP,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    all.push(cloudinary_basic());
    all
}

fn assert_no_secret(text: &str, what: &str) {
    for secret in secrets() {
        assert!(!text.contains(&secret), "{what} contains the secret {secret:?}: {text}");
    }
}

fn token(value: &str) -> Credential {
    Credential::Token(SecretString::from(value.to_string()))
}

fn user_agent() -> String {
    format!("taskpoll/{}", env!("CARGO_PKG_VERSION"))
}

// ---------------------------------------------------------------------------
// Capture and shape

/// A header value as it may appear in a snapshot.
fn redact_header(name: &str, value: &[u8]) -> String {
    let text = String::from_utf8_lossy(value).into_owned();
    let name = name.to_ascii_lowercase();
    if name == "authorization" || name == "proxy-authorization" {
        return match text.split_once(' ') {
            Some((scheme, _)) => format!("{scheme} [redacted]"),
            None => "[redacted]".into(),
        };
    }
    let secret_name = ["key", "app-id", "token", "secret", "cookie", "password"];
    if secret_name.iter().any(|s| name.contains(s)) {
        return "[redacted]".into();
    }
    if name == "user-agent" && text == user_agent() {
        // Keeps the snapshots valid across version bumps; the exact value is asserted in `check_common`.
        return "taskpoll/[version]".into();
    }
    text
}

/// What a request looked like on the wire, secrets redacted.
fn shape(request: &wiremock::Request) -> Value {
    let mut headers = BTreeMap::new();
    for name in request.headers.keys() {
        let values: Vec<String> =
            request.headers.get_all(name).iter().map(|v| redact_header(name.as_str(), v.as_bytes())).collect();
        let value = if values.len() == 1 { json!(values[0]) } else { json!(values) };
        headers.insert(name.as_str().to_string(), value);
    }
    let query: Vec<Value> = request.url.query_pairs().map(|(k, v)| json!([k, v])).collect();
    let body = if request.body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&request.body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&request.body).into_owned()))
    };
    let shaped = json!({
        "method": request.method.as_str(),
        "path": request.url.path(),
        "raw_query": request.url.query(),
        "query": query,
        "headers": headers,
        "body": body,
    });
    assert_no_secret(&shaped.to_string(), "a request shape");
    shaped
}

/// Checks that hold for every request taskpoll sends.
fn check_common(request: &wiremock::Request) {
    assert!(request.headers.get("api-version").is_none(), "progenitor's api-version header must be removed");
    let agents: Vec<_> = request.headers.get_all("user-agent").iter().collect();
    assert_eq!(agents.len(), 1, "exactly one User-Agent");
    assert_eq!(agents[0].to_str().expect("ascii"), user_agent());
    assert!(request.headers.get_all("authorization").iter().count() <= 1, "at most one Authorization header");
}

fn header<'a>(request: &'a wiremock::Request, name: &str) -> Option<&'a str> {
    request.headers.get(name).map(|v| v.to_str().expect("ascii header"))
}

macro_rules! snapshot {
    ($name:expr, $value:expr) => {
        crate::support::snapshot_settings().bind(|| {
            insta::assert_json_snapshot!($name, $value, {
                ".headers.host" => "[host]",
                ".**.headers.host" => "[host]",
            })
        })
    };
}

/// A loopback server answering every request with `body` (HTTP 200).
async fn server_answering(body: Value) -> MockServer {
    answering(ResponseTemplate::new(200).set_body_json(body)).await
}

async fn only_request(server: &MockServer) -> wiremock::Request {
    let mut all = received(server).await;
    assert_eq!(all.len(), 1, "expected exactly one request, got {}", all.len());
    let request = all.remove(0);
    check_common(&request);
    request
}

// Canned answers, one per operation. They carry no task id, so they answer
// any requested id (the id check is tested in tests/reads/security.rs).

fn cloudinary_body() -> Value {
    json!({"data": {"status": "processing"}, "request_id": "r-1"})
}

fn qolaba_body() -> Value {
    json!({"time_required": {}, "error": null, "error_data": null, "input": {}, "output": {}, "status": "PENDING"})
}

fn factpulse_body() -> Value {
    json!({"status": "PENDING", "result": null})
}

fn deepomatic_body() -> Value {
    json!({"status": "pending", "error": null, "data": null})
}

fn deepomatic_page(ids: &[&str], next: Option<String>) -> Value {
    let results: Vec<Value> =
        ids.iter().map(|id| json!({"id": id, "status": "success", "error": null, "data": {}})).collect();
    json!({"count": ids.len(), "next": next, "previous": null, "results": results})
}

fn cloudinary_config(server: &MockServer) -> ProviderConfig {
    ProviderConfig::new("cloudinary")
        .base_url(format!("{}/v2/analysis/{{cloud_name}}", server.uri()))
        .server_variable("cloud_name", "demo")
}

// ---------------------------------------------------------------------------
// The operations every auth alternative

/// The operations of the four specs that a snapshot below covers, and the
/// ones the public API cannot reach (see `unreachable_operations`).
const COVERED: &[(&str, &str)] = &[
    ("cloudinary", "get_task_status"),
    ("qolaba", "get_image"),
    ("factpulse", "get_task_status"),
    ("factpulse", "get_generation_task_status"),
    ("factpulse", "get_signature_task_status"),
    ("factpulse", "get_validation_task_status"),
    ("factpulse", "get_verification_status"),
    ("deepomatic", "get_task"),
    ("deepomatic", "list_tasks"),
];

/// Operations with no snapshot (none today: FactPulse's typed siblings are
/// reached through `taskpoll::generated::factpulse::client`).
const UNREACHABLE: &[(&str, &str)] = &[];

#[test]
fn every_operation_is_covered_or_listed() {
    for name in ["cloudinary", "qolaba", "factpulse", "deepomatic"] {
        let spec = taskpoll::spec::provider(name).expect("built in");
        for op in spec.operations() {
            let key = (name, op.id());
            assert!(
                COVERED.contains(&key) || UNREACHABLE.contains(&key),
                "{name}.{} has no request-shape snapshot and is not listed as unreachable",
                op.id()
            );
        }
    }
    for (name, id) in COVERED.iter().chain(UNREACHABLE) {
        let spec = taskpoll::spec::provider(name).expect("built in");
        assert!(spec.operation(id).is_some(), "{name}.{id} is listed but not in the spec");
    }
}

#[tokio::test]
async fn cloudinary_get_task_status_basic() {
    let server = server_answering(cloudinary_body()).await;
    let client = client(cloudinary_config(&server).basic(CLOUDINARY_KEY, CLOUDINARY_SECRET));
    let task = client.get(&TaskRef::new("cloudinary", "t-1").unwrap()).await.unwrap();
    assert_eq!(task.status(), Some("processing"));
    let request = only_request(&server).await;
    assert_eq!(header(&request, "authorization"), Some(format!("Basic {}", cloudinary_basic()).as_str()));
    snapshot!("request_cloudinary_get_task_status_basic", shape(&request));
}

#[tokio::test]
async fn cloudinary_get_task_status_oauth2() {
    let server = server_answering(cloudinary_body()).await;
    let client = client(cloudinary_config(&server).bearer(CLOUDINARY_OAUTH));
    client.get(&TaskRef::new("cloudinary", "t-1").unwrap()).await.unwrap();
    let request = only_request(&server).await;
    assert_eq!(header(&request, "authorization"), Some(format!("Bearer {CLOUDINARY_OAUTH}").as_str()));
    snapshot!("request_cloudinary_get_task_status_oauth2", shape(&request));
}

/// Both alternatives configured: exactly one `Authorization` header is sent.
#[tokio::test]
async fn cloudinary_get_task_status_both_credentials() {
    let server = server_answering(cloudinary_body()).await;
    let client = client(cloudinary_config(&server).basic(CLOUDINARY_KEY, CLOUDINARY_SECRET).bearer(CLOUDINARY_OAUTH));
    client.get(&TaskRef::new("cloudinary", "t-1").unwrap()).await.unwrap();
    let request = only_request(&server).await;
    assert_eq!(request.headers.get_all("authorization").iter().count(), 1);
    // The spec's first alternative (basicAuth) is preferred on a tie.
    assert!(header(&request, "authorization").is_some_and(|v| v.starts_with("Basic ")));
    snapshot!("request_cloudinary_get_task_status_both_credentials", shape(&request));
}

/// A base URL without `{cloud_name}` needs no server variable.
#[tokio::test]
async fn cloudinary_base_url_without_placeholder() {
    let server = server_answering(cloudinary_body()).await;
    let client =
        client(ProviderConfig::new("cloudinary").basic(CLOUDINARY_KEY, CLOUDINARY_SECRET).base_url(server.uri()));
    client.get(&TaskRef::new("cloudinary", "t-1").unwrap()).await.unwrap();
    let request = only_request(&server).await;
    assert_eq!(request.url.path(), "/tasks/t-1");
}

#[tokio::test]
async fn qolaba_get_image_bearer() {
    let server = server_answering(qolaba_body()).await;
    let client =
        client(ProviderConfig::new("qolaba").bearer(QOLABA_TOKEN).base_url(format!("{}/api/v1/studio", server.uri())));
    client.get(&TaskRef::new("qolaba", "6f1c2d9e-3b7a-4c1e-9f2d-8a5b6c7d8e9f").unwrap()).await.unwrap();
    let request = only_request(&server).await;
    assert_eq!(header(&request, "authorization"), Some(format!("Bearer {QOLABA_TOKEN}").as_str()));
    assert_eq!(String::from_utf8_lossy(&request.body), r#"{"id":"6f1c2d9e-3b7a-4c1e-9f2d-8a5b6c7d8e9f"}"#);
    snapshot!("request_qolaba_get_image_bearer", shape(&request));
}

#[tokio::test]
async fn qolaba_get_image_bearer_ref_id() {
    let server = server_answering(qolaba_body()).await;
    let client =
        client(ProviderConfig::new("qolaba").bearer(QOLABA_TOKEN).base_url(format!("{}/api/v1/studio", server.uri())));
    let task_ref = TaskRef::new("qolaba", "6f1c2d9e-3b7a-4c1e-9f2d-8a5b6c7d8e9f")
        .unwrap()
        .with_input("refID", "my-reference-42")
        .unwrap();
    client.get(&task_ref).await.unwrap();
    let request = only_request(&server).await;
    assert_eq!(header(&request, "authorization"), Some(format!("Bearer {QOLABA_TOKEN}").as_str()));
    assert_eq!(
        String::from_utf8_lossy(&request.body),
        r#"{"id":"6f1c2d9e-3b7a-4c1e-9f2d-8a5b6c7d8e9f","refID":"my-reference-42"}"#
    );
    snapshot!("request_qolaba_get_image_bearer_ref_id", shape(&request));
}

#[tokio::test]
async fn factpulse_get_task_status_bearer() {
    let server = server_answering(factpulse_body()).await;
    let client = client(ProviderConfig::new("factpulse").bearer(FACTPULSE_JWT).base_url(server.uri()));
    client.get(&TaskRef::new("factpulse", "0b9d8f2e-3c1a-4c51-9a57-2f1f7d1c9e10").unwrap()).await.unwrap();
    let request = only_request(&server).await;
    assert_eq!(header(&request, "authorization"), Some(format!("Bearer {FACTPULSE_JWT}").as_str()));
    assert_eq!(header(&request, "x-api-key"), None);
    snapshot!("request_factpulse_get_task_status_bearer", shape(&request));
}

#[tokio::test]
async fn factpulse_get_task_status_api_key() {
    let server = server_answering(factpulse_body()).await;
    let client = client(ProviderConfig::new("factpulse").api_key(FACTPULSE_KEY).base_url(server.uri()));
    client.get(&TaskRef::new("factpulse", "0b9d8f2e-3c1a-4c51-9a57-2f1f7d1c9e10").unwrap()).await.unwrap();
    let request = only_request(&server).await;
    assert_eq!(header(&request, "x-api-key"), Some(FACTPULSE_KEY));
    assert_eq!(header(&request, "authorization"), None);
    snapshot!("request_factpulse_get_task_status_api_key", shape(&request));
}

/// Both alternatives configured: one of them is sent, not both (the official
/// SDK sends both).
#[tokio::test]
async fn factpulse_get_task_status_both_credentials() {
    let server = server_answering(factpulse_body()).await;
    let client =
        client(ProviderConfig::new("factpulse").bearer(FACTPULSE_JWT).api_key(FACTPULSE_KEY).base_url(server.uri()));
    client.get(&TaskRef::new("factpulse", "0b9d8f2e-3c1a-4c51-9a57-2f1f7d1c9e10").unwrap()).await.unwrap();
    let request = only_request(&server).await;
    let sent =
        usize::from(header(&request, "authorization").is_some()) + usize::from(header(&request, "x-api-key").is_some());
    assert_eq!(sent, 1, "exactly one security alternative is applied");
    assert_eq!(
        header(&request, "authorization"),
        Some(format!("Bearer {FACTPULSE_JWT}").as_str()),
        "the first alternative wins"
    );
    snapshot!("request_factpulse_get_task_status_both_credentials", shape(&request));
}

#[tokio::test]
async fn deepomatic_get_task_api_key() {
    let server = server_answering(deepomatic_body()).await;
    let client =
        client(ProviderConfig::new("deepomatic").api_key(DEEPOMATIC_KEY).base_url(format!("{}/v0.7", server.uri())));
    client.get(&TaskRef::new("deepomatic", "269999729").unwrap()).await.unwrap();
    let request = only_request(&server).await;
    assert_eq!(header(&request, "x-api-key"), Some(DEEPOMATIC_KEY));
    assert_eq!(header(&request, "x-app-id"), None);
    snapshot!("request_deepomatic_get_task_api_key", shape(&request));
}

#[tokio::test]
async fn deepomatic_get_task_api_key_app_id() {
    let server = server_answering(deepomatic_body()).await;
    let client = client(
        ProviderConfig::new("deepomatic")
            .api_key(DEEPOMATIC_KEY)
            .credential("AppId", token(DEEPOMATIC_APP))
            .base_url(format!("{}/v0.7", server.uri())),
    );
    client.get(&TaskRef::new("deepomatic", "269999729").unwrap()).await.unwrap();
    let request = only_request(&server).await;
    assert_eq!(header(&request, "x-api-key"), Some(DEEPOMATIC_KEY));
    assert_eq!(header(&request, "x-app-id"), Some(DEEPOMATIC_APP));
    snapshot!("request_deepomatic_get_task_api_key_app_id", shape(&request));
}

#[tokio::test]
async fn deepomatic_list_tasks_api_key() {
    let server = server_answering(deepomatic_page(&["269999729", "269999730"], None)).await;
    let client =
        client(ProviderConfig::new("deepomatic").api_key(DEEPOMATIC_KEY).base_url(format!("{}/v0.7", server.uri())));
    let tasks = client.get_many("deepomatic", &["269999729", "269999730"]).await.unwrap();
    assert_eq!(tasks.len(), 2);
    assert!(tasks.iter().all(Result::is_ok), "{tasks:?}");
    let request = only_request(&server).await;
    assert_eq!(header(&request, "x-api-key"), Some(DEEPOMATIC_KEY));
    assert_eq!(header(&request, "x-app-id"), None);
    snapshot!("request_deepomatic_list_tasks_api_key", shape(&request));
}

#[tokio::test]
async fn deepomatic_list_tasks_api_key_app_id() {
    let server = server_answering(deepomatic_page(&["1", "2"], None)).await;
    let client = client(
        ProviderConfig::new("deepomatic")
            .api_key(DEEPOMATIC_KEY)
            .credential("AppId", token(DEEPOMATIC_APP))
            .base_url(format!("{}/v0.7", server.uri())),
    );
    let tasks = client.get_many("deepomatic", &["1", "2"]).await.unwrap();
    assert!(tasks.iter().all(Result::is_ok), "{tasks:?}");
    let request = only_request(&server).await;
    assert_eq!(header(&request, "x-api-key"), Some(DEEPOMATIC_KEY));
    assert_eq!(header(&request, "x-app-id"), Some(DEEPOMATIC_APP));
    snapshot!("request_deepomatic_list_tasks_api_key_app_id", shape(&request));
}

/// A first page whose `next` is an absolute URL on the server, then the last
/// page: the second request carries the page parameters from `next`, through
/// the generated client (same auth, same host).
#[tokio::test]
async fn deepomatic_list_tasks_follows_next() {
    let server = MockServer::start().await;
    let next = format!("{}/v0.7/tasks/?task_ids=1&task_ids=2&limit=1&offset=1", server.uri());
    // The last page: an integer id.
    Mock::given(query_param("offset", "1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "count": 2, "next": null, "previous": null,
            "results": [{"id": 2, "status": "error", "error": "Could not read the input image", "data": null}],
        })))
        .mount(&server)
        .await;
    Mock::given(any())
        .respond_with(ResponseTemplate::new(200).set_body_json(deepomatic_page(&["1"], Some(next))))
        .mount(&server)
        .await;
    let client =
        client(ProviderConfig::new("deepomatic").api_key(DEEPOMATIC_KEY).base_url(format!("{}/v0.7", server.uri())));
    let tasks = client.get_many("deepomatic", &["1", "2"]).await.unwrap();
    let first = tasks[0].as_ref().unwrap();
    let second = tasks[1].as_ref().unwrap();
    assert_eq!((first.id(), first.phase()), ("1", taskpoll::Phase::Succeeded));
    assert_eq!(
        (second.id(), second.phase(), second.error()),
        ("2", taskpoll::Phase::Failed, Some("Could not read the input image"))
    );
    let all = received(&server).await;
    assert_eq!(all.len(), 2);
    for request in &all {
        check_common(request);
        assert_eq!(header(request, "x-api-key"), Some(DEEPOMATIC_KEY));
    }
    let shapes: Vec<Value> = all.iter().map(shape).collect();
    snapshot!("request_deepomatic_list_tasks_pages", shapes);
}

/// Ids with reserved characters are form-encoded in the query, one
/// repeated `task_ids` key each.
#[tokio::test]
async fn deepomatic_list_tasks_reserved_characters() {
    let ids = ["a,b", "c d", "e&f", "g=h", "ü", "100%"];
    let server = server_answering(deepomatic_page(&ids, None)).await;
    let client =
        client(ProviderConfig::new("deepomatic").api_key(DEEPOMATIC_KEY).base_url(format!("{}/v0.7", server.uri())));
    let tasks = client.get_many("deepomatic", &ids).await.unwrap();
    for (task, id) in tasks.iter().zip(ids) {
        assert_eq!(task.as_ref().unwrap().id(), id);
    }
    let request = only_request(&server).await;
    let decoded: Vec<String> =
        request.url.query_pairs().filter(|(k, _)| k == "task_ids").map(|(_, v)| v.into_owned()).collect();
    assert_eq!(decoded, ids);
    snapshot!("request_deepomatic_list_tasks_reserved_ids", shape(&request));
}

/// More ids than `max-ids` are split into chunks.
#[tokio::test]
async fn deepomatic_list_tasks_chunks() {
    let ids: Vec<String> = (0..101).map(|i| i.to_string()).collect();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let server = server_answering(deepomatic_page(&refs, None)).await;
    let client =
        client(ProviderConfig::new("deepomatic").api_key(DEEPOMATIC_KEY).base_url(format!("{}/v0.7", server.uri())));
    let tasks = client.get_many("deepomatic", &ids).await.unwrap();
    assert_eq!(tasks.len(), 101);
    assert!(tasks.iter().all(Result::is_ok), "{tasks:?}");
    let all = received(&server).await;
    let counts: Vec<usize> = all.iter().map(|r| r.url.query_pairs().filter(|(k, _)| k == "task_ids").count()).collect();
    assert_eq!(counts, [100, 1]);
}

/// A repeated id is asked once and answered at every position.
#[tokio::test]
async fn deepomatic_list_tasks_repeated_id() {
    let server = server_answering(deepomatic_page(&["1", "2"], None)).await;
    let client =
        client(ProviderConfig::new("deepomatic").api_key(DEEPOMATIC_KEY).base_url(format!("{}/v0.7", server.uri())));
    let tasks = client.get_many("deepomatic", &["1", "2", "1"]).await.unwrap();
    assert!(tasks.iter().all(Result::is_ok), "{tasks:?}");
    let request = only_request(&server).await;
    assert_eq!(request.url.query(), Some("limit=100&task_ids=1&task_ids=2"));
}

// ---------------------------------------------------------------------------
// Hostile ids

/// Ids that must reach the server as exactly one path segment (or one JSON string).
// `/` and `;` are refused by default (see `slash_and_semicolon_ids_are_refused_unless_the_spec_allows_them`).
const HOSTILE: &[&str] = &["a b", "100%", "ü", "a?b=c", "a#b", "%2e%2e", "...", "x\"<>`{}|^"];

async fn hostile_requests(
    provider: &str,
    config: impl Fn(&MockServer) -> ProviderConfig,
    body: Value,
) -> Vec<wiremock::Request> {
    let server = server_answering(body).await;
    let client = client(config(&server));
    for id in HOSTILE {
        let task = client.get(&TaskRef::new(provider, *id).unwrap()).await;
        assert!(task.is_ok(), "{provider}:{id}: {task:?}");
    }
    let all = received(&server).await;
    assert_eq!(all.len(), HOSTILE.len());
    all.iter().for_each(check_common);
    all
}

fn hostile_paths(all: &[wiremock::Request]) -> Value {
    let rows: BTreeMap<&str, Value> = HOSTILE
        .iter()
        .zip(all)
        .map(|(id, r)| (*id, json!({"path": r.url.path(), "raw_query": r.url.query()})))
        .collect();
    json!(rows)
}

#[tokio::test]
async fn hostile_ids_cloudinary() {
    let all = hostile_requests(
        "cloudinary",
        |s| cloudinary_config(s).basic(CLOUDINARY_KEY, CLOUDINARY_SECRET),
        cloudinary_body(),
    )
    .await;
    // The notes' table (shared/notes/progenitor.md §6).
    let path_of = |id: &str| all[HOSTILE.iter().position(|h| *h == id).unwrap()].url.path().to_string();
    assert_eq!(path_of("100%"), "/v2/analysis/demo/tasks/100%25");
    assert_eq!(path_of("a b"), "/v2/analysis/demo/tasks/a%20b");
    assert_eq!(path_of("ü"), "/v2/analysis/demo/tasks/%C3%BC");
    assert_eq!(path_of("a#b"), "/v2/analysis/demo/tasks/a%23b");
    assert_eq!(path_of("a?b=c"), "/v2/analysis/demo/tasks/a%3Fb=c");
    assert!(all.iter().all(|r| r.url.query().is_none()), "no id may leak into the query");
    snapshot!("request_hostile_ids_cloudinary", hostile_paths(&all));
}

#[tokio::test]
async fn hostile_ids_factpulse() {
    let all = hostile_requests(
        "factpulse",
        |s| ProviderConfig::new("factpulse").api_key(FACTPULSE_KEY).base_url(s.uri()),
        factpulse_body(),
    )
    .await;
    for (id, request) in HOSTILE.iter().zip(&all) {
        let path = request.url.path();
        let segment = path.strip_prefix("/api/v1/processing/tasks/").and_then(|p| p.strip_suffix("/status"));
        let segment = segment.unwrap_or_else(|| panic!("{id:?} left its segment: {path}"));
        assert!(!segment.contains('/'), "{id:?} -> {path}");
        let decoded = percent_encoding::percent_decode_str(segment).decode_utf8().unwrap();
        assert_eq!(decoded, *id, "the segment decodes back to the id");
    }
    assert!(all.iter().all(|r| r.url.query().is_none()));
    snapshot!("request_hostile_ids_factpulse", hostile_paths(&all));
}

#[tokio::test]
async fn hostile_ids_deepomatic() {
    let all = hostile_requests(
        "deepomatic",
        |s| ProviderConfig::new("deepomatic").api_key(DEEPOMATIC_KEY).base_url(format!("{}/v0.7", s.uri())),
        deepomatic_body(),
    )
    .await;
    for (id, request) in HOSTILE.iter().zip(&all) {
        let path = request.url.path();
        let segment = path.strip_prefix("/v0.7/tasks/").and_then(|p| p.strip_suffix('/'));
        let segment = segment.unwrap_or_else(|| panic!("{id:?} left its segment: {path}"));
        let decoded = percent_encoding::percent_decode_str(segment).decode_utf8().unwrap();
        assert_eq!(decoded, *id);
    }
    snapshot!("request_hostile_ids_deepomatic", hostile_paths(&all));
}

/// Qolaba takes the id in the JSON body: it must arrive as one JSON string.
#[tokio::test]
async fn hostile_ids_qolaba() {
    let all = hostile_requests(
        "qolaba",
        |s| ProviderConfig::new("qolaba").bearer(QOLABA_TOKEN).base_url(format!("{}/api/v1/studio", s.uri())),
        qolaba_body(),
    )
    .await;
    let mut rows = BTreeMap::new();
    for (id, request) in HOSTILE.iter().zip(&all) {
        assert_eq!(request.url.path(), "/api/v1/studio/getImage");
        let body: Value = serde_json::from_slice(&request.body).unwrap();
        assert_eq!(body, json!({"id": id}));
        rows.insert(*id, String::from_utf8_lossy(&request.body).into_owned());
    }
    snapshot!("request_hostile_ids_qolaba", rows);
}

/// A backslash is a path separator for the URL parser (WHATWG, special
/// schemes), and progenitor's `encode_path` leaves it raw: `a\b` must either
/// be refused or reach the server as one segment (`a%5Cb`).
#[tokio::test]
async fn backslash_ids_stay_in_one_segment() {
    let mut wrong = Vec::new();
    for id in ["a\\b", "x\\..\\..\\admin"] {
        let server = server_answering(deepomatic_body()).await;
        let client = client(
            ProviderConfig::new("deepomatic").api_key(DEEPOMATIC_KEY).base_url(format!("{}/v0.7", server.uri())),
        );
        let task_ref = match TaskRef::new("deepomatic", id) {
            Ok(task_ref) => task_ref,
            Err(Error::InvalidTaskId(_)) => continue,
            Err(other) => panic!("{id:?}: {other:?}"),
        };
        let result = client.get(&task_ref).await;
        let sent = received(&server).await;
        match result {
            Err(Error::InvalidTaskId(_)) => assert!(sent.is_empty()),
            _ => {
                let path = sent[0].url.path().to_string();
                let segment = path.strip_prefix("/v0.7/tasks/").and_then(|p| p.strip_suffix('/'));
                let decoded = segment.map(|s| percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned());
                if decoded.as_deref() != Some(id) {
                    wrong.push(format!("{id:?} was sent as {path}"));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

/// Ids that cannot be sent safely are refused before any request: when a
/// `TaskRef` is built and when one is deserialised (a saved state, a store row).
#[tokio::test]
async fn unsafe_ids_are_refused_before_sending() {
    let long = "9".repeat(600);
    let refused = ["", ".", "..", "a\nb", "a\rb", "a\0b", " a", "a ", long.as_str()];
    for provider in ["cloudinary", "qolaba", "factpulse", "deepomatic"] {
        let server = MockServer::start().await;
        Mock::given(any()).respond_with(ResponseTemplate::new(200).set_body_json(json!({}))).mount(&server).await;
        let client = client(full_config(provider, &server));
        for id in refused {
            let built = TaskRef::new(provider, id);
            assert!(matches!(built, Err(Error::InvalidTaskId(_))), "{provider}: TaskRef::new({id:?}) gave {built:?}");
            let read_back = serde_json::from_value::<TaskRef>(json!({"provider": provider, "id": id}));
            let refusal = read_back.expect_err("deserialised").to_string();
            assert!(refusal.contains("invalid task id"), "{provider}: {id:?}: {refusal}");
        }
        if provider == "qolaba" {
            let bad_input = TaskRef::new(provider, "t-1").unwrap().with_input("refID", "a\nb");
            assert!(matches!(bad_input, Err(Error::InvalidTaskRef(_))), "{bad_input:?}");
        }
        if provider == "deepomatic" {
            let many = client.get_many(provider, &refused).await.unwrap();
            assert!(many.iter().all(|r| matches!(r, Err(Error::InvalidTaskId(_)))), "{many:?}");
        }
        let sent = received(&server).await;
        assert!(
            sent.is_empty(),
            "{provider}: a refused id reached the server: {:?}",
            sent.iter().map(shape).collect::<Vec<_>>()
        );
    }
}

/// Credentials for every provider (for tests that are not about auth).
fn full_config(provider: &str, server: &MockServer) -> ProviderConfig {
    match provider {
        "cloudinary" => cloudinary_config(server).basic(CLOUDINARY_KEY, CLOUDINARY_SECRET),
        "qolaba" => ProviderConfig::new("qolaba").bearer(QOLABA_TOKEN).base_url(server.uri()),
        "factpulse" => ProviderConfig::new("factpulse").bearer(FACTPULSE_JWT).base_url(server.uri()),
        "deepomatic" => ProviderConfig::new("deepomatic").api_key(DEEPOMATIC_KEY).base_url(server.uri()),
        other => panic!("no test credentials for {other}"),
    }
}

// ---------------------------------------------------------------------------
// Missing credentials and secrecy

#[tokio::test]
async fn missing_credentials_fail_before_sending() {
    for provider in ["cloudinary", "qolaba", "factpulse", "deepomatic"] {
        let server = MockServer::start().await;
        Mock::given(any()).respond_with(ResponseTemplate::new(200).set_body_json(json!({}))).mount(&server).await;
        let mut config = ProviderConfig::new(provider).base_url(server.uri());
        if provider == "cloudinary" {
            config = config.server_variable("cloud_name", "demo");
        }
        let client = client(config);
        let error = client.get(&TaskRef::new(provider, "t-1").unwrap()).await.unwrap_err();
        assert!(matches!(error, Error::MissingCredentials(_)), "{provider}: {error:?}");
        assert!(error.is_auth() && !error.is_retryable());
        let expected_needed = match provider {
            "cloudinary" => "basicAuth or OAuth2",
            "qolaba" => "bearerAuth",
            "factpulse" => "HTTPBearer or APIKeyHeader",
            _ => "ApiKey or ApiKey + AppId",
        };
        assert!(error.to_string().contains(expected_needed), "{provider}: {error}");
        if provider == "deepomatic" {
            let batch = client.get_many(provider, &["1", "2"]).await;
            assert!(matches!(batch, Err(Error::MissingCredentials(_))), "{batch:?}");
        }
        assert!(received(&server).await.is_empty(), "{provider}: a request left without credentials");
    }
}

/// Deepomatic's app id alone satisfies no alternative (the key is required):
/// a configuration error when the client is built, so nothing can be sent.
#[tokio::test]
async fn app_id_alone_is_not_enough() {
    let server = server_answering(deepomatic_body()).await;
    let error = Client::builder()
        .provider(ProviderConfig::new("deepomatic").credential("AppId", token(DEEPOMATIC_APP)).base_url(server.uri()))
        .build()
        .unwrap_err();
    assert!(error.is_config(), "{error:?}");
    assert!(error.to_string().contains("ApiKey"), "{error}");
    assert_no_secret(&format!("{error} {error:?}"), "the error");
    assert!(received(&server).await.is_empty());
}

/// Debug output of configs, builders and clients, and errors (Display and
/// Debug, including an HTTP error and a transport error), never show a secret.
#[tokio::test]
async fn secrets_never_show_in_debug_or_errors() {
    let configs = || {
        vec![
            ProviderConfig::new("cloudinary").basic(CLOUDINARY_KEY, CLOUDINARY_SECRET).bearer(CLOUDINARY_OAUTH),
            ProviderConfig::new("qolaba").bearer(QOLABA_TOKEN),
            ProviderConfig::new("factpulse").bearer(FACTPULSE_JWT).api_key(FACTPULSE_KEY),
            ProviderConfig::new("deepomatic").api_key(DEEPOMATIC_KEY).credential("AppId", token(DEEPOMATIC_APP)),
        ]
    };
    for config in configs() {
        assert_no_secret(&format!("{config:?}"), "ProviderConfig Debug");
    }
    assert_no_secret(&format!("{:?}", token(DEEPOMATIC_KEY)), "Credential Debug");

    let server = MockServer::start().await;
    Mock::given(any())
        .respond_with(
            ResponseTemplate::new(401).set_body_json(json!({"detail": "Authentication credentials not provided."})),
        )
        .mount(&server)
        .await;
    let mut builder = Client::builder();
    for config in configs() {
        let config = config.base_url(server.uri());
        let config =
            if config.provider() == "cloudinary" { config.server_variable("cloud_name", "demo") } else { config };
        builder = builder.provider(config);
    }
    assert_no_secret(&format!("{builder:?}"), "ClientBuilder Debug");
    let client = builder.build().unwrap();
    assert_no_secret(&format!("{client:?}"), "Client Debug");
    for provider in ["cloudinary", "qolaba", "factpulse", "deepomatic"] {
        let error = client.get(&TaskRef::new(provider, "t-1").unwrap()).await.unwrap_err();
        assert_eq!(error.status(), Some(401), "{provider}: {error:?}");
        assert_no_secret(&format!("{error} {error:?}"), "an HTTP error");
    }

    // A transport error: nothing listens on this port (not a pooled mock server,
    // which another test could be using).
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let client = Client::builder()
        .provider(
            ProviderConfig::new("deepomatic").api_key(DEEPOMATIC_KEY).base_url(format!("http://127.0.0.1:{port}")),
        )
        .build()
        .unwrap();
    let error = client.get(&TaskRef::new("deepomatic", "1").unwrap()).await.unwrap_err();
    assert!(error.is_transport(), "{error:?}");
    let mut text = format!("{error} {error:?}");
    let mut source = std::error::Error::source(&error);
    while let Some(s) = source {
        text.push_str(&format!(" {s} {s:?}"));
        source = s.source();
    }
    assert_no_secret(&text, "a transport error");
}

/// Every snapshot file on disk is free of secrets (including ones written by
/// other test files).
#[test]
fn snapshot_files_hold_no_secret() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("snapshots");
    let Ok(entries) = std::fs::read_dir(&dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        if let Ok(text) = std::fs::read_to_string(&path) {
            assert_no_secret(&text, &path.display().to_string());
        }
    }
}

/// FactPulse's typed siblings, called through the generated client that
/// shares the unified client's settings, with each auth alternative.
#[tokio::test]
async fn factpulse_typed_siblings() {
    use taskpoll::generated::factpulse;
    let id = "0b9d8f2e-3c1a-4c51-9a57-2f1f7d1c9e10";
    for (auth, config) in [
        ("bearer", ProviderConfig::new("factpulse").bearer(FACTPULSE_JWT)),
        ("api_key", ProviderConfig::new("factpulse").api_key(FACTPULSE_KEY)),
    ] {
        // The generated types require `taskId` (the unified layer does not).
        let server = server_answering(json!({"taskId": id, "status": "PENDING", "result": null})).await;
        let unified = client(config.base_url(server.uri()));
        let typed = factpulse::client(&unified).unwrap();
        typed.get_generation_task_status().task_id(id).send().await.unwrap();
        typed.get_signature_task_status().task_id(id).send().await.unwrap();
        typed.get_validation_task_status().task_id(id).send().await.unwrap();
        typed.get_verification_status().task_id(id).send().await.unwrap();
        let all = received(&server).await;
        assert_eq!(all.len(), 4);
        for request in &all {
            check_common(request);
            match auth {
                "bearer" => {
                    assert_eq!(header(request, "authorization"), Some(format!("Bearer {FACTPULSE_JWT}").as_str()))
                }
                _ => assert_eq!(header(request, "x-api-key"), Some(FACTPULSE_KEY)),
            }
        }
        let shapes: Vec<Value> = all.iter().map(shape).collect();
        snapshot!(format!("request_factpulse_typed_siblings_{auth}"), shapes);
    }
    // A provider the unified client does not have gives a typed error, not a client.
    let unified = client(ProviderConfig::new("deepomatic").api_key("k"));
    assert!(matches!(factpulse::client(&unified), Err(taskpoll::Error::ProviderNotConfigured(_))));
}
