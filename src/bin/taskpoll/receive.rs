//! `receive`: a process that only verifies webhook deliveries and writes
//! them to the store, for the workers (`wait --store`) that hold the waits.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use taskpoll::store::{DeliveryLimits, PostgresStore};

use super::args::ReceiveArgs;
use super::error::Error;
use super::interrupts::Interrupts;
use super::output::{Exit, err_line};
use super::stored;

/// How often the store is swept (expired deliveries, workers gone).
const SWEEP_EVERY: Duration = Duration::from_secs(10);
/// A worker whose lease ran out this long ago, holding nothing, is forgotten.
const GONE_AFTER: Duration = Duration::from_secs(3_600);

pub(crate) async fn receive(args: ReceiveArgs) -> Result<Exit, Error> {
    let client = args.settings.client(&[])?;
    let store = if args.no_notify && (args.store.starts_with("postgres://") || args.store.starts_with("postgresql://"))
    {
        std::sync::Arc::new(PostgresStore::connect(&args.store).await?.notify_deliveries(false))
    } else {
        stored::open(&args.store).await?
    };
    let limits = DeliveryLimits::new(args.keep, args.keep_for);
    let server = taskpoll::webhook::serve_store(client, store.clone(), limits, args.listen).await?;
    err_line(&format!("taskpoll: receiving webhooks at http://{}/<provider>, written to the store", server.addr()));
    let mut interrupts = Interrupts::listen()?;
    let mut sweep = tokio::time::interval(SWEEP_EVERY);
    loop {
        tokio::select! {
            () = interrupts.next() => break,
            _ = sweep.tick() => {
                let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
                let gone_before = now_ms.saturating_sub(GONE_AFTER.as_millis() as u64);
                if let Err(error) = store.sweep(now_ms, &limits, gone_before).await {
                    err_line(&format!("taskpoll: {error} (retrying)"));
                }
            }
        }
    }
    server.shutdown().await;
    if let Ok(stats) = store.delivery_stats().await {
        for s in stats {
            err_line(&format!(
                "taskpoll: {}: deliveries kept={} dropped_over_capacity={} expired={}",
                s.provider, s.kept, s.dropped_over_capacity, s.expired
            ));
        }
    }
    Ok(Exit::Interrupted)
}
