//! The first mistakes of a new user each get a message that names the fix
//! (issue 26): a provider generated in one's own crate but not registered,
//! an environment with no provider's variables, a body read as the wrong type.

use serde::Deserialize;
use serde_json::json;
use taskpoll::{Client, Error, ProviderConfig, Task, TaskRef};

#[test]
fn an_unknown_provider_says_how_to_register_one() {
    let by_ref = TaskRef::new("replicate", "r-1").expect_err("not registered");
    let by_config = Client::builder().provider(ProviderConfig::new("replicate").api_key("k")).build().unwrap_err();
    for err in [by_ref, by_config] {
        assert!(matches!(err, Error::UnknownProvider(_)) && err.is_config(), "{err:?}");
        let text = err.to_string();
        assert!(text.starts_with("unknown provider `replicate` (known: cloudinary, deepomatic"), "{text}");
        assert!(text.contains("ClientBuilder::register") && text.contains("taskpoll::spec::register"), "{text}");
    }
}

#[test]
fn an_environment_without_any_provider_lists_the_variables_looked_for() {
    let err = Client::builder().providers_from_env_with(|_| None).expect("nothing malformed").build().unwrap_err();
    assert!(err.is_config(), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("no provider configured: none of the variables looked for is set"), "{text}");
    // Each provider with its alternatives, as its spec names them.
    for expected in [
        "cloudinary: CLOUDINARY_URL or ",
        " or CLOUDINARY_API_KEY + CLOUDINARY_API_SECRET",
        " or CLOUDINARY_OAUTH_TOKEN",
        "deepomatic: DEEPOMATIC_API_KEY",
        "qolaba: QOLABA_API_KEY",
    ] {
        assert!(text.contains(expected), "{expected:?} missing from {text}");
    }
    assert!(text.contains("once registered (ClientBuilder::register before providers_from_env"), "{text}");
    // Without `providers_from_env`, the message says how to configure one at all.
    let err = Client::builder().build().unwrap_err();
    assert!(err.to_string().contains("ClientBuilder::provider"), "{err}");
}

/// The marker of the child process in which [`from_env_names_a_set_variable_no_known_provider_reads`]
/// calls `Client::from_env` on an environment of its own.
const CHILD: &str = "TASKPOLL_TEST_FROM_ENV_CHILD";

/// `Client::from_env` reads the process environment, which tests running in
/// parallel share: this test runs itself again as a child process with an
/// environment that holds only the variables of the case.
#[test]
fn from_env_names_a_set_variable_no_known_provider_reads() {
    if std::env::var_os(CHILD).is_some() {
        let err = Client::from_env().expect_err("no known provider's variable is set");
        println!("message: {err}");
        return;
    }
    let me = std::env::current_exe().expect("the test binary");
    let output = std::process::Command::new(me)
        .args(["--exact", "first_errors::from_env_names_a_set_variable_no_known_provider_reads", "--nocapture"])
        .env_clear()
        .env(CHILD, "1")
        .env("REPLICATE_API_TOKEN", "r8_secret_value")
        .env("TASKPOLL_REPLICATE_BASE_URL", "http://127.0.0.1:9")
        .env("HOME_API_KEYS", "not a credential name")
        .output()
        .expect("the test binary runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "child failed: {stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    let text = stdout.lines().find_map(|l| l.strip_prefix("message: ")).unwrap_or_else(|| panic!("{stdout}"));
    assert!(text.contains("none of the variables looked for is set (cloudinary: CLOUDINARY_URL"), "{text}");
    assert!(
        text.contains("REPLICATE_API_TOKEN, TASKPOLL_REPLICATE_BASE_URL are set, but no known provider reads them"),
        "{text}"
    );
    assert!(text.contains("register the provider generated in your own crate first"), "{text}");
    assert!(!text.contains("r8_secret_value") && !text.contains("HOME_API_KEYS"), "{text}");
}

#[derive(Debug, Deserialize)]
struct Job {
    data: JobData,
}

#[derive(Debug, Deserialize)]
struct JobData {
    status: String,
}

/// What a user writes: `?` on `typed` in a function returning `taskpoll::Result`.
fn job_of(task: &Task) -> taskpoll::Result<Job> {
    let job = task.typed::<Job>()?;
    Ok(job)
}

#[test]
fn a_body_of_another_type_is_a_taskpoll_error_that_says_where() {
    let task: Task = serde_json::from_value(json!({
        "provider": "factpulse", "id": "t-1", "phase": "running", "status": "STARTED", "error": null,
        "result": null, "http_status": 200, "body": {"data": {"status": 7}},
    }))
    .expect("a task");
    let err = job_of(&task).unwrap_err();
    let Error::TypedBody(typed) = &err else { panic!("{err:?}") };
    assert_eq!((typed.task(), typed.path()), ("factpulse:t-1", "data.status"));
    assert!(typed.type_name().ends_with("first_errors::Job"), "{}", typed.type_name());
    assert_eq!(typed.message(), "invalid type: integer `7`, expected a string");
    assert_eq!(
        err.to_string(),
        format!(
            "task factpulse:t-1: the body does not read as `{}` at `data.status`: invalid type: integer `7`, expected a string",
            typed.type_name()
        )
    );
    let fine: Task = serde_json::from_value(json!({
        "provider": "factpulse", "id": "t-1", "phase": "running", "status": "STARTED", "error": null,
        "result": null, "http_status": 200, "body": {"data": {"status": "STARTED"}},
    }))
    .expect("a task");
    assert_eq!(job_of(&fine).expect("reads").data.status, "STARTED");
}
