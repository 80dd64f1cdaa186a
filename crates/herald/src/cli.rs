//! Command-line interface.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::delivery::DeliveryConfig;
use crate::policy_files::PolicyFiles;
use crate::serve::ServeOptions;
use crate::telemetry::LogFormat;
use crate::{commands, demo, serve, Result};

/// `herald --version`: the crate's version and the git commit it was built from (build.rs;
/// "unknown" when built outside a git checkout).
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("HERALD_GIT_COMMIT"),
    ")"
);

#[derive(Debug, Parser)]
#[command(
    name = "herald",
    version = VERSION,
    about = "Flagger canary events to chat, on-call, alerting and dashboard services and webhooks, routed by NotificationPolicy; Flagger's gates decided from chat"
)]
pub struct Cli {
    /// Log format: human-readable text or JSON lines.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "HERALD_LOG_FORMAT"
    )]
    pub log_format: LogFormat,
    /// Log level or tracing filter (RUST_LOG overrides it).
    #[arg(long, global = true, default_value = "info", env = "HERALD_LOG_LEVEL")]
    pub log_level: String,
    /// Threads that run Herald's work (`serve`, `controller`, `demo`, `gate`). Default: as
    /// many as the CPUs Herald may use, a container's CPU limit included (the chart's 500m
    /// gives one). Fewer threads hand events between them less often (one thread used a
    /// fifth less CPU per event than two on 2 CPUs), but a stalled thread then stalls every
    /// request (p99 at 1,000 events/s 5-56 ms instead of about 1 ms; BENCHMARKS.md,
    /// session 8).
    #[arg(long, global = true, env = "HERALD_WORKER_THREADS")]
    pub worker_threads: Option<std::num::NonZeroUsize>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print Herald's CustomResourceDefinitions as multi-document YAML.
    Crd {
        /// Write one file per CRD into this directory instead (how `crds/` is generated).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Validate policy files: every problem with its file, document and field.
    Check(PolicyArgs),
    /// Print the notifications an event would produce, one JSON object per line; sends nothing.
    Render {
        #[command(flatten)]
        policies: PolicyArgs,
        /// A file with one Flagger event JSON, or JSON lines; `-` reads stdin.
        #[arg(long)]
        event: PathBuf,
    },
    /// Run standalone: policies from files, Flagger events over HTTP.
    Serve(ServeArgs),
    /// Run in a cluster: NotificationPolicies, Canaries and their Events from the API server.
    Controller(ControllerArgs),
    /// See Herald work with no cluster and no Slack: a local capture server receives the
    /// notifications for example rollouts.
    Demo {
        /// Port of the local capture server the example Secrets point at.
        #[arg(long, default_value_t = 9099)]
        capture_port: u16,
        /// Policy files to use instead of the built-in examples.
        #[arg(long, num_args = 1..)]
        policies: Vec<PathBuf>,
    },
    /// Flagger's gates from a terminal: status, approve, rollback (through a running Herald).
    Gate(crate::gates::cli::GateCommand),
}

#[derive(Debug, Args)]
pub struct PolicyArgs {
    /// Policy YAML files or directories (NotificationPolicy, ClusterNotificationPolicy and v1
    /// Secret documents).
    #[arg(long, required = true, num_args = 1..)]
    pub policies: Vec<PathBuf>,
    /// Cluster name shown in messages (`{{cluster}}`).
    #[arg(long, default_value = "", env = "HERALD_CLUSTER_NAME")]
    pub cluster_name: String,
    /// Namespace whose Secrets ClusterNotificationPolicies refer to.
    #[arg(long, default_value = "default", env = "HERALD_NAMESPACE")]
    pub namespace: String,
}

impl PolicyArgs {
    pub fn files(&self) -> PolicyFiles {
        PolicyFiles {
            paths: self.policies.clone(),
            cluster: self.cluster_name.clone(),
            namespace: self.namespace.clone(),
        }
    }
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub policies: PolicyArgs,
    /// Address for the events, metrics and probe endpoints.
    #[arg(long, default_value = "127.0.0.1:8080", env = "HERALD_LISTEN")]
    pub listen: SocketAddr,
    #[command(flatten)]
    pub delivery: DeliveryArgs,
    #[command(flatten)]
    pub http: HttpArgs,
    #[command(flatten)]
    pub gates: crate::gates::cli::GateArgs,
    /// How often policy files are checked for changes (SIGHUP reloads at once).
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub reload_interval: Duration,
    /// A JSON file where Slack bots keep each rollout's first message, so replies still
    /// thread after a restart. Unset: kept in memory.
    #[arg(long, env = "HERALD_STATE_FILE")]
    pub state_file: Option<PathBuf>,
    /// A directory for the durable queue: every event answered 202 is stored there first,
    /// and what it still owes is sent after a restart (also a `kill -9`). Also keeps the
    /// canaries' last phases (`herald_canary_status`) and, without --state-file, the Slack
    /// threads (`threads.json`). Unset: the queue is in memory only.
    #[arg(long, env = "HERALD_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ControllerArgs {
    /// Address for the events, metrics and probe endpoints.
    #[arg(long, default_value = "0.0.0.0:8080", env = "HERALD_LISTEN")]
    pub listen: SocketAddr,
    /// Cluster name shown in messages (`{{cluster}}`).
    #[arg(long, default_value = "", env = "HERALD_CLUSTER_NAME")]
    pub cluster_name: String,
    /// Herald's namespace: its Lease and state ConfigMap, and the Secrets of
    /// ClusterNotificationPolicies.
    #[arg(long, default_value = "default", env = "POD_NAMESPACE")]
    pub namespace: String,
    /// Elect a leader with a coordination.k8s.io Lease (for more than one replica).
    #[arg(long)]
    pub leader_election: bool,
    #[arg(long, default_value = "herald-leader")]
    pub lease_name: String,
    /// This replica's name in the Lease.
    #[arg(long, env = "POD_NAME", default_value_t = default_identity())]
    pub identity: String,
    /// ConfigMap where Herald records what it has sent.
    #[arg(long, default_value = "herald-state")]
    pub state_configmap: String,
    /// How long a Canary's phase change to Initialized, Succeeded or Failed waits for Flagger's
    /// own Event before Herald announces it.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub phase_grace: Duration,
    /// Flagger reports each action as a Kubernetes Event and, if its event webhook points at
    /// Herald, as a POST: a report from one source pairs with one from the other within this
    /// window, and only the first is sent.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub pairing_window: Duration,
    /// A directory for the durable queue of events received over HTTP: every one answered
    /// 202 is stored there first, and what it still owes is sent after a restart (also a
    /// `kill -9`). Watched Events need none (their state is in the state ConfigMaps). One
    /// process per directory. Unset: that queue is in memory only.
    #[arg(long, env = "HERALD_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    #[command(flatten)]
    pub gates: crate::gates::cli::GateArgs,
    #[command(flatten)]
    pub delivery: DeliveryArgs,
    #[command(flatten)]
    pub http: HttpArgs,
}

/// The HTTP API's intake and connection limits (`serve` and `controller`).
#[derive(Debug, Args)]
pub struct HttpArgs {
    /// A file holding the event token: every event endpoint then asks for it, as
    /// `Authorization: Bearer <token>` or as the path prefix `/t/<token>/events...`.
    /// Re-read when the file changes. /metrics, /healthz and /readyz stay open.
    #[arg(long, env = "HERALD_EVENT_TOKEN_FILE")]
    pub event_token_file: Option<PathBuf>,
    /// How long a client may take to send a request's headers; also how long a keep-alive
    /// connection may stay idle.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub header_timeout: Duration,
    /// How long an event body may take to arrive once its headers have (408 after).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub body_timeout: Duration,
    /// Connections open at once; a new one beyond it closes the oldest.
    #[arg(long, default_value_t = 256)]
    pub max_connections: usize,
}

impl HttpArgs {
    pub fn options(&self) -> crate::http::HttpOptions {
        crate::http::HttpOptions {
            event_token_file: self.event_token_file.clone(),
            limits: crate::http::HttpLimits {
                header_timeout: self.header_timeout.max(Duration::from_millis(100)),
                max_connections: self.max_connections.max(1),
                ..Default::default()
            },
            body_timeout: Some(self.body_timeout.max(Duration::from_millis(100))),
        }
    }
}

fn default_identity() -> String {
    std::env::var("HOSTNAME").unwrap_or_else(|_| format!("herald-{}", std::process::id()))
}

impl ControllerArgs {
    pub fn options(&self) -> crate::controller::ControllerOptions {
        crate::controller::ControllerOptions {
            listen: self.listen,
            cluster: self.cluster_name.clone(),
            namespace: self.namespace.clone(),
            delivery: self.delivery.config(),
            body_limit: self.delivery.body_limit,
            drain_timeout: self.delivery.drain_timeout,
            phase_grace: self.phase_grace,
            pairing_window: self.pairing_window,
            state_configmap: self.state_configmap.clone(),
            lease_name: self.leader_election.then(|| self.lease_name.clone()),
            identity: self.identity.clone(),
            http: self.http.options(),
            state_dir: self.state_dir.clone(),
            gates: self.gates.options(),
        }
    }
}

/// How notifications are delivered (`serve` and `controller`).
#[derive(Debug, Args)]
pub struct DeliveryArgs {
    /// Attempts per notification, the first included.
    #[arg(long, default_value_t = 5)]
    pub max_attempts: u32,
    /// Timeout of one delivery attempt.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub delivery_timeout: Duration,
    /// First retry delay; doubles per attempt, with jitter.
    #[arg(long, default_value = "500ms", value_parser = humantime::parse_duration)]
    pub min_backoff: Duration,
    /// Longest retry delay.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub max_backoff: Duration,
    /// Notifications queued per receiver URL (retries included) before new events are
    /// refused with 503 and Retry-After (none of their notifications is queued).
    #[arg(long, default_value_t = 1000)]
    pub queue_capacity: usize,
    /// Bytes of notifications queued or in flight, all receivers together, before new events
    /// are refused with 503 and Retry-After; suffixes Ki, Mi, Gi.
    #[arg(long, default_value = "64Mi", value_parser = parse_bytes)]
    pub queue_bytes: usize,
    /// Requests in flight at once to one receiver URL. One canary's notifications always go
    /// one at a time, in order; this many canaries may be sent to concurrently.
    #[arg(long, default_value_t = 8)]
    pub max_in_flight: usize,
    /// Minimum time between two messages to one receiver URL (e.g. 1s for Slack webhooks).
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    pub min_interval: Duration,
    /// Largest accepted event body, in bytes.
    #[arg(long, default_value_t = crate::api::DEFAULT_BODY_LIMIT)]
    pub body_limit: usize,
    /// On SIGTERM/SIGINT, how long to keep delivering queued notifications.
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    pub drain_timeout: Duration,
}

/// A byte count: `1048576`, `512Ki`, `64Mi`, `1Gi` (also `K`, `M`, `G`, `KiB`, `MiB`, `GiB`).
fn parse_bytes(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let number: usize = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a byte count such as 64Mi"))?;
    let factor: usize = match unit.trim() {
        "" | "B" => 1,
        "K" | "Ki" | "KiB" => 1 << 10,
        "M" | "Mi" | "MiB" => 1 << 20,
        "G" | "Gi" | "GiB" => 1 << 30,
        other => return Err(format!("unknown unit {other:?}; use Ki, Mi or Gi")),
    };
    number
        .checked_mul(factor)
        .ok_or_else(|| format!("{text:?} is too large"))
}

impl DeliveryArgs {
    pub fn config(&self) -> DeliveryConfig {
        DeliveryConfig {
            max_attempts: self.max_attempts.max(1),
            timeout: self.delivery_timeout,
            min_backoff: self.min_backoff,
            max_backoff: self.max_backoff,
            queue_capacity: self.queue_capacity.max(1),
            queue_bytes: self.queue_bytes.max(64 * 1024),
            max_in_flight: self.max_in_flight.max(1),
            min_interval: self.min_interval,
            ..DeliveryConfig::default()
        }
    }
}

impl ServeArgs {
    pub fn options(&self) -> ServeOptions {
        ServeOptions {
            listen: self.listen,
            files: self.policies.files(),
            delivery: self.delivery.config(),
            body_limit: self.delivery.body_limit,
            drain_timeout: self.delivery.drain_timeout,
            reload_interval: self.reload_interval,
            state_file: self.state_file.clone(),
            state_dir: self.state_dir.clone(),
            http: self.http.options(),
            gates: self.gates.options(),
        }
    }
}

pub fn run(cli: Cli) -> Result<ExitCode> {
    let runtime = || runtime(cli.worker_threads);
    match cli.command {
        Command::Crd { dir: None } => {
            print!("{}", herald_api::crds_yaml());
            Ok(ExitCode::SUCCESS)
        }
        Command::Crd { dir: Some(dir) } => {
            for crd in herald_api::crds() {
                let path = dir.join(herald_api::crd_file_name(&crd));
                std::fs::write(&path, herald_api::crd_yaml(&crd))
                    .map_err(|source| crate::Error::Read { path, source })?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Check(args) => commands::check(&args.files()),
        Command::Render { policies, event } => commands::render(&policies.files(), &event),
        Command::Serve(args) => runtime().block_on(serve::run_until_signal(args.options())),
        Command::Controller(args) => runtime().block_on(crate::controller::run(args.options())),
        Command::Demo {
            capture_port,
            policies,
        } => runtime().block_on(demo::run(capture_port, policies)),
        Command::Gate(command) => runtime().block_on(crate::gates::cli::run(command)),
    }
}

fn runtime(worker_threads: Option<std::num::NonZeroUsize>) -> tokio::runtime::Runtime {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = worker_threads {
        builder.worker_threads(threads.get());
    }
    builder
        .enable_all()
        .build()
        .expect("the tokio runtime starts")
}

#[cfg(test)]
mod tests {
    #[test]
    fn byte_counts() {
        assert_eq!(super::parse_bytes("64Mi"), Ok(64 << 20));
        assert_eq!(super::parse_bytes("1024"), Ok(1024));
        assert_eq!(super::parse_bytes("2GiB"), Ok(2 << 30));
        assert!(super::parse_bytes("1Ti").is_err());
        assert!(super::parse_bytes("Mi").is_err());
    }
}
