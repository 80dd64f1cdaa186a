//! The command line: sizes, rates and which measurements to run.

use std::path::PathBuf;

use clap::Parser;

#[derive(Debug, Parser)]
#[command(
    name = "herald-bench",
    about = "End-to-end benchmark of Herald on loopback"
)]
pub(crate) struct Args {
    /// Events per throughput round.
    #[arg(long, default_value_t = 20_000)]
    pub(crate) events: usize,
    /// Requests in flight at once (each on its own keep-alive connection).
    #[arg(long, default_value_t = 32)]
    pub(crate) concurrency: usize,
    /// Events per second in the fixed-rate latency run.
    #[arg(long, default_value_t = 1_000.0)]
    pub(crate) rate: f64,
    /// Length of the fixed-rate run, in seconds.
    #[arg(long, default_value_t = 5.0)]
    pub(crate) rate_seconds: f64,
    /// Throughput rounds (Herald and baseline alternate; the median is reported).
    #[arg(long, default_value_t = 3)]
    pub(crate) rounds: usize,
    /// Non-matching policies loaded next to the one that matches (see the fixtures).
    #[arg(long, default_value_t = 0)]
    pub(crate) extra_policies: usize,
    /// Receiver URLs the events are spread over (one policy and webhook URL per canary).
    #[arg(long, default_value_t = 1)]
    pub(crate) receivers: usize,
    /// Canaries the events are spread over, all to the one receiver URL (with
    /// `--receivers 1`). Herald sends one canary's notifications one at a time, in order,
    /// and different canaries' concurrently (up to `--max-in-flight` per URL).
    #[arg(long, default_value_t = 1)]
    pub(crate) canaries: usize,
    /// Herald's requests in flight per receiver URL.
    #[arg(long, default_value_t = 8)]
    pub(crate) max_in_flight: usize,
    /// Per-receiver queue capacity of the in-process Herald (default: enough for a round,
    /// so that a burst is measured without drops).
    #[arg(long)]
    pub(crate) queue_capacity: Option<usize>,
    /// Format Herald's info logs (to nowhere), as `herald serve` does; off by default.
    #[arg(long)]
    pub(crate) logs: bool,
    /// Skip the `herald serve` readiness and memory measurements.
    #[arg(long)]
    pub(crate) skip_serve: bool,
    /// The `herald` binary (default: next to this one, built if missing).
    #[arg(long)]
    pub(crate) herald_bin: Option<PathBuf>,
    /// Only compare the durable queue (`--state-dir`) on and off: two in-process Heralds,
    /// rounds alternating, then exit.
    #[arg(long)]
    pub(crate) durable: bool,
}
