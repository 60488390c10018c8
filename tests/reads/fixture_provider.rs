//! A fifth, made-up provider (`tests/specs/acme.yaml`, feature `fixture-provider`)
//! shows that a spec following the `x-taskpoll` extension is enough: no Rust
//! was written for it, yet get, get_many and the env configuration work.
#![cfg(feature = "fixture-provider")]

use serde_json::json;
use taskpoll::{Client, Error, Phase, ProviderConfig, TaskRef};
use wiremock::matchers::{header, method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn acme(server: &MockServer) -> Client {
    Client::builder()
        .provider(ProviderConfig::new("acme").api_key("acme-secret").base_url(server.uri()))
        .build()
        .expect("client")
}

#[test]
fn the_spec_alone_declares_the_provider() {
    let spec = taskpoll::spec::provider("acme").expect("generated from tests/specs/acme.yaml");
    assert_eq!(spec.title(), "Acme Jobs");
    assert_eq!(spec.get().id_location(), "query");
    assert_eq!(spec.many().map(|m| m.max_ids()), Some(2));
    assert!(spec.preset("acme_fast").is_some());
    for example in spec.examples().iter().filter(|e| !e.schema().is_empty()) {
        assert!(matches!(spec.parse_as_schema(example.schema(), example.json()), Some(Ok(()))), "{}", example.name());
    }
}

/// The spec names a header in which the provider suggests the next poll's
/// delay: a read carries it, and a wait follows it within the policy's delays.
#[tokio::test]
async fn the_next_poll_header_of_the_spec_paces_the_wait() {
    let server = MockServer::start().await;
    let pending = json!({"job": {"id": "j-7", "state": "working"}});
    Mock::given(method("GET"))
        .and(path("/jobs"))
        .respond_with(ResponseTemplate::new(200).set_body_json(pending).insert_header("acme-poll-after-ms", "300"))
        .up_to_n_times(2)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/jobs"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"job": {"id": "j-7", "state": "done"}})))
        .mount(&server)
        .await;
    let client = acme(&server);
    let task_ref = TaskRef::new("acme", "j-7").expect("ref");
    let read = client.get(&task_ref).await.expect("task");
    assert_eq!(read.next_poll(), Some(std::time::Duration::from_millis(300)));
    let mut wait = client.wait(&task_ref, taskpoll::WaitOptions::new(std::time::Duration::from_secs(5)));
    let mut delays = Vec::new();
    while let Some(event) = futures_util::StreamExt::next(&mut wait).await {
        let event = event.expect("event");
        delays.extend(event.next_delay);
    }
    // The polite policy's delays are 100 ms, 200 ms, 400 ms; the provider asks for 300 ms.
    assert_eq!(delays, [std::time::Duration::from_millis(300)]);
}

#[tokio::test]
async fn get_sends_the_id_and_inputs_as_query_parameters() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/jobs"))
        .and(query_param("jobId", "j 1/2"))
        .and(query_param("tenant", "t-9"))
        .and(header("x-acme-token", "acme-secret"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"job": {"id": "j 1/2", "state": "working"}})))
        .mount(&server)
        .await;
    let task_ref = TaskRef::new("acme", "j 1/2").expect("ref").with_input("tenant", "t-9").expect("declared input");
    let task = acme(&server).get(&task_ref).await.expect("task");
    assert_eq!((task.phase(), task.status()), (Phase::Running, Some("working")));
    assert_eq!(task.task_ref().to_string(), "acme:j%201/2?tenant=t-9");
}

#[tokio::test]
async fn rules_statuses_and_task_bodies_come_from_the_spec() {
    let cases = [
        (200, json!({"job": {"id": "x", "state": "DONE", "output": {"valid": true}}}), Phase::Succeeded, None),
        (
            200,
            json!({"job": {"state": "DONE", "output": {"valid": false, "reason": "checksum mismatch"}}}),
            Phase::Failed,
            Some("checksum mismatch"),
        ),
        (200, json!({"job": {"state": "BROKEN", "problem": {"text": "disk full"}}}), Phase::Failed, Some("disk full")),
        (409, json!({"job": {"state": "BROKEN", "problem": {"text": "conflict"}}}), Phase::Failed, Some("conflict")),
        (200, json!({"job": {"state": "STOPPED"}}), Phase::Cancelled, None),
        (200, json!({"job": {"state": "PAUSED"}}), Phase::Unknown, None),
    ];
    for (status, body, phase, error) in cases {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .respond_with(ResponseTemplate::new(status).set_body_json(body.clone()))
            .mount(&server)
            .await;
        let task = acme(&server).get(&TaskRef::new("acme", "x").expect("ref")).await.expect("a task");
        assert_eq!((task.phase(), task.error(), task.http_status()), (phase, error, status), "{body}");
    }
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(409).set_body_json(json!({"message": "no"})))
        .mount(&server)
        .await;
    let err = acme(&server).get(&TaskRef::new("acme", "x").expect("ref")).await.unwrap_err();
    assert!(matches!(&err, Error::Api(e) if e.status() == 409), "a 409 without a task body is an API error: {err:?}");
}

#[tokio::test]
async fn get_many_chunks_ids_and_follows_a_string_cursor() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/jobs/batch"))
        .and(query_param("cursor", "c2"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"jobs": [{"job": {"id": "b", "state": "BROKEN"}}]})),
        )
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/jobs/batch"))
        .and(query_param("jobIds", "c"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"jobs": [{"job": {"id": "c", "state": "WAITING"}}]})),
        )
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/jobs/batch"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "jobs": [{"job": {"id": "a", "state": "DONE"}}],
            "links": {"next": "https://acme.invalid/eu/api/jobs/batch?jobIds=a&jobIds=b&cursor=c2"}
        })))
        .mount(&server)
        .await;
    let results = acme(&server).get_many("acme", &["a", "b", "c"]).await.expect("batch");
    let phases: Vec<Phase> = results.iter().map(|r| r.as_ref().map(|t| t.phase()).expect("found")).collect();
    assert_eq!(phases, [Phase::Succeeded, Phase::Failed, Phase::Queued]);
    let queries: Vec<String> = server
        .received_requests()
        .await
        .expect("recorded")
        .iter()
        .map(|r| r.url.query().unwrap_or_default().to_string())
        .collect();
    assert_eq!(queries, ["jobIds=a&jobIds=b", "cursor=c2&jobIds=a&jobIds=b", "jobIds=c"]);
}

#[test]
fn from_env_uses_the_variables_the_spec_names() {
    let vars = [("ACME_TOKEN", "t"), ("ACME_REGION", "us")];
    let client = Client::builder()
        .providers_from_env_with(|name| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string()))
        .expect("env")
        .build()
        .expect("client");
    assert_eq!(client.base_url("acme"), Some("https://jobs.acme.invalid/us/api"));
}
