//! Waiting on tasks, one test binary: the polling engine's logic in virtual
//! time, the engine end to end against a loopback server, the many-task
//! waiter against the simulator, and the fault matrix through the library.

#[path = "../support/mod.rs"]
mod support;

mod faults;
mod many_waits;
mod spans;
mod wait_e2e;
