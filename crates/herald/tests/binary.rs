//! The real `herald` binary: CLI commands, JSON logs without secrets, SIGTERM drain.

mod common;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde::Deserialize;

use common::*;

fn herald() -> Command {
    Command::new(env!("CARGO_BIN_EXE_herald"))
}

fn examples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

/// `herald --version`: the version and the commit (build.rs), e.g. `herald 0.1.0 (commit 1a2b3c4)`.
#[test]
fn version_names_the_commit() {
    let out = herald().arg("--version").output().unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    let expected_commit = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8(o.stdout).unwrap().trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    let commit = std::env::var("HERALD_GIT_COMMIT")
        .ok()
        .filter(|c| !c.trim().is_empty())
        .unwrap_or(expected_commit);
    assert_eq!(
        stdout.trim_end(),
        format!("herald {} (commit {commit})", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn check_accepts_the_examples() {
    let out = herald()
        .arg("check")
        .arg("--policies")
        .arg(examples().join("policies"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .last()
            .unwrap(),
        "ok: 16 policies, 11 secrets in 17 files"
    );
}

#[test]
fn check_accepts_the_cluster_examples_and_skips_the_canary() {
    let out = herald()
        .args(["check", "--namespace", "herald", "--policies"])
        .arg(examples().join("cluster"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let skipped: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("skipped: "))
        .collect();
    assert_eq!(
        skipped,
        [
            "examples/cluster/00-namespaces.yaml (document 1): v1 Namespace is not a Herald document",
            "examples/cluster/00-namespaces.yaml (document 2): v1 Namespace is not a Herald document",
            "examples/cluster/canary.yaml (document 1): flagger.app/v1beta1 Canary is not a Herald document",
        ]
        .map(|line| line.replace("examples/cluster/", &format!("{}/", examples().join("cluster").display()))),
        "{stdout}"
    );
    assert_eq!(
        stdout.lines().last().unwrap(),
        "ok: 3 policies, 3 secrets in 5 files"
    );
}

/// `kubectl apply -f examples/cluster/` works on a fresh cluster (with Flagger): every
/// namespace an example puts something in is created by the file applied first.
#[test]
fn the_cluster_examples_create_the_namespaces_they_use() {
    let dir = examples().join("cluster");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let mut created = Vec::new();
    for (i, path) in files.iter().enumerate() {
        let text = std::fs::read_to_string(path).unwrap();
        for document in serde_yaml::Deserializer::from_str(&text) {
            let document = serde_yaml::Value::deserialize(document).unwrap();
            let metadata = &document["metadata"];
            if document["kind"] == "Namespace" {
                assert_eq!(i, 0, "{}: namespaces come first", path.display());
                created.push(metadata["name"].as_str().unwrap().to_owned());
            } else if let Some(namespace) = metadata["namespace"].as_str() {
                assert!(
                    created.iter().any(|c| c == namespace),
                    "{} uses namespace {namespace}, which no earlier example creates",
                    path.display()
                );
            }
        }
    }
}

#[test]
fn check_names_file_document_and_field_of_every_problem() {
    let dir = PolicyDir::new(&[(
        "broken.yaml",
        "apiVersion: herald.dev/v1alpha1\nkind: NotificationPolicy\nmetadata: {name: ok, namespace: default}\nspec:\n  receivers:\n    - name: hook\n      webhook: {url: 'http://127.0.0.1:1/x'}\n---\napiVersion: herald.dev/v1alpha1\nkind: NotificationPolicy\nmetadata: {name: typo, namespace: default}\nspec:\n  phase: [Failed]\n  receivers:\n    - name: hook\n      webhook: {url: 'http://127.0.0.1:1/x'}\n---\napiVersion: herald.dev/v1alpha1\nkind: NotificationPolicy\nmetadata: {name: bad-template, namespace: default}\nspec:\n  template:\n    text: \"{{nmae}} is {{phase}}\"\n  receivers:\n    - name: chat\n      slack: {secretRef: {name: nowhere}}\n",
    )]);
    let file = dir.path().join("broken.yaml");
    let out = herald()
        .arg("check")
        .arg("--policies")
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let f = file.display();
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        [
            format!("error: {f} (document 2): spec.phase: unknown field"),
            format!("error: {f} (document 3) NotificationPolicy default/bad-template: spec.template.text: line 1, column 1: variable \"nmae\" not found"),
            format!("error: {f} (document 3) NotificationPolicy default/bad-template: spec.receivers[0].slack.secretRef: Secret default/nowhere not found"),
            "3 problem(s) found".to_owned(),
        ]
    );
}

#[test]
fn render_prints_each_delivery_without_urls() {
    let out = herald()
        .args(["render", "--policies"])
        .arg(examples().join("policies"))
        .arg("--event")
        .arg(examples().join("events/rollback.jsonl"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        !stdout.contains("127.0.0.1"),
        "render must not print receiver URLs"
    );
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let routes: Vec<(String, String)> = lines
        .iter()
        .map(|l| {
            (
                l["policy"].as_str().unwrap().to_owned(),
                l["receiver"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let slack_sends = routes
        .iter()
        .filter(|(_, r)| r == "deploys-channel")
        .count();
    let teams_sends = routes.iter().filter(|(_, r)| r == "oncall-teams").count();
    // Slack: new revision, rolling back, canary failed. Teams on-call: rolling back, failed.
    assert_eq!((slack_sends, teams_sends), (3, 2));
    let failed = lines
        .iter()
        .find(|l| l["receiver"] == "oncall-teams")
        .unwrap();
    assert_eq!(failed["type"], "msteams");
    assert_eq!(
        failed["body"]["attachments"][0]["content"]["body"][0]["text"],
        "Rollout of podinfo.default failed"
    );
}

/// `herald render` prints the exact body of every receiver kind, and no URL.
#[test]
fn render_prints_the_chat_kinds() {
    let out = herald()
        .args(["render", "--policies"])
        .arg(examples().join("policies"))
        .arg("--event")
        .arg(examples().join("events/rollback.jsonl"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(!stdout.contains("127.0.0.1"), "{stdout}");
    let failed: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|l| l["body"].to_string().contains("Canary failed!"))
        .collect();
    let types: Vec<(&str, &str)> = failed
        .iter()
        .map(|l| (l["receiver"].as_str().unwrap(), l["type"].as_str().unwrap()))
        .collect();
    assert_eq!(
        types,
        [
            ("oncall-teams", "msteams"),
            ("oncall-rocket", "rocketchat"),
            ("audit-log", "webhook"),
            ("audit-summary", "webhook"),
            ("releases-discord", "discord"),
            ("team-space", "googlechat"),
            ("deploys-channel", "slack"),
        ]
    );
    assert_eq!(
        failed[4]["body"],
        serde_json::json!({
            "username": "herald",
            "embeds": [{
                "title": "podinfo.default rolled back",
                "description": "Canary failed! Scaling down podinfo.default",
                "color": 0xFF0000,
                "fields": [{"name": "Phase", "value": "Failed", "inline": true}],
                "timestamp": "2025-11-25T13:05:00Z"
            }],
            "allowed_mentions": {"parse": []}
        })
    );
    assert_eq!(
        failed[5]["body"]["cardsV2"][0]["card"]["sections"][0]["widgets"][0],
        serde_json::json!({"textParagraph": {"text": "Canary failed! Scaling down podinfo.default"}})
    );
    assert_eq!(
        failed[1]["body"]["attachments"][0]["text"],
        "Canary failed! Scaling down podinfo.default"
    );
}

#[test]
fn crd_prints_both_crds() {
    let out = herald().arg("crd").output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("name: notificationpolicies.herald.dev"));
    assert!(text.contains("name: clusternotificationpolicies.herald.dev"));
}

/// Reads JSON log lines from the child's stderr into a channel.
fn log_lines(child: &mut std::process::Child) -> std::sync::mpsc::Receiver<String> {
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_logs_json_without_secrets_and_drains_on_sigterm() {
    let sink = Sink::start().await;
    sink.script("/T000/rejects-s3cr3t", [Reply::Status(400)]);
    sink.delay_every_answer(Duration::from_millis(100));
    let refused = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap()
    };
    let policies = format!(
        "{}---\n{}---\n{}",
        webhook_policy("good", &sink.url("/T000/works-s3cr3t")),
        webhook_policy("rejected", &sink.url("/T000/rejects-s3cr3t")),
        webhook_policy("down", &format!("http://{refused}/T000/down-s3cr3t")),
    );
    let dir = PolicyDir::new(&[("p.yaml", &policies)]);
    let mut child = herald()
        .args([
            "--log-format",
            "json",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--max-attempts",
            "2",
            "--min-backoff",
            "10ms",
        ])
        .arg("--policies")
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let logs = log_lines(&mut child);
    let mut seen = Vec::new();
    let addr: std::net::SocketAddr = loop {
        let line = logs
            .recv_timeout(Duration::from_secs(10))
            .expect("herald logs that it is serving");
        let json: serde_json::Value = serde_json::from_str(&line).expect("every log line is JSON");
        seen.push(line);
        if json["message"] == "herald serving" {
            break json["addr"].as_str().unwrap().parse().unwrap();
        }
    };
    for i in 0..5 {
        let body = event(
            "podinfo",
            "default",
            "Progressing",
            &format!("step {i}"),
            "Normal",
            i,
        );
        assert_eq!(post_event(addr, "/events", &body).await.0, 202);
    }
    // SIGTERM right away: the queued notifications must still go out.
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0));
    seen.extend(logs.try_iter());

    assert_eq!(
        sink.received_on("/T000/works-s3cr3t").len(),
        5,
        "all queued notifications delivered before exit"
    );
    let all = seen.join("\n");
    assert!(
        !all.contains("s3cr3t"),
        "a receiver URL leaked into the logs:\n{all}"
    );
    assert!(all.contains("notification failed; not retrying"), "{all}");
    assert!(all.contains("HTTP 400"), "{all}");
    assert!(all.contains("connection failed"), "{all}");
    assert!(all.contains("SIGTERM received"), "{all}");
    for line in &seen {
        serde_json::from_str::<serde_json::Value>(line)
            .unwrap_or_else(|_| panic!("not JSON: {line}"));
    }
}

/// `--worker-threads N` runs Herald's work on N threads (tokio names them
/// `tokio-rt-worker`); zero is refused before anything starts.
#[test]
fn worker_threads_sets_the_runtime_threads() {
    let policies = examples().join("policies");
    for threads in ["1", "3"] {
        let (mut child, _addr) = spawn_herald([
            "--worker-threads",
            threads,
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--policies",
            policies.to_str().unwrap(),
        ]);
        let workers = std::fs::read_dir(format!("/proc/{}/task", child.id()))
            .unwrap()
            .filter(|task| {
                let comm = task.as_ref().unwrap().path().join("comm");
                std::fs::read_to_string(comm).unwrap().trim() == "tokio-rt-worker"
            })
            .count();
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(workers.to_string(), threads);
    }
    let out = herald()
        .args(["--worker-threads", "0", "serve", "--policies"])
        .arg(&policies)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("invalid value '0' for '--worker-threads <WORKER_THREADS>'"),
        "{stderr}"
    );
}
