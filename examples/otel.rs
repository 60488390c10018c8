//! taskpoll's spans as OpenTelemetry traces: a wait on the offline simulator,
//! exported with `tracing-opentelemetry` to stdout.
//!
//! Run with `cargo run --example otel --features simulator`. Each span
//! prints as it ends: the HTTP reads (`GET /api/v1/...`, with
//! `http.request.method`, `url.template`, `server.address`, `server.port`,
//! `http.response.status_code`) as children of the wait's span
//! (`taskpoll.wait`, with `provider`, `task_id`, `outcome`, `polls`).
//! For a collector, put `opentelemetry-otlp`'s exporter in place of the
//! stdout one; nothing else changes.

use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use taskpoll::simulator::{Lifecycle, Simulator};
use taskpoll::{Policy, WaitOptions};
use tracing_subscriber::layer::SubscriberExt as _;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let provider =
        SdkTracerProvider::builder().with_simple_exporter(opentelemetry_stdout::SpanExporter::default()).build();
    let tracer = provider.tracer("taskpoll-example");
    // taskpoll's spans are at INFO level; its poll events (DEBUG) are left out.
    let subscriber = tracing_subscriber::registry()
        .with(tracing_subscriber::filter::LevelFilter::INFO)
        .with(tracing_opentelemetry::layer().with_tracer(tracer));
    tracing::subscriber::set_global_default(subscriber)?;

    let sim = Simulator::start().await?;
    let client = sim.client()?;
    let task = sim.add_task("factpulse", Lifecycle::new().queued_for_polls(1).running_for_polls(1).then_succeed())?;
    let policy = Policy::builder().initial_delay(Duration::from_millis(100)).build()?;
    let done = client.wait(&task, WaitOptions::new(Duration::from_secs(30)).policy(policy)).await?;
    eprintln!("{} ended {} after its polls; its spans follow on stdout", task, done.phase());

    // The wait's span has ended; flush what the exporter holds.
    provider.shutdown()?;
    Ok(())
}
