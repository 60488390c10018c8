//! Webhooks raced against polling (issue 13): signature vectors computed
//! outside this crate, every kind of forged or stale delivery refused, the
//! receiver's answers, the bounded store of unclaimed deliveries, and waits
//! that end by webhook or by polling (against the simulator).
#![cfg(all(feature = "simulator", feature = "webhook"))]

#[path = "support/mod.rs"]
mod support;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use futures_util::StreamExt as _;
use http::{HeaderMap, HeaderName, HeaderValue};
use secrecy::SecretString;
use serde_json::json;
use taskpoll::clock::ManualClock;
use taskpoll::simulator::{Callback, Lifecycle, Simulator};
use taskpoll::webhook::{ReceiverLimits, WebhookRefusal};
use taskpoll::{Client, Phase, Policy, ProviderConfig, Via, WaitOptions};

use support::TestResult;

// ------------------------------------------------------------- vectors
//
// Computed with Python's standard library (and checked with openssl), not
// with this crate:
//
//   python3 -c 'import hashlib,hmac
//   body=b"{\"task_id\":\"053f4bde\",\"http_status\":200,\"data\":{\"analysis\":{\"tags\":[\"cat\"]}}}"
//   ts=b"1764640000"; sec=b"sim-cloudinary-basicAuth-secret"
//   print(hashlib.sha1(body+ts+sec).hexdigest()); print(hashlib.sha256(body+ts+sec).hexdigest())
//   fb=b"{\"taskId\":\"0b9d8f2e-3c1a-4c51-9a57-2f1f7d1c9e10\",\"status\":\"SUCCESS\",\"result\":{\"status\":\"SUCCESS\",\"filename\":\"invoice.pdf\"}}"
//   print(hmac.new(b"whsec-factpulse-test",fb,hashlib.sha256).hexdigest())'
//
//   printf '%s' "$body$ts$sec" | openssl dgst -sha1   # the same SHA-1
//
// Cloudinary: hex SHA-1 or SHA-256 of body + X-Cld-Timestamp + API secret
// (https://cloudinary.com/documentation/notification_signatures).

const CLD_BODY: &str = r#"{"task_id":"053f4bde","http_status":200,"data":{"analysis":{"tags":["cat"]}}}"#;
const CLD_TIMESTAMP: u64 = 1_764_640_000;
const CLD_SECRET: &str = "sim-cloudinary-basicAuth-secret";
const CLD_SHA1: &str = "0465c0df20c4cd6589d71b9a260f9e5356c2cc34";
const CLD_SHA256: &str = "ca8d94fa245ed2fb1d4f6f6b389e907d70d6afaa097873e8ac665b8947c9d690";

const FP_BODY: &str = r#"{"taskId":"0b9d8f2e-3c1a-4c51-9a57-2f1f7d1c9e10","status":"SUCCESS","result":{"status":"SUCCESS","filename":"invoice.pdf"}}"#;
const FP_SECRET: &str = "whsec-factpulse-test";
const FP_HMAC: &str = "e65a12e263bef34d3d47b7fd3f9142567068df99f605e713e0129a62c3bf1dce";

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.insert(
            HeaderName::from_bytes(name.as_bytes()).expect("name"),
            HeaderValue::from_str(value).expect("value"),
        );
    }
    map
}

fn at_unix(seconds: u64) -> Arc<ManualClock> {
    Arc::new(ManualClock::starting_at(UNIX_EPOCH + Duration::from_secs(seconds)))
}

/// A client for Cloudinary (API secret `CLD_SECRET`) and FactPulse (webhook
/// secret `FP_SECRET`), on a virtual clock at `CLD_TIMESTAMP`.
fn vector_client(clock: Arc<ManualClock>) -> Client {
    Client::builder()
        .clock(clock)
        .provider(ProviderConfig::new("cloudinary").basic("key", CLD_SECRET).server_variable("cloud_name", "demo"))
        .provider(ProviderConfig::new("factpulse").api_key("k").webhook_secret(SecretString::from(FP_SECRET)))
        .provider(ProviderConfig::new("deepomatic").api_key("k"))
        .build()
        .expect("client")
}

fn cloudinary_headers(signature: &str, timestamp: u64) -> HeaderMap {
    headers(&[("X-Cld-Signature", signature), ("X-Cld-Timestamp", &timestamp.to_string())])
}

#[test]
fn cloudinary_vectors_verify_with_sha1_and_sha256() {
    let client = vector_client(at_unix(CLD_TIMESTAMP + 60));
    for signature in [CLD_SHA1, CLD_SHA256, &CLD_SHA256.to_uppercase()] {
        let task = client
            .verify_webhook("cloudinary", &cloudinary_headers(signature, CLD_TIMESTAMP), CLD_BODY.as_bytes())
            .expect("a valid signature");
        assert_eq!(task.task_ref().to_string(), "cloudinary:053f4bde");
        assert_eq!(task.phase(), Phase::Succeeded);
        assert_eq!(task.via(), Via::Webhook);
        assert_eq!(task.result(), Some(&json!({"analysis": {"tags": ["cat"]}})));
    }
}

#[test]
fn factpulse_vector_verifies_with_its_prefix() {
    let client = vector_client(at_unix(CLD_TIMESTAMP));
    let signed = headers(&[("X-Webhook-Signature", &format!("sha256={FP_HMAC}"))]);
    let task = client.verify_webhook("factpulse", &signed, FP_BODY.as_bytes()).expect("a valid signature");
    assert_eq!(task.id(), "0b9d8f2e-3c1a-4c51-9a57-2f1f7d1c9e10");
    assert_eq!((task.phase(), task.status()), (Phase::Succeeded, Some("SUCCESS")));
    assert_eq!(task.result(), Some(&json!({"status": "SUCCESS", "filename": "invoice.pdf"})));
    // Without the prefix the same digest is not the declared form.
    let bare = headers(&[("X-Webhook-Signature", FP_HMAC)]);
    let error = client.verify_webhook("factpulse", &bare, FP_BODY.as_bytes()).expect_err("no prefix");
    assert_eq!(error.webhook_refusal(), Some(WebhookRefusal::BadSignature));
}

#[test]
fn a_business_error_delivery_is_a_failure_by_the_specs_rules() {
    // Signed here with the crate's own scheme: the point is the mapping, the vectors above pin the signing.
    let sim_secret = "whsec-factpulse-test";
    let body = r#"{"taskId":"t1","status":"SUCCESS","result":{"status":"ERROR","errorMessage":"Schematron failed"}}"#;
    let digest = hmac_sha256_hex(sim_secret.as_bytes(), body.as_bytes());
    let client = vector_client(at_unix(CLD_TIMESTAMP));
    let task = client
        .verify_webhook("factpulse", &headers(&[("X-Webhook-Signature", &format!("sha256={digest}"))]), body.as_bytes())
        .expect("valid");
    assert_eq!((task.phase(), task.error()), (Phase::Failed, Some("Schematron failed")));
}

/// HMAC-SHA256 per RFC 2104, written out here (on sha2 only) so the test does
/// not lean on the crate's own HMAC code.
fn hmac_sha256_hex(key: &[u8], message: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    let mut block = [0u8; 64];
    block[..key.len()].copy_from_slice(key);
    let pad = |byte: u8| block.iter().map(|k| k ^ byte).collect::<Vec<u8>>();
    let inner = Sha256::new().chain_update(pad(0x36)).chain_update(message).finalize();
    let outer = Sha256::new().chain_update(pad(0x5c)).chain_update(inner).finalize();
    outer.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn the_written_out_hmac_matches_the_python_vector() {
    assert_eq!(hmac_sha256_hex(FP_SECRET.as_bytes(), FP_BODY.as_bytes()), FP_HMAC);
}

// ------------------------------------------------------------- refusals

#[test]
fn forged_tampered_stale_and_malformed_deliveries_are_refused() {
    let clock = at_unix(CLD_TIMESTAMP);
    let client = vector_client(clock.clone());
    let good = cloudinary_headers(CLD_SHA1, CLD_TIMESTAMP);
    let refusal = |headers: &HeaderMap, body: &[u8]| {
        let error = client.verify_webhook("cloudinary", headers, body).expect_err("refused");
        assert!(error.is_webhook_refused(), "{error}");
        let text = format!("{error} {error:?}");
        assert!(!text.contains(CLD_SECRET) && !text.contains(CLD_SHA1), "{text}");
        error.webhook_refusal().expect("a refusal")
    };
    // A byte of the body changed.
    let tampered = CLD_BODY.replace("cat", "dog");
    assert_eq!(refusal(&good, tampered.as_bytes()), WebhookRefusal::BadSignature);
    // The timestamp changed (it is signed).
    let moved = cloudinary_headers(CLD_SHA1, CLD_TIMESTAMP + 1);
    assert_eq!(refusal(&moved, CLD_BODY.as_bytes()), WebhookRefusal::BadSignature);
    // Signed with another secret.
    let other = cloudinary_headers("da39a3ee5e6b4b0d3255bfef95601890afd80709", CLD_TIMESTAMP);
    assert_eq!(refusal(&other, CLD_BODY.as_bytes()), WebhookRefusal::BadSignature);
    // Not hex, and a truncated digest.
    assert_eq!(refusal(&cloudinary_headers("zz", CLD_TIMESTAMP), CLD_BODY.as_bytes()), WebhookRefusal::BadSignature);
    assert_eq!(
        refusal(&cloudinary_headers(&CLD_SHA1[..38], CLD_TIMESTAMP), CLD_BODY.as_bytes()),
        WebhookRefusal::BadSignature
    );
    // Missing headers.
    let no_signature = headers(&[("X-Cld-Timestamp", &CLD_TIMESTAMP.to_string())]);
    assert_eq!(refusal(&no_signature, CLD_BODY.as_bytes()), WebhookRefusal::MissingHeader("X-Cld-Signature"));
    let no_timestamp = headers(&[("X-Cld-Signature", CLD_SHA1)]);
    assert_eq!(refusal(&no_timestamp, CLD_BODY.as_bytes()), WebhookRefusal::MissingHeader("X-Cld-Timestamp"));
    let bad_timestamp = headers(&[("X-Cld-Signature", CLD_SHA1), ("X-Cld-Timestamp", "yesterday")]);
    assert_eq!(refusal(&bad_timestamp, CLD_BODY.as_bytes()), WebhookRefusal::BadTimestamp);
    // Oversized (the spec's default cap, 1 MiB).
    let huge = vec![b' '; (1 << 20) + 1];
    assert!(matches!(refusal(&good, &huge), WebhookRefusal::BodyTooLarge { limit: 1_048_576 }));

    // Replay: the same valid delivery two hours and a second later (virtual time).
    client.verify_webhook("cloudinary", &good, CLD_BODY.as_bytes()).expect("fresh");
    clock.advance(Duration::from_secs(2 * 3600));
    client.verify_webhook("cloudinary", &good, CLD_BODY.as_bytes()).expect("at the edge of the tolerance");
    clock.advance(Duration::from_secs(1));
    assert_eq!(refusal(&good, CLD_BODY.as_bytes()), WebhookRefusal::StaleTimestamp);

    // From the future: more than the tolerance ahead of the clock.
    let early = vector_client(at_unix(CLD_TIMESTAMP - 2 * 3600 - 1));
    let error = early.verify_webhook("cloudinary", &good, CLD_BODY.as_bytes()).expect_err("future");
    assert_eq!(error.webhook_refusal(), Some(WebhookRefusal::FutureTimestamp));
}

#[test]
fn a_signed_body_that_is_not_a_task_is_refused() {
    let client = vector_client(at_unix(CLD_TIMESTAMP));
    for (body, reason) in [
        ("not json", WebhookRefusal::NotJson),
        ("[1,2]", WebhookRefusal::NotJson),
        (r#"{"status":"SUCCESS"}"#, WebhookRefusal::NoTaskId),
        (r#"{"taskId":"a/b","status":"SUCCESS"}"#, WebhookRefusal::NoTaskId),
    ] {
        let digest = hmac_sha256_hex(FP_SECRET.as_bytes(), body.as_bytes());
        let signed = headers(&[("X-Webhook-Signature", &format!("sha256={digest}"))]);
        let error = client.verify_webhook("factpulse", &signed, body.as_bytes()).expect_err(body);
        assert_eq!(error.webhook_refusal(), Some(reason), "{body}");
    }
}

#[test]
fn no_scheme_no_secret_or_no_provider_is_a_typed_error() {
    let client = vector_client(at_unix(CLD_TIMESTAMP));
    let empty = HeaderMap::new();
    let error = client.verify_webhook("deepomatic", &empty, b"{}").expect_err("no scheme");
    assert_eq!(error.webhook_refusal(), Some(WebhookRefusal::NotDeclared));
    let error = client.verify_webhook("qolaba", &empty, b"{}").expect_err("not configured");
    assert!(!error.is_webhook_refused() && error.is_config(), "{error}");
    let error = client.verify_webhook("nope", &empty, b"{}").expect_err("unknown");
    assert!(error.is_config(), "{error}");
    // FactPulse's webhook secret is separate from its API key: without it, nothing verifies.
    let no_secret = Client::builder().provider(ProviderConfig::new("factpulse").api_key("k")).build().expect("client");
    let signed = headers(&[("X-Webhook-Signature", &format!("sha256={FP_HMAC}"))]);
    let error = no_secret.verify_webhook("factpulse", &signed, FP_BODY.as_bytes()).expect_err("no secret");
    assert_eq!(error.webhook_refusal(), Some(WebhookRefusal::NoSecret));
}

#[test]
fn the_webhook_secret_comes_from_the_variable_the_spec_declares() {
    let env = |name: &str| match name {
        "FACTPULSE_API_KEY" => Some("k".to_string()),
        "FACTPULSE_WEBHOOK_SECRET" => Some(FP_SECRET.to_string()),
        _ => None,
    };
    let client = Client::builder().providers_from_env_with(env).expect("env").build().expect("client");
    let signed = headers(&[("X-Webhook-Signature", &format!("sha256={FP_HMAC}"))]);
    client.verify_webhook("factpulse", &signed, FP_BODY.as_bytes()).expect("verified with the env secret");
    // The secret never shows in Debug.
    let config = ProviderConfig::new("factpulse").webhook_secret(SecretString::from(FP_SECRET));
    assert!(!format!("{config:?}").contains(FP_SECRET));
}

// ------------------------------------------------------------- the hub

/// A signed FactPulse delivery for `id` with this status.
fn factpulse_delivery(id: &str, status: &str) -> (HeaderMap, Vec<u8>) {
    let body = json!({"taskId": id, "status": status, "result": null}).to_string();
    let digest = hmac_sha256_hex(FP_SECRET.as_bytes(), body.as_bytes());
    (headers(&[("X-Webhook-Signature", &format!("sha256={digest}"))]), body.into_bytes())
}

#[test]
fn a_flood_of_unknown_ids_stays_within_the_capacity() {
    let client = Client::builder()
        .webhook_capacity(100)
        .provider(ProviderConfig::new("factpulse").api_key("k").webhook_secret(SecretString::from(FP_SECRET)))
        .build()
        .expect("client");
    let hub = client.webhooks();
    for n in 0..1000 {
        let (headers, body) = factpulse_delivery(&format!("flood-{n}"), "SUCCESS");
        client.accept_webhook("factpulse", &headers, &body).expect("valid");
        assert!(hub.unclaimed() <= 100);
    }
    assert_eq!((hub.unclaimed(), hub.capacity(), hub.evicted()), (100, 100, 900));
    // The same id again replaces its entry instead of growing the store.
    let (headers, body) = factpulse_delivery("flood-999", "SUCCESS");
    client.accept_webhook("factpulse", &headers, &body).expect("valid");
    assert_eq!(hub.unclaimed(), 100);
    // A finished task's delivery is not replaced by a late in-progress one.
    let (headers, body) = factpulse_delivery("flood-999", "STARTED");
    assert_eq!(client.accept_webhook("factpulse", &headers, &body).map(|t| t.phase()).ok(), Some(Phase::Running));
    assert_eq!(hub.unclaimed(), 100);
}

// ------------------------------------------------------------- waits

fn fast_policy() -> Policy {
    Policy::builder()
        .initial_delay(Duration::from_millis(20))
        .factor(1.0)
        .max_delay(Duration::from_millis(20))
        .build()
        .expect("policy")
}

fn options(deadline: Duration) -> WaitOptions {
    WaitOptions::new(deadline).policy(fast_policy())
}

/// The simulator's record of its deliveries, once it has one (it records a
/// delivery after the receiver answered, which may be after the wait ended).
async fn recorded_deliveries(
    sim: &Simulator,
) -> Result<Vec<taskpoll::simulator::WebhookDelivery>, tokio::time::error::Elapsed> {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let deliveries = sim.webhook_deliveries();
            if !deliveries.is_empty() {
                return deliveries;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
}

#[tokio::test]
async fn a_webhook_that_arrives_before_the_first_poll_ends_the_wait_without_a_poll() -> TestResult {
    let sim = Simulator::start().await?;
    let client = sim.client()?;
    let task = sim.add_task("factpulse", Lifecycle::new().running_forever())?;
    let secret = "sim-factpulse-webhook-secret";
    let body = json!({"taskId": task.id(), "status": "SUCCESS", "result": {"status": "SUCCESS", "filename": "x.pdf"}})
        .to_string();
    let digest = hmac_sha256_hex(secret.as_bytes(), body.as_bytes());
    let delivered = client.accept_webhook(
        "factpulse",
        &headers(&[("X-Webhook-Signature", &format!("sha256={digest}"))]),
        body.as_bytes(),
    )?;
    assert_eq!(delivered.phase(), Phase::Succeeded);
    assert_eq!(client.webhooks().unclaimed(), 1);
    let done = client.wait(&task, options(Duration::from_secs(30))).await?;
    assert_eq!(done.via(), Via::Webhook);
    assert_eq!(done.result(), Some(&json!({"status": "SUCCESS", "filename": "x.pdf"})));
    assert_eq!(sim.reads(&task), 0, "the stored delivery ended the wait before any poll");
    assert_eq!(client.webhooks().unclaimed(), 0, "claimed");
    sim.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_failed_delivery_ends_the_wait_as_a_task_failure_with_its_message() -> TestResult {
    let sim = Simulator::start().await?;
    let client = sim.client()?;
    let server = taskpoll::webhook::serve(client.clone(), SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await?;
    let task = sim.add_task_with_callback(
        "cloudinary",
        Lifecycle::new().then_fail("model crashed"),
        Callback::to(server.url("cloudinary")),
    )?;
    // The delivery is received (and kept) before the wait starts.
    let deliveries = recorded_deliveries(&sim).await?;
    assert_eq!((deliveries[0].phase, deliveries[0].status), (Phase::Failed, Some(204)));
    let error = client.wait(&task, options(Duration::from_secs(30))).await.expect_err("failed");
    assert!(error.is_task_failure(), "{error}");
    let failed = error.task().expect("the final task");
    // The status endpoint has no failure detail; the webhook's `error.message` does.
    assert_eq!((failed.via(), failed.error()), (Via::Webhook, Some("model crashed")));
    assert_eq!(sim.reads(&task), 0);
    server.shutdown().await;
    sim.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_cloudinary_wait_returns_the_analysis_result_from_a_verified_webhook() -> TestResult {
    let sim = Simulator::start().await?;
    let client = sim.client()?;
    let server = taskpoll::webhook::serve(client.clone(), SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await?;
    // Whichever comes first: the webhook while the wait sleeps, or a poll that
    // sees `completed` (then the wait waits out the grace for the webhook).
    let task = sim.add_task_with_callback(
        "cloudinary",
        Lifecycle::new().queued_for_polls(1).then_succeed(),
        Callback::to(server.url("cloudinary")).delay(Duration::from_millis(100)),
    )?;
    let done = client.wait(&task, options(Duration::from_secs(30))).await?;
    assert_eq!(done.via(), Via::Webhook);
    assert_eq!(done.result(), Some(&json!({"simulated_result": {"task_id": task.id()}})));
    let deliveries = recorded_deliveries(&sim).await?;
    assert_eq!(deliveries.len(), 1);
    assert_eq!((deliveries[0].sent, deliveries[0].status), (true, Some(204)));
    server.shutdown().await;
    sim.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_polled_success_waits_for_the_webhook_result_only_while_listening() -> TestResult {
    let sim = Simulator::start().await?;
    let client = sim.client()?;
    // Not listening: a polled `completed` ends the wait at once, without a result.
    let quiet = sim.add_task("cloudinary", Lifecycle::new())?;
    let done = client.wait(&quiet, options(Duration::from_secs(30))).await?;
    assert_eq!((done.via(), done.result()), (Via::Poll, None));

    // Listening: the first poll sees `completed`; the result comes by webhook later.
    let server = taskpoll::webhook::serve(client.clone(), SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await?;
    let task = sim.add_task_with_callback(
        "cloudinary",
        Lifecycle::new(),
        Callback::to(server.url("cloudinary")).delay(Duration::from_millis(300)),
    )?;
    let done = client.wait(&task, options(Duration::from_secs(30))).await?;
    assert_eq!(done.via(), Via::Webhook);
    assert!(done.result().is_some());
    assert!(sim.reads(&task) >= 1, "a poll saw the success first");
    server.shutdown().await;
    sim.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_lost_webhook_is_recovered_by_polling() -> TestResult {
    let sim = Simulator::start().await?;
    let client = sim.client()?;
    let server = taskpoll::webhook::serve(client.clone(), SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await?;
    let task = sim.add_task_with_callback(
        "factpulse",
        Lifecycle::new().running_for_polls(2).then_succeed(),
        Callback::to(server.url("factpulse")).drop_rate(1.0),
    )?;
    let done = client.wait(&task, options(Duration::from_secs(30))).await?;
    assert_eq!((done.phase(), done.via()), (Phase::Succeeded, Via::Poll));
    assert!(done.result().is_some(), "FactPulse's status endpoint carries the result");
    // The simulator dropped the delivery on purpose.
    let deliveries = recorded_deliveries(&sim).await?;
    assert_eq!((deliveries.len(), deliveries[0].sent), (1, false));
    server.shutdown().await;
    sim.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn the_receiver_refuses_forged_malformed_and_oversized_deliveries() -> TestResult {
    let sim = Simulator::start().await?;
    let client = sim.client()?;
    let server = taskpoll::webhook::serve(client.clone(), SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await?;
    let http = reqwest::Client::new();
    let post = |provider: &str, headers: Vec<(&'static str, String)>, body: Vec<u8>| {
        let mut request = http.post(server.url(provider)).body(body);
        for (name, value) in headers {
            request = request.header(name, value);
        }
        request.send()
    };
    let secret = "sim-factpulse-webhook-secret";
    let body = br#"{"taskId":"r1","status":"SUCCESS","result":null}"#.to_vec();
    let good = format!("sha256={}", hmac_sha256_hex(secret.as_bytes(), &body));
    let forged = format!("sha256={}", hmac_sha256_hex(b"guess", &body));
    let not_json = b"<html>".to_vec();
    let not_json_signed = format!("sha256={}", hmac_sha256_hex(secret.as_bytes(), &not_json));
    type Case = (&'static str, Vec<(&'static str, String)>, Vec<u8>, u16);
    let cases: Vec<Case> = vec![
        ("factpulse", vec![("x-webhook-signature", forged)], body.clone(), 401),
        ("factpulse", vec![], body.clone(), 401),
        ("factpulse", vec![("x-webhook-signature", not_json_signed)], not_json, 400),
        ("factpulse", vec![("x-webhook-signature", good.clone())], vec![b' '; (1 << 20) + 1], 413),
        ("deepomatic", vec![("x-webhook-signature", good.clone())], body.clone(), 404),
        ("nope", vec![], body.clone(), 404),
    ];
    for (provider, headers, body, expected) in cases {
        let status = post(provider, headers, body).await?.status().as_u16();
        assert_eq!(status, expected, "{provider}");
    }
    assert_eq!(client.webhooks().unclaimed(), 0, "nothing refused was handed over");
    let status = post("factpulse", vec![("x-webhook-signature", good)], body).await?.status().as_u16();
    assert_eq!(status, 204);
    assert_eq!(client.webhooks().unclaimed(), 1);
    server.shutdown().await;
    sim.shutdown().await;
    Ok(())
}

#[tokio::test]
#[allow(clippy::disallowed_methods)] // real time: the limit is on a real socket
async fn the_receiver_closes_a_connection_when_its_time_is_up() -> TestResult {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let client = Client::builder().provider(ProviderConfig::new("factpulse").api_key("k")).build()?;
    let limit = Duration::from_millis(200);
    let limits = ReceiverLimits::default().connection_time(limit);
    let server = taskpoll::webhook::serve_with(client, SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), limits).await?;
    // A sender that starts its headers and never finishes them.
    let mut slow = tokio::net::TcpStream::connect(server.addr()).await?;
    let started = std::time::Instant::now();
    slow.write_all(b"POST /factpulse HTTP/1.1\r\nHost: receiver\r\n").await?;
    let mut rest = Vec::new();
    // Closed by the receiver (end of stream, or a reset), long before the test gives up.
    let closed = tokio::time::timeout(Duration::from_secs(10), slow.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "the half-sent request was still open after 10 s");
    assert!(started.elapsed() >= limit, "closed after {:?}, before its limit", started.elapsed());
    server.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn at_its_connection_cap_the_receiver_takes_a_new_sender_only_when_one_leaves() -> TestResult {
    let client = Client::builder().provider(ProviderConfig::new("factpulse").api_key("k")).build()?;
    let limits = ReceiverLimits::default().max_connections(1);
    let server = taskpoll::webhook::serve_with(client, SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), limits).await?;
    let post = |timeout| reqwest::Client::new().post(server.url("nowhere")).body("{}").timeout(timeout).send();
    // Served while the slot is free: 404, an unknown provider.
    assert_eq!(post(Duration::from_secs(10)).await?.status(), 404);
    // An idle sender takes the only slot: the next one is not even accepted.
    let idle = tokio::net::TcpStream::connect(server.addr()).await?;
    let refused = post(Duration::from_millis(300)).await.expect_err("no slot, no answer");
    assert!(refused.is_timeout(), "{refused}");
    // Once it leaves, the slot is free again.
    drop(idle);
    assert_eq!(post(Duration::from_secs(10)).await?.status(), 404);
    server.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn out_of_range_receiver_limits_are_clamped() -> TestResult {
    let client = Client::builder().provider(ProviderConfig::new("factpulse").api_key("k")).build()?;
    // More slots than a semaphore holds, and no slot at all, are each clamped
    // to what works: the receiver answers (404: an unknown provider).
    for limits in [
        ReceiverLimits::default().max_connections(usize::MAX).connection_time(Duration::MAX),
        ReceiverLimits::default().max_connections(0),
    ] {
        let server =
            taskpoll::webhook::serve_with(client.clone(), SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), limits).await?;
        let post = reqwest::Client::new().post(server.url("nowhere")).body("{}").timeout(Duration::from_secs(10));
        assert_eq!(post.send().await?.status(), 404, "{limits:?}");
        server.shutdown().await;
    }
    Ok(())
}

#[tokio::test]
async fn polling_slows_down_while_the_providers_webhooks_arrive() -> TestResult {
    let sim = Simulator::start().await?;
    let task = sim.add_task("factpulse", Lifecycle::new().running_forever())?;
    let policy = Policy::builder()
        .initial_delay(Duration::from_secs(1))
        .factor(1.0)
        .max_delay(Duration::from_secs(1))
        .build()?;
    let delays = |client: Client, clock: Arc<ManualClock>| {
        let task = task.clone();
        let policy = policy.clone();
        async move {
            let options = WaitOptions::new(Duration::from_secs(60)).policy(policy).clock(clock);
            let events: Vec<_> = client.wait(&task, options).take(3).collect().await;
            events.into_iter().map(|e| e.expect("event").next_delay).collect::<Vec<_>>()
        }
    };
    // No webhook: the policy's 1 s.
    let clock = Arc::new(ManualClock::new());
    let quiet = Client::builder().clock(clock.clone()).provider(sim.client_config("factpulse")).build()?;
    assert_eq!(delays(quiet, clock).await, vec![Some(Duration::from_secs(1)); 3]);
    // A verified in-progress delivery of another FactPulse task: the spec's poll-factor 4.
    let clock = Arc::new(ManualClock::new());
    let busy = Client::builder().clock(clock.clone()).provider(sim.client_config("factpulse")).build()?;
    let body = json!({"taskId": "other", "status": "STARTED", "result": null}).to_string();
    let digest = hmac_sha256_hex(b"sim-factpulse-webhook-secret", body.as_bytes());
    let delivered = busy.accept_webhook(
        "factpulse",
        &headers(&[("X-Webhook-Signature", &format!("sha256={digest}"))]),
        body.as_bytes(),
    )?;
    assert_eq!(delivered.phase(), Phase::Running);
    assert_eq!(delays(busy, clock).await, vec![Some(Duration::from_secs(4)); 3]);
    sim.shutdown().await;
    Ok(())
}

// ------------------------------------------------------------- the many-task waiter

#[tokio::test]
async fn a_waiter_ends_waits_by_webhook_or_by_polling_whichever_first() -> TestResult {
    let sim = Simulator::start().await?;
    let client = sim.client()?;
    let server = taskpoll::webhook::serve(client.clone(), SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await?;
    // Delivered before the wait starts: kept, then handed over without a poll.
    let early = sim.add_task_with_callback("cloudinary", Lifecycle::new(), Callback::to(server.url("cloudinary")))?;
    recorded_deliveries(&sim).await?;
    // Delivered while the waiter polls (a result only the webhook has).
    let later = sim.add_task_with_callback(
        "cloudinary",
        Lifecycle::new().queued_for_polls(1).then_succeed(),
        Callback::to(server.url("cloudinary")).delay(Duration::from_millis(100)),
    )?;
    // Lost on the way: polling finds the end (FactPulse's status carries the result).
    let lost = sim.add_task_with_callback(
        "factpulse",
        Lifecycle::new().running_for_polls(2).then_succeed(),
        Callback::to(server.url("factpulse")).drop_rate(1.0),
    )?;
    let mut waiter = client.waiter();
    for task in [&early, &later, &lost] {
        waiter.add(task.clone(), &options(Duration::from_secs(30)))?;
    }
    let mut ended = std::collections::HashMap::new();
    while let Some((task_ref, outcome)) = waiter.next().await {
        ended.insert(task_ref, outcome?);
    }
    let early_task = &ended[&early];
    assert_eq!((early_task.via(), sim.reads(&early)), (Via::Webhook, 0));
    assert_eq!(early_task.result(), Some(&json!({"simulated_result": {"task_id": early.id()}})));
    assert_eq!(ended[&later].via(), Via::Webhook);
    assert!(ended[&later].result().is_some());
    assert_eq!((ended[&lost].via(), ended[&lost].phase()), (Via::Poll, Phase::Succeeded));
    assert_eq!(client.webhooks().unclaimed(), 0);
    server.shutdown().await;
    sim.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn without_its_webhook_a_polled_success_ends_after_the_grace_in_virtual_time() -> TestResult {
    let sim = Simulator::start().await?;
    let clock = Arc::new(ManualClock::new());
    let client = Client::builder().clock(clock.clone()).provider(sim.client_config("cloudinary")).build()?;
    // Listening, but the webhook never comes.
    client.webhooks().set_listening(true);
    let task = sim.add_task("cloudinary", Lifecycle::new())?;
    let options = |deadline| WaitOptions::new(deadline).policy(fast_policy()).clock(clock.clone());
    let started = clock.elapsed();
    let done = client.wait(&task, options(Duration::from_secs(300))).await?;
    assert_eq!((done.phase(), done.via(), done.result()), (Phase::Succeeded, Via::Poll, None));
    // The spec's grace (30 s), on the wait's virtual clock.
    assert_eq!(clock.elapsed() - started, Duration::from_secs(30));
    // Never past the deadline.
    let started = clock.elapsed();
    client.wait(&task, options(Duration::from_secs(10))).await?;
    assert_eq!(clock.elapsed() - started, Duration::from_secs(10));
    sim.shutdown().await;
    Ok(())
}
