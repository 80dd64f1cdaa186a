//! `herald serve`: the standalone server's lifecycle (start, reload, drain on shutdown).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::info;

use crate::api::{router, AppState};
use crate::delivery::{DeliveryConfig, Dispatcher, DrainReport, MemoryThreads, ThreadStore};
use crate::metrics::Metrics;
use crate::policy_files::{self, PolicyFiles};
use crate::{Error, Result};

#[derive(Clone, Debug)]
pub struct ServeOptions {
    pub listen: SocketAddr,
    pub files: PolicyFiles,
    pub delivery: DeliveryConfig,
    pub body_limit: usize,
    pub drain_timeout: Duration,
    pub reload_interval: Duration,
    /// Where Slack bots' thread parents are kept across restarts (`None`: in memory).
    pub state_file: Option<PathBuf>,
    /// The durable queue's directory (`None`: the queue is in memory only).
    pub state_dir: Option<PathBuf>,
    /// The event token and the connection limits.
    pub http: crate::http::HttpOptions,
    /// Signed links, Slack's signing secret, the identity header.
    pub gates: crate::gates::GateOptions,
}

/// A started server.
pub struct Running {
    /// The bound address (useful with port 0).
    pub addr: SocketAddr,
    pub state: AppState,
    stop: watch::Sender<bool>,
    http: JoinHandle<std::io::Result<()>>,
    watcher: JoinHandle<()>,
    reminders: JoinHandle<()>,
    reposts: JoinHandle<()>,
    drain_timeout: Duration,
}

/// Loads the policies (refusing to start on any problem), binds, and serves in the
/// background.
pub async fn start(options: ServeOptions) -> Result<Running> {
    let metrics = Arc::new(Metrics::new());
    let event_token = options.http.event_token()?;
    let fingerprint = options.files.fingerprint();
    let set = options
        .files
        .load()?
        .map_err(|rejected| Error::InvalidPolicies {
            problems: rejected.problems,
        })?;
    metrics.policies_loaded.set(set.policies().len() as i64);
    let thread_file = options.state_file.clone().or_else(|| {
        options
            .state_dir
            .as_ref()
            .map(|dir| dir.join("threads.json"))
    });
    let opened = match &options.state_dir {
        Some(dir) => Some(crate::durable::Store::open(dir, metrics.clone()).map_err(
            |message| Error::State(format!("cannot open the durable queue: {message}")),
        )?),
        None => None,
    };
    let threads: Arc<dyn ThreadStore> = match &thread_file {
        Some(path) => Arc::new(MemoryThreads::persisted(path.clone())),
        None => Arc::new(MemoryThreads::new()),
    };
    // Decisions matter more than threads: kept in the state directory when there is one.
    let approvals: Arc<dyn crate::gates::ApprovalStore> = match &options.state_dir {
        Some(dir) => Arc::new(
            crate::gates::FileApprovals::open(dir.join("approvals.json")).map_err(Error::Gates)?,
        ),
        None => Arc::new(crate::gates::FileApprovals::in_memory()),
    };
    let gates = Arc::new(crate::gates::Gates::new(&options.gates, approvals)?);
    let open = match &options.state_dir {
        Some(dir) => crate::reposts::OpenNotifications::persisted(dir.join("open.json")),
        None => Default::default(),
    };
    let policies = Arc::new(ArcSwap::from_pointee(set));
    let listener = tokio::net::TcpListener::bind(options.listen)
        .await
        .map_err(|source| Error::Bind {
            addr: options.listen.to_string(),
            source,
        })?;
    let addr = listener.local_addr().map_err(Error::Serve)?;
    let state = AppState {
        policies: policies.clone(),
        dispatcher: Dispatcher::with_parts(
            options.delivery.clone(),
            metrics.clone(),
            None,
            threads,
        ),
        metrics: metrics.clone(),
        body_limit: options.body_limit,
        ready: Arc::new(AtomicBool::new(true)),
        incoming: None,
        repeats: Default::default(),
        open: Arc::new(open),
        event_token,
        body_timeout: options.http.body_timeout(),
        store: opened.as_ref().map(|o| o.store.clone()),
        gates,
    };
    if let Some(opened) = opened {
        recover(&state, opened);
    }
    let (stop, stopped) = watch::channel(false);
    let http = {
        let mut stopped = stopped.clone();
        let app = router(state.clone());
        let limits = options.http.limits;
        tokio::spawn(async move {
            crate::http::serve(listener, app, limits, async move {
                let _ = stopped.wait_for(|stop| *stop).await;
            })
            .await
        })
    };
    let reminders = tokio::spawn(crate::gates::run_reminders(
        state.clone(),
        stopped.clone(),
        options.gates.reminder_check(),
    ));
    let reposts = tokio::spawn(crate::reposts::run(state.clone(), stopped.clone()));
    let watcher = {
        let mut stopped = stopped.clone();
        tokio::spawn(policy_files::watch(
            options.files.clone(),
            fingerprint,
            policies,
            metrics,
            options.reload_interval,
            async move {
                let _ = stopped.wait_for(|stop| *stop).await;
            },
        ))
    };
    info!(
        %addr, policies = state.policies.load().policies().len(),
        event_token = state.event_token.is_some(), "herald serving"
    );
    Ok(Running {
        addr,
        state,
        stop,
        http,
        watcher,
        reminders,
        reposts,
        drain_timeout: options.drain_timeout,
    })
}

/// Restores what the durable queue held at start-up: the canaries' phases, and every
/// notification still owed, queued in event order before any new event is accepted.
fn recover(state: &AppState, opened: crate::durable::Opened) {
    for (namespace, name, phase) in &opened.canaries {
        state
            .metrics
            .observe_canary(name, namespace, herald_api::CanaryPhase::parse(phase));
    }
    // `herald serve` sends every event it receives: nothing to pair with.
    let done = crate::requeue::requeue(state, &opened.store, opened.events, |_| {
        crate::api::Admission::Send(None)
    });
    info!(
        path = %opened.store.path().display(), events = done.events,
        notifications = done.notifications, forgotten = done.forgotten,
        canaries = opened.canaries.len(), "durable queue recovered"
    );
}

impl Running {
    /// Stops accepting events, finishes the requests in flight, then delivers what is queued
    /// until the drain deadline.
    pub async fn stop(self) -> Result<DrainReport> {
        let _ = self.stop.send(true);
        let served = self
            .http
            .await
            .map_err(|e| Error::Serve(std::io::Error::other(e)))?;
        served.map_err(Error::Serve)?;
        let _ = self.watcher.await;
        let _ = self.reminders.await;
        let _ = self.reposts.await;
        info!(deadline = ?self.drain_timeout, "stopped accepting events; delivering queued notifications");
        let report = self.state.dispatcher.drain(self.drain_timeout).await;
        if let Some(store) = self.state.store.clone() {
            // What finished during the drain is not owed any more: persist that, and close.
            let _ = tokio::task::spawn_blocking(move || store.close()).await;
        }
        info!(complete = report.complete, "shut down");
        Ok(report)
    }
}

/// Serves until SIGTERM or SIGINT, then drains and exits 0.
pub async fn run_until_signal(options: ServeOptions) -> Result<ExitCode> {
    let signal = shutdown_signal();
    let running = start(options).await?;
    signal.await;
    running.stop().await?;
    Ok(ExitCode::SUCCESS)
}

/// Resolves on SIGTERM or SIGINT. The handlers are in place once this returns (not once the
/// future is first polled): call it before starting, so that a SIGTERM that comes as soon as
/// Herald logs that it serves still drains instead of killing the process.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler installs");
        let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler installs");
        async move {
            tokio::select! {
                _ = term.recv() => info!("SIGTERM received"),
                _ = int.recv() => info!("SIGINT received"),
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
