//! Command-line arguments, and turning them into a client and task references.

use std::collections::HashMap;
use std::io::BufRead;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use taskpoll::spec::{ProviderSpec, RateSpec, SchemeKind};
use taskpoll::wait::UnknownStatusPolicy;
use taskpoll::{Client, ClientBuilder, Policy, TaskRef, WaitOptions, WaitState};

use super::error::{self, Error};

/// Read and wait on long-running tasks at HTTP providers.
#[derive(Debug, Parser)]
#[command(name = "taskpoll", version, about, after_help = AFTER_HELP)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Log on stderr: `-v` every poll and request (taskpoll's debug events), `-vv` everything's.
    /// `RUST_LOG` (e.g. `taskpoll=debug,hyper=info`), when set, replaces it. Without either: warnings.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// How log lines are written: text, or one JSON object per line.
    #[arg(long, value_name = "FORMAT", value_enum, default_value = "text", global = true)]
    pub log_format: super::telemetry::LogFormat,
    /// Serve metrics for Prometheus at `http://ADDR/metrics` while the command runs
    /// (e.g. `127.0.0.1:9464`; port 0 picks a free one, printed on stderr).
    #[arg(long, value_name = "ADDR", global = true)]
    pub metrics_listen: Option<std::net::SocketAddr>,
}

const AFTER_HELP: &str = "\
Credentials come from each provider's environment variables (e.g. DEEPOMATIC_API_KEY,
FACTPULSE_API_KEY or FACTPULSE_TOKEN, QOLABA_API_KEY, CLOUDINARY_URL) or from flags.
TASKPOLL_<PROVIDER>_BASE_URL overrides any provider's server.

IDs can also be read one per line (blank lines and `#` comments skipped): `-` as the
only ID reads standard input, `--from FILE` reads a file.

Exit codes: 0 all succeeded, 1 a task failed or was cancelled, 2 the deadline passed
first, 3 usage or configuration error, 4 API, auth or transport error, 130 interrupted
(Ctrl-C during `wait`: a line is printed for every task still pending).";

const WAIT_AFTER_HELP: &str = "\
Several tasks are waited on together: batch reads where the provider has one, one
request budget per provider (--rate, --max-in-flight). Ctrl-C stops every wait,
prints a line for each task still pending (\"outcome\": \"interrupted\") and exits 130.

Exit codes: 0 all succeeded, 1 a task failed or was cancelled, 2 the deadline passed
first, 3 usage or configuration error, 4 API, auth or transport error, 130 interrupted.";

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Read each task's status once; one JSON line per task on stdout.
    Get(TaskArgs),
    /// Wait until every task finishes or the deadline passes; each task's
    /// final state as a JSON line on stdout as soon as it finishes, progress on stderr.
    #[command(after_help = WAIT_AFTER_HELP)]
    Wait(WaitManyArgs),
    /// Wait on tasks, printing one JSON line per observed change.
    Watch(WaitArgs),
    /// Continue the waits a `wait --save-state FILE` saved, with a fresh
    /// deadline (--timeout); output and exit codes as for `wait`.
    #[command(after_help = WAIT_AFTER_HELP)]
    Resume(ResumeArgs),
    /// Run the offline simulator of every provider in the foreground.
    Simulate {
        /// Port to listen on (127.0.0.1); 0 picks a free one.
        #[arg(long, default_value_t = 0)]
        port: u16,
    },
    /// Start the simulator in-process and wait on tasks at every provider.
    Demo,
    /// Print the outcomes a `wait --store` wrote and nobody has printed yet
    /// (one JSON line each), and mark them consumed.
    Outcomes(OutcomesArgs),
    /// Receive the providers' signed webhooks and write each verified
    /// delivery to the store, for the worker holding its wait (a fleet's
    /// stable webhook address behind a load balancer); runs until Ctrl-C.
    Receive(ReceiveArgs),
}

/// `receive`: where to listen, and the store to write to.
#[derive(Debug, Args)]
pub(crate) struct ReceiveArgs {
    /// The wait store the workers share: `sqlite:PATH` or `postgres://USER@HOST/DB`.
    #[arg(long, value_name = "URL", env = "TASKPOLL_STORE", hide_env_values = true)]
    pub store: String,
    /// Where to listen (e.g. `0.0.0.0:8080`); deliveries come to `POST /<provider>`.
    #[arg(long, value_name = "ADDR")]
    pub listen: std::net::SocketAddr,
    /// Deliveries kept per provider for waits not yet added (the oldest is dropped first).
    #[arg(long, value_name = "N", default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub keep: u32,
    /// How long a delivery for a wait not yet added is kept.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "1h")]
    pub keep_for: Duration,
    /// No PostgreSQL `NOTIFY` with each delivery (workers find it on their next read, within 250 ms).
    #[arg(long)]
    pub no_notify: bool,
    #[command(flatten)]
    pub settings: ProviderArgs,
}

/// `outcomes`: where to read them.
#[derive(Debug, Args)]
pub(crate) struct OutcomesArgs {
    /// The wait store: `sqlite:PATH` or `postgres://USER@HOST/DB` (see `wait --store`).
    #[arg(long, value_name = "URL", env = "TASKPOLL_STORE", hide_env_values = true)]
    pub store: String,
    /// Print them without marking them consumed.
    #[arg(long)]
    pub keep: bool,
}

/// Which provider, with which credentials and server: the flags every
/// command that reads tasks takes.
#[derive(Debug, Args)]
pub(crate) struct ProviderArgs {
    /// The provider (`deepomatic`, `factpulse`, …). Without it, each ID must be
    /// a full task reference such as `deepomatic:269999729`.
    #[arg(long, short)]
    pub provider: Option<String>,
    /// Override the provider's server URL (e.g. the simulator's); a host-only URL keeps the spec's path.
    #[arg(long, value_name = "URL")]
    pub base_url: Option<String>,
    /// API key for the provider's API-key header scheme (prefer the environment).
    #[arg(long, value_name = "KEY")]
    pub api_key: Option<String>,
    /// Token for the provider's bearer / OAuth2 scheme (prefer the environment).
    #[arg(long, value_name = "TOKEN")]
    pub token: Option<String>,
    /// USER:SECRET for the provider's basic scheme (prefer the environment).
    #[arg(long, value_name = "USER:SECRET")]
    pub basic: Option<String>,
    /// A server variable, e.g. `--var cloud_name=demo`.
    #[arg(long = "var", value_name = "NAME=VALUE")]
    pub vars: Vec<String>,
    /// Per-request timeout, e.g. `10s`.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub request_timeout: Option<Duration>,
}

/// Which tasks, at which provider, with which settings.
#[derive(Debug, Args)]
pub(crate) struct TaskArgs {
    #[command(flatten)]
    pub settings: ProviderArgs,
    /// An extra input of the status call, e.g. `--input refID=order-7` (Qolaba).
    #[arg(long = "input", value_name = "NAME=VALUE")]
    pub inputs: Vec<String>,
    /// Read the IDs from FILE, one per line (blank lines and `#` comments skipped).
    #[arg(long, value_name = "FILE", conflicts_with = "ids")]
    pub from: Option<PathBuf>,
    /// Task ids (with --provider) or task references; `-` alone reads them from standard input.
    #[arg(value_name = "ID")]
    pub ids: Vec<String>,
}

/// Waiting settings.
#[derive(Debug, Args)]
pub(crate) struct WaitArgs {
    #[command(flatten)]
    pub tasks: TaskArgs,
    #[command(flatten)]
    pub options: OptionArgs,
}

/// How to wait: deadline, policy and guards.
#[derive(Debug, Args)]
pub(crate) struct OptionArgs {
    /// The deadline for the whole wait, e.g. `60s`, `5m` (default: the provider's suggested one).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub timeout: Option<Duration>,
    /// Polling policy: `polite` (default), `learned` (from how long the provider's tasks took), or a
    /// preset such as `factpulse_helper`, `deepomatic_client`.
    #[arg(long, value_name = "NAME")]
    pub policy: Option<String>,
    /// Unknown statuses: `keep` (default), `fail`, a count (`3`) or a duration (`30s`).
    #[arg(long, value_name = "keep|fail|N|DURATION", value_parser = parse_unknown)]
    pub unknown: Option<UnknownStatusPolicy>,
    /// Give up on a task that stays queued this long (`off` disables the provider's default).
    #[arg(long, value_name = "DURATION|off", value_parser = parse_budget)]
    pub pending_budget: Option<Budget>,
}

/// `wait`: the waiting settings, and the request budget the many-task waiter
/// holds each provider to.
#[derive(Debug, Args)]
pub(crate) struct WaitManyArgs {
    #[command(flatten)]
    pub wait: WaitArgs,
    #[command(flatten)]
    pub many: ManyArgs,
    /// Keep the waits in a store, so they survive a restart and several
    /// processes share them: `sqlite:PATH` (a file; `?busy_timeout_ms=N` sets how
    /// long a write waits for another process's lock, default 30000) or
    /// `postgres://USER@HOST/DB`. The IDs are added to the store (none: continue the waits already there);
    /// runs until no wait in the store is left.
    #[arg(long, value_name = "URL", env = "TASKPOLL_STORE", hide_env_values = true, conflicts_with = "save_state")]
    pub store: Option<String>,
    /// With --store: how long a worker holds the waits it claimed without
    /// renewing (after a crash, another continues them once it has run out).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, requires = "store", default_value = "30s")]
    pub lease: Duration,
    /// With --store: this worker's name (shown in the User-Agent; default: the process id and a random number).
    #[arg(long, value_name = "NAME", requires = "store")]
    pub worker: Option<String>,
    /// With --store: the most waits this worker holds at once (lower it to share the waits between workers).
    #[arg(long, value_name = "N", requires = "store", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_held: Option<u32>,
    /// Receive the providers' signed webhooks on ADDR (e.g. `0.0.0.0:8080`) while
    /// waiting, at `POST /<provider>` (give `http://HOST:PORT/<provider>` as the
    /// task's callback URL): a verified delivery ends its task's wait at once,
    /// polling goes on as the fallback. Each line says how the task ended (`"via"`).
    /// With --store, deliveries are written to the store, for whichever worker holds the wait.
    #[arg(long, value_name = "ADDR")]
    pub webhook_listen: Option<std::net::SocketAddr>,
    /// With --store: webhook deliveries reach the waits through the store
    /// (written by `taskpoll receive` or another worker's --webhook-listen),
    /// so a webhook-only result (Cloudinary) is waited for after a polled success.
    /// Implied by --webhook-listen.
    #[arg(long, requires = "store")]
    pub webhooks_from_store: bool,
}

/// The many-task waiter's settings, and where unfinished waits are saved.
#[derive(Debug, Args)]
pub(crate) struct ManyArgs {
    /// Status reads per second per provider, with bursts of BURST (default: each
    /// provider's own budget, e.g. 10:20 for Deepomatic), e.g. `50` or `50:100`.
    #[arg(long, value_name = "PER_SECOND[:BURST]", value_parser = parse_rate)]
    pub rate: Option<Rate>,
    /// Status reads in flight at once per provider (default: 4).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub max_in_flight: Option<u16>,
    /// When the wait ends (deadline or Ctrl-C), write the state of every task
    /// not finished to FILE, one JSON line each, for `taskpoll resume FILE`.
    /// The file is replaced (empty when every task finished).
    #[arg(long, value_name = "FILE")]
    pub save_state: Option<PathBuf>,
}

/// `resume`: continue saved waits with a fresh deadline.
#[derive(Debug, Args)]
pub(crate) struct ResumeArgs {
    /// A file written by `--save-state` (one wait state per line; `-` reads standard input).
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    #[command(flatten)]
    pub settings: ProviderArgs,
    #[command(flatten)]
    pub options: OptionArgs,
    #[command(flatten)]
    pub many: ManyArgs,
    /// Receive the providers' signed webhooks on ADDR while the waits continue,
    /// as `wait --webhook-listen` does.
    #[arg(long, value_name = "ADDR")]
    pub webhook_listen: Option<std::net::SocketAddr>,
}

/// A request budget from the command line.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rate {
    pub per_second: f64,
    pub burst: u32,
}

/// `PER_SECOND[:BURST]`; without a burst, one second's worth of requests.
fn parse_rate(text: &str) -> Result<Rate, String> {
    let (rate, burst) = match text.split_once(':') {
        Some((rate, burst)) => (rate, Some(burst)),
        None => (text, None),
    };
    let per_second: f64 =
        rate.trim().parse().map_err(|_| format!("`{rate}` is not a number of requests per second"))?;
    // The library's bounds, checked here so the message names the flag.
    if !RateSpec::usable_per_second(per_second) {
        return Err(format!("`{rate}` must be above 0 and at most {} requests per second", RateSpec::MAX_PER_SECOND));
    }
    let burst = match burst {
        Some(burst) => match burst.trim().parse::<u32>() {
            Ok(n) if n > 0 => n,
            _ => return Err(format!("burst `{burst}` must be a whole number of requests, at least 1")),
        },
        // Bounded by the check above, so the cast cannot saturate.
        None => per_second.ceil().max(1.0) as u32,
    };
    Ok(Rate { per_second, burst })
}

/// A pending-forever budget from the command line.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Budget {
    Off,
    For(Duration),
}

#[path = "../../codegen/duration.rs"]
mod duration;

/// A flag's duration, in the grammar the specs use (see `duration`), at
/// least 1 ms. clap names the flag in front of the message.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let duration = duration::parse_duration(text)?;
    // Waits count in milliseconds: anything shorter would be a zero deadline or delay.
    if duration.as_millis() == 0 {
        return Err(format!("`{}` rounds to zero (the shortest is 1ms)", text.trim()));
    }
    Ok(duration)
}

fn parse_unknown(text: &str) -> Result<UnknownStatusPolicy, String> {
    match text {
        "keep" => Ok(UnknownStatusPolicy::KeepWaiting),
        "fail" => Ok(UnknownStatusPolicy::FailFast),
        _ => match text.parse::<u32>() {
            Ok(n) => Ok(UnknownStatusPolicy::AtMost(n)),
            Err(_) if text.trim_start().starts_with(|c: char| c.is_ascii_digit() || c == '.') => {
                parse_duration(text).map(UnknownStatusPolicy::AtMostFor)
            }
            Err(_) => Err(format!("`{text}`: expected keep, fail, a count or a duration")),
        },
    }
}

fn parse_budget(text: &str) -> Result<Budget, String> {
    if text == "off" { Ok(Budget::Off) } else { parse_duration(text).map(Budget::For) }
}

fn split_pair<'a>(text: &'a str, what: &str) -> Result<(&'a str, &'a str), Error> {
    text.split_once('=')
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| Error::usage(format!("{what} must be NAME=VALUE, got `{text}`")))
}

impl TaskArgs {
    /// The task references named on the command line, on standard input
    /// (`-`) or in the `--from` file.
    pub(crate) fn task_refs(&self) -> Result<Vec<TaskRef>, Error> {
        match (&self.from, self.ids.as_slice()) {
            (Some(path), _) => {
                let file =
                    std::fs::File::open(path).map_err(|e| Error::usage(format!("--from {}: {e}", path.display())))?;
                self.refs_from_lines(std::io::BufReader::new(file), &path.display().to_string())
            }
            (None, [only]) if only == "-" => self.refs_from_lines(std::io::stdin().lock(), "standard input"),
            (None, []) => Err(Error::usage("no task: give IDs, `-` (standard input) or --from FILE")),
            (None, ids) if ids.iter().any(|id| id == "-") => {
                Err(Error::usage("`-` (read the IDs from standard input) must be the only ID"))
            }
            (None, ids) => ids.iter().map(|id| self.task_ref(id)).collect(),
        }
    }

    /// One task reference per line; blank lines and `#` comments are skipped,
    /// and a bad line is refused with its number. Read line by line, so
    /// 100,000 ids cost one pass.
    fn refs_from_lines(&self, mut input: impl BufRead, source: &str) -> Result<Vec<TaskRef>, Error> {
        let mut refs = Vec::new();
        let mut line = Vec::new();
        for number in 1_u64.. {
            line.clear();
            let read = input
                .read_until(b'\n', &mut line)
                .map_err(|e| Error::usage(format!("{source}, line {number}: cannot read: {e}")))?;
            if read == 0 {
                break;
            }
            let bad = |reason: String| Error::usage(format!("{source}, line {number}: {reason}"));
            let text = std::str::from_utf8(&line).map_err(|_| bad("not UTF-8 text".into()))?;
            let text = text.trim();
            if text.is_empty() || text.starts_with('#') {
                continue;
            }
            refs.push(self.task_ref(text).map_err(|e| bad(e.to_string()))?);
        }
        if refs.is_empty() {
            return Err(Error::usage(format!("{source} names no task")));
        }
        Ok(refs)
    }

    /// One task reference from an ID, with --provider and --input applied.
    fn task_ref(&self, id: &str) -> Result<TaskRef, Error> {
        let mut task = match &self.settings.provider {
            Some(provider) => match full_ref_provider(id) {
                // `--provider deepomatic deepomatic:1` means task 1, not an id `deepomatic:1`.
                Some(named) if named == provider => id.parse::<TaskRef>()?,
                Some(named) => {
                    return Err(Error::invalid_task_ref(id, format!("a {named} task, but --provider is {provider}")));
                }
                None => TaskRef::new(provider, id)?,
            },
            None => id.parse::<TaskRef>().map_err(|e| match e {
                taskpoll::Error::InvalidTaskRef(_) if !id.contains(':') => {
                    Error::invalid_task_ref(id, "expected `provider:id` (or pass --provider)")
                }
                other => Error::from(other),
            })?,
        };
        for input in &self.inputs {
            let (name, value) = split_pair(input, "--input")?;
            if value.is_empty() {
                return Err(Error::usage(format!("--input {name}= has no value")));
            }
            // A second value would silently replace the first (or both be sent).
            if task.inputs().contains_key(name) {
                return Err(Error::usage(format!("--input {name} is given more than once for {task}")));
            }
            task = task.with_input(name, value)?;
        }
        Ok(task)
    }
}

impl ProviderArgs {
    /// A client from the environment, with this command's flags layered on
    /// top of the selected provider's variables (flags win).
    pub(crate) fn client(&self, refs: &[TaskRef]) -> Result<Client, Error> {
        self.client_with(refs, |builder| builder)
    }

    /// [`Self::client`], with more settings applied to the builder.
    pub(crate) fn client_with(
        &self,
        refs: &[TaskRef],
        tune: impl FnOnce(ClientBuilder) -> ClientBuilder,
    ) -> Result<Client, Error> {
        let has_flags = self.base_url.is_some()
            || self.api_key.is_some()
            || self.token.is_some()
            || self.basic.is_some()
            || !self.vars.is_empty();
        let mut overlay: HashMap<String, String> = HashMap::new();
        if has_flags {
            // Without --provider, the tasks' one provider (all of them at the same one).
            let only = refs.first().map(TaskRef::provider).filter(|p| refs.iter().all(|r| r.provider() == *p));
            let provider = self
                .provider
                .as_deref()
                .or(only)
                .ok_or_else(|| Error::usage("--base-url, --api-key, --token, --basic and --var need --provider"))?;
            let spec = error::provider(provider)?;
            self.flag_overlay(spec, &mut overlay)?;
        }
        let lookup = |name: &str| overlay.get(name).cloned().or_else(|| std::env::var(name).ok());
        // Before the library reads them, so the CLI's message (naming the flag) is the one shown.
        let mut checked: Vec<&str> = Vec::new();
        for task in refs {
            // Once per provider: 100,000 ids of one provider are one check.
            if checked.contains(&task.provider()) {
                continue;
            }
            checked.push(task.provider());
            if let Some(spec) = taskpoll::spec::provider(task.provider()) {
                check_credentials(spec, &lookup, &overlay)?;
            }
        }
        let mut builder = Client::builder().providers_from_env_with(lookup)?;
        if let Some(timeout) = self.request_timeout {
            builder = builder.request_timeout(timeout);
        }
        let not_configured = |provider: &str| {
            Error::usage(format!(
                "{provider} is not configured: set {} in the environment, or pass --provider {provider} with credentials",
                env_hint(provider)
            ))
        };
        let client = match tune(builder).build() {
            Ok(client) => client,
            Err(taskpoll::Error::Config(e)) if e.message().starts_with("no provider configured") => {
                return Err(match refs.first() {
                    Some(task) => not_configured(task.provider()),
                    None => taskpoll::Error::Config(e).into(),
                });
            }
            Err(other) => return Err(other.into()),
        };
        // Say which variables are missing before any request, rather than failing per task.
        if let Some(task) = refs.iter().find(|t| !client.providers().any(|p| p.name() == t.provider())) {
            return Err(not_configured(task.provider()));
        }
        Ok(client)
    }

    /// Translates flags into the environment variables the spec names.
    fn flag_overlay(&self, spec: &ProviderSpec, overlay: &mut HashMap<String, String>) -> Result<(), Error> {
        let missing = |what: &str| Error::usage(format!("{} has no {what} scheme", spec.name()));
        let scheme_env =
            |kind: &dyn Fn(SchemeKind) -> bool| spec.schemes().iter().find(|s| kind(s.kind())).map(|s| s.env());
        if let Some(key) = &self.api_key {
            let env = scheme_env(&|k| matches!(k, SchemeKind::ApiKeyHeader(_))).ok_or_else(|| missing("API-key"))?;
            let var = env.first().ok_or_else(|| missing("API-key (with an environment variable)"))?;
            overlay.insert((*var).to_string(), key.clone());
        }
        if let Some(token) = &self.token {
            let env = scheme_env(&|k| k == SchemeKind::Bearer).ok_or_else(|| missing("bearer"))?;
            let var = env.first().ok_or_else(|| missing("bearer (with an environment variable)"))?;
            overlay.insert((*var).to_string(), token.clone());
        }
        if let Some(basic) = &self.basic {
            let (user, secret) = basic.split_once(':').ok_or_else(|| Error::usage("--basic must be USER:SECRET"))?;
            let env = scheme_env(&|k| k == SchemeKind::Basic).ok_or_else(|| missing("basic"))?;
            let [user_var, secret_var] = env else { return Err(missing("basic (with environment variables)")) };
            overlay.insert((*user_var).to_string(), user.to_string());
            overlay.insert((*secret_var).to_string(), secret.to_string());
        }
        for pair in &self.vars {
            let (name, value) = split_pair(pair, "--var")?;
            let var = spec
                .server_variables()
                .iter()
                .find(|v| v.name() == name)
                .ok_or_else(|| Error::usage(format!("{} has no server variable `{name}`", spec.name())))?;
            let env = var.env().ok_or_else(|| {
                Error::usage(format!("{}: server variable `{name}` has no environment variable", spec.name()))
            })?;
            overlay.insert(env.to_string(), value.to_string());
        }
        if let Some(url) = &self.base_url {
            // An empty value would read as unset: production, over DEEPOMATIC_API_URL and the like.
            if url.trim().is_empty() {
                return Err(Error::usage("--base-url is empty (leave it out to use the default)"));
            }
            let var = spec.base_url_env().map(str::to_string).unwrap_or_else(|| spec.generic_base_url_env());
            overlay.insert(var, url.clone());
        }
        Ok(())
    }
}

impl OptionArgs {
    /// Wait options for one task.
    pub(crate) fn options(&self, task: &TaskRef) -> Result<WaitOptions, Error> {
        self.options_with(task, None)
    }

    /// Wait options for a saved wait: its own policy unless `--policy` names
    /// one (a custom policy, which a file cannot carry, becomes the polite one).
    pub(crate) fn resumed(&self, state: &WaitState) -> Result<WaitOptions, Error> {
        self.options_with(&state.task_ref, Some(&state.policy))
    }

    fn options_with(&self, task: &TaskRef, saved_policy: Option<&str>) -> Result<WaitOptions, Error> {
        let spec = error::provider(task.provider())?;
        let deadline = self.timeout.unwrap_or(Duration::from_millis(spec.polite().deadline_ms()));
        let policy = match (self.policy.as_deref(), saved_policy) {
            (None | Some("polite"), None) => Policy::polite(spec.name())?,
            (Some(name), _) if name != "polite" => Policy::preset(name)?,
            (Some(_), _) => Policy::polite(spec.name())?,
            (None, Some(saved)) => Policy::preset(saved).or_else(|_| Policy::polite(spec.name()))?,
        };
        let mut options = WaitOptions::new(deadline).policy(policy);
        if let Some(unknown) = self.unknown {
            options = options.unknown_status(unknown);
        }
        match self.pending_budget {
            Some(Budget::Off) => options = options.pending_budget(None),
            Some(Budget::For(d)) => options = options.pending_budget(Some(d)),
            None => {}
        }
        Ok(options)
    }
}

/// The prefix of a full task reference (`deepomatic:1`) when it names a provider.
fn full_ref_provider(id: &str) -> Option<&'static str> {
    let (prefix, _) = id.split_once(':')?;
    taskpoll::spec::provider(prefix).map(|spec| spec.name())
}

/// The environment variables that configure a provider, for error messages.
fn env_hint(provider: &str) -> String {
    let Some(spec) = taskpoll::spec::provider(provider) else { return "its variables".into() };
    let sets: Vec<Vec<&str>> = spec.env_alternatives().into_iter().filter(|set| !set.is_empty()).collect();
    if sets.is_empty() {
        return "its credentials".into();
    }
    sets.iter().map(|set| set.join(" + ")).collect::<Vec<_>>().join(", or ")
}

/// Refuses, before anything is sent, credentials that could not be sent
/// (characters not allowed in a header, e.g. a pasted newline) and a set of
/// variables that configures none of the read's security alternatives
/// (`DEEPOMATIC_APP_ID` without `DEEPOMATIC_API_KEY`). Values are never echoed.
fn check_credentials(
    spec: &ProviderSpec,
    lookup: &dyn Fn(&str) -> Option<String>,
    flags: &HashMap<String, String>,
) -> Result<(), Error> {
    // Trimmed as the library trims what it reads from the environment.
    let value = |var: &str| lookup(var).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
    let source = |var: &str| if flags.contains_key(var) { format!("{var} (from a flag)") } else { var.to_string() };
    for scheme in spec.schemes() {
        if !matches!(scheme.kind(), SchemeKind::Bearer | SchemeKind::ApiKeyHeader(_)) {
            continue; // Basic credentials are base64-encoded, so any character can be sent.
        }
        for var in scheme.env() {
            if value(var).is_some_and(|v| http::HeaderValue::from_str(&v).is_err()) {
                return Err(Error::usage(format!(
                    "{}: {} contains characters not allowed in an HTTP header (a newline or control character?)",
                    spec.name(),
                    source(var)
                )));
            }
        }
    }
    let sets = spec.env_alternatives();
    if sets.is_empty() || sets.iter().any(|set| set.iter().all(|var| value(var).is_some())) {
        return Ok(());
    }
    // Only credential variables count: with none set, the provider is simply not configured.
    let credentials =
        spec.schemes().iter().flat_map(|s| s.env().iter().copied()).chain(spec.credentials_url().map(|cu| cu.var()));
    let mut present: Vec<&str> = credentials.filter(|var| value(var).is_some()).collect();
    if present.is_empty() {
        return Ok(());
    }
    present.sort_unstable();
    present.dedup();
    Err(Error::usage(format!(
        "{}: {} {} not enough: set {}",
        spec.name(),
        present.join(" and "),
        if present.len() == 1 { "alone is" } else { "are" },
        env_hint(spec.name())
    )))
}
