//! End-to-end benchmark of Herald, all on loopback:
//!
//! ```text
//! load generator --POST /events--> Herald (in process) --webhook--> sink
//! load generator --POST----------------------------------------->  sink   (baseline)
//! ```
//!
//! The real server (`herald::serve::start`) loads a policy file whose webhook receiver points
//! at a sink on 127.0.0.1 that timestamps every arrival. Events carry a sequence number, so
//! each one's latency is measured from just before it is POSTed to the moment the sink has
//! its notification. The baseline POSTs the same bodies with the same concurrency straight to
//! the sink: the cost of the HTTP hop alone. Then `herald serve` itself is spawned to time
//! its readiness and read its memory.
//!
//! `cargo run --release -p herald-bench -- --events 20000 --concurrency 32 [--rate 1000]`
//!
//! Every loop is bounded in count and time; the program exits by itself.

mod args;
mod durable;
mod in_process;
mod load;
mod process_stats;
mod report;
mod serve_process;
mod sink;

use std::time::Duration;

use clap::Parser;

use args::Args;
use process_stats::load_average;
use sink::Sink;

/// How long any one phase may take before the benchmark gives up on it.
const PHASE_TIMEOUT: Duration = Duration::from_secs(120);

fn main() {
    let args = Args::parse();
    assert!(args.events > 0 && args.concurrency > 0 && args.rounds > 0);
    if args.logs {
        tracing_subscriber::fmt()
            .with_max_level(tracing_subscriber::filter::LevelFilter::INFO)
            .with_writer(std::io::sink)
            .init();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    println!(
        "herald-bench: {} CPUs, load average {}, {} events x {} rounds, concurrency {}, fixed rate {}/s for {} s",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load_average(),
        args.events,
        args.rounds,
        args.concurrency,
        args.rate,
        args.rate_seconds
    );
    if args.durable {
        runtime.block_on(durable::compare_durable(&args));
        return;
    }
    let report = runtime.block_on(in_process::run(&args));
    let serve = if args.skip_serve {
        None
    } else {
        // The sink keeps running on the runtime for the subprocess' deliveries.
        let sink = runtime.block_on(Sink::start());
        Some(serve_process::measure_serve(&args, &runtime, &sink))
    };
    report.print(serve.as_ref());
}
