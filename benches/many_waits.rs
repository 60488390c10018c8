//! What does waiting on many tasks cost: one `Waiter`, or one `Client::wait` per task?
//!
//! Runs, in the same process and the same run, side by side, the same tasks
//! waited on (a) by one [`Waiter`] and (b) by independent `Client::wait`
//! calls, all concurrent (`join_all`), and prints for each, and their ratio:
//! requests per task; requests per polling round against ⌈pending / 100⌉
//! (Deepomatic's batch read takes 100 ids); peak RSS and peak live heap above
//! a baseline taken just before the run, and per task; peak open connections;
//! detection lag (report time − the task's finish time) p50 / p99 against the
//! poll interval; CPU time. Not a test: it asserts nothing, it prints figures
//! next to the goals of issue 10.
//!
//! Loads: 1,000 / 10,000 / 100,000 Deepomatic tasks finishing at random times
//! within 4 s, and a mixed set across the four providers. Both sides use a
//! fixed poll interval (500 ms; 2 s for the second 100,000 run, see
//! `DEFAULT_LOADS`), so "one poll interval" is well defined. Then a
//! separate memory figure: 100,000 Deepomatic tasks that never finish,
//! measured for a few polling rounds.
//!
//! The servers run in a child process (this binary again, with
//! `MANY_WAITS_SERVER=1`), driven over its stdin/stdout, so the RSS and CPU
//! figures are the client's alone and the two sides' sockets fit in the open
//! file limit (10,000 independent waits need ~10,000 sockets on each end):
//!
//! - Deepomatic: a loopback HTTP/1.1 server (axum, keep-alive) answering
//!   `GET /v0.7/tasks/{id}/` and `GET /v0.7/tasks/?task_ids=..&limit=..&offset=..`
//!   in the shapes of `specs/deepomatic.yaml`, each task `success` from an
//!   absolute finish instant on; it counts requests and accepted − closed
//!   connections.
//! - The mixed set: `taskpoll::simulator::Simulator` (tasks `running_for(d)`,
//!   timed from their first read, so a task's finish time is its first read
//!   plus `d`), behind a counting TCP proxy.
//!
//! RSS is the process's `VmRSS` sampled every 20 ms; the live heap comes from
//! a counting global allocator, sampled alongside. RSS of a later run can
//! read low when the allocator reuses pages an earlier run freed, which the
//! heap figure does not suffer from; the never-finishing memory figure runs
//! first for a clean RSS.
//!
//! Run with `cargo bench --bench many_waits --all-features`. Environment:
//! `LOADS=1000,10000,100000,100000@2000` (Deepomatic task counts, each with
//! its poll interval in ms after `@`; 500 ms if none), `INDEPENDENT_CAP=10000`
//! (larger loads skip the independent side, which opens a socket per task),
//! `MIXED=1000` (tasks in the mixed set, 0 to skip), `MEMORY_TASKS=100000`
//! and `MEMORY_SECONDS=3` (the never-finishing figure, 0 tasks to skip),
//! `SPREAD_MS=4000` (finish times), `MAX_IN_FLIGHT` (the waiter's bound per
//! provider; default the library's), `TIMELINE=1` (the Deepomatic server's
//! requests per 100 ms of each run, to see its rounds).
//!
//! [`Waiter`]: taskpoll::Waiter

#![allow(clippy::disallowed_methods)] // reads real time: a test's or benchmark's own timing

use std::collections::HashMap;
use std::error::Error as StdError;
use std::io::{BufRead as _, BufReader, Write as _};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use serde_json::{Value, json};
use taskpoll::spec::{SchemeKind, providers};
use taskpoll::{Client, Credential, Policy, ProviderConfig, TaskRef, WaitOptions};

type BoxResult<T> = Result<T, Box<dyn StdError + Send + Sync>>;

/// Counts live heap bytes (the `cap` crate rather than a hand-written
/// `GlobalAlloc`: the package forbids unsafe code).
#[global_allocator]
static ALLOCATOR: cap::Cap<std::alloc::System> = cap::Cap::new(std::alloc::System, usize::MAX);

const SERVER_ROLE: &str = "MANY_WAITS_SERVER";
/// The poll interval of every load unless `LOADS` gives one (`N@MS`).
const POLL_INTERVAL: Duration = Duration::from_millis(500);
const DEEPOMATIC_MAX_IDS: usize = 100;
/// The mixed set's providers (`--all-features` also brings the test-only fixture provider).
const MIXED_PROVIDERS: [&str; 4] = ["cloudinary", "deepomatic", "factpulse", "qolaba"];
/// Deepomatic task ids: nine digits, like real ones.
const ID_BASE: usize = 100_000_000;
/// The waiter's budget per provider: far above what any load here needs
/// (100,000 tasks polled every 500 ms in batches of 100 is 2,000 requests/s).
const RATE_PER_SECOND: f64 = 5_000.0;
const RATE_BURST: u32 = 1_000;
const NEVER: u32 = u32::MAX;
/// Sampling period of RSS and heap.
const SAMPLE_EVERY: Duration = Duration::from_millis(20);

fn main() -> BoxResult<()> {
    if std::env::var_os(SERVER_ROLE).is_some() {
        return server::main();
    }
    bench::main()
}

/// When each task finishes, in ms after the start, the same in both processes.
fn finish_offsets(n: usize, spread_ms: u32, seed: u64) -> Vec<u32> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..n).map(|_| rng.u32(0..spread_ms.max(1))).collect()
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok()).unwrap_or(default)
}

/// Process CPU time (user + system) from `/proc/self/stat`, in ms. The
/// kernel reports it in USER_HZ ticks, 100 per second on Linux.
fn cpu_ms() -> u64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else { return 0 };
    let Some((_, after_name)) = stat.rsplit_once(')') else { return 0 };
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    // Fields 14 (utime) and 15 (stime) of stat(5); field 3 is index 0 here.
    (ticks(11) + ticks(12)) * 10
}

/// The server process: the Deepomatic server and the simulator behind a
/// counting proxy, driven by one JSON command per stdin line.
mod server {
    use std::pin::Pin;
    use std::sync::{Mutex, RwLock};
    use std::task::{Context, Poll};

    use axum::extract::{Path, RawQuery, State};
    use axum::http::StatusCode;
    use axum::response::{IntoResponse as _, Response};
    use axum::routing::get;
    use axum::{Json, Router};
    use taskpoll::simulator::{Lifecycle, Simulator};
    use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
    use tokio::net::{TcpListener, TcpSocket, TcpStream};

    use super::*;

    /// Open connections: accepted − closed, and the peak since the last reset.
    #[derive(Default)]
    pub(super) struct Conns {
        open: AtomicI64,
        peak: AtomicI64,
        accepted: AtomicU64,
        accept_errors: AtomicU64,
    }

    impl Conns {
        fn reset_peak(&self) {
            self.peak.store(self.open.load(Ordering::SeqCst), Ordering::SeqCst);
            self.accepted.store(0, Ordering::SeqCst);
            self.accept_errors.store(0, Ordering::SeqCst);
        }

        fn json(&self) -> Value {
            json!({
                "open": self.open.load(Ordering::SeqCst),
                "peak_open": self.peak.load(Ordering::SeqCst),
                "accepted": self.accepted.load(Ordering::SeqCst),
                "accept_errors": self.accept_errors.load(Ordering::SeqCst),
            })
        }
    }

    /// A connection, counted open until dropped.
    struct Counted {
        stream: TcpStream,
        conns: Arc<Conns>,
    }

    impl Counted {
        fn new(stream: TcpStream, conns: Arc<Conns>) -> Self {
            let open = conns.open.fetch_add(1, Ordering::SeqCst) + 1;
            conns.peak.fetch_max(open, Ordering::SeqCst);
            conns.accepted.fetch_add(1, Ordering::SeqCst);
            Self { stream, conns }
        }
    }

    impl Drop for Counted {
        fn drop(&mut self) {
            self.conns.open.fetch_sub(1, Ordering::SeqCst);
        }
    }

    impl AsyncRead for Counted {
        fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
        }
    }

    impl AsyncWrite for Counted {
        fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
            Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
        }

        fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.get_mut().stream).poll_flush(cx)
        }

        fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
        }
    }

    struct CountingListener {
        listener: TcpListener,
        conns: Arc<Conns>,
    }

    impl CountingListener {
        async fn accept_counted(&self) -> Counted {
            loop {
                match self.listener.accept().await {
                    Ok((stream, _)) => {
                        let _ = stream.set_nodelay(true);
                        return Counted::new(stream, self.conns.clone());
                    }
                    // Out of file descriptors and the like: count it, let closes catch up.
                    Err(_) => {
                        self.conns.accept_errors.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
            }
        }
    }

    impl axum::serve::Listener for CountingListener {
        type Io = Counted;
        type Addr = std::net::SocketAddr;

        async fn accept(&mut self) -> (Self::Io, Self::Addr) {
            let io = self.accept_counted().await;
            let addr = io.stream.peer_addr().unwrap_or_else(|_| ([127, 0, 0, 1], 0).into());
            (io, addr)
        }

        fn local_addr(&self) -> std::io::Result<Self::Addr> {
            self.listener.local_addr()
        }
    }

    /// A loopback listener with a backlog large enough for thousands of
    /// simultaneous connects (tokio's `bind` asks for 1,024).
    fn listen() -> std::io::Result<TcpListener> {
        let socket = TcpSocket::new_v4()?;
        socket.set_reuseaddr(true)?;
        socket.bind(([127, 0, 0, 1], 0).into())?;
        socket.listen(16_384)
    }

    #[derive(Default)]
    struct Table {
        start: Option<Instant>,
        /// Finish time of task `ID_BASE + i`, in ms after `start` (`NEVER`: never).
        offsets: Vec<u32>,
        /// When each task was last read, in ms after `start` plus one (0: never).
        last_read: Vec<std::sync::atomic::AtomicU32>,
        /// When a read first saw each task ended, as `last_read`.
        seen_ended: Vec<std::sync::atomic::AtomicU32>,
        /// The time between two reads of one task, in ms, over all tasks.
        gaps: Mutex<Vec<u32>>,
    }

    impl Table {
        fn new(offsets: Vec<u32>) -> Self {
            let zeros = || (0..offsets.len()).map(|_| std::sync::atomic::AtomicU32::new(0)).collect();
            Table { start: None, last_read: zeros(), seen_ended: zeros(), offsets, gaps: Mutex::new(Vec::new()) }
        }

        /// Notes a read of task `index` at `now` that saw it `ended` or not, with the gap since its last read.
        fn note(&self, index: usize, now: Instant, ended: bool, gaps: &mut Vec<u32>) {
            let Some(start) = self.start else { return };
            let ms = u32::try_from(now.saturating_duration_since(start).as_millis()).unwrap_or(u32::MAX - 1) + 1;
            if let Some(last) = self.last_read.get(index) {
                let before = last.swap(ms, Ordering::Relaxed);
                if before != 0 {
                    gaps.push(ms.saturating_sub(before));
                }
            }
            if ended && let Some(seen) = self.seen_ended.get(index) {
                let _ = seen.compare_exchange(0, ms, Ordering::Relaxed, Ordering::Relaxed);
            }
        }
    }

    #[derive(Default)]
    struct Deepomatic {
        table: RwLock<Table>,
        batch: AtomicU64,
        single: AtomicU64,
        /// When each request arrived, in ms after `start`.
        request_ms: Mutex<Vec<f64>>,
        conns: Arc<Conns>,
        addr: Mutex<String>,
    }

    impl Deepomatic {
        fn record(&self, batch: bool, table: &Table) {
            let counter = if batch { &self.batch } else { &self.single };
            counter.fetch_add(1, Ordering::Relaxed);
            if let Some(start) = table.start {
                let ms = start.elapsed().as_secs_f64() * 1e3;
                self.request_ms.lock().unwrap_or_else(|e| e.into_inner()).push(ms);
            }
        }

        /// The task object, as in the spec's examples, as JSON text; `None`
        /// for an unknown id. Written as text rather than built as a `Value`:
        /// the server stands in for a remote provider, so its CPU should not
        /// crowd the client's on the same two cores.
        fn task(table: &Table, id: &str, now: Instant, gaps: &mut Vec<u32>) -> Option<String> {
            let index = id.parse::<usize>().ok()?.checked_sub(ID_BASE)?;
            let offset = *table.offsets.get(index)?;
            let done = offset != NEVER
                && table.start.is_some_and(|start| now >= start + Duration::from_millis(u64::from(offset)));
            table.note(index, now, done, gaps);
            // `id` parsed as a number above, so it needs no escaping.
            Some(if done {
                format!(
                    r#"{{"id":"{id}","status":"success","error":null,"date_created":"2018-03-10T20:38:12.818792Z","date_updated":"2018-03-10T20:38:13.032942Z","data":{{"outputs":[{{"labels":{{"discarded":[],"predicted":[{{"threshold":0.025,"label_id":207,"score":0.952849746,"label_name":"golden retriever"}}]}}}}]}},"subtasks":null}}"#
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

    async fn single(State(server): State<Arc<Deepomatic>>, Path(id): Path<String>) -> Response {
        let table = server.table.read().unwrap_or_else(|e| e.into_inner());
        server.record(false, &table);
        let mut gaps = Vec::new();
        let task = Deepomatic::task(&table, &id, Instant::now(), &mut gaps);
        table.gaps.lock().unwrap_or_else(|e| e.into_inner()).extend(gaps);
        match task {
            Some(task) => json_text(task),
            None => (StatusCode::NOT_FOUND, Json(json!({"detail": "Not found."}))).into_response(),
        }
    }

    async fn batch(State(server): State<Arc<Deepomatic>>, RawQuery(query): RawQuery) -> Response {
        let table = server.table.read().unwrap_or_else(|e| e.into_inner());
        server.record(true, &table);
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
        let now = Instant::now();
        let mut gaps = Vec::with_capacity(limit.min(ids.len()));
        let results: Vec<String> =
            ids.iter().skip(offset).take(limit).filter_map(|id| Deepomatic::task(&table, id, now, &mut gaps)).collect();
        table.gaps.lock().unwrap_or_else(|e| e.into_inner()).extend(gaps);
        let next = (offset + limit < ids.len()).then(|| {
            let addr = server.addr.lock().unwrap_or_else(|e| e.into_inner()).clone();
            let task_ids: Vec<String> = ids.iter().map(|id| format!("task_ids={id}")).collect();
            format!("{addr}/v0.7/tasks/?{}&limit={limit}&offset={}", task_ids.join("&"), offset + limit)
        });
        let next = serde_json::to_string(&next).unwrap_or_else(|_| "null".into());
        json_text(format!(
            r#"{{"count":{},"next":{next},"previous":null,"results":[{}]}}"#,
            ids.len(),
            results.join(",")
        ))
    }

    /// Forwards every connection to the simulator, counting them.
    async fn proxy(listener: CountingListener, upstream: std::net::SocketAddr) {
        loop {
            let mut client = listener.accept_counted().await;
            tokio::spawn(async move {
                if let Ok(mut server) = TcpStream::connect(upstream).await {
                    let _ = server.set_nodelay(true);
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                }
            });
        }
    }

    struct Servers {
        deepomatic: Arc<Deepomatic>,
        simulator: Simulator,
        proxy_conns: Arc<Conns>,
        start: Option<Instant>,
        mixed: Vec<(String, String, u32)>,
    }

    pub(super) fn main() -> BoxResult<()> {
        let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
        let (mut servers, hello) = runtime.block_on(async {
            let deepomatic = Arc::new(Deepomatic::default());
            let listener = listen()?;
            let deepomatic_url = format!("http://{}", listener.local_addr()?);
            *deepomatic.addr.lock().unwrap_or_else(|e| e.into_inner()) = deepomatic_url.clone();
            let app = Router::new()
                .route("/v0.7/tasks/{id}/", get(single))
                .route("/v0.7/tasks/", get(batch))
                .fallback(|uri: axum::http::Uri| async move {
                    eprintln!("many_waits server: no route for {uri}");
                    StatusCode::NOT_FOUND
                })
                .with_state(deepomatic.clone());
            let counting = CountingListener { listener, conns: deepomatic.conns.clone() };
            tokio::spawn(async move { axum::serve(counting, app).await });

            let simulator = Simulator::builder().max_page_size(DEEPOMATIC_MAX_IDS).start().await?;
            let proxy_conns = Arc::new(Conns::default());
            let listener = listen()?;
            let simulator_url = format!("http://{}", listener.local_addr()?);
            tokio::spawn(proxy(CountingListener { listener, conns: proxy_conns.clone() }, simulator.addr()));
            let env: HashMap<String, String> = simulator.credentials().into_iter().map(|v| (v.name, v.value)).collect();
            let hello = json!({"deepomatic": deepomatic_url, "simulator": simulator_url, "env": env});
            let servers = Servers { deepomatic, simulator, proxy_conns, start: None, mixed: Vec::new() };
            Ok::<_, Box<dyn StdError + Send + Sync>>((servers, hello))
        })?;
        let mut out = std::io::stdout().lock();
        writeln!(out, "{hello}")?;
        out.flush()?;
        for line in std::io::stdin().lock().lines() {
            let command: Value = serde_json::from_str(&line?)?;
            let answer = runtime.block_on(async { servers.handle(&command) });
            writeln!(out, "{answer}")?;
            out.flush()?;
        }
        Ok(())
    }

    impl Servers {
        fn handle(&mut self, command: &Value) -> Value {
            let number = |key: &str| command.get(key).and_then(Value::as_u64).unwrap_or(0);
            match command.get("cmd").and_then(Value::as_str).unwrap_or("") {
                "table" => {
                    let n = number("n") as usize;
                    let offsets = if command.get("never").and_then(Value::as_bool).unwrap_or(false) {
                        vec![NEVER; n]
                    } else {
                        finish_offsets(n, number("spread_ms") as u32, number("seed"))
                    };
                    *self.deepomatic.table.write().unwrap_or_else(|e| e.into_inner()) = Table::new(offsets);
                    self.deepomatic.batch.store(0, Ordering::SeqCst);
                    self.deepomatic.single.store(0, Ordering::SeqCst);
                    self.deepomatic.request_ms.lock().unwrap_or_else(|e| e.into_inner()).clear();
                    json!({"ok": true})
                }
                "mixed" => {
                    let per_provider = number("per_provider") as usize;
                    let offsets = finish_offsets(
                        per_provider * MIXED_PROVIDERS.len(),
                        number("spread_ms") as u32,
                        number("seed"),
                    );
                    let mut offsets = offsets.into_iter();
                    self.mixed.clear();
                    for provider in MIXED_PROVIDERS {
                        for offset in offsets.by_ref().take(per_provider) {
                            let lifecycle =
                                Lifecycle::new().running_for(Duration::from_millis(u64::from(offset))).then_succeed();
                            match self.simulator.add_task(provider, lifecycle) {
                                Ok(task) => self.mixed.push((provider.to_string(), task.id().to_string(), offset)),
                                Err(e) => return json!({"error": e.to_string()}),
                            }
                        }
                    }
                    self.simulator.clear_requests();
                    json!({"tasks": self.mixed})
                }
                "start" => {
                    self.start = Some(Instant::now());
                    self.deepomatic.table.write().unwrap_or_else(|e| e.into_inner()).start = self.start;
                    self.deepomatic.conns.reset_peak();
                    self.proxy_conns.reset_peak();
                    json!({"ok": true})
                }
                "stats" => {
                    let request_ms =
                        std::mem::take(&mut *self.deepomatic.request_ms.lock().unwrap_or_else(|e| e.into_inner()));
                    if std::env::var_os("TIMELINE").is_some() {
                        let mut buckets =
                            vec![0u32; 1 + request_ms.iter().fold(0.0f64, |a, &b| a.max(b)) as usize / 100];
                        for ms in &request_ms {
                            buckets[*ms as usize / 100] += 1;
                        }
                        eprintln!("requests per 100 ms: {buckets:?}");
                    }
                    // Poll gaps and the server's side of the lag (the read that saw a task ended, less its finish).
                    let table = self.deepomatic.table.read().unwrap_or_else(|e| e.into_inner());
                    let mut gaps = std::mem::take(&mut *table.gaps.lock().unwrap_or_else(|e| e.into_inner()));
                    gaps.sort_unstable();
                    let mut seen_lags: Vec<i64> = table
                        .seen_ended
                        .iter()
                        .zip(&table.offsets)
                        .filter_map(|(seen, offset)| {
                            let seen = seen.load(Ordering::Relaxed);
                            (seen != 0).then(|| i64::from(seen) - 1 - i64::from(*offset))
                        })
                        .collect();
                    seen_lags.sort_unstable();
                    let at = |n: usize, q: f64| ((n.saturating_sub(1)) as f64 * q).round() as usize;
                    let gap = |q: f64| gaps.get(at(gaps.len(), q)).copied().unwrap_or(0);
                    let seen = |q: f64| seen_lags.get(at(seen_lags.len(), q)).copied().unwrap_or(0);
                    let polls = json!({
                        "gap_ms": [gap(0.5), gap(0.99), gaps.last().copied().unwrap_or(0)],
                        "seen_lag_ms": [seen(0.5), seen(0.99)],
                    });
                    drop(table);
                    json!({
                        "polls": polls,
                        "batch": self.deepomatic.batch.load(Ordering::SeqCst),
                        "single": self.deepomatic.single.load(Ordering::SeqCst),
                        "request_ms": request_ms,
                        "conns": self.deepomatic.conns.json(),
                        "cpu_ms": cpu_ms(),
                    })
                }
                "mixed_stats" => {
                    let start = self.start.map(tokio::time::Instant::from_std);
                    let since = |at: tokio::time::Instant| {
                        start.map_or(0.0, |s| at.saturating_duration_since(s).as_secs_f64() * 1e3)
                    };
                    let mut per_provider: HashMap<&str, u64> = HashMap::new();
                    let mut deepomatic_ms = Vec::new();
                    let mut first_read: HashMap<String, f64> = HashMap::new();
                    for request in self.simulator.requests() {
                        let provider = request.provider.unwrap_or("none");
                        *per_provider.entry(provider).or_default() += 1;
                        if provider == "deepomatic" {
                            deepomatic_ms.push(since(request.at));
                        }
                        for id in &request.task_ids {
                            first_read.entry(format!("{provider}/{id}")).or_insert_with(|| since(request.at));
                        }
                    }
                    json!({
                        "requests": per_provider,
                        "deepomatic_ms": deepomatic_ms,
                        "first_read_ms": first_read,
                        "conns": self.proxy_conns.json(),
                        "cpu_ms": cpu_ms(),
                    })
                }
                other => json!({"error": format!("unknown command {other:?}")}),
            }
        }
    }
}

/// The client side: runs both sides of every load and prints the figures.
mod bench {
    use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

    use super::*;

    struct ServerProcess {
        child: Child,
        stdin: ChildStdin,
        stdout: BufReader<ChildStdout>,
    }

    impl ServerProcess {
        fn spawn() -> BoxResult<(Self, Value)> {
            let mut child = Command::new(std::env::current_exe()?)
                .env(SERVER_ROLE, "1")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()?;
            let stdin = child.stdin.take().ok_or("no stdin")?;
            let stdout = BufReader::new(child.stdout.take().ok_or("no stdout")?);
            let mut server = Self { child, stdin, stdout };
            let hello = server.read()?;
            Ok((server, hello))
        }

        fn read(&mut self) -> BoxResult<Value> {
            let mut line = String::new();
            if self.stdout.read_line(&mut line)? == 0 {
                return Err("the server process ended".into());
            }
            let answer: Value = serde_json::from_str(&line)?;
            match answer.get("error") {
                Some(error) => Err(format!("server: {error}").into()),
                None => Ok(answer),
            }
        }

        fn call(&mut self, command: Value) -> BoxResult<Value> {
            writeln!(self.stdin, "{command}")?;
            self.stdin.flush()?;
            self.read()
        }
    }

    impl Drop for ServerProcess {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    /// RSS (kB) and live heap (bytes) now.
    fn memory() -> (u64, usize) {
        let rss = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            })
            .unwrap_or(0);
        (rss, ALLOCATOR.allocated())
    }

    /// Samples RSS and heap every 20 ms from a thread, keeping the peaks.
    struct Sampler {
        stop: Arc<AtomicBool>,
        peak_rss: Arc<AtomicU64>,
        peak_heap: Arc<AtomicUsize>,
        thread: Option<std::thread::JoinHandle<()>>,
        baseline: (u64, usize),
    }

    impl Sampler {
        fn start() -> Self {
            let baseline = memory();
            let stop = Arc::new(AtomicBool::new(false));
            let peak_rss = Arc::new(AtomicU64::new(baseline.0));
            let peak_heap = Arc::new(AtomicUsize::new(baseline.1));
            let thread = std::thread::spawn({
                let (stop, peak_rss, peak_heap) = (stop.clone(), peak_rss.clone(), peak_heap.clone());
                move || {
                    while !stop.load(Ordering::Relaxed) {
                        let (rss, heap) = memory();
                        peak_rss.fetch_max(rss, Ordering::Relaxed);
                        peak_heap.fetch_max(heap, Ordering::Relaxed);
                        std::thread::sleep(SAMPLE_EVERY);
                    }
                }
            });
            Self { stop, peak_rss, peak_heap, thread: Some(thread), baseline }
        }

        /// Peak RSS and heap above the baseline, in bytes.
        fn stop(mut self) -> (f64, f64) {
            self.stop.store(true, Ordering::Relaxed);
            if let Some(thread) = self.thread.take() {
                let _ = thread.join();
            }
            let (rss, heap) = memory();
            let peak_rss = self.peak_rss.load(Ordering::Relaxed).max(rss);
            let peak_heap = self.peak_heap.load(Ordering::Relaxed).max(heap);
            (peak_rss.saturating_sub(self.baseline.0) as f64 * 1024.0, peak_heap.saturating_sub(self.baseline.1) as f64)
        }
    }

    #[derive(Clone, Copy, PartialEq, Debug)]
    enum Side {
        Waiter,
        Independent,
    }

    /// What one side of one load measured.
    #[derive(Default)]
    struct Figures {
        tasks: usize,
        succeeded: usize,
        deadline: usize,
        other: usize,
        requests: u64,
        /// Σ requests and Σ ⌈pending / 100⌉ over polling rounds, and the worst round.
        rounds: Rounds,
        rss: f64,
        heap: f64,
        peak_conns: i64,
        accept_errors: u64,
        lags: Vec<f64>,
        cpu_ms: u64,
        server_cpu_ms: u64,
        wall: Duration,
        /// Requests per provider (mixed set).
        per_provider: Vec<(String, u64, usize)>,
    }

    #[derive(Default, Clone, Copy)]
    struct Rounds {
        count: usize,
        requests: u64,
        bound: u64,
        worst: Option<(u64, u64)>,
    }

    /// Requests per poll-interval window after the start, against
    /// ⌈tasks not yet reported at the window's start / 100⌉.
    fn rounds(request_ms: &[f64], report_ms: &[f64], interval: Duration) -> Rounds {
        let interval = interval.as_secs_f64() * 1e3;
        let mut reports = report_ms.to_vec();
        reports.sort_by(f64::total_cmp);
        let mut out = Rounds::default();
        let mut k = 0usize;
        loop {
            let from = k as f64 * interval;
            let pending = reports.len() - reports.partition_point(|&r| r < from);
            if pending == 0 {
                break;
            }
            let requests = request_ms.iter().filter(|&&t| t >= from && t < from + interval).count() as u64;
            let bound = pending.div_ceil(DEEPOMATIC_MAX_IDS) as u64;
            out.count += 1;
            out.requests += requests;
            out.bound += bound;
            let ratio = |(r, b): (u64, u64)| r as f64 / b as f64;
            if out.worst.is_none_or(|worst| ratio((requests, bound)) > ratio(worst)) {
                out.worst = Some((requests, bound));
            }
            k += 1;
        }
        out
    }

    fn percentile(sorted: &[f64], p: f64) -> f64 {
        if sorted.is_empty() {
            return f64::NAN;
        }
        let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
        sorted[rank.min(sorted.len() - 1)]
    }

    /// First poll at once, then every `interval`, no jitter.
    fn options(deadline: Duration, interval: Duration) -> BoxResult<WaitOptions> {
        let policy = Policy::builder()
            .name(format!("fixed-{}ms", interval.as_millis()))
            .first_poll(Duration::ZERO)
            .initial_delay(interval)
            .factor(1.0)
            .max_delay(interval)
            .build()?;
        Ok(WaitOptions::new(deadline).policy(policy))
    }

    fn spread() -> Duration {
        Duration::from_millis(env_usize("SPREAD_MS", 4_000) as u64)
    }

    fn deadline() -> Duration {
        spread() + Duration::from_secs(5)
    }

    fn max_in_flight() -> usize {
        env_usize("MAX_IN_FLIGHT", taskpoll::ClientBuilder::DEFAULT_MAX_IN_FLIGHT)
    }

    /// A fresh client (its own connection pool) for every provider, at the
    /// simulator, or Deepomatic at `deepomatic_url` unless it is empty, with
    /// a rate budget that never holds a run back.
    fn client(deepomatic_url: &str, simulator_url: &str, env: &HashMap<String, String>) -> BoxResult<Client> {
        let value = |name: &str| env.get(name).cloned().unwrap_or_default();
        let mut builder = Client::builder();
        for spec in providers() {
            let base = if spec.name() == "deepomatic" && !deepomatic_url.is_empty() {
                deepomatic_url.to_string()
            } else {
                format!("{simulator_url}/{}", spec.name())
            };
            let mut config = ProviderConfig::new(spec.name())
                .base_url(base)
                .rate_limit(RATE_PER_SECOND, RATE_BURST)
                .max_in_flight(max_in_flight());
            // The simulator's demo credentials, from the variables it documents.
            for scheme in spec.schemes() {
                let secret = |name: &str| secrecy::SecretString::from(value(name));
                config = match (scheme.kind(), scheme.env()) {
                    (SchemeKind::Basic, [user, pass]) => config
                        .credential(scheme.name(), Credential::Basic { username: value(user), password: secret(pass) }),
                    (_, [var]) => config.credential(scheme.name(), Credential::Token(secret(var))),
                    _ => config,
                };
            }
            for var in spec.server_variables() {
                config = config.server_variable(var.name(), "simulator");
            }
            builder = builder.provider(config);
        }
        Ok(builder.build()?)
    }

    /// A task, when it was reported (ms after the start), and how it ended.
    type Report = (TaskRef, f64, Outcome);

    /// Waits on `tasks` one way, and returns the report time of each (ms
    /// after `t0`) with its outcome, in the order they were reported.
    async fn wait_all(
        client: &Client,
        side: Side,
        tasks: Vec<TaskRef>,
        interval: Duration,
        t0: Instant,
    ) -> BoxResult<Vec<Report>> {
        let options = options(deadline(), interval)?;
        let since = |at: Instant| at.duration_since(t0).as_secs_f64() * 1e3;
        match side {
            Side::Waiter => {
                let mut waiter = client.waiter();
                let mut out = Vec::with_capacity(tasks.len());
                if std::env::var_os("ADD_ONE_BY_ONE").is_some() {
                    for task in tasks {
                        waiter.add(task, &options)?;
                    }
                } else {
                    waiter.add_many(tasks, &options)?;
                }
                while let Some((task, result)) = waiter.next().await {
                    out.push((task, since(Instant::now()), Outcome::of(&result)));
                }
                Ok(out)
            }
            Side::Independent => {
                let waits = tasks.into_iter().map(|task| {
                    let options = options.clone();
                    async move {
                        let result = client.wait(&task, options).await;
                        (task, since(Instant::now()), Outcome::of(&result))
                    }
                });
                Ok(futures_util::future::join_all(waits).await)
            }
        }
    }

    enum Outcome {
        Succeeded,
        Deadline,
        /// Anything else, with its message (the first one is printed).
        Other(String),
    }

    impl Outcome {
        fn of(result: &taskpoll::Result<taskpoll::Task>) -> Self {
            match result {
                Ok(task) if task.phase() == taskpoll::Phase::Succeeded => Self::Succeeded,
                Ok(task) => Self::Other(format!("ended {}", task.phase())),
                Err(e) if e.is_deadline() => Self::Deadline,
                Err(e) => Self::Other(e.to_string()),
            }
        }
    }

    struct Bench {
        server: ServerProcess,
        deepomatic_url: String,
        simulator_url: String,
        env: HashMap<String, String>,
        runtime: tokio::runtime::Runtime,
    }

    impl Bench {
        /// Lets the previous run's connections close and its memory settle.
        fn settle(&self) {
            std::thread::sleep(Duration::from_millis(500));
        }

        /// Runs one side's waits once the server starts its clock, and measures
        /// the client: the reports, the server's stats (from `stats_cmd`), and
        /// the figures both loads share (RSS, heap, CPU, wall time, the
        /// server's CPU and connections).
        fn measure(
            &mut self,
            client: &Client,
            side: Side,
            tasks: Vec<TaskRef>,
            interval: Duration,
            stats_cmd: &str,
        ) -> BoxResult<(Vec<Report>, Value, Figures)> {
            self.settle();
            let server_cpu = self.server.call(json!({"cmd": "stats"}))?["cpu_ms"].as_u64().unwrap_or(0);
            let sampler = Sampler::start();
            let cpu = cpu_ms();
            self.server.call(json!({"cmd": "start"}))?;
            let t0 = Instant::now();
            let reports = self.runtime.block_on(wait_all(client, side, tasks, interval, t0))?;
            let wall = t0.elapsed();
            let (rss, heap) = sampler.stop();
            let cpu_ms = cpu_ms().saturating_sub(cpu);
            let stats = self.server.call(json!({"cmd": stats_cmd}))?;
            let mut figures = Figures { rss, heap, cpu_ms, wall, ..Figures::default() };
            figures.server_cpu_ms = stats["cpu_ms"].as_u64().unwrap_or(0).saturating_sub(server_cpu);
            figures.peak_conns = stats["conns"]["peak_open"].as_i64().unwrap_or(0);
            figures.accept_errors = stats["conns"]["accept_errors"].as_u64().unwrap_or(0);
            Ok((reports, stats, figures))
        }

        fn deepomatic(&mut self, load: Load, side: Side, seed: u64) -> BoxResult<Figures> {
            let Load { n, interval } = load;
            let spread_ms = spread().as_millis() as u32;
            self.server.call(json!({"cmd": "table", "n": n, "spread_ms": spread_ms, "seed": seed}))?;
            let offsets = finish_offsets(n, spread_ms, seed);
            let client = client(&self.deepomatic_url, &self.simulator_url, &self.env)?;
            let tasks = (0..n)
                .map(|i| TaskRef::new("deepomatic", (ID_BASE + i).to_string()))
                .collect::<taskpoll::Result<Vec<_>>>()?;
            let (reports, stats, mut figures) = self.measure(&client, side, tasks, interval, "stats")?;
            drop(client);
            figures.tasks = n;
            figures.requests = stats["batch"].as_u64().unwrap_or(0) + stats["single"].as_u64().unwrap_or(0);
            let request_ms: Vec<f64> = serde_json::from_value(stats["request_ms"].clone())?;
            let report_ms: Vec<f64> = reports.iter().map(|r| r.1).collect();
            figures.rounds = rounds(&request_ms, &report_ms, interval);
            // Where the lag comes from: the time between two reads of a task, and
            // when the server first answered a task ended (its side of the lag).
            eprintln!("many_waits: {n} tasks, {side:?}: server saw {}", stats["polls"]);
            for (task, report, outcome) in &reports {
                match outcome {
                    Outcome::Succeeded => {
                        figures.succeeded += 1;
                        let index = task.id().parse::<usize>()? - ID_BASE;
                        figures.lags.push(report - f64::from(offsets[index]));
                    }
                    Outcome::Deadline => figures.deadline += 1,
                    Outcome::Other(error) => {
                        if figures.other == 0 {
                            eprintln!("many_waits: first error other than the deadline: {error}");
                        }
                        figures.other += 1;
                    }
                }
            }
            figures.lags.sort_by(f64::total_cmp);
            Ok(figures)
        }

        fn mixed(&mut self, n: usize, side: Side, seed: u64) -> BoxResult<Figures> {
            let per_provider = n / MIXED_PROVIDERS.len();
            let spread_ms = spread().as_millis() as u32;
            let answer = self
                .server
                .call(json!({"cmd": "mixed", "per_provider": per_provider, "spread_ms": spread_ms, "seed": seed}))?;
            let listed: Vec<(String, String, u32)> = serde_json::from_value(answer["tasks"].clone())?;
            let mut offsets: HashMap<String, u32> = HashMap::new();
            let mut tasks = Vec::with_capacity(listed.len());
            for (provider, id, offset) in listed {
                offsets.insert(format!("{provider}/{id}"), offset);
                tasks.push(TaskRef::new(&provider, id)?);
            }
            let client = client("", &self.simulator_url, &self.env)?;
            let (reports, stats, mut figures) = self.measure(&client, side, tasks, POLL_INTERVAL, "mixed_stats")?;
            drop(client);
            figures.tasks = offsets.len();
            let per_provider_requests: HashMap<String, u64> = serde_json::from_value(stats["requests"].clone())?;
            figures.requests = per_provider_requests.values().sum();
            for provider in MIXED_PROVIDERS {
                let requests = per_provider_requests.get(provider).copied().unwrap_or(0);
                figures.per_provider.push((provider.to_string(), requests, per_provider));
            }
            let first_read: HashMap<String, f64> = serde_json::from_value(stats["first_read_ms"].clone())?;
            let deepomatic_ms: Vec<f64> = serde_json::from_value(stats["deepomatic_ms"].clone())?;
            let deepomatic_reports: Vec<f64> =
                reports.iter().filter(|r| r.0.provider() == "deepomatic").map(|r| r.1).collect();
            figures.rounds = rounds(&deepomatic_ms, &deepomatic_reports, POLL_INTERVAL);
            for (task, report, outcome) in &reports {
                match outcome {
                    Outcome::Succeeded => {
                        figures.succeeded += 1;
                        let key = format!("{}/{}", task.provider(), task.id());
                        // Timed from the first read: the task finished `offset` after it.
                        if let (Some(first), Some(offset)) = (first_read.get(&key), offsets.get(&key)) {
                            figures.lags.push(report - first - f64::from(*offset));
                        }
                    }
                    Outcome::Deadline => figures.deadline += 1,
                    Outcome::Other(_) => figures.other += 1,
                }
            }
            figures.lags.sort_by(f64::total_cmp);
            Ok(figures)
        }

        /// 100,000 tasks that never finish: the waiter's memory per pending task.
        fn memory(&mut self, n: usize, seconds: u64) -> BoxResult<()> {
            // The server's table first (in its own process here), then the baseline.
            self.server.call(json!({"cmd": "table", "n": n, "never": true}))?;
            let client = client(&self.deepomatic_url, &self.simulator_url, &self.env)?;
            let options = options(Duration::from_secs(600), POLL_INTERVAL)?;
            self.settle();
            let sampler = Sampler::start();
            let cpu = cpu_ms();
            self.server.call(json!({"cmd": "start"}))?;
            let t0 = Instant::now();
            let (pending, sent, steady) = self.runtime.block_on(async {
                let waiter = client.waiter();
                for i in 0..n {
                    waiter.add(TaskRef::new("deepomatic", (ID_BASE + i).to_string())?, &options)?;
                }
                tokio::time::sleep(Duration::from_secs(seconds)).await;
                let steady = memory();
                let out = (waiter.pending(), waiter.requests_sent(), steady);
                drop(waiter);
                Ok::<_, Box<dyn StdError + Send + Sync>>(out)
            })?;
            let wall = t0.elapsed();
            let baseline = sampler.baseline;
            let (rss, heap) = sampler.stop();
            let cpu_ms = cpu_ms().saturating_sub(cpu);
            let stats = self.server.call(json!({"cmd": "stats"}))?;
            drop(client);
            let per_task = |bytes: f64| bytes / pending.max(1) as f64;
            println!("== memory: {n} Deepomatic tasks that never finish, one waiter, measured {seconds} s");
            println!(
                "  pending at the end {pending}, requests sent {sent} ({:.1} per {} ms round; ⌈pending/100⌉ = {})",
                sent as f64 / (wall.as_secs_f64() / POLL_INTERVAL.as_secs_f64()),
                POLL_INTERVAL.as_millis(),
                n.div_ceil(DEEPOMATIC_MAX_IDS),
            );
            println!(
                "  peak RSS above baseline   {:>8.1} MiB = {:>6.0} B per pending task   (goal ≤ 1024 B)",
                rss / 1048576.0,
                per_task(rss),
            );
            println!(
                "  RSS above baseline at the end {:>4.1} MiB = {:>6.0} B per pending task",
                steady.0.saturating_sub(baseline.0) as f64 / 1024.0,
                per_task(steady.0.saturating_sub(baseline.0) as f64 * 1024.0),
            );
            println!(
                "  peak live heap above baseline {:>4.1} MiB = {:>6.0} B per pending task",
                heap / 1048576.0,
                per_task(heap),
            );
            println!(
                "  peak open connections {}, CPU {} ms over {:.1} s",
                stats["conns"]["peak_open"],
                cpu_ms,
                wall.as_secs_f64()
            );
            Ok(())
        }
    }

    /// One Deepomatic load: `N` tasks, or `N@MS` with its own poll interval.
    #[derive(Clone, Copy)]
    struct Load {
        n: usize,
        interval: Duration,
    }

    impl Load {
        fn parse(text: &str) -> Option<Self> {
            let (n, ms) = match text.trim().split_once('@') {
                Some((n, ms)) => (n, Some(ms)),
                None => (text.trim(), None),
            };
            let interval = match ms {
                Some(ms) => Duration::from_millis(ms.trim().parse().ok()?),
                None => POLL_INTERVAL,
            };
            Some(Self { n: n.trim().parse().ok()?, interval })
        }
    }

    /// 100,000 tasks at 500 ms is 2,000 batch reads a second, beyond what one
    /// provider's budget allows and what two shared cores can decode; the
    /// same load is also run at 2 s (500 reads a second).
    const DEFAULT_LOADS: &str = "1000,10000,100000,100000@2000";

    fn ratio(independent: f64, waiter: f64) -> String {
        if waiter > 0.0 && independent.is_finite() { format!("x{:.1}", independent / waiter) } else { "-".into() }
    }

    fn print(title: &str, waiter: &Figures, independent: Option<&Figures>, goals: &[(&str, &str)]) {
        println!("== {title}");
        let goal = |key: &str| goals.iter().find(|g| g.0 == key).map_or(String::new(), |g| format!("goal {}", g.1));
        let row = |name: &str, f: &dyn Fn(&Figures) -> (String, f64), key: &str| {
            let (w, wv) = f(waiter);
            let (i, r) = match independent {
                Some(ind) => {
                    let (i, iv) = f(ind);
                    (i, ratio(iv, wv))
                }
                None => ("skipped".into(), String::new()),
            };
            println!("  {name:<40} {w:>18} {i:>18} {r:>8}   {}", goal(key));
        };
        println!("  {:<40} {:>18} {:>18} {:>8}", "", "waiter", "independent", "ind/wtr");
        row(
            "outcomes: succeeded / deadline / other",
            &|f| (format!("{}/{}/{}", f.succeeded, f.deadline, f.other), 0.0),
            "",
        );
        row("requests", &|f| (f.requests.to_string(), f.requests as f64), "");
        row(
            "requests per task",
            &|f| {
                let v = f.requests as f64 / f.tasks.max(1) as f64;
                (format!("{v:.3}"), v)
            },
            "per-task",
        );
        row(
            "Deepomatic requests per round / ⌈pending/100⌉",
            &|f| {
                let r = f.rounds;
                let v = r.requests as f64 / r.bound.max(1) as f64;
                let (wr, wb) = r.worst.unwrap_or((0, 0));
                (format!("{v:.2} (worst {wr}/{wb})"), v)
            },
            "round",
        );
        row("peak RSS above baseline (MiB)", &|f| (format!("{:.1}", f.rss / 1048576.0), f.rss), "");
        row(
            "  per task (B)",
            &|f| {
                let v = f.rss / f.tasks.max(1) as f64;
                (format!("{v:.0}"), v)
            },
            "memory",
        );
        row("peak live heap above baseline (MiB)", &|f| (format!("{:.1}", f.heap / 1048576.0), f.heap), "");
        row(
            "  per task (B)",
            &|f| {
                let v = f.heap / f.tasks.max(1) as f64;
                (format!("{v:.0}"), v)
            },
            "memory",
        );
        row(
            "peak open connections",
            &|f| {
                let errors =
                    if f.accept_errors > 0 { format!(" ({} accept errors)", f.accept_errors) } else { String::new() };
                (format!("{}{errors}", f.peak_conns), f.peak_conns as f64)
            },
            "conns",
        );
        row(
            "detection lag p50 / p99 (ms)",
            &|f| {
                let p99 = percentile(&f.lags, 99.0);
                (format!("{:.0} / {:.0}", percentile(&f.lags, 50.0), p99), p99)
            },
            "lag",
        );
        row("CPU time, client process (ms)", &|f| (f.cpu_ms.to_string(), f.cpu_ms as f64), "");
        row("CPU time, server process (ms)", &|f| (f.server_cpu_ms.to_string(), f.server_cpu_ms as f64), "");
        row("wall time (s)", &|f| (format!("{:.2}", f.wall.as_secs_f64()), f.wall.as_secs_f64()), "");
        for (i, (provider, requests, tasks)) in waiter.per_provider.iter().enumerate() {
            let per_task = |r: u64| r as f64 / (*tasks).max(1) as f64;
            let ind = independent.and_then(|f| f.per_provider.get(i)).map(|p| p.1);
            row(
                &format!("  {provider} requests per task"),
                &|f| {
                    let r = if std::ptr::eq(f, waiter) { *requests } else { ind.unwrap_or(0) };
                    (format!("{:.3}", per_task(r)), per_task(r))
                },
                "",
            );
        }
    }

    pub(super) fn main() -> BoxResult<()> {
        let loads: Vec<Load> = std::env::var("LOADS")
            .unwrap_or_else(|_| DEFAULT_LOADS.into())
            .split(',')
            .filter_map(Load::parse)
            .collect();
        let cap = env_usize("INDEPENDENT_CAP", 10_000);
        let mixed = env_usize("MIXED", 1_000);
        let memory_tasks = env_usize("MEMORY_TASKS", 100_000);
        let memory_seconds = env_usize("MEMORY_SECONDS", 3) as u64;

        let (server, hello) = ServerProcess::spawn()?;
        // A base URL with a path is used as given: the version prefix goes in it.
        let deepomatic_url = format!("{}/v0.7", hello["deepomatic"].as_str().ok_or("no deepomatic url")?);
        let simulator_url = hello["simulator"].as_str().ok_or("no simulator url")?.to_string();
        let env: HashMap<String, String> = serde_json::from_value(hello["env"].clone())?;
        let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
        let mut bench = Bench { server, deepomatic_url, simulator_url, env, runtime };

        println!("many_waits: one Waiter vs independent Client::wait calls, same tasks, same process");
        println!(
            "  policy: first poll at once, then every {} ms unless a load says `@ms` (fixed, no jitter); \
             deadline {} s; finish times U(0, {} ms)",
            POLL_INTERVAL.as_millis(),
            deadline().as_secs(),
            spread().as_millis()
        );
        println!(
            "  waiter: rate budget {RATE_PER_SECOND}/s, burst {RATE_BURST} per provider (ProviderConfig::rate_limit); \
             ≤ {} requests in flight per provider",
            max_in_flight()
        );
        println!("  servers in a child process: Deepomatic loopback server (axum), simulator behind a counting proxy");
        println!("  lag goal: p99 ≤ one poll interval + 50 ms");
        println!();

        if memory_tasks > 0 {
            bench.memory(memory_tasks, memory_seconds)?;
            println!();
        }
        for (seed, &load) in loads.iter().enumerate() {
            let seed = seed as u64 + 1;
            let n = load.n;
            let waiter = bench.deepomatic(load, Side::Waiter, seed)?;
            let independent = if n <= cap { Some(bench.deepomatic(load, Side::Independent, seed)?) } else { None };
            let lag_goal = format!("p99 ≤ {}", load.interval.as_millis() + 50);
            let mut goals = vec![("round", "≤ 1.00"), ("memory", "≤ 1024"), ("lag", lag_goal.as_str())];
            if n == 10_000 {
                goals.extend([("per-task", "≤ 0.2"), ("conns", "≤ 64")]);
            }
            let title = format!(
                "{n} Deepomatic tasks polled every {} ms, finishing within {:.1} s{}",
                load.interval.as_millis(),
                spread().as_secs_f64(),
                if independent.is_none() {
                    format!(" (independent waits skipped: above INDEPENDENT_CAP={cap})")
                } else {
                    String::new()
                }
            );
            print(&title, &waiter, independent.as_ref(), &goals);
            println!();
        }
        if mixed > 0 {
            let waiter = bench.mixed(mixed, Side::Waiter, 99)?;
            let independent = bench.mixed(mixed, Side::Independent, 99)?;
            let title = format!(
                "mixed: {} tasks, {} per provider, finishing within {:.1} s of their first read (simulator)",
                waiter.tasks,
                waiter.tasks / MIXED_PROVIDERS.len(),
                spread().as_secs_f64()
            );
            print(&title, &waiter, Some(&independent), &[("round", "≤ 1.00"), ("lag", "p99 ≤ 550")]);
        }
        Ok(())
    }
}
