//! Generates the typed client and the provider descriptor of every spec in `specs/`.

fn main() {
    taskpoll::codegen::Build::new().spec_dir("specs").run();
}
