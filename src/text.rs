//! Text helpers shared by every layer: what an error or a log line may
//! repeat of a caller's or a server's text.

/// At most `max_chars` characters of `text`, with `…` when cut: a pasted
/// file or a long body is never echoed whole.
pub(crate) fn excerpt(text: &str, max_chars: usize) -> String {
    let mut out: String = text.chars().take(max_chars).collect();
    if text.chars().count() > max_chars {
        out.push('…');
    }
    out
}
