//! `taskpoll simulate` and `taskpoll demo`: the offline simulator, in the
//! foreground or driving a short tour of every provider.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use taskpoll::simulator::{Fault, Lifecycle, Simulator};
use taskpoll::{Phase, Policy, TaskRef, WaitOptions};

use super::error::Error;
use super::output::{Exit, err_line, out_line};
use super::waiting::{Outcome, Progress, wait_all};

fn sim_error(e: taskpoll::Error) -> Error {
    Error::usage(format!("cannot start the simulator: {e}"))
}

pub(crate) async fn simulate(port: u16) -> Result<Exit, Error> {
    let sim = Simulator::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port))).await.map_err(sim_error)?;
    out_line(&format!("taskpoll simulator listening on {}", sim.url()));
    out_line("");
    out_line("# Point taskpoll (or Client::from_env) at it:");
    for var in sim.credentials() {
        out_line(&format!("export {var}"));
    }
    out_line("");
    out_line("# Sample tasks (each read advances its script):");
    let mut samples = Vec::new();
    for spec in shown_providers() {
        let scripts = [
            (
                "queued 2 polls, running 2 polls, then succeeds",
                Lifecycle::new().queued_for_polls(2).running_for_polls(2).then_succeed(),
            ),
            ("queued 2 polls, then fails", Lifecycle::new().queued_for_polls(2).then_fail("simulated failure")),
            ("queued for ever", Lifecycle::new().pending_forever()),
        ];
        for (what, lifecycle) in scripts {
            let task = sim.add_task(spec.name(), lifecycle)?;
            out_line(&format!("#   {task:<40} {what}"));
            samples.push(task);
        }
    }
    if let Some(first) = samples.first() {
        out_line("");
        out_line("# Then, for example:");
        out_line(&format!("taskpoll get {first}"));
        out_line(&format!("taskpoll wait --timeout 30s {first}"));
    }
    out_line("");
    out_line("Press Ctrl-C to stop.");
    let _ = tokio::signal::ctrl_c().await;
    sim.shutdown().await;
    Ok(Exit::Ok)
}

/// One scripted task of the demo and what it should end with.
struct Scene {
    what: &'static str,
    task: TaskRef,
    expect: Phase,
}

/// The providers the demo scripts by name; a provider added by a new spec joins
/// with a plain succeed script.
fn scenes(sim: &Simulator) -> Result<Vec<Scene>, Error> {
    let mut scenes = Vec::new();
    for spec in shown_providers() {
        let quick = || Lifecycle::new().queued_for_polls(2).running_for_polls(1).then_succeed();
        let mut add = |what: &'static str, lifecycle: Lifecycle, expect: Phase| -> Result<TaskRef, Error> {
            let task = sim.add_task(spec.name(), lifecycle)?;
            scenes.push(Scene { what, task: task.clone(), expect });
            Ok(task)
        };
        match spec.name() {
            "cloudinary" => {
                add("analysis completes", quick(), Phase::Succeeded)?;
            }
            "qolaba" => {
                add("image generated", quick(), Phase::Succeeded)?;
                add(
                    "generation fails: HTTP 500 with a FAILED body",
                    Lifecycle::new().queued_for_polls(2).then_fail("Internal Error"),
                    Phase::Failed,
                )?;
            }
            "factpulse" => {
                add(
                    "Celery SUCCESS with a business ERROR",
                    Lifecycle::new().queued_for_polls(1).running_for_polls(1).then_example("business_error"),
                    Phase::Failed,
                )?;
            }
            "deepomatic" => {
                let task = add("inference done after a 429 with Retry-After: 1", quick(), Phase::Succeeded)?;
                sim.inject(&task, Fault::RateLimited { retry_after: Some(Duration::from_secs(1)) }, 1)?;
            }
            _ => {
                add("completes", quick(), Phase::Succeeded)?;
            }
        }
    }
    Ok(scenes)
}

pub(crate) async fn demo() -> Result<Exit, Error> {
    let started = Instant::now();
    let sim = Simulator::start().await.map_err(sim_error)?;
    let client = sim.client()?;
    let scenes = scenes(&sim)?;
    out_line(&format!("taskpoll demo: a simulator of every provider is listening on {}", sim.url()));
    out_line(&format!(
        "Waiting on {} tasks at {} providers (deadline 30 s each)...",
        scenes.len(),
        shown_providers().count()
    ));
    out_line("");
    // A brisk policy so the tour takes seconds; real waits use each provider's polite policy.
    let policy = Policy::builder()
        .name("demo")
        .initial_delay(Duration::from_millis(200))
        .factor(1.5)
        .max_delay(Duration::from_secs(1))
        .build()?;
    let tasks = scenes
        .iter()
        .map(|s| (s.task.clone(), WaitOptions::new(Duration::from_secs(30)).policy(policy.clone())))
        .collect();
    let outcomes = wait_all(&client, tasks, &Progress::for_stderr(), &|_, _| {}).await?;

    out_line("");
    out_line(&format!("{:<52} {:<10} {:>5} {:>7}  what happened", "task", "outcome", "polls", "time"));
    let mut surprises = 0;
    for (scene, outcome) in scenes.iter().zip(&outcomes) {
        let (phase, detail) = describe(outcome);
        let expected = phase == Some(scene.expect);
        if !expected {
            surprises += 1;
        }
        out_line(&format!(
            "{:<52} {:<10} {:>5} {:>6.1}s  {}{}{}",
            shorten(&scene.task.to_string(), 52),
            phase.map_or("error".to_string(), |p| p.to_string()),
            outcome.polls,
            outcome.elapsed.as_secs_f64(),
            scene.what,
            detail.map(|d| format!(": {d}")).unwrap_or_default(),
            if expected { "" } else { "  (UNEXPECTED)" },
        ));
    }
    let requests = sim.requests().len();
    out_line("");
    out_line(&format!(
        "{} tasks, {} requests to the simulator, {:.1}s in all.",
        outcomes.len(),
        requests,
        started.elapsed().as_secs_f64()
    ));
    sim.shutdown().await;
    if surprises > 0 {
        err_line(&format!("taskpoll demo: {surprises} task(s) did not end as scripted"));
        return Ok(Exit::Api);
    }
    out_line("Every task ended as scripted.");
    Ok(Exit::Ok)
}

fn describe(outcome: &Outcome) -> (Option<Phase>, Option<String>) {
    let retried = (outcome.retried > 0).then(|| format!("{} read(s) retried", outcome.retried));
    match &outcome.result {
        Ok(task) => (Some(task.phase()), retried),
        Err(e) => match e.task() {
            Some(task) if e.is_task_failure() => {
                let http =
                    if task.http_status() >= 300 { format!("HTTP {}, ", task.http_status()) } else { String::new() };
                let status = task.status().unwrap_or("-");
                (
                    Some(task.phase()),
                    Some(format!("{http}status {status}, \"{}\"", task.error().unwrap_or("no message"))),
                )
            }
            _ => (None, Some(e.to_string())),
        },
    }
}

fn shorten(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_string();
    }
    let mut out: String = text.chars().take(width - 1).collect();
    out.push('…');
    out
}

/// The providers a user can meet: the made-up one of taskpoll's own tests
/// (feature `fixture-provider`, on with `--all-features`) stays out of the demo.
fn shown_providers() -> impl Iterator<Item = &'static taskpoll::spec::ProviderSpec> {
    taskpoll::spec::providers().iter().copied().filter(|spec| !is_test_fixture(spec))
}

#[cfg(feature = "fixture-provider")]
fn is_test_fixture(spec: &taskpoll::spec::ProviderSpec) -> bool {
    std::ptr::eq(spec, &taskpoll::generated::acme::PROVIDER)
}

#[cfg(not(feature = "fixture-provider"))]
fn is_test_fixture(_: &taskpoll::spec::ProviderSpec) -> bool {
    false
}
