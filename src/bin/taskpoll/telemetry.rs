//! What the command line tells about itself: logs on stderr (`-v`, `-vv`,
//! `RUST_LOG`, `--log-format text|json`), and metrics for Prometheus
//! (`--metrics-listen ADDR`).
//!
//! Every log line goes through the same escaping as the CLI's other output,
//! so a server's text in an error cannot move the cursor or forge a line.
//! The library never logs a header (headers carry the credentials) and
//! marks credential headers sensitive, which hides them from reqwest's and
//! hyper's own debug output too.

use std::net::SocketAddr;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

use super::error::Error;
use super::output::{err_line, escape_controls, escape_json_text};

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum LogFormat {
    /// One line of text per event, with its wait's span (`taskpoll.wait{provider=… task_id=…}`).
    Text,
    /// One JSON object per line.
    Json,
}

/// The filter: `RUST_LOG` when set (it replaces `-v`), else warnings, plus
/// taskpoll's debug events (every poll) with `-v`, and everything's with `-vv`.
fn filter(verbose: u8) -> Result<EnvFilter, Error> {
    match std::env::var("RUST_LOG") {
        Ok(directives) if !directives.trim().is_empty() => {
            EnvFilter::try_new(&directives).map_err(|e| Error::usage(format!("RUST_LOG `{directives}`: {e}")))
        }
        _ => Ok(EnvFilter::new(match verbose {
            0 => "warn",
            1 => "warn,taskpoll=debug",
            _ => "debug,taskpoll=trace",
        })),
    }
}

/// Installs the log subscriber on stderr.
pub(crate) fn init_logs(verbose: u8, format: LogFormat) -> Result<(), Error> {
    let builder =
        tracing_subscriber::fmt().with_env_filter(filter(verbose)?).with_ansi(false).with_writer(Escaped(format));
    let installed = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    // Only fails when a subscriber is installed already (the demo runs the CLI twice in one process).
    let _ = installed;
    Ok(())
}

/// Writes each log line to stderr, escaped; a closed stderr is not an error.
#[derive(Clone, Copy)]
struct Escaped(LogFormat);

impl<'a> MakeWriter<'a> for Escaped {
    type Writer = Self;

    fn make_writer(&'a self) -> Self::Writer {
        *self
    }
}

impl std::io::Write for Escaped {
    /// The formatter hands over one whole event (its line and newline) at a time.
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        let line = text.strip_suffix('\n').unwrap_or(&text);
        let escaped = match self.0 {
            LogFormat::Text => escape_controls(line),
            // serde_json escaped the C0 controls already; what it passes through raw becomes `\uXXXX`.
            LogFormat::Json => escape_json_text(line),
        };
        let mut stderr = std::io::stderr().lock();
        let _ = writeln!(stderr, "{escaped}");
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let _ = std::io::stderr().flush();
        Ok(())
    }
}

/// Installs the Prometheus recorder and serves it at `http://ADDR/metrics`
/// (the address actually bound is printed on stderr: port 0 picks a free one).
/// Before the first wait: the library registers a provider's metrics when
/// its first wait starts.
pub(crate) async fn serve_metrics(addr: SocketAddr) -> Result<(), Error> {
    let bad = |e: &dyn std::fmt::Display| Error::usage(format!("--metrics-listen {addr}: {e}"));
    let recorder =
        buckets(PrometheusBuilder::new().with_recommended_naming(true)).map_err(|e| bad(&e))?.build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).map_err(|e| bad(&e))?;
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| bad(&e))?;
    let bound = listener.local_addr().map_err(|e| bad(&e))?;
    err_line(&format!("taskpoll: metrics for Prometheus at http://{bound}/metrics"));
    let scrape = handle.clone();
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let handle = scrape.clone();
            async move { handle.render() }
        }),
    );
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            err_line(&format!("taskpoll: the metrics endpoint stopped: {e}"));
        }
    });
    tokio::spawn(upkeep(handle));
    Ok(())
}

/// Histogram buckets: seconds for durations (a request's to a long wait's), counts for polls and batches.
fn buckets(builder: PrometheusBuilder) -> Result<PrometheusBuilder, metrics_exporter_prometheus::BuildError> {
    const SECONDS: [f64; 16] =
        [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0];
    const POLLS: [f64; 10] = [1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 50.0, 100.0, 500.0, 1000.0];
    const BATCH: [f64; 10] = [1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0];
    builder
        .set_buckets_for_metric(Matcher::Suffix("duration".into()), &SECONDS)?
        .set_buckets_for_metric(Matcher::Full("taskpoll.wait.polls".into()), &POLLS)?
        .set_buckets_for_metric(Matcher::Full("taskpoll.batch.size".into()), &BATCH)
}

/// Drains the histograms' pending samples now and then (the recorder's own upkeep, which this server must run).
async fn upkeep(handle: PrometheusHandle) {
    let mut every = tokio::time::interval(Duration::from_secs(5));
    loop {
        every.tick().await;
        handle.run_upkeep();
    }
}
