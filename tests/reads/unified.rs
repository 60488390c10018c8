//! The unified layer against a loopback server: configuration, task mapping,
//! error classification, safety limits and batch reads.

#![allow(clippy::disallowed_methods)] // reads real time: a test's or benchmark's own timing

use std::time::{Duration, SystemTime};

use serde_json::json;
use taskpoll::{Client, Credential, Error, Phase, ProviderConfig, TaskRef};
use wiremock::matchers::{method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::support::{client, received, task};

fn deepomatic(server: &MockServer) -> Client {
    client(ProviderConfig::new("deepomatic").api_key("secret-key-1").base_url(server.uri()))
}

async fn answer(server: &MockServer, template: ResponseTemplate) {
    Mock::given(method("GET")).respond_with(template).mount(server).await;
}

#[tokio::test]
async fn html_502_is_a_retryable_api_error_with_its_status() {
    let server = MockServer::start().await;
    answer(&server, ResponseTemplate::new(502).set_body_raw("<html><body>Bad Gateway</body></html>", "text/html"))
        .await;
    let err = deepomatic(&server).get(&task("deepomatic", "1")).await.unwrap_err();
    assert!(matches!(&err, Error::Api(e) if e.status() == 502 && !e.body_is_json()), "{err:?}");
    assert!(err.is_retryable());
    assert_eq!(err.status(), Some(502));
    assert!(err.to_string().contains("HTTP 502"), "{err}");
}

#[tokio::test]
async fn non_json_500_is_retryable_but_a_json_500_error_is_not() {
    let server = MockServer::start().await;
    answer(&server, ResponseTemplate::new(500).set_body_raw("oops", "text/plain")).await;
    let err = deepomatic(&server).get(&task("deepomatic", "1")).await.unwrap_err();
    assert!(err.is_retryable(), "{err:?}");

    let server = MockServer::start().await;
    answer(&server, ResponseTemplate::new(500).set_body_json(json!({"error": "internal"}))).await;
    let err = deepomatic(&server).get(&task("deepomatic", "1")).await.unwrap_err();
    assert!(!err.is_retryable(), "{err:?}");
    assert!(err.to_string().contains("internal"), "the provider's message is shown: {err}");
}

#[tokio::test]
async fn rate_limit_carries_retry_after_in_seconds() {
    let server = MockServer::start().await;
    answer(
        &server,
        ResponseTemplate::new(429).insert_header("Retry-After", "7").set_body_json(json!({"detail": "slow down"})),
    )
    .await;
    let err = deepomatic(&server).get(&task("deepomatic", "1")).await.unwrap_err();
    assert!(err.is_rate_limited() && err.is_retryable());
    assert_eq!(err.retry_after(), Some(Duration::from_secs(7)));
}

/// The answer client keeps only the headers classification reads: the pacing
/// hint of an in-progress answer, in any of its spellings, survives next to
/// headers it drops.
#[tokio::test]
async fn an_in_progress_answer_keeps_its_pacing_hint() {
    for (name, value, expected) in
        [("Retry-After", "4", Duration::from_secs(4)), ("x-ms-retry-after-ms", "1500", Duration::from_millis(1500))]
    {
        let server = MockServer::start().await;
        let running = ResponseTemplate::new(200)
            .insert_header("x-request-id", "abc")
            .insert_header(name, value)
            .insert_header("cache-control", "no-store")
            .set_body_json(json!({"id": "1", "status": "pending"}));
        answer(&server, running).await;
        let read = deepomatic(&server).get(&task("deepomatic", "1")).await.unwrap();
        assert_eq!(read.phase(), Phase::Queued, "{name}");
        assert_eq!(read.retry_after(), Some(expected), "{name}");
    }
    // And an answer without one has none.
    let server = MockServer::start().await;
    answer(&server, ResponseTemplate::new(200).set_body_json(json!({"id": "1", "status": "pending"}))).await;
    assert_eq!(deepomatic(&server).get(&task("deepomatic", "1")).await.unwrap().retry_after(), None);
}

#[tokio::test]
async fn rate_limit_carries_retry_after_as_http_date() {
    let server = MockServer::start().await;
    let at = httpdate_in(Duration::from_secs(120));
    answer(&server, ResponseTemplate::new(429).insert_header("Retry-After", at.as_str())).await;
    let err = deepomatic(&server).get(&task("deepomatic", "1")).await.unwrap_err();
    let hint = err.retry_after().expect("a hint");
    assert!(hint > Duration::from_secs(100) && hint <= Duration::from_secs(120), "{hint:?}");
}

#[tokio::test]
async fn a_retry_after_date_is_read_against_the_clients_clock() {
    // A wall clock far from the real one: the hint is 30 s only if the date is read against it.
    let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let server = MockServer::start().await;
    let date = httpdate::fmt_http_date(wall + Duration::from_secs(30));
    answer(&server, ResponseTemplate::new(429).insert_header("Retry-After", date.as_str())).await;
    let client = Client::builder()
        .clock(std::sync::Arc::new(taskpoll::clock::ManualClock::starting_at(wall)))
        .provider(ProviderConfig::new("deepomatic").api_key("secret-key-1").base_url(server.uri()))
        .build()
        .expect("client");
    let err = client.get(&task("deepomatic", "1")).await.unwrap_err();
    assert_eq!(err.retry_after(), Some(Duration::from_secs(30)), "{err:?}");
}

fn httpdate_in(d: Duration) -> String {
    httpdate::fmt_http_date(SystemTime::now() + d)
}

#[tokio::test]
async fn unauthorized_and_forbidden_are_auth_errors() {
    for status in [401, 403] {
        let server = MockServer::start().await;
        answer(
            &server,
            ResponseTemplate::new(status).set_body_json(json!({"detail": "Authentication credentials not provided."})),
        )
        .await;
        let err = deepomatic(&server).get(&task("deepomatic", "1")).await.unwrap_err();
        assert!(err.is_auth(), "{status}: {err:?}");
        assert!(!err.is_retryable());
        assert!(!err.to_string().contains("secret-key-1"));
    }
}

#[tokio::test]
async fn not_found_is_permanent() {
    let server = MockServer::start().await;
    answer(&server, ResponseTemplate::new(404).set_body_json(json!({"detail": "Not found."}))).await;
    let err = deepomatic(&server).get(&task("deepomatic", "1")).await.unwrap_err();
    assert!(err.is_not_found() && !err.is_retryable());
}

#[tokio::test]
async fn broken_success_bodies_are_typed_errors_not_panics() {
    let cases: Vec<(ResponseTemplate, &str)> = vec![
        (ResponseTemplate::new(200).set_body_raw("{\"status\": \"pend", "application/json"), "not JSON"),
        (ResponseTemplate::new(200), "empty body"),
        (ResponseTemplate::new(200).set_body_json(json!(["pending"])), "not a JSON object"),
        (ResponseTemplate::new(200).set_body_raw("<html>maintenance</html>", "text/html"), "not JSON"),
    ];
    for (template, reason) in cases {
        let server = MockServer::start().await;
        answer(&server, template).await;
        let err = deepomatic(&server).get(&task("deepomatic", "1")).await.unwrap_err();
        match &err {
            Error::InvalidBody(e) if e.status() == 200 => assert_eq!(e.reason(), reason),
            other => panic!("expected InvalidBody({reason}), got {other:?}"),
        }
    }
}

#[tokio::test]
async fn wrong_types_and_unknown_statuses_keep_the_raw_body() {
    let server = MockServer::start().await;
    answer(&server, ResponseTemplate::new(200).set_body_json(json!({"id": "1", "status": 42, "data": "x"}))).await;
    let t = deepomatic(&server).get(&task("deepomatic", "1")).await.expect("a task");
    assert_eq!(t.phase(), Phase::Unknown);
    assert_eq!(t.status(), Some("42"));
    assert_eq!(t.body()["data"], "x");

    let server = MockServer::start().await;
    answer(&server, ResponseTemplate::new(200).set_body_json(json!({"id": "1", "status": "queued"}))).await;
    let t = deepomatic(&server).get(&task("deepomatic", "1")).await.expect("a task");
    assert_eq!((t.phase(), t.status()), (Phase::Unknown, Some("queued")));
    assert!(!t.is_terminal());
}

#[tokio::test]
async fn statuses_map_case_insensitively() {
    let server = MockServer::start().await;
    answer(
        &server,
        ResponseTemplate::new(200).set_body_json(json!({"id": "1", "status": "SUCCESS", "data": {"ok": 1}})),
    )
    .await;
    let t = deepomatic(&server).get(&task("deepomatic", "1")).await.expect("a task");
    assert_eq!(t.phase(), Phase::Succeeded);
    assert_eq!(t.result(), Some(&json!({"ok": 1})));
    assert_eq!(t.http_status(), 200);
}

#[tokio::test]
async fn oversized_bodies_are_refused() {
    let server = MockServer::start().await;
    let big = json!({"id": "1", "status": "success", "data": {"blob": "x".repeat(10_000)}});
    answer(&server, ResponseTemplate::new(200).set_body_json(big)).await;
    let client = Client::builder()
        .provider(ProviderConfig::new("deepomatic").api_key("k").base_url(server.uri()))
        .max_body_bytes(1024)
        .build()
        .expect("client");
    let err = client.get(&task("deepomatic", "1")).await.unwrap_err();
    assert!(matches!(&err, Error::BodyTooLarge(e) if e.limit() == 1024 && e.status() == 200), "{err:?}");
}

#[tokio::test]
async fn hostile_ids_never_reach_the_wire() {
    let server = MockServer::start().await;
    answer(&server, ResponseTemplate::new(200).set_body_json(json!({"id": "1", "status": "pending"}))).await;
    let long = "a".repeat(taskpoll::TaskRef::MAX_ID_LEN + 1);
    for id in ["", ".", "..", "a\nb", "a\u{0}b", " padded", long.as_str()] {
        assert!(matches!(TaskRef::new("deepomatic", id), Err(Error::InvalidTaskId(_))), "{id:?}");
    }
    let client = deepomatic(&server);
    let results = client.get_many("deepomatic", &["..", "ok\r\n"]).await.expect("no batch request needed");
    assert!(results.iter().all(|r| matches!(r, Err(Error::InvalidTaskId(_)))));
    assert_eq!(received(&server).await.len(), 0);
}

#[test]
fn task_refs_round_trip_through_strings() {
    let t: TaskRef = "deepomatic:269999729".parse().expect("parses");
    assert_eq!((t.provider(), t.id()), ("deepomatic", "269999729"));
    let q = TaskRef::new("qolaba", "a b?c%d").expect("ok").with_input("refID", "order 7&x").expect("declared input");
    let text = q.to_string();
    assert_eq!(text, "qolaba:a%20b%3Fc%25d?refID=order%207%26x");
    assert_eq!(text.parse::<TaskRef>().expect("round trip"), q);
    assert!(matches!("nope".parse::<TaskRef>(), Err(Error::InvalidTaskRef(_))));
    assert!(matches!("mars:1".parse::<TaskRef>(), Err(Error::UnknownProvider(_))));
    assert!(matches!("deepomatic:1?refID=x".parse::<TaskRef>(), Err(Error::InvalidTaskRef(_))));
    assert!(matches!("deepomatic:..".parse::<TaskRef>(), Err(Error::InvalidTaskId(_))));
    let json = serde_json::to_value(&q).expect("serialises");
    assert_eq!(json, json!({"provider": "qolaba", "id": "a b?c%d", "inputs": {"refID": "order 7&x"}}));
    let back: TaskRef = serde_json::from_value(json).expect("reads back");
    assert_eq!((back.spec().name(), &back), ("qolaba", &q), "carries its provider's descriptor");
    let unknown = serde_json::from_value::<TaskRef>(json!({"provider": "mars", "id": "1"})).expect_err("unknown");
    assert!(unknown.to_string().contains("unknown provider `mars`"), "{unknown}");
    let undeclared = json!({"provider": "deepomatic", "id": "1", "inputs": {"refID": "x"}});
    assert!(serde_json::from_value::<TaskRef>(undeclared).is_err(), "an input the spec does not declare");
}

#[test]
fn configuration_errors_are_clear() {
    let err = Client::builder().build().unwrap_err();
    assert!(err.is_config() && err.to_string().contains("no provider configured"), "{err}");
    let err = Client::builder().provider(ProviderConfig::new("mars")).build().unwrap_err();
    assert!(matches!(err, Error::UnknownProvider(_)), "{err:?}");
    let err = Client::builder().provider(ProviderConfig::new("cloudinary").basic("k", "s")).build().unwrap_err();
    assert!(err.to_string().contains("cloud_name"), "{err}");
    let err = Client::builder().provider(ProviderConfig::new("deepomatic").basic("k", "s")).build().unwrap_err();
    assert!(err.to_string().contains("no basic scheme"), "{err}");
    let err = Client::builder()
        .provider(ProviderConfig::new("deepomatic").api_key("k").base_url("ftp://x"))
        .build()
        .unwrap_err();
    assert!(err.is_config(), "{err:?}");
}

#[tokio::test]
async fn unconfigured_providers_are_refused_before_any_request() {
    let server = MockServer::start().await;
    let client = deepomatic(&server);
    let err = client.get(&task("factpulse", "abc")).await.unwrap_err();
    assert!(matches!(err, Error::ProviderNotConfigured(_)), "{err:?}");
    assert_eq!(received(&server).await.len(), 0);
}

#[tokio::test]
async fn missing_credentials_fail_before_sending() {
    let server = MockServer::start().await;
    answer(&server, ResponseTemplate::new(200).set_body_json(json!({"id": "1", "status": "pending"}))).await;
    let client =
        Client::builder().provider(ProviderConfig::new("deepomatic").base_url(server.uri())).build().expect("client");
    let err = client.get(&task("deepomatic", "1")).await.unwrap_err();
    assert!(matches!(err, Error::MissingCredentials(_)) && err.is_auth(), "{err:?}");
    assert_eq!(received(&server).await.len(), 0);
}

fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
    let vars: Vec<(String, String)> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    move |name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
}

#[tokio::test]
async fn from_env_reads_each_providers_variables() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/tasks/42"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"data": {"task_id": "42", "status": "processing"}})),
        )
        .mount(&server)
        .await;
    let base = format!("{}/{{cloud_name}}-x", server.uri());
    // CLOUDINARY_URL gives key, secret and cloud name; the base URL override keeps the placeholder.
    let client = Client::builder()
        .providers_from_env_with(env(&[("CLOUDINARY_URL", "cloudinary://k%40y:s3cr%2Ft@democloud")]))
        .expect("env")
        .build()
        .expect("client");
    assert_eq!(client.base_url("cloudinary"), Some("https://api.cloudinary.com/v2/analysis/democloud"));
    let client = Client::builder()
        .providers_from_env_with(env(&[
            ("CLOUDINARY_CLOUD_NAME", "demo"),
            ("CLOUDINARY_API_KEY", "key"),
            ("CLOUDINARY_API_SECRET", "secret"),
        ]))
        .expect("env")
        .build()
        .expect("client");
    assert_eq!(client.base_url("cloudinary"), Some("https://api.cloudinary.com/v2/analysis/demo"));
    let _ = base;

    let client = Client::builder()
        .providers_from_env_with(env(&[
            ("FACTPULSE_API_KEY", "fk"),
            ("QOLABA_API_KEY", "qk"),
            ("DEEPOMATIC_API_KEY", "dk"),
            ("DEEPOMATIC_APP_ID", "app"),
            ("DEEPOMATIC_API_URL", server.uri().as_str()),
        ]))
        .expect("env")
        .build()
        .expect("client");
    let mut names: Vec<&str> = client.providers().map(|p| p.name()).collect();
    names.sort_unstable();
    assert_eq!(names, ["deepomatic", "factpulse", "qolaba"]);
    // A host-only URL keeps the spec's `/v0.7`, as the official client does with DEEPOMATIC_API_URL.
    assert_eq!(client.base_url("deepomatic"), Some(format!("{}/v0.7", server.uri()).as_str()));
    let client = Client::builder()
        .providers_from_env_with(env(&[
            ("DEEPOMATIC_API_KEY", "dk"),
            ("DEEPOMATIC_API_URL", "http://proxy.invalid/deepomatic/v1/"),
        ]))
        .expect("env")
        .build()
        .expect("client");
    assert_eq!(client.base_url("deepomatic"), Some("http://proxy.invalid/deepomatic/v1"), "a path is kept as given");

    let err = Client::builder().providers_from_env_with(env(&[])).expect("env").build().unwrap_err();
    assert!(err.is_config());
    let err = Client::builder().providers_from_env_with(env(&[("CLOUDINARY_URL", "not a url")])).unwrap_err();
    assert!(err.to_string().contains("CLOUDINARY_URL"), "{err}");
}

#[tokio::test]
async fn deepomatic_sends_the_app_id_only_when_configured() {
    let server = MockServer::start().await;
    answer(&server, ResponseTemplate::new(200).set_body_json(json!({"id": "1", "status": "pending"}))).await;
    deepomatic(&server).get(&task("deepomatic", "1")).await.expect("task");
    let with_app = Client::builder()
        .provider(
            ProviderConfig::new("deepomatic")
                .api_key("k")
                .credential("AppId", Credential::Token("app-1".to_string().into()))
                .base_url(server.uri()),
        )
        .build()
        .expect("client");
    with_app.get(&task("deepomatic", "1")).await.expect("task");
    let requests = server.received_requests().await.expect("recorded");
    assert!(requests[0].headers.get("x-app-id").is_none());
    assert_eq!(requests[1].headers.get("x-app-id").map(|v| v.as_bytes()), Some(&b"app-1"[..]));
}

#[test]
fn secrets_never_appear_in_debug_output() {
    let config = ProviderConfig::new("cloudinary").basic("key", "hunter2-secret").bearer("tok-secret");
    let debug = format!("{config:?}");
    assert!(!debug.contains("hunter2-secret") && !debug.contains("tok-secret"), "{debug}");
    let client =
        Client::builder().provider(ProviderConfig::new("deepomatic").api_key("dk-secret")).build().expect("client");
    assert!(!format!("{client:?}").contains("dk-secret"));
}

#[tokio::test]
async fn qolaba_500_with_failed_body_is_a_failed_task() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/getImage"))
        .respond_with(ResponseTemplate::new(500).set_body_json(json!({
            "time_required": {}, "error": "Internal Error", "error_data": "('Invalid API Key',)",
            "input": {}, "output": {}, "task_id": null, "status": "FAILED"
        })))
        .mount(&server)
        .await;
    let client = Client::builder()
        .provider(ProviderConfig::new("qolaba").bearer("qk").base_url(server.uri()))
        .build()
        .expect("client");
    let t = client.get(&task("qolaba", "t-1")).await.expect("a failed task, not an error");
    assert_eq!((t.phase(), t.http_status()), (Phase::Failed, 500));
    assert_eq!(t.error(), Some("('Invalid API Key',)"));
    // A 500 that is not a task body stays an API error.
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(500).set_body_raw("Internal Server Error", "text/plain"))
        .mount(&server)
        .await;
    let client = Client::builder()
        .provider(ProviderConfig::new("qolaba").bearer("qk").base_url(server.uri()))
        .build()
        .expect("client");
    let err = client.get(&task("qolaba", "t-1")).await.unwrap_err();
    assert!(matches!(&err, Error::Api(e) if e.status() == 500) && err.is_retryable(), "{err:?}");
}

#[tokio::test]
async fn factpulse_business_error_is_a_failed_task_with_the_result_kept() {
    let server = MockServer::start().await;
    answer(
        &server,
        ResponseTemplate::new(200).set_body_json(json!({"taskId": "t", "status": "SUCCESS", "result": {
            "status": "ERROR", "errorCode": "SCHEMATRON_VALIDATION_FAILED", "errorMessage": "BR-FR-01 failed"
        }})),
    )
    .await;
    let client = Client::builder()
        .provider(ProviderConfig::new("factpulse").api_key("fk").base_url(server.uri()))
        .build()
        .expect("client");
    let t = client.get(&task("factpulse", "t")).await.expect("task");
    assert_eq!(t.phase(), Phase::Failed);
    assert_eq!(t.status(), Some("SUCCESS"));
    assert_eq!(t.error(), Some("BR-FR-01 failed"));
    assert_eq!(t.result().and_then(|r| r.get("errorCode")), Some(&json!("SCHEMATRON_VALIDATION_FAILED")));
}

#[tokio::test]
async fn get_many_uses_the_batch_call_and_follows_pages() {
    let server = MockServer::start().await;
    // `next` names another host: only its page parameters are used, the request
    // goes through the configured base URL, so credentials never leave it.
    let next = "https://elsewhere.invalid/v0.7/tasks/?task_ids=1&task_ids=2&task_ids=3&limit=2&offset=2";
    Mock::given(method("GET"))
        .and(path("/tasks/"))
        .and(query_param("offset", "2"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "count": 3, "next": null, "previous": null, "results": [{"id": 3, "status": "error", "error": "bad image"}]
        })))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/tasks/"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "count": 3, "next": next, "previous": null,
            "results": [{"id": "1", "status": "success"}, {"id": "2", "status": "pending"}]
        })))
        .mount(&server)
        .await;
    let client = deepomatic(&server);
    let results = client.get_many("deepomatic", &["1", "2", "3", "4"]).await.expect("batch");
    let phases: Vec<Option<Phase>> = results.iter().map(|r| r.as_ref().ok().map(|t| t.phase())).collect();
    assert_eq!(phases, [Some(Phase::Succeeded), Some(Phase::Queued), Some(Phase::Failed), None]);
    assert!(matches!(results[3], Err(Error::MissingFromBatch(_))));
    assert_eq!(results[2].as_ref().map(|t| t.error()).ok().flatten(), Some("bad image"));
    let requests = server.received_requests().await.expect("recorded");
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[1].url.query(), Some("limit=2&offset=2&task_ids=1&task_ids=2&task_ids=3&task_ids=4"));
    assert!(client.get_many::<&str>("deepomatic", &[]).await.expect("nothing to do").is_empty());
    assert_eq!(received(&server).await.len(), 2, "an empty id list sends nothing");
}

#[tokio::test]
async fn get_many_without_a_batch_call_reads_each_task() {
    let server = MockServer::start().await;
    for (id, status) in [("a", "PENDING"), ("b", "STARTED"), ("c", "REVOKED")] {
        Mock::given(method("GET"))
            .and(path(format!("/api/v1/processing/tasks/{id}/status")))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({"taskId": id, "status": status})))
            .mount(&server)
            .await;
    }
    let client = Client::builder()
        .provider(ProviderConfig::new("factpulse").bearer("jwt").base_url(server.uri()))
        .concurrency(2)
        .build()
        .expect("client");
    let results = client.get_many("factpulse", &["a", "b", "c", "d"]).await.expect("reads");
    let phases: Vec<Option<Phase>> = results.iter().map(|r| r.as_ref().ok().map(|t| t.phase())).collect();
    assert_eq!(phases, [Some(Phase::Queued), Some(Phase::Running), Some(Phase::Cancelled), None]);
    assert!(results[3].as_ref().is_err_and(Error::is_not_found));
}

#[test]
fn unified_types_have_json_schemas() {
    let schema = schemars::schema_for!(taskpoll::Task);
    let text = serde_json::to_string(&schema).expect("serialises");
    for field in ["phase", "status", "http_status", "provider", "id", "body"] {
        assert!(text.contains(field), "{field} missing from {text}");
    }
    let _ = schemars::schema_for!(taskpoll::TaskRef);
    let _ = schemars::schema_for!(taskpoll::Phase);
}

#[test]
fn every_spec_declares_a_usable_provider() {
    for spec in taskpoll::spec::providers() {
        assert!(spec.operation(spec.get().operation()).is_some(), "{}", spec.name());
        if let Some(many) = spec.many() {
            assert!(spec.operation(many.operation()).is_some(), "{}", spec.name());
        }
        assert!(!spec.phases().is_empty(), "{}", spec.name());
        assert!(spec.polite().deadline_ms() > 0, "{}", spec.name());
    }
}

/// A 401 triggers one refresh and one retry; a credential that is still refused
/// is an auth error after exactly one refresh (no re-login loop).
#[tokio::test]
async fn a_401_refreshes_the_bearer_token_once() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};
    use wiremock::matchers::header;

    let server = MockServer::start().await;
    Mock::given(header("authorization", "Bearer fresh"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"taskId": "t", "status": "STARTED"})))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(401).set_body_json(json!({"errorCode": "AUTHENTICATION_REQUIRED"})))
        .mount(&server)
        .await;
    let client_with = |token: &'static str, calls: Arc<AtomicU32>| {
        Client::builder()
            .provider(ProviderConfig::new("factpulse").bearer("expired").base_url(server.uri()).refresh_bearer(
                move || {
                    let calls = calls.clone();
                    async move {
                        calls.fetch_add(1, Ordering::SeqCst);
                        Ok(token.to_string())
                    }
                },
            ))
            .build()
            .expect("client")
    };

    let calls = Arc::new(AtomicU32::new(0));
    let client = client_with("fresh", calls.clone());
    let t = client.get(&task("factpulse", "t")).await.expect("retried with the fresh token");
    assert_eq!(t.phase(), Phase::Running);
    client.get(&task("factpulse", "t")).await.expect("the fresh token is kept");
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    let calls = Arc::new(AtomicU32::new(0));
    let client = client_with("still-bad", calls.clone());
    let err = client.get(&task("factpulse", "t")).await.unwrap_err();
    assert!(err.is_auth(), "{err:?}");
    assert_eq!(calls.load(Ordering::SeqCst), 1, "one refresh per read, not a loop");
    assert!(!format!("{client:?}").contains("still-bad"));

    // A refresher for a scheme the provider does not have is a configuration error.
    let err = Client::builder()
        .provider(ProviderConfig::new("deepomatic").api_key("k").refresh_bearer(|| async { Ok(String::new()) }))
        .build()
        .unwrap_err();
    assert!(err.is_config(), "{err:?}");
}

/// Clients, errors and futures can cross threads (`tokio::spawn`).
#[test]
fn public_types_and_futures_are_send() {
    fn send_sync<T: Send + Sync + 'static>() {}
    fn send<T: Send>(_: &T) {}
    send_sync::<Client>();
    send_sync::<Error>();
    send_sync::<taskpoll::Task>();
    send_sync::<TaskRef>();
    send_sync::<taskpoll::WaitOptions>();
    send_sync::<taskpoll::WaitState>();
    send_sync::<taskpoll::Policy>();
    let client = Client::builder().provider(ProviderConfig::new("deepomatic").api_key("k")).build().expect("client");
    let t = task("deepomatic", "1");
    send(&client.get(&t));
    send(&client.get_many("deepomatic", &["1"]));
    send(&client.wait(&t, taskpoll::WaitOptions::new(Duration::from_secs(1))));
    send(&client.wait(&t, taskpoll::WaitOptions::new(Duration::from_secs(1))));
}

#[test]
fn a_task_round_trips_through_json_with_its_result() -> Result<(), Box<dyn std::error::Error>> {
    let task_ref = taskpoll::TaskRef::new("deepomatic", "42")?;
    let body = br#"{"id": 42, "status": "success", "data": {"outputs": [{"labels": {"predicted": []}}]}}"#;
    let task = taskpoll::Task::decode(&task_ref, 200, body)?;
    // The result is the body's `data`, read in place.
    assert_eq!(task.result(), task.body().pointer("/data"));
    let line = serde_json::to_value(&task)?;
    assert_eq!(line["result"], serde_json::json!({"outputs": [{"labels": {"predicted": []}}]}));
    assert_eq!((line["provider"].as_str(), line["id"].as_str()), (Some("deepomatic"), Some("42")));
    let back: taskpoll::Task = serde_json::from_value(line.clone())?;
    assert_eq!(back, task);
    assert_eq!(back.result(), task.result());
    assert_eq!(serde_json::to_value(&back)?, line);
    // A null result is none, whichever way the task was made.
    let pending = taskpoll::Task::decode(&task_ref, 200, br#"{"id": 42, "status": "pending", "data": null}"#)?;
    assert_eq!(pending.result(), None);
    assert_eq!(serde_json::from_value::<taskpoll::Task>(serde_json::to_value(&pending)?)?.result(), None);
    Ok(())
}
