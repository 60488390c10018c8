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
