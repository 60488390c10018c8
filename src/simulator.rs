//! An offline simulator of every provider in `specs/`, for tests and demos
//! (feature `simulator`).
//!
//! A loopback HTTP server serves every operation of every spec under
//! `http://127.0.0.1:PORT/<provider>`, with bodies built from the spec's
//! documented examples, the spec's auth checks (a wrong or missing credential
//! gets the documented 401), stateful tasks that follow a scripted
//! [`Lifecycle`], injectable [`Fault`]s, and a record of every request.
//! It is driven only by the [`ProviderSpec`] tables: a new
//! spec in `specs/` is simulated with no code written for it.
//!
//! ```no_run
//! # async fn demo() -> taskpoll::Result<()> {
//! use std::time::Duration;
//! use taskpoll::Phase;
//! use taskpoll::simulator::{Fault, Lifecycle, Simulator};
//!
//! let sim = Simulator::start().await?;
//! let client = sim.client()?;
//! let task = sim.add_task(
//!     "deepomatic",
//!     Lifecycle::new().queued_for_polls(2).running_for(Duration::from_secs(1)).then_succeed(),
//! )?;
//! sim.inject(&task, Fault::Html502, 1)?;
//! assert!(client.get(&task).await.is_err()); // the 502
//! assert_eq!(client.get(&task).await?.phase(), Phase::Queued);
//! assert_eq!(sim.requests_for(&task).len(), 2);
//! sim.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! Time-based steps and slow answers use tokio time, so tests with paused
//! time are deterministic.
//!
//! A provider whose spec declares webhooks (`x-taskpoll.webhook`) can call
//! back: [`Simulator::add_task_with_callback`] sends the task's signed
//! delivery to a URL when it finishes (signed with the same demo secrets the
//! simulator's client and [`Simulator::credentials`] use), optionally late or
//! lost ([`Callback`]), and sends it again with backoff while the receiver
//! refuses it (as providers do); [`Simulator::webhook_deliveries`] records them.

#![allow(clippy::disallowed_methods)] // the simulated server keeps real time (its lifecycles, its signing timestamps)

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::spec::{ProviderSpec, SchemeKind};
use crate::{Client, Error, ProviderConfig, Result, TaskRef};

mod auth;
mod bodies;
mod fault;
mod lifecycle;
mod record;
mod server;
mod webhooks;

pub use auth::EnvVar;
pub use bodies::served_phase;
pub use fault::{Fault, FaultTarget};
pub use lifecycle::{Answer, Lasts, Lifecycle, Step};
pub use record::{RecordedRequest, WebhookDelivery};
pub use webhooks::Callback;

use server::{Paging, Shared, SimState, TaskEntry};

/// Default number of tasks per batch page (small, so paging is exercised).
pub const DEFAULT_PAGE_SIZE: usize = 2;
/// Default largest page a client may ask for with the page-size parameter.
pub const DEFAULT_MAX_PAGE_SIZE: usize = 100;

/// Settings of a [`Simulator`] before it starts.
#[derive(Debug, Clone)]
pub struct SimulatorBuilder {
    addr: SocketAddr,
    paging: Paging,
}

impl Default for SimulatorBuilder {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            paging: Paging { page_size: DEFAULT_PAGE_SIZE, max_page_size: DEFAULT_MAX_PAGE_SIZE },
        }
    }
}

impl SimulatorBuilder {
    /// The address to listen on (default `127.0.0.1:0`, a free port).
    pub fn addr(mut self, addr: SocketAddr) -> Self {
        self.addr = addr;
        self
    }

    /// Tasks per batch page when the client names no page size (default 2).
    pub fn page_size(mut self, size: usize) -> Self {
        self.paging.page_size = size.max(1);
        self
    }

    /// The largest page a client may ask for (default 100).
    pub fn max_page_size(mut self, size: usize) -> Self {
        self.paging.max_page_size = size.max(1);
        self
    }

    /// Binds and starts serving on the current tokio runtime.
    pub async fn start(self) -> Result<Simulator> {
        let listener = tokio::net::TcpListener::bind(self.addr)
            .await
            .map_err(|e| Error::config(format!("simulator: cannot listen on {}: {e}", self.addr)))?;
        let mut addr = listener.local_addr().map_err(|e| Error::config(format!("simulator: no local address: {e}")))?;
        if addr.ip().is_unspecified() {
            addr.set_ip(Ipv4Addr::LOCALHOST.into());
        }
        let (stop, stopped) = watch::channel(false);
        let shared = Arc::new(Shared {
            paging: self.paging,
            addr,
            state: Mutex::new(SimState::default()),
            shutdown: stopped.clone(),
            webhook_sender: std::sync::OnceLock::new(),
        });
        let router = axum::Router::new().fallback(server::handle).with_state(shared.clone());
        let mut signal = stopped;
        let server = tokio::spawn(async move {
            let serve = axum::serve(listener, router).with_graceful_shutdown(async move {
                // Ends on `shutdown` or when the `Simulator` is dropped.
                let _ = signal.wait_for(|stop| *stop).await;
            });
            if let Err(e) = serve.await {
                tracing::warn!(error = %e, "simulator server stopped");
            }
        });
        tracing::debug!(%addr, "simulator listening");
        Ok(Simulator { shared, stop, server: Some(server) })
    }
}

/// A running simulator. Dropping it stops the server.
#[derive(Debug)]
pub struct Simulator {
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    server: Option<JoinHandle<()>>,
}

impl Simulator {
    /// Starts a simulator on `127.0.0.1` at a free port.
    pub async fn start() -> Result<Self> {
        SimulatorBuilder::default().start().await
    }

    /// Starts a simulator on a fixed address.
    pub async fn bind(addr: SocketAddr) -> Result<Self> {
        SimulatorBuilder::default().addr(addr).start().await
    }

    /// Settings (address, batch page size) before starting.
    pub fn builder() -> SimulatorBuilder {
        SimulatorBuilder::default()
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.shared.addr
    }

    /// `http://127.0.0.1:PORT`, the root of every provider's base URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.shared.addr)
    }

    /// A provider's base URL at the simulator: `http://127.0.0.1:PORT/<provider>`.
    /// The provider name is used as given when no spec has it.
    pub fn base_url(&self, provider: &str) -> String {
        let name = crate::spec::provider(provider).map_or(provider, |p| p.name);
        format!("{}/{name}", self.url())
    }

    /// Settings for one provider: the simulator's base URL and a demo
    /// credential for every security scheme of its spec.
    pub fn client_config(&self, provider: &str) -> ProviderConfig {
        let mut config = ProviderConfig::new(provider).base_url(self.base_url(provider));
        if let Some(spec) = crate::spec::provider(provider) {
            for scheme in spec.schemes {
                config = config.credential(scheme.name, auth::demo_credential(spec, scheme));
            }
            for var in spec.server_variables {
                config = config.server_variable(var.name, "simulator");
            }
            if spec.webhook.is_some_and(|w| w.secret_env.is_some()) {
                config = config.webhook_secret(secrecy::SecretString::from(webhooks::demo_webhook_secret(spec)));
            }
        }
        config
    }

    /// A client configured for every provider, pointed at the simulator.
    pub fn client(&self) -> Result<Client> {
        crate::spec::providers()
            .iter()
            .fold(Client::builder(), |builder, spec| builder.provider(self.client_config(spec.name)))
            .build()
    }

    /// The environment variables that configure [`Client::from_env`] for the
    /// simulator, for printing: every scheme's demo credential, server
    /// variables, and the base-URL variable (the spec's own, else
    /// [`ProviderSpec::generic_base_url_env`](crate::spec::ProviderSpec::generic_base_url_env)).
    pub fn credentials(&self) -> Vec<EnvVar> {
        let mut out = Vec::new();
        for spec in crate::spec::providers() {
            for scheme in spec.schemes {
                match (scheme.kind, scheme.env) {
                    (SchemeKind::Basic, [user, pass]) => {
                        let (username, password) = auth::demo_basic(spec, scheme);
                        out.push(EnvVar {
                            provider: spec.name,
                            name: user.to_string(),
                            value: username,
                            secret: false,
                        });
                        out.push(EnvVar { provider: spec.name, name: pass.to_string(), value: password, secret: true });
                    }
                    (SchemeKind::Bearer | SchemeKind::ApiKeyHeader(_), [var]) => {
                        let value = auth::demo_token(spec, scheme);
                        out.push(EnvVar { provider: spec.name, name: var.to_string(), value, secret: true });
                    }
                    _ => {}
                }
            }
            if let Some(var) = spec.webhook.and_then(|w| w.secret_env) {
                let value = webhooks::demo_webhook_secret(spec);
                out.push(EnvVar { provider: spec.name, name: var.to_string(), value, secret: true });
            }
            for var in spec.server_variables {
                if let Some(name) = var.env {
                    out.push(EnvVar {
                        provider: spec.name,
                        name: name.to_string(),
                        value: "simulator".into(),
                        secret: false,
                    });
                }
            }
            // The spec's base-URL variable, else the generic one every provider reads.
            let name = spec.base_url_env.map(str::to_string).unwrap_or_else(|| spec.generic_base_url_env());
            out.push(EnvVar { provider: spec.name, name, value: self.base_url(spec.name), secret: false });
        }
        out
    }

    /// The headers that satisfy an operation's security with the demo
    /// credentials (the alternative with the most schemes), for raw requests.
    pub fn auth_headers(&self, provider: &str, operation: &str) -> Vec<(String, String)> {
        let Some(spec) = crate::spec::provider(provider) else { return Vec::new() };
        let Some(chosen) = spec.security_of(operation).iter().max_by_key(|alt| alt.len()) else { return Vec::new() };
        chosen
            .iter()
            .filter_map(|name| spec.scheme(name))
            .filter_map(|scheme| auth::demo_header(spec, scheme))
            .collect()
    }

    /// Adds a task with a generated id (shaped like the spec's example ids).
    pub fn add_task(&self, provider: &str, lifecycle: Lifecycle) -> Result<TaskRef> {
        let spec = crate::spec::known_provider(provider)?;
        let id = {
            let mut state = self.shared.lock();
            loop {
                state.next_id += 1;
                let id = generate_id(spec, state.next_id);
                if !state.tasks.contains_key(&(spec.name, id.clone())) {
                    break id;
                }
            }
        };
        self.add_task_with_id(spec.name, &id, lifecycle)
    }

    /// Adds (or replaces) a task with this id. Checks that every step can be
    /// answered (e.g. that a named example exists).
    pub fn add_task_with_id(&self, provider: &str, id: &str, lifecycle: Lifecycle) -> Result<TaskRef> {
        let task = TaskRef::new(provider, id)?;
        let spec = task.spec();
        for step in lifecycle.steps() {
            bodies::render(spec, spec.get.operation, id, &step.answer)
                .map_err(|message| Error::config(format!("simulator: {message}")))?;
        }
        let entry = TaskEntry { progress: lifecycle::Progress::new(lifecycle), reads: 0 };
        self.shared.lock().tasks.insert((spec.name, id.to_string()), entry);
        Ok(task)
    }

    /// Adds a task whose webhook is sent to `callback` when it finishes,
    /// signed as its spec's `x-taskpoll.webhook` block says with the demo
    /// secret the simulator's client uses (the demo API secret for
    /// Cloudinary, a demo webhook secret for FactPulse). A lifecycle moves on
    /// with reads and (tokio) time, as without a callback. Fails for a
    /// provider whose spec declares no webhooks.
    pub fn add_task_with_callback(&self, provider: &str, lifecycle: Lifecycle, callback: Callback) -> Result<TaskRef> {
        let spec = crate::spec::known_provider(provider)?;
        if spec.webhook.is_none() {
            return Err(Error::config(format!("simulator: {} declares no webhooks", spec.name)));
        }
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| Error::config("simulator: callbacks need a tokio runtime (none is running)"))?;
        let task = self.add_task(spec.name, lifecycle)?;
        runtime.spawn(webhooks::watch_and_send(self.shared.clone(), spec, task.id().to_string(), callback));
        Ok(task)
    }

    /// The webhooks sent or dropped so far, in order.
    pub fn webhook_deliveries(&self) -> Vec<WebhookDelivery> {
        self.shared.lock().webhooks.clone()
    }

    /// Removes a task (later reads get what the provider answers for an unknown id).
    pub fn remove_task(&self, task: &TaskRef) -> bool {
        self.shared.lock().tasks.remove(&(task.provider(), task.id().to_string())).is_some()
    }

    /// How many reads of a task were answered from its script (faulted
    /// answers excluded; a batch page counts once per task in it).
    pub fn reads(&self, task: &TaskRef) -> u32 {
        let spec = task.spec();
        self.shared.lock().tasks.get(&(spec.name, task.id().to_string())).map_or(0, |t| t.reads)
    }

    /// Injects a fault into the next `times` requests of a provider (`"qolaba"`)
    /// or of a task (`&task_ref`). Faults queue up in order; a task's faults
    /// come before its provider's.
    pub fn inject(&self, target: impl Into<FaultTarget>, fault: Fault, times: u32) -> Result<()> {
        let mut state = self.shared.lock();
        match target.into() {
            FaultTarget::Provider(name) => {
                let spec = crate::spec::known_provider(&name)?;
                state.provider_faults.entry(spec.name).or_default().push(fault, times);
            }
            FaultTarget::Task(task) => {
                let spec = task.spec();
                state.task_faults.entry((spec.name, task.id().to_string())).or_default().push(fault, times);
            }
        }
        Ok(())
    }

    /// Drops every pending fault.
    pub fn clear_faults(&self) {
        let mut state = self.shared.lock();
        state.provider_faults.clear();
        state.task_faults.clear();
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.lock().requests.clone()
    }

    /// The requests that asked about this task (single or batch reads).
    pub fn requests_for(&self, task: &TaskRef) -> Vec<RecordedRequest> {
        let spec = task.spec();
        self.shared
            .lock()
            .requests
            .iter()
            .filter(|r| r.provider == Some(spec.name) && r.task_ids.iter().any(|id| id == task.id()))
            .cloned()
            .collect()
    }

    /// Forgets the recorded requests.
    pub fn clear_requests(&self) {
        self.shared.lock().requests.clear();
    }

    /// Stops accepting connections, lets in-flight answers finish (slow
    /// answers are cut short) and waits for the server to end.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(mut server) = self.server.take()
            && tokio::time::timeout(server::SHUTDOWN_GRACE, &mut server).await.is_err()
        {
            server.abort();
        }
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// A new id shaped like the ids in the spec's examples: decimal, UUID, hex,
/// or `sim-N` when the examples show none.
fn generate_id(spec: &ProviderSpec, n: u64) -> String {
    let sample = spec.task.id.and_then(|pointer| {
        spec.examples.iter().filter(|e| e.operation == spec.get.operation).find_map(|e| {
            let body: serde_json::Value = serde_json::from_str(e.json).ok()?;
            let id = crate::observe::scalar_text(body.pointer(pointer))?;
            (!id.is_empty()).then(|| id.into_owned())
        })
    });
    let hex = |len: usize| -> String {
        (0..len).map(|_| char::from_digit(fastrand::u32(0..16), 16).unwrap_or('0')).collect()
    };
    match sample {
        Some(s) if s.chars().all(|c| c.is_ascii_digit()) => format!("{}", 100_000_000u64.saturating_add(n)),
        Some(s) if s.len() == 36 && s.chars().all(|c| c.is_ascii_hexdigit() || c == '-') => {
            format!("{}-{}-4{}-a{}-{}", hex(8), hex(4), hex(3), hex(3), hex(12))
        }
        Some(s) if s.chars().all(|c| c.is_ascii_hexdigit()) => hex(s.len().min(64)),
        _ => format!("sim-{n}"),
    }
}
