//! The fault matrix (issue 9), through the library: every fault below, for
//! every provider built in (generic over `taskpoll::spec::providers()` and
//! their documented bodies), through `get` and `wait`, against a loopback
//! server written on a raw `TcpListener` (resets, truncation, hangs and
//! trickles need the socket).
//!
//! For each cell: the typed outcome, no panic, a wait that ends within its
//! deadline plus a generous margin (a correctness bound, measured on the tokio
//! clock), no request received after the deadline, and no request at all at
//! another origin. The counts are printed at the end (`--nocapture`).

#![allow(clippy::unwrap_used)] // In tests a panic is the failure report.
#![allow(clippy::disallowed_methods)] // reads real time: a test's or benchmark's own timing

use std::io::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde_json::{Value, json};
use taskpoll::error::TransportKind;
use taskpoll::spec::ProviderSpec;
use taskpoll::{Client, Error, Phase, ProviderConfig, Task, TaskRef, WaitOptions};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

use crate::support::{made_up_credential, with_demo_variables};

const SECRET: &str = "fault-matrix-s3cr3t";
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
const DEADLINE: Duration = Duration::from_secs(3);
/// How late a wait may end, and a request may arrive, past the deadline: a
/// bound for correctness on a loaded 2-core machine, not a speed goal.
const MARGIN: Duration = Duration::from_secs(2);
const ARRIVAL_MARGIN: Duration = Duration::from_millis(300);
/// Large enough for the 100k-deep body (200 kB) to reach the JSON parser.
const BODY_CAP: usize = 256 * 1024;
/// The most redirects to the same origin taskpoll follows for one read.
const REDIRECTS_FOLLOWED: usize = 5;

/// What the server does with one request.
#[derive(Clone)]
enum Reply {
    /// Write these bytes and close.
    Bytes(Vec<u8>),
    /// Write these bytes, then reset the connection (RST).
    BytesThenReset(Vec<u8>),
    /// Read the request and never answer.
    Hang,
    /// Write the head, then the body one byte every 100 ms.
    Trickle(Vec<u8>, Vec<u8>),
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Ending {
    /// `wait` returns this error at once (after one request).
    AtOnce,
    /// `wait` returns this error at once, after one read that followed the
    /// most redirects to the same origin taskpoll follows (README, "Security").
    AtOnceAfterRedirects,
    /// `wait` keeps trying and ends at the deadline.
    Deadline,
    /// `wait` returns the task.
    Finished,
}

struct Fault {
    name: &'static str,
    /// The server's answer, given the provider's documented bodies.
    reply: fn(&Bodies) -> Reply,
    /// Whether `get`'s result is the expected typed outcome.
    get: fn(&Result<Task, Error>) -> bool,
    wait: Ending,
}

/// A provider's documented bodies, patched for the requested id.
struct Bodies {
    /// A documented answer whose phase is not terminal.
    pending: Value,
    /// A documented answer that succeeded.
    succeeded: Value,
    /// Where the raw status is.
    status_pointer: &'static str,
    /// The other origin, for a cross-origin redirect.
    other_origin: String,
}

fn http(status: &str, headers: &[(&str, String)], body: &[u8]) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {status}\r\nconnection: close\r\n");
    for (name, value) in headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("transfer-encoding")) {
        out.push_str(&format!("content-length: {}\r\n", body.len()));
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

fn json_reply(status: &str, body: &Value) -> Reply {
    Reply::Bytes(http(status, &[("content-type", "application/json".into())], body.to_string().as_bytes()))
}

fn html(status: &str) -> Reply {
    Reply::Bytes(http(status, &[("content-type", "text/html".into())], b"<html><body>down</body></html>"))
}

fn chunked(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for chunk in body.chunks(512) {
        out.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        out.extend_from_slice(chunk);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

fn with_status(body: &Value, pointer: &str, status: &str) -> Value {
    let mut body = body.clone();
    if let Some(slot) = body.pointer_mut(pointer) {
        *slot = json!(status);
    }
    body
}

fn swap_case(text: &str) -> String {
    text.chars().map(|c| if c.is_lowercase() { c.to_ascii_uppercase() } else { c.to_ascii_lowercase() }).collect()
}

fn is_transport(result: &Result<Task, Error>, kinds: &[TransportKind]) -> bool {
    matches!(result, Err(Error::Transport(e)) if kinds.contains(&e.kind()))
}

fn is_api(result: &Result<Task, Error>, status: u16) -> bool {
    matches!(result, Err(Error::Api(e)) if e.status() == status)
}

fn is_invalid_body(result: &Result<Task, Error>) -> bool {
    matches!(result, Err(e @ Error::InvalidBody(_)) if e.is_retryable())
}

fn faults() -> Vec<Fault> {
    vec![
        Fault {
            name: "documented answer (control)",
            reply: |b| json_reply("200 OK", &b.pending),
            get: |r| r.as_ref().is_ok_and(|t| !t.is_terminal()),
            wait: Ending::Deadline,
        },
        Fault {
            name: "refused",
            reply: |_| Reply::Hang, // not used: the client points at a closed port
            get: |r| is_transport(r, &[TransportKind::Refused]),
            wait: Ending::Deadline,
        },
        Fault {
            name: "reset before answer",
            reply: |_| Reply::BytesThenReset(Vec::new()),
            get: |r| is_transport(r, &[TransportKind::Reset]),
            wait: Ending::Deadline,
        },
        Fault {
            name: "reset mid-body",
            reply: |b| {
                let body = b.pending.to_string();
                let mut head = http("200 OK", &[("content-type", "application/json".into())], body.as_bytes());
                head.truncate(head.len() - body.len() / 2);
                Reply::BytesThenReset(head)
            },
            get: |r| is_transport(r, &[TransportKind::Reset, TransportKind::TruncatedBody]),
            wait: Ending::Deadline,
        },
        Fault {
            name: "hang",
            reply: |_| Reply::Hang,
            get: |r| is_transport(r, &[TransportKind::Timeout]) && r.as_ref().is_err_and(Error::is_timeout),
            wait: Ending::Deadline,
        },
        Fault {
            name: "trickled body",
            reply: |b| {
                let body = b.pending.to_string().into_bytes();
                let mut head = http("200 OK", &[("content-type", "application/json".into())], &body);
                head.truncate(head.len() - body.len());
                Reply::Trickle(head, body)
            },
            get: |r| is_transport(r, &[TransportKind::Timeout]),
            wait: Ending::Deadline,
        },
        Fault {
            name: "truncated body (Content-Length larger than sent)",
            reply: |b| {
                let body = b.pending.to_string();
                let mut bytes = http("200 OK", &[("content-type", "application/json".into())], body.as_bytes());
                let at = bytes.len() - body.len() / 2;
                bytes.truncate(at);
                Reply::Bytes(bytes)
            },
            get: |r| is_transport(r, &[TransportKind::TruncatedBody]),
            wait: Ending::Deadline,
        },
        Fault {
            name: "HTML 502",
            reply: |_| html("502 Bad Gateway"),
            get: |r| is_api(r, 502) && r.as_ref().is_err_and(Error::is_retryable),
            wait: Ending::Deadline,
        },
        Fault {
            name: "HTML 503",
            reply: |_| html("503 Service Unavailable"),
            get: |r| is_api(r, 503) && r.as_ref().is_err_and(Error::is_retryable),
            wait: Ending::Deadline,
        },
        Fault {
            name: "429 Retry-After seconds",
            reply: |_| Reply::Bytes(http("429 Too Many Requests", &[("retry-after", "120".into())], b"")),
            get: |r| {
                r.as_ref().is_err_and(|e| e.is_rate_limited() && e.retry_after() == Some(Duration::from_secs(120)))
            },
            wait: Ending::AtOnce,
        },
        Fault {
            name: "429 Retry-After HTTP date",
            reply: |_| {
                // Far ahead: the reply is built when the matrix is prepared, well before it is served.
                let at = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(3600));
                Reply::Bytes(http("429 Too Many Requests", &[("retry-after", at)], b""))
            },
            get: |r| {
                r.as_ref().is_err_and(|e| {
                    e.is_rate_limited() && e.retry_after().is_some_and(|d| d > Duration::from_secs(3000))
                })
            },
            wait: Ending::AtOnce,
        },
        Fault {
            name: "401",
            reply: |_| json_reply("401 Unauthorized", &json!({"detail": "bad key"})),
            get: |r| r.as_ref().is_err_and(|e| e.is_auth() && !e.is_retryable()),
            wait: Ending::AtOnce,
        },
        Fault {
            name: "403",
            reply: |_| json_reply("403 Forbidden", &json!({"detail": "no"})),
            get: |r| r.as_ref().is_err_and(|e| e.is_auth() && !e.is_retryable()),
            wait: Ending::AtOnce,
        },
        Fault {
            name: "404",
            reply: |_| json_reply("404 Not Found", &json!({"detail": "unknown task"})),
            get: |r| r.as_ref().is_err_and(Error::is_not_found),
            wait: Ending::AtOnce,
        },
        Fault {
            name: "JSON 500",
            reply: |_| json_reply("500 Internal Server Error", &json!({"error": "internal"})),
            get: |r| is_api(r, 500) && !r.as_ref().is_err_and(Error::is_retryable),
            wait: Ending::AtOnce,
        },
        Fault {
            name: "malformed JSON",
            reply: |_| Reply::Bytes(http("200 OK", &[("content-type", "application/json".into())], b"{\"status\": ")),
            get: is_invalid_body,
            wait: Ending::Deadline,
        },
        Fault {
            name: "JSON array",
            reply: |_| json_reply("200 OK", &json!([1, 2])),
            get: is_invalid_body,
            wait: Ending::Deadline,
        },
        Fault {
            name: "JSON string",
            reply: |_| json_reply("200 OK", &json!("done")),
            get: is_invalid_body,
            wait: Ending::Deadline,
        },
        Fault {
            name: "JSON null",
            reply: |_| json_reply("200 OK", &Value::Null),
            get: is_invalid_body,
            wait: Ending::Deadline,
        },
        Fault {
            name: "100k-deep nesting",
            reply: |_| {
                let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
                Reply::Bytes(http("200 OK", &[("content-type", "application/json".into())], deep.as_bytes()))
            },
            get: |r| matches!(r, Err(Error::BodyTooLarge(_))) || is_invalid_body(r),
            wait: Ending::Deadline,
        },
        Fault {
            name: "unknown status",
            reply: |b| json_reply("200 OK", &with_status(&b.pending, b.status_pointer, "SOMETHING_NEW")),
            get: |r| r.as_ref().is_ok_and(|t| t.phase() == Phase::Unknown && t.status() == Some("SOMETHING_NEW")),
            wait: Ending::Deadline,
        },
        Fault {
            name: "status in another case",
            reply: |b| {
                let raw = b.succeeded.pointer(b.status_pointer).and_then(Value::as_str).unwrap_or_default();
                json_reply("200 OK", &with_status(&b.succeeded, b.status_pointer, &swap_case(raw)))
            },
            get: |r| r.as_ref().is_ok_and(|t| t.phase() == Phase::Succeeded),
            wait: Ending::Finished,
        },
        Fault {
            name: "body over the cap, with a length",
            reply: |_| Reply::Bytes(http("200 OK", &[], &vec![b' '; BODY_CAP * 4])),
            get: |r| matches!(r, Err(Error::BodyTooLarge(_))),
            wait: Ending::AtOnce,
        },
        Fault {
            name: "body over the cap, chunked",
            reply: |_| {
                let mut head = http("200 OK", &[("transfer-encoding", "chunked".into())], b"");
                head.extend(chunked(&vec![b' '; BODY_CAP * 4]));
                Reply::Bytes(head)
            },
            get: |r| matches!(r, Err(Error::BodyTooLarge(_))),
            wait: Ending::AtOnce,
        },
        Fault {
            // The server answers every path alike: each hop redirects again.
            name: "redirect loop on the same origin",
            reply: |_| Reply::Bytes(http("307 Temporary Redirect", &[("location", "/elsewhere".into())], b"")),
            get: |r| is_api(r, 307),
            wait: Ending::AtOnceAfterRedirects,
        },
        Fault {
            name: "redirect to another origin",
            reply: |b| Reply::Bytes(http("302 Found", &[("location", format!("{}/steal", b.other_origin))], b"")),
            get: |r| is_api(r, 302),
            wait: Ending::AtOnce,
        },
        Fault {
            // taskpoll asks for no compression and decodes none: a gzip body it
            // did not ask for is not JSON, so it is an invalid (retryable) body.
            name: "gzip body not asked for",
            reply: |b| {
                let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
                encoder.write_all(b.pending.to_string().as_bytes()).unwrap();
                let gz = encoder.finish().unwrap();
                Reply::Bytes(http(
                    "200 OK",
                    &[("content-type", "application/json".into()), ("content-encoding", "gzip".into())],
                    &gz,
                ))
            },
            get: is_invalid_body,
            wait: Ending::Deadline,
        },
        Fault {
            name: "non-UTF-8 body",
            reply: |_| {
                Reply::Bytes(http(
                    "200 OK",
                    &[("content-type", "application/json".into())],
                    b"{\"status\": \"\xff\xfe\"}",
                ))
            },
            get: is_invalid_body,
            wait: Ending::Deadline,
        },
        Fault {
            name: "204",
            reply: |_| Reply::Bytes(b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n".to_vec()),
            get: is_invalid_body,
            wait: Ending::Deadline,
        },
    ]
}

/// A loopback server that answers every request with `reply` and records
/// when each request arrived and what it carried.
struct Server {
    url: String,
    requests: Arc<Mutex<Vec<(Instant, String)>>>,
}

async fn serve(reply: Reply) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let requests = Arc::new(Mutex::new(Vec::new()));
    let seen = requests.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (reply, seen) = (reply.clone(), seen.clone());
            tokio::spawn(async move { answer(stream, reply, seen).await });
        }
    });
    Server { url, requests }
}

async fn answer(mut stream: TcpStream, reply: Reply, seen: Arc<Mutex<Vec<(Instant, String)>>>) {
    let mut head = Vec::new();
    let mut buffer = [0u8; 8192];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buffer[..n]),
        }
    }
    seen.lock().unwrap().push((Instant::now(), String::from_utf8_lossy(&head).into_owned()));
    match reply {
        Reply::Bytes(bytes) => {
            let _ = stream.write_all(&bytes).await;
            let _ = stream.shutdown().await;
        }
        Reply::BytesThenReset(bytes) => {
            let _ = stream.write_all(&bytes).await;
            let _ = stream.flush().await;
            // A zero linger makes the close a reset (RST) and does not block.
            #[allow(deprecated)]
            let _ = stream.set_linger(Some(Duration::ZERO));
            drop(stream);
        }
        Reply::Hang => {
            tokio::time::sleep(Duration::from_secs(60)).await;
        }
        Reply::Trickle(head, body) => {
            let _ = stream.write_all(&head).await;
            for byte in body {
                tokio::time::sleep(Duration::from_millis(100)).await;
                if stream.write_all(&[byte]).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// A configuration with a credential for every scheme of the provider.
fn config(spec: &ProviderSpec, base_url: &str) -> ProviderConfig {
    let mut config = with_demo_variables(ProviderConfig::new(spec.name()).base_url(base_url), spec);
    for scheme in spec.schemes() {
        config = config.credential(scheme.name(), made_up_credential(scheme.kind(), SECRET));
    }
    config
}

/// The spec's documented 200 answers of the read operation, classified by the
/// library itself, with the id patched to the requested one.
fn bodies(spec: &'static ProviderSpec, task_ref: &TaskRef, other_origin: String) -> Option<Bodies> {
    let mut pending = None;
    let mut succeeded = None;
    for example in spec.examples_for(spec.get().operation(), "200") {
        let mut body: Value = serde_json::from_str(example.json()).unwrap();
        if let Some(slot) = spec.task().id().and_then(|p| body.pointer_mut(p)) {
            *slot = json!(task_ref.id());
        }
        match taskpoll::Task::decode(task_ref, 200, body.to_string().as_bytes()).map(|t| t.phase()) {
            Ok(Phase::Succeeded) if succeeded.is_none() => succeeded = Some(body),
            Ok(Phase::Queued | Phase::Running) if pending.is_none() => pending = Some(body),
            _ => {}
        }
    }
    Some(Bodies { pending: pending?, succeeded: succeeded?, status_pointer: spec.task().status(), other_origin })
}

struct Cell {
    fault: &'static str,
    provider: &'static str,
    problems: Vec<String>,
}

/// One cell, ready to run: its servers and client are up before any cell
/// starts a request, so building them cannot eat another cell's timeouts.
struct Prepared {
    spec: &'static ProviderSpec,
    fault: &'static Fault,
    task_ref: TaskRef,
    server: Server,
    other: Server,
    client: Client,
    /// Holds the port of the "refused" fault for the cell's lifetime.
    _refusing: Option<tokio::net::TcpSocket>,
}

async fn prepare(spec: &'static ProviderSpec, fault: &'static Fault) -> Option<Prepared> {
    let task_ref = TaskRef::new(spec.name(), "task-1").unwrap();
    let other = serve(Reply::Bytes(http("200 OK", &[], b"{}"))).await;
    // A provider whose spec documents no pending and no succeeded answer has nothing to serve.
    let bodies = bodies(spec, &task_ref, other.url.clone())?;
    let server = serve((fault.reply)(&bodies)).await;
    // A socket bound but not listening: connections to its port are refused, and
    // no other server of the matrix can take the port while the cell holds it.
    let refusing = (fault.name == "refused").then(|| {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        socket
    });
    let base_url = match &refusing {
        Some(socket) => format!("http://{}", socket.local_addr().unwrap()),
        None => server.url.clone(),
    };
    let client = Client::builder()
        .provider(config(spec, &base_url))
        .request_timeout(REQUEST_TIMEOUT)
        .max_body_bytes(BODY_CAP)
        .build()
        .unwrap();
    Some(Prepared { spec, fault, task_ref, server, other, client, _refusing: refusing })
}

async fn run_cell(cell: Prepared) -> Cell {
    let Prepared { spec, fault, task_ref, server, other, client, _refusing } = cell;
    let mut problems = Vec::new();

    let got = client.get(&task_ref).await;
    if !(fault.get)(&got) {
        problems.push(format!("get: unexpected {got:?}"));
    }
    let after_get = server.requests.lock().unwrap().len();

    let started = Instant::now();
    let waited = client.wait(&task_ref, WaitOptions::new(DEADLINE)).await;
    let took = started.elapsed();
    if took > DEADLINE + MARGIN {
        problems.push(format!("wait took {took:?}, past the {DEADLINE:?} deadline"));
    }
    let wait_requests: Vec<Instant> = server.requests.lock().unwrap()[after_get..].iter().map(|(at, _)| *at).collect();
    if let Some(late) = wait_requests.iter().find(|at| at.duration_since(started) > DEADLINE + ARRIVAL_MARGIN) {
        problems.push(format!("a request arrived {:?} after the wait started", late.duration_since(started)));
    }
    let ok = match (fault.wait, &waited) {
        (Ending::Finished, Ok(task)) => task.phase() == Phase::Succeeded,
        // A permanent error, or a `Retry-After` past the deadline: no retry.
        (Ending::AtOnce, Err(e)) => wait_requests.len() <= 1 && (!e.is_retryable() || e.is_deadline()),
        (Ending::AtOnceAfterRedirects, Err(e)) => wait_requests.len() == 1 + REDIRECTS_FOLLOWED && !e.is_retryable(),
        (Ending::Deadline, Err(e)) => e.is_deadline() && e.wait_state().is_some(),
        _ => false,
    };
    if !ok {
        problems.push(format!(
            "wait: expected {:?}, got {waited:?} after {} requests",
            fault.wait,
            wait_requests.len()
        ));
    }
    if !other.requests.lock().unwrap().is_empty() {
        problems.push("the other origin received a request".into());
    }
    for (_, head) in other.requests.lock().unwrap().iter() {
        if head.contains(SECRET) {
            problems.push("a credential reached the other origin".into());
        }
    }
    let shown = format!("{got:?} {waited:?}");
    if shown.contains(SECRET) {
        problems.push("an outcome shows the credential".into());
    }
    Cell { fault: fault.name, provider: spec.name(), problems }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_matrix_through_the_library() {
    let faults: &'static [Fault] = Vec::leak(faults());
    let mut prepared = Vec::new();
    for fault in faults {
        for spec in taskpoll::spec::providers() {
            prepared.extend(prepare(spec, fault).await);
        }
    }
    // Every cell at once, each in its own task: the whole matrix takes about one deadline.
    let running: Vec<_> = prepared.into_iter().map(|cell| tokio::spawn(run_cell(cell))).collect();
    let mut cells = Vec::new();
    for handle in running {
        cells.push(handle.await.expect("no cell panics"));
    }
    let mut providers: Vec<&str> = cells.iter().map(|c| c.provider).collect();
    providers.dedup();
    providers.sort_unstable();
    providers.dedup();
    for real in ["cloudinary", "deepomatic", "factpulse", "qolaba"] {
        assert!(providers.contains(&real), "{real} is missing from the matrix: {providers:?}");
    }
    eprintln!(
        "fault matrix (library): {} faults x {} providers ({}) x get+wait",
        faults.len(),
        providers.len(),
        providers.join(", ")
    );
    for fault in faults {
        let row: Vec<&Cell> = cells.iter().filter(|c| c.fault == fault.name).collect();
        let passed = row.iter().filter(|c| c.problems.is_empty()).count();
        eprintln!("  {:<50} {passed}/{} providers, wait: {:?}", fault.name, row.len(), fault.wait);
    }
    let failed: Vec<String> = cells
        .iter()
        .filter(|c| !c.problems.is_empty())
        .map(|c| format!("{} / {}: {}", c.fault, c.provider, c.problems.join("; ")))
        .collect();
    eprintln!("  total: {} cells ({} checks of get and wait), {} failed", cells.len(), cells.len() * 2, failed.len());
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}
