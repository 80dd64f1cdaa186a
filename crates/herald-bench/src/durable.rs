//! `--durable`: Herald's throughput with the durable queue (`--state-dir`) on and off, two
//! in-process Heralds in alternating rounds of the same run, so the machine's noise falls on
//! both alike.

use crate::args::Args;
use crate::in_process::{metric, policy_for_every_canary, start_herald};
use crate::load::{client, closed_loop, Phase};
use crate::report::median;
use crate::sink::Sink;

/// Throughput with the durable queue on and off, in alternating rounds of the same run.
pub(crate) async fn compare_durable(args: &Args) {
    let sink = Sink::start().await;
    let dir = tempfile::tempdir().expect("temporary directory");
    let yaml = policy_for_every_canary(&sink.url("/hook"));
    std::fs::write(dir.path().join("policies.yaml"), yaml).expect("write the policies");
    let state = tempfile::tempdir_in(std::env::current_dir().unwrap_or(std::env::temp_dir()))
        .expect("state directory");
    let memory = start_herald(args, dir.path(), None)
        .await
        .expect("Herald starts");
    let durable = start_herald(args, dir.path(), Some(state.path().to_owned()))
        .await
        .expect("Herald starts with a state dir");
    let urls = [
        format!("http://{}/events", memory.addr),
        format!("http://{}/events", durable.addr),
    ];
    let client = client(args.concurrency);
    let mut offset = 0u64;
    let warm = args.events.min(2_000);
    for url in &urls {
        closed_loop(
            &client,
            &sink,
            url,
            warm,
            args.concurrency,
            offset,
            args.canaries,
        )
        .await;
        offset += warm as u64;
    }
    let (mut off, mut on) = (Vec::new(), Vec::new());
    for round in 1..=args.rounds {
        let m = closed_loop(
            &client,
            &sink,
            &urls[0],
            args.events,
            args.concurrency,
            offset,
            args.canaries,
        )
        .await;
        offset += args.events as u64;
        let d = closed_loop(
            &client,
            &sink,
            &urls[1],
            args.events,
            args.concurrency,
            offset,
            args.canaries,
        )
        .await;
        offset += args.events as u64;
        println!(
            "round {round}: in memory {:>6.0} ev/s (p50 {:.0} us, cpu {:.1} us/ev)   --state-dir {:>6.0} ev/s (p50 {:.0} us, cpu {:.1} us/ev)   ratio {:.2}",
            m.rate(), m.p50_us, m.cpu_us_per_event(), d.rate(), d.p50_us, d.cpu_us_per_event(), d.rate() / m.rate()
        );
        off.push(m);
        on.push(d);
    }
    let text = durable.state.metrics.encode();
    let commits = metric(&text, "herald_state_commits_total");
    let batches = metric(&text, "herald_state_commit_events_count");
    let stored = metric(&text, "herald_state_commit_events_sum");
    let rate = |phases: &[Phase]| median(&phases.iter().map(Phase::rate).collect::<Vec<_>>());
    let cpu = |phases: &[Phase]| {
        median(
            &phases
                .iter()
                .map(Phase::cpu_us_per_event)
                .collect::<Vec<_>>(),
        )
    };
    let p50 = |phases: &[Phase]| median(&phases.iter().map(|p| p.p50_us).collect::<Vec<_>>());
    let (r_off, r_on) = (rate(&off), rate(&on));
    println!();
    println!("| | in memory | --state-dir | ratio |");
    println!("|---|---:|---:|---:|");
    println!(
        "| throughput (events/s, median) | {r_off:.0} | {r_on:.0} | {:.2} |",
        r_on / r_off
    );
    println!(
        "| CPU per event (us, median) | {:.1} | {:.1} | {:.2} |",
        cpu(&off),
        cpu(&on),
        cpu(&on) / cpu(&off)
    );
    println!(
        "| p50 latency POST to sink (us) | {:.0} | {:.0} | {:.2} |",
        p50(&off),
        p50(&on),
        p50(&on) / p50(&off)
    );
    println!(
        "| wall time per event (us) | {:.1} | {:.1} | +{:.1} |",
        1e6 / r_off,
        1e6 / r_on,
        1e6 / r_on - 1e6 / r_off
    );
    println!(
        "\ndurable queue: {stored:.0} events stored in {batches:.0} durable commits ({:.1} events per fsync, group commit); {commits:.0} transactions in all, removals included",
        stored / batches.max(1.0)
    );
    let _ = memory.stop().await;
    let _ = durable.stop().await;
}
