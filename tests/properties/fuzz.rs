//! Fuzz targets for body decoding and `TaskRef` parsing, with bolero: under
//! `cargo test` each runs on stable with random inputs (1 s by default; CI sets
//! `BOLERO_RANDOM_TEST_TIME_MS` to bound it); `cargo bolero test <name>` runs
//! one under a coverage-guided fuzzer where one is installed.

#![allow(clippy::unwrap_used)] // In tests a panic is the failure report.

use taskpoll::{Task, TaskRef};

/// Any bytes as a task reference: never a panic; what parses prints back to
/// itself and its id obeys the id rules.
#[test]
fn task_ref_parsing() {
    bolero::check!().for_each(|bytes: &[u8]| {
        let Ok(text) = std::str::from_utf8(bytes) else { return };
        if let Ok(task) = text.parse::<TaskRef>() {
            assert_eq!(task.to_string().parse::<TaskRef>().unwrap(), task, "{text:?}");
            assert!(!task.id().is_empty() && !task.id().chars().any(char::is_control), "{text:?}");
            assert!(!task.id().contains(['/', ';', '\\']), "{text:?}");
        }
    });
}

/// Any status and bytes as an answer, raw or inside a task-shaped JSON body:
/// never a panic, and a task is only ever the requested one.
#[test]
fn body_decoding() {
    bolero::check!().with_type::<(u16, bool, Vec<u8>)>().for_each(|(status, wrap, bytes)| {
        let body = if *wrap {
            let text = String::from_utf8_lossy(bytes);
            format!(r#"{{"status": {text}, "id": "t-1", "data": {{"status": {text}, "task_id": "t-1"}}}}"#).into_bytes()
        } else {
            bytes.clone()
        };
        for spec in taskpoll::spec::providers() {
            let task_ref = TaskRef::new(spec.name(), "t-1").unwrap();
            match Task::decode(&task_ref, *status, &body) {
                Ok(task) => {
                    assert_eq!(task.task_ref(), &task_ref);
                    assert_eq!(task.http_status(), *status);
                }
                // Every error classifies: the predicates never panic either.
                Err(e) => _ = (e.is_retryable(), e.to_string()),
            }
        }
    });
}
