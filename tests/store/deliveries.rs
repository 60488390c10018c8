//! Webhook deliveries in the store, on SQLite and PostgreSQL: written by an
//! in-process receiver (`webhook::serve_store`), bounded per provider with
//! each drop counted, found by the worker that claims a wait added after its
//! delivery, duplicates and late deliveries harmless, expired ones counted.
#![cfg(all(feature = "store-sqlite", feature = "store-postgres", feature = "simulator", feature = "webhook"))]
#![allow(clippy::disallowed_methods)] // reads real time: the receiver stamps deliveries with it

use std::time::Duration;

use crate::now_ms;
use crate::support::TestResult;
use crate::support::store::{TestStore, every_store};
use taskpoll::simulator::{Callback, Lifecycle, Simulator};
use taskpoll::store::{Claim, DeliveryLimits, DeliveryWrite, NewWait, OutcomeKind, StoredOutcome};
use taskpoll::{TaskRef, WaitOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_are_bounded_counted_and_found_by_the_wait_added_later() -> TestResult {
    for TestStore { name, store, .. } in every_store().await? {
        let sim = Simulator::start().await?;
        let limits = DeliveryLimits::new(3, Duration::from_secs(3_600));
        let addr = "127.0.0.1:0".parse()?;
        let server = taskpoll::webhook::serve_store(sim.client()?, store.clone(), limits, addr).await?;
        let mut tasks: Vec<TaskRef> = Vec::new();
        for _ in 0..5 {
            let callback = Callback::to(server.url("cloudinary"));
            tasks.push(sim.add_task_with_callback("cloudinary", Lifecycle::new().then_succeed(), callback)?);
            // One at a time, so "oldest first" is well defined.
            while sim.webhook_deliveries().iter().filter(|d| d.status == Some(204)).count() < tasks.len() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        let stats = store.delivery_stats().await?;
        assert_eq!(stats.len(), 1, "{name}: {stats:?}");
        assert_eq!((stats[0].kept, stats[0].dropped_over_capacity, stats[0].expired), (3, 2, 0), "{name}");

        // A wait on the newest task, added after its delivery: due at once, and its
        // claimer finds the delivery (the verified task, marked as a webhook's).
        let options = WaitOptions::new(Duration::from_secs(600));
        assert_eq!(store.add(&[NewWait::new(tasks[4].clone(), &options)?]).await?, 1);
        renew(&*store, "w").await?;
        let claimed = store.claim(&Claim::new("cloudinary", "w", now_ms())).await?;
        assert_eq!(claimed.len(), 1, "{name}: due at once");
        let found = store.deliveries("w", 10).await?;
        assert_eq!(found.len(), 1, "{name}");
        assert_eq!(found[0].id(), tasks[4].id(), "{name}");
        assert_eq!(found[0].via(), taskpoll::Via::Webhook, "{name}");
        assert!(found[0].result().is_some(), "{name}: the result only a webhook carries");
        assert!(store.deliveries("other", 10).await?.is_empty(), "{name}: only the holder's waits");
        // The oldest two were dropped: a wait on one of them finds nothing.
        assert_eq!(store.add(&[NewWait::new(tasks[0].clone(), &options)?]).await?, 1);

        // A duplicate is harmless; once the outcome is written, a late one is not kept.
        let task = found[0].clone();
        assert_eq!(store.deliver(&task, now_ms(), &limits).await?, DeliveryWrite::AlreadyKept, "{name}");
        let outcome = StoredOutcome::new(claimed[0].id, OutcomeKind::Succeeded, claimed[0].state.clone(), now_ms());
        assert_eq!(store.finish("w", &[outcome]).await?, vec![claimed[0].id], "{name}");
        store.sweep(now_ms(), &limits, 0).await?;
        assert_eq!(store.deliver(&task, now_ms(), &limits).await?, DeliveryWrite::WaitFinished, "{name}");

        // Two hours on, the other two expire, counted.
        store.sweep(now_ms() + 7_200_000, &limits, 0).await?;
        let stats = store.delivery_stats().await?;
        assert_eq!((stats[0].kept, stats[0].dropped_over_capacity, stats[0].expired), (0, 2, 2), "{name}");
        server.shutdown().await;
        sim.shutdown().await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_deliveries_leave_the_capacity_and_count_every_drop() -> TestResult {
    const DELIVERIES: usize = 40;
    const CAPACITY: u32 = 10;
    for TestStore { name, store, .. } in every_store().await? {
        let sim = Simulator::start().await?;
        let client = sim.client()?;
        let mut tasks = Vec::new();
        for _ in 0..DELIVERIES {
            let task = sim.add_task("deepomatic", Lifecycle::new().then_succeed())?;
            tasks.push(client.get(&task).await?);
        }
        // All at once, on as many of the store's connections as it has: each
        // trims after its own write, so none is left over the capacity at the end.
        let limits = DeliveryLimits::new(CAPACITY, Duration::from_secs(3_600));
        let writes = tasks.iter().map(|task| store.deliver(task, now_ms(), &limits));
        for write in futures_util::future::join_all(writes).await {
            assert_eq!(write?, DeliveryWrite::Written, "{name}");
        }
        let stats = store.delivery_stats().await?;
        let counts = (stats[0].kept, stats[0].dropped_over_capacity, stats[0].expired);
        assert_eq!(counts, (u64::from(CAPACITY), (DELIVERIES as u64) - u64::from(CAPACITY), 0), "{name}");
        sim.shutdown().await;
    }
    Ok(())
}

async fn renew(store: &dyn taskpoll::store::WaitStore, worker: &str) -> Result<bool, taskpoll::Error> {
    store.renew(worker, now_ms(), now_ms() + 60_000).await
}

#[tokio::test]
async fn a_read_only_sqlite_store_is_a_typed_error() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("waits.db");
    drop(taskpoll::store::SqliteStore::open(&path).await?);
    let url = format!("sqlite:{}?mode=ro", path.display());
    let store = taskpoll::store::SqliteStore::connect(&url).await;
    let error = match store {
        Ok(store) => {
            use taskpoll::store::WaitStore as _;
            let options = WaitOptions::new(Duration::from_secs(60));
            let wait = NewWait::new(TaskRef::new("deepomatic", "1")?, &options)?;
            store.add(&[wait]).await.err().ok_or("a read-only store took a write")?
        }
        Err(error) => error,
    };
    let taskpoll::Error::Store(store_error) = &error else { return Err(format!("{error}").into()) };
    assert_eq!(store_error.fault(), taskpoll::error::StoreFault::ReadOnly, "{error}");
    assert!(
        error.to_string().ends_with(": the database is read-only (check the permissions of its file and directory)"),
        "{error}"
    );
    eprintln!("{error}");
    Ok(())
}
