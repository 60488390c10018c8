//! The webhook receiver on axum (feature `webhook`): `POST /{provider}`.

use std::net::SocketAddr;
#[cfg(any(feature = "store-sqlite", feature = "store-postgres"))]
use std::sync::Arc;
#[cfg(any(feature = "store-sqlite", feature = "store-postgres"))]
use std::time::UNIX_EPOCH;

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::connections::{LimitedListener, ReceiverLimits};
#[cfg(any(feature = "store-sqlite", feature = "store-postgres"))]
use crate::store::{DeliveryLimits, WaitStore};
use crate::{Client, Error, Result};

/// Where a receiver puts verified deliveries.
#[derive(Clone)]
struct Target {
    client: Client,
    /// A store every worker reads them from, or (`None`) the client's own waits.
    store: Option<StoreTarget>,
}

/// A wait store and how many deliveries it keeps.
#[cfg(any(feature = "store-sqlite", feature = "store-postgres"))]
type StoreTarget = (Arc<dyn WaitStore>, DeliveryLimits);
/// Without a store feature there is no store to write to.
#[cfg(not(any(feature = "store-sqlite", feature = "store-postgres")))]
type StoreTarget = std::convert::Infallible;

/// A router that receives webhooks at `POST /{provider}` (`/cloudinary`,
/// `/factpulse`) and hands each verified delivery to `client`'s waits
/// ([`Client::accept_webhook`]). Mount it in your own server under any
/// prefix (`Router::new().nest("/hooks", taskpoll::webhook::router(client))`).
///
/// Answers 204 to a verified delivery; 401 (bad or missing signature, stale
/// or future timestamp), 400 (not JSON, no task id), 413 (over the spec's
/// `max-body`), 404 (unknown provider, or no scheme declared), 503 (no
/// secret configured) to a refused one, which is never handed over. The
/// answer's body is empty: a sender learns nothing about why.
///
/// Marks the client's hub as listening ([`super::WebhookHub::set_listening`]).
pub fn router(client: Client) -> Router {
    client.webhooks().set_listening(true);
    Router::new().route("/{provider}", axum::routing::post(receive)).with_state(Target { client, store: None })
}

/// A router like [`router`] whose verified deliveries are written to `store`
/// ([`WaitStore::deliver`], with `limits`) instead: the worker holding each
/// task's wait, in any process sharing the store, ends it (see
/// [`crate::store::StoredWaiter`]). A fleet's stable webhook address behind a
/// load balancer. Answers 204 once the delivery is written, and 503 when the
/// store cannot be written (the sender retries later), otherwise as [`router`].
#[cfg(any(feature = "store-sqlite", feature = "store-postgres"))]
pub fn store_router(client: Client, store: Arc<dyn WaitStore>, limits: DeliveryLimits) -> Router {
    client.webhooks().set_listening(true);
    let target = Target { client, store: Some((store, limits)) };
    Router::new().route("/{provider}", axum::routing::post(receive)).with_state(target)
}

async fn receive(State(target): State<Target>, Path(provider): Path<String>, request: Request) -> Response {
    let client = &target.client;
    let limit = match client.configured(&provider) {
        Ok(configured) => match configured.spec.webhook.as_ref() {
            Some(hook) => hook.max_body_bytes,
            None => return StatusCode::NOT_FOUND.into_response(),
        },
        Err(_) => return StatusCode::NOT_FOUND.into_response(),
    };
    let (parts, body) = request.into_parts();
    let bytes = match axum::body::to_bytes(body, limit).await {
        Ok(bytes) => bytes,
        Err(_) => {
            // Debug-formatted: the name comes from the request path (untrusted, control characters escaped).
            tracing::info!(provider = ?crate::text::excerpt(&provider, 40), "webhook refused: body over the cap or cut short");
            return StatusCode::PAYLOAD_TOO_LARGE.into_response();
        }
    };
    let accepted = match &target.store {
        None => client.accept_webhook(&provider, &parts.headers, &bytes),
        Some(_) => client.verify_webhook(&provider, &parts.headers, &bytes),
    };
    match accepted {
        Ok(task) => match &target.store {
            None => StatusCode::NO_CONTENT.into_response(),
            Some(store) => write_to(store, client, &task).await,
        },
        Err(Error::WebhookRefused(refused)) => {
            StatusCode::from_u16(refused.reason().http_status()).unwrap_or(StatusCode::BAD_REQUEST).into_response()
        }
        Err(_) => StatusCode::NOT_FOUND.into_response(),
    }
}

/// A receiver running on its own ([`serve`]). Dropping it stops it.
#[derive(Debug)]
pub struct WebhookServer {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    server: Option<JoinHandle<()>>,
}

impl WebhookServer {
    /// The address it listens on (the real port when asked for port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The callback URL for a provider's deliveries (`http://addr/provider`).
    pub fn url(&self, provider: &str) -> String {
        format!("http://{}/{provider}", self.addr)
    }

    /// Stops the server and waits for it to end.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(server) = self.server.take() {
            let _ = server.await;
        }
    }
}

impl Drop for WebhookServer {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// Runs [`router`] on `addr` (port 0: any free port) until the returned
/// server is shut down or dropped, with the default [`ReceiverLimits`]
/// (256 connections at once, each closed after 30 s).
pub async fn serve(client: Client, addr: SocketAddr) -> Result<WebhookServer> {
    serve_with(client, addr, ReceiverLimits::default()).await
}

/// [`serve`] with other limits on the connections senders may open.
pub async fn serve_with(client: Client, addr: SocketAddr, limits: ReceiverLimits) -> Result<WebhookServer> {
    serve_router(client.clone(), router(client), addr, limits).await
}

/// Writes a verified delivery to the store: 204 once written, 503 when the
/// store cannot be written (the sender retries later).
#[cfg(any(feature = "store-sqlite", feature = "store-postgres"))]
async fn write_to((store, limits): &StoreTarget, client: &Client, task: &crate::Task) -> axum::response::Response {
    let now_ms = client
        .webhooks()
        .clock()
        .wall()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    match store.deliver(task, now_ms, limits).await {
        Ok(_) => StatusCode::NO_CONTENT.into_response(),
        Err(error) => {
            tracing::warn!(%error, task = %task.task_ref(), "webhook not written to the store: answered 503");
            StatusCode::SERVICE_UNAVAILABLE.into_response()
        }
    }
}

#[cfg(not(any(feature = "store-sqlite", feature = "store-postgres")))]
async fn write_to(store: &StoreTarget, _: &Client, _: &crate::Task) -> axum::response::Response {
    match *store {}
}

/// Runs [`store_router`] on `addr` (port 0: any free port), with the default
/// [`ReceiverLimits`], until the returned server is shut down or dropped.
#[cfg(any(feature = "store-sqlite", feature = "store-postgres"))]
pub async fn serve_store(
    client: Client,
    store: Arc<dyn WaitStore>,
    delivery_limits: DeliveryLimits,
    addr: SocketAddr,
) -> Result<WebhookServer> {
    let app = store_router(client.clone(), store, delivery_limits);
    serve_router(client, app, addr, ReceiverLimits::default()).await
}

async fn serve_router(client: Client, app: Router, addr: SocketAddr, limits: ReceiverLimits) -> Result<WebhookServer> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| Error::config(format!("webhook receiver: cannot listen on {addr}: {e}")))?;
    let addr = listener.local_addr().map_err(|e| Error::config(format!("webhook receiver: no local address: {e}")))?;
    let (stop, mut stopped) = watch::channel(false);
    let server = tokio::spawn(async move {
        let serve = axum::serve(LimitedListener::new(listener, limits), app).with_graceful_shutdown(async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        });
        if let Err(e) = serve.await {
            tracing::warn!(error = %e, "webhook receiver stopped");
        }
        client.webhooks().set_listening(false);
    });
    tracing::debug!(%addr, "webhook receiver listening");
    Ok(WebhookServer { addr, stop, server: Some(server) })
}
