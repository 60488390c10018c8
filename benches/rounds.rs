//! Do co-started waits stay in one round? taskpoll's `Waiter` against the
//! official Deepomatic client's `Task.batch_wait`, on the same kind of tasks.
//!
//! 1,000 Deepomatic tasks (`TASKS`) start together and finish at random
//! times over 0.5-4 s (`FROM_MS`, `SPREAD_MS`). They are waited on:
//!
//! - by taskpoll: one [`Waiter`] with the official client's own schedule
//!   (`Policy::preset("deepomatic_client")`: 50 ms, then 100 ms plus full
//!   jitter on a cap doubling to 1 s) and a rate budget far above what the
//!   run needs, so it never throttles;
//! - by the official Python client, when `OFFICIAL_PYTHON` names a Python
//!   with `deepomatic-api` installed: `Task.batch_wait` on a fresh set of
//!   tasks with the same finish times, through `benches/rounds_official.py`.
//!   Each of its rounds reads every pending id, 100 per page, following
//!   `next`.
//!
//! Both talk to the same loopback server (axum, HTTP/1.1 keep-alive), which
//! answers `GET /v0.7/tasks/{id}/` and `GET /v0.7/tasks/?task_ids=..` in the
//! shapes of `specs/deepomatic.yaml` (a task is `success` from its finish
//! instant on) and counts the requests. Printed for each side, per run and
//! over all runs (`RUNS`, each with its own finish times): requests, rounds
//! (bursts of requests less than 20 ms apart), how long a round lasts (its
//! first request to its last) and the idle time between two rounds, on
//! average, and detection lag p50 / p99 (when the waiter reported a task, or the official
//! client's round that saw it ended, minus the task's finish time). Not a
//! test: it asserts nothing, it prints the figures next to the goal of
//! issue 24 (taskpoll sends no more requests than `batch_wait`).
//!
//! Run with `cargo bench --bench rounds --features simulator` (release) or
//! `cargo test --bench rounds --features simulator` (debug; the request
//! counts are the same kind, the lag a little higher). For the official side,
//! `python3 -m venv venv && venv/bin/pip install deepomatic-api`, then
//! `OFFICIAL_PYTHON=venv/bin/python`.
//!
//! [`Waiter`]: taskpoll::Waiter

#![allow(clippy::disallowed_methods)] // reads real time: a benchmark's own timing

use std::error::Error as StdError;
use std::io::{BufRead as _, BufReader, Write as _};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse as _, Response};
use axum::routing::get;
use futures_util::StreamExt as _;
use serde_json::Value;
use taskpoll::spec::providers;
use taskpoll::{Client, Credential, Policy, ProviderConfig, TaskRef, WaitOptions};

type BoxResult<T> = Result<T, Box<dyn StdError + Send + Sync>>;

/// Deepomatic task ids: nine digits, like real ones. Each run and side takes
/// its own block of ids, so no side reads another's tasks.
const ID_BASE: usize = 100_000_000;
/// Far above what a run needs: the budget never holds a poll back.
const RATE_PER_SECOND: f64 = 5_000.0;
const RATE_BURST: u32 = 1_000;
const DEADLINE: Duration = Duration::from_secs(30);
/// Requests further apart than this are in different rounds.
const ROUND_GAP_MS: f64 = 20.0;
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/rounds_official.py");

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok()).unwrap_or(default)
}

/// The loopback Deepomatic server.
#[derive(Default)]
struct Server {
    /// When the current run started, and each task's finish time in ms after it, by id.
    table: RwLock<(Option<Instant>, usize, Vec<u32>)>,
    /// When each request arrived, in ms after the run's start.
    arrivals: Mutex<Vec<(f64, usize)>>,
    addr: Mutex<String>,
}

impl Server {
    /// A fresh set of tasks from `first_id` on, finishing `offsets` ms after now.
    fn start(&self, first_id: usize, offsets: Vec<u32>) {
        *self.table.write().unwrap_or_else(|e| e.into_inner()) = (Some(Instant::now()), first_id, offsets);
        self.arrivals.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// Records a request for `ids` tasks.
    fn record(&self, ids: usize) {
        let start = self.table.read().unwrap_or_else(|e| e.into_inner()).0;
        if let Some(start) = start {
            self.arrivals.lock().unwrap_or_else(|e| e.into_inner()).push((start.elapsed().as_secs_f64() * 1e3, ids));
        }
    }

    /// The run's requests, and its rounds: bursts of requests with less than
    /// `ROUND_GAP_MS` between one and the next (a round's pages, sent together
    /// or one after the other), how long each lasted and the idle time after it.
    fn requests(&self) -> Figures {
        let mut arrivals = self.arrivals.lock().unwrap_or_else(|e| e.into_inner()).clone();
        arrivals.sort_by(|a, b| a.0.total_cmp(&b.0));
        // Each round: its requests, as (ms after the start, ids).
        let rounds: Vec<&[(f64, usize)]> = arrivals.chunk_by(|a, b| b.0 - a.0 < ROUND_GAP_MS).collect();
        // Each round's first and last request (ms after the start).
        let spans: Vec<(f64, f64)> = rounds.iter().map(|round| (round[0].0, round[round.len() - 1].0)).collect();
        if std::env::var_os("ROUNDS_DETAIL").is_some() {
            let mut line = String::new();
            for (round, &(first, last)) in rounds.iter().zip(&spans) {
                line.push_str(&format!("\n  {first:>6.0} ms (+{:>3.0} ms):", last - first));
                for (_, ids) in *round {
                    line.push_str(&format!(" {ids}"));
                }
            }
            eprintln!("requests by round:{line}");
        }
        // The fewest requests that read each round's ids: ⌈ids / 100⌉ per round.
        let fewest: usize =
            rounds.iter().map(|round| round.iter().map(|(_, ids)| ids).sum::<usize>().div_ceil(100)).sum();
        // From a round's first request to its last, and from its last to the next round's first.
        let round_ms = spans.iter().map(|(first, last)| last - first).collect();
        let idle_ms = spans.windows(2).map(|pair| pair[1].0 - pair[0].1).collect();
        Figures {
            requests: arrivals.len() as u64,
            rounds: rounds.len() as u64,
            fewest: fewest as u64,
            round_ms,
            idle_ms,
            ..Figures::default()
        }
    }

    /// The task as JSON text (as in the spec's examples); `None` for an unknown id.
    fn task(&self, id: &str, now: Instant) -> Option<String> {
        let table = self.table.read().unwrap_or_else(|e| e.into_inner());
        let (start, first, offsets) = &*table;
        let offset = *offsets.get(id.parse::<usize>().ok()?.checked_sub(*first)?)?;
        let done = start.is_some_and(|start| now >= start + Duration::from_millis(u64::from(offset)));
        // `id` parsed as a number above, so it needs no escaping.
        Some(if done {
            format!(
                r#"{{"id":"{id}","status":"success","error":null,"date_created":"2018-03-10T20:38:12.818792Z","date_updated":"2018-03-10T20:38:13.032942Z","data":{{"outputs":[]}},"subtasks":null}}"#
            )
        } else {
            format!(
                r#"{{"id":"{id}","status":"pending","error":null,"date_created":"2018-03-10T20:39:47.346716Z","date_updated":null,"data":null,"subtasks":null}}"#
            )
        })
    }
}

fn json_text(body: String) -> Response {
    ([(axum::http::header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn single(State(server): State<Arc<Server>>, Path(id): Path<String>) -> Response {
    server.record(1);
    match server.task(&id, Instant::now()) {
        Some(task) => json_text(task),
        None => (StatusCode::NOT_FOUND, json_text(r#"{"detail":"Not found."}"#.into())).into_response(),
    }
}

/// `GET /v0.7/tasks/?task_ids=..&limit=..&offset=..`: a page of the listed
/// tasks, with a `next` link repeating the ids.
async fn batch(State(server): State<Arc<Server>>, RawQuery(query): RawQuery) -> Response {
    let mut ids = Vec::new();
    let (mut limit, mut offset) = (10usize, 0usize);
    for pair in query.as_deref().unwrap_or("").split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = percent_encoding::percent_decode_str(value).decode_utf8_lossy().into_owned();
        match key {
            "task_ids" => ids.push(value),
            "limit" => limit = value.parse().unwrap_or(limit).clamp(1, 1_000),
            "offset" => offset = value.parse().unwrap_or(0),
            _ => {}
        }
    }
    server.record(ids.len().saturating_sub(offset).min(limit));
    let now = Instant::now();
    let results: Vec<String> = ids.iter().skip(offset).take(limit).filter_map(|id| server.task(id, now)).collect();
    let next = (offset + limit < ids.len()).then(|| {
        let addr = server.addr.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let task_ids: Vec<String> = ids.iter().map(|id| format!("task_ids={id}")).collect();
        format!("{addr}/v0.7/tasks/?{}&limit={limit}&offset={}", task_ids.join("&"), offset + limit)
    });
    let next = serde_json::to_string(&next).unwrap_or_else(|_| "null".into());
    json_text(format!(r#"{{"count":{},"next":{next},"previous":null,"results":[{}]}}"#, ids.len(), results.join(",")))
}

/// Starts the server on its own runtime (one worker thread), so its work does
/// not queue behind the client's.
fn serve(runtime: &tokio::runtime::Runtime) -> BoxResult<(Arc<Server>, String)> {
    let server = Arc::new(Server::default());
    let listener = runtime.block_on(tokio::net::TcpListener::bind(("127.0.0.1", 0)))?;
    let url = format!("http://{}", listener.local_addr()?);
    *server.addr.lock().unwrap_or_else(|e| e.into_inner()) = url.clone();
    let app = Router::new()
        .route("/v0.7/tasks/{id}/", get(single))
        .route("/v0.7/tasks/", get(batch))
        .with_state(server.clone());
    runtime.spawn(async move { axum::serve(listener, app).await });
    Ok((server, url))
}

/// When each task finishes, in ms after the start.
fn finish_offsets(n: usize, from_ms: u32, spread_ms: u32, seed: u64) -> Vec<u32> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..n).map(|_| rng.u32(from_ms..from_ms + spread_ms.max(1))).collect()
}

/// What one side measured in one run.
#[derive(Default)]
struct Figures {
    requests: u64,
    rounds: u64,
    /// Σ ⌈ids read in a round / 100⌉: the fewest requests for the same rounds.
    fewest: u64,
    succeeded: usize,
    unfinished: usize,
    lags_ms: Vec<f64>,
    /// How long each round lasted (its first request to its last).
    round_ms: Vec<f64>,
    /// The time between one round's last request and the next round's first.
    idle_ms: Vec<f64>,
}

impl Figures {
    fn add(&mut self, other: Figures) {
        self.requests += other.requests;
        self.rounds += other.rounds;
        self.fewest += other.fewest;
        self.succeeded += other.succeeded;
        self.unfinished += other.unfinished;
        self.lags_ms.extend(other.lags_ms);
        self.round_ms.extend(other.round_ms);
        self.idle_ms.extend(other.idle_ms);
    }

    fn line(&mut self, label: &str) -> String {
        self.lags_ms.sort_by(f64::total_cmp);
        format!(
            "{label:<34} {:>8} {:>6} {:>6} {:>8.1} {:>7.0} {:>9} {:>10} {:>12.0} {:>12.0}",
            self.requests,
            self.fewest,
            self.rounds,
            mean(&self.round_ms),
            mean(&self.idle_ms),
            self.succeeded,
            self.unfinished,
            percentile(&self.lags_ms, 50.0),
            percentile(&self.lags_ms, 99.0)
        )
    }
}

fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len().max(1) as f64
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn client(url: &str) -> BoxResult<Client> {
    let spec = providers().iter().find(|spec| spec.name() == "deepomatic").ok_or("no deepomatic spec")?;
    let mut config =
        ProviderConfig::new("deepomatic").base_url(format!("{url}/v0.7")).rate_limit(RATE_PER_SECOND, RATE_BURST);
    for scheme in spec.schemes() {
        config = config.credential(scheme.name(), Credential::Token(secrecy::SecretString::from("bench")));
    }
    Ok(Client::builder().provider(config).build()?)
}

/// taskpoll's side: one waiter over every task, the official client's schedule.
fn taskpoll(
    runtime: &tokio::runtime::Runtime,
    server: &Server,
    url: &str,
    first_id: usize,
    offsets: &[u32],
) -> BoxResult<Figures> {
    let client = client(url)?;
    // `OFFSET_MS` lengthens every delay, as the official loop's own rounds
    // (their pages read one after another) lengthen its gaps.
    let official = Policy::preset("deepomatic_client")?;
    let offset = official.offset() + Duration::from_millis(env_usize("OFFSET_MS", 0) as u64);
    let policy = official.to_builder().offset(offset).build()?;
    let options = WaitOptions::new(DEADLINE).policy(policy);
    let tasks = (0..offsets.len())
        .map(|i| TaskRef::new("deepomatic", (first_id + i).to_string()))
        .collect::<taskpoll::Result<Vec<_>>>()?;
    server.start(first_id, offsets.to_vec());
    let t0 = Instant::now();
    let reports = runtime.block_on(async {
        let mut waiter = client.waiter();
        waiter.add_many(tasks, &options)?;
        let mut reports = Vec::with_capacity(offsets.len());
        while let Some((task, result)) = waiter.next().await {
            reports.push((task, t0.elapsed().as_secs_f64() * 1e3, result));
        }
        Ok::<_, taskpoll::Error>(reports)
    })?;
    let mut figures = server.requests();
    for (task, at_ms, result) in reports {
        match result {
            Ok(task_done) if task_done.phase() == taskpoll::Phase::Succeeded => {
                figures.succeeded += 1;
                let index = task.id().parse::<usize>()? - first_id;
                figures.lags_ms.push(at_ms - f64::from(offsets[index]));
            }
            other => {
                if figures.unfinished == 0 {
                    let outcome = other.map(|task| task.phase().to_string()).unwrap_or_else(|e| e.to_string());
                    eprintln!("rounds: first wait that did not succeed: {outcome}");
                }
                figures.unfinished += 1;
            }
        }
    }
    Ok(figures)
}

/// The official client's side: `Task.batch_wait` in `rounds_official.py`,
/// started once its imports are done, on the server's clock (Unix time).
fn official(python: &str, server: &Server, url: &str, first_id: usize, offsets: &[u32]) -> BoxResult<Figures> {
    let mut child = Command::new(python)
        .arg(SCRIPT)
        .arg(url)
        .arg(first_id.to_string())
        .arg(offsets.len().to_string())
        .arg(DEADLINE.as_secs().to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut stdin = child.stdin.take().ok_or("no stdin")?;
    let mut stdout = BufReader::new(child.stdout.take().ok_or("no stdout")?);
    let mut line = String::new();
    stdout.read_line(&mut line)?;
    if line.trim() != "ready" {
        let _ = child.kill();
        return Err(format!("rounds_official.py did not start: {line:?}").into());
    }
    server.start(first_id, offsets.to_vec());
    let epoch = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs_f64();
    writeln!(stdin, "{epoch}")?;
    stdin.flush()?;
    line.clear();
    stdout.read_line(&mut line)?;
    let _ = child.wait();
    let answer: Value = serde_json::from_str(&line)?;
    let mut figures = server.requests();
    let seen = answer["seen_ms"].as_object().ok_or("no seen_ms")?;
    for (id, at_ms) in seen {
        let index = id.parse::<usize>()? - first_id;
        figures.lags_ms.push(at_ms.as_f64().unwrap_or(f64::NAN) - f64::from(offsets[index]));
    }
    figures.succeeded = answer["success"].as_u64().unwrap_or(0) as usize;
    figures.unfinished = offsets.len() - figures.succeeded;
    Ok(figures)
}

fn main() -> BoxResult<()> {
    let n = env_usize("TASKS", 1_000);
    let runs = env_usize("RUNS", 3);
    let from_ms = env_usize("FROM_MS", 500) as u32;
    let spread_ms = env_usize("SPREAD_MS", 3_500) as u32;
    let python = std::env::var("OFFICIAL_PYTHON").ok().filter(|p| !p.is_empty());
    let server_runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    let (server, url) = serve(&server_runtime)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;

    println!(
        "rounds: {n} Deepomatic tasks started together, finishing over {:.1}-{:.1} s; {runs} runs",
        f64::from(from_ms) / 1e3,
        f64::from(from_ms + spread_ms) / 1e3
    );
    if python.is_none() {
        println!("(OFFICIAL_PYTHON not set: the official client's side is skipped)");
    }
    println!(
        "{:<34} {:>8} {:>6} {:>6} {:>8} {:>7} {:>9} {:>10} {:>12} {:>12}",
        "side",
        "requests",
        "fewest",
        "rounds",
        "round ms",
        "idle ms",
        "succeeded",
        "unfinished",
        "lag p50 ms",
        "lag p99 ms"
    );
    let (mut ours_total, mut theirs_total) = (Figures::default(), Figures::default());
    for run in 0..runs {
        let offsets = finish_offsets(n, from_ms, spread_ms, 24 + run as u64);
        let first_id = ID_BASE + 2 * run * n;
        std::thread::sleep(Duration::from_millis(300));
        let mut ours = taskpoll(&runtime, &server, &url, first_id, &offsets)?;
        println!("{}", ours.line(&format!("run {run}: taskpoll Waiter")));
        ours_total.add(ours);
        if let Some(python) = &python {
            std::thread::sleep(Duration::from_millis(300));
            let mut theirs = official(python, &server, &url, first_id + n, &offsets)?;
            println!("{}", theirs.line(&format!("run {run}: official batch_wait")));
            theirs_total.add(theirs);
        }
    }
    println!("{}", ours_total.line("all runs: taskpoll Waiter"));
    if python.is_some() {
        println!("{}", theirs_total.line("all runs: official batch_wait"));
        println!(
            "taskpoll / batch_wait: requests {:.2}x, rounds {:.2}x, lag p50 {:.2}x (goal: requests <= 1.00x)",
            ours_total.requests as f64 / theirs_total.requests.max(1) as f64,
            ours_total.rounds as f64 / theirs_total.rounds.max(1) as f64,
            percentile(&ours_total.lags_ms, 50.0) / percentile(&theirs_total.lags_ms, 50.0)
        );
    }
    Ok(())
}
