//! `herald check` and `herald render`: offline commands on policy files.

use std::io::{Read, Write};
use std::path::Path;
use std::process::ExitCode;

use herald_api::HttpMethod;
use herald_core::{FlaggerEvent, MatchInput};
use serde_json::value::RawValue;

use crate::policy_files::{Compiled, PolicyFiles};
use crate::{Error, Result};

/// Validates policy files; prints every problem; exit code 1 on any.
pub fn check(files: &PolicyFiles) -> Result<ExitCode> {
    let Compiled {
        files: file_count,
        loaded,
        set,
    } = files.compile()?;
    let mut out = std::io::stdout().lock();
    for problem in &loaded.problems {
        let _ = writeln!(out, "error: {problem}");
    }
    for warning in loaded.warnings() {
        let _ = writeln!(out, "warning: {warning}");
    }
    for (origin, what) in &loaded.skipped {
        let _ = writeln!(out, "skipped: {origin}: {what} is not a Herald document");
    }
    if loaded.problems.is_empty() && set.policies().is_empty() {
        let _ = writeln!(
            out,
            "error: no policies in {} files: Herald would send nothing (a running server keeps its policies on such a reload)",
            file_count
        );
        Ok(ExitCode::FAILURE)
    } else if loaded.problems.is_empty() {
        let _ = writeln!(
            out,
            "ok: {} policies, {} secrets in {} files",
            set.policies().len(),
            loaded.secrets.len(),
            file_count
        );
        Ok(ExitCode::SUCCESS)
    } else {
        let _ = writeln!(out, "{} problem(s) found", loaded.problems.len());
        Ok(ExitCode::FAILURE)
    }
}

/// Reads events: one JSON document (possibly pretty-printed), or JSON lines.
pub fn read_events(name: &str, text: &str) -> Result<Vec<FlaggerEvent>> {
    let bad = |line: Option<usize>, message: String| Error::BadEvent {
        source_name: match line {
            Some(line) => format!("{name} line {line}"),
            None => name.to_owned(),
        },
        message,
    };
    if let Ok(value) = serde_json::from_str::<serde_json::Value>(text) {
        return FlaggerEvent::from_value(value)
            .map(|e| vec![e])
            .map_err(|e| bad(None, e.to_string()));
    }
    let mut events = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        events.push(
            FlaggerEvent::from_json(line.as_bytes())
                .map_err(|e| bad(Some(i + 1), e.to_string()))?,
        );
    }
    Ok(events)
}

/// One line of `herald render`. The body is embedded verbatim: exactly the bytes the
/// receiver would get.
#[derive(serde::Serialize)]
struct RenderedDelivery<'a> {
    policy: String,
    receiver: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    /// Only when not POST.
    #[serde(skip_serializing_if = "Option::is_none")]
    method: Option<&'static str>,
    /// Appended to the receiver's URL (which is not shown), when the kind sets one.
    #[serde(skip_serializing_if = "Option::is_none")]
    path: Option<&'a str>,
    /// The names of the extra headers (their values may be credentials).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    headers: Vec<String>,
    /// Receivers that thread rollouts: the canary's thread, and whether this message
    /// starts a new one.
    #[serde(skip_serializing_if = "Option::is_none")]
    thread: Option<RenderedThread>,
    body: &'a RawValue,
}

#[derive(serde::Serialize)]
struct RenderedThread {
    key: String,
    starts: bool,
    outcome: bool,
}

/// Prints each delivery the events would produce as a JSON line
/// `{"policy","receiver","type","body"}` (with `method`, header names and the Slack thread
/// when they apply). URLs and credentials never appear.
pub fn render(files: &PolicyFiles, event_path: &Path) -> Result<ExitCode> {
    let set = files.load()?.map_err(|rejected| Error::InvalidPolicies {
        problems: rejected.problems,
    })?;
    let (name, text) = if event_path.as_os_str() == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|source| Error::Read {
                path: event_path.to_owned(),
                source,
            })?;
        ("stdin".to_owned(), text)
    } else {
        let text = std::fs::read_to_string(event_path).map_err(|source| Error::Read {
            path: event_path.to_owned(),
            source,
        })?;
        (event_path.display().to_string(), text)
    };
    let events = read_events(&name, &text)?;
    let mut out = std::io::stdout().lock();
    let mut failed = false;
    for event in &events {
        for result in set.notifications(&MatchInput::event(event), None) {
            match result {
                Ok(delivery) => {
                    let policy = set.policy(delivery.policy);
                    let receiver = &policy.receivers[delivery.receiver as usize];
                    let headers = receiver
                        .request
                        .headers_for(&delivery.body)
                        .into_iter()
                        .map(|h| h.name)
                        .collect();
                    let body = String::from_utf8(delivery.body).expect("bodies are JSON text");
                    let method = receiver.request.method;
                    let line = RenderedDelivery {
                        policy: policy.id.to_string(),
                        receiver: &receiver.name,
                        kind: receiver.type_name,
                        method: (method != HttpMethod::Post).then(|| method.as_str()),
                        path: delivery.path.as_deref(),
                        headers,
                        thread: delivery.thread.as_ref().map(|t| RenderedThread {
                            key: t.key(),
                            starts: t.starts,
                            outcome: t.outcome,
                        }),
                        body: &RawValue::from_string(body).expect("bodies are valid JSON"),
                    };
                    let _ = writeln!(
                        out,
                        "{}",
                        serde_json::to_string(&line).expect("a rendered delivery serialises")
                    );
                }
                Err(failure) => {
                    failed = true;
                    let policy = set.policy(failure.policy);
                    eprintln!(
                        "error: policy {} receiver {}: {}",
                        policy.id, policy.receivers[failure.receiver as usize].name, failure.error
                    );
                }
            }
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
