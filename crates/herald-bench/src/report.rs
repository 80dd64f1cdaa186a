//! The report: the in-process run and `herald serve`'s measurements as Markdown tables, with
//! the targets they are held to.

use crate::load::Phase;
use crate::serve_process::ServeReport;

/// What the in-process run measured.
pub(crate) struct Report {
    pub(crate) args_line: String,
    pub(crate) rate: f64,
    pub(crate) herald: Vec<Phase>,
    pub(crate) baseline: Vec<Phase>,
    pub(crate) herald_rate: Phase,
    pub(crate) baseline_rate: Phase,
    pub(crate) peak_rss_mib: f64,
    pub(crate) rss_mib: f64,
}

impl Report {
    pub(crate) fn print(&self, serve: Option<&ServeReport>) {
        let med = |phases: &[Phase], f: fn(&Phase) -> f64| {
            median(&phases.iter().map(f).collect::<Vec<_>>())
        };
        let h_rate = med(&self.herald, Phase::rate);
        let b_rate = med(&self.baseline, Phase::rate);
        let ok = |met: bool| if met { "met" } else { "NOT met" };
        println!();
        println!("## herald-bench {}", self.args_line);
        println!();
        println!("| measurement | Herald | baseline (raw POST) |");
        println!("|---|---|---|");
        println!(
            "| throughput, events/s (median of {} rounds) | {:.0} | {:.0} |",
            self.herald.len(),
            h_rate,
            b_rate
        );
        println!(
            "| latency p50 / p99 / max, us (burst) | {:.0} / {:.0} / {:.0} | {:.0} / {:.0} / {:.0} |",
            med(&self.herald, |p| p.p50_us),
            med(&self.herald, |p| p.p99_us),
            med(&self.herald, |p| p.max_us),
            med(&self.baseline, |p| p.p50_us),
            med(&self.baseline, |p| p.p99_us),
            med(&self.baseline, |p| p.max_us),
        );
        println!(
            "| latency p50 / p99 / max, us (fixed {:.0} events/s) | {:.0} / {:.0} / {:.0} | {:.0} / {:.0} / {:.0} |",
            self.rate,
            self.herald_rate.p50_us,
            self.herald_rate.p99_us,
            self.herald_rate.max_us,
            self.baseline_rate.p50_us,
            self.baseline_rate.p99_us,
            self.baseline_rate.max_us,
        );
        println!(
            "| CPU time per event, us (whole process: load generator + Herald + sink) | {:.1} | {:.1} |",
            med(&self.herald, Phase::cpu_us_per_event),
            med(&self.baseline, Phase::cpu_us_per_event),
        );
        let lost: usize = self
            .herald
            .iter()
            .chain(&self.baseline)
            .chain([&self.herald_rate, &self.baseline_rate])
            .map(|p| p.events - p.delivered + p.failed_posts)
            .sum();
        println!(
            "| process RSS now / peak (VmHWM), MiB | {:.1} / {:.1} | |",
            self.rss_mib, self.peak_rss_mib
        );
        println!();
        println!(
            "Herald / baseline throughput: {:.2} (target >= 0.8: {})",
            h_rate / b_rate,
            ok(h_rate / b_rate >= 0.8)
        );
        println!(
            "p99 at {:.0} events/s: {:.2} ms (target <= 5 ms: {})",
            self.rate,
            self.herald_rate.p99_us / 1e3,
            ok(self.herald_rate.p99_us <= 5_000.0)
        );
        if lost > 0 {
            println!("WARNING: {lost} events were not delivered or not accepted");
        }
        if let Some(s) = serve {
            println!();
            println!("| herald serve (own process) | value |");
            println!("|---|---|");
            println!(
                "| ready (spawn to /readyz 200), 1 policy: median / min / max of {} | {:.1} / {:.1} / {:.1} ms |",
                s.ready_ms.len(),
                median(&s.ready_ms),
                s.ready_ms.iter().copied().fold(f64::INFINITY, f64::min),
                s.ready_ms.iter().copied().fold(0.0, f64::max)
            );
            println!("| idle RSS, 1 policy | {:.1} MiB |", s.idle_rss_mib);
            println!(
                "| RSS after {} events / peak | {:.1} / {:.1} MiB |",
                s.loaded_events, s.loaded_rss_mib, s.loaded_hwm_mib
            );
            println!(
                "| latency at {:.0} events/s, POST to delivered: p50 / p99 / max | {:.0} / {:.0} / {:.0} µs |",
                self.rate, s.rate_us[0], s.rate_us[1], s.rate_us[2]
            );
            println!(
                "| ready with {} policies: median of {} | {:.0} ms |",
                s.big_policies,
                s.big_ready_ms.len(),
                median(&s.big_ready_ms)
            );
            println!(
                "| RSS with {} policies / peak while loading | {:.1} / {:.1} MiB |",
                s.big_policies, s.big_rss_mib, s.big_hwm_mib
            );
            println!();
            println!(
                "ready <= 100 ms: {}; idle RSS <= 20 MiB: {}; RSS at {} policies <= 100 MiB: {}",
                ok(median(&s.ready_ms) <= 100.0),
                ok(s.idle_rss_mib <= 20.0),
                s.big_policies,
                ok(s.big_rss_mib <= 100.0)
            );
        }
    }
}

pub(crate) fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}
