//! Provider descriptors: what the generator read from each spec's `x-taskpoll`
//! extension, as plain data. The unified client, the polling engine, the
//! simulator and the CLI are all driven by these tables and never name a
//! provider.
//!
//! The descriptors themselves are plain data (`descriptor.rs`); this module
//! adds the registry of known providers, which names them and builds the
//! errors of unknown names.

use std::sync::RwLock;

// Kept for the wait engine's files until they name futures-util directly.
pub(crate) use futures_util::future::BoxFuture;

mod descriptor;

pub use descriptor::{
    CredentialsUrl, CredentialsUrlFields, Example, ExampleFields, GetSpec, GetSpecFields, InputSpec, InputSpecFields,
    Jitter, ManySpec, ManySpecFields, MessagePart, OperationSpec, OperationSpecFields, Phase, PolicySpec,
    PolicySpecFields, ProviderSpec, ProviderSpecFields, RateSpec, RateSpecFields, Rule, RuleFields, Scheme,
    SchemeFields, SchemeKind, ServerVariable, ServerVariableFields, SignatureAlgorithm, SignatureEncoding, TaskShape,
    TaskShapeFields, WebhookSpec, WebhookSpecFields,
};

/// The providers registered at run time ([`register`]) after the built-in
/// ones; empty until the first registration.
///
/// Each registration replaces the list with a leaked copy one entry longer,
/// so [`providers`] can keep handing out a `&'static` slice without a lock
/// guard. A provider registers at most once, so what leaks is bounded by the
/// number of distinct providers (a few pointers each).
static REGISTERED: RwLock<&'static [&'static ProviderSpec]> = RwLock::new(&[]);

/// Every known provider: those built into the crate, then those registered
/// with [`register`] (or [`crate::ClientBuilder::register`]).
pub fn providers() -> &'static [&'static ProviderSpec] {
    let registered = *REGISTERED.read().unwrap_or_else(|e| e.into_inner());
    if registered.is_empty() { crate::generated::ALL } else { registered }
}

/// Makes a provider generated in another crate known everywhere a provider
/// is looked up by name: task references, [`crate::ClientBuilder`], the
/// polling policies and the simulator (see the README, "Your own provider,
/// in your own crate"). Registering the same descriptor again does nothing.
///
/// Fails with [`crate::Error::Config`] when another provider already has its
/// name (names are compared case-insensitively).
pub fn register(spec: &'static ProviderSpec) -> crate::Result<()> {
    let mut registered = REGISTERED.write().unwrap_or_else(|e| e.into_inner());
    let current: &'static [&'static ProviderSpec] =
        if registered.is_empty() { crate::generated::ALL } else { *registered };
    if current.iter().any(|known| std::ptr::eq(*known, spec)) {
        return Ok(());
    }
    if current.iter().any(|known| known.name.eq_ignore_ascii_case(spec.name)) {
        return Err(crate::Error::config(format!("a provider named `{}` is already known", spec.name)));
    }
    let mut all = current.to_vec();
    all.push(spec);
    *registered = Box::leak(all.into_boxed_slice());
    Ok(())
}

/// The provider with this name.
pub fn provider(name: &str) -> Option<&'static ProviderSpec> {
    providers().iter().copied().find(|p| p.name.eq_ignore_ascii_case(name))
}

/// The provider with this name, or the error that says which ones exist.
pub(crate) fn known_provider(name: &str) -> Result<&'static ProviderSpec, crate::Error> {
    provider(name).ok_or_else(|| crate::Error::unknown_provider(name, providers().iter().map(|p| p.name)))
}
