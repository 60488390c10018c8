//! The operations the extension may name, read from the typed `openapiv3`
//! model of the spec as written (before normalisation, so documented
//! responses and examples are the author's).

use std::collections::BTreeMap;

use openapiv3::{
    OpenAPI, Parameter, ParameterSchemaOrContent, ReferenceOr, Schema, SchemaKind, SecurityRequirement, Type,
};

use super::naming::{Case, rust_name};

/// Where a parameter goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ParamLocation {
    /// `in: path`.
    Path,
    /// `in: query`.
    Query,
    /// `in: header`.
    Header,
    /// `in: cookie`.
    Cookie,
}

/// The Rust type a parameter's generated setter takes, as far as the glue cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ParamType {
    /// `i64`.
    Integer,
    /// `f64`.
    Number,
    /// `bool`.
    Boolean,
    /// `Vec<String>` (array query parameters).
    Array,
    /// `String` (anything else).
    String,
}

/// One parameter.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Param {
    /// Where it goes.
    pub location: ParamLocation,
    /// Its type.
    pub ty: ParamType,
}

/// One documented response.
#[derive(Debug, Clone, Default)]
pub(crate) struct DocumentedResponse {
    /// The component schema of its JSON body, when it names one.
    pub schema: Option<String>,
    /// Its documented examples: (name, JSON text), by name, then `example`.
    pub examples: Vec<(String, String)>,
}

/// One operation of the spec.
#[derive(Debug, Clone)]
pub(crate) struct Operation {
    /// HTTP method, lower case.
    pub method: String,
    /// Path template.
    pub path: String,
    /// Parameters by name (path-level and operation-level).
    pub params: BTreeMap<String, Param>,
    /// The Rust type name of the JSON request body.
    pub body_type: Option<String>,
    /// The JSON request body's property names.
    pub body_properties: Vec<String>,
    /// Documented responses by status (`200`, `4XX`, `default`).
    pub responses: BTreeMap<String, DocumentedResponse>,
    /// Security alternatives (each a list of scheme names), if the operation
    /// or the document declares any.
    pub security: Option<Vec<Vec<String>>>,
}

/// Every operation, by operationId.
#[derive(Debug, Clone)]
pub(crate) struct Operations(pub BTreeMap<String, Operation>);

impl Operations {
    /// Reads the operations of a document.
    pub(crate) fn read(api: &OpenAPI, file: &str) -> Result<Self, String> {
        let mut ops = BTreeMap::new();
        for (path, item) in api.paths.iter() {
            let ReferenceOr::Item(item) = item else {
                return Err(format!("{file}: {path}: path item references are not supported"));
            };
            for (method, op) in item.iter() {
                let where_ = format!("{file}: {} {path}", method.to_uppercase());
                let id = op
                    .operation_id
                    .as_deref()
                    .ok_or_else(|| format!("{where_}: every operation needs an operationId"))?;
                if id.trim().is_empty() {
                    return Err(format!("{where_}: the operationId is empty"));
                }
                let mut params = BTreeMap::new();
                for param in item.parameters.iter().chain(op.parameters.iter()) {
                    let param =
                        resolve_parameter(api, param).ok_or_else(|| format!("{where_}: unresolved parameter"))?;
                    let data = param.parameter_data_ref();
                    if data.name.trim().is_empty() {
                        return Err(format!("{where_}: a parameter has no name"));
                    }
                    let location = match param {
                        Parameter::Path { .. } => ParamLocation::Path,
                        Parameter::Query { .. } => ParamLocation::Query,
                        Parameter::Header { .. } => ParamLocation::Header,
                        Parameter::Cookie { .. } => ParamLocation::Cookie,
                    };
                    let ty = match &data.format {
                        ParameterSchemaOrContent::Schema(schema) => {
                            resolve_schema(api, schema).map_or(ParamType::String, param_type)
                        }
                        ParameterSchemaOrContent::Content(_) => ParamType::String,
                    };
                    params.insert(data.name.clone(), Param { location, ty });
                }
                let body = match &op.request_body {
                    Some(ReferenceOr::Item(body)) => {
                        body.content.get("application/json").and_then(|m| m.schema.as_ref())
                    }
                    Some(ReferenceOr::Reference { reference }) => {
                        let name = reference.trim_start_matches("#/components/requestBodies/");
                        api.components
                            .as_ref()
                            .and_then(|c| c.request_bodies.get(name))
                            .and_then(ReferenceOr::as_item)
                            .and_then(|b| b.content.get("application/json"))
                            .and_then(|m| m.schema.as_ref())
                    }
                    None => None,
                };
                // progenitor names an inline body schema after the operation (`<operationId>-body`).
                let body_type = body.map(|schema| {
                    let name = match schema {
                        ReferenceOr::Reference { reference } => {
                            reference.trim_start_matches("#/components/schemas/").to_string()
                        }
                        ReferenceOr::Item(_) => format!("{id}-body"),
                    };
                    rust_name(&name, Case::Pascal)
                });
                let body_properties = body
                    .and_then(|schema| resolve_schema(api, schema))
                    .map(|schema| match &schema.schema_kind {
                        SchemaKind::Type(Type::Object(object)) => object.properties.keys().cloned().collect(),
                        _ => Vec::new(),
                    })
                    .unwrap_or_default();
                let mut responses = BTreeMap::new();
                let all = op.responses.default.iter().map(|r| ("default".to_string(), r));
                let all = all.chain(op.responses.responses.iter().map(|(status, r)| (status.to_string(), r)));
                for (status, response) in all {
                    let response = resolve_response(api, response)
                        .ok_or_else(|| format!("{where_}: response {status}: unresolved reference"))?;
                    let mut documented = DocumentedResponse::default();
                    if let Some(media) = response.content.get("application/json") {
                        if let Some(ReferenceOr::Reference { reference }) = &media.schema {
                            documented.schema = reference.strip_prefix("#/components/schemas/").map(str::to_string);
                        }
                        let mut named: Vec<(String, String)> = media
                            .examples
                            .iter()
                            .filter_map(|(name, example)| {
                                let example = resolve_example(api, example)?;
                                example.value.as_ref().map(|value| (name.clone(), value.to_string()))
                            })
                            .collect();
                        named.sort();
                        documented.examples = named;
                        if let Some(value) = &media.example {
                            documented.examples.push(("example".into(), value.to_string()));
                        }
                    }
                    responses.insert(status, documented);
                }
                let security = op.security.as_ref().or(api.security.as_ref()).map(|s| alternatives(s));
                let previous = ops.insert(
                    id.to_string(),
                    Operation {
                        method: method.to_string(),
                        path: path.clone(),
                        params,
                        body_type,
                        body_properties,
                        responses,
                        security,
                    },
                );
                if previous.is_some() {
                    return Err(format!("{where_}: operationId `{id}` is used twice"));
                }
            }
        }
        Ok(Self(ops))
    }

    /// The operation with this id.
    pub(crate) fn get(&self, id: &str) -> Result<&Operation, String> {
        self.0.get(id).ok_or_else(|| {
            let known: Vec<&str> = self.0.keys().map(String::as_str).collect();
            format!("no operation `{id}` in `paths` (operations: {})", known.join(", "))
        })
    }
}

fn param_type(schema: &Schema) -> ParamType {
    match &schema.schema_kind {
        SchemaKind::Type(Type::Integer(_)) => ParamType::Integer,
        SchemaKind::Type(Type::Number(_)) => ParamType::Number,
        SchemaKind::Type(Type::Boolean(_)) => ParamType::Boolean,
        SchemaKind::Type(Type::Array(_)) => ParamType::Array,
        _ => ParamType::String,
    }
}

/// Scheme names of each alternative, sorted within one alternative.
fn alternatives(requirements: &[SecurityRequirement]) -> Vec<Vec<String>> {
    requirements
        .iter()
        .map(|alternative| {
            let mut names: Vec<String> = alternative.keys().cloned().collect();
            names.sort();
            names
        })
        .collect()
}

fn resolve_parameter<'a>(api: &'a OpenAPI, param: &'a ReferenceOr<Parameter>) -> Option<&'a Parameter> {
    match param {
        ReferenceOr::Item(p) => Some(p),
        ReferenceOr::Reference { reference } => {
            api.components.as_ref()?.parameters.get(reference.strip_prefix("#/components/parameters/")?)?.as_item()
        }
    }
}

fn resolve_schema<'a>(api: &'a OpenAPI, schema: &'a ReferenceOr<Schema>) -> Option<&'a Schema> {
    match schema {
        ReferenceOr::Item(s) => Some(s),
        ReferenceOr::Reference { reference } => {
            api.components.as_ref()?.schemas.get(reference.strip_prefix("#/components/schemas/")?)?.as_item()
        }
    }
}

fn resolve_response<'a>(
    api: &'a OpenAPI,
    response: &'a ReferenceOr<openapiv3::Response>,
) -> Option<&'a openapiv3::Response> {
    match response {
        ReferenceOr::Item(r) => Some(r),
        ReferenceOr::Reference { reference } => {
            api.components.as_ref()?.responses.get(reference.strip_prefix("#/components/responses/")?)?.as_item()
        }
    }
}

fn resolve_example<'a>(
    api: &'a OpenAPI,
    example: &'a ReferenceOr<openapiv3::Example>,
) -> Option<&'a openapiv3::Example> {
    match example {
        ReferenceOr::Item(e) => Some(e),
        ReferenceOr::Reference { reference } => {
            api.components.as_ref()?.examples.get(reference.strip_prefix("#/components/examples/")?)?.as_item()
        }
    }
}
