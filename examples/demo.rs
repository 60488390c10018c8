//! The demo of the `taskpoll` command line (`taskpoll demo`), as an example:
//! `cargo run --example demo --all-features`.
//!
//! Why an example: examples are built with the dev-dependencies, so this
//! command and `cargo test --all-features` build the same dependency tree
//! with the same features, and the tests after the demo reuse its build
//! (`cargo run --features cli -- demo` runs the same code without the
//! dev-dependencies, and the tests then rebuild most of the tree).

#[path = "../src/bin/taskpoll/main.rs"]
#[allow(dead_code)] // the binary's own `main`
mod cli;

fn main() -> std::process::ExitCode {
    cli::run_with(["taskpoll", "demo"])
}
