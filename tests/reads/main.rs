//! Reading tasks, one test binary: the unified client against a loopback
//! server (task mapping, errors, limits, batch reads), the documented answers,
//! the wire shape of every request, credentials kept to their origin, the
//! generated clients and code, and a provider declared by a spec alone.

#[path = "../support/mod.rs"]
mod support;

mod codegen_errors;
mod first_errors;
mod fixture_provider;
mod generated_client;
mod generated_code;
mod request_shapes;
mod responses;
mod security;
mod unified;
