//! Durable waits, one test binary: the store contract on SQLite and
//! PostgreSQL, the stored waiter, and worker processes sharing a store.

#[path = "../support/mod.rs"]
mod support;

mod deliveries;
mod fleet_webhooks;
mod held_success;
mod outage;
mod sqlite_faults;
mod store;
mod store_workers;

/// Wall-clock now in Unix ms, as the store stamps its rows.
#[allow(dead_code, clippy::disallowed_methods)] // not every feature set builds its users; reads real time
fn now_ms() -> u64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// A fixed 50 ms schedule, for stored waits that should end quickly.
#[allow(dead_code)] // not every feature set builds its users
fn quick_policy() -> taskpoll::Policy {
    taskpoll::Policy::builder()
        .name("quick")
        .initial_delay(std::time::Duration::from_millis(50))
        .factor(1.0)
        .final_poll_reserve(std::time::Duration::from_millis(20))
        .build()
        .expect("a valid policy")
}
