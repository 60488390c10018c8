//! Responses: every documented example body of every spec parses through the
//! generated types, the bodies the research notes call out are documented,
//! and every task body maps to the right phase through the unified layer.

#![allow(clippy::unwrap_used)] // In tests a panic is the failure report.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};
use taskpoll::generated::{cloudinary, deepomatic, factpulse, qolaba};
use taskpoll::spec::{Example, ProviderSpec};
use taskpoll::{Client, Error, Phase, ProviderConfig, Task, TaskRef};
use wiremock::matchers::any;
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::support::{client, made_up_credential, with_demo_variables};

/// The providers of `specs/` (others come from `tests/specs` with the
/// `fixture-provider` feature).
const BUILT_IN: [&str; 4] = ["cloudinary", "qolaba", "factpulse", "deepomatic"];

fn spec(name: &str) -> &'static ProviderSpec {
    taskpoll::spec::provider(name).unwrap_or_else(|| panic!("provider {name} is built in"))
}

fn body(example: &Example) -> Value {
    serde_json::from_str(example.json()).unwrap_or_else(|e| panic!("{} is not JSON: {e}", example.name()))
}

/// The examples of one operation and status, by name.
fn examples(provider: &str, operation: &str, status: &str) -> BTreeMap<&'static str, Value> {
    spec(provider).examples_for(operation, status).map(|e| (e.name(), body(e))).collect()
}

#[test]
fn the_built_in_providers_are_all_there() {
    let names: BTreeSet<&str> = taskpoll::spec::providers().iter().map(|p| p.name()).collect();
    for name in BUILT_IN {
        assert!(names.contains(name), "{name} missing from {names:?}");
    }
    // A spec added later needs no test edits: the generic checks below cover it,
    // and the documented-body tables cover the built-in four.
}

// ---------------------------------------------------------------------------
// Every documented example parses through the generated types

#[test]
fn every_documented_example_parses_through_the_generated_types() {
    let mut failures = Vec::new();
    for provider in taskpoll::spec::providers() {
        let mut parsed = 0;
        for example in provider.examples() {
            let where_ =
                format!("{} {} {} `{}`", provider.name(), example.operation(), example.status(), example.name());
            if serde_json::from_str::<Value>(example.json()).is_err() {
                failures.push(format!("{where_}: not JSON"));
                continue;
            }
            if example.schema().is_empty() {
                continue;
            }
            match provider.parse_as_schema(example.schema(), example.json()) {
                Some(Ok(())) => parsed += 1,
                Some(Err(e)) => failures.push(format!("{where_} as {}: {e}", example.schema())),
                None => failures.push(format!("{where_}: no parser for schema {}", example.schema())),
            }
        }
        if !BUILT_IN.contains(&provider.name()) {
            // A spec added later may document no examples; what it documents must parse.
            continue;
        }
        assert!(parsed > 0, "{} documents no example body", provider.name());
        // Every operation of the built-in specs documents at least one success body.
        for op in provider.operations() {
            let has_2xx = provider.examples().iter().any(|e| e.operation() == op.id() && e.status().starts_with('2'));
            assert!(has_2xx, "{}.{} documents no 2xx example", provider.name(), op.id());
        }
    }
    assert!(failures.is_empty(), "examples that do not parse:\n{}", failures.join("\n"));
}

/// A body that is not a documented example still fails loudly (the parser is
/// not a no-op).
#[test]
fn the_generated_parsers_reject_wrong_shapes() {
    let deepomatic = spec("deepomatic");
    assert!(matches!(deepomatic.parse_as_schema("TaskPage", r#"{"results": "nope"}"#), Some(Err(_))));
    assert!(matches!(deepomatic.parse_as_schema("Task", r#"{"status": "pending"}"#), Some(Err(_))), "id is required");
    assert!(deepomatic.parse_as_schema("NoSuchSchema", "{}").is_none());
}

// ---------------------------------------------------------------------------
// The bodies the notes call out are documented

#[test]
fn cloudinary_documents_the_notes_bodies() {
    let ok = examples("cloudinary", "get_task_status", "200");
    let statuses: BTreeSet<&str> =
        ok.values().filter_map(|b| b.pointer("/data/status").and_then(Value::as_str)).collect();
    for status in ["pending", "processing", "completed", "failed", "queued"] {
        assert!(statuses.contains(status), "no example with data.status = {status}");
    }
    assert!(ok.values().any(|b| b == &json!({})), "the empty body `{{}}`");
    assert!(
        ok.values().any(|b| b.pointer("/data/result").is_some() && b.get("limits") == Some(&Value::Null)),
        "unknown extra fields (data.result, limits: null)"
    );
    let limited = examples("cloudinary", "get_task_status", "429");
    assert!(limited.values().any(|b| b.pointer("/limits/items/0/reset_time").is_some()), "a 429 with quota items");
    for status in ["400", "401", "403", "404", "500"] {
        let errors = examples("cloudinary", "get_task_status", status);
        assert!(errors.values().any(|b| b.pointer("/error/message").is_some()), "an ErrorResponse for {status}");
    }
}

#[test]
fn qolaba_documents_the_notes_bodies() {
    let placeholder_fields = ["time_required", "error", "error_data", "input", "output", "app_id", "task_id", "status"];
    let is_placeholder = |b: &Value| {
        let Some(map) = b.as_object() else { return false };
        placeholder_fields.iter().all(|f| map.get(*f) == Some(&json!(""))) && map.len() == placeholder_fields.len()
    };
    let ok = examples("qolaba", "get_image", "200");
    let error = examples("qolaba", "get_image", "500");
    assert!(ok.values().any(is_placeholder), "the docs' all-\"\" 200 body");
    assert!(error.values().any(is_placeholder), "the docs' all-\"\" 500 body");
    assert!(
        error.values().any(|b| b["status"] == "FAILED" && b["error_data"] == "('Invalid API Key',)"),
        "the 500 FAILED body (invalid API key)"
    );
    let statuses: BTreeSet<&str> = ok.values().filter_map(|b| b["status"].as_str()).collect();
    for status in ["PENDING", "SUCCESS", "FAILED", "REVOKED"] {
        assert!(statuses.contains(status), "no 200 example with status {status}");
    }
    assert!(
        ok.values().any(|b| b["status"] == "SUCCESS" && b.pointer("/output/result/0").is_some()),
        "a success with output"
    );
}

#[test]
fn factpulse_documents_the_notes_bodies() {
    let factpulse = spec("factpulse");
    for op in factpulse.operations() {
        let ok = examples("factpulse", op.id(), "200");
        assert!(
            ok.values().any(|b| b["status"] == "SUCCESS" && b.pointer("/result/status") == Some(&json!("ERROR"))),
            "{}: Celery SUCCESS with result.status = ERROR",
            op.id()
        );
        assert!(ok.values().any(|b| b["status"] == "REVOKED"), "{}: REVOKED (outside the upstream enum)", op.id());
        assert!(
            ok.values().any(|b| b["status"] == "PENDING" && b["result"].is_null()),
            "{}: PENDING, result null",
            op.id()
        );
        assert!(ok.values().any(|b| b["status"] == "FAILURE"), "{}: FAILURE", op.id());
        let unauthorized = examples("factpulse", op.id(), "401");
        assert!(
            unauthorized.values().any(|b| b["errorCode"] == "AUTHENTICATION_REQUIRED"),
            "{}: the spec's 401",
            op.id()
        );
        assert!(unauthorized.values().any(|b| b["detail"] == "Not authenticated"), "{}: FastAPI's 401", op.id());
    }
    let generic = examples("factpulse", "get_task_status", "200");
    assert!(generic.values().any(|b| b["status"] == "PROGRESS"), "a status unknown to taskpoll as well");
    let signature = examples("factpulse", "get_signature_task_status", "200");
    assert!(
        signature.values().any(|b| b.pointer("/result/filename").is_some() && b.pointer("/result/is_signed").is_none()),
        "a generation-style result on the signature endpoint (the Python SDK fails on it)"
    );
}

#[test]
fn deepomatic_documents_the_notes_bodies() {
    let ok = examples("deepomatic", "get_task", "200");
    assert!(ok.values().any(|b| b["id"].is_u64()), "a task whose id is a JSON integer");
    assert!(ok.values().any(|b| b["id"].is_string()), "a task whose id is a string");
    assert!(ok.values().any(|b| b["status"] == "running"), "a status outside the documented three");
    assert!(
        ok.values().any(|b| b["status"] == "error" && b["error"].is_string() && b["data"].is_null()),
        "a failed task"
    );
    let pages = examples("deepomatic", "list_tasks", "200");
    assert!(pages.values().any(|b| b["next"].is_string()), "a page with `next`");
    assert!(pages.values().any(|b| b["next"].is_null()), "a last page");
    assert!(pages.values().any(|b| b.pointer("/results/0/id").is_some_and(Value::is_u64)), "a page with an integer id");
    for status in ["400", "500"] {
        assert!(
            examples("deepomatic", "get_task", status).values().any(|b| b["error"].is_string()),
            "`error` key on {status}"
        );
    }
    assert!(examples("deepomatic", "get_task", "401").values().any(|b| b["detail"].is_string()), "DRF `detail` on 401");
}

// ---------------------------------------------------------------------------
// Task bodies through the unified layer

/// What the unified layer must make of a documented task body.
struct Expect {
    phase: Phase,
    status: Option<&'static str>,
    error: Option<&'static str>,
    result: bool,
}

const fn expect(phase: Phase, status: Option<&'static str>, error: Option<&'static str>, result: bool) -> Expect {
    Expect { phase, status, error, result }
}

/// (provider, HTTP status, example name) -> expectation, for every example of
/// each provider's get operation that carries a task (2xx, or a status the
/// spec lists in `task-body-statuses`).
fn expected_tasks() -> BTreeMap<(&'static str, &'static str, &'static str), Expect> {
    use Phase::*;
    BTreeMap::from([
        (("cloudinary", "200", "pending"), expect(Queued, Some("pending"), None, false)),
        (("cloudinary", "200", "processing"), expect(Running, Some("processing"), None, false)),
        (("cloudinary", "200", "completed"), expect(Succeeded, Some("completed"), None, false)),
        (("cloudinary", "200", "failed"), expect(Failed, Some("failed"), None, false)),
        (("cloudinary", "200", "empty_body"), expect(Unknown, None, None, false)),
        (("cloudinary", "200", "extra_fields"), expect(Succeeded, Some("completed"), None, false)),
        (("cloudinary", "200", "unknown_status"), expect(Unknown, Some("queued"), None, false)),
        (("qolaba", "200", "pending"), expect(Queued, Some("PENDING"), None, true)),
        (("qolaba", "200", "success"), expect(Succeeded, Some("SUCCESS"), None, true)),
        (
            ("qolaba", "200", "failed"),
            expect(Failed, Some("FAILED"), Some("error detail from the worker (placeholder)"), true),
        ),
        (("qolaba", "200", "docs_placeholder"), expect(Unknown, Some(""), None, true)),
        (("qolaba", "200", "unknown_status"), expect(Unknown, Some("REVOKED"), None, true)),
        (("qolaba", "500", "invalid_api_key"), expect(Failed, Some("FAILED"), Some("('Invalid API Key',)"), true)),
        // The docs' placeholder under 500 is still an envelope with a (blank) status.
        (("factpulse", "200", "pending"), expect(Queued, Some("PENDING"), None, false)),
        (("factpulse", "200", "started"), expect(Running, Some("STARTED"), None, false)),
        (("factpulse", "200", "retry"), expect(Running, Some("RETRY"), None, false)),
        (("factpulse", "200", "success"), expect(Succeeded, Some("SUCCESS"), None, true)),
        (
            ("factpulse", "200", "success_business_error"),
            expect(Failed, Some("SUCCESS"), Some("Schematron validation failed"), true),
        ),
        (("factpulse", "200", "failure"), expect(Failed, Some("FAILURE"), Some("Task failed"), true)),
        (("factpulse", "200", "unknown_status_revoked"), expect(Cancelled, Some("REVOKED"), None, false)),
        (("factpulse", "200", "unknown_status_progress"), expect(Unknown, Some("PROGRESS"), None, false)),
        (("deepomatic", "200", "success"), expect(Succeeded, Some("success"), None, true)),
        (("deepomatic", "200", "pending"), expect(Queued, Some("pending"), None, false)),
        (("deepomatic", "200", "error"), expect(Failed, Some("error"), Some("Could not read the input image"), false)),
        (("deepomatic", "200", "int_id"), expect(Succeeded, Some("success"), None, true)),
        (("deepomatic", "200", "unknown_status"), expect(Unknown, Some("running"), None, false)),
    ])
}

/// A client for `spec` at `uri`, with a made-up credential for its first
/// scheme and every server variable set.
fn client_for(spec: &ProviderSpec, uri: &str) -> Client {
    let mut config = ProviderConfig::new(spec.name()).base_url(uri);
    if let Some(scheme) = spec.schemes().first() {
        config = config.credential(scheme.name(), made_up_credential(scheme.kind(), "token"));
    }
    client(with_demo_variables(config, spec))
}

/// Serves `json` with `status` and reads task `id` once.
async fn read_served(provider: &str, status: u16, json: &str, id: &str) -> taskpoll::Result<Task> {
    let server = MockServer::start().await;
    Mock::given(any())
        .respond_with(ResponseTemplate::new(status).set_body_raw(json.as_bytes().to_vec(), "application/json"))
        .mount(&server)
        .await;
    let client = client_for(spec(provider), &server.uri());
    // A documented body is about its own task: ask for that one (answers about
    // another task are refused; tests/reads/security.rs covers that).
    let documented = serde_json::from_str::<serde_json::Value>(json)
        .ok()
        .and_then(|body| spec(provider).task().id().and_then(|pointer| body.pointer(pointer).cloned()));
    let id = match documented {
        Some(serde_json::Value::String(s)) if !s.is_empty() => s,
        Some(serde_json::Value::Number(n)) => n.to_string(),
        _ => id.to_string(),
    };
    client.get(&TaskRef::new(provider, id).expect("a valid id")).await
}

fn carries_task(spec: &ProviderSpec, status: &str) -> bool {
    status.starts_with('2') || status.parse::<u16>().is_ok_and(|s| spec.task().task_body_statuses().contains(&s))
}

/// The docs' all-`""` 500 body names no status, so it is an API error, not a task.
#[tokio::test]
async fn qolaba_placeholder_500_is_an_api_error() {
    let (status, json) = served("qolaba", "500", "docs_placeholder");
    let err = read_served("qolaba", status, json, "t-1").await.unwrap_err();
    assert!(matches!(&err, taskpoll::Error::Api(e) if e.status() == 500), "{err:?}");
}

#[tokio::test]
async fn every_task_example_maps_through_the_unified_layer() {
    let expected = expected_tasks();
    let mut seen = BTreeSet::new();
    let mut failures = Vec::new();
    let mut unknown_seen = BTreeSet::new();
    for name in BUILT_IN {
        let provider = spec(name);
        let task_examples = provider
            .examples()
            .iter()
            .filter(|e| e.operation() == provider.get().operation() && carries_task(provider, e.status()))
            // A non-2xx body is a task only when it names a status (see the placeholder test below).
            .filter(|e| {
                e.status().starts_with('2') || !body(e).pointer(provider.task().status()).is_some_and(|s| s == "")
            });
        for example in task_examples {
            let key = (name, example.status(), example.name());
            let Some(want) = expected.get(&key) else {
                failures.push(format!("{key:?}: no expectation; add it to expected_tasks()"));
                continue;
            };
            seen.insert(key);
            let status: u16 = example.status().parse().expect("a numeric status");
            let task = match read_served(name, status, example.json(), "t-1").await {
                Ok(task) => task,
                Err(e) => {
                    failures.push(format!("{key:?}: {e}"));
                    continue;
                }
            };
            let got = (task.phase(), task.status(), task.error(), task.result().is_some(), task.http_status());
            let want_tuple = (want.phase, want.status, want.error, want.result, status);
            if got != want_tuple {
                failures.push(format!("{key:?}: got {got:?}, want {want_tuple:?}"));
            }
            assert_eq!(task.body(), &body(example), "{key:?}: the raw body is kept");
            if task.phase() == Phase::Unknown && task.status().is_some_and(|s| !s.is_empty()) {
                unknown_seen.insert(name);
            }
        }
    }
    for key in expected.keys() {
        if !seen.contains(key) {
            failures.push(format!("{key:?}: expected but not documented in the spec"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // An undocumented status value reaches the caller as `unknown`, raw value kept.
    assert_eq!(unknown_seen, BTreeSet::from(BUILT_IN), "every provider documents a status unknown to taskpoll");
}

/// Every documented error body of a provider's read operations becomes an
/// `Error::Api` with the HTTP status and a readable message.
#[tokio::test]
async fn every_error_example_becomes_an_api_error_with_a_message() {
    let mut failures = Vec::new();
    let mut count = 0;
    for name in BUILT_IN {
        let provider = spec(name);
        for example in provider
            .examples()
            .iter()
            .filter(|e| e.operation() == provider.get().operation() && !carries_task(provider, e.status()))
        {
            count += 1;
            let key = (name, example.status(), example.name());
            let status: u16 = example.status().parse().expect("a numeric status");
            match read_served(name, status, example.json(), "t-1").await {
                Err(Error::Api(e)) => {
                    let (got, message, body_is_json) = (e.status(), e.message(), e.body_is_json());
                    let readable = message.is_some_and(|m| !m.is_empty() && !m.starts_with(['[', '{']));
                    if got != status || !body_is_json || !readable {
                        failures.push(format!("{key:?}: status {got}, json {body_is_json}, message {message:?}"));
                    }
                }
                other => failures.push(format!("{key:?}: {other:?}")),
            }
        }
    }
    assert!(count > 0);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Deepomatic's documented pages through `get_many`: ids as strings or
/// integers, `next` followed by its page parameters.
#[tokio::test]
async fn deepomatic_pages_map_through_get_many() {
    type Want = (&'static str, Phase, Option<&'static str>);
    let cases: &[(&str, &[Want])] = &[
        ("page_with_next", &[("269999729", Phase::Succeeded, None), ("269999730", Phase::Queued, None)]),
        ("last_page", &[("269999729", Phase::Succeeded, None), ("269999730", Phase::Succeeded, None)]),
        ("mixed_page", &[("269999733", Phase::Failed, Some("Could not read the input image"))]),
    ];
    let pages = examples("deepomatic", "list_tasks", "200");
    assert_eq!(pages.keys().copied().collect::<BTreeSet<_>>(), cases.iter().map(|(n, _)| *n).collect());
    for (name, want) in cases {
        let server = MockServer::start().await;
        Mock::given(any()).respond_with(ResponseTemplate::new(200).set_body_json(&pages[name])).mount(&server).await;
        let client = client_for(spec("deepomatic"), &server.uri());
        let mut ids: Vec<&str> = want.iter().map(|(id, _, _)| *id).collect();
        if let [only] = ids[..] {
            // One id alone is read with the single-task operation: asked twice, it goes in a batch.
            ids.push(only);
        }
        let tasks = client.get_many("deepomatic", &ids).await.unwrap();
        for (task, (id, phase, error)) in tasks.iter().zip(want.iter()) {
            let task = task.as_ref().unwrap_or_else(|e| panic!("{name} {id}: {e}"));
            assert_eq!((task.id(), task.phase(), task.error()), (*id, *phase, *error), "{name}");
            let typed = task.typed::<deepomatic::types::Task>().unwrap();
            assert_eq!(typed.id.to_string().trim_matches('"'), *id, "{name}: ids compare as decimal strings");
        }
        let requests = server.received_requests().await.unwrap();
        if pages[name]["next"].is_string() {
            // The served `next` points at api.deepomatic.com: only its page
            // parameters are used, against the configured server.
            assert_eq!(requests.len(), 2, "{name}: `next` followed once, then the repeated page ends the loop");
            assert_eq!(requests[1].url.query(), Some("limit=2&offset=2&task_ids=269999729&task_ids=269999730"));
        } else {
            assert_eq!(requests.len(), 1, "{name}");
        }
    }
}

// ---------------------------------------------------------------------------
// Typed access, one per provider

fn served(provider: &str, status: &str, name: &str) -> (u16, &'static str) {
    let example = spec(provider)
        .examples()
        .iter()
        .find(|e| e.operation() == spec(provider).get().operation() && e.status() == status && e.name() == name)
        .unwrap_or_else(|| panic!("{provider} documents {status} `{name}`"));
    (status.parse().unwrap(), example.json())
}

#[tokio::test]
async fn typed_access_cloudinary() {
    let (status, json) = served("cloudinary", "200", "unknown_status");
    let task = read_served("cloudinary", status, json, "t-1").await.unwrap();
    let typed = task.typed::<cloudinary::types::GetTaskStatusResponse>().unwrap();
    assert_eq!(typed.data.and_then(|d| d.status).map(|s| s.0).as_deref(), Some("queued"));
}

#[tokio::test]
async fn typed_access_qolaba() {
    let (status, json) = served("qolaba", "500", "invalid_api_key");
    let task = read_served("qolaba", status, json, "t-1").await.unwrap();
    assert_eq!((task.phase(), task.http_status()), (Phase::Failed, 500));
    let typed = task.typed::<qolaba::types::TaskStatusResponse>().unwrap();
    assert_eq!(typed.status.map(|s| s.0).as_deref(), Some("FAILED"));
    assert_eq!(typed.error.as_deref(), Some("Internal Error"));

    let (status, json) = served("qolaba", "200", "docs_placeholder");
    let task = read_served("qolaba", status, json, "t-1").await.unwrap();
    let typed = task.typed::<qolaba::types::TaskStatusResponse>().unwrap();
    assert_eq!(typed.output, Some(json!("")));
}

#[tokio::test]
async fn typed_access_factpulse() {
    let (status, json) = served("factpulse", "200", "success_business_error");
    let task = read_served("factpulse", status, json, "0b9d8f2e-3c1a-4c51-9a57-2f1f7d1c9e10").await.unwrap();
    assert_eq!(task.phase(), Phase::Failed);
    let generic = task.typed::<factpulse::types::AsyncTaskStatus>().unwrap();
    assert_eq!(generic.status.0, "SUCCESS");
    assert_eq!(generic.result.as_ref().and_then(|r| r.get("status")), Some(&json!("ERROR")));
    // The same body through a typed sibling's model picks the error branch.
    let typed = task.typed::<factpulse::types::GenerationTaskStatus>().unwrap();
    match typed.result {
        Some(factpulse::types::GenerationTaskStatusResult::TaskErrorResult(error)) => {
            assert_eq!(error.error_code.as_deref(), Some("SCHEMATRON_VALIDATION_FAILED"));
            assert_eq!(error.error_message, "Schematron validation failed");
        }
        other => panic!("expected the TaskErrorResult branch, got {other:?}"),
    }

    let (status, json) = served("factpulse", "200", "unknown_status_revoked");
    let task = read_served("factpulse", status, json, "0b9d8f2e-3c1a-4c51-9a57-2f1f7d1c9e10").await.unwrap();
    assert_eq!(task.phase(), Phase::Cancelled);
    assert_eq!(task.typed::<factpulse::types::AsyncTaskStatus>().unwrap().status.0, "REVOKED");
}

#[tokio::test]
async fn typed_access_deepomatic() {
    let (status, json) = served("deepomatic", "200", "int_id");
    let task = read_served("deepomatic", status, json, "269999729").await.unwrap();
    assert_eq!(task.phase(), Phase::Succeeded);
    let typed = task.typed::<deepomatic::types::Task>().unwrap();
    assert_eq!(typed.id, json!(269999729));
    assert_eq!(typed.status.0, "success");
    assert!(typed.data.is_some_and(|d| d.contains_key("outputs")));
}
