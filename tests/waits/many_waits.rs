//! The many-task waiter end to end, against the simulator: a thousand tasks
//! across every provider, batch reads, cancellation, resuming, dropping.
#![cfg(feature = "simulator")]
#![allow(clippy::disallowed_methods)] // reads real time: a test's or benchmark's own timing

use std::collections::HashMap;
use std::time::Duration;

use futures_util::StreamExt as _;
use taskpoll::simulator::{Lifecycle, Simulator};
use taskpoll::spec::providers;
use taskpoll::{Client, Error, Phase, Policy, TaskRef, WaitOptions};

use crate::support::TestResult;

/// A client for every provider at the simulator, with a budget loose enough
/// for a thousand tasks in a test.
fn client(sim: &Simulator) -> taskpoll::Result<Client> {
    providers()
        .iter()
        .fold(Client::builder(), |builder, spec| {
            builder.provider(sim.client_config(spec.name()).rate_limit(1_000.0, 1_000).max_in_flight(8))
        })
        .build()
}

fn quick(deadline: Duration) -> WaitOptions {
    let policy = Policy::builder()
        .initial_delay(Duration::from_millis(40))
        .factor(1.0)
        .final_poll_reserve(Duration::from_millis(20))
        .build()
        .expect("a valid policy");
    WaitOptions::new(deadline).policy(policy)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_tasks_across_every_provider_each_reported_once() -> TestResult {
    let sim = Simulator::start().await?;
    let client = client(&sim)?;
    let mut expected: HashMap<TaskRef, Phase> = HashMap::new();
    let per_provider = 1000 / providers().len();
    for spec in providers() {
        for i in 0..per_provider {
            let (lifecycle, phase) = match i % 5 {
                4 => (Lifecycle::new().queued_for_polls(1).then_fail("bad input"), Phase::Failed),
                n => (Lifecycle::new().queued_for_polls(n as u32).then_succeed(), Phase::Succeeded),
            };
            expected.insert(sim.add_task(spec.name(), lifecycle)?, phase);
        }
    }
    let waiter = client.waiter();
    let options = quick(Duration::from_secs(30));
    for task in expected.keys() {
        waiter.add(task.clone(), &options)?;
    }
    let mut seen: HashMap<TaskRef, Phase> = HashMap::new();
    let mut polls: HashMap<&str, usize> = HashMap::new();
    let mut waiter = waiter;
    while let Some(outcome) = waiter.next_outcome().await {
        let (task_ref, result) = (outcome.task_ref, outcome.result);
        // The scripts finish on poll 1 to 4 (queued for 0 to 3 polls).
        assert!((1..=4).contains(&outcome.polls), "{task_ref}: {} polls", outcome.polls);
        *polls.entry(task_ref.provider()).or_default() += outcome.polls as usize;
        let phase = match result {
            Ok(task) => task.phase(),
            Err(error) => error.task().map(|t| t.phase()).ok_or(format!("{task_ref}: {error}"))?,
        };
        assert!(seen.insert(task_ref, phase).is_none(), "a task reported twice");
    }
    assert_eq!(seen, expected);
    // Batch providers were read in batches: single reads cost a request per
    // poll; batch reads carry several polls each (up to max-ids, fewer when
    // real time splits a round: adds still arriving, answers landing apart),
    // so at least 1.5 on average. The exact count per round is tested in
    // virtual time (`waiter::tests::due_polls_are_coalesced_into_batches_of_max_ids`).
    for spec in providers().iter().filter(|p| p.many().is_some()) {
        let requests = sim.requests().iter().filter(|r| r.provider == Some(spec.name())).count();
        let polls = polls[spec.name()];
        assert!(3 * requests <= 2 * polls, "{}: {requests} requests for {polls} polls", spec.name());
    }
    Ok(())
}

#[tokio::test]
async fn get_many_sends_the_page_size_so_a_small_server_default_does_not_matter() -> TestResult {
    // The simulator's default page is 2 ids: without an explicit page size, 1,000 ids cost 500 requests.
    let sim = Simulator::start().await?;
    let client = client(&sim)?;
    for spec in providers().iter().filter(|p| p.many().is_some_and(|m| m.page_size_param().is_some())) {
        let mut ids = Vec::new();
        for _ in 0..1000 {
            ids.push(sim.add_task(spec.name(), Lifecycle::new().then_succeed())?.id().to_string());
        }
        sim.clear_requests();
        let results = client.get_many(spec.name(), &ids).await?;
        assert!(results.iter().all(Result::is_ok));
        let max_ids = spec.many().map_or(1, |m| m.max_ids() as usize);
        assert_eq!(sim.requests().len(), 1000usize.div_ceil(max_ids), "{}", spec.name());
    }
    Ok(())
}

#[tokio::test]
async fn outcomes_at_the_deadline_are_sorted_with_the_state_of_every_pending_task() -> TestResult {
    let sim = Simulator::start().await?;
    let client = client(&sim)?;
    let done = sim.add_task("deepomatic", Lifecycle::new().then_succeed())?;
    let failed = sim.add_task("factpulse", Lifecycle::new().then_fail("no"))?;
    let stuck = sim.add_task("qolaba", Lifecycle::new().running_forever())?;
    let waiter = client.waiter();
    for task in [&done, &failed, &stuck] {
        waiter.add(task.clone(), &quick(Duration::from_millis(400)))?;
    }
    let started = tokio::time::Instant::now();
    let outcomes = waiter.finish().await;
    assert!(started.elapsed() < Duration::from_millis(400 + 200), "ended by the deadline");
    assert_eq!(outcomes.succeeded.iter().map(|t| t.task_ref().clone()).collect::<Vec<_>>(), [done]);
    assert_eq!(outcomes.failed.len(), 1);
    assert!(outcomes.failed[0].1.is_task_failure());
    assert_eq!(outcomes.pending.len(), 1);
    let pending = &outcomes.pending[0];
    assert_eq!(pending.task_ref, stuck);
    assert!(pending.error.is_deadline());
    assert!(pending.state.attempts > 1);
    // Nothing was sent at or after the deadline.
    let last = sim.requests_for(&stuck).last().map(|r| r.at).ok_or("polled")?;
    assert!(last < started + Duration::from_millis(400));
    Ok(())
}

#[tokio::test]
async fn a_cancelled_wait_can_be_resumed_and_a_handle_adds_while_running() -> TestResult {
    let sim = Simulator::start().await?;
    let client = client(&sim)?;
    let slow = sim.add_task("cloudinary", Lifecycle::new().running_for(Duration::from_millis(300)).then_succeed())?;
    let mut waiter = client.waiter();
    waiter.add(slow.clone(), &quick(Duration::from_secs(20)))?;
    assert!(waiter.add(slow.clone(), &quick(Duration::from_secs(20))).is_err(), "already waiting on it");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(waiter.cancel(&slow));
    let (task_ref, result) = waiter.next().await.ok_or("an outcome")?;
    assert_eq!(task_ref, slow);
    let error = result.expect_err("cancelled");
    assert!(error.is_wait_cancelled(), "{error}");
    let state = error.wait_state().ok_or("a state")?.clone();
    assert!(state.attempts >= 1);

    // A handle adds from another task while the outcomes are read; the
    // cancelled wait carries on from its state.
    let handle = waiter.handle();
    let quick_one = sim.add_task("factpulse", Lifecycle::new().then_succeed())?;
    let adder = tokio::spawn({
        let quick_one = quick_one.clone();
        async move { handle.add(quick_one, &quick(Duration::from_secs(20))) }
    });
    adder.await??;
    waiter.resume(state.clone(), &quick(Duration::from_secs(20)))?;
    let outcomes = waiter.finish().await;
    let mut succeeded: Vec<TaskRef> = outcomes.succeeded.iter().map(|t| t.task_ref().clone()).collect();
    succeeded.sort();
    let mut wanted = vec![slow.clone(), quick_one];
    wanted.sort();
    assert_eq!(succeeded, wanted);
    // Attempts carried on across the cancellation.
    assert!(sim.reads(&slow) > state.attempts);
    Ok(())
}

#[tokio::test]
async fn dropping_the_waiter_stops_every_wait_at_once() -> TestResult {
    let sim = Simulator::start().await?;
    let client = client(&sim)?;
    let waiter = client.waiter();
    for spec in providers() {
        for _ in 0..5 {
            waiter
                .add(sim.add_task(spec.name(), Lifecycle::new().running_forever())?, &quick(Duration::from_secs(60)))?;
        }
    }
    let handle = waiter.handle();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!sim.requests().is_empty());
    drop(waiter);
    // Reads already on the wire may still land (slowly, on a busy machine); none goes out after.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after_drop = sim.requests().len();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(sim.requests().len(), after_drop, "no request after the waiter is dropped");
    let task = TaskRef::new("deepomatic", "1")?;
    let refused = handle.add(task, &quick(Duration::from_secs(1))).expect_err("the waiter is gone");
    assert!(refused.is_config());
    Ok(())
}

#[tokio::test]
async fn a_provider_this_client_does_not_configure_is_refused() -> TestResult {
    let sim = Simulator::start().await?;
    let client = Client::builder().provider(sim.client_config("deepomatic")).build()?;
    let waiter = client.waiter();
    let error = waiter.add(TaskRef::new("qolaba", "x")?, &quick(Duration::from_secs(1))).expect_err("not configured");
    assert!(matches!(error, Error::ProviderNotConfigured(_)), "{error}");
    assert_eq!(waiter.pending(), 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_added_at_once_are_read_in_full_batches_from_the_first_round() -> TestResult {
    let sim = Simulator::start().await?;
    let client = client(&sim)?;
    let mut tasks = Vec::new();
    for _ in 0..1_000 {
        tasks.push(sim.add_task("deepomatic", Lifecycle::new().queued_for_polls(1).then_succeed())?);
    }
    let mut waiter = client.waiter();
    waiter.add_many(tasks.clone(), &quick(Duration::from_secs(30)))?;
    assert_eq!(waiter.pending(), 1_000);
    let mut ended = 0;
    while let Some((_, result)) = waiter.next().await {
        assert_eq!(result?.phase(), Phase::Succeeded);
        ended += 1;
    }
    assert_eq!(ended, 1_000);
    // The first round is ⌈1,000 / 100⌉ full batch reads: it did not start
    // before every wait was in (a loop of `add` may send its first reads
    // while the rest are still arriving). Each task is read twice in all.
    let sizes: Vec<usize> = sim.requests().iter().map(|r| r.task_ids.len()).collect();
    assert_eq!(sizes[..10], [100; 10], "{sizes:?}");
    assert_eq!(sizes.iter().sum::<usize>(), 2_000, "{sizes:?}");
    Ok(())
}

#[tokio::test]
async fn adding_many_adds_all_or_none() -> TestResult {
    let sim = Simulator::start().await?;
    let client = Client::builder().provider(sim.client_config("deepomatic")).build()?;
    let waiter = client.waiter();
    let options = quick(Duration::from_secs(5));
    let (a, b) = (TaskRef::new("deepomatic", "1")?, TaskRef::new("deepomatic", "2")?);
    // A task listed twice, or one of a provider the client does not configure: none is added.
    let error = waiter.add_many([a.clone(), b.clone(), a.clone()], &options).expect_err("listed twice");
    assert!(error.to_string().contains("already waiting on"), "{error}");
    let error = waiter.add_many([a.clone(), TaskRef::new("qolaba", "x")?], &options).expect_err("not configured");
    assert!(matches!(error, Error::ProviderNotConfigured(_)), "{error}");
    assert_eq!(waiter.pending(), 0);
    // One already waited on: refused too, and the rest is not added.
    waiter.add(a.clone(), &options)?;
    let error = waiter.add_many([b.clone(), a], &options).expect_err("already waiting");
    assert!(error.to_string().contains("already waiting on"), "{error}");
    assert_eq!(waiter.pending(), 1);
    waiter.cancel_all();
    Ok(())
}

// ---------------------------------------------------------------- one engine

/// The operations the simulator saw for a provider, in order.
fn operations(sim: &Simulator, provider: &str) -> Vec<&'static str> {
    sim.requests().iter().filter(|r| r.provider == Some(provider)).filter_map(|r| r.operation).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_wait_is_read_singly_and_lone_waits_together_in_batches() -> TestResult {
    let sim = Simulator::start().await?;
    let client = client(&sim)?;
    // One task: the documented single read, every poll (no batch of one).
    let lone = sim.add_task("deepomatic", Lifecycle::new().queued_for_polls(2).then_succeed())?;
    let task = client.wait(&lone, quick(Duration::from_secs(30))).await?;
    assert_eq!(task.phase(), Phase::Succeeded);
    assert_eq!(operations(&sim, "deepomatic"), ["get_task"; 3], "{:?}", sim.requests());
    // Twenty lone waits of one client at once share its scheduler: batch reads.
    let before = sim.requests().len();
    let mut tasks = Vec::new();
    for _ in 0..20 {
        tasks.push(sim.add_task("deepomatic", Lifecycle::new().queued_for_polls(2).then_succeed())?);
    }
    let waits = tasks.iter().map(|task| client.wait(task, quick(Duration::from_secs(30))).until_done());
    for result in futures_util::future::join_all(waits).await {
        assert_eq!(result?.phase(), Phase::Succeeded);
    }
    let requests = sim.requests().split_off(before);
    let batches = requests.iter().filter(|r| r.task_ids.len() > 1).count();
    assert!(batches >= 1, "no batch read: {requests:?}");
    assert!(requests.len() < 20 * 3, "{} requests for 20 waits of 3 polls", requests.len());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lone_waits_and_a_waiter_share_the_providers_rate_budget() -> TestResult {
    let sim = Simulator::start().await?;
    // Two requests a second, no burst beyond one: four waits of one client,
    // two lone and two in a waiter, each polled about every 40 ms.
    let client = Client::builder().provider(sim.client_config("factpulse").rate_limit(2.0, 1)).build()?;
    let mut tasks = Vec::new();
    for _ in 0..4 {
        tasks.push(sim.add_task("factpulse", Lifecycle::new().queued_for_polls(1_000).then_succeed())?);
    }
    let options = quick(Duration::from_millis(1_500));
    let mut waiter = client.waiter();
    waiter.add(tasks[0].clone(), &options)?;
    waiter.add(tasks[1].clone(), &options)?;
    let lone = futures_util::future::join(
        client.wait(&tasks[2], options.clone()).until_done(),
        client.wait(&tasks[3], options.clone()).until_done(),
    );
    let (outcomes, (a, b)) = tokio::join!(async { (waiter.next().await, waiter.next().await) }, lone);
    assert!(a.is_err_and(|e| e.is_deadline()) && b.is_err_and(|e| e.is_deadline()));
    assert!(matches!(outcomes, (Some((_, Err(_))), Some((_, Err(_))))));
    // 1.5 s at 2 a second (and the one of the burst): at most 4 reads in all, where
    // four independent loops would have sent about 4 × 37.
    let reads = operations(&sim, "factpulse").len();
    assert!((1..=4).contains(&reads), "{reads} reads under a budget of 2/s");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiters_events_show_every_poll_of_every_task() -> TestResult {
    let sim = Simulator::start().await?;
    let client = client(&sim)?;
    let mut waiter = client.waiter();
    let mut events = waiter.events().ok_or("events are watched once")?;
    assert!(waiter.events().is_none(), "a second watcher is refused");
    let tasks = [
        sim.add_task("qolaba", Lifecycle::new().queued_for_polls(1).then_succeed())?,
        sim.add_task("factpulse", Lifecycle::new().queued_for_polls(2).then_succeed())?,
    ];
    for task in &tasks {
        waiter.add(task.clone(), &quick(Duration::from_secs(30)))?;
    }
    let outcomes = waiter.by_ref().take(2).collect::<Vec<_>>().await;
    assert!(outcomes.iter().all(|(_, result)| result.is_ok()));
    drop(waiter);
    let events: Vec<_> = events.by_ref().collect().await;
    for (task, polls) in tasks.iter().zip([2, 3]) {
        let mine: Vec<_> = events.iter().filter(|e| &e.state.task_ref == task).collect();
        let attempts: Vec<u32> = mine.iter().map(|e| e.attempt).collect();
        assert_eq!(attempts, (1..=polls).collect::<Vec<_>>(), "{task}");
        assert_eq!(mine.first().and_then(|e| e.phase), Some(Phase::Queued));
        assert!(mine.first().is_some_and(|e| e.changed));
        assert_eq!(mine.last().and_then(|e| e.phase), Some(Phase::Succeeded));
    }
    Ok(())
}
