//! Waits on a task at the built-in simulator, through a 429 with `Retry-After`.
//!
//! `cargo run --example simulated_wait --features simulator`

use std::time::Duration;

use taskpoll::simulator::{Fault, Lifecycle, Simulator};
use taskpoll::{Phase, WaitOptions};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let sim = Simulator::start().await?;
    let client = sim.client()?;
    let task = sim.add_task("deepomatic", Lifecycle::new().queued_for_polls(2).then_succeed())?;
    sim.inject(&task, Fault::RateLimited { retry_after: Some(Duration::from_secs(1)) }, 1)?;

    let done = client.wait(&task, WaitOptions::new(Duration::from_secs(30))).await?;
    assert_eq!(done.phase(), Phase::Succeeded);
    println!("{} {} after {} requests", done.task_ref(), done.phase(), sim.requests_for(&task).len());
    Ok(())
}
