//! # taskpoll
//!
//! Read and wait on long-running tasks at several HTTP providers through one
//! typed API. Each provider's status operations are generated at build time by
//! progenitor from a hand-written OpenAPI spec in `specs/` (see
//! [`generated`]); this crate adds one status model ([`Task`], [`Phase`]), one
//! error ([`Error`]) and a polling engine bounded by a single deadline
//! ([`Client::wait`], [`Client::watch`], [`WaitOptions`], [`Policy`]).
//!
//! ```no_run
//! use std::time::Duration;
//! use taskpoll::{Client, ProviderConfig, TaskRef, WaitOptions};
//!
//! # async fn run() -> taskpoll::Result<()> {
//! let client = Client::builder()
//!     .provider(ProviderConfig::new("deepomatic").api_key("my-key"))
//!     .build()?; // or Client::from_env()?
//! let task_ref: TaskRef = "deepomatic:269999729".parse()?;
//!
//! let task = client.get(&task_ref).await?;
//! println!("{} is {} (raw status {:?})", task.id(), task.phase(), task.status());
//!
//! match client.wait(&task_ref, WaitOptions::new(Duration::from_secs(60))).await {
//!     Ok(done) => println!("result: {:?}", done.result()),
//!     Err(e) if e.is_task_failure() => println!("failed: {:?}", e.task().and_then(|t| t.error())),
//!     Err(e) if e.is_deadline() => println!("not done yet; resume from {:?}", e.wait_state()),
//!     Err(e) => return Err(e),
//! }
//! # Ok(()) }
//! ```
//!
//! Provider specifics (paths, auth, where the status is and what its values
//! mean) are data generated from each spec's `x-taskpoll` extension
//! ([`spec::ProviderSpec`]); nothing in the client or the polling engine names
//! a provider. With the `simulator` feature, `taskpoll::simulator` serves every
//! provider offline for tests; the `cli` feature builds the `taskpoll` tool.
//! The `codegen` feature is the generator itself (`taskpoll::codegen`), for
//! the build script of a crate that declares providers of its own
//! ([`ClientBuilder::register`]).
//! With `store-sqlite` or `store-postgres`, [`store`] keeps waits in a
//! database, so they survive a restart and several processes share them.
//! Providers that call back race their signed webhooks against polling
//! ([`webhook`], [`Client::verify_webhook`]; the `webhook` feature adds a receiver).
#![cfg_attr(docsrs, feature(doc_cfg))]

// Generated code names `::taskpoll::…`, here as in a crate that declares its own providers.
extern crate self as taskpoll;

#[doc(hidden)]
#[path = "glue.rs"]
pub mod __private;
mod client;
mod clock;
#[cfg(feature = "codegen")]
pub mod codegen;
mod config;
mod error;
mod observe;
mod policy;
mod raw_json;
#[cfg(feature = "simulator")]
pub mod simulator;
pub mod spec;
#[cfg(any(feature = "store-sqlite", feature = "store-postgres"))]
pub mod store;
mod task;
mod transport;
pub mod wait;
mod waiter;
pub mod webhook;

/// The README's examples, compiled as doctests so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeExamples;

/// The typed clients generated from `specs/`, one module per provider, named
/// after it (`generated::cloudinary`).
pub mod generated {
    include!(concat!(env!("OUT_DIR"), "/providers.rs"));
}

pub use client::Client;
pub use clock::{Clock, ManualClock, Sleep, TokioClock};
pub use config::{
    ClientBuilder, DEFAULT_CONCURRENCY, DEFAULT_CONNECT_TIMEOUT, DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_IN_FLIGHT,
    DEFAULT_RATE, DEFAULT_REQUEST_TIMEOUT, ProviderConfig, generic_base_url_env,
};
pub use error::{Error, Result, TransportKind};
pub use policy::{DEFAULT_FINAL_POLL_RESERVE, MAX_SCHEDULE_LEN, Policy, PolicyBuilder};
pub use spec::{Jitter, ProviderSpec};
pub use task::{MAX_ID_LEN, Phase, Task, TaskRef, Via};
pub use transport::Credential;
pub use wait::{DEFAULT_RETRY_AFTER_CEILING, PollEvent, UnknownStatusPolicy, WaitOptions, WaitState, Watch};
pub use waiter::{Outcomes, PendingTask, WaitOutcome, Waiter, WaiterHandle};

/// The HTTP client taskpoll builds on. A `reqwest::Client` handed to
/// [`ClientBuilder::http_client`] must come from this same version; use this
/// re-export rather than a `reqwest` dependency of your own to be sure.
pub use reqwest;
