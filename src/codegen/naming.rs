//! The Rust names progenitor (typify's `sanitize`) gives spec names, so the
//! glue calls the generated builders by their real names.

/// Identifier case, as progenitor names things.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Case {
    /// Methods and setters (`get_task`, `task_id`).
    Snake,
    /// Types (`TaskStatusResponse`).
    Pascal,
}

/// The Rust name progenitor gives a spec name.
pub(super) fn rust_name(input: &str, case: Case) -> String {
    use heck::{ToPascalCase, ToSnakeCase};
    let to_case = |s: &str| match case {
        Case::Snake => s.to_snake_case(),
        Case::Pascal => s.to_pascal_case(),
    };
    let cleaned: String =
        input.replace('\'', "").chars().map(|c| if c.is_alphanumeric() || c == '_' { c } else { '-' }).collect();
    let out = match input {
        "+1" => "plus1".to_string(),
        "-1" => "minus1".to_string(),
        _ => to_case(&cleaned),
    };
    let out = match out.chars().next() {
        None => to_case("x"),
        Some(c) if c.is_alphabetic() || c == '_' => out,
        Some(_) => format!("_{out}"),
    };
    if KEYWORDS.contains(&out.as_str()) { format!("{out}_") } else { out }
}

const KEYWORDS: &[&str] = &[
    "_", "abstract", "as", "async", "await", "become", "box", "break", "const", "continue", "crate", "do", "dyn",
    "else", "enum", "extern", "false", "final", "fn", "for", "gen", "if", "impl", "in", "let", "loop", "macro",
    "match", "mod", "move", "mut", "override", "priv", "pub", "ref", "return", "Self", "self", "static", "struct",
    "super", "trait", "true", "try", "type", "typeof", "unsafe", "unsized", "use", "virtual", "where", "while",
    "yield",
];

/// Whether `s` is a snake_case identifier (preset names).
pub(super) fn is_snake_ident(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// The module under `generated::` for a provider: its name, with `-` as `_`
/// (provider names are lower-case ascii letters, digits, `-` and `_`).
pub(super) fn module_name(provider: &str) -> String {
    let module = provider.replace('-', "_");
    let starts_with_letter = module.chars().next().is_some_and(|c| c.is_ascii_lowercase() || c == '_');
    let module = if starts_with_letter { module } else { format!("_{module}") };
    if KEYWORDS.contains(&module.as_str()) { format!("{module}_") } else { module }
}
