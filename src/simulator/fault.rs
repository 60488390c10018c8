//! Faults the simulator can inject instead of a normal answer.

use std::time::Duration;

use crate::TaskRef;

/// A misbehaviour to inject for the next requests of a provider or a task.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fault {
    /// `429 Too Many Requests`, with the operation's documented 429 body when
    /// the spec has one. `retry_after` is sent as `Retry-After` in whole
    /// seconds (rounded up), plus `retry-after-ms` when it is not a whole
    /// number of seconds; `None` sends no hint.
    RateLimited {
        /// The hint to send.
        retry_after: Option<Duration>,
    },
    /// `502 Bad Gateway` with an HTML body, as a proxy in front of the provider sends.
    Html502,
    /// `503 Service Unavailable` with a plain-text body.
    Unavailable503,
    /// The normal answer, after this delay (tokio time). The read counts only
    /// if the client is still there to receive it.
    Slow(Duration),
    /// The connection is closed before a complete answer is sent.
    DropConnection,
    /// `200` with `Content-Type: application/json` and a truncated JSON body.
    MalformedJson,
    /// This HTTP status with the operation's documented example for it (e.g.
    /// `404`, `500`), or a generic JSON error body when the spec has none.
    Status(u16),
}

/// What a fault applies to: every request to a provider, or the requests
/// that read one task.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FaultTarget {
    /// Every request under this provider's base URL.
    Provider(String),
    /// The requests that read this task (single or batch reads).
    Task(TaskRef),
}

impl From<&str> for FaultTarget {
    fn from(provider: &str) -> Self {
        FaultTarget::Provider(provider.to_string())
    }
}

impl From<String> for FaultTarget {
    fn from(provider: String) -> Self {
        FaultTarget::Provider(provider)
    }
}

impl From<&TaskRef> for FaultTarget {
    fn from(task: &TaskRef) -> Self {
        FaultTarget::Task(task.clone())
    }
}

impl From<TaskRef> for FaultTarget {
    fn from(task: TaskRef) -> Self {
        FaultTarget::Task(task)
    }
}

/// Pending faults: each applies to the next `remaining` matching requests, in order.
#[derive(Debug, Default)]
pub(crate) struct FaultQueue {
    entries: Vec<(Fault, u32)>,
}

impl FaultQueue {
    pub(crate) fn push(&mut self, fault: Fault, times: u32) {
        if times > 0 {
            self.entries.push((fault, times));
        }
    }

    /// Takes one use of the first pending fault.
    pub(crate) fn take(&mut self) -> Option<Fault> {
        let (fault, remaining) = self.entries.first_mut()?;
        let fault = fault.clone();
        *remaining -= 1;
        if *remaining == 0 {
            self.entries.remove(0);
        }
        Some(fault)
    }

    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_counts_down_in_order() {
        let mut q = FaultQueue::default();
        q.push(Fault::Html502, 2);
        q.push(Fault::DropConnection, 1);
        q.push(Fault::Unavailable503, 0);
        assert_eq!(q.take(), Some(Fault::Html502));
        assert_eq!(q.take(), Some(Fault::Html502));
        assert_eq!(q.take(), Some(Fault::DropConnection));
        assert_eq!(q.take(), None);
        assert!(q.is_empty());
    }
}
