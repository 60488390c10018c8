//! `get`, `wait` and `watch`, and the many-task wait the demo shares.

use std::io::IsTerminal as _;
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use serde_json::json;
use taskpoll::{Client, Error, PollEvent, Task, TaskRef, WaitOptions};

use crate::args::{TaskArgs, WaitArgs};
use crate::output::{Exit, err_line, error_text, escape_controls, outcome_json, print_line};

pub async fn get(args: TaskArgs) -> Result<Exit, Error> {
    let refs = args.task_refs()?;
    let client = args.client(&refs)?;
    let mut codes = Vec::new();
    for task_ref in &refs {
        let result = client.get(task_ref).await;
        codes.push(match &result {
            Ok(_) => Exit::Ok,
            Err(e) => Exit::for_error(e),
        });
        if let Err(e) = &result {
            report_error(task_ref, e, None);
        }
        print_line(&outcome_json(task_ref, &result, None, None));
    }
    Ok(Exit::combine(codes))
}

/// How one task's wait ended.
pub struct Outcome {
    pub task_ref: TaskRef,
    pub result: Result<Task, Error>,
    pub polls: u32,
    /// From the start of the wait to its end (not to the end of the last poll).
    pub elapsed: Duration,
    /// Polls whose read failed and were retried (e.g. a 429).
    pub retried: u32,
}

/// How progress is shown on stderr.
#[derive(Clone)]
pub enum Progress {
    /// Spinners (stderr is a terminal).
    Bars(MultiProgress),
    /// One plain line per phase change or retried read.
    Lines,
}

impl Progress {
    pub fn for_stderr() -> Self {
        if std::io::stderr().is_terminal() { Progress::Bars(MultiProgress::new()) } else { Progress::Lines }
    }
}

/// Waits on every task at once; `on_event` sees each poll as it returns.
pub async fn wait_all(
    client: &Client,
    tasks: Vec<(TaskRef, WaitOptions)>,
    progress: &Progress,
    on_event: &(dyn Fn(&TaskRef, &PollEvent) + Sync),
) -> Vec<Outcome> {
    let waits = tasks.into_iter().map(|(task_ref, options)| {
        let bar = match progress {
            Progress::Bars(multi) => {
                let bar = multi.add(ProgressBar::new_spinner());
                bar.set_style(
                    ProgressStyle::with_template("{spinner} {prefix:.bold} {msg}")
                        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                );
                bar.set_prefix(escape_controls(&task_ref.to_string()).into_owned());
                bar.enable_steady_tick(Duration::from_millis(120));
                Some(bar)
            }
            Progress::Lines => None,
        };
        async move {
            let started = Instant::now();
            let mut watch = client.watch(&task_ref, options);
            let mut outcome = Outcome {
                task_ref: task_ref.clone(),
                result: Err(Error::Config { message: "the wait ended without an answer".into() }),
                polls: 0,
                elapsed: Duration::ZERO,
                retried: 0,
            };
            let mut last_task = None;
            while let Some(item) = watch.next().await {
                match item {
                    Ok(event) => {
                        outcome.polls = event.attempt;
                        if event.error.is_some() {
                            outcome.retried += 1;
                        }
                        report(&bar, &task_ref, &event);
                        on_event(&task_ref, &event);
                        if let Some(task) = event.task {
                            last_task = Some(task);
                        }
                    }
                    Err(error) => {
                        if let Some(state) = error.wait_state() {
                            outcome.polls = state.attempts;
                        }
                        outcome.result = Err(error);
                        last_task = None;
                        break;
                    }
                }
            }
            if let Some(task) = last_task {
                outcome.result = Ok(task);
            }
            outcome.elapsed = started.elapsed();
            if let Some(bar) = bar {
                let text = match &outcome.result {
                    Ok(task) => format!("{} after {} polls", task.phase(), outcome.polls),
                    Err(e) if e.is_task_failure() => match e.task() {
                        Some(task) => {
                            format!("{} after {} polls: {}", task.phase(), outcome.polls, task.error().unwrap_or(""))
                        }
                        None => e.to_string(),
                    },
                    Err(e) => error_text(e, Some(outcome.elapsed)),
                };
                bar.finish_with_message(escape_controls(&text).into_owned());
            }
            outcome
        }
    });
    futures_util::future::join_all(waits).await
}

fn report(bar: &Option<ProgressBar>, task_ref: &TaskRef, event: &PollEvent) {
    let phase = event.phase.map_or("-".to_string(), |p| p.to_string());
    let status = event.status.as_deref().unwrap_or("");
    let next = event.next_delay.map(|d| format!(", next poll in {:.1}s", d.as_secs_f64())).unwrap_or_default();
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

fn exit_for(outcome: &Outcome) -> Exit {
    match &outcome.result {
        Ok(_) => Exit::Ok,
        Err(e) => Exit::for_error(e),
    }
}

pub async fn wait(args: WaitArgs) -> Result<Exit, Error> {
    let refs = args.tasks.task_refs()?;
    let client = args.tasks.client(&refs)?;
    let tasks = refs.into_iter().map(|r| args.options(&r).map(|o| (r, o))).collect::<Result<Vec<_>, _>>()?;
    let outcomes = wait_all(&client, tasks, &Progress::for_stderr(), &|_, _| {}).await;
    for outcome in &outcomes {
        if let Err(e) = &outcome.result {
            report_error(&outcome.task_ref, e, Some(outcome.elapsed));
        }
        print_line(&outcome_json(&outcome.task_ref, &outcome.result, Some(outcome.polls), Some(outcome.elapsed)));
    }
    Ok(Exit::combine(outcomes.iter().map(exit_for)))
}

pub async fn watch(args: WaitArgs) -> Result<Exit, Error> {
    let refs = args.tasks.task_refs()?;
    let client = args.tasks.client(&refs)?;
    let tasks = refs.into_iter().map(|r| args.options(&r).map(|o| (r, o))).collect::<Result<Vec<_>, _>>()?;
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
        }));
    };
    let outcomes = wait_all(&client, tasks, &Progress::Lines, &print_change).await;
    for outcome in &outcomes {
        if let Err(e) = &outcome.result {
            report_error(&outcome.task_ref, e, Some(outcome.elapsed));
        }
    }
    Ok(Exit::combine(outcomes.iter().map(exit_for)))
}

/// One line on stderr; the task is named once.
fn report_error(task_ref: &TaskRef, error: &Error, elapsed: Option<Duration>) {
    let text = error_text(error, elapsed);
    if error.task_ref().is_some() {
        err_line(&format!("taskpoll: {text}"));
    } else {
        err_line(&format!("taskpoll: {task_ref}: {text}"));
    }
}
