//! Ctrl-C, for the commands that end their waits cleanly when interrupted.

use super::error::Error;

/// Ctrl-C (SIGINT), listened for from creation on, so one that comes while
/// tasks are being added is not lost, nor kills the process without its lines.
pub(crate) struct Interrupts {
    #[cfg(unix)]
    sigint: tokio::signal::unix::Signal,
}

impl Interrupts {
    /// Starts listening; a Ctrl-C from now on is seen by [`Self::next`].
    pub(crate) fn listen() -> Result<Self, Error> {
        #[cfg(unix)]
        {
            let sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
                .map_err(|e| Error::usage(format!("cannot listen for Ctrl-C: {e}")))?;
            Ok(Self { sigint })
        }
        #[cfg(not(unix))]
        Ok(Self {})
    }

    /// The next Ctrl-C.
    pub(crate) async fn next(&mut self) {
        #[cfg(unix)]
        let listening = self.sigint.recv().await.is_some();
        #[cfg(not(unix))]
        let listening = tokio::signal::ctrl_c().await.is_ok();
        if !listening {
            std::future::pending::<()>().await;
        }
    }
}
