//! Measurements of `herald controller` at scale against a real kube-apiserver, run by
//! `tests/e2e/measure.sh` (not by CI: creating 10,000 Canaries takes minutes). Prints the
//! resident memory of the release binary, the API requests it makes per minute when idle and
//! per 1,000 Events, and the state's bytes per canary. BENCHMARKS.md keeps the figures.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::cluster::*;
use common::*;
use futures::{stream, StreamExt};
use herald_api::flagger::Canary;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;

const NAMESPACES: usize = 100;

fn canaries() -> usize {
    std::env::var("HERALD_MEASURE_CANARIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000)
}

/// Every request the API server has answered so far (its own counter).
async fn api_requests(client: &Client) -> f64 {
    let text = client
        .request_text(http::Request::get("/metrics").body(Vec::new()).unwrap())
        .await
        .unwrap();
    text.lines()
        .filter(|l| l.starts_with("apiserver_request_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn rss_kib(child: &Child) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: tests/e2e/measure.sh"]
async fn measure_controller_at_scale() {
    let client = client().await;
    install_crds(&client).await;
    let herald_ns = namespace(&client, "herald-measure").await;
    let sink = Sink::start().await;
    let total = canaries();
    let mut namespaces = Vec::new();
    for i in 0..NAMESPACES {
        namespaces.push(namespace(&client, &format!("team{i:03}")).await);
    }
    let created = Instant::now();
    stream::iter(0..total)
        .for_each_concurrent(16, |i| {
            let client = client.clone();
            let ns = namespaces[i % NAMESPACES].clone();
            async move {
                let name = format!("service-{i:05}");
                let canary: Canary = serde_json::from_value(json!({
                    "apiVersion": "flagger.app/v1beta1", "kind": "Canary",
                    "metadata": {"name": name, "namespace": ns, "labels": {"team": ns}},
                    "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}}
                }))
                .unwrap();
                let api = Api::<Canary>::namespaced(client, &ns);
                let _ = api.create(&PostParams::default(), &canary).await;
                api.patch_status(
                    &name,
                    &PatchParams::apply("flagger-measure").force(),
                    &Patch::Apply(json!({"apiVersion": "flagger.app/v1beta1", "kind": "Canary",
                        "status": {"phase": "Succeeded", "lastAppliedSpec": "rev-1", "canaryWeight": 0}})),
                )
                .await
                .unwrap();
            }
        })
        .await;
    eprintln!("created {total} canaries in {:?}", created.elapsed());
    let policy: herald_api::ClusterNotificationPolicy = serde_json::from_value(json!({
        "apiVersion": "herald.dev/v1alpha1", "kind": "ClusterNotificationPolicy",
        "metadata": {"name": "measure"},
        "spec": {"receivers": [{"name": "hook", "webhook": {"url": sink.url("/hook")}}]}
    }))
    .unwrap();
    let _ = Api::<herald_api::ClusterNotificationPolicy>::all(client.clone())
        .create(&PostParams::default(), &policy)
        .await;

    let binary = std::env::var("HERALD_BIN").unwrap_or_else(|_| {
        concat!(env!("CARGO_MANIFEST_DIR"), "/../../target/release/herald").to_owned()
    });
    let mut herald = Command::new(&binary)
        .args([
            "controller",
            "--listen=127.0.0.1:0",
            "--namespace",
            &herald_ns,
            "--log-format=json",
            "--log-level=warn",
        ])
        .stdout(Stdio::null())
        .spawn()
        .expect("the release binary (cargo build --release -p herald)");
    tokio::time::sleep(Duration::from_secs(30)).await;
    let rss_loaded = rss_kib(&herald);

    let before = api_requests(&client).await;
    tokio::time::sleep(Duration::from_secs(60)).await;
    let idle = api_requests(&client).await - before - 1.0;

    // 1,000 Events on 1,000 canaries.
    let before = api_requests(&client).await;
    stream::iter(0..1000)
        .for_each_concurrent(16, |i| {
            let client = client.clone();
            let ns = namespaces[i % NAMESPACES].clone();
            async move {
                let canary = format!("service-{i:05}");
                flagger_event(
                    &client,
                    &ns,
                    &canary,
                    &format!("{canary}.m{i}"),
                    &format!("New revision detected! Scaling up {canary}.{ns}"),
                    "Normal",
                )
                .await;
            }
        })
        .await;
    sink.wait_for(1000, Duration::from_secs(120)).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let per_thousand = api_requests(&client).await - before - 1000.0 - 1.0;
    let rss_after = rss_kib(&herald);

    let configmaps = Api::<ConfigMap>::namespaced(client.clone(), &herald_ns)
        .list(&ListParams::default())
        .await
        .unwrap();
    let (mut bytes, mut records) = (0usize, 0usize);
    for cm in &configmaps.items {
        for (k, v) in cm.data.iter().flatten() {
            bytes += k.len() + v.len();
            records += 1;
        }
    }
    // SIGTERM, as in a rolling update: Herald drains and saves its state.
    let _ = Command::new("kill")
        .args(["-TERM", &herald.id().to_string()])
        .status();
    let _ = herald.wait();
    let report = format!(
        "canaries: {total}\nRSS after listing them: {:.1} MiB\nRSS after 1,000 Events: {:.1} MiB\n\
         API requests per minute, idle: {idle}\nAPI requests per 1,000 Events (beyond the Events): {per_thousand}\n\
         state: {records} records, {bytes} bytes, {} bytes per canary, {} ConfigMaps\n",
        rss_loaded as f64 / 1024.0,
        rss_after as f64 / 1024.0,
        bytes / records.max(1),
        configmaps.items.len(),
    );
    eprintln!("{report}");
    let out = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../target/controller-measurements.txt"
    );
    std::fs::write(out, report).unwrap();
}
