//! Gates in a cluster, against a real kube-apiserver (`tests/e2e/run.sh` runs these with
//! `--ignored`): two controller replicas share their decisions through `Approval` objects,
//! one is asked and announces, a decision made through either is answered by both, a
//! decision written with kubectl counts, and the decision is a Kubernetes Event on the Canary.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::cluster::*;
use common::*;
use herald_api::{Approval, NotificationPolicy};
use k8s_openapi::api::core::v1::Event;
use kube::api::{ListParams, PostParams};
use kube::{Api, Client};
use serde_json::json;

const REV: &str = "5f6e7d8c9b0a";

async fn gate_shop(client: &Client, sink: &Sink) -> String {
    herald::telemetry::init(
        herald::telemetry::LogFormat::Text,
        "info,herald=debug,kube=warn",
    );
    let ns = namespace(client, "gates").await;
    let policy: NotificationPolicy = serde_json::from_value(json!({
        "apiVersion": "herald.dev/v1alpha1", "kind": "NotificationPolicy",
        "metadata": {"name": "gates", "namespace": ns},
        "spec": {
            "receivers": [{"name": "hook", "webhook": {"url": sink.url("/hook")}}],
            "gates": {"types": ["confirm-promotion", "rollback"]},
        }
    }))
    .unwrap();
    Api::<NotificationPolicy>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &policy)
        .await
        .unwrap();
    create_canary(client, &ns, "podinfo").await;
    ns
}

async fn gate(addr: SocketAddr, ns: &str, gate: &str) -> (u16, serde_json::Value) {
    let body = format!(
        r#"{{"name":"podinfo","namespace":"{ns}","phase":"WaitingPromotion","checksum":"{REV}"}}"#
    );
    post_event(addr, &format!("/gates/{gate}"), &body).await
}

/// Polls until `gate` answers `status` on `addr`.
async fn until_answer(addr: SocketAddr, ns: &str, name: &str, status: u16) -> serde_json::Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let (got, answer) = gate(addr, ns, name).await;
        if got == status {
            return answer;
        }
        assert!(
            Instant::now() < deadline,
            "{name} on {addr} still answers {got}: {answer}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `herald gate --kube ...`, with the test's kubeconfig.
async fn herald_gate(args: &[&str]) -> (bool, String) {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_herald"))
            .arg("gate")
            .args(&args)
            .arg("--kube")
            .output()
            .unwrap();
        // Logs (the test API server's certificate) go to stderr; what the user reads, to stdout.
        eprint!("{}", String::from_utf8_lossy(&out.stderr));
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    })
    .await
    .unwrap()
}

async fn ready(addr: SocketAddr) {
    let deadline = Instant::now() + WAIT;
    while reqwest::get(format!("http://{addr}/readyz"))
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
        != 200
    {
        assert!(Instant::now() < deadline, "{addr} never ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a kube-apiserver: tests/e2e/run.sh"]
async fn two_replicas_answer_the_same_after_a_decision_through_either() {
    let client = client().await;
    install_crds(&client).await;
    let herald_ns = namespace(&client, "herald-gates").await;
    let sink = Sink::start().await;
    let ns = gate_shop(&client, &sink).await;
    let mut a = controller_options(&herald_ns);
    a.identity = "replica-a".into();
    let mut b = controller_options(&herald_ns);
    b.identity = "replica-b".into();
    let a = herald::controller::start(client.clone(), a).await.unwrap();
    let b = herald::controller::start(client.clone(), b).await.unwrap();
    ready(a.addr).await;
    ready(b.addr).await;

    // Flagger asks both (behind a Service); the ask is announced once.
    assert_eq!(gate(a.addr, &ns, "confirm-promotion").await.0, 403);
    assert_eq!(gate(b.addr, &ns, "confirm-promotion").await.0, 403);
    let asks = sink.wait_for(1, WAIT).await;
    assert_eq!(
        asks[0].json()["metadata"]["eventMessage"],
        format!("Promotion of podinfo.{ns} (revision 5f6e7d8c) waits for approval.\nDecide with: herald gate approve --kube {ns}/podinfo (or: herald gate rollback --kube {ns}/podinfo)")
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(sink.received().len(), 1, "asked once across replicas");
    let approvals = Api::<Approval>::namespaced(client.clone(), &ns);
    let approval = approvals.get(&format!("podinfo-{REV}")).await.unwrap();
    assert_eq!(approval.spec.canary, "podinfo");
    assert_eq!(approval.spec.asked.len(), 1);

    // In a cluster the API takes no decisions from terminals: the event token is in every
    // Canary, so RBAC on Approvals is what tells an approver.
    let refused = reqwest::Client::new()
        .post(format!("http://{}/gates/decisions", a.addr))
        .json(&json!({"namespace": ns, "canary": "podinfo", "verdict": "Approve", "by": "mallory"}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    // `herald gate --kube` writes the Approval with the user's credentials; both answer.
    let (ok, out) = herald_gate(&["approve", &format!("{ns}/podinfo"), "--as", "alice"]).await;
    assert!(ok, "{out}");
    assert_eq!(
        out,
        format!(
            "Promotion of podinfo.{ns} (revision 5f6e7d8c) approved by alice via herald gate.\n"
        )
    );
    let answer = until_answer(b.addr, &ns, "confirm-promotion", 200).await;
    assert_eq!(
        answer["message"],
        format!("promotion of podinfo.{ns} (revision 5f6e7d8c) approved by alice via cli")
    );
    assert_eq!(gate(a.addr, &ns, "confirm-promotion").await.0, 200);
    // A second decision finds the first.
    let (ok, out) = herald_gate(&[
        "approve",
        &format!("{ns}/podinfo"),
        "--gate",
        "confirm-promotion",
        "--as",
        "bob",
    ])
    .await;
    assert!(!ok);
    assert!(out.starts_with("already decided: Promotion of"), "{out}");
    let (ok, out) = herald_gate(&["status", &format!("{ns}/podinfo")]).await;
    assert!(ok && out.starts_with(&format!("revision {REV}\n")), "{out}");

    // The decision is an Event on the Canary.
    let events = Api::<Event>::namespaced(client.clone(), &ns);
    let deadline = Instant::now() + WAIT;
    loop {
        let list = events.list(&ListParams::default()).await.unwrap();
        let found = list
            .items
            .iter()
            .find(|e| e.reason.as_deref() == Some("GateApproved"));
        if let Some(event) = found {
            assert_eq!(event.involved_object.kind.as_deref(), Some("Canary"));
            assert_eq!(event.involved_object.name.as_deref(), Some("podinfo"));
            assert!(event.involved_object.uid.is_some());
            assert_eq!(event.message.as_deref(), Some(format!("Promotion of podinfo.{ns} (revision 5f6e7d8c) approved by alice via herald gate.").as_str()));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no GateApproved Event: {:?}",
            list.items
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Herald's own Event is not taken for one of Flagger's and sent on (the watch has had
    // time to see it). A decision written to the Approval is audited, not told in chat.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let told = sink
        .received()
        .iter()
        .filter(|r| r.text().contains("approved by alice"))
        .count();
    assert_eq!(
        told,
        0,
        "{:?}",
        sink.received().iter().map(|r| r.text()).collect::<Vec<_>>()
    );

    // A rollback written with kubectl (as GitOps would) counts on both replicas.
    let mut approval = approvals.get(&format!("podinfo-{REV}")).await.unwrap();
    approval.spec.decisions.push(
        serde_json::from_value(json!({
            "verdict": "Rollback", "by": "gitops", "via": "kubectl", "at": "2026-12-02T10:00:00Z"
        }))
        .unwrap(),
    );
    approvals
        .replace(&format!("podinfo-{REV}"), &PostParams::default(), &approval)
        .await
        .unwrap();
    until_answer(a.addr, &ns, "rollback", 200).await;
    until_answer(b.addr, &ns, "rollback", 200).await;

    // A restarted replica still answers from the API server.
    a.stop().await.unwrap();
    let mut c = controller_options(&herald_ns);
    c.identity = "replica-c".into();
    let c = herald::controller::start(client.clone(), c).await.unwrap();
    ready(c.addr).await;
    until_answer(c.addr, &ns, "rollback", 200).await;
    b.stop().await.unwrap();
    c.stop().await.unwrap();
}
