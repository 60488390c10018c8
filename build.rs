//! Generates one typed client module per provider spec into `OUT_DIR`.
//!
//! The generator is the library's own `taskpoll::codegen` module (feature
//! `codegen`), included here by path so the build script does not depend on
//! the crate it builds; crates that declare their own providers call the same
//! code as `taskpoll::codegen::Build`. See `src/codegen/mod.rs`.

#[path = "src/codegen/mod.rs"]
#[allow(dead_code, unreachable_pub)] // the library's API of the generator, partly unused and unexported here
mod codegen;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=src/codegen");
    let mut build = codegen::Build::new().spec_dir(codegen::SPEC_DIR);
    if std::env::var_os("CARGO_FEATURE_FIXTURE_PROVIDER").is_some() {
        build = build.spec_dir(codegen::FIXTURE_SPEC_DIR);
    }
    build.run();
}
