//! What does one status read through taskpoll cost, next to the least a
//! client could do: a bare reqwest request and a `serde_json` parse?
//!
//! For every built-in provider, a task that never finishes is added to the
//! simulator; then, in the same run and interleaved in rounds, `READS`
//! status reads are made each way:
//!
//! - **taskpoll**: `Client::get` (the generated operation, the hooks, the
//!   classification into a `Task`);
//! - **bare**: the same request (method, path, query, body, credentials and
//!   the `User-Agent` and `Accept` headers, taken from what the simulator
//!   recorded of a taskpoll read) sent with a plain `reqwest::Client`, the
//!   body read and parsed into a `serde_json::Value`, and its status read at
//!   the spec's pointer. Each read builds what any client builds per task:
//!   its URL (`format!`, as the id goes in it) and its JSON body
//!   (serialised); nothing else is redone.
//!
//! Both sides read sequentially on one current-thread runtime in the main
//! thread, over one kept-alive connection. The simulator runs on its own
//! runtime, on threads named `simulator`, so its CPU is left out: the figure
//! is the client's CPU (user + system time of every other thread of the
//! process, from `/proc/self/task/*/schedstat`, in nanoseconds) per read, and the
//! ratio taskpoll / bare, over the whole run and per round (median and
//! range; each side goes first every other round). Not a test: it asserts
//! nothing. Goal (issue 12): ≤ 1.10×.
//!
//! Rounds are short (100 reads per side by default), so that both sides see
//! the same machine: on a shared VM the speed of a read drifts by 2x within
//! seconds, and long rounds turn that drift into a ratio.
//!
//! Run with `cargo bench --bench read_overhead --all-features`.
//! Environment: `READS=20000` (reads per side and provider), `ROUNDS=200`,
//! `PROVIDERS=deepomatic,qolaba` (default: all), `SIDE=taskpoll` or `SIDE=bare`
//! (one side only, for a profiler: `valgrind --tool=callgrind`).

#![allow(clippy::disallowed_methods)] // reads real time: a test's or benchmark's own timing

use std::error::Error as StdError;
use std::time::{Duration, Instant};

use serde_json::Value;
use taskpoll::simulator::{Lifecycle, Simulator};
use taskpoll::spec::providers;

type BoxResult<T> = Result<T, Box<dyn StdError + Send + Sync>>;

const SERVER_THREAD: &str = "simulator";

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok()).unwrap_or(default)
}

/// CPU time (ns) of every thread of this process except the simulator's, from
/// `/proc/self/task/*/schedstat` (nanoseconds on the CPU; `stat`'s ticks are
/// 10 ms, too coarse for a difference of a few microseconds per read).
fn client_cpu_ns() -> u64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return 0 };
    let mut total = 0;
    for task in tasks.flatten() {
        let name = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if name.starts_with(SERVER_THREAD) {
            continue;
        }
        let Ok(schedstat) = std::fs::read_to_string(task.path().join("schedstat")) else { continue };
        total += schedstat.split_whitespace().next().and_then(|ns| ns.parse::<u64>().ok()).unwrap_or(0);
    }
    total
}

/// A request as the simulator recorded it, ready to be sent again bare.
struct Replay {
    method: reqwest::Method,
    base: String,
    path: String,
    query: String,
    headers: Vec<(String, String)>,
    body: Option<Value>,
    status_pointer: &'static str,
}

impl Replay {
    async fn read(&self, http: &reqwest::Client) -> BoxResult<bool> {
        let url = format!("{}{}{}", self.base, self.path, self.query);
        let mut request = http.request(self.method.clone(), url);
        for (name, value) in &self.headers {
            request = request.header(name, value);
        }
        if let Some(body) = &self.body {
            request = request.json(body);
        }
        let answer = request.send().await?;
        let ok = answer.status().is_success();
        let bytes = answer.bytes().await?;
        let body: Value = serde_json::from_slice(&bytes)?;
        Ok(ok && body.pointer(self.status_pointer).is_some())
    }
}

#[derive(Default)]
struct Side {
    cpu_ns: u64,
    wall: Duration,
    reads: usize,
}

impl Side {
    fn per_read_us(&self, what: fn(&Side) -> f64) -> f64 {
        what(self) * 1e3 / self.reads.max(1) as f64
    }
}

fn main() -> BoxResult<()> {
    let reads = env_usize("READS", 20_000);
    let rounds = env_usize("ROUNDS", 200).max(1);
    let per_round = reads.div_ceil(rounds);

    let server = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name(SERVER_THREAD)
        .enable_all()
        .build()?;
    let sim = server.block_on(Simulator::start())?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;

    println!("read_overhead: one status read, taskpoll Client::get vs bare reqwest + serde_json, same run");
    println!(
        "  {reads} reads per side and provider, interleaved in {rounds} rounds; client CPU only (simulator excluded)"
    );
    println!();
    println!(
        "  {:<12} {:>16} {:>16} {:>12} {:>10} {:>11} {:>16} {:>16}",
        "provider",
        "taskpoll µs CPU",
        "bare µs CPU",
        "CPU ratio",
        "median",
        "rounds",
        "taskpoll µs wall",
        "bare µs wall"
    );
    let only = std::env::var("PROVIDERS").unwrap_or_default();
    for spec in providers().iter().filter(|spec| only.is_empty() || only.split(',').any(|name| name == spec.name())) {
        let client = sim.client()?;
        let task = sim.add_task(spec.name(), Lifecycle::new().running_forever())?;
        let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build()?;
        let replay = runtime.block_on(async {
            // One read each way first: it opens the connections and records the request to replay.
            client.get(&task).await?;
            let recorded = sim.requests_for(&task).pop().ok_or("the simulator recorded no request")?;
            let query = recorded.query.as_deref().map_or(String::new(), |q| format!("?{q}"));
            let body = (!recorded.body.is_empty()).then(|| serde_json::from_str(&recorded.body)).transpose()?;
            let replay = Replay {
                method: recorded.method.parse()?,
                base: sim.url(),
                path: recorded.path.clone(),
                query,
                headers: sim
                    .auth_headers(spec.name(), recorded.operation.unwrap_or(spec.get().operation()))
                    .into_iter()
                    .chain(
                        recorded
                            .headers
                            .iter()
                            .filter(|(name, _)| ["user-agent", "accept"].contains(&name.as_str()))
                            .cloned(),
                    )
                    .collect(),
                body,
                status_pointer: spec.task().status(),
            };
            if !replay.read(&http).await? {
                return Err(format!("{}: the bare read got no status", spec.name()).into());
            }
            Ok::<_, Box<dyn StdError + Send + Sync>>(replay)
        })?;
        let (mut taskpoll, mut bare) = (Side::default(), Side::default());
        let mut ratios = Vec::with_capacity(rounds);
        // `SIDE=taskpoll` or `SIDE=bare`: one side only, to profile it (ratios are then meaningless).
        let only_side = std::env::var("SIDE").ok();
        for round in 0..rounds {
            sim.clear_requests();
            // Each side goes first every other round, so neither gains from its place.
            let (mut t_ns, mut b_ns) = (0, 0);
            for side in if round % 2 == 0 { [true, false] } else { [false, true] } {
                if only_side.as_deref().is_some_and(|only| (only == "taskpoll") != side) {
                    continue;
                }
                let (cpu, t0) = (client_cpu_ns(), Instant::now());
                if side {
                    runtime.block_on(async {
                        for _ in 0..per_round {
                            client.get(&task).await?;
                        }
                        Ok::<_, taskpoll::Error>(())
                    })?;
                } else {
                    runtime.block_on(async {
                        for _ in 0..per_round {
                            replay.read(&http).await?;
                        }
                        Ok::<_, Box<dyn StdError + Send + Sync>>(())
                    })?;
                }
                let (wall, ns) = (t0.elapsed(), client_cpu_ns().saturating_sub(cpu));
                let measured = if side { &mut taskpoll } else { &mut bare };
                measured.wall += wall;
                measured.cpu_ns += ns;
                measured.reads += per_round;
                *(if side { &mut t_ns } else { &mut b_ns }) = ns;
            }
            ratios.push(t_ns as f64 / b_ns.max(1) as f64);
        }
        ratios.sort_by(f64::total_cmp);
        sim.remove_task(&task);
        let cpu = |s: &Side| s.cpu_ns as f64 / 1e6;
        let wall = |s: &Side| s.wall.as_secs_f64() * 1e3;
        let (t_cpu, b_cpu) = (taskpoll.per_read_us(cpu), bare.per_read_us(cpu));
        println!(
            "  {:<12} {:>16.1} {:>16.1} {:>11.2}x {:>9.2}x {:>5.2}-{:.2}x {:>16.1} {:>16.1}",
            spec.name(),
            t_cpu,
            b_cpu,
            t_cpu / b_cpu.max(f64::MIN_POSITIVE),
            ratios[ratios.len() / 2],
            ratios[0],
            ratios[ratios.len() - 1],
            taskpoll.per_read_us(wall),
            bare.per_read_us(wall),
        );
    }
    drop(sim);
    Ok(())
}
