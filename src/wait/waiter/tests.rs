//! The scheduler in virtual time: a scripted provider on a [`ManualClock`],
//! so every read instant is exact and nothing sleeps for real.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::scheduler::{Command, Entry, Finished, Group, Scheduler};
use super::source::{BatchIds, Limits, Source};
use crate::observe::Seen;
use crate::spec::{BoxFuture, ProviderSpec, RateSpec};
use crate::wait::Poller;
use crate::{Clock, Error, ManualClock, Phase, Policy, Result, Task, TaskRef, WaitOptions};

/// One read the scripted provider received.
#[derive(Debug, Clone)]
struct Read {
    /// When it was sent, from the start of the test.
    at: Duration,
    ids: Vec<String>,
    batch: bool,
}

/// A provider whose tasks succeed at scripted times; ids it does not know
/// are left out of batch answers and read as still running.
struct Scripted {
    spec: &'static ProviderSpec,
    clock: Arc<dyn Clock>,
    start: Instant,
    batch: Option<usize>,
    done_at: HashMap<String, Duration>,
    /// The n-th read (from 0) fails with this error instead.
    failures: Mutex<HashMap<usize, Error>>,
    reads: Mutex<Vec<Read>>,
    /// Reads started and not finished, and the most at once.
    open: Arc<AtomicUsize>,
    most_open: Arc<AtomicUsize>,
    /// Answers take one scheduler turn (the in-flight bound can be seen).
    yield_once: bool,
    /// Keep only the number of reads (memory measurements).
    quiet: bool,
    count: AtomicUsize,
}

impl Scripted {
    fn new(provider: &str, clock: Arc<dyn Clock>) -> Self {
        let spec = crate::spec::provider(provider).expect("a built-in provider");
        Self {
            spec,
            start: clock.now(),
            clock,
            batch: spec.many.map(|m| m.max_ids as usize),
            done_at: HashMap::new(),
            failures: Mutex::new(HashMap::new()),
            reads: Mutex::new(Vec::new()),
            open: Arc::new(AtomicUsize::new(0)),
            most_open: Arc::new(AtomicUsize::new(0)),
            yield_once: false,
            quiet: false,
            count: AtomicUsize::new(0),
        }
    }

    fn task(&self, id: &str, now: Duration) -> Task {
        let phase = match self.done_at.get(id) {
            Some(at) if *at <= now => Phase::Succeeded,
            _ => Phase::Running,
        };
        let raw = self.spec.phases.iter().find(|(_, p)| *p == phase).map_or("?", |(raw, _)| *raw);
        let mut body = json!({});
        set(&mut body, self.spec.task.status, json!(raw));
        if let Some(pointer) = self.spec.task.id {
            set(&mut body, pointer, json!(id));
        }
        let task_ref = TaskRef::new(self.spec.name, id).expect("valid id");
        crate::observe::task_from_body(self.spec, task_ref, 200, body)
    }

    /// Records a read and returns its failure, if one is scripted.
    fn record(&self, ids: Vec<String>, batch: bool) -> (Duration, Option<Error>) {
        let at = self.clock.now() - self.start;
        if self.quiet {
            self.count.fetch_add(1, Ordering::SeqCst);
            return (at, None);
        }
        let mut reads = self.reads.lock().expect("lock");
        let failure = self.failures.lock().expect("lock").remove(&reads.len());
        reads.push(Read { at, ids, batch });
        let open = self.open.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_open.fetch_max(open, Ordering::SeqCst);
        (at, failure)
    }

    fn answer<T: Send + 'static>(&self, value: T) -> BoxFuture<'static, T> {
        let open = self.open.clone();
        let yield_once = self.yield_once;
        Box::pin(async move {
            if yield_once {
                tokio::task::yield_now().await;
            }
            open.fetch_sub(1, Ordering::SeqCst);
            value
        })
    }

    fn reads(&self) -> Vec<Read> {
        self.reads.lock().expect("lock").clone()
    }
}

/// Sets `value` at `pointer`, objects made on the way (`/data/status`).
fn set(body: &mut Value, pointer: &str, value: Value) {
    let mut here = body;
    for key in pointer.trim_start_matches('/').split('/') {
        here = &mut here[key];
    }
    *here = value;
}

impl Source for Arc<Scripted> {
    fn read_one(&self, task: TaskRef, _limits: Limits, _keep_body: bool) -> BoxFuture<'static, Result<Task>> {
        let (at, failure) = self.record(vec![task.id().to_string()], false);
        let result = match failure {
            Some(error) => Err(error),
            None => Ok(self.task(task.id(), at)),
        };
        self.answer(result)
    }

    fn read_many(&self, ids: BatchIds, _limits: Limits) -> BoxFuture<'static, Result<Vec<Option<Seen>>>> {
        let ids = ids.to_vec();
        let (at, failure) = self.record(ids.clone(), true);
        let result = match failure {
            Some(error) => Err(error),
            None => {
                Ok(ids.iter().map(|id| self.done_at.contains_key(id).then(|| Seen::of(self.task(id, at)))).collect())
            }
        };
        self.answer(result)
    }

    fn batch_size(&self) -> Option<usize> {
        self.batch
    }
}

struct Run {
    commands: mpsc::UnboundedSender<Command>,
    group: Arc<Group>,
    finished: mpsc::UnboundedReceiver<Vec<Finished>>,
    /// Outcomes received and not yet taken.
    ready: std::collections::VecDeque<Finished>,
    next_key: u64,
}

impl Run {
    /// Starts a scheduler for `source` with these waits already queued.
    fn start(
        source: &Arc<Scripted>,
        clock: &Arc<dyn Clock>,
        rate: RateSpec,
        max_in_flight: usize,
        waits: Vec<(String, WaitOptions)>,
    ) -> Self {
        let (commands, receiver) = mpsc::unbounded_channel();
        let (group, finished) = Group::new(7, None, None);
        let mut run = Run { commands, group, finished, ready: Default::default(), next_key: 0 };
        for (id, options) in waits {
            run.add(source.spec.name, &id, &options);
        }
        let scheduler = Scheduler::new(
            source.spec.name,
            Arc::new(source.clone()),
            clock.clone(),
            (rate, None),
            max_in_flight,
            receiver,
        );
        tokio::spawn(scheduler.run());
        run
    }

    fn add(&mut self, provider: &str, id: &str, options: &WaitOptions) {
        let poller = Poller::new(TaskRef::new(provider, id).expect("ref"), options).expect("poller");
        self.commands
            .send(Command::Add(Entry::new(self.next_key, poller, self.group.clone())))
            .expect("scheduler running");
        self.next_key += 1;
    }

    async fn next(&mut self) -> Finished {
        while self.ready.is_empty() {
            self.ready.extend(self.finished.recv().await.expect("an outcome"));
        }
        self.ready.pop_front().expect("an outcome")
    }

    async fn collect(&mut self, n: usize) -> Vec<Finished> {
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(self.next().await);
        }
        out
    }
}

const LOOSE: RateSpec = RateSpec { per_second: 1e6, burst: 1_000_000 };

fn options(clock: &Arc<dyn Clock>, deadline: Duration) -> WaitOptions {
    WaitOptions::new(deadline).clock(clock.clone())
}

fn ids(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{}", 1000 + i)).collect()
}

/// Groups reads sent at the same instant into rounds.
fn rounds_of(reads: &[Read]) -> Vec<(Duration, Vec<&Read>)> {
    let mut rounds: Vec<(Duration, Vec<&Read>)> = Vec::new();
    for read in reads {
        match rounds.last_mut() {
            Some((at, round)) if *at == read.at => round.push(read),
            _ => rounds.push((read.at, vec![read])),
        }
    }
    rounds
}

#[tokio::test]
async fn due_polls_are_coalesced_into_batches_of_max_ids() {
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::new());
    let mut scripted = Scripted::new("deepomatic", clock.clone());
    for (i, id) in ids(250).into_iter().enumerate() {
        // Finishing at spread times over 4 s.
        scripted.done_at.insert(id, Duration::from_millis(16 * i as u64));
    }
    let scripted = Arc::new(scripted);
    let waits = ids(250).into_iter().map(|id| (id, options(&clock, Duration::from_secs(60)))).collect();
    let mut run = Run::start(&scripted, &clock, LOOSE, 4, waits);
    let outcomes = run.collect(250).await;
    assert!(outcomes.iter().all(|f| f.result.as_ref().is_ok_and(|t| t.phase() == Phase::Succeeded)));

    let reads = scripted.reads();
    assert!(reads.iter().all(|r| r.ids.len() <= 100), "reads of at most 100 ids");
    // Per round (reads sent at the same instant), at most ⌈pending / 100⌉ reads.
    let mut pending = 250usize;
    let rounds = rounds_of(&reads);
    let mut finished = std::collections::HashSet::new();
    for (at, round) in &rounds {
        assert!(round.len() <= pending.div_ceil(100), "{} reads at {at:?} for {pending} pending", round.len());
        // A wait is read alone, with the single-task operation (one request
        // all the same), only as what is left of a round after full batches:
        // the last task pending, or the 201st of 201 (the unseeded jitter
        // decides which rounds meet which counts).
        if round.iter().any(|r| !r.batch) {
            let singles = round.iter().filter(|r| !r.batch).count();
            let full = round.iter().filter(|r| r.batch).all(|r| r.ids.len() == 100);
            assert!(singles == 1 && full, "a round at {at:?} with {singles} single reads for {pending} pending");
        }
        let asked: usize = round.iter().map(|r| r.ids.len()).sum();
        assert!(asked <= pending, "{asked} ids asked at {at:?} for {pending} pending");
        // The ids this round saw finished are not pending any more.
        finished.extend(round.iter().flat_map(|r| &r.ids).filter(|id| scripted.done_at[*id] <= *at));
        pending = 250 - finished.len();
    }
    // Far fewer requests than tasks × polls: the waits stayed together.
    assert!(reads.len() <= 3 * rounds.len(), "{} reads in {} rounds", reads.len(), rounds.len());
    assert!(reads.len() <= 24, "{} reads for 250 tasks in {} rounds", reads.len(), rounds.len());
}

#[tokio::test]
async fn co_started_waits_with_a_jittered_schedule_stay_in_one_round() {
    // The official Deepomatic client's schedule: 100 ms plus full jitter on a
    // doubling cap, unseeded, so each wait would draw its own delays.
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::new());
    let mut scripted = Scripted::new("deepomatic", clock.clone());
    for (i, id) in ids(300).into_iter().enumerate() {
        // Finishing at spread times over 0.5-3.5 s.
        scripted.done_at.insert(id, Duration::from_millis(500 + 10 * i as u64));
    }
    let scripted = Arc::new(scripted);
    let policy = Policy::deepomatic_client().expect("preset");
    assert_eq!(policy.seed(), None);
    let waits =
        ids(300).into_iter().map(|id| (id, options(&clock, Duration::from_secs(60)).policy(policy.clone()))).collect();
    let mut run = Run::start(&scripted, &clock, LOOSE, 4, waits);
    let outcomes = run.collect(300).await;
    assert!(outcomes.iter().all(|f| f.result.as_ref().is_ok_and(|t| t.phase() == Phase::Succeeded)));

    let reads = scripted.reads();
    let rounds = rounds_of(&reads);
    // One round per poll of the longest wait: every wait polls at the same instants.
    let most_polls = outcomes.iter().map(|f| f.polls).max().unwrap_or(0) as usize;
    assert_eq!(rounds.len(), most_polls, "{} rounds for waits of at most {most_polls} polls", rounds.len());
    // Each round reads the pending ids in ⌈pending / 100⌉ reads.
    let mut finished = std::collections::HashSet::new();
    for (at, round) in &rounds {
        let pending = 300 - finished.len();
        assert_eq!(round.len(), pending.div_ceil(100), "{} reads at {at:?} for {pending} pending", round.len());
        finished.extend(round.iter().flat_map(|r| &r.ids).filter(|id| scripted.done_at[*id] <= *at));
    }
}

#[tokio::test]
async fn success_is_seen_within_one_poll_interval() {
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::new());
    let mut scripted = Scripted::new("deepomatic", clock.clone());
    scripted.done_at.insert("7".into(), Duration::from_millis(3_100));
    let scripted = Arc::new(scripted);
    let policy = Policy::builder().initial_delay(Duration::from_secs(1)).factor(1.0).build().expect("policy");
    let waits = vec![("7".to_string(), options(&clock, Duration::from_secs(60)).policy(policy))];
    let mut run = Run::start(&scripted, &clock, LOOSE, 4, waits);
    let done = run.next().await;
    assert!(done.result.is_ok());
    let times: Vec<Duration> = scripted.reads().iter().map(|r| r.at).collect();
    assert_eq!(times, [0, 1, 2, 3, 4].map(Duration::from_secs));
}

#[tokio::test]
async fn the_rate_budget_holds_across_all_waits_of_a_provider() {
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::new());
    let scripted = Arc::new(Scripted::new("factpulse", clock.clone()));
    let rate = RateSpec { per_second: 2.0, burst: 3 };
    let policy = Policy::builder().initial_delay(Duration::from_millis(200)).factor(1.0).build().expect("policy");
    let waits =
        ids(20).into_iter().map(|id| (id, options(&clock, Duration::from_secs(10)).policy(policy.clone()))).collect();
    let mut run = Run::start(&scripted, &clock, rate, 8, waits);
    let outcomes = run.collect(20).await;
    assert!(outcomes.iter().all(|f| f.result.as_ref().is_err_and(Error::is_deadline)));

    let times: Vec<Duration> = scripted.reads().iter().map(|r| r.at).collect();
    assert!(times.len() >= 20, "every wait polled at least once ({} reads)", times.len());
    // GCRA: n reads within a span T need T ≥ (n − burst) / rate.
    for (i, first) in times.iter().enumerate() {
        for (j, last) in times.iter().enumerate().skip(i) {
            let n = (j - i + 1) as f64;
            let span = (*last - *first).as_secs_f64();
            assert!(span + 1e-3 >= (n - 3.0) / 2.0, "{n} reads within {span} s");
        }
    }
    // And the budget is used: about rate × 10 s + burst reads.
    assert!(times.len() >= 20, "{}", times.len());
    assert!(times.len() <= 2 * 10 + 3, "{}", times.len());
}

#[tokio::test]
async fn a_429_with_retry_after_pauses_the_whole_provider() {
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::new());
    let scripted = Scripted::new("factpulse", clock.clone());
    scripted
        .failures
        .lock()
        .expect("lock")
        .insert(2, crate::wait::tests::api_error("factpulse", "get_task_status", 429, Some(Duration::from_secs(3))));
    let scripted = Arc::new(scripted);
    let policy = Policy::builder().initial_delay(Duration::from_millis(500)).factor(1.0).build().expect("policy");
    let waits =
        ids(5).into_iter().map(|id| (id, options(&clock, Duration::from_secs(6)).policy(policy.clone()))).collect();
    let mut run = Run::start(&scripted, &clock, LOOSE, 1, waits);
    run.collect(5).await;
    let reads = scripted.reads();
    let limited_at = reads[2].at;
    let next = reads.get(3).map(|r| r.at).expect("polling went on after the pause");
    assert!(next >= limited_at + Duration::from_secs(3), "read at {next:?}, 429 at {limited_at:?}");
}

#[tokio::test]
async fn the_deadline_ends_each_wait_with_its_state_and_no_late_request() {
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::new());
    let mut scripted = Scripted::new("deepomatic", clock.clone());
    scripted.done_at.insert("1".into(), Duration::from_secs(1));
    scripted.done_at.insert("2".into(), Duration::from_secs(100));
    scripted.done_at.insert("3".into(), Duration::from_secs(100));
    let scripted = Arc::new(scripted);
    let waits = vec![
        ("1".to_string(), options(&clock, Duration::from_secs(5))),
        ("2".to_string(), options(&clock, Duration::from_secs(5))),
        ("3".to_string(), options(&clock, Duration::from_secs(8))),
    ];
    let mut run = Run::start(&scripted, &clock, LOOSE, 4, waits);
    let mut outcomes: HashMap<String, Result<Task>> = HashMap::new();
    for _ in 0..3 {
        let done = run.next().await;
        outcomes.insert(done.task_ref.id().to_string(), done.result);
    }
    assert!(outcomes["1"].is_ok());
    for (id, deadline) in [("2", 5), ("3", 8)] {
        let error = outcomes[id].as_ref().expect_err("still pending at the deadline");
        let Error::DeadlineExceeded(ended) = error else { panic!("not a deadline: {error}") };
        assert_eq!(ended.elapsed(), Duration::from_secs(deadline), "ended exactly at the deadline");
        let state = error.wait_state().expect("a state to resume");
        assert!(state.attempts > 0);
        let late = scripted.reads().iter().any(|r| r.ids.contains(&id.to_string()) && r.at >= ended.elapsed());
        assert!(!late, "no request for {id} at or after its deadline");
    }
}

#[tokio::test]
async fn a_task_left_out_of_a_batch_is_read_singly_from_then_on() {
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::new());
    let mut scripted = Scripted::new("deepomatic", clock.clone());
    scripted.done_at.insert("1".into(), Duration::from_secs(30));
    let scripted = Arc::new(scripted);
    let waits = vec![
        ("1".to_string(), options(&clock, Duration::from_secs(60))),
        ("ghost".to_string(), options(&clock, Duration::from_secs(60))),
    ];
    let mut run = Run::start(&scripted, &clock, LOOSE, 4, waits);
    let first = run.next().await;
    assert_eq!(first.task_ref.id(), "1");
    assert!(first.result.is_ok());
    // Its single read finds it (still running): it is followed to its deadline, never called missing.
    let done = run.next().await;
    assert_eq!(done.task_ref.id(), "ghost");
    let error = done.result.expect_err("pending at the deadline");
    assert!(error.is_deadline(), "{error}");
    let ghost: Vec<bool> =
        scripted.reads().iter().filter(|r| r.ids.contains(&"ghost".to_string())).map(|r| r.batch).collect();
    assert!(ghost.len() > 3, "{ghost:?}");
    assert!(ghost[0], "the first read is the batch that left it out");
    assert!(ghost[1..].iter().all(|batch| !batch), "single reads from then on: {ghost:?}");
}

#[tokio::test]
async fn one_due_task_is_read_singly_and_two_in_one_batch() {
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::new());
    let mut scripted = Scripted::new("deepomatic", clock.clone());
    for id in ["alone", "a", "b"] {
        scripted.done_at.insert(id.into(), Duration::from_secs(3));
    }
    let scripted = Arc::new(scripted);
    let mut run =
        Run::start(&scripted, &clock, LOOSE, 4, vec![("alone".into(), options(&clock, Duration::from_secs(60)))]);
    assert!(run.next().await.result.is_ok());
    let alone: Vec<(Vec<String>, bool)> = scripted.reads().into_iter().map(|r| (r.ids, r.batch)).collect();
    assert!(alone.len() > 1 && alone.iter().all(|(ids, batch)| ids == &["alone"] && !batch), "{alone:?}");
    let before = scripted.reads().len();
    let pair = vec![
        ("a".into(), options(&clock, Duration::from_secs(60))),
        ("b".into(), options(&clock, Duration::from_secs(60))),
    ];
    let mut run = Run::start(&scripted, &clock, LOOSE, 4, pair);
    run.collect(2).await;
    let reads = scripted.reads().split_off(before);
    assert!(!reads.is_empty() && reads.iter().all(|r| r.batch && r.ids == ["a", "b"]), "{reads:?}");
}

// Tokio's paused clock: time moves only while every task is idle, so the
// test can act between polls.
#[tokio::test(start_paused = true)]
async fn cancelling_stops_polling_and_reports_the_state() {
    let clock: Arc<dyn Clock> = Arc::new(crate::TokioClock);
    let scripted = Arc::new(Scripted::new("factpulse", clock.clone()));
    let waits = ids(3).into_iter().map(|id| (id, options(&clock, Duration::from_secs(600)))).collect();
    let mut run = Run::start(&scripted, &clock, LOOSE, 4, waits);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let polled = |id: &str| scripted.reads().iter().filter(|r| r.ids.iter().any(|i| i == id)).count();
    assert!(polled("1001") >= 2, "polling went on for 5 s");
    run.commands.send(Command::Cancel(1)).expect("running");
    let first = run.next().await;
    assert_eq!(first.task_ref.id(), "1001");
    let error = first.result.expect_err("cancelled");
    assert!(error.is_wait_cancelled(), "{error}");
    assert_eq!(error.wait_state().map(|s| s.attempts as usize), Some(polled("1001")));
    let cancelled_reads = polled("1001");
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(polled("1001"), cancelled_reads, "no read of a cancelled wait");
    assert!(polled("1000") > cancelled_reads, "the others went on");

    run.commands.send(Command::CancelGroup(run.group.id)).expect("running");
    let rest = run.collect(2).await;
    assert!(rest.iter().all(|f| f.result.as_ref().is_err_and(Error::is_wait_cancelled)));
    let reads_then = scripted.reads().len();
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(scripted.reads().len(), reads_then, "no read after cancelling every wait");
}

#[tokio::test(start_paused = true)]
async fn requests_in_flight_are_bounded_per_provider() {
    let clock: Arc<dyn Clock> = Arc::new(crate::TokioClock);
    let mut scripted = Scripted::new("factpulse", clock.clone());
    scripted.yield_once = true;
    for id in ids(12) {
        scripted.done_at.insert(id, Duration::ZERO);
    }
    let scripted = Arc::new(scripted);
    let waits = ids(12).into_iter().map(|id| (id, options(&clock, Duration::from_secs(60)))).collect();
    let mut run = Run::start(&scripted, &clock, LOOSE, 3, waits);
    run.collect(12).await;
    assert_eq!(scripted.most_open.load(Ordering::SeqCst), 3);
}

/// A scheduler for Cloudinary (results only by webhook) with the hub listening.
fn webhook_run(source: &Arc<Scripted>, clock: &Arc<dyn Clock>, hub: &crate::webhook::WebhookHub) -> Run {
    let (commands, receiver) = mpsc::unbounded_channel();
    let (group, finished) = Group::new(7, None, None);
    let hook = source.spec.webhook.as_ref().expect("cloudinary declares webhooks");
    let scheduler =
        Scheduler::new(source.spec.name, Arc::new(source.clone()), clock.clone(), (LOOSE, None), 4, receiver)
            .with_webhooks(Some((hub.clone(), hook)));
    tokio::spawn(scheduler.run());
    Run { commands, group, finished, ready: Default::default(), next_key: 0 }
}

#[tokio::test]
async fn a_polled_success_without_its_webhook_result_is_held_for_the_grace() {
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::new());
    let mut source = Scripted::new("cloudinary", clock.clone());
    source.done_at.insert("t1".into(), Duration::from_secs(2));
    let source = Arc::new(source);
    let hub = crate::webhook::WebhookHub::new(10, clock.clone());
    hub.set_listening(true);
    let mut run = webhook_run(&source, &clock, &hub);
    let fixed = Policy::builder().initial_delay(Duration::from_secs(1)).factor(1.0).max_delay(Duration::from_secs(1));
    let options = options(&clock, Duration::from_secs(300)).policy(fixed.build().expect("policy"));
    run.add("cloudinary", "t1", &options);
    let done = run.next().await;
    let task = done.result.expect("succeeded");
    assert_eq!((task.phase(), task.via(), task.result()), (Phase::Succeeded, crate::Via::Poll, None));
    // Polls at 0, 1 and 2 s; none while held; ended at 2 s + the spec's 30 s grace.
    let at: Vec<Duration> = source.reads().iter().map(|r| r.at).collect();
    assert_eq!(at, [0, 1, 2].map(Duration::from_secs));
    assert_eq!(clock.now() - source.start, Duration::from_secs(32));
}

#[tokio::test]
async fn a_webhook_command_ends_a_wait_with_the_delivered_task() {
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::new());
    let source = Arc::new(Scripted::new("cloudinary", clock.clone()));
    let hub = crate::webhook::WebhookHub::new(10, clock.clone());
    let mut run = webhook_run(&source, &clock, &hub);
    run.add("cloudinary", "t2", &options(&clock, Duration::from_secs(300)));
    let task_ref = TaskRef::new("cloudinary", "t2").expect("ref");
    let body = json!({"task_id": "t2", "data": {"tags": ["cat"]}});
    let delivered = Task::new(task_ref, Phase::Succeeded, None, None, Some("/data"), 200, body).delivered_by_webhook();
    run.commands.send(Command::Webhook(0, Box::new(delivered))).expect("running");
    let done = run.next().await;
    let task = done.result.expect("succeeded");
    assert_eq!((task.via(), task.result()), (crate::Via::Webhook, Some(&json!({"tags": ["cat"]}))));
    // Another delivery for an ended wait is ignored.
    run.commands.send(Command::Webhook(0, Box::new(task))).expect("running");
    assert!(run.finished.try_recv().is_err());
}
