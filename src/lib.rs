// The README is the crate's front page, so its examples compile as doctests.
#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

// Generated code names `::taskpoll::…`, here as in a crate that declares its own providers.
extern crate self as taskpoll;

#[doc(hidden)]
#[path = "glue.rs"]
pub mod __private;
#[cfg(feature = "blocking")]
pub mod blocking;
mod client;
pub mod clock;
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
mod telemetry;
mod text;
mod transport;
pub mod wait;
pub mod webhook;

/// The typed clients generated from `specs/`, one module per provider, named
/// after it (`generated::cloudinary`).
pub mod generated {
    include!(concat!(env!("OUT_DIR"), "/providers.rs"));
}

pub use client::Client;
pub use config::{ClientBuilder, ProviderConfig};
pub use error::{Error, Result};
pub use policy::Policy;
pub use task::{Phase, Task, TaskRef, Via};
pub use transport::Credential;
pub use wait::{PollEvent, Wait, WaitOptions, WaitState, Waiter};

// Short paths inside the crate for what lives in a public module.
#[cfg(test)]
pub(crate) use clock::ManualClock;
pub(crate) use clock::{Clock, TokioClock};

/// The HTTP client taskpoll builds on. A `reqwest::Client` handed to
/// [`ClientBuilder::http_client`] must come from this same version; use this
/// re-export rather than a `reqwest` dependency of your own to be sure.
pub use reqwest;
