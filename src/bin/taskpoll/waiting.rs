//! `get`, `wait` and `watch`, and the many-task wait the demo shares.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::io::IsTerminal as _;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use serde_json::json;
use taskpoll::wait::WaitOutcome;
use taskpoll::{Client, Phase, PollEvent, Task, TaskRef, WaitOptions, WaitState};

use super::args::{ManyArgs, OptionArgs, ProviderArgs, ResumeArgs, TaskArgs, WaitArgs, WaitManyArgs};
use super::error::Error;
use super::interrupts::Interrupts;
use super::output::{Exit, err_line, error_text, escape_controls, outcome_json, print_line};
use super::state_file;

/// Reads every task once and prints one line per ID, in input order. IDs of
/// the same provider go through [`Client::get_many`] (the provider's batch
/// read, where its spec has one); a task with inputs is read on its own.
pub(crate) async fn get(args: TaskArgs) -> Result<Exit, Error> {
    let refs = args.task_refs()?;
    let client = args.settings.client(&refs)?;
    let reads = read_all(&client, &refs).await?;
    let mut exit = Exit::Ok;
    let mut reported: Vec<*const taskpoll::Error> = Vec::new();
    for (task_ref, read) in refs.iter().zip(&reads) {
        let result = read.as_result();
        if let Err(e) = result {
            exit = exit.worse(Exit::for_error(e));
            match read {
                Read::Own(_) => report_error(task_ref, e, None),
                // A batch read that failed as a whole is said once, not once per task.
                Read::Shared(shared) if !reported.contains(&Arc::as_ptr(shared)) => {
                    reported.push(Arc::as_ptr(shared));
                    let count = reads.iter().filter(|r| matches!(r, Read::Shared(s) if Arc::ptr_eq(s, shared))).count();
                    err_line(&format!("taskpoll: {} ({count} tasks): {}", task_ref.provider(), error_text(e, None)));
                }
                Read::Shared(_) => {}
            }
        }
        print_line(&outcome_json(task_ref, result, None, None));
    }
    Ok(exit)
}

/// One task's read: its own, or the error of the batch read it was part of.
enum Read {
    Own(Result<Task, taskpoll::Error>),
    Shared(Arc<taskpoll::Error>),
}

impl Read {
    fn as_result(&self) -> Result<&Task, &taskpoll::Error> {
        match self {
            Read::Own(result) => result.as_ref(),
            Read::Shared(error) => Err(error),
        }
    }
}

/// Reads of tasks with inputs run this many at once (batch reads have their own bound).
const SINGLE_READS: usize = 8;

/// Reads every task; the reads are in the order of `refs`.
async fn read_all(client: &Client, refs: &[TaskRef]) -> Result<Vec<Read>, Error> {
    let mut reads: Vec<Option<Read>> = std::iter::repeat_with(|| None).take(refs.len()).collect();
    // Inputs are not ids: such tasks cannot ride in a batch read.
    let (plain, with_inputs): (Vec<usize>, Vec<usize>) = (0..refs.len()).partition(|&i| refs[i].inputs().is_empty());
    let mut groups: HashMap<&str, Vec<usize>> = HashMap::new();
    for i in plain {
        groups.entry(refs[i].provider()).or_default().push(i);
    }
    for (provider, indices) in groups {
        let ids: Vec<&str> = indices.iter().map(|&i| refs[i].id()).collect();
        match client.get_many(provider, &ids).await {
            Ok(results) => {
                for (i, result) in indices.into_iter().zip(results) {
                    reads[i] = Some(Read::Own(result));
                }
            }
            Err(error) => {
                let error = Arc::new(error);
                for i in indices {
                    reads[i] = Some(Read::Shared(error.clone()));
                }
            }
        }
    }
    let singles = futures_util::stream::iter(with_inputs)
        .map(|i| async move { (i, client.get(&refs[i]).await) })
        .buffer_unordered(SINGLE_READS)
        .collect::<Vec<_>>()
        .await;
    for (i, result) in singles {
        reads[i] = Some(Read::Own(result));
    }
    reads.into_iter().collect::<Option<Vec<Read>>>().ok_or_else(|| Error::usage("the read returned no answer"))
}

/// How one task's wait ended.
pub(crate) struct Outcome {
    pub task_ref: TaskRef,
    pub result: Result<Task, taskpoll::Error>,
    pub polls: u32,
    /// From the start of the wait to its end (not to the end of the last poll).
    pub elapsed: Duration,
    /// Polls whose read failed and were retried (e.g. a 429).
    pub retried: u32,
}

/// How progress is shown on stderr.
#[derive(Clone)]
pub(crate) enum Progress {
    /// Spinners (stderr is a terminal).
    Bars(MultiProgress),
    /// One plain line per phase change or retried read.
    Lines,
}

impl Progress {
    pub(crate) fn for_stderr() -> Self {
        if std::io::stderr().is_terminal() { Progress::Bars(MultiProgress::new()) } else { Progress::Lines }
    }
}

/// Waits on every task at once; `on_event` sees each poll as it returns.
pub(crate) async fn wait_all(
    client: &Client,
    tasks: Vec<(TaskRef, WaitOptions)>,
    progress: &Progress,
    on_event: &(dyn Fn(&TaskRef, &PollEvent) + Sync),
) -> Result<Vec<Outcome>, Error> {
    let waits = tasks.into_iter().map(|(task_ref, options)| {
        let bar = spinner(progress, &task_ref);
        async move {
            let started = Instant::now();
            let mut watch = client.wait(&task_ref, options);
            let (mut polls, mut retried) = (0, 0);
            let mut last_task = None;
            let mut failed = None;
            while let Some(item) = watch.next().await {
                match item {
                    Ok(event) => {
                        polls = event.attempt;
                        if event.error.is_some() {
                            retried += 1;
                        }
                        report(&bar, &task_ref, &event);
                        on_event(&task_ref, &event);
                        if let Some(task) = event.task {
                            last_task = Some(task);
                        }
                    }
                    Err(error) => {
                        if let Some(state) = error.wait_state() {
                            polls = state.attempts;
                        }
                        failed = Some(error);
                        break;
                    }
                }
            }
            let result = match (failed, last_task) {
                (Some(error), _) => Err(error),
                (None, Some(task)) => Ok(task),
                (None, None) => return Err(Error::usage(format!("{task_ref}: the wait ended without an answer"))),
            };
            let elapsed = started.elapsed();
            if let Some(bar) = bar {
                let text = final_message(result.as_ref(), Some(polls), elapsed);
                bar.finish_with_message(escape_controls(&text).into_owned());
            }
            Ok(Outcome { task_ref, result, polls, elapsed, retried })
        }
    });
    futures_util::future::join_all(waits).await.into_iter().collect()
}

/// A task's spinner, when stderr is a terminal.
fn spinner(progress: &Progress, task_ref: &TaskRef) -> Option<ProgressBar> {
    let Progress::Bars(multi) = progress else { return None };
    let bar = multi.add(ProgressBar::new_spinner());
    bar.set_style(
        ProgressStyle::with_template("{spinner} {prefix:.bold} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.set_prefix(escape_controls(&task_ref.to_string()).into_owned());
    bar.enable_steady_tick(Duration::from_millis(120));
    Some(bar)
}

/// What a task's spinner ends with.
fn final_message(result: Result<&Task, &taskpoll::Error>, polls: Option<u32>, elapsed: Duration) -> String {
    let after = polls.map(|n| format!(" after {n} polls")).unwrap_or_default();
    match result {
        Ok(task) => format!("{}{after}", task.phase()),
        Err(e) if e.is_task_failure() => match e.task() {
            Some(task) => format!("{}{after}: {}", task.phase(), task.error().unwrap_or("")),
            None => e.to_string(),
        },
        Err(e) => error_text(e, Some(elapsed)),
    }
}

fn report(bar: &Option<ProgressBar>, task_ref: &TaskRef, event: &PollEvent) {
    let phase = event.phase.map_or("-".to_string(), |p| p.to_string());
    let status = event.status.as_deref().unwrap_or("");
    let mut next = event.next_delay.map(|d| format!(", next poll in {:.1}s", d.as_secs_f64())).unwrap_or_default();
    if let Some(left) = time_left(event) {
        next.push_str(&format!(", ~{} left", seconds_text(left)));
    }
    match bar {
        Some(bar) => {
            let text = match &event.error {
                Some(error) => format!("poll {}: {error}{next}", event.attempt),
                None => format!("{phase} ({status}) poll {}, {:.1}s{next}", event.attempt, event.elapsed.as_secs_f64()),
            };
            bar.set_message(escape_controls(&text).into_owned());
        }
        None => {
            let (attempt, at) = (event.attempt, event.elapsed.as_secs_f64());
            if let Some(error) = &event.error {
                // Only a poll with a next one planned is retried; 401/403/404 end the wait here.
                let what = if event.next_delay.is_some() { "failed, retrying" } else { "failed" };
                err_line(&format!("{task_ref}: poll {attempt} at {at:.1}s {what}: {error}"));
            } else if event.changed {
                err_line(&format!("{task_ref}: {phase} ({status}) at poll {attempt}, {at:.1}s"));
            }
        }
    }
}

/// How long the task is expected to take still (even odds), from how long
/// the provider's tasks took; `None` without enough history.
fn time_left(event: &PollEvent) -> Option<Duration> {
    let p50 = Duration::from_millis(event.state.eta_p50_ms?);
    event.next_delay.is_some().then(|| p50.saturating_sub(event.elapsed))
}

/// `40 s`, `3 min`, `2 h`.
fn seconds_text(d: Duration) -> String {
    match d.as_secs() {
        s if s < 120 => format!("{} s", s.max(1)),
        s if s < 7_200 => format!("{} min", s / 60),
        s => format!("{} h", s / 3_600),
    }
}

fn exit_for(outcome: &Outcome) -> Exit {
    exit_for_result(&outcome.result)
}

fn exit_for_result(result: &Result<Task, taskpoll::Error>) -> Exit {
    match result {
        Ok(_) => Exit::Ok,
        Err(e) => Exit::for_error(e),
    }
}

/// `wait`: one task through its own watch (every poll is seen, so retried
/// reads are reported and polls counted); several through one [`taskpoll::Waiter`].
pub(crate) async fn wait(args: WaitManyArgs) -> Result<Exit, Error> {
    if let Some(url) = &args.store {
        return super::stored::wait(&args, url).await;
    }
    let tasks = &args.wait.tasks;
    let refs = tasks.task_refs()?;
    let client = many_client(&tasks.settings, &args.many, &refs)?;
    let receiver = listen_for_webhooks(&client, args.webhook_listen).await?;
    let mut saved = SavedStates::new(args.many.save_state.as_deref());
    // Before the first task is added: a Ctrl-C from then on gets its lines.
    let interrupts = Interrupts::listen()?;
    let exit = match refs.as_slice() {
        [first, rest @ ..] if rest.iter().all(|r| r == first) => {
            let task_ref = first.clone();
            wait_one(&client, &args.wait.options, task_ref, interrupts, &mut saved).await?
        }
        _ => {
            let starts = refs.into_iter().map(Start::Add).collect();
            wait_many(&client, &args.wait.options, starts, interrupts, &mut saved).await?
        }
    };
    if let Some(server) = receiver {
        server.shutdown().await;
    }
    saved.write()?;
    Ok(exit)
}

/// The webhook receiver, when asked for; started before the first wait, so no delivery is missed.
async fn listen_for_webhooks(
    client: &Client,
    addr: Option<std::net::SocketAddr>,
) -> Result<Option<taskpoll::webhook::WebhookServer>, Error> {
    let Some(addr) = addr else { return Ok(None) };
    let server = taskpoll::webhook::serve(client.clone(), addr).await?;
    err_line(&format!("taskpoll: receiving webhooks at http://{}/<provider>", server.addr()));
    Ok(Some(server))
}

/// `resume`: every wait saved in the file continues with a fresh deadline,
/// through one [`taskpoll::Waiter`], printed as `wait` prints.
pub(crate) async fn resume(args: ResumeArgs) -> Result<Exit, Error> {
    let states = state_file::load(&args.file)?;
    let refs: Vec<TaskRef> = states.iter().map(|state| state.task_ref.clone()).collect();
    let client = many_client(&args.settings, &args.many, &refs)?;
    let receiver = listen_for_webhooks(&client, args.webhook_listen).await?;
    let mut saved = SavedStates::new(args.many.save_state.as_deref());
    if states.is_empty() {
        err_line(&format!("taskpoll: {}: no wait to resume", escape_controls(&args.file.display().to_string())));
    }
    let interrupts = Interrupts::listen()?;
    let starts = states.into_iter().map(Start::Resume).collect();
    let exit = wait_many(&client, &args.options, starts, interrupts, &mut saved).await?;
    if let Some(server) = receiver {
        server.shutdown().await;
    }
    saved.write()?;
    Ok(exit)
}

/// A client with the many-task waiter's budget flags applied.
fn many_client(settings: &ProviderArgs, many: &ManyArgs, refs: &[TaskRef]) -> Result<Client, Error> {
    settings.client_with(refs, |mut builder| {
        if let Some(rate) = many.rate {
            builder = builder.rate_limit(rate.per_second, rate.burst);
        }
        if let Some(n) = many.max_in_flight {
            builder = builder.max_in_flight(usize::from(n));
        }
        builder
    })
}

/// The states of the waits that did not finish, for `--save-state`.
struct SavedStates<'a> {
    path: Option<&'a Path>,
    states: Vec<WaitState>,
}

impl<'a> SavedStates<'a> {
    fn new(path: Option<&'a Path>) -> Self {
        Self { path, states: Vec::new() }
    }

    /// Keeps the state of a wait that ended unfinished (its deadline, or Ctrl-C).
    fn note(&mut self, result: Result<&Task, &taskpoll::Error>) {
        if self.path.is_none() {
            return;
        }
        if let Err(error) = result
            && (error.is_deadline() || error.is_wait_cancelled())
            && let Some(state) = error.wait_state()
        {
            self.states.push(state.clone());
        }
    }

    fn write(self) -> Result<(), Error> {
        match self.path {
            Some(path) => state_file::save(path, &self.states),
            None => Ok(()),
        }
    }
}

/// How a wait joins the waiter.
enum Start {
    /// A new wait.
    Add(TaskRef),
    /// A saved wait, continued.
    Resume(WaitState),
}

async fn wait_one(
    client: &Client,
    args: &OptionArgs,
    task_ref: TaskRef,
    mut interrupts: Interrupts,
    saved: &mut SavedStates<'_>,
) -> Result<Exit, Error> {
    let options = args.options(&task_ref)?;
    let started = Instant::now();
    let progress = Progress::for_stderr();
    let bar = spinner(&progress, &task_ref);
    // A waiter of one: Ctrl-C cancels it, and the wait ends with its state.
    let mut waiter = client.waiter();
    let mut events = waiter.events().ok_or_else(|| Error::usage("the waiter's events are already watched"))?;
    waiter.add(task_ref.clone(), &options)?;
    let mut interrupted = false;
    let outcome = loop {
        tokio::select! {
            // Every event before the outcome: they were sent first.
            biased;
            Some(event) = events.next() => report(&bar, &task_ref, &event),
            outcome = waiter.next_outcome() => break outcome,
            () = interrupts.next(), if !interrupted => {
                interrupted = true;
                waiter.cancel_all();
            }
        }
    };
    let elapsed = started.elapsed();
    let Some(WaitOutcome { result, polls, .. }) = outcome else {
        return Err(Error::usage("the wait ended without an outcome"));
    };
    if let Some(bar) = bar {
        let text = final_message(result.as_ref(), Some(polls), elapsed);
        bar.finish_with_message(escape_controls(&text).into_owned());
    }
    if let (Err(e), Progress::Bars(multi)) = (&result, &progress)
        && e.is_wait_cancelled()
    {
        let _ = multi.clear();
    }
    saved.note(result.as_ref());
    if let Err(e) = &result {
        report_error(&task_ref, e, Some(elapsed));
    }
    print_line(&outcome_json(&task_ref, result.as_ref(), Some(Some(polls)), Some(elapsed)));
    Ok(if interrupted { Exit::Interrupted } else { exit_for_result(&result) })
}

/// Every task through one [`taskpoll::Waiter`]: each line is printed as its task
/// finishes, and each task's retried reads and the phase changes between its
/// first poll and its last as they happen (on stderr; the first is each
/// task's start, the last its outcome line). A task named twice is waited
/// on, and printed, once.
async fn wait_many(
    client: &Client,
    args: &OptionArgs,
    starts: Vec<Start>,
    mut interrupts: Interrupts,
    saved: &mut SavedStates<'_>,
) -> Result<Exit, Error> {
    let mut waiter = client.waiter();
    // Before the first add, so no poll goes unseen.
    let mut events = waiter.events().ok_or_else(|| Error::usage("the waiter's events are already watched"))?;
    let mut started: HashMap<TaskRef, Instant> = HashMap::with_capacity(starts.len());
    // New waits by provider, with the provider's options, added at once after
    // the loop: their first polls share full batch reads.
    let mut adds: HashMap<String, (WaitOptions, Vec<TaskRef>)> = HashMap::new();
    for start in starts {
        let task_ref = match &start {
            Start::Add(task_ref) => task_ref.clone(),
            Start::Resume(state) => state.task_ref.clone(),
        };
        if started.contains_key(&task_ref) {
            continue;
        }
        let at = Instant::now();
        match start {
            Start::Add(task_ref) => {
                let (_, tasks) = match adds.entry(task_ref.provider().to_string()) {
                    Entry::Occupied(known) => known.into_mut(),
                    Entry::Vacant(new) => new.insert((args.options(&task_ref)?, Vec::new())),
                };
                tasks.push(task_ref.clone());
            }
            // Each saved wait keeps its own policy, so its options are its own.
            Start::Resume(state) => {
                let task_options = args.resumed(&state)?;
                waiter.resume(state, &task_options)?;
            }
        }
        started.insert(task_ref, at);
    }
    for (task_options, tasks) in adds.into_values() {
        waiter.add_many(tasks, &task_options)?;
    }
    let mut board = Board::for_stderr(started.keys());
    let mut exit = Exit::Ok;
    let mut interrupted = false;
    let mut ticker = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            // A task's events before its outcome line: they were sent first.
            biased;
            Some(event) = events.next() => {
                board.expect(&event);
                let retried = event.error.is_some() && event.next_delay.is_some();
                let moved = event.changed && event.attempt > 1 && event.next_delay.is_some();
                if retried || moved {
                    board.suspend(|| report(&None, &event.state.task_ref, &event));
                }
            }
            item = waiter.next_outcome() => {
                let Some(WaitOutcome { task_ref, result, polls, .. }) = item else { break };
                // From the wait's start (just before it was added) to now, when it ended.
                let elapsed = started.remove(&task_ref).map(|at| at.elapsed());
                let polls = Some(polls);
                let code = match &result {
                    Ok(_) => Exit::Ok,
                    Err(e) => Exit::for_error(e),
                };
                exit = exit.worse(code);
                saved.note(result.as_ref());
                let done = Done { task_ref: &task_ref, result: result.as_ref(), polls, elapsed: elapsed.unwrap_or_default() };
                board.finished(done, started.len(), waiter.requests_sent());
                board.suspend(|| {
                    if let Err(e) = &result {
                        report_error(&task_ref, e, elapsed);
                    }
                    print_line(&outcome_json(&task_ref, result.as_ref(), Some(polls), elapsed));
                });
            }
            () = interrupts.next() => {
                if interrupted {
                    // A second Ctrl-C: stop now, without the remaining lines.
                    return Ok(Exit::Interrupted);
                }
                interrupted = true;
                // Every pending wait ends at once as cancelled, and gets its line above.
                waiter.cancel_all();
            }
            _ = ticker.tick() => board.tick(started.len(), waiter.requests_sent()),
        }
    }
    board.tick(0, waiter.requests_sent());
    board.done();
    Ok(exit)
}

/// A task that finished, for the progress board.
struct Done<'a> {
    task_ref: &'a TaskRef,
    result: Result<&'a Task, &'a taskpoll::Error>,
    polls: Option<u32>,
    elapsed: Duration,
}

/// Per-task spinners up to this many tasks; above, one summary bar.
const MAX_SPINNERS: usize = 8;

/// Progress of a many-task wait on stderr.
enum Board {
    /// A spinner per task (a terminal, a handful of tasks).
    Spinners { multi: MultiProgress, bars: HashMap<TaskRef, ProgressBar> },
    /// One bar: done / failed / pending, requests sent, current rate (a terminal, many tasks).
    Summary {
        bar: ProgressBar,
        failed: u64,
        requests: u64,
        at: Instant,
        rate: f64,
        /// When each pending task is expected to end (even odds), where an estimate exists.
        ends: HashMap<TaskRef, Instant>,
    },
    /// Not a terminal: a line per failure (printed with the outcome), nothing per success.
    Lines,
}

impl Board {
    fn for_stderr<'a>(tasks: impl ExactSizeIterator<Item = &'a TaskRef>) -> Self {
        if !std::io::stderr().is_terminal() {
            return Board::Lines;
        }
        if tasks.len() <= MAX_SPINNERS {
            let multi = MultiProgress::new();
            let style = ProgressStyle::with_template("{spinner} {prefix:.bold} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner());
            let bars = tasks
                .map(|task_ref| {
                    let bar = multi.add(ProgressBar::new_spinner().with_style(style.clone()));
                    bar.set_prefix(escape_controls(&task_ref.to_string()).into_owned());
                    bar.set_message("waiting");
                    bar.enable_steady_tick(Duration::from_millis(120));
                    (task_ref.clone(), bar)
                })
                .collect();
            return Board::Spinners { multi, bars };
        }
        let bar = ProgressBar::new(tasks.len() as u64).with_style(
            ProgressStyle::with_template("{spinner} [{bar:30}] {pos}/{len} done, {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.enable_steady_tick(Duration::from_millis(120));
        Board::Summary { bar, failed: 0, requests: 0, at: Instant::now(), rate: 0.0, ends: HashMap::new() }
    }

    fn finished(&mut self, done: Done<'_>, pending: usize, requests_sent: u64) {
        let Done { task_ref, result, polls, elapsed } = done;
        match self {
            Board::Spinners { bars, .. } => {
                // Kept (not removed): a dropped bar would vanish from the screen.
                if let Some(bar) = bars.get(task_ref) {
                    let text = final_message(result, polls, elapsed);
                    bar.finish_with_message(escape_controls(&text).into_owned());
                }
            }
            Board::Summary { bar, failed, ends, .. } => {
                ends.remove(task_ref);
                if !matches!(result, Ok(task) if task.phase() == Phase::Succeeded) {
                    *failed += 1;
                }
                bar.inc(1);
            }
            Board::Lines => {}
        }
        self.render(pending, requests_sent);
    }

    /// Updates the request rate (about every 250 ms).
    fn tick(&mut self, pending: usize, requests_sent: u64) {
        if let Board::Summary { requests, at, rate, .. } = self {
            let seconds = at.elapsed().as_secs_f64();
            // A shorter window (the interval's immediate first tick) gives no meaningful rate.
            if seconds >= 0.1 {
                let now = requests_sent.saturating_sub(*requests) as f64 / seconds;
                // Smoothed over about a second, so the figure is readable.
                *rate = 0.75 * *rate + 0.25 * now;
                (*requests, *at) = (requests_sent, Instant::now());
            }
        }
        self.render(pending, requests_sent);
    }

    /// Notes when a pending task is expected to end.
    fn expect(&mut self, event: &PollEvent) {
        if let Board::Summary { ends, .. } = self {
            match time_left(event) {
                Some(left) => ends.insert(event.state.task_ref.clone(), Instant::now() + left),
                None => ends.remove(&event.state.task_ref),
            };
        }
    }

    fn render(&self, pending: usize, requests_sent: u64) {
        if let Board::Summary { bar, failed, rate, ends, .. } = self {
            let left = ends.values().max().map(|end| end.saturating_duration_since(Instant::now()));
            let left = left.map(|d| format!(", ~{} left", seconds_text(d))).unwrap_or_default();
            bar.set_message(format!("{failed} failed, {pending} pending, {requests_sent} requests, {rate:.1}/s{left}"));
        }
    }

    /// Runs `print` with the bars out of the way, so lines do not tear them.
    fn suspend(&self, print: impl FnOnce()) {
        match self {
            Board::Spinners { multi, .. } => multi.suspend(print),
            Board::Summary { bar, .. } => bar.suspend(print),
            Board::Lines => print(),
        }
    }

    fn done(self) {
        if let Board::Summary { bar, .. } = self {
            bar.abandon();
        }
    }
}

pub(crate) async fn watch(args: WaitArgs) -> Result<Exit, Error> {
    let refs = args.tasks.task_refs()?;
    let client = args.tasks.settings.client(&refs)?;
    let tasks = refs.into_iter().map(|r| args.options.options(&r).map(|o| (r, o))).collect::<Result<Vec<_>, _>>()?;
    let print_change = |task_ref: &TaskRef, event: &PollEvent| {
        if !event.changed {
            return;
        }
        print_line(&json!({
            "provider": task_ref.provider(),
            "id": task_ref.id(),
            "attempt": event.attempt,
            "elapsed_ms": event.elapsed.as_millis() as u64,
            "phase": event.phase,
            "status": event.status,
            "http_status": event.task.as_ref().map(Task::http_status),
            "error": event.task.as_ref().and_then(Task::error),
            "next_delay_ms": event.next_delay.map(|d| d.as_millis() as u64),
            "eta_p50_ms": event.state.eta_p50_ms,
            "eta_p90_ms": event.state.eta_p90_ms,
        }));
    };
    let outcomes = wait_all(&client, tasks, &Progress::Lines, &print_change).await?;
    for outcome in &outcomes {
        if let Err(e) = &outcome.result {
            report_error(&outcome.task_ref, e, Some(outcome.elapsed));
        }
    }
    Ok(Exit::combine(outcomes.iter().map(exit_for)))
}

/// One line on stderr; the task is named once.
fn report_error(task_ref: &TaskRef, error: &taskpoll::Error, elapsed: Option<Duration>) {
    let text = error_text(error, elapsed);
    if error.task_ref().is_some() {
        err_line(&format!("taskpoll: {text}"));
    } else {
        err_line(&format!("taskpoll: {task_ref}: {text}"));
    }
}
