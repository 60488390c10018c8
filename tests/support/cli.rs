//! Running the `taskpoll` binary and reading what it printed.

use std::process::Output;

use serde_json::Value;
use taskpoll::simulator::Simulator;

/// Runs the binary with a clean environment plus `env`.
pub(crate) async fn taskpoll(args: &[&str], env: &[(String, String)]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_taskpoll"))
        .args(args)
        .env_clear()
        .envs(env.iter().cloned())
        .output()
        .await
        .expect("the binary runs")
}

/// The simulator's credentials as environment variables.
pub(crate) fn sim_env(sim: &Simulator) -> Vec<(String, String)> {
    sim.credentials().into_iter().map(|v| (v.name, v.value)).collect()
}

/// Each stdout line as JSON.
pub(crate) fn lines(output: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line: {l:?}: {e}")))
        .collect()
}

pub(crate) fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Characters that must never reach a terminal raw (newlines end lines only).
pub(crate) fn raw_control(c: char) -> bool {
    (c.is_control() && c != '\n')
        || matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}
