//! What generated provider modules use and nothing else does (the serde
//! `__private` pattern): hidden from the documented API, stable only for the
//! code `taskpoll::codegen` emits (and for the `taskpoll` CLI, which builds
//! its usage errors with the constructors at the end).
//!
//! The descriptor types of [`crate::spec`] are `#[non_exhaustive]`, so no
//! other crate can write them as struct literals; the `*Fields` twins here
//! can be, and `build()` (a `const fn`) turns them into the real thing, so a
//! provider generated in another crate is still a `static`.

pub use progenitor_client;
pub use reqwest;
pub use serde_json;

pub use crate::transport::{Answer, Ctx, Mode, exec, pre};

/// What a provider's generated client needs to share a unified client's
/// settings (used by `taskpoll::generated::<provider>::client`).
pub fn generated_parts(client: &crate::Client, provider: &str) -> crate::Result<(String, reqwest::Client, Ctx)> {
    let p = client.configured(provider)?;
    Ok((p.base_url.clone(), p.http.clone(), p.ctx.clone()))
}

use std::future::Future;
use std::pin::Pin;

use crate::Phase;
use crate::spec::{
    CredentialsUrl, Example, GetSpec, InputSpec, ManySpec, MessagePart, OperationSpec, PolicySpec, ProviderSpec,
    RateSpec, Rule, Scheme, SchemeKind, ServerVariable, SignatureAlgorithm, SignatureEncoding, TaskShape, WebhookSpec,
};

/// Declares `XFields`, a literal-friendly twin of the descriptor type `X`
/// with the same fields, and its `const fn build(self) -> X`.
macro_rules! fields {
    ($($fields:ident => $target:ident { $($field:ident: $ty:ty),* $(,)? })*) => {$(
        #[doc = concat!("The fields of [`", stringify!($target), "`], for generated code.")]
        #[allow(missing_docs, missing_debug_implementations)]
        pub struct $fields {
            $(pub $field: $ty,)*
        }
        impl $fields {
            #[doc = concat!("The [`", stringify!($target), "`].")]
            pub const fn build(self) -> $target {
                $target { $($field: self.$field,)* }
            }
        }
    )*};
}

type Str = &'static str;

fields! {
    ProviderSpecFields => ProviderSpec {
        name: Str,
        title: Str,
        module: Str,
        default_base_url: Str,
        server_variables: &'static [ServerVariable],
        base_url_env: Option<Str>,
        credentials_url: Option<CredentialsUrl>,
        celery_backed: bool,
        get: GetSpec,
        many: Option<ManySpec>,
        rate: Option<RateSpec>,
        task: TaskShape,
        error_message: &'static [Str],
        phases: &'static [(Str, Phase)],
        rules: &'static [Rule],
        polite: PolicySpec,
        pending_budget_ms: Option<u64>,
        presets: &'static [(Str, PolicySpec)],
        schemes: &'static [Scheme],
        security: &'static [(Str, &'static [&'static [Str]])],
        operations: &'static [OperationSpec],
        examples: &'static [Example],
        webhook: Option<WebhookSpec>,
        connect: fn(&str, reqwest::Client, Ctx) -> Box<dyn ProviderOps>,
        parse_documented: fn(&str, &str) -> Option<Result<(), serde_json::Error>>,
    }
    ServerVariableFields => ServerVariable { name: Str, default: Str, env: Option<Str>, required: bool }
    CredentialsUrlFields => CredentialsUrl { var: Str, scheme: Str, server_variable: Str }
    GetSpecFields => GetSpec { operation: Str, id_location: Str, id_name: Str, id_allow: Str, inputs: &'static [InputSpec] }
    InputSpecFields => InputSpec { name: Str, location: Str, description: Str }
    ManySpecFields => ManySpec {
        operation: Str,
        ids_param: Str,
        max_ids: u64,
        items: Str,
        id: Str,
        next: Option<Str>,
        page_params: &'static [Str],
        page_size_param: Option<Str>,
    }
    RateSpecFields => RateSpec { per_second: f64, burst: u32 }
    TaskShapeFields => TaskShape {
        status: Str,
        id: Option<Str>,
        error: &'static [Str],
        result: Option<Str>,
        task_body_statuses: &'static [u16],
    }
    RuleFields => Rule { when: &'static [(Str, Str)], phase: Phase, error: Option<Str> }
    PolicySpecFields => PolicySpec {
        first_poll_ms: u64,
        delays_ms: &'static [u64],
        initial_delay_ms: u64,
        factor: f64,
        max_delay_ms: u64,
        jitter: crate::Jitter,
        offset_ms: u64,
        deadline_ms: u64,
    }
    SchemeFields => Scheme { name: Str, kind: SchemeKind, env: &'static [Str] }
    OperationSpecFields => OperationSpec { id: Str, method: Str, path: Str, responses: &'static [(Str, Str)] }
    WebhookSpecFields => WebhookSpec {
        signature_header: Str,
        algorithms: &'static [SignatureAlgorithm],
        encoding: SignatureEncoding,
        prefix: Str,
        message: &'static [MessagePart],
        timestamp_header: Option<Str>,
        tolerance_ms: u64,
        secret_scheme: Option<Str>,
        secret_env: Option<Str>,
        max_body_bytes: usize,
        id: Str,
        status: Option<Str>,
        result: Option<Str>,
        error: &'static [Str],
        failed_if_present: &'static [Str],
        http_status: Option<Str>,
        result_only_by_webhook: bool,
        grace_ms: u64,
        poll_factor: f64,
        active_window_ms: u64,
    }
    ExampleFields => Example { operation: Str, status: Str, schema: Str, name: Str, json: Str }
}

/// The parts of a generated module that are the same for every provider:
/// the `ClientHooks` impl (auth, user agent, timeout, body cap; see
/// `transport.rs`), `client(&taskpoll::Client)` and the `connect` function of
/// the descriptor. Invoked once per module by the emitted code, where
/// `Client`, `Ops` and `PROVIDER` are in scope.
#[doc(hidden)]
#[macro_export]
macro_rules! __generated_glue {
    () => {
        $crate::__generated_hooks!(Client, Typed);
        $crate::__generated_hooks!(answer::Client, Answer);

        /// This provider's generated client, sharing the unified client's base URL, HTTP client and
        /// credentials (the hooks apply auth, the user agent, the request timeout and the body cap).
        /// For the operations the unified layer does not call, such as a provider's typed status
        /// siblings; a call's error converts into `taskpoll::Error` with `?`.
        pub fn client(unified: &$crate::Client) -> ::core::result::Result<Client, $crate::Error> {
            let (base_url, http, ctx) = $crate::__private::generated_parts(unified, PROVIDER.name)?;
            ::core::result::Result::Ok(Client::new_with_client(&base_url, http, ctx))
        }

        fn connect(
            base_url: &str,
            http: $crate::__private::reqwest::Client,
            ctx: $crate::__private::Ctx,
        ) -> ::std::boxed::Box<dyn $crate::__private::ProviderOps> {
            ::std::boxed::Box::new(Ops(answer::Client::new_with_client(base_url, http, ctx)))
        }
    };
}

/// The `ClientHooks` impl of one generated client (`$mode`: which one, see `transport::Mode`).
#[doc(hidden)]
#[macro_export]
macro_rules! __generated_hooks {
    ($client:ty, $mode:ident) => {
        impl $crate::__private::progenitor_client::ClientHooks<$crate::__private::Ctx> for $client {
            async fn pre<E>(
                &self,
                request: &mut $crate::__private::reqwest::Request,
                info: &$crate::__private::progenitor_client::OperationInfo,
            ) -> ::core::result::Result<(), $crate::__private::progenitor_client::Error<E>> {
                $crate::__private::pre(
                    $crate::__private::progenitor_client::ClientInfo::inner(self),
                    request,
                    info.operation_id,
                    $crate::__private::Mode::$mode,
                )
                .map_err($crate::__private::progenitor_client::Error::Custom)
            }

            async fn exec(
                &self,
                request: $crate::__private::reqwest::Request,
                info: &$crate::__private::progenitor_client::OperationInfo,
            ) -> $crate::__private::reqwest::Result<$crate::__private::reqwest::Response> {
                $crate::__private::exec(
                    $crate::__private::progenitor_client::ClientInfo::client(self),
                    $crate::__private::progenitor_client::ClientInfo::inner(self),
                    request,
                    info.operation_id,
                    $crate::__private::Mode::$mode,
                )
                .await
            }
        }
    };
}

/// A boxed, sendable future (the glue's return type).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The glue the generator writes for each provider: calls into the generated client.
pub trait ProviderOps: Send + Sync {
    /// Reads one task: the answer as it came.
    fn get<'a>(&'a self, id: &'a str, inputs: &'a [(String, String)]) -> BoxFuture<'a, crate::transport::Answer>;
    /// Reads a page of several tasks: the answer as it came.
    fn list<'a>(&'a self, ids: &'a [String], page: &'a [(String, String)]) -> BoxFuture<'a, crate::transport::Answer> {
        let _ = (ids, page);
        Box::pin(async { Err(progenitor_client::Error::InvalidRequest("this provider has no batch operation".into())) })
    }
}

/// A configuration or usage error (the CLI's flags and files).
pub fn config_error(message: impl Into<String>) -> crate::Error {
    crate::Error::config(message)
}

/// A malformed task reference (the CLI's ids).
pub fn invalid_task_ref(input: &str, reason: impl Into<String>) -> crate::Error {
    crate::Error::InvalidTaskRef(crate::error::InvalidTaskRef {
        input: crate::task::excerpt(input, 80),
        reason: reason.into(),
    })
}

/// No provider of that name.
pub fn unknown_provider(name: &str) -> crate::Error {
    crate::Error::unknown_provider(name)
}

/// A wait the caller stopped (the CLI's Ctrl-C), with where it stood.
pub fn wait_cancelled(state: crate::WaitState) -> crate::Error {
    crate::Error::WaitCancelled(crate::error::WaitCancelled { state: Box::new(state) })
}

/// An HTTP error answer, as a read would return it (tests of wait logic).
pub fn api_error(
    provider: &'static str,
    operation: &'static str,
    status: u16,
    retry_after: Option<std::time::Duration>,
) -> crate::Error {
    crate::Error::Api(crate::error::ApiError {
        provider,
        operation,
        status,
        message: None,
        body_excerpt: String::new(),
        body_is_json: false,
        retry_after,
    })
}

/// A request that timed out, as a read would return it (tests of wait logic).
pub fn timeout_error(provider: &'static str, operation: &'static str, timeout: std::time::Duration) -> crate::Error {
    crate::Error::Transport(crate::error::TransportError {
        provider,
        operation,
        kind: crate::TransportKind::Timeout,
        host: "127.0.0.1:1".into(),
        timeout: Some(timeout),
        source: "request timed out".into(),
    })
}
