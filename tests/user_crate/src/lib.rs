//! A crate with its own taskpoll provider: `specs/acme.yaml` becomes
//! `generated::acme` (typed client and `PROVIDER` descriptor) at build time.

/// The typed clients generated from `specs/`, one module per provider.
pub mod generated {
    include!(concat!(env!("OUT_DIR"), "/providers.rs"));
}

/// Makes this crate's providers known to taskpoll (task references, clients,
/// waiters and the simulator find them by name).
pub fn register() -> taskpoll::Result<()> {
    for spec in generated::ALL {
        taskpoll::spec::register(spec)?;
    }
    Ok(())
}
