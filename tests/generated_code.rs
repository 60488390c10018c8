//! A snapshot of the code build.rs generates for each spec in `specs/`, made
//! by the very same functions and settings as the build (build.rs is included
//! here as a module), so a change of spec, normaliser or progenitor version
//! shows up as a reviewable diff in `snapshots/`.

#[path = "../build.rs"]
#[allow(dead_code, unused, clippy::all)]
mod codegen;

use std::path::Path;

macro_rules! snapshot {
    ($name:expr, $value:expr) => {
        insta::with_settings!({
            snapshot_path => "../snapshots",
            prepend_module_to_snapshot => false,
            omit_expression => true,
        }, {
            insta::assert_snapshot!($name, $value);
        })
    };
}

fn spec_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(codegen::SPEC_DIR)
}

/// One snapshot per spec: the normaliser's notes (the build's `cargo:warning`
/// lines), then the generated code. A spec with no snapshot yet (a provider
/// just added) is reported, not failed: record it with
/// `INSTA_UPDATE=always cargo test --test generated_code` and review it.
#[test]
fn generated_code_per_spec() {
    let specs = codegen::spec_files(&spec_dir()).expect("specs/ is readable");
    assert!(!specs.is_empty(), "no spec in {}", spec_dir().display());
    let snapshots = Path::new(env!("CARGO_MANIFEST_DIR")).join("snapshots");
    for path in specs {
        let generated = codegen::generate_module(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        // The build writes exactly this text to OUT_DIR; it must be valid Rust.
        syn::parse_file(&generated.code)
            .unwrap_or_else(|e| panic!("{}: generated code does not parse: {e}", generated.module));
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
