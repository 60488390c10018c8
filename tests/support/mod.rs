//! Helpers shared by the integration tests. A test binary that needs them
//! (`tests/<concern>/main.rs`, `tests/<concern>.rs`) includes this module with
//! `#[path = "../support/mod.rs"] mod support;` and uses the part it needs.
#![allow(dead_code)] // every binary uses only some of the helpers

#[cfg(feature = "cli")]
pub(crate) mod cli;
#[cfg(all(feature = "store-sqlite", feature = "store-postgres"))]
pub(crate) mod store;

use std::time::Duration;

use taskpoll::spec::{ProviderSpec, SchemeKind};
use taskpoll::{Client, Credential, Policy, ProviderConfig, TaskRef};
use wiremock::matchers::any;
use wiremock::{Mock, MockServer, ResponseTemplate};

/// What a test returns where `?` reads better than `expect`.
pub(crate) type TestResult = Result<(), Box<dyn std::error::Error>>;

pub(crate) fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

pub(crate) fn task(provider: &str, id: &str) -> TaskRef {
    TaskRef::new(provider, id).expect("task ref")
}

/// A client for one provider, with the builder's defaults otherwise.
pub(crate) fn client(config: ProviderConfig) -> Client {
    Client::builder().provider(config).build().expect("client builds")
}

/// FactPulse's helper preset (at once, then every 1 s growing by 1.5 up to 10 s).
pub(crate) fn factpulse_helper() -> Policy {
    Policy::factpulse_helper().expect("preset")
}

/// `config` with every server variable of `spec` set to `demo`.
pub(crate) fn with_demo_variables(mut config: ProviderConfig, spec: &ProviderSpec) -> ProviderConfig {
    for variable in spec.server_variables() {
        config = config.server_variable(variable.name(), "demo");
    }
    config
}

/// A made-up credential for a scheme of `kind`: user `user` with password
/// `secret` for HTTP Basic, the token `secret` for every other kind.
pub(crate) fn made_up_credential(kind: SchemeKind, secret: &str) -> Credential {
    match kind {
        SchemeKind::Basic => Credential::Basic { username: "user".into(), password: secret.to_string().into() },
        _ => Credential::Token(secret.to_string().into()),
    }
}

/// insta's settings for the snapshots in `snapshots/` at the root: named by
/// the test alone, without the asserted expression.
pub(crate) fn snapshot_settings() -> insta::Settings {
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path(concat!(env!("CARGO_MANIFEST_DIR"), "/snapshots"));
    settings.set_prepend_module_to_snapshot(false);
    settings.set_omit_expression(true);
    settings
}

/// A loopback server answering every request with `template`.
pub(crate) async fn answering(template: ResponseTemplate) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(any()).respond_with(template).mount(&server).await;
    server
}

/// Every request `server` received, in order.
pub(crate) async fn received(server: &MockServer) -> Vec<wiremock::Request> {
    server.received_requests().await.expect("request recording is on")
}
