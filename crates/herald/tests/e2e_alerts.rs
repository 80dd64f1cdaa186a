//! Alertmanager from the controller, against a real kube-apiserver (`tests/e2e/run.sh` runs
//! these with `--ignored`) and a real Alertmanager: a Canary that stays failed keeps its
//! alert firing past Alertmanager's `resolve_timeout` while Flagger says nothing more,
//! through a restart of the controller (what it repeats is in its state directory, as the
//! chart's `stateDir` keeps it), and its promotion resolves the alert for good. A replica
//! that does not lead repeats nothing; a Canary deleted while failed is not repeated.

mod common;

use std::time::Duration;

use common::alertmanager::*;
use common::cluster::*;
use common::*;
use herald_api::NotificationPolicy;
use kube::api::PostParams;
use kube::Api;
use serde_json::{json, Value};

const REPOSTS: &str = "herald_reposts_total";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a kube-apiserver: tests/e2e/run.sh"]
async fn a_failed_canary_stays_firing_through_a_controller_restart_until_promoted() {
    if !installed() {
        eprintln!("skipped: {BINARY} is not installed (apt-get install prometheus-alertmanager)");
        return;
    }
    herald::telemetry::init(
        herald::telemetry::LogFormat::Text,
        "info,herald=debug,kube=warn",
    );
    let client = client().await;
    install_crds(&client).await;
    let herald_ns = namespace(&client, "herald-alerts").await;
    let ns = namespace(&client, "alerts").await;
    // Alertmanager ends an alert 2 s after it last heard of it; Herald posts it every second.
    let resolve_timeout = Duration::from_secs(2);
    let am = start_alertmanager(&format!("global:\n  resolve_timeout: 2s\n{CONFIG}"), None).await;
    let policy: NotificationPolicy = serde_json::from_value(json!({
        "apiVersion": "herald.dev/v1alpha1", "kind": "NotificationPolicy",
        "metadata": {"name": "oncall", "namespace": ns},
        "spec": {"receivers": [{"name": "am", "alertmanager": {
            "url": format!("http://{}", am.addr), "resendInterval": "1s"
        }}]}
    }))
    .unwrap();
    let policies = Api::<NotificationPolicy>::namespaced(client.clone(), &ns);
    policies
        .create(&PostParams::default(), &policy)
        .await
        .unwrap();
    create_canary(&client, &ns, "podinfo").await;
    set_phase(&client, &ns, "podinfo", "Progressing").await;

    let state = tempfile::tempdir().unwrap();
    let mut options = controller_options(&herald_ns);
    options.state_dir = Some(state.path().to_path_buf());
    let leader = herald::controller::start(client.clone(), options.clone())
        .await
        .unwrap();
    ready_condition(&policies, "oncall", "True").await;
    // A second replica, its own state directory, waiting for the lease.
    let follower_state = tempfile::tempdir().unwrap();
    let mut follower_options = options.clone();
    follower_options.identity = "e2e-follower".to_owned();
    follower_options.state_dir = Some(follower_state.path().to_path_buf());
    let follower = herald::controller::start(client.clone(), follower_options)
        .await
        .unwrap();

    // frontend fails too, and is deleted while failed: its repeats end.
    create_canary(&client, &ns, "frontend").await;
    set_phase(&client, &ns, "frontend", "Failed").await;
    let frontend = format!("Canary failed! Scaling down frontend.{ns}");
    flagger_event(
        &client,
        &ns,
        "frontend",
        "frontend.f1",
        &frontend,
        "Warning",
    )
    .await;
    wait_for_alerts(&am, 1).await;
    Api::<herald_api::flagger::Canary>::namespaced(client.clone(), &ns)
        .delete("frontend", &Default::default())
        .await
        .unwrap();
    // Lapsed (2 s) and not posted again.
    wait_for_alerts(&am, 0).await;

    set_phase(&client, &ns, "podinfo", "Failed").await;
    let failed = format!("Canary failed! Scaling down podinfo.{ns}");
    flagger_event(&client, &ns, "podinfo", "podinfo.f1", &failed, "Warning").await;
    let alerts = wait_for_alerts(&am, 1).await;
    assert_eq!(
        alerts[0]["labels"],
        json!({"alertname": "FlaggerCanaryFailed", "canary": "podinfo", "namespace": ns, "cluster": "e2e", "severity": "critical"})
    );
    let started = alerts[0]["startsAt"].clone();

    // Flagger says nothing more; twice resolve_timeout later the alert still fires.
    tokio::time::sleep(2 * resolve_timeout).await;
    let alerts = active_alerts(&am, None).await;
    assert_eq!(alerts.len(), 1, "still firing: {alerts:?}");
    assert_eq!(
        alerts[0]["startsAt"], started,
        "one alert since the failure"
    );
    assert_eq!(alerts[0]["annotations"]["description"], failed.as_str());
    assert!(metric(&metrics_text(leader.addr).await, REPOSTS) >= 2.0);
    assert_eq!(
        metric(&metrics_text(follower.addr).await, REPOSTS),
        0.0,
        "only the leader repeats"
    );
    follower.stop().await.unwrap();

    // Restarted: the failure's Event is handled already and not sent again; the repeats go on
    // from the state directory.
    leader.stop().await.unwrap();
    let leader = herald::controller::start(client.clone(), options.clone())
        .await
        .unwrap();
    tokio::time::sleep(2 * resolve_timeout).await;
    let alerts = active_alerts(&am, None).await;
    assert_eq!(
        alerts.len(),
        1,
        "still firing after the restart: {alerts:?}"
    );
    assert_eq!(alerts[0]["startsAt"], started);
    assert!(metric(&metrics_text(leader.addr).await, REPOSTS) >= 2.0);

    // The promotion resolves it, and nothing fires it again.
    set_phase(&client, &ns, "podinfo", "Succeeded").await;
    let promoted = format!("Promotion completed! Scaling down podinfo.{ns}");
    flagger_event(&client, &ns, "podinfo", "podinfo.p1", &promoted, "Normal").await;
    wait_for_alerts(&am, 0).await;
    let after = metric(&metrics_text(leader.addr).await, REPOSTS);
    tokio::time::sleep(2 * resolve_timeout).await;
    assert_eq!(active_alerts(&am, None).await, Vec::<Value>::new());
    assert_eq!(metric(&metrics_text(leader.addr).await, REPOSTS), after);
    leader.stop().await.unwrap();
    let open: Value =
        serde_json::from_slice(&std::fs::read(state.path().join("open.json")).unwrap()).unwrap();
    assert_eq!(open, json!({"open": []}));
    clear_namespace(&client, &ns).await;
}
