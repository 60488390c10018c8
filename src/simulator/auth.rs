//! Demo credentials and the auth check, from the spec's security schemes.

use std::fmt;

use http::HeaderMap;
use secrecy::SecretString;

use crate::Credential;
use crate::spec::{ProviderSpec, Scheme, SchemeKind};

/// One environment variable a user would set to reach the simulator through
/// [`crate::Client::from_env`] (credentials, base URL, server variables).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct EnvVar {
    /// The provider it configures.
    pub provider: &'static str,
    /// The variable's name (`DEEPOMATIC_API_KEY`).
    pub name: String,
    /// Its demo value.
    pub value: String,
    /// Whether the value is a credential.
    pub secret: bool,
}

impl fmt::Display for EnvVar {
    /// `NAME=value`, as for a shell.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.name, self.value)
    }
}

/// The demo username and password of a basic scheme.
pub(crate) fn demo_basic(spec: &ProviderSpec, scheme: &Scheme) -> (String, String) {
    (format!("sim-{}-{}-key", spec.name, scheme.name), format!("sim-{}-{}-secret", spec.name, scheme.name))
}

/// The demo token of a bearer or API-key scheme.
pub(crate) fn demo_token(spec: &ProviderSpec, scheme: &Scheme) -> String {
    format!("sim-{}-{}-token", spec.name, scheme.name)
}

/// The demo credential of a scheme.
pub(crate) fn demo_credential(spec: &ProviderSpec, scheme: &Scheme) -> Credential {
    match scheme.kind {
        SchemeKind::Basic => {
            let (username, password) = demo_basic(spec, scheme);
            Credential::Basic { username, password: SecretString::from(password) }
        }
        _ => Credential::Token(SecretString::from(demo_token(spec, scheme))),
    }
}

/// The header (lower-case name, value) that carries a scheme's demo
/// credential, encoded as a client sends it; `None` for a scheme whose
/// header cannot carry it (a header name the spec got wrong).
pub(crate) fn demo_header(spec: &ProviderSpec, scheme: &Scheme) -> Option<(String, String)> {
    let (name, value) = crate::transport::header_for(scheme.kind, &demo_credential(spec, scheme)).ok()?;
    Some((name.as_str().to_string(), value.to_str().ok()?.to_string()))
}

fn scheme_satisfied(spec: &ProviderSpec, scheme: &Scheme, headers: &HeaderMap) -> bool {
    let Some((name, expected)) = demo_header(spec, scheme) else { return false };
    headers.get_all(name.as_str()).iter().any(|value| {
        let Ok(value) = value.to_str() else { return false };
        match scheme.kind {
            // The auth-scheme word is case-insensitive (RFC 9110 §11.1).
            SchemeKind::Basic | SchemeKind::Bearer => match (value.split_once(' '), expected.split_once(' ')) {
                (Some((word, rest)), Some((want_word, want_rest))) => {
                    word.eq_ignore_ascii_case(want_word) && rest.trim() == want_rest
                }
                _ => false,
            },
            SchemeKind::ApiKeyHeader(_) => value == expected,
        }
    })
}

/// Whether the headers satisfy one of the operation's security alternatives.
pub(crate) fn authorized(spec: &ProviderSpec, operation: &str, headers: &HeaderMap) -> bool {
    let Some(alternatives) = spec.required_security(operation) else { return true };
    alternatives.iter().any(|alt| {
        alt.iter().all(|name| spec.scheme(name).is_some_and(|scheme| scheme_satisfied(spec, scheme, headers)))
    })
}

/// A `WWW-Authenticate` challenge for the operation's first alternative, if it is HTTP auth.
pub(crate) fn challenge(spec: &ProviderSpec, operation: &str) -> Option<String> {
    let first = spec.security_of(operation).first()?.first()?;
    match spec.scheme(first)?.kind {
        SchemeKind::Basic => Some(format!("Basic realm=\"{}\"", spec.name)),
        SchemeKind::Bearer => Some("Bearer".into()),
        SchemeKind::ApiKeyHeader(_) => None,
    }
}

/// Whether a header may carry a secret.
fn is_secret_header(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    matches!(lower.as_str(), "authorization" | "proxy-authorization" | "cookie" | "set-cookie")
        || crate::spec::providers().iter().flat_map(|p| p.schemes.iter()).any(|s| match s.kind {
            SchemeKind::ApiKeyHeader(h) => h.eq_ignore_ascii_case(&lower),
            _ => false,
        })
        || ["key", "token", "secret", "password"].iter().any(|w| lower.contains(w))
}

/// The headers with credential values redacted (`Basic [redacted]`).
pub(crate) fn redacted(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(name, value)| {
            let text = String::from_utf8_lossy(value.as_bytes()).into_owned();
            let shown = if is_secret_header(name.as_str()) {
                match text.split_once(' ') {
                    Some((word, _))
                        if name == http::header::AUTHORIZATION || name == http::header::PROXY_AUTHORIZATION =>
                    {
                        format!("{word} [redacted]")
                    }
                    _ => "[redacted]".to_string(),
                }
            } else {
                text
            };
            (name.as_str().to_string(), shown)
        })
        .collect()
}
