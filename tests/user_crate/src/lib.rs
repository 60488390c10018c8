//! A crate with its own taskpoll provider: `specs/acme.yaml` becomes
//! `generated::acme` (typed client and `PROVIDER` descriptor) at build time.

/// The typed clients generated from `specs/`, one module per provider.
pub mod generated {
    include!(concat!(env!("OUT_DIR"), "/providers.rs"));
}

/// Makes this crate's `acme` provider known to taskpoll (task references,
/// clients, waiters and the simulator find it by name). `generated::qolaba`
/// (specs/shadow.yaml) takes a built-in name on purpose and is not registered.
pub fn register() -> taskpoll::Result<()> {
    taskpoll::spec::register(&generated::acme::PROVIDER)
}
