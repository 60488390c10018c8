//! Where a scheduler's reads go: the client (single reads and the provider's
//! batch operation), or a scripted source in the virtual-time tests.

use std::collections::HashMap;
use std::sync::Weak;
use std::time::Duration;

use crate::client::BatchItem;
use crate::config::ClientInner;
use crate::observe::{self, Seen};
use crate::spec::BoxFuture;
use crate::{Client, Error, Result, Task, TaskRef};

/// The reads of one provider.
pub(crate) trait Source: Send + Sync + 'static {
    /// Reads one task; the whole read stays within `budget`. Without
    /// `keep_body`, an in-progress answer's body is dropped as soon as it is read.
    fn read_one(&self, task: TaskRef, limits: Limits, keep_body: bool) -> BoxFuture<'static, Result<Task>>;

    /// Reads several tasks in one batch call: what the answer says of
    /// `ids[i]` at `[i]`, `None` where it does not mention the id (a repeated
    /// id is answered at its first place). Only called when [`Self::batch_size`] is `Some`.
    fn read_many(&self, ids: BatchIds, limits: Limits) -> BoxFuture<'static, Result<Vec<Option<Seen>>>>;

    /// Ids per batch read, or `None` when the provider has no batch operation.
    fn batch_size(&self) -> Option<usize>;
}

/// A configured provider of a [`Client`]. The client's engine holds its
/// schedulers, so a scheduler's source holds the client weakly: a client
/// nobody holds any more is dropped with its engine and schedulers.
/// How long one read may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    /// The time left before the wait's deadline (the earliest of a batch's waits).
    pub(crate) budget: Duration,
    /// The engine's attempt timeout (see `Scheduler::attempt_timeout`).
    pub(crate) attempt: Duration,
}

pub(crate) struct ClientSource {
    client: Weak<ClientInner>,
    provider: &'static str,
    batch_size: Option<usize>,
}

impl ClientSource {
    pub(crate) fn new(client: &Client, provider: &'static str) -> Result<Self> {
        let configured = client.configured(provider)?;
        let batch_size = configured.spec.many.map(|many| usize::try_from(many.max_ids).unwrap_or(usize::MAX).max(1));
        Ok(Self { client: client.downgrade(), provider, batch_size })
    }

    fn client(&self) -> Result<Client> {
        Client::upgrade(&self.client).ok_or_else(|| Error::config("the client was dropped"))
    }
}

impl Source for ClientSource {
    // A single read's in-progress answer sheds its body here, on the thread
    // that parsed it: freed where it was allocated (cheap), rather than by the
    // scheduler's thread after the poll (contended).
    fn read_one(&self, task: TaskRef, limits: Limits, keep_body: bool) -> BoxFuture<'static, Result<Task>> {
        let client = self.client();
        Box::pin(async move {
            let mut task = client?.get_within(&task, Some(limits.budget), Some(limits.attempt)).await?;
            if !keep_body {
                task.shed_in_progress_body();
            }
            Ok(task)
        })
    }

    // Answers are matched to ids here, on the worker that read them, so the
    // scheduler's single task takes each result by its place.
    fn read_many(&self, ids: BatchIds, limits: Limits) -> BoxFuture<'static, Result<Vec<Option<Seen>>>> {
        let client = self.client();
        let provider = self.provider;
        Box::pin(async move {
            let client = client?;
            let ids = ids.to_vec();
            let configured = client.configured(provider)?;
            let (spec, id_pointer) = (configured.spec, configured.spec.many.map_or("", |many| many.id));
            let mut places = Places::new(&ids);
            let mut seen: Vec<Option<Seen>> = std::iter::repeat_with(|| None).take(ids.len()).collect();
            client
                .read_batch(configured, &ids, (limits.budget, Some(limits.attempt)), |item, http_status| {
                    let read = match item {
                        BatchItem::InPlace(raw) => observe::batch_item(spec, id_pointer, http_status, raw),
                        BatchItem::Built(body) => observe::item_task(spec, id_pointer, http_status, body)
                            .map(|(id, task)| (id.into(), Seen::Task(Box::new(task)))),
                    };
                    if let Some((id, item)) = read
                        && let Some(place) = places.of(&id)
                    {
                        seen[place] = Some(item);
                    }
                })
                .await?;
            Ok(seen)
        })
    }

    fn batch_size(&self) -> Option<usize> {
        self.batch_size
    }
}

/// The ids of one batch read in one buffer: the scheduler's single task
/// makes two allocations per read rather than one per id, and the read's
/// worker makes the strings the request needs.
#[derive(Debug, Default)]
pub(crate) struct BatchIds {
    text: String,
    ends: Vec<usize>,
}

impl BatchIds {
    pub(crate) fn with_capacity(ids: usize, bytes: usize) -> Self {
        Self { text: String::with_capacity(bytes), ends: Vec::with_capacity(ids) }
    }

    pub(crate) fn push(&mut self, id: &str) {
        self.text.push_str(id);
        self.ends.push(self.text.len());
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &str> {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts.zip(&self.ends).map(|(start, &end)| self.text.get(start..end).unwrap_or_default())
    }

    pub(crate) fn to_vec(&self) -> Vec<String> {
        self.iter().map(str::to_string).collect()
    }
}

/// Where each id of a batch read is: answers usually list the ids in the
/// order asked, so the next place is tried first, and a map is built only
/// when an answer strays from that order (or an id is asked twice).
struct Places<'a> {
    ids: &'a [String],
    next: usize,
    map: Option<HashMap<&'a str, usize>>,
}

impl<'a> Places<'a> {
    fn new(ids: &'a [String]) -> Self {
        let mut distinct = std::collections::HashSet::with_capacity(ids.len());
        let map = if ids.iter().all(|id| distinct.insert(id.as_str())) { None } else { Some(Self::map(ids)) };
        Self { ids, next: 0, map }
    }

    /// Each id's first place.
    fn map(ids: &'a [String]) -> HashMap<&'a str, usize> {
        ids.iter().enumerate().rev().map(|(place, id)| (id.as_str(), place)).collect()
    }

    /// The place of an answered id (a later answer for the same id takes the same place).
    fn of(&mut self, id: &str) -> Option<usize> {
        if self.map.is_none() && self.ids.get(self.next).is_some_and(|expected| expected == id) {
            self.next += 1;
            return Some(self.next - 1);
        }
        let ids = self.ids;
        self.map.get_or_insert_with(|| Self::map(ids)).get(id).copied()
    }
}
