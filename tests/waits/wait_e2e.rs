//! The polling engine end to end against a loopback server (wiremock).
//!
//! Most tests run the engine on a `ManualClock`: requests are real, but the
//! engine's sleeps take no real time and every poll instant is exact, so the
//! server can record when (in virtual seconds) each poll was sent. A few run
//! in real time with millisecond delays and assert no durations.

#![allow(clippy::disallowed_methods)] // reads real time: a test's or benchmark's own timing

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures_util::StreamExt as _;
use serde_json::{Value, json};
use taskpoll::clock::ManualClock;
use taskpoll::wait::UnknownStatusPolicy;
use taskpoll::{Client, Error, Phase, Policy, ProviderConfig, TaskRef, WaitOptions, WaitState};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use crate::support::{client, factpulse_helper as helper, received, secs};

// ---------------------------------------------------------------- helpers

/// Answers a scripted sequence, then repeats the last answer, and records the
/// virtual time of each request on the engine's clock.
struct Script {
    answers: Mutex<VecDeque<ResponseTemplate>>,
    last: Mutex<Option<ResponseTemplate>>,
    clock: Option<Arc<ManualClock>>,
    seen: Arc<Mutex<Vec<f64>>>,
}

impl Respond for Script {
    fn respond(&self, _: &Request) -> ResponseTemplate {
        if let Some(clock) = &self.clock {
            self.seen.lock().expect("lock").push(clock.elapsed().as_secs_f64());
        }
        let next = self.answers.lock().expect("lock").pop_front();
        let mut last = self.last.lock().expect("lock");
        match next {
            Some(answer) => {
                *last = Some(answer.clone());
                answer
            }
            None => last.clone().unwrap_or_else(|| ResponseTemplate::new(500)),
        }
    }
}

struct Server {
    server: MockServer,
    seen: Arc<Mutex<Vec<f64>>>,
}

impl Server {
    /// A server answering `answers` in order on `route`.
    async fn start(route: &str, answers: Vec<ResponseTemplate>, clock: Option<Arc<ManualClock>>) -> Self {
        let server = MockServer::start().await;
        let seen = Arc::new(Mutex::new(Vec::new()));
        let script = Script { answers: Mutex::new(answers.into()), last: Mutex::new(None), clock, seen: seen.clone() };
        Mock::given(method("GET")).and(path(route)).respond_with(script).mount(&server).await;
        Self { server, seen }
    }

    /// Virtual instants of the polls.
    fn polls(&self) -> Vec<f64> {
        self.seen.lock().expect("lock").clone()
    }

    async fn requests(&self) -> usize {
        received(&self.server).await.len()
    }

    fn client(&self, provider: &str) -> Client {
        let config = match provider {
            "factpulse" => ProviderConfig::new(provider).bearer("jwt"),
            _ => ProviderConfig::new(provider).api_key("k"),
        };
        client(config.base_url(self.server.uri()))
    }
}

const FACTPULSE_PATH: &str = "/api/v1/processing/tasks/t-1/status";
const DEEPOMATIC_PATH: &str = "/tasks/42/";

fn factpulse_ref() -> TaskRef {
    TaskRef::new("factpulse", "t-1").expect("ref")
}

fn deepomatic_ref() -> TaskRef {
    TaskRef::new("deepomatic", "42").expect("ref")
}

fn factpulse(status: &str, result: Value) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({"taskId": "t-1", "status": status, "result": result}))
}

fn deepomatic(status: &str) -> ResponseTemplate {
    let (error, data) = match status {
        "error" => (json!("model crashed"), json!(null)),
        "success" => (json!(null), json!({"outputs": [1, 2]})),
        _ => (json!(null), json!(null)),
    };
    ResponseTemplate::new(200).set_body_json(json!({"id": "42", "status": status, "error": error, "data": data}))
}

fn unavailable() -> ResponseTemplate {
    ResponseTemplate::new(503).set_body_raw("<html>Service Unavailable</html>", "text/html")
}

fn manual() -> Arc<ManualClock> {
    Arc::new(ManualClock::new())
}

/// A fixed 1 s cadence (no growth) for readable instants.
fn every_second() -> Policy {
    Policy::builder().initial_delay(secs(1.0)).factor(1.0).max_delay(secs(1.0)).build().expect("policy")
}

// ---------------------------------------------------------------- outcomes

#[tokio::test]
async fn pending_then_running_then_succeeded() {
    let clock = manual();
    let answers = vec![
        factpulse("PENDING", json!(null)),
        factpulse("STARTED", json!(null)),
        factpulse("STARTED", json!(null)),
        factpulse("SUCCESS", json!({"status": "SUCCESS", "document": "ok"})),
    ];
    let server = Server::start(FACTPULSE_PATH, answers, Some(clock.clone())).await;
    let options = WaitOptions::new(secs(120.0)).policy(helper()).clock(clock.clone());
    let task = server.client("factpulse").wait(&factpulse_ref(), options).await.expect("succeeded");
    assert_eq!(task.phase(), Phase::Succeeded);
    assert_eq!(task.result().and_then(|r| r.get("document")), Some(&json!("ok")));
    assert_eq!(server.polls(), [0.0, 1.0, 2.5, 4.75]);
}

#[tokio::test]
async fn a_failed_task_ends_the_wait_with_its_body_kept() {
    let clock = manual();
    let server =
        Server::start(DEEPOMATIC_PATH, vec![deepomatic("pending"), deepomatic("error")], Some(clock.clone())).await;
    let options = WaitOptions::new(secs(60.0)).policy(every_second()).clock(clock);
    let err = server.client("deepomatic").wait(&deepomatic_ref(), options).await.expect_err("failed");
    let Error::TaskFailed(failed) = &err else { panic!("{err:?}") };
    let task = failed.task();
    assert_eq!(task.error(), Some("model crashed"));
    assert_eq!(task.body()["status"], "error");
    assert_eq!(task.body()["id"], "42");
    assert!(err.is_task_failure());
    assert_eq!(server.polls(), [0.0, 1.0]);
}

#[tokio::test]
async fn a_business_error_inside_success_is_a_failure() {
    let clock = manual();
    let body = json!({"status": "ERROR", "errorMessage": "invalid SIRET"});
    let server = Server::start(FACTPULSE_PATH, vec![factpulse("SUCCESS", body)], Some(clock.clone())).await;
    let options = WaitOptions::new(secs(60.0)).policy(helper()).clock(clock);
    let err = server.client("factpulse").wait(&factpulse_ref(), options).await.expect_err("failed");
    assert!(matches!(&err, Error::TaskFailed(e) if e.task().error() == Some("invalid SIRET")), "{err:?}");
}

// ---------------------------------------------------------------- server hints and transient failures

#[tokio::test]
async fn retry_after_in_seconds_pushes_the_next_poll_back() {
    let clock = manual();
    let limited = ResponseTemplate::new(429).insert_header("Retry-After", "3").set_body_json(json!({"detail": "slow"}));
    let server = Server::start(DEEPOMATIC_PATH, vec![limited, deepomatic("success")], Some(clock.clone())).await;
    let options = WaitOptions::new(secs(60.0)).policy(every_second()).clock(clock);
    let task = server.client("deepomatic").wait(&deepomatic_ref(), options).await.expect("succeeded");
    assert_eq!(task.phase(), Phase::Succeeded);
    assert_eq!(server.polls(), [0.0, 3.0]);
}

/// An in-progress answer may pace the client too: its `Retry-After` is a floor.
#[tokio::test]
async fn retry_after_on_an_in_progress_answer_is_a_floor() {
    let clock = manual();
    let paced = deepomatic("pending").insert_header("Retry-After", "4");
    let server = Server::start(DEEPOMATIC_PATH, vec![paced, deepomatic("success")], Some(clock.clone())).await;
    let options = WaitOptions::new(secs(60.0)).policy(every_second()).clock(clock);
    server.client("deepomatic").wait(&deepomatic_ref(), options).await.expect("succeeded");
    assert_eq!(server.polls(), [0.0, 4.0]);

    // Past the deadline: the wait ends at once, keeping the observation that carried the hint.
    let clock = manual();
    let paced = deepomatic("pending").insert_header("Retry-After", "90");
    let server = Server::start(DEEPOMATIC_PATH, vec![paced], Some(clock.clone())).await;
    let options = WaitOptions::new(secs(30.0)).policy(every_second()).clock(clock.clone());
    let err = server.client("deepomatic").wait(&deepomatic_ref(), options).await.expect_err("past deadline");
    let Error::RetryAfterPastDeadline(ended) = &err else { panic!("{err:?}") };
    assert_eq!((ended.retry_after(), ended.hint_error().is_none()), (secs(90.0), true));
    assert_eq!(err.task().map(|t| t.phase()), Some(Phase::Queued));
    assert_eq!(clock.elapsed(), secs(0.0), "no sleeping towards the deadline");
}

#[tokio::test]
async fn retry_after_ms_variants_and_http_dates_are_honoured() {
    for header in ["retry-after-ms", "x-ms-retry-after-ms"] {
        let clock = manual();
        let limited = ResponseTemplate::new(503).insert_header(header, "1500").set_body_raw("busy", "text/plain");
        let server = Server::start(DEEPOMATIC_PATH, vec![limited, deepomatic("success")], Some(clock.clone())).await;
        let options = WaitOptions::new(secs(60.0)).policy(every_second()).clock(clock);
        server.client("deepomatic").wait(&deepomatic_ref(), options).await.expect("succeeded");
        assert_eq!(server.polls(), [0.0, 1.5], "{header}");
    }

    // An HTTP date about 5 s ahead (whole seconds, read against the real wall clock).
    let clock = manual();
    let date = httpdate::fmt_http_date(SystemTime::now() + secs(5.0));
    let limited = ResponseTemplate::new(429).insert_header("Retry-After", date.as_str());
    let server = Server::start(DEEPOMATIC_PATH, vec![limited, deepomatic("success")], Some(clock.clone())).await;
    let options = WaitOptions::new(secs(60.0)).policy(every_second()).clock(clock);
    server.client("deepomatic").wait(&deepomatic_ref(), options).await.expect("succeeded");
    let polls = server.polls();
    assert_eq!(polls.len(), 2);
    assert!((3.0..=5.0).contains(&polls[1]), "{polls:?}");
}

#[tokio::test]
async fn retry_after_beyond_the_deadline_ends_the_wait_at_once() {
    let clock = manual();
    let limited = ResponseTemplate::new(429).insert_header("Retry-After", "120");
    let server = Server::start(DEEPOMATIC_PATH, vec![deepomatic("pending"), limited], Some(clock.clone())).await;
    let options = WaitOptions::new(secs(30.0)).policy(every_second()).clock(clock.clone());
    let err = server.client("deepomatic").wait(&deepomatic_ref(), options).await.expect_err("past deadline");
    let Error::RetryAfterPastDeadline(ended) = &err else { panic!("{err:?}") };
    assert_eq!(ended.retry_after(), secs(120.0));
    assert_eq!(ended.remaining(), secs(29.0));
    assert_eq!(ended.polls(), 2);
    assert_eq!(ended.hint_error().and_then(|s| s.status()), Some(429));
    assert_eq!(ended.wait_state().last_phase, Some(Phase::Queued));
    assert_eq!(clock.elapsed(), secs(1.0), "no sleeping towards the deadline");
    assert_eq!(server.requests().await, 2);
}

#[tokio::test]
async fn transient_503s_are_retried_within_the_budget() {
    let clock = manual();
    let answers = vec![unavailable(), unavailable(), deepomatic("pending"), deepomatic("success")];
    let server = Server::start(DEEPOMATIC_PATH, answers, Some(clock.clone())).await;
    let options = WaitOptions::new(secs(60.0)).policy(every_second()).clock(clock);
    let events: Vec<_> = server.client("deepomatic").wait(&deepomatic_ref(), options).collect().await;
    let events: Vec<_> = events.into_iter().map(|e| e.expect("no error")).collect();
    assert_eq!(events.len(), 4);
    let error = events[0].error.as_ref().expect("the first poll failed");
    assert!(error.message.contains("HTTP 503"), "{error:?}");
    assert_eq!((error.http_status, error.transport, error.retryable), (Some(503), None, true));
    assert_eq!(events[0].phase, None);
    assert_eq!(events[3].phase, Some(Phase::Succeeded));
    assert_eq!(server.polls(), [0.0, 1.0, 2.0, 3.0]);
    // Events serialise: the typed error and the task as JSON.
    let json = serde_json::to_value(&events[0]).expect("serialises");
    assert_eq!(json["error"]["http_status"], 503);
    assert_eq!(serde_json::to_value(&events[3]).expect("serialises")["phase"], "succeeded");
}

#[tokio::test]
async fn one_watch_handle_polls_once_then_runs_until_done() {
    let clock = manual();
    let answers = vec![deepomatic("pending"), deepomatic("running"), deepomatic("success")];
    let server = Server::start(DEEPOMATIC_PATH, answers, Some(clock.clone())).await;
    let options = WaitOptions::new(secs(60.0)).policy(every_second()).clock(clock);
    let mut watch = server.client("deepomatic").wait(&deepomatic_ref(), options);
    let first = watch.poll().await.expect("an event").expect("no error");
    assert_eq!((first.attempt, first.phase), (1, Some(Phase::Queued)));
    assert_eq!(server.polls(), [0.0], "one poll, nothing more until asked");
    let done = watch.until_done().await.expect("succeeds");
    assert_eq!(done.phase(), Phase::Succeeded);
    assert_eq!(server.polls(), [0.0, 1.0, 2.0]);
}

#[tokio::test]
async fn transient_failures_until_the_deadline_end_with_the_last_error() {
    let clock = manual();
    let server = Server::start(DEEPOMATIC_PATH, vec![unavailable()], Some(clock.clone())).await;
    let options = WaitOptions::new(secs(3.0)).policy(every_second()).clock(clock.clone());
    let err = server.client("deepomatic").wait(&deepomatic_ref(), options).await.expect_err("deadline");
    let Error::DeadlineExceeded(ended) = &err else { panic!("{err:?}") };
    assert_eq!(ended.polls(), 4);
    assert!(ended.last_task().is_none());
    // The 503 (or, on a very slow machine, the final poll's 250 ms request timeout).
    assert!(ended.last_error().is_some_and(|e| e.is_retryable()), "{err:?}");
    assert_eq!(server.polls(), [0.0, 1.0, 2.0, 2.75]);
    assert_eq!(clock.elapsed(), secs(3.0));
}

#[tokio::test]
async fn a_401_stops_at_once() {
    let clock = manual();
    let denied = ResponseTemplate::new(401).set_body_json(json!({"detail": "Invalid token."}));
    let server = Server::start(DEEPOMATIC_PATH, vec![denied], Some(clock.clone())).await;
    let options = WaitOptions::new(secs(60.0)).policy(every_second()).clock(clock.clone());
    let err = server.client("deepomatic").wait(&deepomatic_ref(), options).await.expect_err("unauthorized");
    assert!(err.is_auth(), "{err:?}");
    assert_eq!(server.requests().await, 1);
    assert_eq!(clock.elapsed(), Duration::ZERO);
}

#[tokio::test]
async fn a_provider_that_is_not_configured_fails_before_any_sleep() {
    let clock = manual();
    let server = Server::start(DEEPOMATIC_PATH, vec![deepomatic("success")], None).await;
    let options = WaitOptions::new(secs(60.0)).clock(clock.clone());
    let err = server.client("deepomatic").wait(&factpulse_ref(), options.clone()).await.expect_err("not configured");
    assert!(matches!(err, Error::ProviderNotConfigured(_)), "{err:?}");
    let mut watch = server.client("deepomatic").wait(&factpulse_ref(), options);
    assert!(matches!(watch.next().await, Some(Err(Error::ProviderNotConfigured(_)))));
    assert!(watch.next().await.is_none());
}

// ---------------------------------------------------------------- unknown statuses

#[tokio::test]
async fn unknown_statuses_under_each_policy() {
    let weird = || deepomatic("rebooting");
    let cases: [(UnknownStatusPolicy, Option<usize>, usize); 4] = [
        (UnknownStatusPolicy::KeepWaiting, None, 4),
        (UnknownStatusPolicy::FailFast, Some(1), 1),
        (UnknownStatusPolicy::AtMost(2), Some(3), 3),
        (UnknownStatusPolicy::AtMostFor(secs(1.5)), Some(3), 3),
    ];
    for (policy, fails_at, requests) in cases {
        let clock = manual();
        let answers = vec![weird(), weird(), weird(), deepomatic("success")];
        let server = Server::start(DEEPOMATIC_PATH, answers, Some(clock.clone())).await;
        let options = WaitOptions::new(secs(60.0)).policy(every_second()).unknown_status(policy).clock(clock);
        let result = server.client("deepomatic").wait(&deepomatic_ref(), options).await;
        match fails_at {
            None => assert_eq!(result.expect("succeeded").phase(), Phase::Succeeded),
            Some(n) => {
                let Err(Error::UnknownStatus(ended)) = &result else { panic!("{policy:?}: {result:?}") };
                let (task, state) = (ended.task(), ended.wait_state());
                assert_eq!(task.status(), Some("rebooting"));
                assert_eq!(task.phase(), Phase::Unknown);
                assert_eq!(state.unknown_count as usize, n, "{policy:?}");
            }
        }
        assert_eq!(server.requests().await, requests, "{policy:?}");
    }
}

// ---------------------------------------------------------------- pending forever

#[tokio::test]
async fn the_pending_forever_guard_is_on_for_celery_backed_providers() {
    // FactPulse is Celery-backed: PENDING may mean an unknown or expired id. Its spec's budget is 10 minutes.
    let clock = manual();
    let server = Server::start(FACTPULSE_PATH, vec![factpulse("PENDING", json!(null))], Some(clock.clone())).await;
    let options = WaitOptions::new(secs(3600.0)).policy(helper()).clock(clock.clone());
    let err = server.client("factpulse").wait(&factpulse_ref(), options).await.expect_err("still pending");
    let Error::StillPending(ended) = &err else { panic!("{err:?}") };
    let queued_for = ended.queued_for();
    assert!(queued_for > secs(600.0) && queued_for <= secs(610.0), "{queued_for:?}");
    assert_eq!(ended.last_task().status(), Some("PENDING"));
    assert_eq!(ended.polls() as usize, server.requests().await);
    assert!(err.is_still_pending());
    assert!(err.wait_state().is_some());

    // Turned off, the same wait runs to its deadline.
    let clock = manual();
    let server = Server::start(FACTPULSE_PATH, vec![factpulse("PENDING", json!(null))], Some(clock.clone())).await;
    let options = WaitOptions::new(secs(900.0)).policy(helper()).pending_budget(None).clock(clock.clone());
    let err = server.client("factpulse").wait(&factpulse_ref(), options).await.expect_err("deadline");
    assert!(matches!(err, Error::DeadlineExceeded(_)), "{err:?}");
    assert_eq!(clock.elapsed(), secs(900.0));
}

#[tokio::test]
async fn the_guard_is_off_by_default_elsewhere_and_can_be_turned_on() {
    let clock = manual();
    let server = Server::start(DEEPOMATIC_PATH, vec![deepomatic("pending")], Some(clock.clone())).await;
    let options = WaitOptions::new(secs(10.0)).policy(every_second()).clock(clock.clone());
    let err = server.client("deepomatic").wait(&deepomatic_ref(), options).await.expect_err("deadline");
    assert!(matches!(err, Error::DeadlineExceeded(_)), "{err:?}");

    let clock = manual();
    let server = Server::start(DEEPOMATIC_PATH, vec![deepomatic("pending")], Some(clock.clone())).await;
    let options = WaitOptions::new(secs(10.0)).policy(every_second()).pending_budget(Some(secs(2.0))).clock(clock);
    let err = server.client("deepomatic").wait(&deepomatic_ref(), options).await.expect_err("still pending");
    assert!(matches!(&err, Error::StillPending(e) if e.polls() == 4), "{err:?}");
}

// ---------------------------------------------------------------- resuming

#[tokio::test]
async fn a_wait_resumes_after_serialisation_with_a_fresh_deadline() {
    let clock = manual();
    let answers = vec![
        factpulse("PENDING", json!(null)),
        factpulse("STARTED", json!(null)),
        factpulse("STARTED", json!(null)),
        factpulse("SUCCESS", json!({"status": "SUCCESS"})),
    ];
    let server = Server::start(FACTPULSE_PATH, answers, Some(clock.clone())).await;
    let client = server.client("factpulse");

    // First run: two polls, then the process stops; the last event's state is saved.
    let options = WaitOptions::new(secs(30.0)).policy(helper()).clock(clock.clone());
    let mut watch = client.wait(&factpulse_ref(), options);
    let mut saved = None;
    for _ in 0..2 {
        saved = Some(watch.next().await.expect("item").expect("event").state);
    }
    drop(watch);
    let json = serde_json::to_string_pretty(&saved.expect("state")).expect("serialise");
    clock.advance(secs(10.0));

    // Second run, "after a restart": a fresh deadline, attempts carry on.
    let state: WaitState = serde_json::from_str(&json).expect("deserialise");
    assert_eq!(state.deadline_at_ms - state.started_at_ms, 30_000);
    assert_eq!(state.last_phase, Some(Phase::Running));
    let options = WaitOptions::new(secs(30.0)).policy(helper()).clock(clock.clone());
    let events: Vec<_> = client.resume(state.clone(), options.clone()).collect().await;
    let attempts: Vec<u32> = events.iter().map(|e| e.as_ref().expect("event").attempt).collect();
    assert_eq!(attempts, [3, 4]);
    // The poll planned for 2.5 s was overdue at 11 s: it goes at once, then the third delay (2.25 s) later.
    assert_eq!(server.polls(), [0.0, 1.0, 11.0, 13.25]);

    // Long after the first deadline, the saved state still continues: one more poll.
    clock.advance(secs(60.0));
    let done = client.resume(state, options).await.expect("resumed after its first deadline");
    assert_eq!(done.phase(), Phase::Succeeded);
    assert_eq!(server.requests().await, 5);
}

// ---------------------------------------------------------------- real time

#[tokio::test]
async fn real_time_pending_running_succeeded_with_transitions() {
    let answers = vec![
        factpulse("PENDING", json!(null)),
        factpulse("PENDING", json!(null)),
        factpulse("STARTED", json!(null)),
        factpulse("STARTED", json!(null)),
        factpulse("SUCCESS", json!({"status": "SUCCESS"})),
    ];
    let server = Server::start(FACTPULSE_PATH, answers, None).await;
    let fast = Policy::builder().initial_delay(Duration::from_millis(5)).max_delay(Duration::from_millis(5)).build();
    let options = WaitOptions::new(secs(30.0)).policy(fast.expect("policy"));
    let phases: Vec<Phase> = server
        .client("factpulse")
        .wait(&factpulse_ref(), options)
        .transitions()
        .map(|e| e.expect("event").phase.expect("phase"))
        .collect()
        .await;
    assert_eq!(phases, [Phase::Queued, Phase::Running, Phase::Succeeded]);
    assert_eq!(server.requests().await, 5);
}

#[tokio::test]
async fn real_time_a_slow_server_cannot_hold_the_wait_past_its_deadline() {
    let slow = deepomatic("pending").set_delay(Duration::from_secs(5));
    let server = Server::start(DEEPOMATIC_PATH, vec![slow], None).await;
    let options = WaitOptions::new(Duration::from_millis(200)).policy(every_second());
    let err = server.client("deepomatic").wait(&deepomatic_ref(), options).await.expect_err("deadline");
    let Error::DeadlineExceeded(ended) = &err else { panic!("{err:?}") };
    assert_eq!(ended.polls(), 1);
    let e = ended.last_error().expect("the last cause");
    assert!(e.is_timeout(), "the request was cut at the deadline: {e:?}");
}
