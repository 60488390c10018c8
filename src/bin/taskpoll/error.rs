//! The CLI's error: the library's errors, and the CLI's own about its flags,
//! files and ids (worded as the library words the same kinds of error).

use taskpoll::spec::ProviderSpec;

use super::output::Exit;

/// Why a command could not run.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    /// The library refused or failed.
    #[error(transparent)]
    Taskpoll(#[from] taskpoll::Error),
    /// A flag, a file or the environment is unusable; nothing was sent.
    #[error("configuration: {0}")]
    Usage(String),
    /// An id on the command line or in a file is not a task reference.
    #[error("invalid task reference {input:?}: {reason}")]
    InvalidTaskRef { input: String, reason: String },
    /// `--provider` (or a saved wait) names no provider built into the crate.
    #[error("unknown provider `{name}` (known: {known})")]
    UnknownProvider { name: String, known: String },
}

impl Error {
    /// A usage or configuration error with this message.
    pub(crate) fn usage(message: impl Into<String>) -> Self {
        Error::Usage(message.into())
    }

    /// A malformed task reference; only the start of a long `input` is kept.
    pub(crate) fn invalid_task_ref(input: &str, reason: impl Into<String>) -> Self {
        Error::InvalidTaskRef { input: excerpt(input, 80), reason: reason.into() }
    }

    /// The process exit code for this error.
    pub(crate) fn exit(&self) -> Exit {
        match self {
            Error::Taskpoll(e) => Exit::for_error(e),
            Error::Usage(_) | Error::InvalidTaskRef { .. } | Error::UnknownProvider { .. } => Exit::Usage,
        }
    }
}

/// The provider with this name, or the error that lists the ones there are.
pub(crate) fn provider(name: &str) -> Result<&'static ProviderSpec, Error> {
    taskpoll::spec::provider(name).ok_or_else(|| {
        let known: Vec<&str> = taskpoll::spec::providers().iter().map(|p| p.name()).collect();
        Error::UnknownProvider { name: excerpt(name, 40), known: known.join(", ") }
    })
}

/// At most `max_chars` characters of `text`, with `…` when cut: a pasted
/// file is not echoed whole.
fn excerpt(text: &str, max_chars: usize) -> String {
    let mut out: String = text.chars().take(max_chars).collect();
    if text.chars().count() > max_chars {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_provider_reads_as_the_library_says_it() {
        let ours = provider("mars").map(|_| ()).expect_err("no such provider");
        let theirs = taskpoll::TaskRef::new("mars", "1").map(|_| ()).expect_err("no such provider");
        // Less the library's hint to register a provider: the command line cannot.
        let (ours, theirs) = (ours.to_string(), theirs.to_string());
        assert!(theirs.starts_with(&ours) && theirs.contains("register"), "{ours:?} vs {theirs:?}");
        assert_eq!(provider("mars").map(|_| ()).expect_err("no such provider").exit(), Exit::Usage);
    }

    #[test]
    fn a_long_reference_is_cut() {
        let text = Error::invalid_task_ref(&"x".repeat(100), "too long").to_string();
        assert_eq!(text, format!("invalid task reference \"{}…\": too long", "x".repeat(80)));
    }
}
