//! The spans of a wait and of its reads (issue 26): attribute names and
//! values as an OpenTelemetry exporter would receive them, captured by a
//! subscriber layer against the simulator.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};

use taskpoll::simulator::{Lifecycle, Simulator};
use taskpoll::{Policy, WaitOptions};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing_subscriber::layer::{Context, SubscriberExt as _};
use tracing_subscriber::registry::LookupSpan;

use crate::support::{TestResult, secs};

/// One captured span: its name, its attributes as text, its parent's id and whether it closed.
#[derive(Debug, Clone, Default)]
struct Captured {
    name: &'static str,
    id: u64,
    parent: Option<u64>,
    fields: BTreeMap<String, String>,
    closed: bool,
}

impl Captured {
    fn field(&self, name: &str) -> Option<&str> {
        self.fields.get(name).map(String::as_str)
    }
}

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_string(), value.to_string());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_string(), format!("{value:?}"));
    }
}

/// The server ports whose reads are captured, and the task ids whose waits are
/// (the subscriber is global: other tests of this binary run beside these).
static PORTS: Mutex<Vec<u16>> = Mutex::new(Vec::new());
const PREFIX: &str = "span-test-";

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<Captured>>>);

impl Capture {
    fn spans(&self) -> Vec<Captured> {
        self.0.lock().expect("lock").clone()
    }
}

/// The binary's one global subscriber, installed by the first test that asks,
/// capturing the reads of the servers in [`PORTS`]. Global rather than a
/// thread's own: `tracing` caches whether a callsite is enabled, and a
/// thread's own subscriber does not always see callsites other tests registered first.
fn capture(port: u16) -> Capture {
    static GLOBAL: OnceLock<Capture> = OnceLock::new();
    PORTS.lock().expect("lock").push(port);
    GLOBAL
        .get_or_init(|| {
            let capture = Capture::default();
            let subscriber = tracing_subscriber::registry()
                .with(tracing_subscriber::filter::LevelFilter::INFO)
                .with(capture.clone());
            tracing::subscriber::set_global_default(subscriber).expect("the only global subscriber of this binary");
            capture
        })
        .clone()
}

impl<S> tracing_subscriber::Layer<S> for Capture
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut fields = BTreeMap::new();
        attrs.record(&mut Fields(&mut fields));
        let name = attrs.metadata().name();
        let port = fields.get("server.port").and_then(|port| port.parse::<u16>().ok());
        let ours = fields.get("task_id").is_some_and(|id| id.starts_with(PREFIX))
            || port.is_some_and(|port| PORTS.lock().expect("lock").contains(&port))
            || name == "taskpoll.batch";
        if !ours {
            return;
        }
        let parent = ctx.span(id).and_then(|span| span.parent()).map(|parent| parent.id().into_u64());
        self.0.lock().expect("lock").push(Captured { name, id: id.into_u64(), parent, fields, closed: false });
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, _: Context<'_, S>) {
        let mut spans = self.0.lock().expect("lock");
        if let Some(span) = spans.iter_mut().rev().find(|s| s.id == id.into_u64() && !s.closed) {
            values.record(&mut Fields(&mut span.fields));
        }
    }

    fn on_close(&self, id: Id, _: Context<'_, S>) {
        let mut spans = self.0.lock().expect("lock");
        if let Some(span) = spans.iter_mut().rev().find(|s| s.id == id.into_u64() && !s.closed) {
            span.closed = true;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_and_its_reads_carry_opentelemetry_attributes() -> TestResult {
    let sim = Simulator::start().await?;
    let capture = capture(sim.addr().port());
    let client = sim.client()?;
    let quick = Policy::builder().initial_delay(secs(0.05)).max_delay(secs(0.05)).build()?;
    let options = WaitOptions::new(secs(20.0)).policy(quick);

    // One wait, read singly twice: queued, then succeeded.
    let id = format!("{PREFIX}1");
    let task = sim.add_task_with_id("factpulse", &id, Lifecycle::new().queued_for_polls(1).then_succeed())?;
    client.wait(&task, options.clone()).await?;
    // One read of a task the server does not know: a 404.
    let missing = taskpoll::TaskRef::new("deepomatic", format!("{PREFIX}missing"))?;
    let error = client.get(&missing).await.expect_err("unknown");
    assert_eq!(error.status(), Some(404), "{error:?}");

    let spans = capture.spans();
    let waits: Vec<&Captured> = spans.iter().filter(|s| s.name == "taskpoll.wait").collect();
    let [wait] = waits.as_slice() else { panic!("one wait span: {spans:#?}") };
    assert_eq!(wait.field("provider"), Some("factpulse"));
    assert_eq!(wait.field("task_id"), Some(id.as_str()));
    assert_eq!(wait.field("outcome"), Some("succeeded"));
    assert_eq!(wait.field("polls"), Some("2"));
    assert!(wait.closed, "the wait's span ends with the wait");

    let port = sim.addr().port().to_string();
    let reads: Vec<&Captured> =
        spans.iter().filter(|s| s.name == "taskpoll.http" && s.field("server.port") == Some(port.as_str())).collect();
    let (of_wait, alone): (Vec<&Captured>, Vec<&Captured>) = reads.iter().partition(|s| s.parent == Some(wait.id));
    assert_eq!((of_wait.len(), alone.len()), (2, 1), "{spans:#?}");
    let path_of = |provider: &str| {
        taskpoll::spec::provider(provider).and_then(|p| p.operation(p.get().operation())).map(|o| o.path())
    };
    for (read, path) in
        of_wait.iter().map(|r| (r, path_of("factpulse"))).chain(alone.iter().map(|r| (r, path_of("deepomatic"))))
    {
        assert_eq!(read.field("http.request.method"), Some("GET"), "{read:?}");
        assert_eq!(read.field("url.template"), path, "{read:?}");
        assert_eq!(read.field("server.address"), Some("127.0.0.1"), "{read:?}");
        assert_eq!(read.field("server.port"), Some(port.as_str()), "{read:?}");
        assert_eq!(read.field("otel.kind"), Some("client"), "{read:?}");
        assert_eq!(read.field("otel.name"), path.map(|p| format!("GET {p}")).as_deref(), "{read:?}");
        assert_eq!(read.field("http.request.resend_count"), None, "not a resend: {read:?}");
        assert!(read.closed, "{read:?}");
    }
    assert!(of_wait.iter().all(|r| r.field("http.response.status_code") == Some("200")), "{of_wait:#?}");
    assert!(of_wait.iter().all(|r| r.field("error.type").is_none()), "{of_wait:#?}");
    assert_eq!(alone[0].field("http.response.status_code"), Some("404"));
    assert_eq!(alone[0].field("error.type"), Some("404"));

    // A batch read: its span carries the batch size, its request is its child.
    // The first polls come due together, so they go in one read even on a busy machine.
    let together = Policy::builder().first_poll(secs(0.3)).initial_delay(secs(0.05)).max_delay(secs(0.05)).build()?;
    let together = WaitOptions::new(secs(20.0)).policy(together);
    let ids = [format!("{PREFIX}b1"), format!("{PREFIX}b2"), format!("{PREFIX}b3")];
    let mut waiter = client.waiter();
    for id in &ids {
        let task = sim.add_task_with_id("deepomatic", id, Lifecycle::new().then_succeed())?;
        waiter.add(task, &together)?;
    }
    while let Some(done) = waiter.next_outcome().await {
        done.result?;
    }
    let spans = capture.spans();
    let batches: Vec<&Captured> =
        spans.iter().filter(|s| s.name == "taskpoll.batch" && s.field("provider") == Some("deepomatic")).collect();
    let batch = batches.iter().find(|b| spans.iter().any(|s| s.parent == Some(b.id))).ok_or("no batch span")?;
    let size: usize = batch.field("taskpoll.batch.size").ok_or("no size")?.parse()?;
    assert!((2..=3).contains(&size), "{batch:?}");
    let request = spans.iter().find(|s| s.parent == Some(batch.id)).ok_or("no request in the batch")?;
    assert_eq!(request.name, "taskpoll.http");
    assert_eq!(request.field("http.response.status_code"), Some("200"));
    Ok(())
}

/// A request sent again carries `http.request.resend_count`: 1 for the read
/// after a refreshed credential, one more per redirect followed.
#[tokio::test]
async fn a_resend_carries_its_count() -> TestResult {
    use wiremock::matchers::{header, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    let server = MockServer::start().await;
    let capture = capture(server.address().port());
    let port = server.address().port().to_string();
    let status = serde_json::json!({"taskId": "t", "status": "STARTED"});
    // With the fresh token: moved twice on the same origin, then answered.
    Mock::given(path("/api/v1/processing/tasks/t/status"))
        .and(header("authorization", "Bearer fresh"))
        .respond_with(ResponseTemplate::new(301).insert_header("Location", "/moved/1"))
        .mount(&server)
        .await;
    Mock::given(path("/moved/1"))
        .respond_with(ResponseTemplate::new(302).insert_header("Location", "/moved/2"))
        .mount(&server)
        .await;
    Mock::given(path("/moved/2")).respond_with(ResponseTemplate::new(200).set_body_json(status)).mount(&server).await;
    Mock::given(path("/api/v1/processing/tasks/t/status"))
        .respond_with(
            ResponseTemplate::new(401).set_body_json(serde_json::json!({"errorCode": "AUTHENTICATION_REQUIRED"})),
        )
        .mount(&server)
        .await;
    let client = taskpoll::Client::builder()
        .provider(
            taskpoll::ProviderConfig::new("factpulse")
                .bearer("expired")
                .base_url(server.uri())
                .refresh_bearer(|| async { Ok("fresh".to_string()) }),
        )
        .build()?;
    let task = client.get(&taskpoll::TaskRef::new("factpulse", "t")?).await?;
    assert_eq!(task.phase(), taskpoll::Phase::Running);

    let reads: Vec<Captured> = capture
        .spans()
        .into_iter()
        .filter(|s| s.name == "taskpoll.http" && s.field("server.port") == Some(port.as_str()))
        .collect();
    let [first, again] = reads.as_slice() else { panic!("two requests: {reads:#?}") };
    assert_eq!(first.field("http.response.status_code"), Some("401"), "{first:?}");
    assert_eq!(first.field("http.request.resend_count"), None, "the first send: {first:?}");
    // The resend after the refresh, then its two redirects: 1 + 2.
    assert_eq!(again.field("http.response.status_code"), Some("200"), "{again:?}");
    assert_eq!(again.field("http.request.resend_count"), Some("3"), "{again:?}");
    Ok(())
}
