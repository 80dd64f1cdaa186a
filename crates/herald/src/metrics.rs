//! Prometheus metrics. Every label has a bounded set of values: receiver types, outcomes,
//! and canary name/namespace (capped, see [`MAX_TRACKED_CANARIES`]). Never a URL or an error
//! message.

use std::sync::Mutex;

use herald_api::CanaryPhase;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Metric, Registry};

pub(crate) use self::tracked::{Class, Tracked};

mod tracked;

/// `herald_canary_status` tracks at most this many canaries, so that events posted with made-up
/// names cannot grow the metric without bound. When full, a new canary takes the place of the
/// longest-finished one (Succeeded or Initialized); a new `Failed` takes the place of the
/// oldest one not failed; otherwise it is refused. Each eviction or refusal is counted
/// (`herald_canary_status_evictions`) and logged.
pub const MAX_TRACKED_CANARIES: usize = 10_000;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReceiverLabels {
    pub receiver_type: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeliveryLabels {
    pub receiver_type: &'static str,
    pub outcome: &'static str,
}

/// How a notification ended.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Outcome {
    Delivered,
    /// Rejected by the receiver, or still failing after the last attempt.
    Failed,
    /// Never sent: Herald stopped first, or (controller) the lease was lost.
    Dropped,
    /// The last attempt timed out after the request was sent: the receiver may have got it.
    Timeout,
    /// The request was in flight when the shutdown deadline passed: the receiver may have
    /// got it. With `--state-dir` it is sent again after the restart.
    Unknown,
    /// Not sent before the shutdown deadline, and kept in `--state-dir`: sent after the
    /// restart.
    Deferred,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Delivered => "delivered",
            Outcome::Failed => "failed",
            Outcome::Dropped => "dropped",
            Outcome::Timeout => "timeout",
            Outcome::Unknown => "unknown",
            Outcome::Deferred => "deferred",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CanaryLabels {
    pub name: String,
    pub namespace: String,
}

/// Why a series was evicted or refused (`finished`, `not_failed`, `refused`), or why an
/// event request was unauthorized (`missing`, `invalid`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

/// Where an event came from: `webhook` (POSTed) or `watch` (a Kubernetes Event).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabels {
    pub source: &'static str,
}

/// A gate call's answer: `gate` one of Flagger's four, `answer` open or closed.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GateAnswerLabels {
    pub gate: &'static str,
    pub answer: &'static str,
}

/// A gate decision: `verdict` Approve or Rollback, `via` slack, link or cli.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GateDecisionLabels {
    pub verdict: &'static str,
    pub via: &'static str,
}

pub struct Metrics {
    registry: Registry,
    pub events_received: Counter,
    pub events_rejected: Counter,
    pub events_duplicate: Family<SourceLabels, Counter>,
    pub deliveries: Family<DeliveryLabels, Counter>,
    pub delivery_attempts: Family<ReceiverLabels, Counter>,
    pub delivery_duration: Family<ReceiverLabels, Histogram>,
    pub render_failures: Counter,
    pub repeats_held: Counter,
    pub reposts: Counter,
    pub reposts_open: Gauge,
    pub queue_depth: Gauge,
    pub canary_status: Family<CanaryLabels, Gauge>,
    pub policies_loaded: Gauge,
    pub policy_reloads: Family<ResultLabels, Counter>,
    pub events_unauthorized: Family<ReasonLabels, Counter>,
    pub canary_evictions: Family<ReasonLabels, Counter>,
    pub events_refused: Family<ReasonLabels, Counter>,
    pub state_commits: Counter,
    pub state_commit_events: Histogram,
    pub gate_answers: Family<GateAnswerLabels, Counter>,
    pub gate_decisions: Family<GateDecisionLabels, Counter>,
    pub gate_refusals: Family<ReasonLabels, Counter>,
    /// The canaries with a `canary_status` series, each with its series' gauge.
    tracked_canaries: Mutex<Tracked<Gauge>>,
    eviction_logs: crate::telemetry::LogLimiter,
}

fn duration_histogram() -> Histogram {
    // 1 ms .. ~65 s: loopback deliveries up to retried ones.
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

/// Registers metrics and hands them back: a metric is a handle on shared values, so the
/// registry (which encodes them) and [`Metrics`] (which updates them) hold the same one.
struct Registrar<'a>(&'a mut Registry);

impl Registrar<'_> {
    /// A new metric of the type asked for, registered.
    fn metric<M: Metric + Clone + Default>(&mut self, name: &str, help: &str) -> M {
        self.register(name, help, M::default())
    }

    /// `metric` registered, for metrics made otherwise than by `Default` (histograms).
    fn register<M: Metric + Clone>(&mut self, name: &str, help: &str, metric: M) -> M {
        self.0.register(name, help, metric.clone());
        metric
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let mut add = Registrar(&mut registry);
        // Registered in this order, which is the order of `/metrics`.
        Metrics {
            events_received: add.metric("herald_events_received", "Flagger events accepted"),
            events_rejected: add
                .metric("herald_events_rejected", "Event bodies rejected as invalid"),
            events_duplicate: add.metric(
                "herald_events_duplicate",
                "Events not sent because the other source had already reported the same Flagger \
                action (source: the report not sent, webhook or watch)",
            ),
            deliveries: add.metric(
                "herald_deliveries",
                "Notifications by final outcome: delivered; failed (after retries or on a \
                non-retryable answer); timeout (the last attempt timed out after the request was \
                sent: may have reached the receiver); unknown (in flight at the shutdown \
                deadline: may have reached the receiver); deferred (not sent by the shutdown \
                deadline, kept in --state-dir for after the restart); dropped (not sent: shutdown \
                without --state-dir, or a lost lease)",
            ),
            delivery_attempts: add.metric(
                "herald_delivery_attempts",
                "HTTP requests made to receivers, retries included",
            ),
            delivery_duration: add.register(
                "herald_delivery_duration_seconds",
                "Time from receiving an event to the final outcome of one of its notifications",
                Family::<ReceiverLabels, Histogram>::new_with_constructor(
                    duration_histogram as fn() -> Histogram,
                ),
            ),
            render_failures: add.metric(
                "herald_render_failures",
                "Notifications whose template failed for an event",
            ),
            repeats_held: add.metric(
                "herald_repeats_held",
                "Notifications not sent because the same message went to the receiver within its \
                policy's repeatInterval",
            ),
            reposts: add.metric(
                "herald_reposts",
                "Notifications posted again, unchanged, because their canary stays failed and the \
                receiver's service would otherwise forget them (every resendInterval)",
            ),
            reposts_open: add.metric(
                "herald_reposts_open",
                "Notifications being posted again while their canary stays failed",
            ),
            queue_depth: add.metric(
                "herald_queue_depth",
                "Notifications queued or being delivered",
            ),
            canary_status: add.metric(
                "herald_canary_status",
                "Last known canary status, as Flagger's flagger_canary_status: 0 progressing, 1 \
                otherwise, 2 failed",
            ),
            policies_loaded: add.metric("herald_policies", "Valid policies in effect"),
            policy_reloads: add.metric(
                "herald_policy_reloads",
                "Policy reloads by result (success or failure)",
            ),
            events_unauthorized: add.metric(
                "herald_events_unauthorized",
                "Event requests refused for a missing or invalid event token (reason: missing, \
                invalid)",
            ),
            canary_evictions: add.metric(
                "herald_canary_status_evictions",
                "herald_canary_status series removed to make room (reason: finished, not_failed) \
                or canaries refused a series because all tracked ones had failed (reason: \
                refused)",
            ),
            events_refused: add.metric(
                "herald_events_refused",
                "Events answered 503 with none of their notifications queued (reason: queue_full, \
                a receiver's queue has no room for them; queue_bytes, --queue-bytes reached; \
                state, the durable queue could not store them; shutdown)",
            ),
            state_commits: add.metric(
                "herald_state_commits",
                "Durable queue (--state-dir) transactions committed to disk",
            ),
            state_commit_events: add.register(
                "herald_state_commit_events",
                "Events stored per durable queue transaction (group commit)",
                Histogram::new(exponential_buckets(1.0, 2.0, 12)),
            ),
            gate_answers: add.metric(
                "herald_gate_answers",
                "Flagger gate calls answered (gate: confirm-rollout, confirm-traffic-increase, \
                confirm-promotion, rollback; answer: open, closed)",
            ),
            gate_decisions: add.metric(
                "herald_gate_decisions",
                "Gate decisions recorded (verdict: Approve, Rollback; via: slack, link, cli)",
            ),
            gate_refusals: add.metric(
                "herald_gate_refusals",
                "Gate decisions refused (reason: slack_signature, not_approver, link_invalid, \
                link_expired, no_policy)",
            ),
            tracked_canaries: Mutex::new(Tracked::default()),
            eviction_logs: crate::telemetry::LogLimiter::new(std::time::Duration::from_secs(10)),
            registry,
        }
    }

    /// Records a canary's phase with Flagger's semantics, so `herald_canary_status > 1` is
    /// Flagger's rollback alert. Unknown phases are ignored.
    pub fn observe_canary(&self, name: &str, namespace: &str, phase: Option<CanaryPhase>) {
        let Some(phase) = phase else { return };
        let status = match phase {
            CanaryPhase::Progressing => 0,
            CanaryPhase::Failed => 2,
            _ => 1,
        };
        let class = Class::of(phase);
        let mut tracked = self.tracked_canaries.lock().expect("metrics lock poisoned");
        // Tracked already (nearly every event): no labels to build, no lookup in the family.
        if let Some(gauge) = tracked.update(name, namespace, class) {
            gauge.set(status);
            return;
        }
        if tracked.len() >= MAX_TRACKED_CANARIES {
            match tracked.make_room(class) {
                Ok(((old_name, old_namespace), reason)) => {
                    self.canary_status.remove(&CanaryLabels {
                        name: old_name.clone(),
                        namespace: old_namespace.clone(),
                    });
                    self.canary_evictions
                        .get_or_create(&ReasonLabels { reason })
                        .inc();
                    if let Some(suppressed) = self.eviction_logs.admit(reason) {
                        tracing::warn!(
                            evicted = %old_name, evicted_namespace = %old_namespace,
                            reason, suppressed, limit = MAX_TRACKED_CANARIES,
                            "herald_canary_status is full: removed a series to make room"
                        );
                    }
                }
                Err(()) => {
                    self.canary_evictions
                        .get_or_create(&ReasonLabels { reason: "refused" })
                        .inc();
                    if let Some(suppressed) = self.eviction_logs.admit("refused") {
                        tracing::error!(
                            canary = %name, namespace = %namespace, phase = ?phase,
                            suppressed, limit = MAX_TRACKED_CANARIES,
                            "herald_canary_status is full of failed canaries: no series for this one"
                        );
                    }
                    return;
                }
            }
        }
        // Under the lock, so that the gauge kept is the family's series (an eviction removes
        // both under it).
        let gauge = self
            .canary_status
            .get_or_create(&CanaryLabels {
                name: name.to_owned(),
                namespace: namespace.to_owned(),
            })
            .clone();
        gauge.set(status);
        tracked.insert((name.to_owned(), namespace.to_owned()), class, gauge);
    }

    pub fn count_unauthorized(&self, reason: &'static str) {
        self.events_unauthorized
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    pub fn count_delivery(&self, receiver_type: &'static str, outcome: Outcome) {
        self.deliveries
            .get_or_create(&DeliveryLabels {
                receiver_type,
                outcome: outcome.as_str(),
            })
            .inc();
    }

    /// The registry in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(metrics: &Metrics, name: &str) -> Option<i64> {
        let labels = CanaryLabels {
            name: name.to_owned(),
            namespace: "ns".to_owned(),
        };
        metrics.canary_status.get(&labels).map(|g| g.get())
    }

    #[test]
    fn full_canary_status_evicts_finished_first_and_keeps_failures() {
        let metrics = Metrics::new();
        metrics.observe_canary("real", "ns", Some(CanaryPhase::Progressing));
        for i in 0..MAX_TRACKED_CANARIES - 1 {
            metrics.observe_canary(&format!("fake-{i}"), "ns", Some(CanaryPhase::Succeeded));
        }
        // Full: a newcomer replaces the oldest finished canary.
        metrics.observe_canary("new", "ns", Some(CanaryPhase::Progressing));
        assert_eq!(status(&metrics, "fake-0"), None);
        assert_eq!(status(&metrics, "new"), Some(0));
        // The real canary fails: it is tracked already, so it updates in place.
        metrics.observe_canary("real", "ns", Some(CanaryPhase::Failed));
        assert_eq!(status(&metrics, "real"), Some(2));
        // Fill with failures: then a Failed newcomer evicts the oldest active canary...
        for i in 0..MAX_TRACKED_CANARIES {
            metrics.observe_canary(&format!("bad-{i}"), "ns", Some(CanaryPhase::Failed));
        }
        assert_eq!(
            status(&metrics, "real"),
            Some(2),
            "a failure is never evicted"
        );
        // ...and with nothing left to evict, a newcomer is refused and counted.
        metrics.observe_canary("late", "ns", Some(CanaryPhase::Progressing));
        assert_eq!(status(&metrics, "late"), None);
        let text = metrics.encode();
        assert!(
            text.contains("herald_canary_status_evictions_total{reason=\"refused\"}"),
            "{}",
            &text[..200]
        );
        assert!(text.contains("herald_canary_status_evictions_total{reason=\"finished\"}"));
    }
}
