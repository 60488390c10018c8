//! A provider's generated client (`taskpoll::generated::<provider>::client`)
//! shares the unified client's settings: its errors convert into
//! `taskpoll::Error` with `?`, and the request timeout and user agent apply.

use std::time::Duration;

use serde_json::json;
use taskpoll::{Client, Error, ProviderConfig};
use wiremock::{MockServer, ResponseTemplate};

use crate::support::answering;

fn deepomatic(server: &MockServer, timeout: Duration) -> Client {
    Client::builder()
        .provider(ProviderConfig::new("deepomatic").api_key("k").base_url(format!("{}/v0.7", server.uri())))
        .request_timeout(timeout)
        .user_agent("generated-test/1")
        .build()
        .expect("client")
}

/// What a caller writes: a generated call inside a function returning `taskpoll::Result`.
async fn read_task(client: &Client, id: &str) -> taskpoll::Result<String> {
    let typed = taskpoll::generated::deepomatic::client(client)?;
    let task = typed.get_task().task_id(id).send().await?;
    Ok(task.into_inner().status.to_string())
}

#[tokio::test]
async fn a_generated_call_error_converts_with_the_question_mark() {
    let server = answering(ResponseTemplate::new(404).set_body_json(json!({"error": "no such task"}))).await;
    let err = read_task(&deepomatic(&server, Duration::from_secs(10)), "1").await.unwrap_err();
    assert!(matches!(&err, Error::GeneratedCall(e) if e.status() == Some(404) && e.kind().is_none()), "{err:?}");
    assert!(err.is_not_found() && !err.is_retryable(), "{err:?}");
    assert_eq!(err.to_string(), "generated client: HTTP 404");

    let server = answering(ResponseTemplate::new(503).set_body_string("<html>busy</html>")).await;
    let err = read_task(&deepomatic(&server, Duration::from_secs(10)), "1").await.unwrap_err();
    assert_eq!(err.status(), Some(503), "{err:?}");
    assert!(err.is_retryable(), "{err:?}");

    let server = answering(ResponseTemplate::new(200).set_body_json(json!({"id": "1", "status": "success"}))).await;
    assert_eq!(read_task(&deepomatic(&server, Duration::from_secs(10)), "1").await.expect("read"), "success");
}

#[tokio::test]
async fn missing_credentials_on_a_generated_call_convert_and_send_nothing() {
    let server = answering(ResponseTemplate::new(200)).await;
    let client = Client::builder()
        .provider(ProviderConfig::new("deepomatic").base_url(format!("{}/v0.7", server.uri())))
        .build()
        .expect("client");
    let err = read_task(&client, "1").await.unwrap_err();
    assert!(matches!(&err, Error::GeneratedCall(e) if e.status().is_none() && e.message().contains("no credentials")));
    assert!(server.received_requests().await.expect("recorded").is_empty());
}

#[tokio::test]
async fn the_request_timeout_and_user_agent_apply_to_generated_clients() {
    // The answer comes long after the 200 ms request timeout: without it the call would succeed.
    let server = answering(
        ResponseTemplate::new(200)
            .set_body_json(json!({"id": "1", "status": "success"}))
            .set_delay(Duration::from_secs(30)),
    )
    .await;
    let err = read_task(&deepomatic(&server, Duration::from_millis(200)), "1").await.unwrap_err();
    assert!(err.is_timeout() && err.is_transport() && err.is_retryable(), "{err:?}");
    assert!(err.to_string().contains("timed out"), "{err}");
    let requests = server.received_requests().await.expect("recorded");
    let agent = requests[0].headers.get("user-agent").and_then(|v| v.to_str().ok());
    assert_eq!(agent, Some("generated-test/1"));
}
