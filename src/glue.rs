//! What generated provider modules use and nothing else does (the serde
//! `__private` pattern): hidden from the documented API, stable only for the
//! code `taskpoll::codegen` emits.
//!
//! The descriptor types of [`crate::spec`] keep their fields to the crate
//! (users read them through accessors), so no other crate can write them as
//! struct literals; the `*Fields` twins re-exported here can be, and
//! `build()` (a `const fn`) turns them into the real thing, so a provider
//! generated in another crate is still a `static`.

pub use progenitor_client;
pub use reqwest;
pub use serde_json;

pub use crate::spec::{
    CredentialsUrlFields, ExampleFields, GetSpecFields, InputSpecFields, ManySpecFields, OperationSpecFields,
    PolicySpecFields, ProviderSpecFields, RateSpecFields, RuleFields, SchemeFields, ServerVariableFields,
    TaskShapeFields, WebhookSpecFields,
};
pub use futures_util::future::BoxFuture;

pub use crate::transport::{Answer, Connect, Ctx, Mode, ProviderOps, SharedSettings, exec, pre};

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
        ///
        /// `unified` is a `&taskpoll::Client`: the client implements this trait, so the generated
        /// modules (which the registry lists) sit below the client and never name it.
        pub fn client(
            unified: &impl $crate::__private::SharedSettings,
        ) -> ::core::result::Result<Client, $crate::Error> {
            let (base_url, http, ctx) = $crate::__private::SharedSettings::shared_settings(unified, &PROVIDER)?;
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

            // Not `async fn`: the request is sent when this is called, so the generated
            // future does not keep a second copy of it (see `transport::exec`).
            fn exec(
                &self,
                request: $crate::__private::reqwest::Request,
                info: &$crate::__private::progenitor_client::OperationInfo,
            ) -> impl ::core::future::Future<
                Output = $crate::__private::reqwest::Result<$crate::__private::reqwest::Response>,
            > {
                $crate::__private::exec(
                    $crate::__private::progenitor_client::ClientInfo::client(self),
                    $crate::__private::progenitor_client::ClientInfo::inner(self),
                    request,
                    info.operation_id,
                    $crate::__private::Mode::$mode,
                )
            }
        }
    };
}
