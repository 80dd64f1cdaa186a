//! The Prometheus text format (0.0.4), for scrapers and tools that ask for it (`promtool`,
//! older Prometheus, many agents), made from the OpenMetrics text `prometheus-client` writes.
//!
//! The two differ in three ways that matter here: OpenMetrics names a counter family without
//! its `_total` suffix in `# HELP`/`# TYPE` while its samples carry it (0.0.4 parsers then see
//! samples without help text), it has `# UNIT` lines, and it ends with `# EOF`.

use std::collections::HashSet;

/// The media type of the Prometheus text format.
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
/// The media type of OpenMetrics text.
pub const OPENMETRICS_TEXT: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Whether an `Accept` header prefers the Prometheus text format over OpenMetrics: it names
/// `text/plain` and not `application/openmetrics-text` with a higher weight. No header (or
/// `*/*`) gets OpenMetrics, as before.
pub fn wants_prometheus_text(accept: Option<&str>) -> bool {
    let Some(accept) = accept else { return false };
    let weight = |media: &str| {
        accept
            .split(',')
            .filter_map(|part| {
                let mut params = part.split(';').map(str::trim);
                let kind = params.next()?;
                if !kind.eq_ignore_ascii_case(media) {
                    return None;
                }
                let q = params
                    .find_map(|p| p.strip_prefix("q="))
                    .and_then(|q| q.parse::<f32>().ok())
                    .unwrap_or(1.0);
                Some(q)
            })
            .fold(None, |best: Option<f32>, q| {
                Some(best.map_or(q, |b| b.max(q)))
            })
    };
    match (weight("text/plain"), weight("application/openmetrics-text")) {
        (Some(text), Some(open)) => text > open,
        (Some(_), None) => true,
        _ => false,
    }
}

/// Rewrites OpenMetrics text as Prometheus text 0.0.4.
pub fn to_prometheus_text(openmetrics: &str) -> String {
    let counters: HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| line.strip_prefix(p).map(|rest| (p, rest)));
        match meta {
            Some((prefix, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                if counters.contains(name) {
                    out.push_str(&format!("{prefix}{name}_total {tail}"));
                } else {
                    out.push_str(line);
                }
            }
            // `_created` samples have no place in 0.0.4 (prometheus-client writes none today).
            None if is_created_sample(line, &counters) => continue,
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

fn is_created_sample(line: &str, counters: &HashSet<&str>) -> bool {
    let name = line.split(['{', ' ']).next().unwrap_or_default();
    name.strip_suffix("_created")
        .is_some_and(|family| counters.contains(family))
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPENMETRICS: &str = "# HELP herald_deliveries Notifications by final outcome.\n\
        # TYPE herald_deliveries counter\n\
        herald_deliveries_total{receiver_type=\"slack\",outcome=\"delivered\"} 3\n\
        # HELP herald_queue_depth Notifications queued.\n\
        # TYPE herald_queue_depth gauge\n\
        herald_queue_depth 0\n\
        # HELP herald_delivery_duration_seconds Time to the outcome.\n\
        # TYPE herald_delivery_duration_seconds histogram\n\
        # UNIT herald_delivery_duration_seconds seconds\n\
        herald_delivery_duration_seconds_sum 0.5\n\
        # EOF\n";

    #[test]
    fn counters_get_their_help_under_the_sample_name() {
        assert_eq!(
            to_prometheus_text(OPENMETRICS),
            "# HELP herald_deliveries_total Notifications by final outcome.\n\
             # TYPE herald_deliveries_total counter\n\
             herald_deliveries_total{receiver_type=\"slack\",outcome=\"delivered\"} 3\n\
             # HELP herald_queue_depth Notifications queued.\n\
             # TYPE herald_queue_depth gauge\n\
             herald_queue_depth 0\n\
             # HELP herald_delivery_duration_seconds Time to the outcome.\n\
             # TYPE herald_delivery_duration_seconds histogram\n\
             herald_delivery_duration_seconds_sum 0.5\n"
        );
    }

    #[test]
    fn the_format_follows_the_accept_header() {
        assert!(!wants_prometheus_text(None));
        assert!(!wants_prometheus_text(Some("*/*")));
        assert!(wants_prometheus_text(Some("text/plain;version=0.0.4")));
        assert!(wants_prometheus_text(Some("text/plain")));
        // Prometheus 2.x's own scrape header: OpenMetrics first.
        assert!(!wants_prometheus_text(Some(
            "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
        )));
        assert!(wants_prometheus_text(Some(
            "application/openmetrics-text;q=0.2, text/plain;q=0.9"
        )));
    }
}
