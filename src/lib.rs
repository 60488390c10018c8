// The README is the crate's front page, so its examples compile as doctests.
#![doc = include_str!("../README.md")]
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
pub mod error;
#[cfg(test)]
mod layering;
mod observe;
mod policy;
mod raw_json;
#[cfg(feature = "simulator")]
pub mod simulator;
pub mod spec;
mod state;
#[cfg(any(feature = "store-sqlite", feature = "store-postgres"))]
pub mod store;
mod task;
mod transport;
pub mod wait;
mod waiter;
pub mod webhook;

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
pub use wait::{DEFAULT_RETRY_AFTER_CEILING, PollError, PollEvent, UnknownStatusPolicy, WaitOptions, WaitState, Watch};
pub use waiter::{Outcomes, PendingTask, WaitOutcome, Waiter, WaiterHandle};

/// The HTTP client taskpoll builds on. A `reqwest::Client` handed to
/// [`ClientBuilder::http_client`] must come from this same version; use this
/// re-export rather than a `reqwest` dependency of your own to be sure.
pub use reqwest;
