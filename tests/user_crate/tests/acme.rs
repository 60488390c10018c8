//! The provider declared in this crate works with taskpoll's client, waiter
//! and simulator exactly as a built-in one.

use std::time::Duration;

use taskpoll::simulator::{Lifecycle, Simulator};
use taskpoll::{Client, Phase, ProviderConfig, TaskRef, WaitOptions};
use taskpoll_user_crate::generated::acme;

#[test]
fn the_descriptor_comes_from_this_crates_spec() {
    taskpoll_user_crate::register().expect("registers");
    taskpoll_user_crate::register().expect("registering again does nothing");
    let spec = taskpoll::spec::provider("acme").expect("registered");
    assert!(std::ptr::eq(spec, &acme::PROVIDER));
    assert_eq!((spec.title(), spec.module()), ("Acme Jobs", "acme"));
    let task: TaskRef = "acme:j-1?tenant=t-9".parse().expect("a reference to the new provider parses");
    assert_eq!(task.provider(), "acme");
    for example in spec.examples().iter().filter(|e| !e.schema().is_empty()) {
        assert!(matches!(spec.parse_as_schema(example.schema(), example.json()), Some(Ok(()))), "{}", example.name());
    }
}

#[test]
fn a_name_already_taken_is_refused() {
    let shadow = &taskpoll_user_crate::generated::qolaba::PROVIDER;
    let err = taskpoll::spec::register(shadow).unwrap_err();
    assert!(err.is_config() && err.to_string().contains("`qolaba` is already known"), "{err}");
    let err = Client::builder().register(shadow).provider(ProviderConfig::new("qolaba")).build().unwrap_err();
    assert!(err.is_config() && err.to_string().contains("`qolaba` is already known"), "{err}");
    let builtin = taskpoll::spec::provider("qolaba").expect("built in");
    assert!(!std::ptr::eq(builtin, shadow), "the built-in provider stays");
}

#[tokio::test]
async fn get_wait_and_get_many_at_the_simulator() -> taskpoll::Result<()> {
    taskpoll_user_crate::register()?;
    let sim = Simulator::start().await?;
    let client = Client::builder().register(&acme::PROVIDER).provider(sim.client_config("acme")).build()?;

    let task = sim.add_task("acme", Lifecycle::new().queued_for_polls(1).then_succeed())?;
    assert_eq!(client.get(&task).await?.phase(), Phase::Queued);
    let done = client.wait(&task, WaitOptions::new(Duration::from_secs(30))).await?;
    assert_eq!(done.phase(), Phase::Succeeded);

    let ids: Vec<TaskRef> =
        (0..3).map(|_| sim.add_task("acme", Lifecycle::new().then_succeed())).collect::<Result<_, _>>()?;
    let names: Vec<&str> = ids.iter().map(TaskRef::id).collect();
    let many = client.get_many("acme", &names).await?;
    assert!(many.iter().all(|t| t.as_ref().is_ok_and(|t| t.phase() == Phase::Succeeded)), "{many:?}");
    sim.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn the_many_task_waiter_waits_on_the_new_provider() -> taskpoll::Result<()> {
    taskpoll_user_crate::register()?;
    let sim = Simulator::start().await?;
    let client = sim.client()?;
    let waiter = client.waiter();
    let options = WaitOptions::new(Duration::from_secs(30));
    for _ in 0..3 {
        waiter.add(sim.add_task("acme", Lifecycle::new().queued_for_polls(2).then_succeed())?, &options)?;
    }
    let outcomes = waiter.finish().await;
    assert_eq!(outcomes.succeeded.len(), 3, "{outcomes:?}");
    sim.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn the_typed_client_shares_the_unified_settings_and_converts_errors() -> taskpoll::Result<()> {
    taskpoll_user_crate::register()?;
    let sim = Simulator::start().await?;
    let client = sim.client()?;
    let task = sim.add_task("acme", Lifecycle::new().then_succeed())?;
    let typed = acme::client(&client)?;
    let answer = typed.read_job().job_id(task.id()).send().await?;
    assert!(answer.into_inner().job.is_some());
    let missing = typed.read_job().job_id("no-such-job").send().await;
    let err: taskpoll::Error = missing.map(|_| ()).unwrap_err().into();
    assert_eq!(err.status(), Some(404), "{err:?}");
    sim.shutdown().await;
    Ok(())
}
