//! The blocking client (feature `blocking`) from plain threads: no test
//! macro, the simulator on a runtime of its own, the client on the one it
//! owns. Real time with millisecond delays; no duration is asserted.

#![allow(clippy::unwrap_used)] // In tests a panic is the failure report.

use std::time::Duration;

use taskpoll::simulator::{Lifecycle, Simulator};
use taskpoll::{Client, Error, Phase, Policy, ProviderConfig, WaitOptions};

/// The simulator, served by a runtime of its own (its worker threads), as a
/// provider is served by another process.
struct Served {
    sim: Option<Simulator>,
    runtime: tokio::runtime::Runtime,
}

impl Served {
    fn start() -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let sim = runtime.block_on(Simulator::start()).unwrap();
        Self { sim: Some(sim), runtime }
    }

    fn sim(&self) -> &Simulator {
        self.sim.as_ref().unwrap()
    }

    fn blocking_client(&self) -> taskpoll::blocking::Client {
        Client::builder().provider(self.sim().client_config("deepomatic")).build_blocking().unwrap()
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(sim) = self.sim.take() {
            self.runtime.block_on(sim.shutdown());
        }
    }
}

fn quick_policy() -> Policy {
    Policy::builder()
        .name("quick")
        .initial_delay(Duration::from_millis(20))
        .factor(1.0)
        .final_poll_reserve(Duration::from_millis(10))
        .build()
        .unwrap()
}

#[test]
fn a_plain_thread_reads_and_waits_with_the_blocking_client() {
    let served = Served::start();
    let client = served.blocking_client();
    let lifecycle = Lifecycle::new().queued_for_polls(1).running_for_polls(2).then_succeed();
    let task = served.sim().add_task("deepomatic", lifecycle).unwrap();

    assert_eq!(client.get(&task).unwrap().phase(), Phase::Queued);
    let done = client.wait(&task, WaitOptions::new(Duration::from_secs(30)).policy(quick_policy())).unwrap();
    assert_eq!((done.id(), done.phase()), (task.id(), Phase::Succeeded));
    assert!(served.sim().reads(&task) >= 4, "{} reads", served.sim().reads(&task));

    let finished = Lifecycle::new().then_succeed();
    let more: Vec<_> = (0..3).map(|_| served.sim().add_task("deepomatic", finished.clone()).unwrap()).collect();
    let ids: Vec<&str> = more.iter().map(|t| t.id()).collect();
    let read = client.get_many("deepomatic", &ids).unwrap();
    let read: Vec<(String, Phase)> =
        read.into_iter().map(|t| t.map(|t| (t.id().to_string(), t.phase())).unwrap()).collect();
    assert_eq!(read, ids.iter().map(|id| (id.to_string(), Phase::Succeeded)).collect::<Vec<_>>());

    // Clones share the runtime; waits from several threads at once all end.
    let threads: Vec<_> = more
        .iter()
        .map(|task| {
            let (client, task) = (client.clone(), task.clone());
            std::thread::spawn(move || client.wait(&task, WaitOptions::new(Duration::from_secs(30))).map(|t| t.phase()))
        })
        .collect();
    for thread in threads {
        assert_eq!(thread.join().unwrap().unwrap(), Phase::Succeeded);
    }
}

#[test]
fn the_blocking_deadline_error_holds_the_state_to_resume_with() {
    let served = Served::start();
    let client = served.blocking_client();
    let task = served.sim().add_task("deepomatic", Lifecycle::new().running_forever()).unwrap();
    let options = WaitOptions::new(Duration::from_millis(300)).policy(quick_policy());

    let err = client.wait(&task, options.clone()).unwrap_err();
    assert!(err.is_deadline(), "{err:?}");
    let Error::DeadlineExceeded(first) = err else { unreachable!() };
    let state = first.wait_state().clone();
    assert_eq!(state.task_ref, task);
    // Deepomatic has one unfinished status (`pending`), read as queued.
    assert_eq!(state.last_phase, Some(Phase::Queued));
    assert!(state.attempts >= 1 && state.attempts == first.polls(), "{state:?}");

    // The state resumes the wait: its polls carry on from where the first one stopped.
    let err = client.resume(state.clone(), options).unwrap_err();
    let Error::DeadlineExceeded(second) = err else { panic!("{err:?}") };
    assert!(second.polls() > state.attempts, "{} then {}", state.attempts, second.polls());
}

#[test]
fn inside_a_runtime_the_blocking_client_is_a_config_error_not_a_panic_or_a_deadlock() {
    // Nothing listens there: no call may get as far as sending.
    let builder =
        || Client::builder().provider(ProviderConfig::new("deepomatic").api_key("k").base_url("http://127.0.0.1:9"));
    let client = builder().build_blocking().unwrap();
    let task = "deepomatic:1".parse().unwrap();

    // A current-thread runtime: blocking its only thread on a wait would never return.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let errors = [
            client.get(&task).unwrap_err(),
            client.get_many("deepomatic", &["1"]).unwrap_err(),
            client.wait(&task, WaitOptions::new(Duration::from_secs(5))).unwrap_err(),
            builder().build_blocking().unwrap_err(),
        ];
        for err in errors {
            assert!(err.is_config(), "{err:?}");
            assert!(err.to_string().contains("inside an async runtime"), "{err}");
        }
        // Also from a thread of the runtime's blocking pool.
        let (client, task) = (client.clone(), task.clone());
        let err = tokio::task::spawn_blocking(move || client.get(&task)).await.unwrap().unwrap_err();
        assert!(err.is_config(), "{err:?}");
    });
    // The last clone dropped inside a runtime stops its own without a panic.
    runtime.block_on(async move { drop(client) });
}
