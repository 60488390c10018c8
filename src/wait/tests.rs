//! The polling engine's logic in virtual time: policies and their schedules,
//! the poll step, deadlines, `Retry-After`, guards, streams and resuming.
//! Reads are scripted closures; time is tokio's paused clock or a `ManualClock`.
//! They drive the engine's scheduler with a scripted read function, as
//! [`Client::wait`](crate::Client::wait) drives it with the client's reads.

#![allow(clippy::disallowed_methods)] // tokio's paused time, read as the scripted reads see it

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::spec::BoxFuture;
use crate::spec::Jitter;
use crate::wait::waiter::Limits;
use crate::wait::{Poller, UnknownStatusPolicy, Wait};
use crate::{Error, ManualClock, Phase, Policy, PollEvent, Task, TaskRef, WaitOptions, WaitState};
use futures_util::StreamExt as _;
use serde_json::json;

// ---------------------------------------------------------------- helpers

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

fn as_secs(ds: &[Duration]) -> Vec<f64> {
    ds.iter().map(Duration::as_secs_f64).collect()
}

fn task_ref(provider: &str) -> TaskRef {
    TaskRef::new(provider, "t-1").expect("task ref")
}

/// A task as the mapping would produce it (built through serde: `Task` has no public constructor).
fn task(provider: &str, phase: &str, status: &str) -> Task {
    serde_json::from_value(json!({
        "provider": provider,
        "id": "t-1",
        "phase": phase,
        "status": status,
        "error": if phase == "failed" { json!("boom") } else { json!(null) },
        "result": if phase == "succeeded" { json!({"ok": true}) } else { json!(null) },
        "http_status": 200,
        "body": {"status": status, "detail": "kept"},
    }))
    .expect("task")
}

fn pending() -> crate::Result<Task> {
    Ok(task("factpulse", "queued", "PENDING"))
}

fn running() -> crate::Result<Task> {
    Ok(task("factpulse", "running", "STARTED"))
}

fn success() -> crate::Result<Task> {
    Ok(task("factpulse", "succeeded", "SUCCESS"))
}

fn unknown() -> crate::Result<Task> {
    Ok(task("factpulse", "unknown", "WEIRD"))
}

fn api(status: u16, retry_after: Option<Duration>) -> crate::Result<Task> {
    Err(api_error("factpulse", "get_task_status", status, retry_after))
}

fn timeout() -> Error {
    timeout_error("factpulse", "get_task_status", Duration::from_secs(30))
}

type Script = Arc<Mutex<VecDeque<crate::Result<Task>>>>;

/// A scripted reader on tokio's (paused) clock: records when each read starts
/// (seconds since `start`) and its budget; after the script, repeats `then`.
struct Reader {
    script: Script,
    polls: Arc<Mutex<Vec<(Duration, Duration)>>>,
}

impl Reader {
    fn new(script: Vec<crate::Result<Task>>) -> Self {
        Self { script: Arc::new(Mutex::new(script.into())), polls: Arc::default() }
    }

    /// The read function for `Poller::wait_with`, on tokio time, each read taking `latency`.
    fn tokio(
        &self,
        then: fn() -> crate::Result<Task>,
        latency: Duration,
    ) -> impl FnMut(Limits) -> std::pin::Pin<Box<dyn Future<Output = crate::Result<Task>> + Send>> + Send + 'static
    {
        let start = tokio::time::Instant::now();
        let script = self.script.clone();
        let polls = self.polls.clone();
        move |limits: Limits| {
            polls.lock().expect("lock").push((start.elapsed(), limits.budget));
            let next = script.lock().expect("lock").pop_front().unwrap_or_else(then);
            // A read never outlives its budget nor its attempt timeout (the real client clips its request timeout).
            let cut = limits.budget.min(limits.attempt);
            Box::pin(async move {
                match tokio::time::timeout(cut, tokio::time::sleep(latency)).await {
                    Ok(()) => next,
                    Err(_) => Err(timeout()),
                }
            })
        }
    }

    /// The same on a `ManualClock` (reads take no virtual time unless `latency` is set).
    fn manual(
        &self,
        clock: Arc<ManualClock>,
        then: fn() -> crate::Result<Task>,
        latency: Duration,
    ) -> impl FnMut(Limits) -> std::pin::Pin<Box<dyn Future<Output = crate::Result<Task>> + Send>> + Send + 'static
    {
        let script = self.script.clone();
        let polls = self.polls.clone();
        move |limits: Limits| {
            polls.lock().expect("lock").push((clock.elapsed(), limits.budget));
            let next = script.lock().expect("lock").pop_front().unwrap_or_else(then);
            let cut = limits.budget.min(limits.attempt);
            let result = if latency > cut {
                clock.advance(cut);
                Err(timeout())
            } else {
                clock.advance(latency);
                next
            };
            Box::pin(std::future::ready(result))
        }
    }

    fn times(&self) -> Vec<f64> {
        self.polls.lock().expect("lock").iter().map(|(at, _)| at.as_secs_f64()).collect()
    }

    fn budgets(&self) -> Vec<f64> {
        self.polls.lock().expect("lock").iter().map(|(_, b)| b.as_secs_f64()).collect()
    }
}

fn helper() -> Policy {
    Policy::factpulse_helper().expect("preset")
}

fn opts(deadline: f64) -> WaitOptions {
    WaitOptions::new(secs(deadline)).policy(helper())
}

async fn wait_paused(
    options: WaitOptions,
    script: Vec<crate::Result<Task>>,
    then: fn() -> crate::Result<Task>,
) -> (crate::Result<Task>, Reader, Duration) {
    let reader = Reader::new(script);
    let start = tokio::time::Instant::now();
    let poller = Poller::new(task_ref("factpulse"), &options).expect("poller");
    let result = poller.wait_with(reader.tokio(then, Duration::ZERO)).await;
    (result, reader, start.elapsed())
}

// ---------------------------------------------------------------- policies

#[test]
fn factpulse_helper_polls_at_once_then_every_1s_times_1_5_up_to_10s() {
    let policy = helper();
    assert_eq!(policy.name(), "factpulse_helper");
    assert_eq!(policy.suggested_deadline(), Some(secs(120.0)));
    assert_eq!(policy.jitter(), Jitter::None);
    let times = policy.poll_times(secs(120.0));
    assert_eq!(
        as_secs(&times[..9]),
        [0.0, 1.0, 2.5, 4.75, 8.125, 13.1875, 20.78125, 30.78125, 40.78125],
        "1, 1.5, 2.25, 3.375, 5.0625, 7.59375, then 10 s"
    );
    // The last planned poll is clipped to land on the deadline, less the reserve for its request.
    assert_eq!(*times.last().expect("polls"), secs(120.0) - policy.final_poll_reserve());
    assert!(times.iter().all(|t| *t < secs(120.0)), "no poll at or after the deadline");
    let delays = policy.schedule(secs(120.0));
    assert!(delays.iter().all(|d| *d <= secs(10.0)));
}

#[test]
fn factpulse_helper_without_reserve_stops_like_the_official_helper() {
    // polling_timeout=3: the helper polled at 0, 1.0 and 2.5 s, slept 0.5 s, then timed out with no fourth poll.
    let policy = helper().to_builder().final_poll_reserve(Duration::ZERO).build().expect("policy");
    assert_eq!(as_secs(&policy.poll_times(secs(3.0))), [0.0, 1.0, 2.5]);
    // With the default reserve the last sleep is clipped so a final poll fits before the deadline.
    assert_eq!(as_secs(&helper().poll_times(secs(3.0))), [0.0, 1.0, 2.5, 2.75]);
    assert_eq!(as_secs(&helper().schedule(secs(3.0))), [0.0, 1.0, 1.5, 0.25]);
}

#[test]
fn polite_factpulse_polls_every_2_to_3_seconds() {
    let policy = Policy::polite("factpulse").expect("polite");
    assert_eq!(policy.name(), "factpulse:polite");
    let delays = policy.schedule(secs(120.0));
    assert_eq!(as_secs(&delays[..5]), [0.0, 2.0, 2.5, 3.0, 3.0]);
    let last = delays.len() - 1;
    assert!(delays[1..last].iter().all(|d| (2.0..=3.0).contains(&d.as_secs_f64())), "{delays:?}");
    // Every built-in provider has a valid polite policy.
    for provider in crate::spec::providers() {
        Policy::polite(provider.name()).expect("valid polite policy");
    }
}

#[test]
fn fixed_delays_come_first_and_the_first_poll_can_wait() {
    let policy = Policy::builder()
        .first_poll(secs(2.0))
        .delays([secs(0.5), secs(0.5)])
        .initial_delay(secs(1.0))
        .factor(3.0)
        .max_delay(secs(5.0))
        .build()
        .expect("policy");
    assert_eq!(as_secs(&policy.schedule(secs(20.0))[..6]), [2.0, 0.5, 0.5, 1.0, 3.0, 5.0]);
    // A first poll later than the deadline allows is clipped, not skipped.
    assert_eq!(as_secs(&policy.poll_times(secs(1.0))), [0.75]);
    assert!(policy.schedule(Duration::ZERO).is_empty());
}

#[test]
fn the_builder_rejects_unusable_numbers() {
    let cases = [
        Policy::builder().factor(0.5).build(),
        Policy::builder().factor(f64::NAN).build(),
        Policy::builder().factor(f64::INFINITY).build(),
        Policy::builder().initial_delay(Duration::ZERO).build(),
        Policy::builder().initial_delay(secs(10.0)).max_delay(secs(5.0)).build(),
        Policy::builder().delays([secs(1.0), Duration::ZERO]).build(),
        Policy::builder().max_delay(secs(30.0 * 24.0 * 3600.0)).build(),
        Policy::builder().name("").build(),
    ];
    for case in cases {
        let err = case.expect_err("invalid");
        assert!(matches!(err, Error::InvalidPolicy(_)), "{err:?}");
        assert!(err.is_config());
    }
    // A zero initial delay is fine with an offset (a constant cadence).
    Policy::builder().initial_delay(Duration::ZERO).max_delay(Duration::ZERO).offset(secs(1.0)).build().expect("ok");
    assert!(matches!(Policy::preset("nope"), Err(Error::InvalidPolicy(_))));
    assert!(matches!(Policy::polite("nope"), Err(Error::UnknownProvider(_))));
}

// ---------------------------------------------------------------- the wait loop, paused tokio time

#[tokio::test(start_paused = true)]
async fn polls_land_exactly_on_the_schedule() {
    let (result, reader, took) =
        wait_paused(opts(60.0), vec![pending(), pending(), running(), running()], success).await;
    let task = result.expect("succeeded");
    assert_eq!(task.phase(), Phase::Succeeded);
    assert_eq!(reader.times(), [0.0, 1.0, 2.5, 4.75, 8.125]);
    assert_eq!(took, secs(8.125));
    // Each read's budget is the time left before the deadline.
    assert_eq!(reader.budgets(), [60.0, 59.0, 57.5, 55.25, 51.875]);
}

#[tokio::test(start_paused = true)]
async fn the_deadline_ends_the_wait_exactly_with_the_last_observation() {
    let (result, reader, took) = wait_paused(opts(10.0), vec![], pending).await;
    let err = result.expect_err("deadline");
    assert_eq!(reader.times(), [0.0, 1.0, 2.5, 4.75, 8.125, 9.75], "last sleep clipped, final poll 250 ms early");
    assert_eq!(took, secs(10.0), "returns on the deadline");
    let Error::DeadlineExceeded(ended) = &err else { panic!("{err:?}") };
    assert_eq!(ended.task_ref().id(), "t-1");
    assert_eq!(ended.elapsed(), secs(10.0));
    assert_eq!(ended.deadline(), secs(10.0), "the configured deadline");
    assert_eq!(ended.polls(), 6);
    assert_eq!(ended.last_task().map(|t| t.status()), Some(Some("PENDING")));
    assert!(ended.last_error().is_none());
    let state = ended.wait_state();
    assert_eq!(state.attempts, 6);
    assert_eq!(state.last_phase, Some(Phase::Queued));
    assert_eq!(state.deadline_at_ms - state.started_at_ms, 10_000);
    assert!(err.is_deadline());
    assert_eq!(err.task_ref(), Some(ended.task_ref()));
    assert!(err.to_string().contains("deadline of 10.0 s"), "{err}");
}

#[tokio::test(start_paused = true)]
async fn without_a_reserve_the_last_sleep_runs_to_the_deadline_and_nothing_is_sent_there() {
    let policy = helper().to_builder().final_poll_reserve(Duration::ZERO).build().expect("policy");
    let (result, reader, took) = wait_paused(WaitOptions::new(secs(3.0)).policy(policy), vec![], pending).await;
    assert!(matches!(&result, Err(Error::DeadlineExceeded(e)) if e.polls() == 3), "{result:?}");
    assert_eq!(reader.times(), [0.0, 1.0, 2.5]);
    assert_eq!(took, secs(3.0));
}

#[tokio::test(start_paused = true)]
async fn a_server_that_hangs_cannot_push_the_wait_past_its_deadline() {
    let reader = Reader::new(vec![]);
    let start = tokio::time::Instant::now();
    let poller = Poller::new(task_ref("factpulse"), &opts(5.0)).expect("poller");
    // Every read takes an hour. With no answer times seen yet, each attempt gets
    // half the time left (at least 1 s): cut at 2.5 s, then 3.75 s; the last
    // read, at 4 s, is cut at the deadline.
    let result = poller.wait_with(reader.tokio(pending, secs(3600.0))).await;
    assert_eq!(start.elapsed(), secs(5.0));
    assert_eq!(reader.times(), [0.0, 2.5, 4.0]);
    assert_eq!(reader.budgets(), [5.0, 2.5, 1.0]);
    let Err(Error::DeadlineExceeded(ended)) = &result else { panic!("{result:?}") };
    assert_eq!((ended.polls(), ended.last_task().is_none()), (3, true));
    let e = ended.last_error().expect("the last cause");
    assert!(std::error::Error::source(&result.as_ref().unwrap_err()).is_some(), "the last cause is the source");
    assert!(e.is_timeout());
}

/// A read that hangs costs its attempt timeout, not the wait: the next poll
/// goes out and the wait ends well before its deadline.
#[tokio::test(start_paused = true)]
async fn a_server_that_hangs_once_then_answers_ends_the_wait_before_its_deadline() {
    let start = tokio::time::Instant::now();
    let reads = Arc::new(Mutex::new(Vec::new()));
    let seen = reads.clone();
    let poller = Poller::new(task_ref("factpulse"), &opts(5.0)).expect("poller");
    let result = poller
        .wait_with(move |limits: Limits| {
            let mut reads = seen.lock().expect("lock");
            reads.push((start.elapsed(), limits.attempt));
            let hang = reads.len() == 1;
            Box::pin(async move {
                let latency = if hang { secs(3600.0) } else { secs(0.05) };
                match tokio::time::timeout(limits.budget.min(limits.attempt), tokio::time::sleep(latency)).await {
                    Ok(()) => success(),
                    Err(_) => Err(timeout()),
                }
            }) as std::pin::Pin<Box<dyn Future<Output = crate::Result<Task>> + Send>>
        })
        .await;
    assert!(result.is_ok(), "{result:?}");
    let reads = reads.lock().expect("lock").clone();
    // The hung read was given up at 2.5 s (half the time left, no answer times yet).
    assert_eq!(reads[0], (secs(0.0), secs(2.5)));
    assert_eq!(reads.len(), 2, "{reads:?}");
    assert!(start.elapsed() < secs(3.0), "{:?}", start.elapsed());
}

/// Once answers have been seen, the attempt timeout follows them: four times
/// their 99th percentile, at least one second.
#[tokio::test(start_paused = true)]
async fn the_attempt_timeout_follows_the_answer_times_seen() {
    let reader = Reader::new(vec![]);
    let attempts = Arc::new(Mutex::new(Vec::new()));
    let seen = attempts.clone();
    let mut read = reader.tokio(pending, secs(0.5));
    let policy = Policy::builder().initial_delay(secs(1.0)).factor(1.0).max_delay(secs(1.0)).build().expect("policy");
    let poller = Poller::new(task_ref("factpulse"), &WaitOptions::new(secs(60.0)).policy(policy)).expect("poller");
    let _ = poller
        .wait_with(move |limits: Limits| {
            seen.lock().expect("lock").push(limits.attempt);
            read(limits)
        })
        .await;
    let attempts = attempts.lock().expect("lock").clone();
    // Half the time left at first; 4 × 0.5 s = 2 s once 20 answers of 0.5 s were seen.
    assert_eq!(attempts[0], secs(30.0));
    // (The last few are cut by the deadline: never past it.)
    assert!(attempts.len() > 50, "{}", attempts.len());
    assert!(attempts[25..50].iter().all(|a| (a.as_secs_f64() - 2.0).abs() < 0.05), "{attempts:?}");
    assert_eq!(attempts.last(), Some(&secs(0.25)));
}

#[tokio::test(start_paused = true)]
async fn delays_count_from_when_each_poll_was_due_not_from_its_answer() {
    let reader = Reader::new(vec![pending(), pending()]);
    let start = tokio::time::Instant::now();
    let poller = Poller::new(task_ref("factpulse"), &opts(60.0)).expect("poller");
    let result = poller.wait_with(reader.tokio(success, secs(0.25))).await;
    assert!(result.is_ok());
    // Delays of 1 s and 1.5 s from 0 and 1 s: the reads' 0.25 s does not add up.
    assert_eq!(reader.times(), [0.0, 1.0, 2.5]);
    assert_eq!(start.elapsed(), secs(2.75));
}

#[tokio::test(start_paused = true)]
async fn transient_errors_are_retried_on_the_same_schedule() {
    let (result, reader, _) = wait_paused(opts(60.0), vec![api(503, None), Err(timeout()), pending()], success).await;
    assert!(result.is_ok(), "{result:?}");
    assert_eq!(reader.times(), [0.0, 1.0, 2.5, 4.75]);
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_a_floor_bounded_by_the_ceiling() {
    // A long hint pushes the next poll back; a short one does not pull it forward.
    let (result, reader, _) =
        wait_paused(opts(60.0), vec![api(429, Some(secs(5.0))), api(503, Some(secs(0.2)))], success).await;
    assert!(result.is_ok());
    assert_eq!(reader.times(), [0.0, 5.0, 6.5]);

    // The ceiling bounds an absurd hint.
    let options = opts(60.0).retry_after_ceiling(secs(2.0));
    let (result, reader, _) = wait_paused(options, vec![api(429, Some(secs(50.0)))], success).await;
    assert!(result.is_ok());
    assert_eq!(reader.times(), [0.0, 2.0]);
}

#[tokio::test(start_paused = true)]
async fn retry_after_past_the_deadline_ends_the_wait_at_once() {
    let (result, reader, took) = wait_paused(opts(10.0), vec![pending(), api(429, Some(secs(30.0)))], success).await;
    assert_eq!(reader.times(), [0.0, 1.0]);
    assert_eq!(took, secs(1.0), "no sleeping towards a deadline that cannot be met");
    let err = result.expect_err("past deadline");
    let Error::RetryAfterPastDeadline(ended) = &err else { panic!("{err:?}") };
    assert_eq!(ended.retry_after(), secs(30.0));
    assert_eq!(ended.remaining(), secs(9.0));
    assert_eq!(ended.polls(), 2);
    assert!(ended.hint_error().is_some_and(|s| s.is_rate_limited()));
    let state = ended.wait_state();
    assert_eq!(state.next_poll_ms, Some(31_000), "when the server allows the next poll");
    assert!(err.is_deadline());
    assert_eq!(err.retry_after(), Some(secs(30.0)));

    // Continued with a fresh deadline, the wait keeps the server's hint: its
    // first poll waits until the server allows it (31 s after the first start).
    let reader = Reader::new(vec![]);
    let start = tokio::time::Instant::now();
    let poller = Poller::resume(state.clone(), &opts(60.0)).expect("resume");
    let result = poller.wait_with(reader.tokio(success, Duration::ZERO)).await;
    assert!(result.is_ok(), "{result:?}");
    assert_eq!(reader.times().len(), 1);
    // The resume's start is read from the wall clock, which tokio's paused time does
    // not move: the wait resumed a few real milliseconds after the first start.
    let slept = start.elapsed();
    assert!(slept > secs(30.9) && slept <= secs(31.0), "slept {slept:?} until the server's 31 s mark");
}

#[tokio::test(start_paused = true)]
async fn permanent_errors_stop_at_once() {
    for status in [401, 403, 404, 400] {
        let (result, reader, took) = wait_paused(opts(60.0), vec![api(status, None)], success).await;
        let err = result.expect_err("permanent");
        assert_eq!(err.status(), Some(status));
        assert_eq!(reader.times(), [0.0]);
        assert_eq!(took, Duration::ZERO);
    }
}

#[tokio::test(start_paused = true)]
async fn failed_and_cancelled_tasks_end_with_the_final_observation() {
    let failed = || Ok(task("factpulse", "failed", "FAILURE"));
    let (result, _, _) = wait_paused(opts(60.0), vec![pending()], failed).await;
    let Err(Error::TaskFailed(failed)) = &result else { panic!("{result:?}") };
    let last = failed.task();
    assert_eq!(last.error(), Some("boom"));
    assert_eq!(last.body()["detail"], "kept");

    let cancelled = || Ok(task("factpulse", "cancelled", "REVOKED"));
    let (result, _, _) = wait_paused(opts(60.0), vec![], cancelled).await;
    assert!(matches!(result, Err(Error::TaskCancelled(_))), "{result:?}");
}

#[tokio::test(start_paused = true)]
async fn unknown_statuses_follow_the_chosen_policy() {
    // Keep waiting (the default): an unknown status is "not finished".
    let (result, reader, _) = wait_paused(opts(60.0), vec![unknown(), unknown(), unknown()], success).await;
    assert!(result.is_ok());
    assert_eq!(reader.times().len(), 4);

    // Fail fast.
    let options = opts(60.0).unknown_status(UnknownStatusPolicy::FailFast);
    let (result, reader, _) = wait_paused(options, vec![pending()], unknown).await;
    let Err(Error::UnknownStatus(ended)) = &result else { panic!("{result:?}") };
    assert_eq!(ended.task().status(), Some("WEIRD"));
    assert_eq!(ended.wait_state().unknown_count, 1);
    assert_eq!(reader.times(), [0.0, 1.0]);

    // At most 2 in a row: the third consecutive one fails; a known status resets the count.
    let options = opts(60.0).unknown_status(UnknownStatusPolicy::AtMost(2));
    let (result, reader, _) =
        wait_paused(options, vec![unknown(), unknown(), pending(), unknown(), unknown()], unknown).await;
    assert!(matches!(result, Err(Error::UnknownStatus(_))), "{result:?}");
    assert_eq!(reader.times().len(), 6);

    // At most 2 s: polls at 0, 1, 2.5 → the one at 2.5 s is 2.5 s into the run.
    let options = opts(60.0).unknown_status(UnknownStatusPolicy::AtMostFor(secs(2.0)));
    let (result, reader, _) = wait_paused(options, vec![], unknown).await;
    let Err(Error::UnknownStatus(ended)) = &result else { panic!("{result:?}") };
    assert_eq!(ended.wait_state().unknown_ms, 2500);
    assert_eq!(reader.times(), [0.0, 1.0, 2.5]);
}

#[tokio::test(start_paused = true)]
async fn the_pending_forever_guard_ends_a_wait_stuck_in_the_queue() {
    let options = opts(60.0).pending_budget(Some(secs(2.0)));
    let (result, reader, took) = wait_paused(options, vec![], pending).await;
    let err = result.expect_err("still pending");
    let Error::StillPending(ended) = &err else { panic!("{err:?}") };
    assert_eq!(ended.queued_for(), secs(2.5));
    assert_eq!(ended.polls(), 3);
    assert_eq!(ended.last_task().status(), Some("PENDING"));
    assert_eq!(ended.wait_state().queued_ms, 2500);
    assert_eq!(reader.times(), [0.0, 1.0, 2.5]);
    assert_eq!(took, secs(2.5));
    assert!(err.is_still_pending());

    // Moving out of the queue resets the clock of the guard.
    let options = opts(60.0).pending_budget(Some(secs(2.0)));
    let (result, _, _) = wait_paused(options, vec![pending(), pending(), running(), pending()], success).await;
    assert!(result.is_ok(), "{result:?}");
}

#[test]
fn the_pending_guard_is_on_by_default_only_for_celery_backed_providers() {
    let options = WaitOptions::new(secs(60.0));
    let factpulse = Poller::new(task_ref("factpulse"), &options).expect("poller");
    assert_eq!(factpulse.pending_budget(), Some(secs(600.0)), "factpulse.yaml: celery-backed, pending-budget 10m");
    assert_eq!(factpulse.policy().name(), "factpulse:polite");
    let deepomatic = Poller::new(task_ref("deepomatic"), &options).expect("poller");
    assert_eq!(deepomatic.pending_budget(), None);
    let off = Poller::new(task_ref("factpulse"), &options.clone().pending_budget(None)).expect("poller");
    assert_eq!(off.pending_budget(), None);
}

#[tokio::test(start_paused = true)]
async fn a_zero_deadline_ends_at_once_without_polling() {
    let (result, reader, took) = wait_paused(opts(0.0), vec![], success).await;
    assert!(matches!(&result, Err(Error::DeadlineExceeded(e)) if e.polls() == 0), "{result:?}");
    assert!(reader.times().is_empty());
    assert_eq!(took, Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn the_engine_follows_the_dry_run_schedule_even_with_jitter() {
    let policy = Policy::deepomatic_client().expect("preset").to_builder().seed(11).build().expect("seeded");
    let planned = policy.poll_times(secs(5.0));
    let reader = Reader::new(vec![]);
    let poller = Poller::new(task_ref("deepomatic"), &WaitOptions::new(secs(5.0)).policy(policy)).expect("poller");
    let result = poller.wait_with(reader.tokio(pending, Duration::ZERO)).await;
    assert!(result.is_err());
    let actual = reader.times();
    assert_eq!(actual.len(), planned.len());
    assert_eq!(actual, as_secs(&planned), "delays are whole milliseconds, so tokio's timer hits them exactly");
}

// ---------------------------------------------------------------- streams

#[tokio::test(start_paused = true)]
async fn watch_yields_every_poll_with_its_phase_change_and_next_delay() {
    let reader = Reader::new(vec![pending(), pending(), running(), running()]);
    let poller = Poller::new(task_ref("factpulse"), &opts(60.0)).expect("poller");
    let events: Vec<PollEvent> =
        poller.watch_with(reader.tokio(success, Duration::ZERO)).map(|e| e.expect("event")).collect().await;
    type Summary = (u32, f64, Option<Phase>, bool, Option<f64>);
    let summary: Vec<Summary> = events
        .iter()
        .map(|e| (e.attempt, e.elapsed.as_secs_f64(), e.phase, e.changed, e.next_delay.map(|d| d.as_secs_f64())))
        .collect();
    assert_eq!(
        summary,
        [
            (1, 0.0, Some(Phase::Queued), true, Some(1.0)),
            (2, 1.0, Some(Phase::Queued), false, Some(1.5)),
            (3, 2.5, Some(Phase::Running), true, Some(2.25)),
            (4, 4.75, Some(Phase::Running), false, Some(3.375)),
            (5, 8.125, Some(Phase::Succeeded), true, None),
        ]
    );
    assert_eq!(events[2].status.as_deref(), Some("STARTED"));
    assert_eq!(events[4].task.as_ref().and_then(Task::result), Some(&json!({"ok": true})));
    assert_eq!(events[1].state.next_poll_ms, Some(2500));
}

#[tokio::test(start_paused = true)]
async fn transitions_keep_only_phase_changes_and_the_final_error() {
    let reader = Reader::new(vec![pending(), api(503, None), pending(), running(), running()]);
    let poller = Poller::new(task_ref("factpulse"), &opts(60.0)).expect("poller");
    let failed = || Ok(task("factpulse", "failed", "FAILURE"));
    let items: Vec<_> = poller.watch_with(reader.tokio(failed, Duration::ZERO)).transitions().collect().await;
    let phases: Vec<Option<Phase>> = items.iter().filter_map(|i| i.as_ref().ok()).map(|e| e.phase).collect();
    assert_eq!(phases, [Some(Phase::Queued), Some(Phase::Running), Some(Phase::Failed)]);
    assert!(matches!(items.last(), Some(Err(Error::TaskFailed(_)))));
}

#[tokio::test(start_paused = true)]
async fn a_transient_failure_is_reported_as_an_event_without_a_phase() {
    let reader = Reader::new(vec![api(503, None)]);
    let poller = Poller::new(task_ref("factpulse"), &opts(60.0)).expect("poller");
    let mut watch = poller.watch_with(reader.tokio(success, Duration::ZERO));
    let first = watch.next().await.expect("item").expect("event");
    assert_eq!(first.phase, None);
    assert!(!first.changed);
    assert!(first.error.as_ref().is_some_and(|e| e.message.contains("503") && e.http_status == Some(503)), "{first:?}");
    assert_eq!(first.next_delay, Some(secs(1.0)));
    let task = watch.until_done().await.expect("succeeded");
    assert_eq!(task.phase(), Phase::Succeeded);
}

// ---------------------------------------------------------------- manual clock and resuming

#[tokio::test]
async fn a_manual_clock_gives_exact_instants_including_read_latency() {
    let clock = Arc::new(ManualClock::new());
    let reader = Reader::new(vec![]);
    let options = opts(4.0).clock(clock.clone());
    let poller = Poller::new(task_ref("factpulse"), &options).expect("poller");
    let result = poller.wait_with(reader.manual(clock.clone(), pending, secs(0.5))).await;
    // Answers take 0.5 s; delays (1 s, 1.5 s, 2.25 s) count from when each poll was due:
    // polls at 0, 1 and 2.5; the next (4.75) is clipped to the deadline less the reserve (3.75).
    assert_eq!(reader.times(), [0.0, 1.0, 2.5, 3.75]);
    // The last read had 0.25 s of budget and used it; the wait ends on the deadline.
    assert_eq!(reader.budgets(), [4.0, 3.0, 1.5, 0.25]);
    assert!(matches!(&result, Err(Error::DeadlineExceeded(e)) if e.polls() == 4), "{result:?}");
    assert_eq!(clock.elapsed(), secs(4.0));
}

#[tokio::test]
async fn a_resumed_wait_continues_with_a_fresh_deadline_and_its_history() {
    let clock = Arc::new(ManualClock::new());
    let options = opts(10.0).clock(clock.clone());
    let reader = Reader::new(vec![]);
    let poller = Poller::new(task_ref("factpulse"), &options).expect("poller");
    let mut watch = poller.watch_with(reader.manual(clock.clone(), pending, Duration::ZERO));
    let mut saved = None;
    for _ in 0..3 {
        saved = Some(watch.next().await.expect("item").expect("event").state);
    }
    drop(watch); // the process stops after the poll at 2.5 s
    let json = serde_json::to_string(&saved.expect("state")).expect("serialise");
    clock.advance(secs(1.0)); // ... and restarts 1 s later

    let state: WaitState = serde_json::from_str(&json).expect("deserialise");
    assert_eq!(state.attempts, 3);
    assert_eq!(state.next_poll_ms, Some(4750));
    assert_eq!(state.queued_ms, 2500);
    let reader = Reader::new(vec![]);
    // 5 s more from the restart at 3.5 s: the new deadline is 8.5 s after the first start.
    let options = WaitOptions::new(secs(5.0)).policy(helper()).clock(clock.clone());
    let poller = Poller::resume(state, &options).expect("resume");
    let events: Vec<_> = poller.watch_with(reader.manual(clock.clone(), pending, Duration::ZERO)).collect().await;
    // Polls continue on the saved schedule (4.75 s), the last one clipped before the new deadline.
    assert_eq!(reader.times(), [4.75, 8.125, 8.25]);
    let attempts: Vec<u32> = events.iter().filter_map(|e| e.as_ref().ok()).map(|e| e.attempt).collect();
    assert_eq!(attempts, [4, 5, 6]);
    let Some(Err(Error::DeadlineExceeded(ended))) = events.last() else { panic!("{events:?}") };
    assert_eq!(ended.elapsed(), secs(8.5));
    assert_eq!(ended.deadline(), secs(5.0), "the continuation's own deadline");
    assert_eq!(ended.polls(), 6);
    let state = ended.wait_state();
    assert_eq!(state.deadline_at_ms - state.started_at_ms, 8500);
    assert_eq!(state.queued_ms, 8250, "queued time carries across the restart");
    assert_eq!(clock.elapsed(), secs(8.5));
}

#[tokio::test]
async fn resuming_after_the_deadline_continues_instead_of_ending_at_once() {
    let clock = Arc::new(ManualClock::new());
    let options = opts(2.0).clock(clock.clone());
    let reader = Reader::new(vec![]);
    let poller = Poller::new(task_ref("factpulse"), &options).expect("poller");
    let result = poller.wait_with(reader.manual(clock.clone(), pending, Duration::ZERO)).await;
    let state = result.expect_err("deadline").wait_state().expect("state").clone();

    // A minute after that deadline, resuming polls at once and finds the task done.
    clock.advance(secs(60.0));
    let reader = Reader::new(vec![]);
    let options = WaitOptions::new(secs(10.0)).policy(helper()).clock(clock.clone());
    let poller = Poller::resume(state.clone(), &options).expect("resume");
    let done = poller.wait_with(reader.manual(clock.clone(), success, Duration::ZERO)).await;
    assert!(done.is_ok(), "{done:?}");
    assert_eq!(reader.times().len(), 1);
    assert_eq!(reader.times()[0], 62.0, "at once, 62 s after the first start");

    // A zero deadline still sends nothing.
    let reader = Reader::new(vec![]);
    let options = WaitOptions::new(Duration::ZERO).policy(helper()).clock(clock.clone());
    let poller = Poller::resume(state, &options).expect("resume");
    let result = poller.wait_with(reader.manual(clock.clone(), success, Duration::ZERO)).await;
    assert!(matches!(result, Err(Error::DeadlineExceeded(_))), "{result:?}");
    assert!(reader.times().is_empty());
}

// ---------------------------------------------------------------- tracing

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn one_span_per_wait_and_one_event_per_poll() {
    // A global subscriber: a thread-scoped one races with callsite-interest
    // caching while other tests run. Lines are told apart by this wait's task id.
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    tracing::subscriber::set_global_default(subscriber).expect("the only global subscriber of this binary");
    let reader = Reader::new(vec![pending(), running()]);
    let traced = TaskRef::new("factpulse", "traced-1").expect("ref");
    let poller = Poller::new(traced, &opts(60.0)).expect("poller");
    let result = poller.wait_with(reader.tokio(success, Duration::ZERO)).await;
    assert!(result.is_ok());
    let text = String::from_utf8(captured.0.lock().expect("lock").clone()).expect("utf-8");
    let ours: Vec<&str> = text.lines().filter(|l| l.contains("task_id=\"traced-1\"")).collect();
    let polls: Vec<&str> = ours.iter().copied().filter(|l| l.contains(" poll ")).collect();
    assert_eq!(polls.len(), 3, "{text}");
    for line in &polls {
        assert!(
            line.contains("taskpoll.wait{provider=\"factpulse\" task_id=\"traced-1\" policy=\"factpulse_helper\""),
            "{line}"
        );
    }
    assert!(polls[0].contains("attempt=1") && polls[0].contains("phase=\"queued\""), "{}", polls[0]);
    assert!(polls[2].contains("status=\"SUCCESS\""), "{}", polls[2]);
    assert!(ours.iter().any(|l| l.contains("polls=3") && l.contains("outcome=\"succeeded\"")), "{text}");
}

/// A resumed wait keeps its preset when the options name no policy.
#[test]
fn resuming_keeps_the_saved_preset_by_name() {
    let helper = crate::Policy::factpulse_helper().expect("preset");
    let task = crate::TaskRef::new("factpulse", "t-1").expect("ref");
    let options = crate::WaitOptions::new(std::time::Duration::from_secs(120)).policy(helper.clone());
    let poller = Poller::new(task, &options).expect("poller");
    let state = poller.state().clone();
    assert_eq!(state.policy, helper.name());
    let options = crate::WaitOptions::new(std::time::Duration::from_secs(60));
    let resumed = Poller::resume(state, &options).expect("resumed");
    assert_eq!(resumed.policy().name(), "factpulse_helper");
    assert_eq!(resumed.policy().initial_delay(), helper.initial_delay());
}

/// The engine resumes (a `Waiter`'s and `Client::resume`'s waits alike) the
/// same way: it puts the provider's polite policy only into new waits.
#[tokio::test]
async fn the_engine_keeps_a_resumed_waits_saved_preset() {
    let client = crate::Client::builder()
        .provider(crate::ProviderConfig::new("factpulse").bearer("token"))
        .build()
        .expect("client");
    let engine = crate::wait::waiter::Engine::of(&client).expect("engine");
    let lane = engine.lane(&client, "factpulse", None, None).expect("lane");
    let options = WaitOptions::new(secs(60.0));
    let fresh = engine.start(task_ref("factpulse"), &options, &lane).expect("started");
    assert_eq!(fresh.policy().name(), Policy::polite("factpulse").expect("polite").name());
    let saved = Poller::new(task_ref("factpulse"), &opts(60.0)).expect("poller").state().clone();
    let resumed = engine.resume(saved, &options, &lane).expect("resumed");
    assert_eq!(resumed.policy().name(), "factpulse_helper");
}

// ---------------------------------------------------------------- the driver

/// A scripted read function as a scheduler's source: single reads only (the
/// provider's batch operation is not used), so every poll is one call.
struct ReadFn(Mutex<ScriptedRead>);

type ScriptedRead = Box<dyn FnMut(Limits) -> BoxFuture<'static, crate::Result<Task>> + Send>;

impl crate::wait::waiter::Source for ReadFn {
    fn read_one(
        &self,
        _task: TaskRef,
        limits: crate::wait::waiter::Limits,
        _keep_body: bool,
    ) -> BoxFuture<'static, crate::Result<Task>> {
        (self.0.lock().expect("lock"))(limits)
    }

    fn read_many(
        &self,
        _ids: crate::wait::waiter::BatchIds,
        _limits: crate::wait::waiter::Limits,
    ) -> BoxFuture<'static, crate::Result<Vec<Option<crate::observe::Seen>>>> {
        Box::pin(std::future::ready(Err(Error::config("no batch reads here"))))
    }

    fn batch_size(&self) -> Option<usize> {
        None
    }
}

impl Poller {
    /// This wait on a scheduler of its own whose reads are `read` (no rate limit).
    fn watch_with<F, Fut>(self, mut read: F) -> Wait
    where
        F: FnMut(Limits) -> Fut + Send + 'static,
        Fut: Future<Output = crate::Result<Task>> + Send + 'static,
    {
        let provider = self.task_ref().spec().name;
        let source = ReadFn(Mutex::new(Box::new(move |limits| Box::pin(read(limits)))));
        let unlimited = crate::spec::RateSpec { per_second: 1e6, burst: 1_000_000 };
        let lane = crate::wait::waiter::Lane::spawn(
            provider,
            Arc::new(source),
            self.clock().clone(),
            (unlimited, None),
            1,
            None,
        )
        .expect("a tokio runtime");
        Wait::on_lane(lane, self).expect("the scheduler runs")
    }

    /// [`Poller::watch_with`], to its end.
    async fn wait_with<F, Fut>(self, read: F) -> crate::Result<Task>
    where
        F: FnMut(Limits) -> Fut + Send + 'static,
        Fut: Future<Output = crate::Result<Task>> + Send + 'static,
    {
        self.watch_with(read).until_done().await
    }
}

// ---------------------------------------------------------------- errors as reads return them

/// An HTTP error answer, as a read would return it (tests of wait logic).
pub(crate) fn api_error(
    provider: &'static str,
    operation: &'static str,
    status: u16,
    retry_after: Option<std::time::Duration>,
) -> crate::Error {
    crate::Error::Api(crate::error::ApiError {
        provider,
        operation,
        status,
        message: None,
        body_excerpt: String::new(),
        body_is_json: false,
        retry_after,
    })
}

/// A request that timed out, as a read would return it (tests of wait logic).
pub(crate) fn timeout_error(
    provider: &'static str,
    operation: &'static str,
    timeout: std::time::Duration,
) -> crate::Error {
    crate::Error::Transport(crate::error::TransportError {
        provider,
        operation,
        kind: crate::error::TransportKind::Timeout,
        host: "127.0.0.1:1".into(),
        timeout: Some(timeout),
        source: "request timed out".into(),
    })
}
