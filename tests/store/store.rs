//! The wait store: the contract of both backends (in virtual time: every
//! time is an argument), the shared rate budget, concurrent claims, and the
//! stored waiter continuing after a crash.
#![cfg(all(feature = "store-sqlite", feature = "store-postgres", feature = "simulator"))]
#![allow(clippy::disallowed_methods)] // reads real time: a test's or benchmark's own timing

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use crate::support::store::{TestStore, every_store, sqlite};
use taskpoll::clock::ManualClock;
use taskpoll::simulator::{Lifecycle, Simulator};
use taskpoll::spec::RateSpec;
use taskpoll::store::{Claim, NewWait, OutcomeKind, StoredOutcome, StoredWaiter};
use taskpoll::{Client, TaskRef, WaitOptions, WaitState};

use crate::quick_policy;
use crate::support::TestResult;

const T0: u64 = 1_900_000_000_000;

fn claim(provider: &str, worker: &str, now_ms: u64, limit: u32) -> Claim {
    let mut claim = Claim::new(provider, worker, now_ms);
    claim.limit = limit;
    claim
}

/// Waits on `n` deepomatic tasks starting at wall time `T0`, the first poll due at once.
fn new_waits(n: usize, deadline: Duration) -> Result<Vec<NewWait>, taskpoll::Error> {
    let clock = Arc::new(ManualClock::starting_at(std::time::UNIX_EPOCH + Duration::from_millis(T0)));
    let options = WaitOptions::new(deadline).clock(clock);
    (0..n).map(|i| NewWait::new(TaskRef::new("deepomatic", i.to_string())?, &options)).collect()
}

fn outcome_of(wait: &taskpoll::store::ClaimedWait, now_ms: u64) -> StoredOutcome {
    let mut state = wait.state.clone();
    state.attempts = 3;
    StoredOutcome::new(wait.id, OutcomeKind::Deadline, state, now_ms)
}

#[tokio::test]
async fn every_backend_keeps_the_store_contract() -> TestResult {
    for TestStore { name, store, .. } in every_store().await? {
        let waits = new_waits(5, Duration::from_secs(60))?;
        assert_eq!(store.add(&waits).await?, 5, "{name}");
        assert_eq!(store.add(&waits[..2]).await?, 0, "{name}: a task already stored is not added again");
        assert_eq!(store.unfinished(&["deepomatic"]).await?, 5, "{name}");
        assert_eq!(store.unfinished(&["qolaba"]).await?, 0, "{name}");

        // A claims three, B gets the other two while A's lease lives, nothing more.
        assert!(store.renew("a", T0, T0 + 1_000).await?, "{name}: a new worker");
        let a = store.claim(&claim("deepomatic", "a", T0, 3)).await?;
        assert_eq!(a.len(), 3, "{name}");
        assert_eq!(a[0].state.deadline_at_ms, T0 + 60_000, "{name}: the deadline is kept");
        assert!(store.renew("b", T0 + 10, T0 + 100_000).await?, "{name}");
        let b = store.claim(&claim("deepomatic", "b", T0 + 10, 10)).await?;
        assert_eq!(b.len(), 2, "{name}");
        assert!(store.claim(&claim("deepomatic", "b", T0 + 999, 10)).await?.is_empty(), "{name}");
        assert!(store.claim(&claim("qolaba", "b", T0 + 5_000, 10)).await?.is_empty(), "{name}");

        // A saves a state whose next poll is far off (B's save of A's wait is
        // ignored) and renews in time; then its lease runs out, and C claims
        // A's waits, but only those due.
        let mut later: WaitState = a[0].state.clone();
        later.attempts = 2;
        later.next_poll_ms = Some(30_000);
        store.save("a", &[(a[0].id, later.clone())]).await?;
        store.save("b", &[(a[1].id, later.clone())]).await?;
        assert!(store.renew("a", T0 + 500, T0 + 2_000).await?, "{name}: renewed in time");
        assert!(store.claim(&claim("deepomatic", "c", T0 + 1_500, 10)).await?.is_empty(), "{name}: renewed");
        assert!(store.renew("c", T0 + 2_001, T0 + 100_000).await?, "{name}");
        let c = store.claim(&claim("deepomatic", "c", T0 + 2_001, 10)).await?;
        let c_ids: HashSet<i64> = c.iter().map(|w| w.id).collect();
        assert_eq!(c_ids, [a[1].id, a[2].id].into(), "{name}: A's waits once its lease ran out, due ones only");
        assert!(c.iter().all(|w| w.state.attempts == 0), "{name}: B's save was ignored");
        let resumed = store.claim(&claim("deepomatic", "c", T0 + 30_000, 10)).await?;
        assert_eq!(resumed.len(), 1, "{name}");
        assert_eq!(resumed[0].state, later, "{name}: claimed with its saved state");
        // A comes back too late: it is told to let every wait go.
        assert!(!store.renew("a", T0 + 40_000, T0 + 41_000).await?, "{name}: A's lease had run out");
        assert!(store.renew("a", T0 + 40_001, T0 + 42_000).await?, "{name}: and is live again");

        // Only the holder writes an outcome, once.
        let written = store.finish("a", &[outcome_of(&resumed[0], T0 + 30_001)]).await?;
        assert!(written.is_empty(), "{name}: A no longer holds it");
        let written = store.finish("c", &[outcome_of(&resumed[0], T0 + 30_001)]).await?;
        assert_eq!(written, [resumed[0].id], "{name}");
        assert!(store.finish("c", &[outcome_of(&resumed[0], T0 + 30_002)]).await?.is_empty(), "{name}: once");
        assert_eq!(store.unfinished(&["deepomatic"]).await?, 4, "{name}");

        // Released waits are claimable at once, with the released state.
        store.release("b", &[(b[0].id, later.clone())]).await?;
        let again = store.claim(&claim("deepomatic", "d", T0 + 30_000, 10)).await?;
        assert!(again.iter().any(|w| w.id == b[0].id), "{name}: released to d before b's lease ran out");

        // A worker that let its lease run out while holding waits nobody
        // claimed is told so, and its waits are free again.
        assert!(store.renew("e", T0 + 30_000, T0 + 30_500).await?, "{name}");
        let e = store.claim(&claim("deepomatic", "e", T0 + 30_000, 10)).await?;
        assert!(!e.is_empty(), "{name}");
        assert!(!store.renew("e", T0 + 31_000, T0 + 32_000).await?, "{name}");
        let freed = store.claim(&claim("deepomatic", "f", T0 + 31_000, 10)).await?;
        assert_eq!(freed.len(), e.len(), "{name}: handed back, though e is live again");

        // Outcomes: unconsumed ones, then consumed once.
        let outcomes = store.outcomes(10).await?;
        assert_eq!(outcomes.len(), 1, "{name}");
        assert_eq!(outcomes[0].task_ref, resumed[0].state.task_ref, "{name}");
        assert_eq!((outcomes[0].kind, outcomes[0].polls), (OutcomeKind::Deadline, 3), "{name}");
        assert_eq!(store.consume(&[outcomes[0].id]).await?, 1, "{name}");
        assert_eq!(store.consume(&[outcomes[0].id]).await?, 0, "{name}");
        assert!(store.outcomes(10).await?.is_empty(), "{name}");
    }
    Ok(())
}

#[tokio::test]
async fn the_shared_budget_grants_at_most_its_rate_over_time_plus_its_burst() -> TestResult {
    for TestStore { name, store, .. } in every_store().await? {
        // Deepomatic's own budget: 10 per second, bursts of 20.
        let rate: RateSpec = taskpoll::spec::provider("deepomatic").and_then(|p| p.rate()).ok_or("a rate")?;
        assert_eq!((rate.per_second(), rate.burst()), (10.0, 20));
        assert_eq!(store.take_tokens("deepomatic", rate, 50, T0).await?, 20, "{name}: the burst");
        assert_eq!(store.take_tokens("deepomatic", rate, 50, T0).await?, 0, "{name}: empty");
        assert_eq!(store.take_tokens("deepomatic", rate, 50, T0 + 450).await?, 4, "{name}: 4.5 refilled");
        assert_eq!(store.take_tokens("deepomatic", rate, 50, T0 + 500).await?, 1, "{name}: the half kept");
        assert_eq!(store.take_tokens("deepomatic", rate, 3, T0 + 60_000).await?, 3, "{name}: as many as asked");
        assert_eq!(store.take_tokens("deepomatic", rate, 50, T0 + 60_000).await?, 17, "{name}: capped at the burst");
        // A clock behind the row's (another process's) refills nothing.
        assert_eq!(store.take_tokens("deepomatic", rate, 50, T0 + 59_000).await?, 0, "{name}");
        assert_eq!(store.take_tokens("qolaba", rate, 1, T0).await?, 1, "{name}: one budget per provider");

        // Many takers at once get no more than the bucket holds in all.
        let takers = (0..8).map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut got = 0;
                for step in 0..10 {
                    got += store.take_tokens("cloudinary", rate, 3, T0 + step * 100).await?;
                }
                Ok::<u32, taskpoll::Error>(got)
            })
        });
        let mut total = 0;
        for taker in takers {
            total += taker.await??;
        }
        // 20 at first, 10 per second for 0.9 s of refills.
        assert!(total <= 20 + 9, "{name}: {total} granted");
        assert!(total >= 20, "{name}: {total} granted");
    }
    Ok(())
}

#[tokio::test]
async fn concurrent_claims_never_hand_one_wait_to_two_workers() -> TestResult {
    for TestStore { name, store, .. } in every_store().await? {
        store.add(&new_waits(2_000, Duration::from_secs(60))?).await?;
        let workers = (0..4).map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut mine = Vec::new();
                store.renew(&format!("w{w}"), T0, T0 + 60_000).await?;
                loop {
                    let got = store.claim(&claim("deepomatic", &format!("w{w}"), T0, 50)).await?;
                    if got.is_empty() {
                        return Ok::<_, taskpoll::Error>(mine);
                    }
                    mine.extend(got.into_iter().map(|wait| wait.id));
                }
            })
        });
        let mut owner: HashMap<i64, usize> = HashMap::new();
        for (w, worker) in workers.enumerate() {
            for id in worker.await?? {
                assert!(owner.insert(id, w).is_none(), "{name}: wait {id} claimed twice");
            }
        }
        assert_eq!(owner.len(), 2_000, "{name}");
    }
    Ok(())
}

fn client(sim: &Simulator, worker: &str) -> taskpoll::Result<Client> {
    Client::builder()
        .provider(sim.client_config("qolaba").rate_limit(1_000.0, 1_000).max_in_flight(8))
        .user_agent(format!("test worker/{worker}"))
        .build()
}

#[test]
fn a_restarted_waiter_continues_every_wait_with_its_saved_schedule_and_deadline() -> TestResult {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let (sim, test_store, tasks) = runtime.block_on(async {
        let sim = Simulator::start().await?;
        let test_store = sqlite().await?;
        let mut tasks = Vec::new();
        for i in 0..200 {
            // Qolaba reads singly: each task's polls are its own requests.
            let lifecycle = Lifecycle::new().running_for_polls(8 + i % 5).then_succeed();
            tasks.push(sim.add_task("qolaba", lifecycle)?);
        }
        Ok::<_, Box<dyn std::error::Error>>((sim, test_store, tasks))
    })?;
    let store = test_store.store.clone();

    // The first worker, on its own runtime, dies (no release, no goodbye) after a few outcomes.
    let first = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    let crash_after = 20;
    let reported_before = first.block_on(async {
        let mut waiter = StoredWaiter::new(&client(&sim, "one")?, store.clone())
            .worker("one")
            .lease(Duration::from_millis(600))
            .save_every(Duration::from_millis(50))
            .policy(quick_policy());
        let options = WaitOptions::new(Duration::from_secs(20)).policy(quick_policy());
        waiter.add_all(tasks.iter().map(|t| (t.clone(), options.clone())).collect()).await?;
        let mut reported = Vec::new();
        while reported.len() < crash_after {
            let outcome = waiter.next_outcome().await?.ok_or("an outcome")?;
            // Written before reported: the store has it already.
            assert!(store.outcomes(1_000).await?.iter().any(|o| o.id == outcome.id));
            reported.push(outcome);
        }
        // A little longer, so saves happen between polls; then the crash.
        tokio::time::sleep(Duration::from_millis(120)).await;
        std::mem::forget(waiter);
        Ok::<_, Box<dyn std::error::Error>>(reported)
    })?;
    drop(first);
    let crashed_at = tokio::time::Instant::now();
    // A read already on the wire still reaches the simulator.
    std::thread::sleep(Duration::from_millis(100));
    let reads_at_crash: HashMap<TaskRef, u32> = tasks.iter().map(|t| (t.clone(), sim.reads(t))).collect();

    let outcomes = runtime.block_on(async {
        let mut outcomes: HashMap<TaskRef, StoredOutcome> = HashMap::new();
        let mut waiter = StoredWaiter::new(&client(&sim, "two")?, store.clone())
            .worker("two")
            .lease(Duration::from_millis(600))
            .policy(quick_policy());
        while let Some(outcome) = waiter.next_outcome().await? {
            assert!(outcomes.insert(outcome.task_ref.clone(), outcome).is_none(), "reported twice");
        }
        Ok::<_, Box<dyn std::error::Error>>(outcomes)
    })?;

    // Every task reported once, by one worker or the other; the outcomes the
    // first wrote but did not get to report are in the store, unconsumed.
    let before: HashSet<TaskRef> = reported_before.iter().map(|o| o.task_ref.clone()).collect();
    assert_eq!(before.len(), crash_after);
    assert!(before.iter().all(|t| !outcomes.contains_key(t)), "a task reported by both workers");
    let stored = runtime.block_on(store.outcomes(1_000))?;
    assert_eq!(stored.len(), tasks.len(), "one outcome per task in the store");
    let unreported: Vec<&StoredOutcome> =
        stored.iter().filter(|o| !before.contains(&o.task_ref) && !outcomes.contains_key(&o.task_ref)).collect();
    assert!(unreported.iter().all(|o| o.finished_at_ms > 0 && o.kind == OutcomeKind::Succeeded));
    assert_eq!(before.len() + outcomes.len() + unreported.len(), tasks.len());
    let lost_lease = Duration::from_millis(600);
    for (task, outcome) in &outcomes {
        assert_eq!(outcome.kind, OutcomeKind::Succeeded, "{task}: {:?}", outcome.error);
        // The saved deadline, not a fresh one.
        assert_eq!(outcome.state.deadline_at_ms - outcome.state.started_at_ms, 20_000, "{task}");
        // The second worker read nothing of the first's until its lease ran out.
        let reads = sim.requests_for(task);
        let by_two: Vec<_> = reads.iter().filter(|r| r.header("user-agent") == Some("test worker/two")).collect();
        let by_one = reads.len() - by_two.len();
        // Polls carried on from the saved state (a poll after the last save is not counted).
        assert!(outcome.polls as usize <= reads.len(), "{task}");
        if by_one == 0 {
            assert_eq!(outcome.polls as usize, reads.len(), "{task}");
        } else {
            assert!(outcome.polls as usize > by_two.len(), "{task}: attempts carried on");
        }
        assert_eq!(by_one as u32, reads_at_crash[task], "{task}: the first worker read nothing after its crash");
        if by_one > 0 {
            let first_by_two = by_two.first().ok_or("read by two")?.at;
            assert!(first_by_two >= crashed_at + lost_lease / 2, "{task}: read before the lease could run out");
        }
    }
    // The saved schedules carried over: most waits had polled and saved before the crash.
    let resumed_with_polls = outcomes.values().filter(|o| reads_at_crash[&o.task_ref] > 0).count();
    assert!(resumed_with_polls > outcomes.len() / 2, "{resumed_with_polls} of {}", outcomes.len());
    runtime.block_on(sim.shutdown());
    Ok(())
}

#[tokio::test]
async fn every_backend_keeps_the_newest_durations_of_each_lane() -> TestResult {
    use taskpoll::store::SeenDuration;
    for TestStore { name, store, .. } in every_store().await? {
        let seen = |key: &str, i: u64| SeenDuration::new("qolaba", key, i * 100, i * 100 + 50);
        let first: Vec<SeenDuration> = (1..=4).map(|i| seen("", i)).chain([seen("gpu", 9)]).collect();
        store.keep_durations(&first, 3).await?;
        store.keep_durations(&[seen("", 5), seen("gpu", 10)], 3).await?;
        let kept = store.durations().await?;
        let of = |key: &str| kept.iter().filter(|d| d.key == key).map(|d| d.after_ms).collect::<Vec<_>>();
        assert_eq!(of(""), [300, 400, 500], "{name}: the newest three, oldest first");
        assert_eq!(of("gpu"), [900, 1_000], "{name}: a key is a lane of its own");
        assert!(kept.iter().all(|d| d.provider == "qolaba" && d.by_ms == d.after_ms + 50), "{name}: {kept:?}");
    }
    Ok(())
}

/// A worker that starts on a store where another worker's waits ended reads
/// what they learned: its waits have an ETA from their first polls, where a
/// cold engine needs [`taskpoll::Durations::MIN_HISTORY`] completions first;
/// a duration key keeps its own history.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_worker_starts_with_the_durations_the_store_kept() -> TestResult {
    let sim = Simulator::start().await?;
    let test_store = sqlite().await?;
    let store = test_store.store.clone();
    let keyed = WaitOptions::new(Duration::from_secs(20)).policy(quick_policy()).duration_key("gpu");
    let plain = WaitOptions::new(Duration::from_secs(20)).policy(quick_policy());
    let run = |worker: &'static str, waits: Vec<(TaskRef, WaitOptions)>| {
        let (sim, store) = (&sim, store.clone());
        async move {
            let mut waiter = StoredWaiter::new(&client(sim, worker)?, store).worker(worker).policy(quick_policy());
            waiter.add_all(waits).await?;
            let mut states = Vec::new();
            while let Some(outcome) = waiter.next_outcome().await? {
                assert_eq!(outcome.kind, OutcomeKind::Succeeded, "{:?}", outcome.error);
                states.push(outcome.state);
            }
            waiter.stop().await;
            Ok::<_, Box<dyn std::error::Error>>(states)
        }
    };
    let task = |polls: u32| sim.add_task("qolaba", Lifecycle::new().running_for_polls(polls).then_succeed());

    let mut first = Vec::new();
    for i in 0..30 {
        first.push((task(2 + i % 3)?, keyed.clone()));
    }
    run("one", first).await?;
    let kept = store.durations().await?;
    assert_eq!(kept.iter().filter(|d| d.provider == "qolaba" && d.key == "gpu").count(), 30, "{kept:?}");

    // A second worker (a new client: a new engine, nothing learned in memory).
    let (mut second, mut keys) = (Vec::new(), HashMap::new());
    for i in 0..6 {
        let (task, warm) = (task(3)?, i % 2 == 0);
        keys.insert(task.clone(), warm);
        second.push((task, if warm { keyed.clone() } else { plain.clone() }));
    }
    let states = run("two", second).await?;
    assert_eq!(states.len(), 6);
    for state in &states {
        let warm = keys[&state.task_ref];
        assert_eq!(state.eta_p50_ms.is_some(), warm, "{}: keyed {warm}: {state:?}", state.task_ref);
    }
    Ok(())
}
