//! Property tests (proptest): task references, polling policies,
//! and answer classification hold for any input (`Retry-After` parsing: in
//! `src/observe.rs`).

#![allow(clippy::unwrap_used)] // In tests a panic is the failure report.

use std::time::Duration;

use proptest::prelude::*;
use serde_json::Value;
use taskpoll::spec::Jitter;
use taskpoll::{Policy, Task, TaskRef};

const PROVIDERS: &[&str] = &["cloudinary", "qolaba", "factpulse", "deepomatic"];

fn provider() -> impl Strategy<Value = &'static str> {
    proptest::sample::select(PROVIDERS)
}

/// Ids with the characters that need escaping in a task reference, unicode,
/// and the ones ids may not contain.
fn any_id() -> impl Strategy<Value = String> {
    proptest::string::string_regex(r"[a-zA-Z0-9 %?&=#:/;.\\\-_\u{0}-\u{1f}\u{7f}éü漢]{0,40}").unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Whatever a valid reference holds, printing and parsing it gives it back.
    #[test]
    fn task_ref_print_parse_round_trip(provider in provider(), id in any_id(), input in any_id()) {
        let Ok(mut task) = TaskRef::new(provider, id) else { return Ok(()) };
        if provider == "qolaba" && let Ok(with) = task.clone().with_input("refID", input) {
            task = with;
        }
        let printed = task.to_string();
        let parsed: TaskRef = printed.parse().unwrap();
        prop_assert_eq!(&parsed, &task, "{}", printed);
        prop_assert_eq!(parsed.to_string(), printed);
    }

    /// Hostile ids are refused, whatever surrounds the hostile part.
    #[test]
    fn hostile_ids_are_refused(
        provider in provider(),
        prefix in "[a-z0-9]{0,8}",
        hostile in proptest::sample::select(vec!["/", ";", "\\", "\n", "\r", "\u{0}", "\u{1b}[2J", "\u{7f}"]),
        suffix in "[a-z0-9]{0,8}",
    ) {
        let id = format!("{prefix}{hostile}{suffix}");
        prop_assert!(TaskRef::new(provider, id.as_str()).is_err(), "{:?} was accepted", id);
        let escaped: String = percent_encoding::utf8_percent_encode(&id, percent_encoding::NON_ALPHANUMERIC).to_string();
        prop_assert!(format!("{provider}:{escaped}").parse::<TaskRef>().is_err(), "{:?} parsed", escaped);
    }

    /// Dot segments, empty ids, surrounding whitespace and overlong ids are refused.
    #[test]
    fn ids_that_leave_their_segment_are_refused(provider in provider(), n in 513usize..2000, pad in "[ \t]{1,3}") {
        for id in [String::new(), ".".into(), "..".into(), "x".repeat(n), format!("{pad}x"), format!("x{pad}")] {
            prop_assert!(TaskRef::new(provider, id.as_str()).is_err(), "{:?} was accepted", id);
        }
    }

    /// Parsing any text never panics, and what parses prints back to a form
    /// that parses to the same reference.
    #[test]
    fn parsing_any_text_never_panics(text in "\\PC{0,60}", provider in provider()) {
        for candidate in [text.clone(), format!("{provider}:{text}")] {
            if let Ok(task) = candidate.parse::<TaskRef>() {
                prop_assert_eq!(task.to_string().parse::<TaskRef>().unwrap(), task);
            }
        }
    }

    /// Delays stay within the maximum plus the offset (fixed delays are taken
    /// as they are), and a schedule never places a poll past its deadline.
    #[test]
    fn policy_delays_are_bounded_and_polls_never_pass_the_deadline(
        initial_ms in 10u64..5_000,
        extra_ms in 0u64..30_000,
        factor in 1.0f64..4.0,
        offset_ms in 0u64..1_000,
        fixed in proptest::collection::vec(1u64..3_000, 0..4),
        jitter in proptest::sample::select(vec![Jitter::None, Jitter::Full, Jitter::Equal]),
        first_ms in 0u64..2_000,
        seed in any::<u64>(),
        deadline_ms in 0u64..60_000,
    ) {
        let max = Duration::from_millis(initial_ms + extra_ms);
        let offset = Duration::from_millis(offset_ms);
        let fixed: Vec<Duration> = fixed.into_iter().map(Duration::from_millis).collect();
        let policy = Policy::builder()
            .initial_delay(Duration::from_millis(initial_ms))
            .max_delay(max)
            .factor(factor)
            .offset(offset)
            .delays(fixed.clone())
            .jitter(jitter)
            .first_poll(Duration::from_millis(first_ms))
            .seed(seed)
            .build()
            .unwrap();
        for (delay, n) in policy.backoff().zip(1..60u32) {
            match fixed.get(n as usize - 1) {
                Some(fixed) => prop_assert_eq!(delay, *fixed),
                None => prop_assert!(delay >= offset && delay <= max + offset, "delay {} = {:?}", n, delay),
            }
        }
        let deadline = Duration::from_millis(deadline_ms);
        let times = policy.poll_times(deadline);
        prop_assert!(times.iter().all(|t| *t <= deadline), "{:?} past {:?}", times.last(), deadline);
        prop_assert!(times.windows(2).all(|w| w[0] <= w[1]));
    }

    /// Any JSON body, at any status, classifies without a panic for every
    /// provider; a task is only ever the requested one.
    #[test]
    fn classifying_any_json_body_never_panics(body in json(), status in 100u16..600, as_text in any::<bool>()) {
        for spec in taskpoll::spec::providers() {
            let task_ref = TaskRef::new(spec.name(), "t-1").unwrap();
            let bytes = if as_text { body.to_string().into_bytes() } else { serde_json::to_vec_pretty(&body).unwrap() };
            match Task::decode(&task_ref, status, &bytes) {
                Ok(task) => {
                    prop_assert_eq!(task.task_ref(), &task_ref);
                    prop_assert_eq!(task.http_status(), status);
                }
                Err(e) => _ = (e.is_retryable(), e.to_string()),
            }
        }
    }

    /// Task-shaped bodies with any status value: a phase, never a panic.
    #[test]
    fn task_shaped_bodies_with_any_status_classify(status_value in json(), id in json()) {
        for spec in taskpoll::spec::providers() {
            let task_ref = TaskRef::new(spec.name(), "t-1").unwrap();
            let mut body = serde_json::json!({});
            for pointer in std::iter::once(spec.task().status()).chain(spec.task().id()) {
                set(&mut body, pointer, if Some(pointer) == spec.task().id() { id.clone() } else { status_value.clone() });
            }
            if let Err(e) = Task::decode(&task_ref, 200, body.to_string().as_bytes()) {
                _ = (e.is_retryable(), e.to_string());
            }
        }
    }
}

/// Arbitrary JSON, a few levels deep.
fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
        "\\PC{0,20}".prop_map(Value::String),
        proptest::sample::select(vec!["pending", "SUCCESS", "error", "failed", "Completed", "t-1"])
            .prop_map(|s| Value::String(s.to_string())),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            proptest::collection::btree_map(
                proptest::sample::select(vec!["status", "id", "data", "error", "result", "task_id", "taskId", "x"])
                    .prop_map(str::to_string),
                inner,
                0..8
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Sets `value` at a JSON pointer, creating objects on the way.
fn set(body: &mut Value, pointer: &str, value: Value) {
    let mut at = body;
    let parts: Vec<&str> = pointer.trim_start_matches('/').split('/').collect();
    for (i, part) in parts.iter().enumerate() {
        if !at.is_object() {
            *at = serde_json::json!({});
        }
        let map = at.as_object_mut().unwrap();
        if i + 1 == parts.len() {
            map.insert(part.to_string(), value);
            return;
        }
        at = map.entry(part.to_string()).or_insert_with(|| serde_json::json!({}));
    }
}
