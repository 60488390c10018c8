//! Reading a few values out of JSON text without building the whole of it:
//! a many-task waiter reads a status out of every item of every batch answer,
//! and building each item as a [`Value`] (a map, every key, every string) is
//! most of the cost of a poll at 100,000 tasks.
//!
//! Hand-written over serde's visitor API (about 80 lines) because no kept
//! crate walks a JSON pointer over `RawValue`s without allocating.

use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use serde_json::value::RawValue;

/// The text cannot be walked in place (an escaped key on the way, or not
/// JSON): the caller builds the value whole instead.
#[derive(Debug)]
pub(crate) struct Unwalkable;

/// The raw value at a JSON pointer (RFC 6901), `None` when absent. Later
/// duplicate keys win, as they do in [`Value`].
pub(crate) fn raw_at<'a>(raw: &'a RawValue, pointer: &str) -> Result<Option<&'a RawValue>, Unwalkable> {
    if pointer.is_empty() {
        return Ok(Some(raw));
    }
    let Some(tokens) = pointer.strip_prefix('/') else { return Ok(None) };
    let mut here = raw;
    for token in tokens.split('/') {
        let token = unescape(token);
        let mut reader = serde_json::Deserializer::from_str(here.get());
        match Member(&token).deserialize(&mut reader) {
            Ok(Some(next)) => here = next,
            Ok(None) => return Ok(None),
            Err(_) => return Err(Unwalkable),
        }
    }
    Ok(Some(here))
}

/// The value at a JSON pointer (RFC 6901) in a built [`Value`]: what
/// [`Value::pointer`] does, without a new `String` per token (it runs for
/// every rule of a spec on every answer).
pub(crate) fn pointer<'a>(value: &'a Value, pointer: &str) -> Option<&'a Value> {
    if pointer.is_empty() {
        return Some(value);
    }
    pointer.strip_prefix('/')?.split('/').try_fold(value, |here, token| match here {
        Value::Object(map) => map.get(unescape(token).as_ref()),
        Value::Array(items) => index(token).and_then(|i| items.get(i)),
        _ => None,
    })
}

/// A pointer token with `~1` and `~0` decoded, borrowed when it has neither.
fn unescape(token: &str) -> std::borrow::Cow<'_, str> {
    if token.contains('~') { token.replace("~1", "/").replace("~0", "~").into() } else { token.into() }
}

/// An array index as RFC 6901 spells it: digits, no sign, no leading zero.
fn index(token: &str) -> Option<usize> {
    if token.starts_with('+') || (token.starts_with('0') && token.len() > 1) {
        return None;
    }
    token.parse().ok()
}

/// The raw values at several JSON pointers, `out[i]` for `pointers[i]`
/// (`out` is as long as `pointers`):
/// one pass over an object's members (a member a pointer goes deeper into
/// is then walked alone), where [`raw_at`] per pointer would read the whole
/// object once per pointer. Later duplicate keys win, as in [`Value`].
pub(crate) fn raw_at_each<'a>(
    raw: &'a RawValue,
    pointers: &[&str],
    out: &mut [Option<&'a RawValue>],
) -> Result<(), Unwalkable> {
    if !raw.get().starts_with('{') {
        for (pointer, found) in pointers.iter().zip(out.iter_mut()) {
            *found = raw_at(raw, pointer)?;
        }
        return Ok(());
    }
    each_member(raw.get(), pointers, out)?;
    for (pointer, found) in pointers.iter().zip(out.iter_mut()) {
        if pointer.is_empty() {
            *found = Some(raw);
        }
    }
    Ok(())
}

/// [`raw_at_each`] over a whole answer body, which must be one JSON object
/// (else [`Unwalkable`]): the same single pass also checks that the body is
/// JSON, so it is not read once more beforehand. The empty pointer finds nothing.
pub(crate) fn raw_at_each_in_body<'a>(
    body: &'a [u8],
    pointers: &[&str],
    out: &mut [Option<&'a RawValue>],
) -> Result<(), Unwalkable> {
    let text = std::str::from_utf8(body).map_err(|_| Unwalkable)?;
    if !text.trim_start_matches([' ', '\t', '\n', '\r']).starts_with('{') {
        return Err(Unwalkable);
    }
    each_member(text, pointers, out)
}

/// One pass over the members of the object `text` (and nothing after it but
/// whitespace), then the deeper tokens walked in the members found.
fn each_member<'a>(text: &'a str, pointers: &[&str], out: &mut [Option<&'a RawValue>]) -> Result<(), Unwalkable> {
    out.fill(None);
    let mut reader = serde_json::Deserializer::from_str(text);
    Members { pointers, out: &mut *out }.deserialize(&mut reader).map_err(|_| Unwalkable)?;
    reader.end().map_err(|_| Unwalkable)?;
    for (pointer, found) in pointers.iter().zip(out.iter_mut()) {
        let Some(tokens) = pointer.strip_prefix('/') else { continue };
        if let (Some(member), Some(slash)) = (*found, tokens.find('/')) {
            *found = raw_at(member, &tokens[slash..])?;
        }
    }
    Ok(())
}

/// A status or an id read in place, as text: a string as it is (borrowed
/// when it has no escape), a number as written (as [`Value`] renders it);
/// anything else is `None`.
pub(crate) fn scalar_text(raw: &RawValue) -> Option<std::borrow::Cow<'_, str>> {
    let text = raw.get();
    match text.as_bytes().first()? {
        // Valid JSON text: a string without a backslash is its own content.
        b'"' if !text.contains('\\') => text.get(1..text.len() - 1).map(Into::into),
        b'"' => serde_json::from_str::<String>(text).ok().map(Into::into),
        b'-' | b'0'..=b'9' => serde_json::from_str::<serde_json::Number>(text).ok().map(|n| n.to_string().into()),
        _ => None,
    }
}

/// The value at a JSON pointer, built (meant for small values: a status, an id).
#[cfg(test)]
pub(crate) fn value_at(raw: &RawValue, pointer: &str) -> Result<Option<Value>, Unwalkable> {
    match raw_at(raw, pointer)? {
        Some(found) => serde_json::from_str(found.get()).map(Some).map_err(|_| Unwalkable),
        None => Ok(None),
    }
}

/// The elements of a raw array, in place; `None` when it is not an array.
pub(crate) fn elements(raw: &RawValue) -> Result<Option<Vec<&RawValue>>, Unwalkable> {
    if !raw.get().starts_with('[') {
        return Ok(None);
    }
    serde_json::from_str(raw.get()).map(Some).map_err(|_| Unwalkable)
}

/// Captures the members of an object that the pointers' first tokens name.
struct Members<'p, 'o, 'a> {
    pointers: &'p [&'p str],
    out: &'o mut [Option<&'a RawValue>],
}

impl<'de> DeserializeSeed<'de> for Members<'_, '_, 'de> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Members<'_, '_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        fn first(pointer: &str) -> Option<&str> {
            pointer.strip_prefix('/').map(|tokens| tokens.split('/').next().unwrap_or(""))
        }
        // Borrowed keys: an escaped key cannot be borrowed, and fails the walk.
        while let Some(key) = map.next_key::<&'de str>()? {
            let named = |pointer: &&str| first(pointer).is_some_and(|token| unescape(token) == key);
            if self.pointers.iter().any(named) {
                let value = map.next_value::<&'de RawValue>()?;
                for (pointer, found) in self.pointers.iter().zip(self.out.iter_mut()) {
                    if named(pointer) {
                        *found = Some(value);
                    }
                }
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(())
    }
}

/// Finds one member of an object (by key) or an array (by index), skipping
/// the rest without building it.
struct Member<'p>(&'p str);

impl<'de> DeserializeSeed<'de> for Member<'_> {
    type Value = Option<&'de RawValue>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Member<'_> {
    type Value = Option<&'de RawValue>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found = None;
        // Borrowed keys: an escaped key cannot be borrowed, and fails the walk.
        while let Some(key) = map.next_key::<&'de str>()? {
            if key == self.0 {
                found = Some(map.next_value::<&'de RawValue>()?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        // RFC 6901: an index is `0` or digits without a leading zero.
        let index = match self.0.as_bytes() {
            [b'0'] => Some(0),
            [b'1'..=b'9', ..] => self.0.parse::<usize>().ok(),
            _ => None,
        };
        let mut found = None;
        let mut i = 0usize;
        while found.is_none() {
            if Some(i) == index {
                found = seq.next_element::<&'de RawValue>()?;
                break;
            }
            if seq.next_element::<IgnoredAny>()?.is_none() {
                return Ok(None);
            }
            i += 1;
        }
        // The rest of the array, unread.
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(found)
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(text: &str) -> Box<RawValue> {
        serde_json::from_str(text).expect("test JSON")
    }

    /// Every pointer gives what `Value::pointer` gives.
    #[test]
    fn pointer_agrees_with_value_pointer() {
        let value: Value =
            serde_json::from_str(r#"{"a": {"b/c": [1, {"d~e": "x"}], "": 2}, "0": [3], "l": [4, 5]}"#).unwrap();
        for p in [
            "",
            "/a",
            "/a/b~1c",
            "/a/b~1c/1/d~0e",
            "/a/b~1c/01",
            "/a/b~1c/+1",
            "/a/",
            "/0/0",
            "/l/1",
            "/l/2",
            "x",
            "/a/b~1c/0/x",
        ] {
            assert_eq!(pointer(&value, p), value.pointer(p), "{p}");
        }
    }

    #[test]
    fn pointers_agree_with_value_pointer() {
        let text =
            r#"{"a": {"b": [10, {"c": "x"}, null]}, "a~b": 1, "d/e": 2, "n": null, "s": "t", "dup": 1, "dup": 2}"#;
        let whole: Value = serde_json::from_str(text).expect("test JSON");
        let item = raw(text);
        for pointer in [
            "", "/a", "/a/b", "/a/b/0", "/a/b/1/c", "/a/b/2", "/a/b/3", "/a/b/01", "/a~0b", "/d~1e", "/n", "/s",
            "/s/x", "/x", "a", "/dup",
        ] {
            let found = value_at(&item, pointer).expect("walkable");
            assert_eq!(found.as_ref(), whole.pointer(pointer), "{pointer}");
        }
    }

    /// One pass for several pointers gives what one walk per pointer gives.
    #[test]
    fn pointers_read_in_one_pass_agree_with_one_walk_each() {
        let text = r#"{"a": {"b": [10, {"c": "x"}]}, "s": "t", "d/e": 2, "dup": 1, "dup": {"x": 3}, "n": 4.50}"#;
        let item = raw(text);
        let pointers = ["/s", "/a/b/1/c", "/d~1e", "/dup", "/dup/x", "/x", "", "x", "/a/b/0", "/n", "/s/x"];
        let mut out = vec![None; pointers.len()];
        raw_at_each(&item, &pointers, &mut out).expect("walkable");
        for (pointer, found) in pointers.iter().zip(&out) {
            let one = raw_at(&item, pointer).expect("walkable");
            assert_eq!(found.map(RawValue::get), one.map(RawValue::get), "{pointer}");
        }
        let list = raw(r#"[{"id": 1}, 2]"#);
        raw_at_each(&list, &["/0/id", "/1"], &mut out[..2]).expect("walkable");
        assert_eq!(out[..2].iter().map(|v| v.map(RawValue::get)).collect::<Vec<_>>(), [Some("1"), Some("2")]);
        assert!(raw_at_each(&raw(r#"{"st\u0061tus": 1}"#), &["/status"], &mut out[..1]).is_err());
    }

    /// Text read in place is the text of the built value.
    #[test]
    fn scalar_text_in_place_is_the_built_values_text() {
        for (text, expected) in [
            (r#""pending""#, Some("pending")),
            (r#""a\"b\u0041""#, Some("a\"bA")),
            (r#""""#, Some("")),
            ("42", Some("42")),
            ("-1.50", Some("-1.5")),
            ("1e3", Some("1000.0")),
            ("null", None),
            ("true", None),
            (r#"{"a": 1}"#, None),
        ] {
            assert_eq!(scalar_text(&raw(text)).as_deref(), expected, "{text}");
        }
    }

    #[test]
    fn an_escaped_key_is_unwalkable_and_arrays_are_listed() {
        assert!(raw_at(&raw(r#"{"st\u0061tus": 1}"#), "/status").is_err());
        let list = raw(r#"[{"id": 1}, 2, "three"]"#);
        let items = elements(&list).expect("walkable").expect("an array");
        assert_eq!(items.iter().map(|i| i.get()).collect::<Vec<_>>(), [r#"{"id": 1}"#, "2", r#""three""#]);
        assert!(elements(&raw(r#"{"a": 1}"#)).expect("walkable").is_none());
    }
}
