//! The `taskpoll` command line end to end, one test binary: its output,
//! exit codes and messages against the simulator, and the fault matrix
//! through the binary.

#[path = "../support/mod.rs"]
mod support;

mod cli;
mod faults_cli;
mod observability;
