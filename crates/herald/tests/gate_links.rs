//! Gates for receivers without buttons: signed links in the ask (a GET shows a page, only its
//! POST decides), the identity an authenticating proxy names, `herald gate` from a terminal,
//! reminders and escalation, and the event token in front of Flagger's calls.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use herald_api::{GateType, Verdict};
use herald_core::gates::links::{sign, LinkClaims};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(10);
const LINK_KEY: &str = "a-link-key-of-more-than-16-characters";
const REV1: &str = "7c4d1a2f9e0b";
const EXTERNAL: &str = "https://herald.example.com";

fn policy(sink: &Sink, approvers: &str, extra: &str) -> String {
    format!(
        r#"
apiVersion: herald.dev/v1alpha1
kind: NotificationPolicy
metadata: {{name: gates, namespace: default}}
spec:
  canaries: [podinfo]
  receivers:
    - name: ops
      webhook: {{url: "{ops}"}}
    - name: pager
      webhook: {{url: "{pager}"}}
  gates:
    types: [confirm-promotion]
    receivers: [ops]
    approvers: {approvers}
{extra}
"#,
        ops = sink.url("/ops"),
        pager = sink.url("/pager"),
    )
}

struct Started {
    server: herald::serve::Running,
    _dir: PolicyDir,
    _key: tempfile::TempDir,
}

async fn start(policy: &str, configure: impl FnOnce(&mut herald::serve::ServeOptions)) -> Started {
    let dir = PolicyDir::new(&[("gates.yaml", policy)]);
    let key = tempfile::tempdir().unwrap();
    std::fs::write(key.path().join("link-key"), LINK_KEY).unwrap();
    let mut options = options(dir.path());
    options.gates.external_url = Some(EXTERNAL.to_owned());
    options.gates.link_key_file = Some(key.path().join("link-key"));
    configure(&mut options);
    Started {
        server: herald::serve::start(options).await.unwrap(),
        _dir: dir,
        _key: key,
    }
}

fn gate_call() -> String {
    format!(
        r#"{{"name":"podinfo","namespace":"default","phase":"WaitingPromotion","checksum":"{REV1}"}}"#
    )
}

async fn promotion_gate(addr: SocketAddr) -> u16 {
    post_event(addr, "/gates/confirm-promotion", &gate_call())
        .await
        .0
}

/// The links in the ask's message, pointed at the test's server.
fn links(ask: &Value, addr: SocketAddr) -> (String, String) {
    let message = ask["metadata"]["eventMessage"].as_str().unwrap().to_owned();
    let find = |label: &str| {
        let line = message
            .lines()
            .find(|l| l.starts_with(label))
            .unwrap_or_else(|| panic!("{message}"));
        let url = line[label.len()..].trim();
        assert!(url.starts_with(&format!("{EXTERNAL}/links/")), "{url}");
        url.replace(EXTERNAL, &format!("http://{addr}"))
    };
    (find("Approve:"), find("Roll back:"))
}

#[tokio::test]
async fn a_signed_link_decides_only_by_post_and_refuses_tampering_and_expiry() {
    let sink = Sink::start().await;
    let started = start(&policy(&sink, "{linkHolders: true}", ""), |_| {}).await;
    let addr = started.server.addr;
    assert_eq!(promotion_gate(addr).await, 403);
    let ask = sink.wait_for(1, WAIT).await[0].clone();
    assert_eq!(ask.path, "/ops", "only the asked receiver gets it");
    let ask = ask.json();
    assert!(ask["metadata"]["eventMessage"].as_str().unwrap().starts_with(
        "Promotion of podinfo.default (revision 7c4d1a2f) waits for approval.\nApprove: https://herald.example.com/links/"
    ));
    let (approve, _rollback) = links(&ask, addr);
    let client = reqwest::Client::new();
    // A GET (a link preview, a scanner, a person) shows a page and decides nothing.
    let page = client.get(&approve).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert_eq!(page.headers()["cache-control"], "no-store");
    assert_eq!(page.headers()["referrer-policy"], "no-referrer");
    let html = page.text().await.unwrap();
    assert!(
        html.contains(
            "This link will approve the promotion of podinfo.default (revision 7c4d1a2f)."
        ),
        "{html}"
    );
    assert!(
        html.contains("<form method=\"post\"><button type=\"submit\">Approve</button></form>"),
        "{html}"
    );
    assert_eq!(promotion_gate(addr).await, 403);
    // A changed byte, or a link made with another key: refused.
    let mut tampered = approve.clone().into_bytes();
    let at = tampered.len() - 5;
    tampered[at] = if tampered[at] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    assert_eq!(client.post(&tampered).send().await.unwrap().status(), 403);
    let claims = LinkClaims {
        namespace: "default".into(),
        canary: "podinfo".into(),
        revision: REV1.into(),
        gate: Some(GateType::ConfirmPromotion),
        verdict: Verdict::Approve,
        policy: "default/gates".into(),
        expires: 1,
    };
    let expired = format!("http://{addr}/links/{}", sign(&claims, LINK_KEY.as_bytes()));
    let refused = client.post(&expired).send().await.unwrap();
    assert_eq!(refused.status(), 403);
    assert!(refused.text().await.unwrap().contains("this link expired"));
    let forged = format!(
        "http://{addr}/links/{}",
        sign(
            &LinkClaims {
                expires: i64::MAX,
                ..claims
            },
            b"another-key-of-16-chars"
        )
    );
    assert_eq!(client.post(&forged).send().await.unwrap().status(), 403);
    assert_eq!(promotion_gate(addr).await, 403);
    // The POST decides, once.
    let done = client.post(&approve).send().await.unwrap();
    assert_eq!(done.status(), 200);
    assert!(done.text().await.unwrap().contains("Promotion of podinfo.default (revision 7c4d1a2f) approved by link holder via a signed link."));
    assert_eq!(promotion_gate(addr).await, 200);
    assert_eq!(client.post(&approve).send().await.unwrap().status(), 409);
    let metrics = metrics_text(addr).await;
    assert_eq!(
        metric(
            &metrics,
            r#"herald_gate_refusals_total{reason="link_invalid"}"#
        ),
        2.0
    );
    assert_eq!(
        metric(
            &metrics,
            r#"herald_gate_refusals_total{reason="link_expired"}"#
        ),
        1.0
    );
    started.server.stop().await.unwrap();
}

#[tokio::test]
async fn behind_a_proxy_the_named_identity_decides() {
    let sink = Sink::start().await;
    let started = start(
        &policy(&sink, "{identities: [alice@example.com]}", ""),
        |o| {
            o.gates.identity_header = Some("X-Forwarded-Email".into());
        },
    )
    .await;
    let addr = started.server.addr;
    assert_eq!(promotion_gate(addr).await, 403);
    let (approve, _) = links(&sink.wait_for(1, WAIT).await[0].json(), addr);
    let client = reqwest::Client::new();
    let anonymous = client.post(&approve).send().await.unwrap();
    assert_eq!(anonymous.status(), 403);
    let bob = client
        .post(&approve)
        .header("x-forwarded-email", "bob@example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(bob.status(), 403);
    assert!(bob
        .text()
        .await
        .unwrap()
        .contains("bob@example.com is not on the approvers list of policy default/gates"));
    assert_eq!(promotion_gate(addr).await, 403);
    let alice = client
        .post(&approve)
        .header("x-forwarded-email", "alice@example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(alice.status(), 200);
    let (status, answer) = post_event(addr, "/gates/confirm-promotion", &gate_call()).await;
    assert_eq!(status, 200);
    assert_eq!(
        answer["message"],
        "promotion of podinfo.default (revision 7c4d1a2f) approved by alice@example.com via link"
    );
    started.server.stop().await.unwrap();
}

fn herald_gate(addr: SocketAddr, args: &[&str]) -> (bool, String) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_herald"))
        .arg("gate")
        .args(args)
        .args(["--server", &format!("http://{addr}")])
        .env_remove("HERALD_EVENT_TOKEN_FILE")
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8(output.stdout).unwrap(),
    )
}

#[tokio::test]
async fn herald_gate_decides_from_a_terminal_and_a_wrong_call_says_why() {
    let sink = Sink::start().await;
    let started = start(&policy(&sink, "{}", ""), |_| {}).await;
    let addr = started.server.addr;
    let (ok, out) = tokio::task::spawn_blocking(move || {
        herald_gate(addr, &["approve", "default/podinfo", "--as", "alice"])
    })
    .await
    .unwrap();
    assert!(!ok);
    assert_eq!(out, "no gate of default/podinfo has been asked yet; name the revision (--revision) to decide ahead\n");
    assert_eq!(promotion_gate(addr).await, 403);
    // Nobody may decide from chat: the ask says how to decide instead of carrying links.
    let ask = sink.wait_for(1, WAIT).await[0].json();
    assert_eq!(
        ask["metadata"]["eventMessage"],
        "Promotion of podinfo.default (revision 7c4d1a2f) waits for approval.\nDecide with: herald gate approve default/podinfo (or: herald gate rollback default/podinfo)"
    );
    let (ok, out) = tokio::task::spawn_blocking(move || {
        herald_gate(addr, &["approve", "default/podinfo", "--as", "alice"])
    })
    .await
    .unwrap();
    assert!(ok, "{out}");
    assert_eq!(
        out,
        "Promotion of podinfo.default (revision 7c4d1a2f) approved by alice via herald gate.\n"
    );
    assert_eq!(promotion_gate(addr).await, 200);
    let (ok, out) =
        tokio::task::spawn_blocking(move || herald_gate(addr, &["status", "default/podinfo"]))
            .await
            .unwrap();
    assert!(ok);
    assert!(out.starts_with(&format!("revision {REV1}\n")), "{out}");
    assert!(out.contains("confirm-promotion         open   promotion of podinfo.default (revision 7c4d1a2f) approved by alice via cli"), "{out}");
    started.server.stop().await.unwrap();
}

#[tokio::test]
async fn a_waiting_gate_is_reminded_then_escalated_once() {
    let sink = Sink::start().await;
    let extra = "    remindAfter: 300ms\n    escalateAfter: 700ms\n    escalateTo: [pager]";
    let started = start(&policy(&sink, "{linkHolders: true}", extra), |o| {
        o.gates.reminder_check = Some(Duration::from_millis(100));
    })
    .await;
    let addr = started.server.addr;
    assert_eq!(promotion_gate(addr).await, 403);
    let got = sink.wait_for(3, WAIT).await;
    let messages: Vec<(String, String)> = got
        .iter()
        .map(|r| {
            (
                r.path.clone(),
                r.json()["metadata"]["eventMessage"]
                    .as_str()
                    .unwrap()
                    .lines()
                    .next()
                    .unwrap()
                    .to_owned(),
            )
        })
        .collect();
    assert_eq!(
        messages[0],
        (
            "/ops".into(),
            "Promotion of podinfo.default (revision 7c4d1a2f) waits for approval.".into()
        )
    );
    assert_eq!(messages[1].0, "/ops");
    assert!(
        messages[1].1.starts_with(
            "Reminder: the promotion of podinfo.default (revision 7c4d1a2f) has waited "
        ),
        "{messages:?}"
    );
    assert_eq!(messages[2].0, "/pager");
    assert!(
        messages[2].1.starts_with(
            "Escalated: the promotion of podinfo.default (revision 7c4d1a2f) has waited "
        ),
        "{messages:?}"
    );
    // Each once.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(sink.received().len(), 3);
    started.server.stop().await.unwrap();
}

#[tokio::test]
async fn with_an_event_token_flaggers_gate_calls_need_it() {
    let sink = Sink::start().await;
    let token = tempfile::tempdir().unwrap();
    std::fs::write(token.path().join("token"), "a-token-of-sixteen-chars").unwrap();
    let path = token.path().join("token");
    let started = start(&policy(&sink, "{}", ""), move |o| {
        o.http.event_token_file = Some(path)
    })
    .await;
    let addr = started.server.addr;
    assert_eq!(promotion_gate(addr).await, 401);
    let (status, answer) = post_event(
        addr,
        "/t/a-token-of-sixteen-chars/gates/confirm-promotion",
        &gate_call(),
    )
    .await;
    assert_eq!(status, 403, "{answer}");
    assert_eq!(answer["open"], false);
    started.server.stop().await.unwrap();
}
