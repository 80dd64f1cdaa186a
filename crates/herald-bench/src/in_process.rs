//! The in-process run: the real server (`herald::serve::start`) against the sink, in rounds
//! alternating with the baseline (the same POSTs straight to the sink), then at a fixed rate.

use std::path::{Path, PathBuf};
use std::time::Duration;

use herald::delivery::DeliveryConfig;
use herald::policy_files::PolicyFiles;
use herald::serve::{Running, ServeOptions};
use herald_core::bench_fixtures as fixtures;

use crate::args::Args;
use crate::load::{client, closed_loop, fixed_rate};
use crate::process_stats::{mib, proc_status_kib};
use crate::report::Report;
use crate::sink::Sink;

/// Warm-up, `--rounds` closed-loop rounds of Herald then the baseline, then the fixed-rate run
/// of each; Herald is drained at the end, so a lost notification fails the run.
pub(crate) async fn run(args: &Args) -> Report {
    let sink = Sink::start().await;
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut yaml = if args.receivers <= 1 {
        policy_for_every_canary(&sink.url("/hook"))
    } else {
        (0..args.receivers)
            .map(|k| {
                format!(
                    "---\napiVersion: herald.dev/v1alpha1\nkind: NotificationPolicy\nmetadata:\n  name: bench-{k}\n  namespace: {}\nspec:\n  canaries: [team-{k}-api]\n  receivers:\n    - name: sink\n      webhook:\n        url: {}\n",
                    fixtures::EVENT_NAMESPACE,
                    sink.url(&format!("/hook/{k}"))
                )
            })
            .collect()
    };
    if args.extra_policies > 0 {
        yaml.push_str(&fixtures::decoy_policies(
            args.extra_policies,
            &sink.url("/decoy"),
        ));
    }
    std::fs::write(dir.path().join("policies.yaml"), yaml).expect("write the policies");
    let queue_capacity = queue_capacity(args);
    let herald = start_herald(args, dir.path(), None)
        .await
        .expect("Herald starts");
    let herald_url = format!("http://{}/events", herald.addr);
    // Each receiver URL has its own canary; else `--canaries` spreads events over one URL.
    let canaries = if args.receivers > 1 {
        args.receivers
    } else {
        args.canaries
    };
    let sink_url = sink.url("/hook");
    let client = client(args.concurrency);
    let mut offset = 0u64;
    let mut next_offset = |n: usize| {
        let o = offset;
        offset += n as u64;
        o
    };

    // Warm-up: connections, allocator, caches.
    let warm = args.events.min(2_000);
    closed_loop(
        &client,
        &sink,
        &herald_url,
        warm,
        args.concurrency,
        next_offset(warm),
        canaries,
    )
    .await;
    closed_loop(
        &client,
        &sink,
        &sink_url,
        warm,
        args.concurrency,
        next_offset(warm),
        canaries,
    )
    .await;

    let mut herald_phases = Vec::new();
    let mut baseline_phases = Vec::new();
    for round in 1..=args.rounds {
        let h = closed_loop(
            &client,
            &sink,
            &herald_url,
            args.events,
            args.concurrency,
            next_offset(args.events),
            canaries,
        )
        .await;
        let b = closed_loop(
            &client,
            &sink,
            &sink_url,
            args.events,
            args.concurrency,
            next_offset(args.events),
            canaries,
        )
        .await;
        println!(
            "round {round}: herald {:>6.0} ev/s (accepted in {:.2} s, p50 {:.0} us, p99 {:.0} us, cpu {:.1} us/ev, {:.1} cs/ev, {} sink conns, {:.0} ev/s after the last POST)   baseline {:>6.0} ev/s (p50 {:.0} us, p99 {:.0} us, cpu {:.1} us/ev, {:.1} cs/ev)   ratio {:.2}",
            h.rate(),
            h.posted.as_secs_f64(),
            h.p50_us,
            h.p99_us,
            h.cpu_us_per_event(),
            h.switches_per_event(),
            h.connections,
            h.tail_rate,
            b.rate(),
            b.p50_us,
            b.p99_us,
            b.cpu_us_per_event(),
            b.switches_per_event(),
            h.rate() / b.rate()
        );
        herald_phases.push(h);
        baseline_phases.push(b);
    }

    let rate_events = (args.rate * args.rate_seconds).round() as usize;
    let herald_rate = fixed_rate(
        &client,
        &sink,
        &herald_url,
        args.rate,
        args.rate_seconds,
        next_offset(rate_events),
        canaries,
    )
    .await;
    let baseline_rate = fixed_rate(
        &client,
        &sink,
        &sink_url,
        args.rate,
        args.rate_seconds,
        next_offset(rate_events),
        canaries,
    )
    .await;
    println!(
        "fixed rate {}/s: herald p50 {:.0} us p99 {:.0} us max {:.0} us; baseline p50 {:.0} us p99 {:.0} us max {:.0} us",
        args.rate,
        herald_rate.p50_us,
        herald_rate.p99_us,
        herald_rate.max_us,
        baseline_rate.p50_us,
        baseline_rate.p99_us,
        baseline_rate.max_us
    );

    let metrics = herald.state.metrics.encode();
    let dropped = metric(
        &metrics,
        "herald_deliveries_total{receiver_type=\"webhook\",outcome=\"dropped\"}",
    );
    let failed = metric(
        &metrics,
        "herald_deliveries_total{receiver_type=\"webhook\",outcome=\"failed\"}",
    );
    if dropped > 0.0 || failed > 0.0 {
        println!("WARNING: Herald dropped {dropped} and failed {failed} notifications");
    }
    let report = herald.stop().await.expect("Herald stops");
    assert!(report.complete, "Herald drained");
    Report {
        rate: args.rate,
        args_line: format!(
            "--events {} --concurrency {} --rate {} --receivers {} --canaries {} --max-in-flight {} (rounds {}, extra policies {}, queue capacity {}, logs {})",
            args.events,
            args.concurrency,
            args.rate,
            args.receivers,
            args.canaries,
            args.max_in_flight,
            args.rounds,
            args.extra_policies,
            queue_capacity,
            if args.logs { "on" } else { "off" }
        ),
        herald: herald_phases,
        baseline: baseline_phases,
        herald_rate,
        baseline_rate,
        peak_rss_mib: mib(proc_status_kib("self", "VmHWM")),
        rss_mib: mib(proc_status_kib("self", "VmRSS")),
    }
}

/// The value of `sample` (a metric name with its labels) in Prometheus' text format; 0 if absent.
pub(crate) fn metric(text: &str, sample: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(sample)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// One policy sending the events of every `team-*` canary of the benchmark namespace to `url`.
pub(crate) fn policy_for_every_canary(url: &str) -> String {
    format!(
        "apiVersion: herald.dev/v1alpha1\nkind: NotificationPolicy\nmetadata:\n  name: bench\n  namespace: {}\nspec:\n  canaries: [\"team-*\"]\n  receivers:\n    - name: sink\n      webhook:\n        url: {url}\n",
        fixtures::EVENT_NAMESPACE,
    )
}

/// The per-receiver queue capacity: `--queue-capacity`, else enough for a round, so that a
/// burst is measured without drops.
pub(crate) fn queue_capacity(args: &Args) -> usize {
    args.queue_capacity.unwrap_or(args.events.max(1_000))
}

/// Herald in this process on a free loopback port, with the policies in `policies` and, with
/// a `state_dir`, the durable queue.
pub(crate) async fn start_herald(
    args: &Args,
    policies: &Path,
    state_dir: Option<PathBuf>,
) -> herald::Result<Running> {
    herald::serve::start(ServeOptions {
        listen: "127.0.0.1:0".parse().unwrap(),
        files: PolicyFiles {
            paths: vec![policies.to_owned()],
            cluster: "bench".to_owned(),
            namespace: "default".to_owned(),
        },
        delivery: DeliveryConfig {
            queue_capacity: queue_capacity(args),
            max_in_flight: args.max_in_flight,
            ..DeliveryConfig::default()
        },
        body_limit: herald::api::DEFAULT_BODY_LIMIT,
        http: Default::default(),
        state_file: None,
        state_dir,
        drain_timeout: Duration::from_secs(10),
        reload_interval: Duration::from_secs(3600),
        gates: Default::default(),
    })
    .await
}
