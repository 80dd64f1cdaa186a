//! The command line of gates: the settings `serve` and `controller` share, and `herald gate`,
//! which decides from a terminal through a running Herald's API.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use serde_json::{json, Value};

use herald_api::{GateType, Verdict};
use herald_core::gates::Recorded;

use super::terminal::DecisionRequest;
use super::GateOptions;
use crate::{Error, Result};

/// Flagger's gates (`serve` and `controller`).
#[derive(Debug, Args)]
pub struct GateArgs {
    /// Where people reach this Herald (`https://herald.example.com`): the base of the signed
    /// links sent to receivers without buttons. Links need this and --gate-link-key-file.
    #[arg(long, env = "HERALD_EXTERNAL_URL")]
    pub external_url: Option<String>,
    /// A file holding the key that signs links (at least 16 characters; every replica needs
    /// the same one).
    #[arg(long, env = "HERALD_GATE_LINK_KEY_FILE")]
    pub gate_link_key_file: Option<PathBuf>,
    /// How long a signed link can be used.
    #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
    pub gate_link_ttl: Duration,
    /// A file holding the Slack app's signing secret: enables `/slack/interactions`, where
    /// Slack sends presses of the Approve / Roll back buttons.
    #[arg(long, env = "HERALD_SLACK_SIGNING_SECRET_FILE")]
    pub slack_signing_secret_file: Option<PathBuf>,
    /// The header in which an authenticating proxy in front of Herald names the user
    /// (`X-Forwarded-Email`): who decided from a signed link.
    #[arg(long, env = "HERALD_IDENTITY_HEADER")]
    pub identity_header: Option<String>,
    /// How often waiting gates are checked for reminders and escalations.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub gate_reminder_check: Duration,
}

impl GateArgs {
    pub fn options(&self) -> GateOptions {
        GateOptions {
            external_url: self.external_url.clone(),
            link_key_file: self.gate_link_key_file.clone(),
            link_ttl: Some(self.gate_link_ttl),
            slack_signing_secret_file: self.slack_signing_secret_file.clone(),
            identity_header: self.identity_header.clone(),
            reminder_check: Some(self.gate_reminder_check.max(Duration::from_millis(100))),
        }
    }
}

/// `herald gate`: what a canary's gates wait for, and decisions from a terminal.
#[derive(Debug, Args)]
pub struct GateCommand {
    #[command(subcommand)]
    pub action: GateAction,
    /// A running Herald's API (in a cluster: `kubectl port-forward svc/herald 8080`).
    #[arg(
        long,
        global = true,
        default_value = "http://127.0.0.1:8080",
        env = "HERALD_SERVER"
    )]
    pub server: String,
    /// The event token file, when Herald asks for one.
    #[arg(long, global = true, env = "HERALD_EVENT_TOKEN_FILE")]
    pub event_token_file: Option<PathBuf>,
    /// Read and write the Approvals in the cluster (kubeconfig, as kubectl) instead of asking
    /// a running Herald: how terminals decide in a cluster, guarded by RBAC on approvals.
    #[arg(long, global = true)]
    pub kube: bool,
}

#[derive(Debug, Subcommand)]
pub enum GateAction {
    /// Show a canary's revisions: what was asked, what was decided, how each gate answers.
    Status { canary: String },
    /// Open the gate a revision waits on (the newest asked revision unless --revision).
    Approve(Decide),
    /// Roll a revision back (the newest asked revision unless --revision).
    Rollback(Decide),
}

#[derive(Debug, Args)]
pub struct Decide {
    /// NAMESPACE/CANARY
    pub canary: String,
    #[arg(long)]
    pub revision: Option<String>,
    /// The gate to approve (default: the one waiting).
    #[arg(long)]
    pub gate: Option<String>,
    /// Who decides, as recorded (default: $USER).
    #[arg(long = "as")]
    pub by: Option<String>,
}

fn split(canary: &str) -> Result<(&str, &str)> {
    canary
        .split_once('/')
        .filter(|(ns, name)| !ns.is_empty() && !name.is_empty())
        .ok_or_else(|| Error::Gates(format!("{canary:?}: give the canary as NAMESPACE/NAME")))
}

pub async fn run(command: GateCommand) -> Result<ExitCode> {
    if command.kube {
        return run_in_cluster(command.action).await;
    }
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| Error::Gates(e.to_string()))?;
    let base = command.server.trim_end_matches('/');
    let token = match &command.event_token_file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .map_err(|source| Error::Read {
                    path: path.clone(),
                    source,
                })?
                .trim()
                .to_owned(),
        ),
        None => None,
    };
    let (request, verdict, decide) = match &command.action {
        GateAction::Status { canary } => {
            let (ns, name) = split(canary)?;
            (
                client.get(format!("{base}/gates/status/{ns}/{name}")),
                None,
                None,
            )
        }
        GateAction::Approve(d) => (
            client.post(format!("{base}/gates/decisions")),
            Some("Approve"),
            Some(d),
        ),
        GateAction::Rollback(d) => (
            client.post(format!("{base}/gates/decisions")),
            Some("Rollback"),
            Some(d),
        ),
    };
    let mut request = match (verdict, decide) {
        (Some(verdict), Some(d)) => {
            let (ns, name) = split(&d.canary)?;
            let by =
                d.by.clone()
                    .or_else(|| std::env::var("USER").ok())
                    .unwrap_or_else(|| "terminal".into());
            let mut body = json!({"namespace": ns, "canary": name, "verdict": verdict, "by": by});
            if let Some(revision) = &d.revision {
                body["revision"] = json!(revision);
            }
            if let Some(gate) = &d.gate {
                body["gate"] = json!(gate);
            }
            request.json(&body)
        }
        _ => request,
    };
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let answer = request
        .send()
        .await
        .map_err(|e| Error::Gates(format!("cannot reach Herald at {base}: {e}")))?;
    let ok = answer.status().is_success();
    let body: Value = answer.json().await.unwrap_or(Value::Null);
    if matches!(command.action, GateAction::Status { .. }) && ok {
        print_status(&body);
    } else if let Some(message) = body["message"].as_str().or(body["error"].as_str()) {
        println!("{message}");
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// What a decision asks for, as the API and the cluster both take it.
fn request(verdict: Verdict, decide: &Decide) -> Result<DecisionRequest> {
    let (namespace, canary) = split(&decide.canary)?;
    let gate = match &decide.gate {
        Some(name) => Some(GateType::parse(name).ok_or_else(|| {
            Error::Gates(format!("--gate {name:?}: one of confirm-rollout, confirm-traffic-increase, confirm-promotion, rollback"))
        })?),
        None => None,
    };
    Ok(DecisionRequest {
        namespace: namespace.to_owned(),
        canary: canary.to_owned(),
        revision: decide.revision.clone(),
        verdict,
        gate,
        by: who(decide),
    })
}

fn who(decide: &Decide) -> String {
    decide
        .by
        .clone()
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| "terminal".into())
}

/// `herald gate --kube`: the Approvals themselves, with the user's own credentials.
async fn run_in_cluster(action: GateAction) -> Result<ExitCode> {
    let client = kube::Client::try_default().await?;
    let (approvals, watch) = crate::controller::approvals::KubeApprovals::start(
        client,
        "herald-gate".into(),
        std::future::pending(),
    );
    approvals.ready().await.map_err(Error::Gates)?;
    let outcome = match action {
        GateAction::Status { canary } => {
            let (ns, name) = split(&canary)?;
            print_status(&super::terminal::status(approvals.as_ref(), ns, name));
            ExitCode::SUCCESS
        }
        GateAction::Approve(d) => {
            decide_in_cluster(&approvals, request(Verdict::Approve, &d)?).await?
        }
        GateAction::Rollback(d) => {
            decide_in_cluster(&approvals, request(Verdict::Rollback, &d)?).await?
        }
    };
    watch.abort();
    Ok(outcome)
}

async fn decide_in_cluster(
    approvals: &std::sync::Arc<crate::controller::approvals::KubeApprovals>,
    request: DecisionRequest,
) -> Result<ExitCode> {
    let (key, decision) = match super::terminal::choose(approvals.as_ref(), request, "cli") {
        Ok(chosen) => chosen,
        Err((_, message)) => {
            println!("{message}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let recorded = super::record(approvals.as_ref(), &key, &decision)
        .await
        .map_err(Error::Gates)?;
    match recorded {
        Recorded::New => {
            approvals.publish(&key, &decision).await;
            println!("{}", super::sentence(&key, &decision));
            Ok(ExitCode::SUCCESS)
        }
        Recorded::AlreadyDecided(existing) => {
            println!("already decided: {}", super::sentence(&key, &existing));
            Ok(ExitCode::FAILURE)
        }
    }
}

fn print_status(body: &Value) {
    let revisions = body["revisions"].as_array().cloned().unwrap_or_default();
    if revisions.is_empty() {
        println!(
            "no gate of {}/{} has been asked",
            body["namespace"].as_str().unwrap_or(""),
            body["canary"].as_str().unwrap_or("")
        );
    }
    for revision in revisions {
        println!("revision {}", revision["revision"].as_str().unwrap_or(""));
        for (gate, state) in revision["gates"].as_object().into_iter().flatten() {
            let open = if state["open"] == json!(true) {
                "open  "
            } else {
                "closed"
            };
            println!(
                "  {gate:<25} {open} {}",
                state["message"].as_str().unwrap_or("")
            );
        }
    }
}
