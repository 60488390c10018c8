//! A crate that depends on taskpoll and declares its own provider
//! (`tests/user_crate/`: `specs/acme.yaml`, a three-line build.rs calling
//! `taskpoll::codegen::Build`) builds, and its provider works with the
//! client, the many-task waiter and the simulator (its own tests, run here).
//!
//! It builds offline from its committed lockfile into `<target>/user_crate`,
//! so repeated runs are incremental. Needs the `codegen` and `simulator`
//! features only to be meaningful next to them (CI runs `--all-features`).
//! Too slow for every `cargo test`, it is ignored there and run as a step of
//! its own: `cargo test --all-features --test user_crate -- --ignored`.
#![cfg(all(feature = "codegen", feature = "simulator"))]

use std::path::{Path, PathBuf};
use std::process::Command;

fn target_dir() -> PathBuf {
    // CARGO_TARGET_TMPDIR is `<target>/tmp`; the crate gets its own folder next to it.
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    tmp.parent().unwrap_or(tmp).join("user_crate")
}

#[test]
#[ignore = "builds a whole crate (minutes on two cores): run it with `--test user_crate -- --ignored`, as .ci/run does"]
fn a_provider_declared_in_another_crate_works_with_client_waiter_and_simulator() {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/user_crate/Cargo.toml");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = Command::new(cargo)
        .args(["test", "--locked", "--offline", "--manifest-path"])
        .arg(&manifest)
        .env("CARGO_TARGET_DIR", target_dir())
        .env_remove("RUSTFLAGS")
        .output()
        .expect("runs cargo");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "the user crate's build or tests failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("test result: ok. 5 passed"), "its five tests did not all run:\n{stdout}");
    assert!(!stderr.contains("warning"), "building it printed warnings:\n{stderr}");
}
