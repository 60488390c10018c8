//! Helpers shared by the integration tests. Each test binary
//! (`tests/<concern>/main.rs`, `tests/<concern>.rs`) includes this module with
//! `#[path = "../support/mod.rs"] mod support;` and uses the part it needs.
#![allow(dead_code)] // every binary uses only some of the helpers

#[cfg(all(feature = "store-sqlite", feature = "store-postgres"))]
pub(crate) mod store;
