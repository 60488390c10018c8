//! Checking one delivery against its provider's [`WebhookSpec`], and signing
//! one (for the simulator), from the spec data alone.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use hmac::{Hmac, Mac};
use http::HeaderMap;
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use sha1::Sha1;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::WebhookRefusal;
use crate::spec::{MessagePart, ProviderSpec, SignatureAlgorithm, SignatureEncoding, WebhookSpec};
use crate::{Result, Task};

/// Checks a delivery and reads it as a task. `now` is the wall-clock time of
/// the client's clock (never the system's directly, so tolerance is testable).
pub(crate) fn verify(
    spec: &'static ProviderSpec,
    secret: &SecretString,
    headers: &HeaderMap,
    body: &[u8],
    now: SystemTime,
) -> Result<Task> {
    let no = |reason| crate::Error::webhook_refused(spec.name, reason);
    let hook = spec.webhook.as_ref().ok_or_else(|| no(WebhookRefusal::NotDeclared))?;
    if body.len() > hook.max_body_bytes {
        return Err(no(WebhookRefusal::BodyTooLarge { limit: hook.max_body_bytes }));
    }
    let header = |name: &'static str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .ok_or_else(|| no(WebhookRefusal::MissingHeader(name)))
    };
    let signature = header(hook.signature_header)?;
    let timestamp = match hook.timestamp_header {
        Some(name) => {
            let text = header(name)?;
            check_fresh(text, hook.tolerance_ms, now).map_err(no)?;
            Some(text)
        }
        None => None,
    };
    let given = decode(hook, signature).ok_or_else(|| no(WebhookRefusal::BadSignature))?;
    let secret = secret.expose_secret().as_bytes();
    let matches = hook.algorithms.iter().any(|algorithm| {
        let expected = digest(*algorithm, hook.message, secret, body, timestamp.unwrap_or("").as_bytes());
        // Lengths are public (they follow from the algorithm); contents are compared in constant time.
        expected.len() == given.len() && bool::from(expected.ct_eq(&given))
    });
    if !matches {
        return Err(no(WebhookRefusal::BadSignature));
    }
    let payload: Value = serde_json::from_slice(body).map_err(|_| no(WebhookRefusal::NotJson))?;
    if !payload.is_object() {
        return Err(no(WebhookRefusal::NotJson));
    }
    crate::observe::webhook_task(spec, hook, payload).ok_or_else(|| no(WebhookRefusal::NoTaskId))
}

/// The timestamp is Unix seconds within `tolerance_ms` of `now`, either way.
fn check_fresh(text: &str, tolerance_ms: u64, now: SystemTime) -> std::result::Result<(), WebhookRefusal> {
    let seconds: u64 = text.parse().map_err(|_| WebhookRefusal::BadTimestamp)?;
    let sent = UNIX_EPOCH.checked_add(Duration::from_secs(seconds)).ok_or(WebhookRefusal::BadTimestamp)?;
    let tolerance = Duration::from_millis(tolerance_ms);
    match now.duration_since(sent) {
        Ok(age) if age > tolerance => Err(WebhookRefusal::StaleTimestamp),
        Ok(_) => Ok(()),
        Err(ahead) if ahead.duration() > tolerance => Err(WebhookRefusal::FutureTimestamp),
        Err(_) => Ok(()),
    }
}

/// The digest bytes in a signature header, or `None` when it is not in the
/// declared form.
fn decode(hook: &WebhookSpec, header: &str) -> Option<Vec<u8>> {
    let prefix_len = hook.prefix.len();
    let digest = match header.get(..prefix_len) {
        Some(start) if start.eq_ignore_ascii_case(hook.prefix) => &header[prefix_len..],
        _ => return None,
    };
    match hook.encoding {
        SignatureEncoding::Hex => hex::decode(digest).ok(),
        SignatureEncoding::Base64 => base64::engine::general_purpose::STANDARD.decode(digest).ok(),
    }
}

/// The digest of the message the spec describes.
fn digest(
    algorithm: SignatureAlgorithm,
    parts: &[MessagePart],
    secret: &[u8],
    body: &[u8],
    timestamp: &[u8],
) -> Vec<u8> {
    let pieces = parts.iter().map(|part| match part {
        MessagePart::Body => body,
        MessagePart::Timestamp => timestamp,
        MessagePart::Secret => secret,
    });
    fn keyed<M: Mac + hmac::digest::KeyInit>(secret: &[u8], pieces: impl Iterator<Item = impl AsRef<[u8]>>) -> Vec<u8> {
        // An HMAC takes a key of any length; `new_from_slice` cannot fail for it.
        match <M as hmac::digest::KeyInit>::new_from_slice(secret) {
            Ok(mut mac) => {
                for piece in pieces {
                    mac.update(piece.as_ref());
                }
                mac.finalize().into_bytes().to_vec()
            }
            Err(_) => Vec::new(),
        }
    }
    fn plain<D: Digest>(pieces: impl Iterator<Item = impl AsRef<[u8]>>) -> Vec<u8> {
        let mut hasher = D::new();
        for piece in pieces {
            hasher.update(piece.as_ref());
        }
        hasher.finalize().to_vec()
    }
    match algorithm {
        SignatureAlgorithm::Sha1 => plain::<Sha1>(pieces),
        SignatureAlgorithm::Sha256 => plain::<Sha256>(pieces),
        SignatureAlgorithm::HmacSha1 => keyed::<Hmac<Sha1>>(secret, pieces),
        SignatureAlgorithm::HmacSha256 => keyed::<Hmac<Sha256>>(secret, pieces),
    }
}

/// The headers that sign `body` as the provider would (the first declared
/// algorithm): the signature header, and the timestamp header when the
/// scheme has one (`timestamp` in Unix seconds). For the simulator and tests.
#[cfg_attr(not(feature = "simulator"), allow(dead_code))]
pub(crate) fn sign(
    hook: &WebhookSpec,
    secret: &SecretString,
    body: &[u8],
    timestamp: u64,
) -> Vec<(&'static str, String)> {
    let stamp = timestamp.to_string();
    let algorithm = hook.algorithms.first().copied().unwrap_or(SignatureAlgorithm::HmacSha256);
    let raw = digest(algorithm, hook.message, secret.expose_secret().as_bytes(), body, stamp.as_bytes());
    let encoded = match hook.encoding {
        SignatureEncoding::Hex => hex::encode(raw),
        SignatureEncoding::Base64 => base64::engine::general_purpose::STANDARD.encode(raw),
    };
    let mut headers = vec![(hook.signature_header, format!("{}{encoded}", hook.prefix))];
    if let Some(name) = hook.timestamp_header {
        headers.push((name, stamp));
    }
    headers
}
