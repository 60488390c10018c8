//! A blocking client (feature `blocking`), as `reqwest::blocking` is to
//! reqwest: reads and waits from a program with no async runtime of its own
//! (a script, a sync web framework, a build step).
//!
//! ```no_run
//! use std::time::Duration;
//! use taskpoll::{ProviderConfig, WaitOptions};
//!
//! fn main() -> taskpoll::Result<()> {
//!     let client = taskpoll::Client::builder()
//!         .provider(ProviderConfig::new("deepomatic").api_key("key"))
//!         .build_blocking()?;
//!     let task = "deepomatic:269999729".parse()?;
//!     println!("{}", client.get(&task)?.phase());
//!     let done = client.wait(&task, WaitOptions::new(Duration::from_secs(60)))?;
//!     println!("{} finished: {}", done.id(), done.phase());
//!     Ok(())
//! }
//! ```
//!
//! The client owns a small tokio runtime (one worker thread, named
//! `taskpoll-blocking`): each call runs the async [`crate::Client`]'s call on
//! it and blocks the calling thread until it is over, and the engine's
//! per-provider lanes (rate budget, batching, `Retry-After` pauses) run on its
//! worker, so waits made from several threads at once share them as the async
//! client's do. Dropping the last clone stops the lanes and the runtime.
//!
//! Inside a tokio runtime (an async task, or a `spawn_blocking` closure)
//! every call, and building the client, is an [`Error`] (`is_config()`), never
//! a panic or a deadlock: use the async [`crate::Client`] there.

use std::future::IntoFuture as _;
use std::sync::Arc;

use crate::{ClientBuilder, Error, Result, Task, TaskRef, WaitOptions, WaitState};

/// Reads and waits on tasks, blocking the calling thread. Cheap to clone (the
/// clones share one runtime and one engine). Made by
/// [`ClientBuilder::build_blocking`] or [`Client::from_env`].
#[derive(Clone)]
pub struct Client {
    shared: Arc<Shared>,
}

/// Fields drop in order: the async client first (its lanes then stop), then
/// the runtime they ran on.
struct Shared {
    client: crate::Client,
    runtime: OwnRuntime,
}

/// The client's own runtime, shut down when it goes.
struct OwnRuntime(Option<tokio::runtime::Runtime>);

impl Drop for OwnRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            // Dropping a runtime waits for its worker, which tokio forbids (with a panic) inside
            // another runtime; there, the worker is told to stop and is not waited for.
            if tokio::runtime::Handle::try_current().is_ok() {
                runtime.shutdown_background();
            } else {
                drop(runtime);
            }
        }
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("blocking::Client").field("client", &self.shared.client).finish_non_exhaustive()
    }
}

impl ClientBuilder {
    /// Checks everything and builds a [blocking client](crate::blocking::Client)
    /// with a runtime of its own (feature `blocking`). An error inside a tokio
    /// runtime (see [`crate::blocking`]).
    pub fn build_blocking(self) -> Result<Client> {
        outside_a_runtime("ClientBuilder::build_blocking")?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("taskpoll-blocking")
            .enable_all()
            .build()
            .map_err(|e| Error::config(format!("cannot start the blocking client's runtime: {e}")))?;
        // Built inside the runtime, in case anything of the client needs one when it is made.
        let client = {
            let _entered = runtime.enter();
            self.build()?
        };
        Ok(Client { shared: Arc::new(Shared { client, runtime: OwnRuntime(Some(runtime)) }) })
    }
}

impl Client {
    /// A blocking client for every provider whose variables are set (see
    /// [`crate::Client::from_env`]).
    pub fn from_env() -> Result<Self> {
        ClientBuilder::default().providers_from_env()?.build_blocking()
    }

    /// Reads a task's status once (see [`crate::Client::get`]).
    pub fn get(&self, task: &TaskRef) -> Result<Task> {
        self.block_on("get", self.shared.client.get(task))?
    }

    /// Reads several tasks of one provider, in batches where it has a batch
    /// operation (see [`crate::Client::get_many`]).
    pub fn get_many<S: AsRef<str>>(&self, provider: &str, ids: &[S]) -> Result<Vec<Result<Task>>> {
        self.block_on("get_many", self.shared.client.get_many(provider, ids))?
    }

    /// Waits until the task finishes or the deadline passes (see
    /// [`crate::Client::wait`]): the final task, or the error that ended the
    /// wait; [`Error::DeadlineExceeded`] holds the [`WaitState`] to
    /// [resume](Self::resume) it with.
    pub fn wait(&self, task: &TaskRef, options: WaitOptions) -> Result<Task> {
        self.block_on("wait", self.shared.client.wait(task, options).into_future())?
    }

    /// Continues a wait from its saved [`WaitState`] with a fresh deadline
    /// (see [`crate::Client::resume`]).
    pub fn resume(&self, state: WaitState, options: WaitOptions) -> Result<Task> {
        self.block_on("resume", self.shared.client.resume(state, options).into_future())?
    }

    /// The configured providers.
    pub fn providers(&self) -> impl Iterator<Item = &'static crate::spec::ProviderSpec> + '_ {
        self.shared.client.providers()
    }

    /// Runs `call` on the client's runtime, blocking this thread until it is over.
    fn block_on<F: Future>(&self, name: &str, call: F) -> Result<F::Output> {
        outside_a_runtime(name)?;
        match &self.shared.runtime.0 {
            Some(runtime) => Ok(runtime.block_on(call)),
            None => Err(Error::config("the blocking client's runtime has shut down")),
        }
    }
}

/// The error of a blocking call made inside a tokio runtime, where blocking
/// would stall (or, on a current-thread runtime, deadlock) the caller's runtime
/// and tokio would panic.
fn outside_a_runtime(call: &str) -> Result<()> {
    match tokio::runtime::Handle::try_current() {
        Err(_) => Ok(()),
        Ok(_) => Err(Error::config(format!(
            "taskpoll::blocking::Client: {call} called inside an async runtime, where it would block the \
             runtime's thread; use the async taskpoll::Client there"
        ))),
    }
}
