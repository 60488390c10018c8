//! What the simulator received and sent, for tests to assert on.

use serde_json::Value;
use tokio::time::Instant;

use super::fault::Fault;
use crate::{Phase, TaskRef};

/// One request the simulator received, with secrets redacted.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RecordedRequest {
    /// The provider whose base URL it was sent under (`None`: no provider matched).
    pub provider: Option<&'static str>,
    /// The operationId it matched (`None`: no operation matched).
    pub operation: Option<&'static str>,
    /// The task ids it asked about (one for a single read, several for a batch).
    pub task_ids: Vec<String>,
    /// HTTP method, upper case.
    pub method: String,
    /// The path as received, provider prefix included (`/deepomatic/tasks/42/`).
    pub path: String,
    /// The path relative to the provider's base URL (`/tasks/42/`).
    pub relative_path: String,
    /// The raw query string, if any.
    pub query: Option<String>,
    /// Headers in the order received, names lower case. Credential values are
    /// redacted (`Basic [redacted]`, `Bearer [redacted]`, `[redacted]`).
    pub headers: Vec<(String, String)>,
    /// The request body, as text (lossy UTF-8).
    pub body: String,
    /// When it arrived (tokio time).
    pub at: Instant,
    /// Whether its credentials satisfied the operation's security (`true`
    /// when it matched no operation, as nothing was checked).
    pub authenticated: bool,
    /// The fault injected into its answer, if any.
    pub fault: Option<Fault>,
    /// The HTTP status answered (`None` when the connection was dropped or the
    /// answer is still pending).
    pub status: Option<u16>,
}

impl RecordedRequest {
    /// The first value of a header (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The decoded query parameters, in order (repeated keys kept).
    pub fn query_pairs(&self) -> Vec<(String, String)> {
        let Some(query) = &self.query else { return Vec::new() };
        match reqwest::Url::parse(&format!("http://simulator/?{query}")) {
            Ok(url) => url.query_pairs().map(|(k, v)| (k.into_owned(), v.into_owned())).collect(),
            Err(_) => Vec::new(),
        }
    }

    /// The body as JSON, if it is JSON.
    pub fn json(&self) -> Option<Value> {
        serde_json::from_str(&self.body).ok()
    }
}

/// One webhook the simulator sent or dropped.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct WebhookDelivery {
    /// The task it is about.
    pub task: TaskRef,
    /// The phase it reports.
    pub phase: Phase,
    /// False when it was dropped on purpose (see [`super::Callback::drop_rate`]).
    pub sent: bool,
    /// The receiver's HTTP status to the last send (`None` when dropped or
    /// when the last send failed).
    pub status: Option<u16>,
    /// How many times it was sent (more than 1 when the receiver refused it
    /// and it was sent again; 0 when dropped).
    pub attempts: u32,
}
