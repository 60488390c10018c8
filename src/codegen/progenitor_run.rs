//! Running progenitor: the one place where the generator settings live, and
//! its panics turned into errors that name the operation.

use std::cell::Cell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Once;

use openapiv3::{OpenAPI, PathItem, ReferenceOr};

/// The progenitor settings for every provider.
pub(super) fn settings() -> progenitor::GenerationSettings {
    let mut settings = progenitor::GenerationSettings::default();
    settings
        .with_interface(progenitor::InterfaceStyle::Builder)
        .with_tag(progenitor::TagStyle::Merged)
        .with_hooks(progenitor::HooksMode::Expected)
        .with_inner_type(quote::quote!(::taskpoll::__private::Ctx))
        .with_derive("PartialEq")
        .with_derive("schemars::JsonSchema");
    settings
}

/// The generated client of a (normalised) document, as a Rust file.
pub(super) fn generate(api: &OpenAPI, file: &str) -> Result<syn::File, String> {
    let tokens = run(api).map_err(|e| {
        let culprit = failing_operation(api);
        format!("{file}: progenitor cannot generate this spec{culprit}: {e}")
    })?;
    syn::parse2(tokens).map_err(|e| format!("{file}: progenitor's code does not parse: {e}"))
}

thread_local! {
    /// Set while this thread runs progenitor: its panics are errors here, not news.
    static QUIET: Cell<bool> = const { Cell::new(false) };
}

/// Runs progenitor, turning a panic into an error.
///
/// progenitor panics (without naming the operation) on some inputs that the
/// normaliser does not catch. The panic hook is wrapped once, for the whole
/// process, by one that stays silent only on a thread that is inside this
/// function and hands every other panic to the previous hook; it is never
/// swapped back, so concurrent generations (parallel tests) cannot race on it.
fn run(api: &OpenAPI) -> Result<proc_macro2::TokenStream, String> {
    static WRAP_HOOK: Once = Once::new();
    WRAP_HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !QUIET.with(Cell::get) {
                previous(info);
            }
        }));
    });
    let settings = settings();
    QUIET.with(|q| q.set(true));
    let result = catch_unwind(AssertUnwindSafe(|| progenitor::Generator::new(&settings).generate_tokens(api)));
    QUIET.with(|q| q.set(false));
    match result {
        Ok(Ok(tokens)) => Ok(tokens),
        Ok(Err(e)) => Err(e.to_string()),
        Err(panic) => Err(panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "generator panicked".into())),
    }
}

/// On failure, generates each operation alone to name the one that breaks.
fn failing_operation(api: &OpenAPI) -> String {
    for (path, item) in api.paths.iter() {
        let ReferenceOr::Item(item) = item else { continue };
        for (method, _) in item.iter() {
            let mut single = api.clone();
            let only = PathItem {
                parameters: item.parameters.clone(),
                get: (method == "get").then(|| item.get.clone()).flatten(),
                put: (method == "put").then(|| item.put.clone()).flatten(),
                post: (method == "post").then(|| item.post.clone()).flatten(),
                delete: (method == "delete").then(|| item.delete.clone()).flatten(),
                options: (method == "options").then(|| item.options.clone()).flatten(),
                head: (method == "head").then(|| item.head.clone()).flatten(),
                patch: (method == "patch").then(|| item.patch.clone()).flatten(),
                trace: (method == "trace").then(|| item.trace.clone()).flatten(),
                ..PathItem::default()
            };
            single.paths.paths.clear();
            single.paths.paths.insert(path.clone(), ReferenceOr::Item(only));
            if run(&single).is_err() {
                return format!(" (operation {} {path})", method.to_uppercase());
            }
        }
    }
    String::new()
}
