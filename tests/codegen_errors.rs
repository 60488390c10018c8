//! build.rs on specs it cannot take: every failure is an error naming the
//! spec file (and the method and path where one is at fault), never a bare
//! panic; and what it normalises it reports.

#[path = "../build.rs"]
#[allow(dead_code, unused, clippy::all)]
mod codegen;

use std::path::PathBuf;

/// A minimal valid spec; `patch` edits its text.
const BASE: &str = r#"
openapi: 3.0.3
info: {title: Probe, version: "1"}
servers: [{url: "https://probe.invalid/api"}]
x-taskpoll:
  name: probe
  get: {operation: get_job, id: {in: path, name: job_id}}
  task: {status: /state}
  phases: {queued: [waiting], succeeded: [done]}
components:
  schemas:
    Job: {type: object, properties: {state: {type: string, enum: [waiting, done]}}}
    Problem: {type: object, properties: {message: {type: string}}}
paths:
  /jobs/{job_id}:
    get:
      operationId: get_job
      parameters: [{name: job_id, in: path, required: true, schema: {type: string}}]
      responses:
        "200": {description: ok, content: {application/json: {schema: {$ref: '#/components/schemas/Job'}}}}
        "404": {description: missing, content: {application/json: {schema: {$ref: '#/components/schemas/Problem'}}}}
"#;

fn generate(name: &str, text: &str) -> Result<codegen::GeneratedModule, String> {
    let dir = std::env::temp_dir().join(format!("taskpoll-codegen-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path: PathBuf = dir.join(name);
    std::fs::write(&path, text).expect("write spec");
    let result = codegen::generate_module(&path);
    let _ = std::fs::remove_file(&path);
    result
}

fn error(name: &str, text: &str) -> String {
    match generate(name, text) {
        Ok(_) => panic!("{name}: expected an error"),
        Err(e) => e,
    }
}

#[test]
fn the_base_spec_generates_and_opens_its_enum() {
    let module = generate("probe.yaml", BASE).expect("generates");
    assert_eq!((module.module.as_str(), module.provider.as_str()), ("probe", "probe"));
    assert!(module.notes.iter().any(|n| n.contains("opened 1 string enum")), "{:?}", module.notes);
    assert!(module.code.contains("pub static PROVIDER"));
}

#[test]
fn disagreeing_success_bodies_name_file_method_and_path() {
    let text = BASE.replace(
        r#"        "404": {description: missing"#,
        r#"        "202": {description: accepted, content: {application/json: {schema: {$ref: '#/components/schemas/Problem'}}}}
        "404": {description: missing"#,
    );
    let e = error("two-successes.yaml", &text);
    assert!(e.contains("two-successes.yaml") && e.contains("GET /jobs/{job_id}"), "{e}");
    assert!(e.contains("success responses disagree"), "{e}");
}

#[test]
fn mixed_error_bodies_and_default_are_normalised_and_reported() {
    let text = BASE.replace(
        r#"        "404": {description: missing"#,
        r#"        "429": {description: slow, content: {application/json: {schema: {$ref: '#/components/schemas/Job'}}}}
        default: {description: other}
        "404": {description: missing"#,
    );
    let module = generate("mixed.yaml", &text).expect("normalised, then generated");
    let notes = module.notes.join("\n");
    assert!(notes.contains("dropped `default`"), "{notes}");
    assert!(notes.contains("error bodies differ"), "{notes}");
}

#[test]
fn a_generator_failure_names_the_operation() {
    // progenitor refuses multipart bodies.
    let text = BASE.replace(
        "      operationId: get_job\n",
        "      operationId: get_job\n      requestBody: {content: {multipart/form-data: {schema: {type: object, properties: {f: {type: string}}}}}}\n",
    );
    let e = error("multipart.yaml", &text);
    assert!(e.contains("multipart.yaml") && e.contains("GET /jobs/{job_id}"), "{e}");
}

#[test]
fn extension_mistakes_are_clear() {
    let cases = [
        ("no-ext.yaml", BASE.replace("x-taskpoll:", "x-other:"), "x-taskpoll: missing"),
        (
            "bad-op.yaml",
            BASE.replace("get: {operation: get_job", "get: {operation: get_jobs"),
            "no operation `get_jobs`",
        ),
        ("bad-param.yaml", BASE.replace("name: job_id}}", "name: id}}"), "has no path parameter `id`"),
        ("bad-phase.yaml", BASE.replace("succeeded: [done]", "finished: [done]"), "unknown phase `finished`"),
        ("bad-pointer.yaml", BASE.replace("status: /state", "status: state"), "JSON pointer"),
        ("dup-status.yaml", BASE.replace("succeeded: [done]", "succeeded: [done, WAITING]"), "two phases"),
        ("bad-key.yaml", BASE.replace("  phases:", "  colour: blue\n  phases:"), "unknown key `colour`"),
        ("bad-duration.yaml", BASE.replace("  phases:", "  poll: {polite: {initial-delay: soon}}\n  phases:"), "soon"),
        ("v31.yaml", BASE.replace("openapi: 3.0.3", "openapi: 3.1.0"), "v31.yaml"),
        ("not-yaml.yaml", "openapi: [".to_string(), "not YAML"),
        (
            "bad-scheme.yaml",
            BASE.replace(
                "components:\n",
                "security: [{K: []}]\ncomponents:\n  securitySchemes: {K: {type: apiKey, in: query, name: key}}\n",
            ),
            "only `in: header` api keys",
        ),
    ];
    for (name, text, needle) in cases {
        let e = error(name, &text);
        assert!(e.contains(name), "{name}: the message names the file: {e}");
        assert!(e.contains(needle), "{name}: expected `{needle}` in: {e}");
    }
}

#[test]
fn get_id_allow_takes_only_the_characters_refused_by_default() {
    let with = |id: &str| BASE.replace("id: {in: path, name: job_id}", id);
    let e = error("allow-x.yaml", &with(r#"id: {in: path, name: job_id, allow: ["x"]}"#));
    assert!(e.contains("allow-x.yaml") && e.contains("get.id.allow") && e.contains("`x`"), "{e}");
    let e = error("allow-key.yaml", &with("id: {in: path, name: job_id, pattern: '.*'}"));
    assert!(e.contains("unknown key `get.id.pattern`"), "{e}");
    let module =
        generate("allow-ok.yaml", &with(r#"id: {in: path, name: job_id, allow: ["/", ";"]}"#)).expect("generates");
    assert!(module.code.contains(r#"id_allow: "/;""#), "the allow list reaches the provider data");
}
