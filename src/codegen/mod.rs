//! The generator: turns provider specs (OpenAPI 3.0.3 plus the `x-taskpoll`
//! extension, see `specs/README.md`) into typed client modules and provider
//! descriptors ([`crate::spec::ProviderSpec`]).
//!
//! taskpoll's own `build.rs` includes this module by path; a crate that
//! declares its own providers calls it from its build script, with taskpoll
//! (feature `codegen`) as a build-dependency:
//!
//! ```no_run
//! // In `fn main` of build.rs, in a crate with `specs/acme.yaml`:
//! taskpoll::codegen::Build::new().spec_dir("specs").run();
//! ```
//!
//! ```ignore
//! // src/lib.rs of that crate
//! pub mod generated {
//!     include!(concat!(env!("OUT_DIR"), "/providers.rs"));
//! }
//! // generated::acme::PROVIDER is the descriptor; register it with
//! // taskpoll::ClientBuilder::register (or taskpoll::spec::register).
//! ```
//!
//! One job per file: `load` reads a spec, `normalise` rewrites what
//! progenitor cannot take, `openapi` reads the operations from the typed
//! `openapiv3` model, [`extension`] parses `x-taskpoll` (its value types in
//! `values`; durations in `duration`, the grammar the command line
//! shares), `check` checks it against the document, `naming`
//! gives the Rust names progenitor uses, `progenitor_run` runs progenitor and
//! `emit` writes the descriptor and glue with `quote!`.

mod check;
mod duration;
mod emit;
pub mod extension;
mod load;
mod naming;
mod normalise;
mod openapi;
mod progenitor_run;
mod values;

use std::path::{Path, PathBuf};

/// The folder of taskpoll's own provider specs, relative to the package root.
pub const SPEC_DIR: &str = "specs";
/// Made-up provider specs used by taskpoll's tests (feature `fixture-provider`).
pub const FIXTURE_SPEC_DIR: &str = "tests/specs";
/// The file, in `OUT_DIR`, that declares one module per provider and `ALL`.
pub const INDEX_FILE: &str = "providers.rs";

/// One generated provider module.
#[derive(Debug, Clone)]
pub struct GeneratedModule {
    /// Rust module name under `generated::`: the provider name in snake case.
    pub module: String,
    /// The provider name used in task references (`x-taskpoll.name`).
    pub provider: String,
    /// The formatted Rust source.
    pub code: String,
    /// What the normaliser changed, one line each (recorded in the
    /// generated-code snapshots, not printed by the build).
    pub notes: Vec<String>,
}

/// The `*.yaml` / `*.yml` files of a folder, sorted. A missing folder is empty.
pub fn spec_files(dir: &Path) -> Result<Vec<PathBuf>, String> {
    if !dir.exists() {
        return Ok(Vec::new());
    }
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
        .collect();
    files.sort();
    Ok(files)
}

/// Reads, checks, normalises and generates one spec.
pub fn generate_module(spec_path: &Path) -> Result<GeneratedModule, String> {
    let loaded = load::load(spec_path)?;
    let file = loaded.file.as_str();
    let mut doc = loaded.doc.clone();
    check::check_placement(&loaded.doc).map_err(|e| format!("{file}: {e}"))?;
    let ext = extension::Extension::read(&loaded.doc).map_err(|e| format!("{file}: {e}"))?;
    let mut notes = Vec::new();
    normalise::open_string_enums(&mut doc, file, &mut notes);
    normalise::normalise_responses(&mut doc, file, &mut notes)?;
    let reads: Vec<&str> =
        std::iter::once(ext.get.operation.as_str()).chain(ext.many.as_ref().map(|m| m.operation.as_str())).collect();
    let answer_api: openapiv3::OpenAPI = serde_json::from_value(normalise::answer_document(&doc, &reads))
        .map_err(|e| format!("{file}: not an OpenAPI 3.0 document: {e}"))?;
    let api: openapiv3::OpenAPI =
        serde_json::from_value(doc).map_err(|e| format!("{file}: not an OpenAPI 3.0 document: {e}"))?;
    let original: openapiv3::OpenAPI =
        serde_json::from_value(loaded.doc).map_err(|e| format!("{file}: not an OpenAPI 3.0 document: {e}"))?;
    let ops = openapi::Operations::read(&original, file)?;
    let provider = ext.resolve(&original, &ops).map_err(|e| format!("{file}: x-taskpoll: {e}"))?;

    let mut generated = progenitor_run::generate(&api, file)?;
    let answer = progenitor_run::generate(&answer_api, file)?;
    generated.items.extend(emit::provider_items(&provider, &ops, answer));
    Ok(GeneratedModule {
        module: provider.module.clone(),
        provider: provider.name.clone(),
        code: prettyplease::unparse(&generated),
        notes,
    })
}

/// The index file: one `pub mod` per provider (named after it) that includes
/// its generated file, and `ALL`, every provider of the crate.
pub fn index(modules: &[GeneratedModule]) -> String {
    prettyplease::unparse(&emit::index(modules))
}

/// What a build script runs: every spec of the configured folders into
/// `OUT_DIR` (one file per provider plus [`INDEX_FILE`]).
#[derive(Debug, Clone, Default)]
pub struct Build {
    dirs: Vec<PathBuf>,
}

impl Build {
    /// A build with no spec folder yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a folder of specs (`*.yaml`, `*.yml`), relative to the package
    /// root (`CARGO_MANIFEST_DIR`) unless absolute.
    pub fn spec_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.dirs.push(dir.into());
        self
    }

    /// Generates into `out_dir`, printing `cargo:rerun-if-changed` lines.
    /// Returns the generated modules.
    pub fn generate(&self, root: &Path, out_dir: &Path) -> Result<Vec<GeneratedModule>, String> {
        let mut modules: Vec<GeneratedModule> = Vec::new();
        for dir in &self.dirs {
            let dir = root.join(dir);
            println!("cargo:rerun-if-changed={}", dir.display());
            for spec in spec_files(&dir)? {
                println!("cargo:rerun-if-changed={}", spec.display());
                let generated = generate_module(&spec)?;
                if let Some(other) = modules.iter().find(|m| m.module == generated.module) {
                    return Err(format!(
                        "{}: the provider name `{}` is taken (by `{}`)",
                        spec.display(),
                        generated.provider,
                        other.provider
                    ));
                }
                let file = out_dir.join(format!("{}.rs", generated.module));
                std::fs::write(&file, &generated.code).map_err(|e| format!("cannot write {}: {e}", file.display()))?;
                modules.push(generated);
            }
        }
        let file = out_dir.join(INDEX_FILE);
        std::fs::write(&file, index(&modules)).map_err(|e| format!("cannot write {}: {e}", file.display()))?;
        Ok(modules)
    }

    /// [`Self::generate`] for a build script: reads `CARGO_MANIFEST_DIR` and
    /// `OUT_DIR`, and on an error prints it and exits with status 1 (the
    /// message names the spec file and the key or operation at fault).
    pub fn run(&self) {
        let var = |name: &str| std::env::var_os(name).map(PathBuf::from);
        let (Some(root), Some(out_dir)) = (var("CARGO_MANIFEST_DIR"), var("OUT_DIR")) else {
            fail("run from a build script: CARGO_MANIFEST_DIR and OUT_DIR must be set")
        };
        if let Err(e) = self.generate(&root, &out_dir) {
            fail(&e)
        }
    }
}

fn fail(message: &str) -> ! {
    eprintln!("error: taskpoll codegen: {message}");
    // The one warning a build prints: the build failed because of a spec.
    println!("cargo:warning=taskpoll codegen: {message}");
    std::process::exit(1)
}
