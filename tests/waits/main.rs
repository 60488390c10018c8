//! Waiting on tasks, one test binary: the polling engine's logic in virtual
//! time, the engine end to end against a loopback server, the many-task
//! waiter against the simulator, the fault matrix through the library, and
//! the blocking client.

#[path = "../support/mod.rs"]
mod support;

#[cfg(feature = "blocking")]
mod blocking;
mod faults;
mod many_waits;
mod spans;
mod wait_e2e;
