//! The one duration grammar, of the spec's `x-taskpoll` values and of the
//! command line's flags: humantime's forms (`500ms`, `1.5s`, `1m30s`, `2h`)
//! or a bare number of seconds (`90`, `0.5`), at most 10 years. build.rs and
//! the command line include this file by path, so it uses humantime alone.

use std::time::Duration;

/// The longest duration: no wait is meant to last longer, and adding more
/// to an `Instant` may overflow.
const MAX_DURATION: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// Reads `text` in the grammar above; the error quotes it.
pub(super) fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let too_large = || format!("`{text}` is too large (at most 10 years)");
    let duration = match text.parse::<f64>() {
        Ok(seconds) if seconds.is_sign_negative() => return Err(format!("`{text}` is negative")),
        Ok(seconds) => Duration::try_from_secs_f64(seconds).map_err(|_| too_large())?,
        Err(_) => humantime::parse_duration(text).map_err(|e| match e {
            humantime::DurationError::NumberOverflow => too_large(),
            e => format!("`{text}` is not a duration ({e}; try 30s, 1m30s, 500ms)"),
        })?,
    };
    if duration > MAX_DURATION {
        return Err(too_large());
    }
    Ok(duration)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn humantime_forms_and_bare_seconds_read_alike() {
        for (text, ms) in
            [("50ms", 50), ("1.5s", 1500), ("1m30s", 90_000), ("2h", 7_200_000), ("90", 90_000), ("0.5", 500)]
        {
            assert_eq!(parse_duration(text), Ok(Duration::from_millis(ms)), "{text}");
        }
    }

    #[test]
    fn mistakes_quote_the_text() {
        for text in ["soon", "-1", "11y", "1e30"] {
            let error = parse_duration(text).expect_err(text);
            assert!(error.contains(&format!("`{text}`")), "{text}: {error}");
        }
    }
}
