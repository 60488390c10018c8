//! `wait --store` and `outcomes`: waits kept in a store, so they survive a
//! restart and several processes share them.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use taskpoll::store::{OutcomeKind, PostgresStore, SqliteStore, StoredOutcome, StoredWaiter, WaitId, WaitStore};
use taskpoll::{TaskRef, WaitOptions};

use super::args::{OutcomesArgs, WaitManyArgs};
use super::error::Error;
use super::interrupts::Interrupts;
use super::output::{Exit, err_line, print_line, task_json};

/// Opens the store a `--store` URL names.
pub(crate) async fn open(url: &str) -> Result<Arc<dyn WaitStore>, Error> {
    if url.starts_with("sqlite:") {
        Ok(Arc::new(SqliteStore::connect(url).await?))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(PostgresStore::connect(url).await?))
    } else {
        // The value is not echoed: a URL may hold a password.
        Err(Error::usage("--store must be sqlite:PATH or postgres://USER@HOST/DB"))
    }
}

/// `wait --store`: adds the IDs to the store, then works on every wait in it
/// (its own and any other process's) until none is left, printing each
/// outcome once written.
pub(crate) async fn wait(args: &WaitManyArgs, url: &str) -> Result<Exit, Error> {
    let tasks = &args.wait.tasks;
    let refs = if tasks.ids.is_empty() && tasks.from.is_none() { Vec::new() } else { tasks.task_refs()? };
    let worker = args.worker.clone().unwrap_or_else(|| format!("{}-{:08x}", std::process::id(), fastrand::u32(..)));
    let client = tasks.settings.client_with(&refs, |mut builder| {
        builder = builder.user_agent(format!("taskpoll/{} worker/{worker}", env!("CARGO_PKG_VERSION")));
        if let Some(rate) = args.many.rate {
            builder = builder.rate_limit(rate.per_second, rate.burst);
        }
        if let Some(n) = args.many.max_in_flight {
            builder = builder.max_in_flight(usize::from(n));
        }
        builder
    })?;
    let store = open(url).await?;
    let mut waiter = StoredWaiter::new(&client, store.clone()).worker(worker.clone()).lease(args.lease);
    if let Some(n) = args.max_held {
        waiter = waiter.max_held(n as usize);
    }
    if args.webhooks_from_store || args.webhook_listen.is_some() {
        waiter = waiter.webhooks_from_store(true);
    }
    if let Some(name) = args.wait.options.policy.as_deref().filter(|name| *name != "polite") {
        waiter = waiter.policy(taskpoll::Policy::preset(name)?);
    }
    let mut waits: Vec<(TaskRef, WaitOptions)> = Vec::with_capacity(refs.len());
    for task_ref in refs {
        let options = args.wait.options.options(&task_ref)?;
        waits.push((task_ref, options));
    }
    if !waits.is_empty() {
        let asked = waits.len();
        let added = waiter.add_all(waits).await?;
        if (added as usize) < asked {
            err_line(&format!("taskpoll: {} of {asked} tasks were already in the store", asked - added as usize));
        }
    }
    // Deliveries go to the store: whichever worker holds the wait ends it.
    let receiver = match args.webhook_listen {
        Some(addr) => {
            let limits = taskpoll::store::DeliveryLimits::default();
            let server = taskpoll::webhook::serve_store(client.clone(), store.clone(), limits, addr).await?;
            err_line(&format!(
                "taskpoll: receiving webhooks at http://{}/<provider>, written to the store",
                server.addr()
            ));
            Some(server)
        }
        None => None,
    };
    let mut interrupts = Interrupts::listen()?;
    let mut exit = Exit::Ok;
    let mut last_store_error: Option<std::time::Instant> = None;
    let mut printed: Vec<WaitId> = Vec::new();
    let mut ticker = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            item = waiter.next_outcome() => match item {
                Ok(Some(outcome)) => {
                    exit = exit.worse(exit_for(outcome.kind));
                    print_line(&outcome_line(&outcome));
                    printed.push(outcome.id);
                }
                Ok(None) => break,
                // The database failed: the worker keeps what it holds while its lease
                // lives, retries with backoff and goes on when the store is back.
                Err(error) if error.is_store() => {
                    if last_store_error.is_none_or(|at| at.elapsed() >= Duration::from_secs(1)) {
                        err_line(&format!("taskpoll: {error} (retrying)"));
                        last_store_error = Some(std::time::Instant::now());
                    }
                }
                Err(error) => {
                    // The waits are safe in the store: the next run continues them.
                    err_line(&format!("taskpoll: {error}"));
                    consume(store.as_ref(), &mut printed).await;
                    waiter.stop().await;
                    return Err(error.into());
                }
            },
            () = interrupts.next() => {
                consume(store.as_ref(), &mut printed).await;
                waiter.stop().await;
                err_line("taskpoll: interrupted: the waits stay in the store; run `wait --store` again to continue");
                return Ok(Exit::Interrupted);
            }
            _ = ticker.tick() => consume(store.as_ref(), &mut printed).await,
        }
    }
    consume(store.as_ref(), &mut printed).await;
    if let Some(server) = receiver {
        server.shutdown().await;
    }
    let stats = waiter.stats();
    err_line(&format!(
        "taskpoll: worker {worker} done: outcomes={} requests={} polls={} store_writes={} claimed={}",
        stats.outcomes, stats.requests, stats.polls, stats.store_writes, stats.claimed
    ));
    Ok(exit)
}

/// Marks printed outcomes consumed, so `outcomes` does not print them again.
async fn consume(store: &dyn WaitStore, printed: &mut Vec<WaitId>) {
    if printed.is_empty() {
        return;
    }
    match store.consume(printed).await {
        Ok(_) => printed.clear(),
        // Kept for the next try: at worst `outcomes` prints them once more.
        Err(error) => err_line(&format!("taskpoll: {error}")),
    }
}

/// `outcomes`: every outcome not yet consumed, oldest first.
pub(crate) async fn outcomes(args: OutcomesArgs) -> Result<Exit, Error> {
    let store = open(&args.store).await?;
    let mut exit = Exit::Ok;
    let mut seen: Vec<WaitId> = Vec::new();
    loop {
        let page = store.outcomes(1_000).await?;
        // With --keep, nothing is consumed: the same page would come back.
        let fresh: Vec<&StoredOutcome> = page.iter().filter(|o| !seen.contains(&o.id)).collect();
        if fresh.is_empty() {
            break;
        }
        let ids: Vec<WaitId> = fresh.iter().map(|o| o.id).collect();
        for outcome in &fresh {
            exit = exit.worse(exit_for(outcome.kind));
            print_line(&outcome_line(outcome));
        }
        if args.keep {
            if page.len() < 1_000 {
                break;
            }
            seen.extend(ids);
        } else {
            store.consume(&ids).await?;
        }
    }
    Ok(exit)
}

fn exit_for(kind: OutcomeKind) -> Exit {
    match kind {
        OutcomeKind::Succeeded => Exit::Ok,
        OutcomeKind::Failed | OutcomeKind::Cancelled => Exit::TaskFailed,
        OutcomeKind::Deadline => Exit::Deadline,
        _ => Exit::Api,
    }
}

/// The line `wait` prints for a task, from what the store kept.
fn outcome_line(outcome: &StoredOutcome) -> Value {
    let task_ref = &outcome.task_ref;
    let mut line = match &outcome.task {
        Some(task) => task_json(task),
        None => json!({
            "provider": task_ref.provider(), "id": task_ref.id(),
            "phase": outcome.state.last_phase, "status": outcome.state.last_status,
            "http_status": Value::Null, "result": Value::Null,
        }),
    };
    if let Some(error) = &outcome.error {
        line["error"] = json!(error);
    }
    line["outcome"] = json!(outcome.kind);
    if !task_ref.inputs().is_empty() {
        line["inputs"] = json!(task_ref.inputs());
    }
    line["polls"] = json!(outcome.polls);
    line["finished_at_ms"] = json!(outcome.finished_at_ms);
    line
}
