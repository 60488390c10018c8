//! Where a scheduler's reads go: the client (single reads and the provider's
//! batch operation), or a scripted source in the virtual-time tests.

use std::collections::HashMap;
use std::time::Duration;

use crate::spec::BoxFuture;
use crate::{Client, Result, Task, TaskRef};

/// The reads of one provider.
pub(crate) trait Source: Send + Sync + 'static {
    /// Reads one task; the whole read stays within `budget`.
    fn read_one(&self, task: TaskRef, budget: Duration) -> BoxFuture<'static, Result<Task>>;

    /// Reads several tasks in one batch call; ids the answer does not
    /// mention are absent from the map. Only called when [`Self::batch_size`] is `Some`.
    fn read_many(&self, ids: Vec<String>, budget: Duration) -> BoxFuture<'static, Result<HashMap<String, Task>>>;

    /// Ids per batch read, or `None` when the provider has no batch operation.
    fn batch_size(&self) -> Option<usize>;
}

/// A configured provider of a [`Client`].
pub(crate) struct ClientSource {
    client: Client,
    provider: &'static str,
    batch_size: Option<usize>,
}

impl ClientSource {
    pub(crate) fn new(client: Client, provider: &'static str) -> Result<Self> {
        let configured = client.configured(provider)?;
        let batch_size = configured.spec.many.map(|many| usize::try_from(many.max_ids).unwrap_or(usize::MAX).max(1));
        Ok(Self { client, provider, batch_size })
    }
}

impl Source for ClientSource {
    // A single read's in-progress answer sheds its body here, on the thread
    // that parsed it: freed where it was allocated (cheap), rather than by the
    // scheduler's thread after the poll (contended).
    fn read_one(&self, task: TaskRef, budget: Duration) -> BoxFuture<'static, Result<Task>> {
        let client = self.client.clone();
        Box::pin(async move {
            let mut task = client.get_within(&task, Some(budget)).await?;
            task.shed_in_progress_body();
            Ok(task)
        })
    }

    fn read_many(&self, ids: Vec<String>, budget: Duration) -> BoxFuture<'static, Result<HashMap<String, Task>>> {
        let client = self.client.clone();
        let provider = self.provider;
        Box::pin(async move {
            let configured = client.configured(provider)?;
            // In-progress tasks come without their body: not even built.
            client.read_batch(configured, ids, budget, true).await
        })
    }

    fn batch_size(&self) -> Option<usize> {
        self.batch_size
    }
}
