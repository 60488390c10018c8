//! Reading a few values out of JSON text without building the whole of it:
//! a many-task waiter reads a status out of every item of every batch answer,
//! and building each item as a [`Value`] (a map, every key, every string) is
//! most of the cost of a poll at 100,000 tasks.
//!
//! Hand-written over serde's visitor API (about 80 lines) because no kept
//! crate walks a JSON pointer over `RawValue`s without allocating.

use std::borrow::Cow;
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
    // Walked by hand: a `char` pattern's searcher costs more than the few
    // bytes of a pointer take to scan.
    let mut rest = pointer.strip_prefix('/')?;
    let mut here = value;
    loop {
        let (token, next) = match rest.bytes().position(|b| b == b'/') {
            Some(slash) => (&rest[..slash], Some(&rest[slash + 1..])),
            None => (rest, None),
        };
        here = match here {
            Value::Object(map) => map.get(unescape(token).as_ref())?,
            Value::Array(items) => items.get(index(token)?)?,
            _ => return None,
        };
        match next {
            Some(next) => rest = next,
            None => return Some(here),
        }
    }
}

/// A pointer token with `~1` and `~0` decoded, borrowed when it has neither.
fn unescape(token: &str) -> Cow<'_, str> {
    if token.as_bytes().contains(&b'~') { token.replace("~1", "/").replace("~0", "~").into() } else { token.into() }
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

/// One pass over the members of the object `text` (and nothing after it but
/// whitespace), then the deeper tokens walked in the members found.
fn each_member<'a>(text: &'a str, pointers: &[&str], out: &mut [Option<&'a RawValue>]) -> Result<(), Unwalkable> {
    each_member_listing(text, pointers, out, None)
}

/// [`each_member`], and the elements of the array at `list`'s pointer (an
/// index into `pointers`, a pointer of one token) listed in the same pass
/// rather than captured whole and read again (its `out` stays `None`).
fn each_member_listing<'a>(
    text: &'a str,
    pointers: &[&str],
    out: &mut [Option<&'a RawValue>],
    list: Option<(usize, &mut Vec<&'a RawValue>)>,
) -> Result<(), Unwalkable> {
    out.fill(None);
    // Each pointer's first token, unescaped once rather than for every key.
    let mut on_stack: [Option<Cow<'_, str>>; 4] = Default::default();
    let mut on_heap: Vec<Option<Cow<'_, str>>>;
    let firsts = match on_stack.get_mut(..pointers.len()) {
        Some(firsts) => firsts,
        None => {
            on_heap = vec![None; pointers.len()];
            &mut on_heap
        }
    };
    for (pointer, first) in pointers.iter().zip(firsts.iter_mut()) {
        *first = pointer.strip_prefix('/').map(|tokens| unescape(tokens.split('/').next().unwrap_or("")));
    }
    let mut reader = serde_json::Deserializer::from_str(text);
    Members { firsts, out: &mut *out, list }.deserialize(&mut reader).map_err(|_| Unwalkable)?;
    reader.end().map_err(|_| Unwalkable)?;
    for (pointer, found) in pointers.iter().zip(out.iter_mut()) {
        let Some(tokens) = pointer.strip_prefix('/') else { continue };
        if let (Some(member), Some(slash)) = (*found, tokens.find('/')) {
            *found = raw_at(member, &tokens[slash..])?;
        }
    }
    Ok(())
}

/// A batch answer read in place, in one pass: the elements of the array at
/// `items` (absent: none) and the raw value at `next`. The body must be one
/// JSON object, with an array (or nothing) at `items`; else [`Unwalkable`].
pub(crate) fn page_in_body<'a>(
    body: &'a [u8],
    items: &str,
    next: &str,
) -> Result<(Vec<&'a RawValue>, Option<&'a RawValue>), Unwalkable> {
    let text = std::str::from_utf8(body).map_err(|_| Unwalkable)?;
    if !text.trim_start_matches([' ', '\t', '\n', '\r']).starts_with('{') {
        return Err(Unwalkable);
    }
    let mut found = [None; 2];
    let mut elements_found = Vec::new();
    let one_token = items.strip_prefix('/').is_some_and(|tokens| !tokens.contains('/'));
    if one_token {
        each_member_listing(text, &[items, next], &mut found, Some((0, &mut elements_found)))?;
    } else {
        each_member(text, &[items, next], &mut found)?;
        if let Some(list) = found[0] {
            elements_found = elements(list)?.ok_or(Unwalkable)?;
        }
    }
    Ok((elements_found, found[1]))
}

/// A status or an id read in place, as text: a string as it is (borrowed
/// when it has no escape), a number as written (as [`Value`] renders it);
/// anything else is `None`.
pub(crate) fn scalar_text(raw: &RawValue) -> Option<Cow<'_, str>> {
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
    /// Each pointer's first token, unescaped (`None`: it names no member).
    firsts: &'p [Option<Cow<'p, str>>],
    out: &'o mut [Option<&'a RawValue>],
    /// The pointer whose member is an array to list, and the list.
    list: Option<(usize, &'o mut Vec<&'a RawValue>)>,
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

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
        // Borrowed keys: an escaped key cannot be borrowed, and fails the walk.
        while let Some(key) = map.next_key::<&'de str>()? {
            let named = |first: &Option<Cow<'_, str>>| first.as_deref() == Some(key);
            let listed = self.list.as_ref().is_some_and(|(at, _)| self.firsts.get(*at).is_some_and(named));
            if let (true, Some((_, list))) = (listed, self.list.as_mut()) {
                // Later duplicate keys win.
                **list = map.next_value::<Vec<&'de RawValue>>()?;
            } else if self.firsts.iter().any(named) {
                let value = map.next_value::<&'de RawValue>()?;
                for (first, found) in self.firsts.iter().zip(self.out.iter_mut()) {
                    if named(first) {
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
            "/",
            "//",
            "/a/b~1c/",
            "/a//",
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

    /// A page read in one pass lists what its array lists, and finds its link.
    #[test]
    fn a_page_in_one_pass_lists_its_items_and_finds_its_link() {
        let body = br#" {"count": 2, "results": [{"id": "1"}, 2], "x": {"results": []}, "next": "http://n"} "#;
        let (items, next) = page_in_body(body, "/results", "/next").expect("walkable");
        assert_eq!(items.iter().map(|i| i.get()).collect::<Vec<_>>(), [r#"{"id": "1"}"#, "2"]);
        assert_eq!(next.map(RawValue::get), Some(r#""http://n""#));
        // Deeper pointers, a later duplicate, an absent list.
        let body = br#"{"page": {"items": [1], "items": [3, 4]}, "links": {"next": null}}"#;
        let (items, next) = page_in_body(body, "/page/items", "/links/next").expect("walkable");
        assert_eq!(
            (items.iter().map(|i| i.get()).collect::<Vec<_>>(), next.map(RawValue::get)),
            (vec!["3", "4"], Some("null"))
        );
        let body = br#"{"results": [1], "results": [5]}"#;
        let (items, next) = page_in_body(body, "/results", "").expect("walkable");
        assert_eq!((items.iter().map(|i| i.get()).collect::<Vec<_>>(), next.map(RawValue::get)), (vec!["5"], None));
        assert!(page_in_body(br#"{"next": 1}"#, "/results", "/next").expect("walkable").0.is_empty());
        // Not an object, not an array where the items are, not JSON, trailing text: read whole instead.
        for body in
            [&br#"[1]"#[..], br#"{"results": {"a": 1}}"#, br#"{"results": [1"#, br#"{"results": []} x"#, b"\xff"]
        {
            assert!(page_in_body(body, "/results", "/next").is_err(), "{body:?}");
        }
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
