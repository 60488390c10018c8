//! # taskpoll
//!
//! Read and wait on long-running tasks at several HTTP providers through one
//! typed API. Each provider's status operations are generated at build time by
//! progenitor from a hand-written OpenAPI spec in `specs/`; this crate adds one
//! status model ([`Task`], [`Phase`]), one error ([`Error`]) and a polling
//! engine bounded by a single deadline.
#![cfg_attr(docsrs, feature(doc_cfg))]

mod client;
mod clock;
mod config;
mod error;
pub mod observe;
mod policy;
#[cfg(feature = "simulator")]
pub mod simulator;
pub mod spec;
mod task;
mod transport;
mod wait;

/// The typed clients generated from `specs/`, one module per spec.
pub mod generated {
    include!(concat!(env!("OUT_DIR"), "/providers.rs"));
}

pub use client::Client;
pub use clock::{Clock, ManualClock, Sleep, TokioClock};
pub use config::{
    ClientBuilder, DEFAULT_CONCURRENCY, DEFAULT_CONNECT_TIMEOUT, DEFAULT_MAX_BODY_BYTES, DEFAULT_REQUEST_TIMEOUT,
    ProviderConfig, generic_base_url_env,
};
pub use error::{Error, Result, TransportKind};
pub use policy::{DEFAULT_FINAL_POLL_RESERVE, MAX_SCHEDULE_LEN, Policy, PolicyBuilder};
pub use spec::{Jitter, ProviderSpec};
pub use task::{MAX_ID_LEN, Phase, Task, TaskRef};
pub use transport::{Credential, Ctx};
pub use wait::{
    DEFAULT_RETRY_AFTER_CEILING, Decision, PollEvent, Poller, UnknownStatusPolicy, WaitOptions, WaitState, Watch,
};
