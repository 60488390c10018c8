//! Rewrites what progenitor 0.15 cannot take (shared/notes/progenitor.md §7),
//! on the document before it is typed: closed string enums, `default` next to
//! 2xx responses, and error responses of several body types. Every change is
//! reported as a note (the generated-code snapshot records them).

use serde_json::{Map, Value};

/// The HTTP methods of a path item.
pub(super) const HTTP_METHODS: &[&str] = &["get", "put", "post", "delete", "options", "head", "patch", "trace"];

/// Turns every string `enum` into an open string, so that an unknown status
/// value (`REVOKED`, `queued`) parses instead of failing the whole response.
pub(super) fn open_string_enums(doc: &mut Value, file: &str, notes: &mut Vec<String>) {
    let mut opened = Vec::new();
    walk_schemas(doc, "#", &mut opened);
    if !opened.is_empty() {
        notes.push(format!(
            "{file}: opened {} string enum(s) (unknown values parse): {}",
            opened.len(),
            opened.join(", ")
        ));
    }
}

fn walk_schemas(value: &mut Value, at: &str, opened: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            let is_string = map.get("type").and_then(Value::as_str) == Some("string");
            if is_string && let Some(Value::Array(values)) = map.remove("enum") {
                let known: Vec<String> =
                    values.iter().map(|v| v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string())).collect();
                let description = map.get("description").and_then(Value::as_str).unwrap_or("").trim_end().to_string();
                let sep = if description.is_empty() { "" } else { "\n\n" };
                map.insert(
                    "description".into(),
                    Value::String(format!(
                        "{description}{sep}Known values: `{}`; any other value is kept as is.",
                        known.join("`, `")
                    )),
                );
                opened.push(at.to_string());
            }
            for (key, child) in map.iter_mut() {
                // Example values are data, not schemas.
                if key == "example" || key == "examples" || key.starts_with("x-") {
                    continue;
                }
                walk_schemas(child, &format!("{at}/{key}"), opened);
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter_mut().enumerate() {
                walk_schemas(child, &format!("{at}/{i}"), opened);
            }
        }
        _ => {}
    }
}

/// progenitor 0.15 allows one success body type and one error body type per
/// operation, and counts `default` as both (shared/notes/progenitor.md §7).
/// Checking this here also keeps progenitor from panicking on such specs.
pub(super) fn normalise_responses(doc: &mut Value, file: &str, notes: &mut Vec<String>) -> Result<(), String> {
    let components = doc.get("components").cloned().unwrap_or(Value::Null);
    let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) else {
        return Err(format!("{file}: no `paths`"));
    };
    for (path, item) in paths.iter_mut() {
        let Some(item) = item.as_object_mut() else { continue };
        for (method, op) in item.iter_mut() {
            if !HTTP_METHODS.contains(&method.as_str()) {
                continue;
            }
            let where_ = format!("{file}: {} {path}", method.to_uppercase());
            let Some(responses) = op.get_mut("responses").and_then(Value::as_object_mut) else {
                return Err(format!("{where_}: no responses"));
            };
            let has_2xx = responses.keys().any(|k| k.starts_with('2'));
            if has_2xx && responses.remove("default").is_some() {
                notes.push(format!("{where_}: dropped `default` next to 2xx responses (other statuses stay readable)"));
            }
            // Resolve `$ref: #/components/responses/X` so bodies can be compared.
            for response in responses.values_mut() {
                if let Some(name) =
                    response.get("$ref").and_then(Value::as_str).and_then(|r| r.strip_prefix("#/components/responses/"))
                {
                    let resolved = components.get("responses").and_then(|r| r.get(name)).cloned();
                    *response = resolved.ok_or_else(|| format!("{where_}: unknown response `{name}`"))?;
                }
            }
            let success: Vec<(String, String)> =
                responses.iter().filter(|(k, _)| k.starts_with('2')).map(|(k, r)| (k.clone(), body_class(r))).collect();
            let mut success_classes: Vec<&String> = success.iter().map(|(_, c)| c).collect();
            success_classes.sort();
            success_classes.dedup();
            if success_classes.len() > 1 {
                let list: Vec<String> = success.iter().map(|(k, c)| format!("{k}: {c}")).collect();
                return Err(format!(
                    "{where_}: success responses disagree ({}); give them one body type",
                    list.join(", ")
                ));
            }
            let mut error_classes: Vec<String> =
                responses.iter().filter(|(k, _)| !k.starts_with('2')).map(|(_, r)| body_class(r)).collect();
            error_classes.sort();
            error_classes.dedup();
            if error_classes.len() > 1 {
                for (_, response) in responses.iter_mut().filter(|(k, _)| !k.starts_with('2')) {
                    let Some(response) = response.as_object_mut() else { continue };
                    let mut content = Map::new();
                    content.insert(
                        "application/octet-stream".into(),
                        serde_json::json!({"schema": {"type": "string", "format": "binary"}}),
                    );
                    response.insert("content".into(), Value::Object(content));
                }
                notes.push(format!(
                    "{where_}: error bodies differ ({}); errors are read as raw bytes and decoded by status",
                    error_classes.join(" / ")
                ));
            }
        }
    }
    Ok(())
}

fn body_class(response: &Value) -> String {
    let Some(content) = response.get("content").and_then(Value::as_object) else { return "none".into() };
    if content.is_empty() {
        return "none".into();
    }
    match content.get("application/json").and_then(|c| c.get("schema")) {
        Some(schema) => format!(
            "json:{}",
            schema.get("$ref").and_then(Value::as_str).map(str::to_string).unwrap_or_else(|| schema.to_string())
        ),
        None => "raw".into(),
    }
}

/// The document of a provider's answer client: only the operations the
/// unified layer calls (`operations`: the status read and the batch read),
/// each answering every status with raw bytes, and only the components they
/// reference. Generated next to the typed client, it hands the unified layer
/// the status, headers and body of an answer as they are, so the layer
/// decodes each body once by the spec's pointers; the typed client keeps
/// decoding into the spec's types for users.
pub(super) fn answer_document(doc: &Value, operations: &[&str]) -> Value {
    let mut paths = Map::new();
    for (path, item) in doc.get("paths").and_then(Value::as_object).into_iter().flatten() {
        let Some(item) = item.as_object() else { continue };
        let mut kept = Map::new();
        for (key, op) in item {
            let id = op.get("operationId").and_then(Value::as_str);
            if HTTP_METHODS.contains(&key.as_str()) && id.is_some_and(|id| operations.contains(&id)) {
                let mut op = op.clone();
                op["responses"] = serde_json::json!({"default": {
                    "description": "Any answer, as raw bytes.",
                    "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}
                }});
                kept.insert(key.clone(), op);
            }
        }
        if kept.is_empty() {
            continue;
        }
        if let Some(parameters) = item.get("parameters") {
            kept.insert("parameters".into(), parameters.clone());
        }
        paths.insert(path.clone(), Value::Object(kept));
    }
    let paths = Value::Object(paths);
    let mut answer = serde_json::json!({"openapi": doc["openapi"], "info": doc["info"], "paths": paths});
    if let Some(components) = doc.get("components").and_then(Value::as_object) {
        answer["components"] = Value::Object(referenced_components(&answer["paths"], components));
    }
    answer
}

/// The components `from` references, directly or through other components.
fn referenced_components(from: &Value, components: &Map<String, Value>) -> Map<String, Value> {
    let mut kept: Map<String, Value> = Map::new();
    let mut pending = Vec::new();
    collect_refs(from, &mut pending);
    while let Some(reference) = pending.pop() {
        let Some((kind, name)) = reference.strip_prefix("#/components/").and_then(|r| r.split_once('/')) else {
            continue;
        };
        let Some(found) = components.get(kind).and_then(|k| k.get(name)) else { continue };
        let entry = kept.entry(kind.to_string()).or_insert_with(|| Value::Object(Map::new()));
        if let Some(entry) = entry.as_object_mut()
            && !entry.contains_key(name)
        {
            entry.insert(name.to_string(), found.clone());
            collect_refs(found, &mut pending);
        }
    }
    kept
}

fn collect_refs(value: &Value, into: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(reference)) = map.get("$ref") {
                into.push(reference.clone());
            }
            map.values().for_each(|v| collect_refs(v, into));
        }
        Value::Array(items) => items.iter().for_each(|v| collect_refs(v, into)),
        _ => {}
    }
}
