//! Herald: Flagger canary events to chat, on-call, alerting and dashboard services and
//! webhooks, chosen by NotificationPolicy, and Flagger's gates decided from chat.
//!
//! The binary's commands live in [`cli`]; the standalone server's lifecycle in [`serve`], its
//! HTTP API in [`api`]; the one path from an event to queued notifications in [`pipeline`];
//! delivery in [`delivery`]. The pure parts (event model, matching, templating, payloads) are in
//! `herald-core`, the CRD types in `herald-api`.

pub mod api;
pub mod cli;
pub mod commands;
pub mod controller;
pub mod delivery;
pub mod demo;
pub mod durable;
pub mod gates;
pub mod http;
pub mod intake;
pub mod metrics;
pub mod metrics_text;
pub mod pipeline;
pub mod policy_files;
pub mod reposts;
pub mod requeue;
pub mod serve;
pub mod state_file;
pub mod telemetry;

use std::path::PathBuf;

/// Everything that stops a Herald command.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("{} problem(s) in the policies:\n{}", problems.len(), problems.iter().map(|p| format!("  {p}")).collect::<Vec<_>>().join("\n"))]
    InvalidPolicies {
        problems: Vec<herald_core::LoadProblem>,
    },
    #[error("{source_name}: {message}")]
    BadEvent {
        source_name: String,
        message: String,
    },
    #[error("event token: {0}")]
    EventToken(String),
    #[error("server error: {0}")]
    Serve(std::io::Error),
    #[error("demo: {0}")]
    Demo(String),
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("leader election: {0}")]
    Leader(String),
    #[error("state: {0}")]
    State(String),
    #[error("gates: {0}")]
    Gates(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
