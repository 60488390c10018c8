//! Writes the provider descriptor, the security table and the glue that
//! calls the generated operations, as `syn` items built with `quote!`.
//!
//! The emitted code names only `::taskpoll::…` paths (taskpoll itself has
//! `extern crate self as taskpoll`), so the same code compiles in taskpoll and
//! in a crate that declares its own providers. What is the same for every
//! provider (the `ClientHooks` impl, `client`, `connect`) is written once in
//! `src/glue.rs` and invoked here as `::taskpoll::__generated_glue!()`.

use proc_macro2::{Ident, Literal, TokenStream};
use quote::quote;

use super::GeneratedModule;
use super::check::{Policy, Provider, SchemeKind};
use super::extension::{Jitter, Location, MessagePart, PhaseName, SignatureAlgorithm, SignatureEncoding};
use super::naming::{Case, rust_name};
use super::openapi::{Operations, ParamType};

/// The descriptor and glue items appended to a provider's generated module.
pub(super) fn provider_items(p: &Provider, ops: &Operations, answer: syn::File) -> Vec<syn::Item> {
    let tokens = provider_tokens(p, ops, answer);
    match syn::parse2::<syn::File>(tokens) {
        Ok(file) => file.items,
        // The tokens come from quote! above; a parse failure is a bug here, shown in the build's output.
        Err(e) => {
            let message = format!("taskpoll codegen: {e}");
            vec![syn::parse_quote!(compile_error!(#message);)]
        }
    }
}

/// An identifier; a name that is not one (progenitor would have refused the
/// spec already) becomes `invalid_identifier`, a compile error that names it.
fn ident(name: &str) -> Ident {
    syn::parse_str::<Ident>(name).unwrap_or_else(|_| Ident::new("invalid_identifier", proc_macro2::Span::call_site()))
}

fn opt<T: quote::ToTokens>(value: Option<T>) -> TokenStream {
    match value {
        Some(v) => quote!(Some(#v)),
        None => quote!(None),
    }
}

fn u64_lit(n: u64) -> Literal {
    Literal::u64_unsuffixed(n)
}

fn strs<S: AsRef<str>>(items: &[S]) -> TokenStream {
    let items = items.iter().map(AsRef::as_ref);
    quote!(&[#(#items),*])
}

fn phase(p: PhaseName) -> TokenStream {
    let variant = ident(&format!("{p:?}"));
    quote!(::taskpoll::Phase::#variant)
}

fn policy(p: &Policy) -> TokenStream {
    let (first, initial, max, offset, deadline) = (
        u64_lit(p.first_poll_ms),
        u64_lit(p.initial_delay_ms),
        u64_lit(p.max_delay_ms),
        u64_lit(p.offset_ms),
        u64_lit(p.deadline_ms),
    );
    let delays = p.delays_ms.iter().map(|d| u64_lit(*d));
    let factor = Literal::f64_unsuffixed(p.factor);
    let jitter = match p.jitter {
        Jitter::None => quote!(None),
        Jitter::Full => quote!(Full),
        Jitter::Equal => quote!(Equal),
    };
    quote! {
        ::taskpoll::__private::PolicySpecFields {
            first_poll_ms: #first,
            delays_ms: &[#(#delays),*],
            initial_delay_ms: #initial,
            factor: #factor,
            max_delay_ms: #max,
            jitter: ::taskpoll::spec::Jitter::#jitter,
            offset_ms: #offset,
            deadline_ms: #deadline,
        }.build()
    }
}

/// A call's argument from a task reference's text input: parsed for a typed parameter.
fn parse_input(ty: ParamType, name: &str) -> TokenStream {
    let parsed = |rust: TokenStream, what: &str| {
        let message = format!("`{name}` must be {what}, got {{value:?}}");
        quote! {
            value.parse::<#rust>().map_err(|_| {
                ::taskpoll::__private::progenitor_client::Error::InvalidRequest(::std::format!(#message))
            })?
        }
    };
    match ty {
        ParamType::Integer => parsed(quote!(i64), "i64"),
        ParamType::Number => parsed(quote!(f64), "f64"),
        ParamType::Boolean => parsed(quote!(bool), "bool"),
        ParamType::Array | ParamType::String => quote!(value.as_str()),
    }
}

fn provider_tokens(p: &Provider, ops: &Operations, answer: syn::File) -> TokenStream {
    let answer_items = answer.items;
    let ext = &p.ext;
    let pc = quote!(::taskpoll::__private::progenitor_client);
    let json = quote!(::taskpoll::__private::serde_json);

    // Security table.
    let schemes = p.schemes.iter().map(|s| {
        let name = &s.name;
        let kind = match &s.kind {
            SchemeKind::Basic => quote!(::taskpoll::spec::SchemeKind::Basic),
            SchemeKind::Bearer => quote!(::taskpoll::spec::SchemeKind::Bearer),
            SchemeKind::ApiKeyHeader(header) => quote!(::taskpoll::spec::SchemeKind::ApiKeyHeader(#header)),
        };
        let env = strs(&s.env);
        quote!(::taskpoll::__private::SchemeFields { name: #name, kind: #kind, env: #env }.build())
    });
    let mut security = Vec::new();
    for (id, op) in &ops.0 {
        let alternatives = op.security.iter().flatten().map(|alt| strs(alt));
        let alternatives = quote!(&[#(#alternatives),*]);
        security.push(quote!((#id, #alternatives)));
        // The hooks see progenitor's Rust name of the operation (`readJob` -> `read_job`).
        let rust_id = rust_name(id, Case::Snake);
        if &rust_id != id {
            security.push(quote!((#rust_id, #alternatives)));
        }
    }

    // The read glue.
    let get_op = ops.0.get(&ext.get.operation);
    let get_fn = ident(&rust_name(&ext.get.operation, Case::Snake));
    let body_type = get_op.and_then(|op| op.body_type.as_ref());
    let mut prelude = TokenStream::new();
    let mut after_call = TokenStream::new();
    if body_type.is_some() {
        prelude.extend(quote!(let mut body = #json::Map::new();));
    }
    let id_name = &ext.get.id.name;
    match ext.get.id.location {
        Location::Body => prelude.extend(quote! {
            body.insert(#id_name.to_string(), #json::Value::String(id.to_string()));
        }),
        Location::Path | Location::Query => {
            let setter = ident(&rust_name(id_name, Case::Snake));
            after_call.extend(quote!(call = call.#setter(id);));
        }
    }
    let input_arms = ext.get.inputs.iter().map(|input| {
        let name = &input.name;
        match input.location {
            Location::Body => quote! {
                #name => { body.insert(name.clone(), #json::Value::String(value.clone())); }
            },
            Location::Path | Location::Query => {
                let ty = get_op.and_then(|op| op.params.get(name)).map_or(ParamType::String, |p| p.ty);
                let setter = ident(&rust_name(name, Case::Snake));
                let value = parse_input(ty, name);
                quote!(#name => { call = call.#setter(#value); })
            }
        }
    });
    let send_body = body_type.map(|ty| {
        let ty = ident(ty);
        quote! {
            let body: answer::types::#ty = #json::from_value(#json::Value::Object(body))
                .map_err(|e| #pc::Error::InvalidRequest(e.to_string()))?;
            call = call.body(body);
        }
    });
    let list_fn = ext.many.as_ref().map(|many| {
        let list_op = ops.0.get(&many.operation);
        let op_fn = ident(&rust_name(&many.operation, Case::Snake));
        let ids = ident(&rust_name(&many.ids, Case::Snake));
        let page_arms = many.page_params.0.iter().map(|page| {
            let ty = list_op.and_then(|op| op.params.get(page)).map_or(ParamType::String, |p| p.ty);
            let setter = ident(&rust_name(page, Case::Snake));
            let value = parse_input(ty, page);
            quote!(#page => { call = call.#setter(#value); })
        });
        quote! {
            fn list<'a>(
                &'a self,
                ids: &'a [String],
                page: &'a [(String, String)],
            ) -> ::taskpoll::__private::BoxFuture<'a, ::taskpoll::__private::Answer> {
                Box::pin(async move {
                    let mut call = self.0.#op_fn().#ids(ids.to_vec());
                    for (name, value) in page {
                        match name.as_str() {
                            #(#page_arms)*
                            _ => {}
                        }
                    }
                    call.send().await
                })
            }
        }
    });

    // Documented examples, and a parser per response schema.
    let mut examples = Vec::new();
    let mut schemas = std::collections::BTreeSet::new();
    for (id, op) in &ops.0 {
        for (status, response) in &op.responses {
            if let Some(schema) = &response.schema {
                schemas.insert(schema.clone());
            }
            let schema = response.schema.clone().unwrap_or_default();
            for (name, text) in &response.examples {
                examples.push(quote! {
                    ::taskpoll::__private::ExampleFields {
                        operation: #id, status: #status, schema: #schema, name: #name, json: #text,
                    }.build()
                });
            }
        }
    }
    let parse_arms = schemas.iter().map(|schema| {
        let ty = ident(&rust_name(schema, Case::Pascal));
        quote!(#schema => Some(#json::from_str::<types::#ty>(json).map(|_| ())),)
    });
    let operations = ops.0.iter().map(|(id, op)| {
        let method = op.method.to_uppercase();
        let path = &op.path;
        let responses = op.responses.iter().filter_map(|(status, r)| r.schema.as_ref().map(|s| quote!((#status, #s))));
        quote! {
            ::taskpoll::__private::OperationSpecFields { id: #id, method: #method, path: #path, responses: &[#(#responses),*] }.build()
        }
    });

    let server_variables = p.server_variables.iter().map(|v| {
        let (name, default, env, required) = (&v.name, &v.default, opt(v.env.as_ref()), v.required);
        quote! {
            ::taskpoll::__private::ServerVariableFields { name: #name, default: #default, env: #env, required: #required }.build()
        }
    });
    let inputs = ext.get.inputs.iter().map(|i| {
        let (name, location, description) = (&i.name, i.location.as_str(), &i.description);
        quote!(::taskpoll::__private::InputSpecFields { name: #name, location: #location, description: #description }.build())
    });
    let many = opt(ext.many.as_ref().map(|m| {
        let (operation, ids, max_ids, items, id) = (&m.operation, &m.ids, u64_lit(p.max_ids), &m.items.0, &m.id.0);
        let next = opt(m.next.as_ref().map(|n| &n.0));
        let page_params = strs(&m.page_params.0);
        let page_size = opt(m.page_size.as_ref());
        quote! {
            ::taskpoll::__private::ManySpecFields {
                operation: #operation, ids_param: #ids, max_ids: #max_ids, items: #items, id: #id, next: #next,
                page_params: #page_params, page_size_param: #page_size,
            }.build()
        }
    }));
    let rate = opt(p.rate.map(|(per_second, burst)| {
        let per_second = Literal::f64_unsuffixed(per_second);
        let burst = Literal::u32_unsuffixed(burst);
        quote!(::taskpoll::__private::RateSpecFields { per_second: #per_second, burst: #burst }.build())
    }));
    let credentials_url = opt(ext.credentials_url_env.as_ref().map(|c| {
        let (var, scheme, server_variable) = (&c.var, &c.scheme, &c.server_variable);
        quote!(::taskpoll::__private::CredentialsUrlFields { var: #var, scheme: #scheme, server_variable: #server_variable }.build())
    }));
    let task = {
        let t = &ext.task;
        let status = &t.status.0;
        let id = opt(t.id.as_ref().map(|p| &p.0));
        let error: Vec<&str> = t.error.0.iter().map(|p| p.0.as_str()).collect();
        let error = strs(&error);
        let result = opt(t.result.as_ref().map(|p| &p.0));
        let statuses = t.task_body_statuses.0.iter().map(|s| Literal::u16_unsuffixed(*s));
        quote! {
            ::taskpoll::__private::TaskShapeFields {
                status: #status, id: #id, error: #error, result: #result, task_body_statuses: &[#(#statuses),*],
            }.build()
        }
    };
    let webhook = opt(ext.webhook.as_ref().zip(p.webhook.as_ref()).map(|(w, resolved)| {
        let spec = quote!(::taskpoll::spec);
        let header = &w.signature.header;
        let algorithms = w.signature.algorithm.0.iter().map(|a| match a {
            SignatureAlgorithm::Sha1 => quote!(#spec::SignatureAlgorithm::Sha1),
            SignatureAlgorithm::Sha256 => quote!(#spec::SignatureAlgorithm::Sha256),
            SignatureAlgorithm::HmacSha1 => quote!(#spec::SignatureAlgorithm::HmacSha1),
            SignatureAlgorithm::HmacSha256 => quote!(#spec::SignatureAlgorithm::HmacSha256),
        });
        let encoding = match w.signature.encoding {
            SignatureEncoding::Hex => quote!(#spec::SignatureEncoding::Hex),
            SignatureEncoding::Base64 => quote!(#spec::SignatureEncoding::Base64),
        };
        let prefix = &w.signature.prefix;
        let message = w.signature.message.0.iter().map(|part| match part {
            MessagePart::Body => quote!(#spec::MessagePart::Body),
            MessagePart::Timestamp => quote!(#spec::MessagePart::Timestamp),
            MessagePart::Secret => quote!(#spec::MessagePart::Secret),
        });
        let timestamp_header = opt(w.timestamp.as_ref().map(|t| &t.header));
        let secret_scheme = opt(w.secret.scheme.as_ref());
        let secret_env = opt(w.secret.env.as_ref());
        let payload = &w.payload;
        let id = &payload.id.0;
        let status = opt(payload.status.as_ref().map(|p| &p.0));
        let result = opt(payload.result.as_ref().map(|p| &p.0));
        let error: Vec<&str> = payload.error.0.iter().map(|p| p.0.as_str()).collect();
        let error = strs(&error);
        let failed_if_present: Vec<&str> = payload.failed_if_present.0.iter().map(|p| p.0.as_str()).collect();
        let failed_if_present = strs(&failed_if_present);
        let http_status = opt(payload.http_status.as_ref().map(|p| &p.0));
        let only = w.result_only_by_webhook;
        let (tolerance, grace, window) =
            (u64_lit(resolved.tolerance_ms), u64_lit(resolved.grace_ms), u64_lit(resolved.active_window_ms));
        let max_body = Literal::usize_unsuffixed(usize::try_from(resolved.max_body_bytes).unwrap_or(1 << 20));
        let factor = Literal::f64_unsuffixed(resolved.poll_factor);
        quote! {
            ::taskpoll::__private::WebhookSpecFields {
                signature_header: #header,
                algorithms: &[#(#algorithms),*],
                encoding: #encoding,
                prefix: #prefix,
                message: &[#(#message),*],
                timestamp_header: #timestamp_header,
                tolerance_ms: #tolerance,
                secret_scheme: #secret_scheme,
                secret_env: #secret_env,
                max_body_bytes: #max_body,
                id: #id,
                status: #status,
                result: #result,
                error: #error,
                failed_if_present: #failed_if_present,
                http_status: #http_status,
                result_only_by_webhook: #only,
                grace_ms: #grace,
                poll_factor: #factor,
                active_window_ms: #window,
            }.build()
        }
    }));
    let error_message: Vec<&str> = ext.error_message.0.iter().map(|p| p.0.as_str()).collect();
    let error_message = strs(&error_message);
    let phases = p.phases.iter().map(|(raw, ph)| {
        let ph = phase(*ph);
        quote!((#raw, #ph))
    });
    let rules = ext.rules.iter().map(|r| {
        let when = r.when.iter().map(|(pointer, value)| {
            let (pointer, value) = (&pointer.0, &value.0);
            quote!((#pointer, #value))
        });
        let ph = phase(r.phase);
        let error = opt(r.error.as_ref().map(|p| &p.0));
        quote!(::taskpoll::__private::RuleFields { when: &[#(#when),*], phase: #ph, error: #error }.build())
    });
    let presets = p.presets.iter().map(|(name, pol)| {
        let pol = policy(pol);
        quote!((#name, #pol))
    });
    let polite = policy(&p.polite);
    let pending = opt(p.pending_budget_ms.map(u64_lit));
    let (name, title, module, base_url) = (&p.name, &p.title, &p.module, &p.base_url);
    let base_url_env = opt(ext.base_url_env.as_ref());
    let celery = ext.celery_backed;
    let (get_operation, id_location, id_allow) = (&ext.get.operation, ext.get.id.location.as_str(), &p.id_allow);
    let provider_doc = format!(
        " What taskpoll knows about this provider, read from the spec's `x-taskpoll` extension ({}).",
        p.description
    );

    quote! {
        /// Security schemes and per-operation alternatives, read from the spec (progenitor ignores them).
        pub mod security {
            /// The spec's `components.securitySchemes`.
            pub static SCHEMES: &[::taskpoll::spec::Scheme] = &[#(#schemes),*];
            /// operationId (and progenitor's Rust name for it, when different) -> alternatives
            /// (each a list of scheme names that must all be sent).
            pub static SECURITY: &[(&str, &[&[&str]])] = &[#(#security),*];
        }

        ::taskpoll::__generated_glue!();

        #[doc = #provider_doc]
        pub static PROVIDER: ::taskpoll::spec::ProviderSpec = ::taskpoll::__private::ProviderSpecFields {
            name: #name,
            title: #title,
            module: #module,
            default_base_url: #base_url,
            server_variables: &[#(#server_variables),*],
            base_url_env: #base_url_env,
            credentials_url: #credentials_url,
            celery_backed: #celery,
            get: ::taskpoll::__private::GetSpecFields {
                operation: #get_operation,
                id_location: #id_location,
                id_name: #id_name,
                id_allow: #id_allow,
                inputs: &[#(#inputs),*],
            }.build(),
            many: #many,
            rate: #rate,
            task: #task,
            error_message: #error_message,
            phases: &[#(#phases),*],
            rules: &[#(#rules),*],
            polite: #polite,
            pending_budget_ms: #pending,
            presets: &[#(#presets),*],
            schemes: security::SCHEMES,
            security: security::SECURITY,
            operations: &[#(#operations),*],
            examples: &[#(#examples),*],
            webhook: #webhook,
            connect: &::taskpoll::__private::Connect(connect),
            parse_documented,
        }.build();

        /// The answer client: the status and batch reads only, every answer as raw
        /// bytes (the unified layer decodes each body once, by the spec's pointers).
        mod answer {
            #(#answer_items)*
        }

        struct Ops(answer::Client);

        impl ::taskpoll::__private::ProviderOps for Ops {
            fn get<'a>(
                &'a self,
                id: &'a str,
                inputs: &'a ::std::collections::BTreeMap<String, String>,
            ) -> ::taskpoll::__private::BoxFuture<'a, ::taskpoll::__private::Answer> {
                Box::pin(async move {
                    #prelude
                    let mut call = self.0.#get_fn();
                    #after_call
                    for (name, value) in inputs {
                        match name.as_str() {
                            #(#input_arms)*
                            other => {
                                return Err(#pc::Error::InvalidRequest(::std::format!("unknown input `{other}`")));
                            }
                        }
                    }
                    #send_body
                    call.send().await
                })
            }
            #list_fn
        }

        fn parse_documented(schema: &str, json: &str) -> Option<Result<(), #json::Error>> {
            match schema {
                #(#parse_arms)*
                _ => None,
            }
        }
    }
}

/// The index: one `pub mod` per provider, named after it, and `ALL`.
pub(super) fn index(modules: &[GeneratedModule]) -> syn::File {
    let mods = modules.iter().map(|m| {
        let module = ident(&m.module);
        let file = format!("/{}.rs", m.module);
        let doc = format!(" Typed client generated from the spec of the `{}` provider.", m.provider);
        quote! {
            #[doc = #doc]
            #[allow(
                clippy::all, clippy::pedantic, clippy::unwrap_used, unreachable_patterns, missing_docs,
                unused_imports, unused_mut, unused_variables, dead_code, unreachable_pub,
                missing_debug_implementations, rustdoc::all
            )]
            pub mod #module {
                include!(concat!(env!("OUT_DIR"), #file));
            }
        }
    });
    let all = modules.iter().map(|m| {
        let module = ident(&m.module);
        quote!(&#module::PROVIDER)
    });
    syn::parse_quote! {
        #(#mods)*
        /// Every provider generated by this build, in spec file order.
        pub static ALL: &[&::taskpoll::spec::ProviderSpec] = &[#(#all),*];
    }
}
