//! A snapshot of the code the generator writes for each spec in `specs/`,
//! made by the very same `taskpoll::codegen` module as the build (build.rs
//! includes it by path), so a change of spec, normaliser or progenitor
//! version shows up as a reviewable diff in `snapshots/`.
#![cfg(feature = "codegen")]

use std::path::Path;

use taskpoll::codegen;

macro_rules! snapshot {
    ($name:expr, $value:expr) => {
        crate::support::snapshot_settings().bind(|| insta::assert_snapshot!($name, $value))
    };
}

fn spec_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(codegen::SPEC_DIR)
}

/// One snapshot per spec: the normaliser's notes (what it changed; the build
/// does not print them), then the generated code. A spec with no snapshot yet
/// (a provider just added) is reported, not failed: record it with
/// `INSTA_UPDATE=always cargo test --all-features --test reads generated_code::` and review it.
#[test]
fn generated_code_per_spec() {
    let specs = codegen::spec_files(&spec_dir()).expect("specs/ is readable");
    assert!(!specs.is_empty(), "no spec in {}", spec_dir().display());
    let snapshots = Path::new(env!("CARGO_MANIFEST_DIR")).join("snapshots");
    for path in specs {
        let generated = codegen::generate_module(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let name = format!("generated_{}", generated.module);
        let recording = std::env::var("INSTA_UPDATE").is_ok_and(|v| v == "always");
        if !snapshots.join(format!("{name}.snap")).exists() && !recording {
            eprintln!("note: no snapshot of the code generated for {} yet; record it to review it", path.display());
            continue;
        }
        let notes: Vec<String> = generated.notes.iter().map(|n| format!("// {n}")).collect();
        snapshot!(name, format!("// normaliser notes:\n{}\n\n{}", notes.join("\n"), generated.code));
    }
}

/// Generation is deterministic: two runs give the same text.
#[test]
fn generation_is_deterministic() {
    for path in codegen::spec_files(&spec_dir()).expect("specs/ is readable") {
        let first = codegen::generate_module(&path).expect("generates");
        let second = codegen::generate_module(&path).expect("generates");
        assert!(first.code == second.code, "{}: two generations differ", first.module);
    }
}

/// The module under `generated::` is the provider's name.
#[test]
fn modules_are_named_after_their_providers() {
    let path = spec_dir().join("cloudinary-analysis.yaml");
    let generated = codegen::generate_module(&path).expect("generates");
    assert_eq!((generated.provider.as_str(), generated.module.as_str()), ("cloudinary", "cloudinary"));
    assert!(generated.code.contains(r#"module: "cloudinary""#));
}

/// `specs/x-taskpoll.schema.json` is the JSON Schema of the extension's types,
/// for editors. Refresh it with `TASKPOLL_WRITE_SCHEMA=1 cargo test --all-features --test reads generated_code::`.
#[test]
fn the_published_json_schema_matches_the_extension_types() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("specs/x-taskpoll.schema.json");
    let schema = serde_json::to_string_pretty(&codegen::extension::json_schema()).expect("serialises") + "\n";
    if std::env::var_os("TASKPOLL_WRITE_SCHEMA").is_some() {
        std::fs::write(&file, &schema).expect("writes the schema");
    }
    let published = std::fs::read_to_string(&file).unwrap_or_default();
    assert!(published == schema, "{} is stale: refresh it (see this test's doc)", file.display());
}
