//! The generator on specs it cannot take: every failure is an error naming
//! the spec file (and the key, or the method and path, at fault), never a bare
//! panic; and what it normalises it reports.
#![cfg(feature = "codegen")]

use std::path::PathBuf;

use taskpoll::codegen;

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

/// A valid `webhook` block for `BASE` (HMAC-SHA256 of the body, a separate secret).
const WEBHOOK: &str = "  webhook: {signature: {header: X-Sig, algorithm: hmac-sha256, message: [body]}, secret: {env: PROBE_SECRET}, payload: {id: /id, status: /state}}\n";

/// `BASE` with a `webhook` block.
fn with_webhook(block: &str) -> String {
    BASE.replace("  phases:", &format!("{block}  phases:"))
}

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

/// A generator panic (caught) on one thread never silences a panic on
/// another: the panic hook is wrapped once and consults a thread-local flag,
/// instead of being swapped to a silent one for the time of a generation.
#[test]
fn caught_generator_panics_do_not_silence_other_threads() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    const MARKER: &str = "taskpoll-codegen-test-marker";
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = seen.clone();
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if info.payload().downcast_ref::<&str>() == Some(&MARKER) {
            counter.fetch_add(1, Ordering::SeqCst);
        } else {
            previous(info);
        }
    }));
    // progenitor panics on JSON and multipart bodies together (`todo!()`).
    let text = BASE.replace(
        "      operationId: get_job\n",
        "      operationId: get_job\n      requestBody: {content: {application/json: {schema: {type: object}}, multipart/form-data: {schema: {type: object}}}}\n",
    );
    let rounds = 8;
    let generators: Vec<_> = (0..rounds)
        .map(|i| {
            let text = text.clone();
            std::thread::spawn(move || error(&format!("race-{i}.yaml"), &text))
        })
        .collect();
    let others: Vec<_> = (0..rounds).map(|_| std::thread::spawn(|| std::panic::panic_any(MARKER))).collect();
    for generator in generators {
        let e = generator.join().expect("the generator returns an error, it does not unwind");
        assert!(e.contains("progenitor cannot generate this spec"), "{e}");
    }
    for other in others {
        assert!(other.join().is_err());
    }
    assert_eq!(seen.load(Ordering::SeqCst), rounds, "every ordinary panic reached the hook");
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
        ("bad-phase.yaml", BASE.replace("succeeded: [done]", "finished: [done]"), "unknown field `finished`"),
        ("bad-pointer.yaml", BASE.replace("status: /state", "status: state"), "JSON pointer"),
        ("dup-status.yaml", BASE.replace("succeeded: [done]", "succeeded: [done, WAITING]"), "two phases"),
        ("bad-key.yaml", BASE.replace("  phases:", "  colour: blue\n  phases:"), "unknown field `colour`"),
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

/// A misspelt key anywhere in the extension fails with the file, the key's
/// path and the keys accepted there; it never falls back to a default.
#[test]
fn a_typo_anywhere_in_the_extension_names_the_path_and_the_accepted_keys() {
    let cases = [
        (
            "task-typo.yaml",
            BASE.replace("task: {status: /state}", "task: {status: /state, reslt: /out}"),
            "x-taskpoll.task",
            "unknown field `reslt`",
            "`result`",
        ),
        (
            "get-typo.yaml",
            BASE.replace("id: {in: path, name: job_id}}", "id: {in: path, name: job_id}, inptus: []}"),
            "x-taskpoll.get",
            "unknown field `inptus`",
            "`inputs`",
        ),
        (
            "poll-typo.yaml",
            BASE.replace("  phases:", "  poll: {polite: {intial-delay: 9s}}\n  phases:"),
            "x-taskpoll.poll.polite",
            "unknown field `intial-delay`",
            "`initial-delay`",
        ),
        (
            "preset-typo.yaml",
            BASE.replace("  phases:", "  poll: {presets: {fast: {deadlin: 9s}}}\n  phases:"),
            "x-taskpoll.poll.presets.fast",
            "unknown field `deadlin`",
            "`deadline`",
        ),
        (
            "id-typo.yaml",
            BASE.replace("id: {in: path, name: job_id}", "id: {in: path, name: job_id, pattern: '.*'}"),
            "x-taskpoll.get.id",
            "unknown field `pattern`",
            "`allow`",
        ),
        (
            "many-typo.yaml",
            BASE.replace("  phases:", "  many: {operation: get_job, ids: job_id, items: /x, id: /id, max_ids: 3}\n  phases:"),
            "x-taskpoll.many",
            "unknown field `max_ids`",
            "`max-ids`",
        ),
        (
            "rule-typo.yaml",
            BASE.replace("  phases:", "  rules: [{when: {/state: done}, phase: failed, eror: /x}]\n  phases:"),
            "x-taskpoll.rules[0]",
            "unknown field `eror`",
            "`error`",
        ),
        (
            "rate-typo.yaml",
            BASE.replace("  phases:", "  rate: {per-second: 2, brust: 4}\n  phases:"),
            "x-taskpoll.rate",
            "unknown field `brust`",
            "`burst`",
        ),
        (
            "jitter-typo.yaml",
            BASE.replace("  phases:", "  poll: {polite: {jitter: fulll}}\n  phases:"),
            "x-taskpoll.poll.polite.jitter",
            "unknown variant `fulll`",
            "`equal`",
        ),
        (
            "location-typo.yaml",
            BASE.replace("id: {in: path,", "id: {in: header,"),
            "x-taskpoll.get.id.in",
            "unknown variant `header`",
            "`body`",
        ),
        (
            "rule-phase-typo.yaml",
            BASE.replace("  phases:", "  rules: [{when: {/state: done}, phase: done}]\n  phases:"),
            "x-taskpoll.rules[0].phase",
            "unknown variant `done`",
            "`succeeded`",
        ),
        (
            "allow-typo.yaml",
            BASE.replace("id: {in: path, name: job_id}", r#"id: {in: path, name: job_id, allow: ["x"]}"#),
            "x-taskpoll.get.id.allow",
            "unknown variant `x`",
            "`/`",
        ),
        (
            "missing.yaml",
            BASE.replace("  task: {status: /state}\n", ""),
            "x-taskpoll",
            "missing field `task`",
            "task",
        ),
        (
            "misplaced-env.yaml",
            BASE.replace(r#"servers: [{url: "https://probe.invalid/api"}]"#, r#"servers: [{url: "https://probe.invalid/api", x-taskpoll-env: PROBE_URL}]"#),
            "servers[0].x-taskpoll-env",
            "misplaced key `x-taskpoll-env`",
            "/servers/0/variables/*/x-taskpoll-env",
        ),
        (
            "scheme-env-typo.yaml",
            BASE.replace(
                "components:\n",
                "security: [{K: []}]\ncomponents:\n  securitySchemes: {K: {type: http, scheme: bearer, x-taskpoll-evn: PROBE_TOKEN}}\n",
            ),
            "components.securitySchemes.K.x-taskpoll-evn",
            "misplaced key `x-taskpoll-evn`",
            "/components/securitySchemes/*/x-taskpoll-env",
        ),
        (
            "basic-env-typo.yaml",
            BASE.replace(
                "components:\n",
                "security: [{B: []}]\ncomponents:\n  securitySchemes: {B: {type: http, scheme: basic, x-taskpoll-env: {username: U, pasword: P}}}\n",
            ),
            "components.securitySchemes.B.x-taskpoll-env",
            "unknown field `pasword`",
            "`password`",
        ),
        (
            "webhook-signature-typo.yaml",
            with_webhook(&WEBHOOK.replace("algorithm:", "algoritm:")),
            "x-taskpoll.webhook.signature",
            "unknown field `algoritm`",
            "`algorithm`",
        ),
        (
            "webhook-algorithm-typo.yaml",
            with_webhook(&WEBHOOK.replace("hmac-sha256", "hmac-sha265")),
            "x-taskpoll.webhook.signature.algorithm",
            "unknown variant `hmac-sha265`",
            "`hmac-sha256`",
        ),
        (
            "webhook-part-typo.yaml",
            with_webhook(&WEBHOOK.replace("message: [body]", "message: [bdy]")),
            "x-taskpoll.webhook.signature.message",
            "unknown variant `bdy`",
            "`timestamp`",
        ),
        (
            "webhook-payload-typo.yaml",
            with_webhook(&WEBHOOK.replace("status: /state}", "status: /state, resut: /out}")),
            "x-taskpoll.webhook.payload",
            "unknown field `resut`",
            "`result`",
        ),
        (
            "webhook-secret-typo.yaml",
            with_webhook(&WEBHOOK.replace("{env: PROBE_SECRET}", "{evn: PROBE_SECRET}")),
            "x-taskpoll.webhook.secret",
            "unknown field `evn`",
            "`env`",
        ),
        (
            "webhook-key-typo.yaml",
            with_webhook(&WEBHOOK.replace("secret:", "poll-facter: 2, secret:")),
            "x-taskpoll.webhook",
            "unknown field `poll-facter`",
            "`poll-factor`",
        ),
        (
            "webhook-encoding-typo.yaml",
            with_webhook(&WEBHOOK.replace("message: [body]", "message: [body], encoding: hexa")),
            "x-taskpoll.webhook.signature.encoding",
            "unknown variant `hexa`",
            "`base64`",
        ),
    ];
    for (name, text, path, what, accepted) in cases {
        let e = error(name, &text);
        assert!(e.starts_with(name), "{name}: the message starts with the file: {e}");
        assert!(e.contains(path), "{name}: expected the path `{path}` in: {e}");
        assert!(e.contains(what), "{name}: expected `{what}` in: {e}");
        assert!(e.contains(accepted), "{name}: expected the accepted `{accepted}` in: {e}");
    }
}

#[test]
fn get_id_allow_takes_only_the_characters_refused_by_default() {
    let with = |id: &str| BASE.replace("id: {in: path, name: job_id}", id);
    let module =
        generate("allow-ok.yaml", &with(r#"id: {in: path, name: job_id, allow: ["/", ";"]}"#)).expect("generates");
    assert!(module.code.contains(r#"id_allow: "/;""#), "the allow list reaches the provider data");
}

/// Two specs of one build may not declare the same provider name (their
/// modules under `generated::` would clash).
#[test]
fn two_specs_with_one_name_fail_the_build() {
    let dir = std::env::temp_dir().join(format!("taskpoll-codegen-dup-{}", std::process::id()));
    let (specs, out) = (dir.join("specs"), dir.join("out"));
    std::fs::create_dir_all(&specs).expect("spec dir");
    std::fs::create_dir_all(&out).expect("out dir");
    std::fs::write(specs.join("a.yaml"), BASE).expect("write");
    std::fs::write(specs.join("b.yaml"), BASE).expect("write");
    let e = codegen::Build::new().spec_dir("specs").generate(&dir, &out).unwrap_err();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(e.contains("b.yaml") && e.contains("`probe` is taken"), "{e}");
}

#[test]
fn a_webhook_block_alone_declares_a_providers_scheme() {
    let module = generate("hooked.yaml", &with_webhook(WEBHOOK)).expect("generates");
    for wanted in ["WebhookSpecFields", "\"X-Sig\"", "SignatureAlgorithm::HmacSha256", "Some(\"PROBE_SECRET\")"] {
        assert!(module.code.contains(wanted), "{wanted} in the descriptor");
    }
}

/// What the block's types cannot say: a scheme that could be forged or
/// replayed, one secret, numbers that fit.
#[test]
fn webhook_block_mistakes_are_clear() {
    let cases = [
        ("plain-no-secret.yaml", WEBHOOK.replace("hmac-sha256", "sha256"), "must include `secret`"),
        ("hmac-with-secret.yaml", WEBHOOK.replace("[body]", "[body, secret]"), "must not be a part of the message"),
        (
            "no-body.yaml",
            WEBHOOK.replace("algorithm: hmac-sha256, message: [body]", "algorithm: sha1, message: [secret]"),
            "must include `body`",
        ),
        (
            "unsigned-timestamp.yaml",
            WEBHOOK.replace("secret: {", "timestamp: {header: X-Ts, tolerance: 5m}, secret: {"),
            "does not sign it",
        ),
        ("timestamp-missing.yaml", WEBHOOK.replace("[body]", "[body, timestamp]"), "`webhook.timestamp` is missing"),
        (
            "two-secrets.yaml",
            WEBHOOK.replace("{env: PROBE_SECRET}", "{env: PROBE_SECRET, scheme: K}"),
            "exactly one of",
        ),
        ("no-scheme.yaml", WEBHOOK.replace("{env: PROBE_SECRET}", "{scheme: K}"), "no security scheme `K`"),
        (
            "status-and-derived.yaml",
            WEBHOOK.replace("status: /state}", "status: /state, http-status: /code}"),
            "for payloads without one",
        ),
        ("slow-factor.yaml", WEBHOOK.replace("secret:", "poll-factor: 0.5, secret:"), "`webhook.poll-factor`"),
        ("grace-alone.yaml", WEBHOOK.replace("secret:", "grace: 5s, secret:"), "`result-only-by-webhook: true`"),
        ("bad-header.yaml", WEBHOOK.replace("X-Sig", "'X Sig'"), "is not a header name"),
    ];
    for (name, block, wanted) in cases {
        let e = error(name, &with_webhook(&block));
        assert!(e.starts_with(name) && e.contains(wanted), "{name}: expected `{wanted}` in: {e}");
    }
}
