//! A held success (a polled Cloudinary success waiting for its webhook's
//! result) that a worker takes over after its holder died, with its grace
//! over by then and its delivery already in the store: the delivery wins.
#![cfg(all(feature = "store-sqlite", feature = "simulator", feature = "webhook"))]
#![allow(clippy::disallowed_methods)] // reads real time: the receiver stamps deliveries with it

use std::time::Duration;

use crate::now_ms;
use crate::support::TestResult;
use crate::support::store::sqlite;
use taskpoll::simulator::{Callback, Lifecycle, Simulator};
use taskpoll::store::{Claim, DeliveryLimits, NewWait, OutcomeKind, StoredWaiter};
use taskpoll::{Phase, Via, WaitOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_over_held_success_ends_with_the_delivery_in_the_store_even_after_its_grace() -> TestResult {
    let sim = Simulator::start().await?;
    let test_store = sqlite().await?;
    let store = test_store.store.clone();
    let limits = DeliveryLimits::default();
    let server = taskpoll::webhook::serve_store(sim.client()?, store.clone(), limits, "127.0.0.1:0".parse()?).await?;
    // Finished at once; its delivery comes a little later.
    let callback = Callback::to(server.url("cloudinary")).delay(Duration::from_millis(300));
    let task = sim.add_task_with_callback("cloudinary", Lifecycle::new().then_succeed(), callback)?;

    // A worker claims the wait, polls the success and saves it held; then it dies.
    let options = WaitOptions::new(Duration::from_secs(600));
    store.add(&[NewWait::new(task.clone(), &options)?]).await?;
    store.renew("dead", now_ms(), now_ms() + 200).await?;
    let claimed = store.claim(&Claim::new("cloudinary", "dead", now_ms())).await?;
    let [wait] = claimed.as_slice() else { panic!("one wait: {claimed:?}") };
    let mut state = wait.state.clone();
    // Polled a minute ago: its 30 s grace is over.
    state.started_at_ms = now_ms() - 60_000;
    state.attempts = 1;
    state.last_poll_ms = Some(0);
    state.last_phase = Some(Phase::Succeeded);
    state.last_status = Some("completed".to_string());
    state.next_poll_ms = None;
    store.save("dead", &[(wait.id, state)]).await?;
    // The delivery reaches the store while nobody holds the wait.
    while sim.webhook_deliveries().iter().all(|d| d.status != Some(204)) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(250)).await;

    let client = taskpoll::Client::builder().provider(sim.client_config("cloudinary")).build()?;
    let mut waiter = StoredWaiter::new(&client, store.clone()).worker("heir").webhooks_from_store(true);
    let outcome = tokio::time::timeout(Duration::from_secs(20), waiter.next_outcome()).await??.ok_or("an outcome")?;
    assert_eq!(outcome.kind, OutcomeKind::Succeeded, "{outcome:?}");
    let ended_with = outcome.task.as_ref().ok_or("a task")?;
    assert_eq!(ended_with.via(), Via::Webhook, "{outcome:?}");
    assert!(ended_with.result().is_some(), "the result only the webhook carries: {outcome:?}");
    assert_eq!(sim.reads(&task), 0, "the held success is not polled again");
    waiter.stop().await;
    server.shutdown().await;
    sim.shutdown().await;
    Ok(())
}
