//! The offline simulator (feature `simulator`): lifecycles, auth, faults,
//! batch paging, the request record, and a drift check of every served body
//! against the specs' generated types. Every test iterates over all providers,
//! so a new spec in `specs/` is covered without touching this file.
#![cfg(feature = "simulator")]
#![allow(clippy::disallowed_methods)] // reads real time: a test's or benchmark's own timing

#[path = "support/mod.rs"]
mod support;

use std::time::Duration;

use serde_json::{Value, json};
use taskpoll::simulator::{Callback, Fault, Lifecycle, Simulator, WebhookDelivery, served_phase};
use taskpoll::spec::{OperationSpec, ProviderSpec, providers};
use taskpoll::{Client, Credential, Error, Phase, ProviderConfig, TaskRef};

use support::TestResult;

fn phase_of_raw(spec: &ProviderSpec, raw: &str) -> Option<Phase> {
    let lower = raw.to_lowercase();
    spec.phases().iter().find(|(known, _)| *known == lower).map(|(_, p)| *p)
}

/// A client with a short request timeout for one provider.
fn client_with_timeout(sim: &Simulator, provider: &str, timeout: Duration) -> Result<Client, Box<Error>> {
    Ok(Client::builder().provider(sim.client_config(provider).request_timeout(timeout)).build()?)
}

/// Sends one raw request for `id` through `op`, built only from the spec data.
async fn raw_request(
    http: &reqwest::Client,
    sim: &Simulator,
    spec: &ProviderSpec,
    op: &OperationSpec,
    id: &str,
    with_auth: bool,
) -> Result<(u16, reqwest::header::HeaderMap, String), Box<dyn std::error::Error>> {
    let encoded = percent_encoding::utf8_percent_encode(id, percent_encoding::NON_ALPHANUMERIC).to_string();
    let mut path = op.path().to_string();
    while let (Some(start), Some(end)) = (path.find('{'), path.find('}')) {
        path.replace_range(start..=end, &encoded);
    }
    let mut url = reqwest::Url::parse(&format!("{}{}", sim.base_url(spec.name()), path))?;
    if let Some(many) = spec.many().filter(|m| m.operation() == op.id()) {
        url.query_pairs_mut().append_pair(many.ids_param(), id);
    } else if op.id() == spec.get().operation() && spec.get().id_location() == "query" {
        url.query_pairs_mut().append_pair(spec.get().id_name(), id);
    }
    let method = reqwest::Method::from_bytes(op.method().as_bytes())?;
    let mut request = http.request(method, url);
    if op.id() == spec.get().operation() && spec.get().id_location() == "body" {
        request = request.json(&json!({ spec.get().id_name(): id }));
    }
    if with_auth {
        for (name, value) in sim.auth_headers(spec.name(), op.id()) {
            request = request.header(name, value);
        }
    }
    let response = request.send().await?;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    Ok((status, headers, response.text().await?))
}

/// The schema of an operation's documented answers under `status` (for 2xx:
/// its 200 example's schema, as the drift check asks).
fn schema_for(spec: &ProviderSpec, operation: &str, status: u16) -> Option<&'static str> {
    let op = spec.operation(operation)?;
    // A 2xx answer is checked against the documented success schema.
    let status = if (200..300).contains(&status) {
        op.responses().iter().find(|(s, _)| s.starts_with('2')).map(|(s, _)| *s)?.parse().ok()?
    } else {
        status
    };
    op.response_schema(status)
}

/// Whether an operation reads one task (has the id in its path, or is the get operation).
fn reads_a_task(spec: &ProviderSpec, op: &OperationSpec) -> bool {
    op.id() == spec.get().operation()
        || (op.path().contains('{') && spec.many().is_none_or(|m| m.operation() != op.id()))
}

#[tokio::test]
async fn every_provider_goes_queued_running_succeeded() -> TestResult {
    let sim = Simulator::start().await?;
    let client = sim.client()?;
    for spec in providers() {
        let lifecycle = Lifecycle::new().queued_for_polls(2).running_for(Duration::from_millis(300)).then_succeed();
        let task = sim.add_task(spec.name(), lifecycle)?;
        let mut seen = Vec::new();
        for _ in 0..3 {
            seen.push(client.get(&task).await?);
        }
        tokio::time::sleep(Duration::from_millis(350)).await;
        seen.push(client.get(&task).await?);
        let phases: Vec<Phase> = seen.iter().map(|t| t.phase()).collect();
        let running = served_phase(spec, Phase::Running);
        assert_eq!(phases, [Phase::Queued, Phase::Queued, running, Phase::Succeeded], "{}", spec.name());
        for observed in &seen {
            assert_eq!(observed.task_ref(), &task);
            let raw = observed.status().ok_or("no raw status")?;
            assert_eq!(phase_of_raw(spec, raw), Some(observed.phase()), "{}: {raw}", spec.name());
            if let Some(pointer) = spec.task().id()
                && let Some(id) = observed.body().pointer(pointer).filter(|v| !v.is_null())
            {
                let text = id.as_str().map(str::to_string).unwrap_or_else(|| id.to_string());
                assert_eq!(text, task.id(), "{}", spec.name());
            }
        }
        let requests = sim.requests_for(&task);
        assert_eq!(requests.len(), 4, "{}", spec.name());
        assert_eq!(sim.reads(&task), 4);
        assert!(requests.iter().all(|r| r.authenticated && r.operation == Some(spec.get().operation())));
    }
    sim.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn failures_unknown_statuses_and_cancellation() -> TestResult {
    let sim = Simulator::start().await?;
    let client = sim.client()?;
    for spec in providers() {
        // Failure with the scripted message.
        let task = sim.add_task(spec.name(), Lifecycle::new().then_fail("disk on fire"))?;
        let failed = client.get(&task).await?;
        assert_eq!(failed.phase(), Phase::Failed, "{}", spec.name());
        assert_eq!(failed.error(), Some("disk on fire"), "{}", spec.name());
        // "HTTP 500 + FAILED body" where the spec documents a failure under a task-body status.
        let documented_under = spec.examples().iter().find(|e| {
            e.operation() == spec.get().operation()
                && e.status().parse().is_ok_and(|s: u16| spec.task().task_body_statuses().contains(&s))
                && serde_json::from_str::<Value>(e.json()).ok().is_some_and(|b| {
                    b.pointer(spec.task().status()).and_then(Value::as_str).and_then(|r| phase_of_raw(spec, r))
                        == Some(Phase::Failed)
                })
        });
        match documented_under {
            Some(example) => assert_eq!(failed.http_status().to_string(), example.status(), "{}", spec.name()),
            None => assert!((200..300).contains(&failed.http_status()), "{}", spec.name()),
        }

        // An undocumented raw status reads as Unknown, with the raw value kept.
        let task = sim.add_task(spec.name(), Lifecycle::new().then_status("SIMULATED_LIMBO"))?;
        let unknown = client.get(&task).await?;
        assert_eq!((unknown.phase(), unknown.status()), (Phase::Unknown, Some("SIMULATED_LIMBO")), "{}", spec.name());

        // REVOKED: cancelled where the spec lists it, unknown elsewhere.
        let task = sim.add_task(spec.name(), Lifecycle::new().then_status("REVOKED"))?;
        let revoked = client.get(&task).await?;
        assert_eq!(revoked.status(), Some("REVOKED"));
        assert_eq!(revoked.phase(), phase_of_raw(spec, "REVOKED").unwrap_or(Phase::Unknown), "{}", spec.name());

        // Cancel: cancelled, or the nearest phase the provider has.
        let task = sim.add_task(spec.name(), Lifecycle::new().queued_for_polls(1).then_cancel())?;
        assert_eq!(client.get(&task).await?.phase(), Phase::Queued);
        assert_eq!(client.get(&task).await?.phase(), served_phase(spec, Phase::Cancelled), "{}", spec.name());

        // Pending forever stays queued.
        let task = sim.add_task(spec.name(), Lifecycle::new().pending_forever())?;
        for _ in 0..3 {
            assert_eq!(client.get(&task).await?.phase(), Phase::Queued, "{}", spec.name());
        }
    }
    Ok(())
}

#[tokio::test]
async fn named_examples_are_scriptable() -> TestResult {
    let sim = Simulator::start().await?;
    let client = sim.client()?;
    // FactPulse's business error: Celery SUCCESS with result.status ERROR.
    let task = sim.add_task("factpulse", Lifecycle::new().running_for_polls(1).then_example("business_error"))?;
    assert_eq!(client.get(&task).await?.phase(), Phase::Running);
    let business = client.get(&task).await?;
    assert_eq!((business.phase(), business.status()), (Phase::Failed, Some("SUCCESS")));
    assert_eq!(business.error(), Some("Schematron validation failed"));
    assert_eq!(business.body()["taskId"], json!(task.id()));

    // Every documented task example of every provider can be served by name.
    for spec in providers() {
        for example in spec.examples().iter().filter(|e| e.operation() == spec.get().operation()) {
            let named = format!("{}:{}", example.status(), example.name());
            let task = sim.add_task(spec.name(), Lifecycle::new().then_example(named))?;
            let result = client.get(&task).await;
            let status: u16 = example.status().parse()?;
            match result {
                Ok(observed) => assert_eq!(observed.http_status(), status, "{} {}", spec.name(), example.name()),
                Err(e) => assert_eq!(e.status(), Some(status), "{} {}: {e}", spec.name(), example.name()),
            }
        }
    }
    // An unknown example name is refused when the task is added.
    assert!(sim.add_task("deepomatic", Lifecycle::new().then_example("no_such_example")).is_err());
    Ok(())
}

#[tokio::test]
async fn wrong_or_missing_credentials_get_the_documented_401() -> TestResult {
    let sim = Simulator::start().await?;
    let http = reqwest::Client::new();
    for spec in providers() {
        let task = sim.add_task(spec.name(), Lifecycle::new().then_succeed())?;
        let expected: Value = spec
            .examples_for(spec.get().operation(), "401")
            .next()
            .map(|e| serde_json::from_str(e.json()))
            .transpose()?
            .unwrap_or_else(|| json!({"detail": "Not authenticated"}));
        // Wrong credentials for every scheme.
        let mut config = ProviderConfig::new(spec.name()).base_url(sim.base_url(spec.name()));
        for scheme in spec.schemes() {
            let wrong = match scheme.kind() {
                taskpoll::spec::SchemeKind::Basic => {
                    Credential::Basic { username: "nobody".into(), password: "wrong".to_string().into() }
                }
                _ => Credential::Token("wrong".to_string().into()),
            };
            config = config.credential(scheme.name(), wrong);
        }
        for var in spec.server_variables() {
            config = config.server_variable(var.name(), "simulator");
        }
        let wrong_client = Client::builder().provider(config).build()?;
        match wrong_client.get(&task).await {
            Err(Error::Api(e)) if e.status() == 401 => {
                assert_eq!(serde_json::from_str::<Value>(e.body_excerpt())?, expected, "{}", spec.name());
            }
            other => panic!("{}: expected a 401, got {other:?}", spec.name()),
        }
        // No credentials at all (a raw request).
        let op = spec.operation(spec.get().operation()).ok_or("no get operation")?;
        let (status, _, body) = raw_request(&http, &sim, spec, op, task.id(), false).await?;
        assert_eq!(status, 401, "{}", spec.name());
        assert_eq!(serde_json::from_str::<Value>(&body)?, expected);
        // Neither read advanced the script; both were recorded as unauthenticated.
        assert_eq!(sim.reads(&task), 0);
        let records = sim.requests_for(&task);
        assert_eq!(records.len(), 2);
        assert!(records.iter().all(|r| !r.authenticated && r.status == Some(401)));
    }
    Ok(())
}

#[tokio::test]
async fn every_fault_is_the_right_error() -> TestResult {
    let sim = Simulator::start().await?;
    for spec in providers() {
        let client = client_with_timeout(&sim, spec.name(), Duration::from_secs(5))?;
        let task = sim.add_task(spec.name(), Lifecycle::new().pending_forever())?;

        sim.inject(&task, Fault::RateLimited { retry_after: Some(Duration::from_secs(3)) }, 1)?;
        let e = client.get(&task).await.expect_err("429");
        assert!(e.is_rate_limited() && e.is_retryable(), "{}: {e:?}", spec.name());
        assert_eq!(e.retry_after(), Some(Duration::from_secs(3)));

        sim.inject(&task, Fault::RateLimited { retry_after: Some(Duration::from_millis(1500)) }, 1)?;
        let e = client.get(&task).await.expect_err("429");
        assert_eq!(e.retry_after(), Some(Duration::from_millis(1500)), "{}", spec.name());

        sim.inject(&task, Fault::Html502, 1)?;
        match client.get(&task).await {
            Err(e) if e.status() == Some(502) && matches!(&e, Error::Api(api) if !api.body_is_json()) => {
                assert!(e.is_retryable())
            }
            other => panic!("{}: expected an HTML 502, got {other:?}", spec.name()),
        }

        sim.inject(&task, Fault::Unavailable503, 1)?;
        let e = client.get(&task).await.expect_err("503");
        assert!(e.status() == Some(503) && e.is_retryable(), "{}: {e:?}", spec.name());

        sim.inject(&task, Fault::DropConnection, 1)?;
        let e = client.get(&task).await.expect_err("dropped");
        assert!(e.is_transport() && e.is_retryable(), "{}: {e:?}", spec.name());

        sim.inject(&task, Fault::MalformedJson, 1)?;
        match client.get(&task).await {
            Err(e @ Error::InvalidBody(_)) => assert!(e.is_retryable()),
            other => panic!("{}: expected InvalidBody, got {other:?}", spec.name()),
        }

        sim.inject(&task, Fault::Slow(Duration::from_secs(5)), 1)?;
        let impatient = client_with_timeout(&sim, spec.name(), Duration::from_millis(250))?;
        let e = impatient.get(&task).await.expect_err("timeout");
        assert!(e.is_timeout(), "{}: {e:?}", spec.name());

        sim.inject(&task, Fault::Status(404), 1)?;
        let e = client.get(&task).await.expect_err("404");
        assert!(e.is_not_found(), "{}: {e:?}", spec.name());

        // No fault was consumed by the script; the next read is normal.
        assert_eq!(sim.reads(&task), 0, "{}", spec.name());
        assert_eq!(client.get(&task).await?.phase(), Phase::Queued);
        assert_eq!(sim.reads(&task), 1);
        let faults: Vec<Option<Fault>> = sim.requests_for(&task).into_iter().map(|r| r.fault).collect();
        assert_eq!(faults.len(), 9);
        assert_eq!(faults.last(), Some(&None));
    }
    Ok(())
}

#[tokio::test]
async fn slow_answers_arrive_late_but_whole() -> TestResult {
    let sim = Simulator::start().await?;
    let client = sim.client()?;
    let spec = providers()[0];
    let task = sim.add_task(spec.name(), Lifecycle::new().then_succeed())?;
    sim.inject(&task, Fault::Slow(Duration::from_millis(200)), 1)?;
    let started = std::time::Instant::now();
    assert_eq!(client.get(&task).await?.phase(), Phase::Succeeded);
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert_eq!(sim.requests_for(&task)[0].fault, Some(Fault::Slow(Duration::from_millis(200))));
    Ok(())
}

#[tokio::test]
async fn provider_faults_count_down_and_task_faults_stay_on_their_task() -> TestResult {
    let sim = Simulator::start().await?;
    let client = sim.client()?;
    for spec in providers() {
        let a = sim.add_task(spec.name(), Lifecycle::new().then_succeed())?;
        let b = sim.add_task(spec.name(), Lifecycle::new().then_succeed())?;
        sim.inject(spec.name(), Fault::Unavailable503, 2)?;
        assert_eq!(client.get(&a).await.expect_err("503").status(), Some(503));
        assert_eq!(client.get(&b).await.expect_err("503").status(), Some(503));
        assert!(client.get(&a).await.is_ok());
        sim.inject(&a, Fault::Html502, 1)?;
        assert!(client.get(&b).await.is_ok());
        assert_eq!(client.get(&a).await.expect_err("502").status(), Some(502));
        assert!(client.get(&a).await.is_ok());
    }
    assert!(sim.inject("no-such-provider", Fault::Html502, 1).is_err());
    Ok(())
}

#[tokio::test]
async fn unknown_ids_answer_like_the_provider() -> TestResult {
    let sim = Simulator::start().await?;
    let client = sim.client()?;
    for spec in providers() {
        let task = TaskRef::new(spec.name(), "never-created-42")?;
        let result = client.get(&task).await;
        if spec.celery_backed() {
            assert_eq!(result?.phase(), Phase::Queued, "{}: Celery answers PENDING for unknown ids", spec.name());
        } else {
            assert!(result.expect_err("unknown id").is_not_found(), "{}", spec.name());
        }
    }
    Ok(())
}

#[tokio::test]
async fn batch_reads_page_through_every_id() -> TestResult {
    let batch_providers: Vec<&ProviderSpec> = providers().iter().copied().filter(|p| p.many().is_some()).collect();
    assert!(!batch_providers.is_empty(), "no spec declares a batch operation");
    // Pages of at most 3, so a page size sent by the client is clamped and paging still shows.
    let sim = Simulator::builder().max_page_size(3).start().await?;
    let client = sim.client()?;
    for spec in batch_providers {
        let many = spec.many().ok_or("many")?;
        let scripts = [
            Lifecycle::new().then_succeed(),
            Lifecycle::new().pending_forever(),
            Lifecycle::new().then_fail("bad input"),
            Lifecycle::new().queued_for_polls(1).then_succeed(),
            Lifecycle::new().then_succeed(),
        ];
        let mut tasks = Vec::new();
        for script in scripts {
            tasks.push(sim.add_task(spec.name(), script)?);
        }
        let mut ids: Vec<String> = tasks.iter().map(|t| t.id().to_string()).collect();
        if !spec.celery_backed() {
            ids.push("not-a-task".into());
        }
        let results = client.get_many(spec.name(), &ids).await?;
        assert_eq!(results.len(), ids.len());
        let phases: Vec<Option<Phase>> = results.iter().map(|r| r.as_ref().ok().map(|t| t.phase())).collect();
        assert_eq!(
            &phases[..5],
            &[
                Some(Phase::Succeeded),
                Some(Phase::Queued),
                Some(Phase::Failed),
                Some(Phase::Queued),
                Some(Phase::Succeeded)
            ],
            "{}",
            spec.name()
        );
        if !spec.celery_backed() {
            assert!(matches!(results[5], Err(Error::MissingFromBatch(_))));
        }
        for (task, result) in tasks.iter().zip(&results) {
            assert_eq!(result.as_ref().map(|t| t.id()).ok(), Some(task.id()));
        }
        // The ids were split into chunks of max_ids; each chunk paged by the page size: the one
        // the client sends (clamped to the server's maximum, 3), else the server's default (2).
        let chunk = usize::try_from(many.max_ids())?.max(1);
        let page = if many.page_size_param().is_some() { 3 } else { 2 };
        let expected_pages: usize = tasks.chunks(chunk).map(|c| c.len().div_ceil(page)).sum();
        let pages: Vec<_> = sim.requests().into_iter().filter(|r| r.operation == Some(many.operation())).collect();
        assert_eq!(pages.len(), expected_pages, "{}", spec.name());
        // A continuation page carries the page parameters from `next`, and the same ids.
        let mut continuations = 0;
        for pair in pages.windows(2) {
            let pairs = pair[1].query_pairs();
            if many.page_params().iter().any(|p| pairs.iter().any(|(k, _)| k == p)) {
                assert_eq!(pair[0].task_ids, pair[1].task_ids, "{}", spec.name());
                continuations += 1;
            }
        }
        let expected_continuations: usize = tasks.chunks(chunk).map(|c| c.len().div_ceil(page) - 1).sum();
        assert_eq!(continuations, expected_continuations, "{}", spec.name());
        for task in &tasks {
            assert_eq!(sim.reads(task), 1, "{}: each task is on exactly one page", spec.name());
        }
    }
    Ok(())
}

#[tokio::test]
async fn page_size_is_configurable() -> TestResult {
    let sim = Simulator::builder().page_size(50).start().await?;
    let client = sim.client()?;
    for spec in providers().iter().filter(|p| p.many().is_some()) {
        let many = spec.many().ok_or("many")?;
        let mut ids = Vec::new();
        for _ in 0..3 {
            ids.push(sim.add_task(spec.name(), Lifecycle::new().then_succeed())?.id().to_string());
        }
        let before = sim.requests().len();
        let results = client.get_many(spec.name(), &ids).await?;
        assert!(results.iter().all(|r| r.as_ref().is_ok_and(|t| t.phase() == Phase::Succeeded)));
        let chunk = usize::try_from(many.max_ids())?.max(1);
        assert_eq!(sim.requests().len() - before, ids.len().div_ceil(chunk), "{}: one page per chunk", spec.name());
    }
    Ok(())
}

#[tokio::test]
async fn requests_are_recorded_with_secrets_redacted() -> TestResult {
    let sim = Simulator::start().await?;
    let client = sim.client()?;
    let secrets: Vec<String> = sim.credentials().into_iter().filter(|v| v.secret).map(|v| v.value).collect();
    assert!(!secrets.is_empty());
    for spec in providers() {
        let task = sim.add_task(spec.name(), Lifecycle::new().then_succeed())?;
        client.get(&task).await?;
        let records = sim.requests_for(&task);
        let [record] = records.as_slice() else { panic!("{}: expected one request", spec.name()) };
        let op = spec.operation(spec.get().operation()).ok_or("get operation")?;
        assert_eq!(record.provider, Some(spec.name()));
        assert_eq!(record.method, op.method());
        assert_eq!(record.status, Some(200));
        assert!(record.path.starts_with(&format!("/{}/", spec.name())));
        match spec.get().id_location() {
            "body" => {
                assert_eq!(record.json().and_then(|b| b.get(spec.get().id_name()).cloned()), Some(json!(task.id())))
            }
            "query" => {
                assert!(record.query_pairs().contains(&(spec.get().id_name().to_string(), task.id().to_string())))
            }
            _ => assert!(record.relative_path.contains(task.id())),
        }
        assert!(record.header("user-agent").is_some_and(|ua| ua.starts_with("taskpoll/")));
        for (name, value) in &record.headers {
            assert!(!secrets.iter().any(|s| value.contains(s.as_str())), "{}: {name} leaks a secret", spec.name());
        }
        assert!(record.headers.iter().any(|(_, v)| v.contains("[redacted]")), "{}", spec.name());
    }
    let count = sim.requests().len();
    sim.clear_requests();
    assert!(sim.requests().is_empty() && count > 0);
    Ok(())
}

#[tokio::test]
async fn credentials_and_configs_cover_every_provider() -> TestResult {
    let sim = Simulator::start().await?;
    let env = sim.credentials();
    for spec in providers() {
        assert!(sim.base_url(spec.name()).starts_with("http://127.0.0.1:"));
        assert!(sim.base_url(spec.name()).ends_with(&format!("/{}", spec.name())));
        for scheme in spec.schemes() {
            for var in scheme.env() {
                assert!(env.iter().any(|v| v.name == *var), "{var}");
            }
        }
        let var = spec.base_url_env().map(str::to_string).unwrap_or_else(|| spec.generic_base_url_env());
        let printed = env.iter().find(|v| v.name == var).ok_or("base url env")?.to_string();
        assert_eq!(printed, format!("{var}={}", sim.base_url(spec.name())));
        // The printed variables alone configure a working client.
        {
            let lookup = |name: &str| env.iter().find(|v| v.name == name).map(|v| v.value.clone());
            let client = Client::builder().providers_from_env_with(lookup)?.build()?;
            let task = sim.add_task(spec.name(), Lifecycle::new().then_succeed())?;
            assert_eq!(client.get(&task).await?.phase(), Phase::Succeeded, "{}", spec.name());
        }
    }
    Ok(())
}

/// The drift check: every body the simulator serves, for every provider,
/// operation and scripted answer, parses through the generated type of that
/// operation's documented response schema.
#[tokio::test]
async fn served_bodies_parse_as_the_specs_types() -> TestResult {
    let sim = Simulator::start().await?;
    // One plain client for the raw requests (building one per request is slow).
    let http = reqwest::Client::new();
    let mut checked = 0;
    for spec in providers() {
        let mut scripts = vec![
            ("queued", Lifecycle::new().pending_forever(), Some(Phase::Queued)),
            ("running", Lifecycle::new().running_forever(), Some(served_phase(spec, Phase::Running))),
            ("succeeded", Lifecycle::new().then_succeed(), Some(Phase::Succeeded)),
            ("failed", Lifecycle::new().then_fail("drift check"), Some(Phase::Failed)),
            ("cancelled", Lifecycle::new().then_cancel(), Some(served_phase(spec, Phase::Cancelled))),
            ("unknown", Lifecycle::new().then_status("SIMULATED_LIMBO"), None),
        ];
        for example in spec.examples().iter().filter(|e| e.operation() == spec.get().operation()) {
            let named = format!("{}:{}", example.status(), example.name());
            scripts.push((example.name(), Lifecycle::new().then_example(named), None));
        }
        for (label, script, expected) in scripts {
            let task = sim.add_task(spec.name(), script)?;
            for op in spec.operations() {
                let (status, _, body) = raw_request(&http, &sim, spec, op, task.id(), true).await?;
                let schema = schema_for(spec, op.id(), status)
                    .ok_or_else(|| format!("{} {}: no documented schema for HTTP {status}", spec.name(), op.id()))?;
                let parsed = spec.parse_as_schema(schema, &body);
                assert!(
                    matches!(parsed, Some(Ok(()))),
                    "{} {} ({label}): HTTP {status} body does not parse as {schema}: {parsed:?}\n{body}",
                    spec.name(),
                    op.id()
                );
                // Sibling operations answer the same task with the same status.
                if let (Some(phase), true) = (expected, reads_a_task(spec, op)) {
                    let value: Value = serde_json::from_str(&body)?;
                    let raw = value.pointer(spec.task().status()).and_then(Value::as_str).unwrap_or_default();
                    let by_status = phase_of_raw(spec, raw);
                    let by_rule = spec.rules().iter().any(|r| r.phase() == phase);
                    assert!(by_status == Some(phase) || by_rule, "{} {} ({label}): {raw}", spec.name(), op.id());
                }
                checked += 1;
            }
        }
        // The 401 answer and a rate-limit answer parse as documented too, when documented.
        let task = sim.add_task(spec.name(), Lifecycle::new().then_succeed())?;
        for op in spec.operations() {
            let (status, _, body) = raw_request(&http, &sim, spec, op, task.id(), false).await?;
            assert_eq!(status, 401);
            if let Some(schema) = schema_for(spec, op.id(), 401) {
                assert!(matches!(spec.parse_as_schema(schema, &body), Some(Ok(()))), "{} {}", spec.name(), op.id());
            }
            sim.inject(&task, Fault::RateLimited { retry_after: Some(Duration::from_secs(1)) }, 1)?;
            let (status, headers, body) = raw_request(&http, &sim, spec, op, task.id(), true).await?;
            assert_eq!(status, 429);
            assert_eq!(headers.get("retry-after").and_then(|v| v.to_str().ok()), Some("1"));
            if let Some(schema) = schema_for(spec, op.id(), 429) {
                assert!(matches!(spec.parse_as_schema(schema, &body), Some(Ok(()))), "{} {}", spec.name(), op.id());
            }
        }
    }
    assert!(checked > 0);
    Ok(())
}

#[tokio::test]
async fn unknown_routes_and_shutdown() -> TestResult {
    let sim = Simulator::start().await?;
    let http = reqwest::Client::new();
    let response = http.get(format!("{}/no-such-provider/tasks/1", sim.url())).send().await?;
    assert_eq!(response.status().as_u16(), 404);
    let spec = providers()[0];
    let response = http.get(format!("{}/nothing/here", sim.base_url(spec.name()))).send().await?;
    assert_eq!(response.status().as_u16(), 404);
    assert_eq!(sim.requests().len(), 2);
    assert!(sim.requests().iter().all(|r| r.operation.is_none()));

    // A task read that carries no id is a client error, not a task.
    for spec in providers().iter().filter(|p| p.get().id_location() != "path") {
        let op = spec.operation(spec.get().operation()).ok_or("get operation")?;
        let mut request = http
            .request(
                reqwest::Method::from_bytes(op.method().as_bytes())?,
                format!("{}{}", sim.base_url(spec.name()), op.path()),
            )
            .header("content-type", "application/json")
            .body("{}");
        for (name, value) in sim.auth_headers(spec.name(), op.id()) {
            request = request.header(name, value);
        }
        let status = request.send().await?.status();
        assert!(status.is_client_error(), "{}: {status}", spec.name());
    }

    let client = sim.client()?;
    let task = sim.add_task(spec.name(), Lifecycle::new().then_succeed())?;
    client.get(&task).await?;
    let url = sim.url();
    sim.shutdown().await;
    assert!(http.get(format!("{url}/")).send().await.is_err(), "the server still answers after shutdown");
    Ok(())
}

#[tokio::test]
async fn bind_takes_a_fixed_address() -> TestResult {
    let probe = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = probe.local_addr()?;
    drop(probe);
    let sim = Simulator::bind(addr).await?;
    assert_eq!(sim.addr(), addr);
    assert_eq!(sim.base_url("deepomatic"), format!("http://{addr}/deepomatic"));
    assert!(Simulator::bind(addr).await.is_err(), "the port is taken");
    Ok(())
}

/// Timed steps follow tokio time: with the clock paused, an hour-long step
/// ends as soon as the test advances the clock, with no real waiting.
#[tokio::test(start_paused = true)]
async fn timed_steps_follow_paused_tokio_time() -> TestResult {
    let sim = Simulator::start().await?;
    let client = sim.client()?;
    for spec in providers() {
        let hour = Duration::from_secs(3600);
        let task = sim.add_task(spec.name(), Lifecycle::new().queued_for(hour).running_for(hour).then_succeed())?;
        assert_eq!(client.get(&task).await?.phase(), Phase::Queued);
        tokio::time::advance(hour - Duration::from_secs(1)).await;
        assert_eq!(client.get(&task).await?.phase(), Phase::Queued, "{}", spec.name());
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(client.get(&task).await?.phase(), served_phase(spec, Phase::Running), "{}", spec.name());
        tokio::time::advance(hour).await;
        assert_eq!(client.get(&task).await?.phase(), Phase::Succeeded, "{}", spec.name());
    }
    Ok(())
}

/// The records of `n` webhook deliveries, once the simulator has them (a
/// delivery is recorded when its last send is answered).
async fn deliveries(sim: &Simulator, n: usize) -> Result<Vec<WebhookDelivery>, Box<dyn std::error::Error>> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let recorded = sim.webhook_deliveries();
        if recorded.len() >= n {
            return Ok(recorded);
        }
        if tokio::time::Instant::now() > deadline {
            return Err(format!("{} of {n} deliveries recorded", recorded.len()).into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// As providers do, a delivery the receiver refuses (a 5xx, or no
/// connection) is sent again with backoff, up to `Callback::retries` times;
/// an answer that says the delivery itself is wrong (401) is not retried.
#[tokio::test]
async fn a_refused_webhook_delivery_is_sent_again_with_backoff() -> TestResult {
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};
    let sim = Simulator::start().await?;
    let receiver = MockServer::start().await;
    // Twice unavailable, then taken.
    Mock::given(method("POST"))
        .and(path("/cloudinary"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(2)
        .with_priority(1)
        .mount(&receiver)
        .await;
    Mock::given(method("POST"))
        .and(path("/cloudinary"))
        .respond_with(ResponseTemplate::new(204))
        .mount(&receiver)
        .await;
    Mock::given(method("POST")).and(path("/factpulse")).respond_with(ResponseTemplate::new(401)).mount(&receiver).await;
    let started = tokio::time::Instant::now();
    let retried = sim.add_task_with_callback(
        "cloudinary",
        Lifecycle::new().then_succeed(),
        Callback::to(format!("{}/cloudinary", receiver.uri())),
    )?;
    let recorded = deliveries(&sim, 1).await?;
    assert_eq!((recorded[0].task.id(), recorded[0].status, recorded[0].attempts), (retried.id(), Some(204), 3));
    // Backoff between the sends: at least half of 250 ms, then half of 500 ms.
    assert!(started.elapsed() >= Duration::from_millis(375), "{:?}", started.elapsed());
    let sends = receiver.received_requests().await.ok_or("requests recorded")?;
    assert_eq!(sends.len(), 3);
    assert!(sends.iter().all(|send| send.headers.contains_key("x-cld-signature")), "each send is signed");

    // Refused for good: sent once more than the retries allow, then given up.
    let probe = std::net::TcpListener::bind("127.0.0.1:0")?;
    let closed = probe.local_addr()?;
    drop(probe);
    sim.add_task_with_callback(
        "cloudinary",
        Lifecycle::new().then_succeed(),
        Callback::to(format!("http://{closed}/cloudinary")).retries(1),
    )?;
    // Not retried: the receiver says the delivery is wrong.
    sim.add_task_with_callback(
        "factpulse",
        Lifecycle::new().then_succeed(),
        Callback::to(format!("{}/factpulse", receiver.uri())),
    )?;
    let recorded = deliveries(&sim, 3).await?;
    let of =
        |provider: &str| recorded[1..].iter().find(|d| d.task.provider() == provider).map(|d| (d.status, d.attempts));
    assert_eq!(of("cloudinary"), Some((None, 2)));
    assert_eq!(of("factpulse"), Some((Some(401), 1)));
    sim.shutdown().await;
    Ok(())
}
