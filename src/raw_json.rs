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

/// The value at a JSON pointer, built (meant for small values: a status, an id).
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

    #[test]
    fn an_escaped_key_is_unwalkable_and_arrays_are_listed() {
        assert!(raw_at(&raw(r#"{"st\u0061tus": 1}"#), "/status").is_err());
        let list = raw(r#"[{"id": 1}, 2, "three"]"#);
        let items = elements(&list).expect("walkable").expect("an array");
        assert_eq!(items.iter().map(|i| i.get()).collect::<Vec<_>>(), [r#"{"id": 1}"#, "2", r#""three""#]);
        assert!(elements(&raw(r#"{"a": 1}"#)).expect("walkable").is_none());
    }
}
