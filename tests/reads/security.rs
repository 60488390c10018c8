//! Issue 9: credentials stay with their origin, and hostile configuration,
//! answers and inputs get a typed, honest error (library side).

#![allow(clippy::unwrap_used)] // In tests a panic is the failure report.

use serde_json::json;
use taskpoll::{Client, Error, ProviderConfig, TaskRef};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::support::{answering, made_up_credential, received, with_demo_variables};

const KEY: &str = "dp-apikey-sec-9f1e";
const APP: &str = "dp-appid-sec-77c2";

fn deepomatic_config(base_url: &str) -> ProviderConfig {
    ProviderConfig::new("deepomatic")
        .api_key(KEY)
        .credential("AppId", taskpoll::Credential::Token(APP.to_string().into()))
        .base_url(base_url)
}

fn deepomatic(server: &MockServer) -> Client {
    Client::builder().provider(deepomatic_config(&format!("{}/v0.7", server.uri()))).build().unwrap()
}

fn task(id: &str) -> TaskRef {
    TaskRef::new("deepomatic", id).unwrap()
}

fn redirect_to(status: u16, location: &str) -> ResponseTemplate {
    ResponseTemplate::new(status).insert_header("Location", location)
}

// ---------------------------------------------------------------------------
// 1. Redirects

/// The other origin: answers a valid finished task, which must never be taken.
async fn other_origin() -> MockServer {
    answering(ResponseTemplate::new(200).set_body_json(json!({"id": "1", "status": "success", "data": {}}))).await
}

#[tokio::test]
async fn a_redirect_to_another_origin_is_not_followed_and_names_the_origin() {
    let other = other_origin().await;
    for status in [301, 302, 303, 307, 308] {
        let server = answering(redirect_to(status, &format!("{}/v0.7/tasks/1/", other.uri()))).await;
        let err = deepomatic(&server).get(&task("1")).await.unwrap_err();
        assert!(err.status() == Some(status) && matches!(err, Error::Api(_)), "{status}: {err:?}");
        assert!(!err.is_retryable(), "{err:?}");
        let text = err.to_string();
        assert!(text.contains(&format!("HTTP {status}")) && text.contains(&other.uri()), "{text}");
        assert!(text.contains("not followed"), "{text}");
        assert_eq!(received(&server).await.len(), 1);
    }
    assert!(received(&other).await.is_empty(), "the other origin received a request");
}

/// A server that moved the task to another path on the same origin (Django's
/// `APPEND_SLASH`, a renamed route): `GET /v0.7/tasks/1/` answers `status` to
/// `/v0.7/moved/tasks/1/`, which answers the finished task.
async fn moved_on_the_same_origin(status: u16) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v0.7/tasks/1/"))
        .respond_with(redirect_to(status, "/v0.7/moved/tasks/1/"))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v0.7/moved/tasks/1/"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"id": "1", "status": "success", "data": {}})))
        .mount(&server)
        .await;
    server
}

/// The credentials each request carried, as `(X-API-KEY, X-APP-ID)`.
fn credentials_sent(request: &wiremock::Request) -> (Option<&str>, Option<&str>) {
    let header = |name: &str| request.headers.get(name).and_then(|v| v.to_str().ok());
    (header("x-api-key"), header("x-app-id"))
}

#[tokio::test]
async fn a_redirect_to_the_same_origin_is_followed_with_the_credentials() {
    for status in [301, 302, 303, 307, 308] {
        let server = moved_on_the_same_origin(status).await;
        let task = deepomatic(&server).get(&task("1")).await.unwrap();
        assert_eq!(task.phase(), taskpoll::Phase::Succeeded, "{status}");
        let requests = received(&server).await;
        let paths: Vec<&str> = requests.iter().map(|r| r.url.path()).collect();
        assert_eq!(paths, ["/v0.7/tasks/1/", "/v0.7/moved/tasks/1/"], "{status}");
        for request in &requests {
            assert_eq!(credentials_sent(request), (Some(KEY), Some(APP)), "{status}: {}", request.url);
        }
    }
}

#[tokio::test]
async fn the_generated_client_follows_a_redirect_to_the_same_origin() {
    let server = moved_on_the_same_origin(301).await;
    let unified = deepomatic(&server);
    let typed = taskpoll::generated::deepomatic::client(&unified).unwrap();
    let answer = typed.get_task().task_id("1").send().await.unwrap();
    assert_eq!(answer.status().as_u16(), 200);
    let requests = received(&server).await;
    assert_eq!(requests.len(), 2);
    assert_eq!(credentials_sent(&requests[1]), (Some(KEY), Some(APP)));
}

#[tokio::test]
async fn a_redirect_loop_on_the_same_origin_ends_with_a_clear_error() {
    let server = answering(redirect_to(307, "/v0.7/tasks/1/")).await;
    let err = deepomatic(&server).get(&task("1")).await.unwrap_err();
    assert!(matches!(&err, Error::Api(e) if e.status() == 307), "{err:?}");
    assert!(!err.is_retryable(), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("too many redirects") && text.contains("at most 5"), "{text}");
    // The request, then the five redirects followed.
    assert_eq!(received(&server).await.len(), 6);
}

#[tokio::test]
async fn a_same_origin_hop_that_then_leaves_the_origin_is_not_followed_there() {
    let other = other_origin().await;
    let server = MockServer::start().await;
    Mock::given(path("/v0.7/tasks/1/")).respond_with(redirect_to(301, "/v0.7/moved/")).mount(&server).await;
    let elsewhere = format!("{}/v0.7/tasks/1/", other.uri());
    Mock::given(path("/v0.7/moved/")).respond_with(redirect_to(302, &elsewhere)).mount(&server).await;
    let err = deepomatic(&server).get(&task("1")).await.unwrap_err();
    assert!(matches!(&err, Error::Api(e) if e.status() == 302), "{err:?}");
    assert!(err.to_string().contains(&other.uri()), "{err}");
    assert_eq!(received(&server).await.len(), 2);
    assert!(received(&other).await.is_empty(), "the other origin received a request");
}

#[tokio::test]
async fn a_redirect_location_never_shows_userinfo_path_or_query() {
    let server = answering(redirect_to(302, "http://user:pw@evil.invalid:8080/steal?token=abc")).await;
    let err = deepomatic(&server).get(&task("1")).await.unwrap_err();
    let text = format!("{err} {err:?}");
    assert!(text.contains("http://evil.invalid:8080"), "{text}");
    assert!(!text.contains("pw@") && !text.contains("/steal") && !text.contains("token=abc"), "{text}");
}

#[tokio::test]
async fn the_generated_client_does_not_follow_a_redirect_to_another_origin() {
    let other = other_origin().await;
    let server = answering(redirect_to(302, &format!("{}/v0.7/tasks/1/", other.uri()))).await;
    let unified = deepomatic(&server);
    let typed = taskpoll::generated::deepomatic::client(&unified).unwrap();
    let result = typed.get_task().task_id("1").send().await;
    assert!(result.is_err(), "a 302 was taken as the task");
    assert_eq!(received(&server).await.len(), 1);
    assert!(received(&other).await.is_empty(), "the generated client followed the redirect");
}

/// A caller-supplied client keeps its own redirect policy (documented on
/// `ClientBuilder::http_client`); the answer of the other origin is refused.
#[tokio::test]
async fn a_caller_supplied_client_that_follows_redirects_gets_no_foreign_answer() {
    let other = other_origin().await;
    let server = answering(redirect_to(302, &format!("{}/v0.7/tasks/1/", other.uri()))).await;
    let client = Client::builder()
        .provider(deepomatic_config(&format!("{}/v0.7", server.uri())))
        .http_client(reqwest::Client::new())
        .build()
        .unwrap();
    let err = client.get(&task("1")).await.unwrap_err();
    assert!(matches!(&err, Error::CrossOriginAnswer(e) if e.origin() == other.uri()), "{err:?}");
    assert!(!err.is_retryable());
    assert!(err.to_string().contains("disable redirects"), "{err}");
}

#[tokio::test]
async fn a_server_cannot_make_its_own_answer_look_foreign() {
    // The hooks mark an answer from another origin, or one over the size cap, with these headers;
    // a server sending them is ignored.
    let server = answering(
        ResponseTemplate::new(200)
            .insert_header("x-taskpoll-other-origin", "http://elsewhere.example")
            .insert_header("x-taskpoll-too-large", "1")
            .set_body_json(json!({"id": "1", "status": "success", "data": {}})),
    )
    .await;
    let task = deepomatic(&server).get(&task("1")).await.unwrap();
    assert_eq!(task.phase(), taskpoll::Phase::Succeeded);
}

// ---------------------------------------------------------------------------
// 2. Base URLs

fn build_error(config: ProviderConfig) -> Error {
    Client::builder().provider(config).build().unwrap_err()
}

#[test]
fn a_base_url_with_userinfo_is_refused_without_echoing_it() {
    for url in ["http://user:s3cr3t-pw@127.0.0.1:9/v0.7", "http://s3cr3t-pw@127.0.0.1:9/v0.7", "user:s3cr3t-pw@host"] {
        let config = ProviderConfig::new("deepomatic").api_key(KEY).base_url(url);
        let shown = format!("{config:?} {:?}", Client::builder().provider(config.clone()));
        assert!(!shown.contains("s3cr3t-pw"), "Debug shows the userinfo: {shown}");
        let err = build_error(config);
        assert!(err.is_config(), "{url}: {err:?}");
        let text = format!("{err} {err:?}");
        assert!(!text.contains("s3cr3t-pw"), "the error echoes the userinfo: {text}");
    }
}

#[test]
fn a_base_url_from_the_environment_with_userinfo_is_refused_without_echoing_it() {
    for var in ["DEEPOMATIC_API_URL", "TASKPOLL_DEEPOMATIC_BASE_URL"] {
        let lookup = |name: &str| match name {
            "DEEPOMATIC_API_KEY" => Some(KEY.to_string()),
            n if n == var => Some("https://me:s3cr3t-pw@api.example".to_string()),
            _ => None,
        };
        let err = Client::builder().providers_from_env_with(lookup).and_then(|b| b.build()).unwrap_err();
        assert!(err.is_config(), "{var}: {err:?}");
        assert!(!format!("{err} {err:?}").contains("s3cr3t-pw"), "{var}: {err}");
    }
}

#[test]
fn a_base_url_with_a_query_or_fragment_is_refused() {
    for url in [
        "http://127.0.0.1:9/v0.7?x=1",
        "http://127.0.0.1:9/v0.7?",
        "http://127.0.0.1:9/v0.7#part",
        "http://127.0.0.1:9?token=s3cr3t-q",
    ] {
        let err = build_error(ProviderConfig::new("deepomatic").api_key(KEY).base_url(url));
        assert!(err.is_config(), "{url}: {err:?}");
        assert!(err.to_string().contains("query or fragment"), "{url}: {err}");
        assert!(!err.to_string().contains("s3cr3t-q"), "{err}");
    }
    // The same through the environment, where a host-only URL gets the spec's path.
    let lookup = |name: &str| match name {
        "DEEPOMATIC_API_KEY" => Some(KEY.to_string()),
        "DEEPOMATIC_API_URL" => Some("http://127.0.0.1:9#frag".to_string()),
        _ => None,
    };
    let err = Client::builder().providers_from_env_with(lookup).and_then(|b| b.build()).unwrap_err();
    assert!(err.is_config(), "{err:?}");
}

#[test]
fn an_empty_base_url_is_refused_but_an_empty_variable_is_unset() {
    for url in ["", "  "] {
        let err = build_error(ProviderConfig::new("deepomatic").api_key(KEY).base_url(url));
        assert!(err.is_config() && err.to_string().contains("empty"), "{url:?}: {err:?}");
    }
    let lookup = |name: &str| match name {
        "DEEPOMATIC_API_KEY" => Some(KEY.to_string()),
        "DEEPOMATIC_API_URL" | "TASKPOLL_DEEPOMATIC_BASE_URL" => Some(String::new()),
        _ => None,
    };
    let client = Client::builder().providers_from_env_with(lookup).unwrap().build().unwrap();
    assert_eq!(client.base_url("deepomatic"), Some("https://api.deepomatic.com/v0.7"));
}

// ---------------------------------------------------------------------------
// 3. Another task's answer

#[tokio::test]
async fn an_answer_about_another_task_is_refused_and_ids_compare_as_text() {
    for (body_id, requested, accepted) in [
        (json!("269999729"), "269999729", true),
        (json!(269999729), "269999729", true),
        (json!(null), "269999729", true),
        (json!(""), "269999729", true),
        (json!("269999730"), "269999729", false),
        (json!(269999730), "269999729", false),
        (json!("0269999729"), "269999729", false),
        (json!(true), "true-ish", false),
    ] {
        let body = json!({"id": body_id, "status": "success", "data": {"x": 1}});
        let server = answering(ResponseTemplate::new(200).set_body_json(&body)).await;
        let result = deepomatic(&server).get(&task(requested)).await;
        if accepted {
            assert_eq!(result.unwrap().id(), requested);
            continue;
        }
        let err = result.unwrap_err();
        assert!(matches!(&err, Error::TaskIdMismatch(e) if e.requested() == requested), "{body_id}: {err:?}");
        assert!(!err.is_retryable() && err.task().is_none(), "{err:?}");
    }
}

/// Every provider whose spec says where the id is refuses another task's answer.
#[tokio::test]
async fn every_provider_with_a_task_id_pointer_checks_it() {
    let mut checked = Vec::new();
    for spec in taskpoll::spec::providers() {
        let Some(pointer) = spec.task().id() else { continue };
        let Some(example) = spec.examples_for(spec.get().operation(), "200").next() else { continue };
        let mut body: serde_json::Value = serde_json::from_str(example.json()).unwrap();
        let Some(slot) = body.pointer_mut(pointer) else { continue };
        *slot = json!("someone-else");
        let server = answering(ResponseTemplate::new(200).set_body_json(&body)).await;
        let client = Client::builder().provider(any_credentials(spec.name(), &server)).build().unwrap();
        let err = client.get(&TaskRef::new(spec.name(), "mine").unwrap()).await.unwrap_err();
        assert!(matches!(err, Error::TaskIdMismatch(_)), "{}: {err:?}", spec.name());
        checked.push(spec.name());
    }
    for provider in ["cloudinary", "qolaba", "factpulse", "deepomatic"] {
        assert!(checked.contains(&provider), "{provider} was not checked: {checked:?}");
    }
}

/// A configuration with a credential for the provider's first security
/// alternative, pointed at `server`.
fn any_credentials(provider: &str, server: &MockServer) -> ProviderConfig {
    let spec = taskpoll::spec::provider(provider).unwrap();
    let mut config = with_demo_variables(ProviderConfig::new(provider).base_url(server.uri()), spec);
    let first = spec.security().iter().find(|(op, _)| *op == spec.get().operation()).map(|(_, alts)| alts[0]);
    for scheme in first.unwrap_or(&[]) {
        config = config.credential(*scheme, made_up_credential(spec.scheme(scheme).unwrap().kind(), "s3cr3t"));
    }
    config
}

// ---------------------------------------------------------------------------
// 6. Configuration errors found before sending

#[test]
fn a_credential_that_cannot_be_a_header_is_a_config_error_at_build() {
    for bad in ["key\nX-Injected: 1", "key\r", "k\0ey"] {
        let err = build_error(ProviderConfig::new("deepomatic").api_key(bad).base_url("http://127.0.0.1:9"));
        assert!(err.is_config(), "{bad:?}: {err:?}");
        assert!(err.to_string().contains("not allowed in a header"), "{err}");
        assert!(!format!("{err} {err:?}").contains("key\n"), "{err}");
        let err = build_error(ProviderConfig::new("factpulse").bearer(bad));
        assert!(err.is_config(), "{bad:?}: {err:?}");
    }
    // Through the environment as well (a key pasted with a trailing `\r`).
    let lookup = |name: &str| (name == "DEEPOMATIC_API_KEY").then(|| "key\rX: y".to_string());
    let err = Client::builder().providers_from_env_with(lookup).and_then(|b| b.build()).unwrap_err();
    assert!(err.is_config(), "{err:?}");
}

#[test]
fn the_app_id_without_the_key_is_a_config_error_naming_what_is_missing() {
    let lookup = |name: &str| (name == "DEEPOMATIC_APP_ID").then(|| APP.to_string());
    let err = Client::builder().providers_from_env_with(lookup).and_then(|b| b.build()).unwrap_err();
    assert!(err.is_config(), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("AppId") && text.contains("ApiKey (DEEPOMATIC_API_KEY)"), "{text}");
    assert!(!text.contains(APP), "{text}");
}

#[test]
fn env_alternatives_name_the_variables_that_suffice() {
    let alternatives = |p: &str| taskpoll::spec::provider(p).unwrap().env_alternatives();
    assert_eq!(alternatives("deepomatic"), vec![vec!["DEEPOMATIC_API_KEY"]]);
    assert_eq!(alternatives("qolaba"), vec![vec!["QOLABA_API_KEY"]]);
    assert_eq!(alternatives("factpulse"), vec![vec!["FACTPULSE_TOKEN"], vec!["FACTPULSE_API_KEY"]]);
    assert_eq!(
        alternatives("cloudinary"),
        vec![
            vec!["CLOUDINARY_URL"],
            vec!["CLOUDINARY_OAUTH_TOKEN", "CLOUDINARY_CLOUD_NAME"],
            vec!["CLOUDINARY_API_KEY", "CLOUDINARY_API_SECRET", "CLOUDINARY_CLOUD_NAME"],
        ]
    );
}

/// Generic over every provider: each set configures the provider on its own,
/// and no set is larger than needed (without any one of its variables, the
/// provider is not usable).
#[test]
fn each_env_alternative_suffices_and_every_variable_in_it_is_needed() {
    let value = |var: &str| {
        let is_url = taskpoll::spec::providers().iter().any(|p| p.credentials_url().is_some_and(|u| u.var() == var));
        if is_url { "scheme://user:s3cr3t@demo".to_string() } else { "demo".to_string() }
    };
    for spec in taskpoll::spec::providers() {
        for set in spec.env_alternatives() {
            let usable = |vars: &[&str]| {
                let lookup = |name: &str| vars.contains(&name).then(|| value(name));
                Client::builder()
                    .providers_from_env_with(lookup)
                    .and_then(|b| b.build())
                    .is_ok_and(|c| c.base_url(spec.name()).is_some())
            };
            assert!(usable(&set), "{}: {set:?} does not suffice", spec.name());
            for left_out in &set {
                let fewer: Vec<&str> = set.iter().copied().filter(|v| v != left_out).collect();
                assert!(!usable(&fewer), "{}: {set:?} works without {left_out}", spec.name());
            }
        }
    }
}

// ---------------------------------------------------------------------------
// 8. Ids with `/` and `;`

#[tokio::test]
async fn slash_and_semicolon_ids_are_refused_unless_the_spec_allows_them() {
    for id in ["a/b", "a/../b", "x;jsessionid=1", "/", "a%2Fb/"] {
        let err = TaskRef::new("deepomatic", id).unwrap_err();
        assert!(matches!(err, Error::InvalidTaskId(_)) && err.is_config(), "{id}: {err:?}");
        let parsed = format!("deepomatic:{}", id.replace('/', "%2F").replace(';', "%3B")).parse::<TaskRef>();
        assert!(parsed.is_err(), "{id}: parsed as {parsed:?}");
    }
    // No ref bypasses the check: one deserialised from a saved wait state is checked as it is read.
    let smuggled = serde_json::from_value::<TaskRef>(json!({"provider": "deepomatic", "id": "a/b"}));
    assert!(smuggled.is_err_and(|e| e.to_string().contains("invalid task id")));
    // Every built-in provider keeps the strict default.
    for spec in taskpoll::spec::providers().iter().filter(|p| p.name() != "acme") {
        assert_eq!(spec.get().id_allow(), "", "{}", spec.name());
        assert!(TaskRef::new(spec.name(), "a/b").is_err() && TaskRef::new(spec.name(), "a;b").is_err());
    }
}

#[cfg(feature = "fixture-provider")]
#[tokio::test]
async fn a_spec_that_allows_a_slash_gets_it_sent_encoded() {
    let server = answering(ResponseTemplate::new(200).set_body_json(json!({"job": {"state": "WAITING"}}))).await;
    let acme = taskpoll::spec::provider("acme").unwrap();
    assert_eq!(acme.get().id_allow(), "/");
    let client = Client::builder().provider(any_credentials("acme", &server)).build().unwrap();
    let task = client.get(&TaskRef::new("acme", "a/b").unwrap()).await.unwrap();
    assert_eq!(task.id(), "a/b");
    assert!(TaskRef::new("acme", "a;b").is_err(), "only `/` is allowed by acme's spec");
    let sent = received(&server).await;
    assert_eq!(
        sent[0].url.query_pairs().find(|(k, _)| k == "jobId").map(|(_, v)| v.into_owned()).as_deref(),
        Some("a/b")
    );
}

// ---------------------------------------------------------------------------
// 7. Messages that mislead

#[test]
fn repeated_and_empty_task_ref_inputs_are_refused() {
    for text in [
        "qolaba:abc?refID=a&refID=b",
        "qolaba:abc?refID=",
        "qolaba:abc?",
        "qolaba:abc?refID=a&",
        "qolaba:abc?refID=a&&refID=a",
        "qolaba:?refID=a",
        "qolaba:",
    ] {
        let err = text.parse::<TaskRef>().unwrap_err();
        assert!(
            matches!(err, Error::InvalidTaskRef(_) | Error::InvalidTaskId(_)) && err.is_config(),
            "{text}: {err:?}"
        );
    }
    let err = "qolaba:abc?refID=a&refID=b".parse::<TaskRef>().unwrap_err();
    assert!(err.to_string().contains("twice"), "{err}");
    assert!(TaskRef::new("qolaba", "abc").unwrap().with_input("refID", "").is_err());
    assert_eq!("qolaba:abc?refID=a".parse::<TaskRef>().unwrap().inputs()["refID"], "a");
}

/// A loopback listener that runs `serve` on each connection.
async fn raw_server<F, Fut>(serve: F) -> String
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(serve(stream));
        }
    });
    format!("http://{address}")
}

async fn read_request(stream: &mut tokio::net::TcpStream) {
    use tokio::io::AsyncReadExt as _;
    let mut buffer = vec![0u8; 64 * 1024];
    let mut seen = Vec::new();
    while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => seen.extend_from_slice(&buffer[..n]),
        }
    }
}

fn transport_error(base_url: &str, request_timeout: std::time::Duration) -> impl std::future::Future<Output = Error> {
    let client = Client::builder()
        .provider(deepomatic_config(base_url))
        .request_timeout(request_timeout)
        .connect_timeout(std::time::Duration::from_secs(5))
        .build()
        .unwrap();
    async move { client.get(&task("1")).await.unwrap_err() }
}

#[tokio::test]
async fn transport_errors_say_which_kind_and_which_host() {
    use std::time::Duration;
    use taskpoll::error::TransportKind;
    use tokio::io::AsyncWriteExt as _;
    let long = Duration::from_secs(10);

    // Refused: a port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let err = transport_error(&format!("http://127.0.0.1:{port}"), long).await;
    assert!(matches!(&err, Error::Transport(e) if e.kind() == TransportKind::Refused), "{err:?}");
    assert!(err.to_string().contains(&format!("connection refused by 127.0.0.1:{port}")), "{err}");

    // Closed before an answer.
    let url = raw_server(|mut s| async move {
        read_request(&mut s).await;
    })
    .await;
    let err = transport_error(&url, long).await;
    assert!(matches!(&err, Error::Transport(e) if e.kind() == TransportKind::Reset), "{err:?}");
    assert!(err.to_string().contains(url.trim_start_matches("http://")), "{err}");

    // Truncated body: a Content-Length larger than what is sent.
    let url = raw_server(|mut s| async move {
        read_request(&mut s).await;
        let _ = s
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"id\":")
            .await;
    })
    .await;
    let err = transport_error(&url, long).await;
    assert!(matches!(&err, Error::Transport(e) if e.kind() == TransportKind::TruncatedBody), "{err:?}");
    assert!(err.to_string().contains("truncated body"), "{err}");

    // TLS: https to a plain-text server.
    let url = raw_server(|mut s| async move {
        use tokio::io::AsyncReadExt as _;
        let _ = s.read(&mut [0u8; 1024]).await; // the ClientHello
        let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n").await;
    })
    .await;
    let err = transport_error(&url.replace("http://", "https://"), long).await;
    assert!(matches!(&err, Error::Transport(e) if e.kind() == TransportKind::Tls), "{err:?}");

    // The request timeout, named with its value.
    let url = raw_server(|mut s| async move {
        read_request(&mut s).await;
        tokio::time::sleep(Duration::from_secs(30)).await;
    })
    .await;
    let err = transport_error(&url, Duration::from_millis(200)).await;
    assert!(matches!(&err, Error::Transport(e) if e.kind() == TransportKind::Timeout) && err.is_timeout(), "{err:?}");
    assert!(err.to_string().contains("request timeout of 0.2 s"), "{err}");
}

#[tokio::test]
async fn an_unresolvable_host_is_a_dns_error() {
    let err = transport_error("http://taskpoll-test.invalid", std::time::Duration::from_secs(10)).await;
    assert!(matches!(&err, Error::Transport(e) if e.kind() == taskpoll::error::TransportKind::Dns), "{err:?}");
    assert!(err.to_string().contains("taskpoll-test.invalid"), "{err}");
}

/// The deadline error names the last cause and how to continue; a request
/// cut off by the deadline says so (not "request timed out").
#[tokio::test]
async fn the_deadline_error_names_the_last_cause_and_how_to_continue() {
    use std::time::Duration;
    let url = raw_server(|mut s| async move {
        read_request(&mut s).await;
        tokio::time::sleep(Duration::from_secs(30)).await;
    })
    .await;
    let client = Client::builder().provider(deepomatic_config(&url)).build().unwrap();
    let err = client.wait(&task("1"), taskpoll::WaitOptions::new(Duration::from_millis(300))).await.unwrap_err();
    assert!(err.is_deadline(), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("last poll: request to 127.0.0.1:"), "{text}");
    assert!(text.contains("deadline budget ran out"), "{text}");
    assert!(text.contains("resume with its wait state"), "{text}");

    let server = answering(ResponseTemplate::new(503).set_body_string("<html>busy</html>")).await;
    let client = deepomatic(&server);
    let err = client.wait(&task("1"), taskpoll::WaitOptions::new(Duration::from_millis(300))).await.unwrap_err();
    assert!(err.to_string().contains("last poll: HTTP 503"), "{err}");
    assert!(!err.to_string().contains("busy"), "server text is summarised away: {err}");

    let server = answering(ResponseTemplate::new(200).set_body_json(json!({"id": "1", "status": "pending"}))).await;
    let err =
        deepomatic(&server).wait(&task("1"), taskpoll::WaitOptions::new(Duration::from_millis(300))).await.unwrap_err();
    assert!(err.to_string().contains("last seen queued"), "{err}");
}
