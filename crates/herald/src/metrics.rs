//! Prometheus metrics. Every label has a bounded set of values: receiver types, outcomes,
//! and canary name/namespace (capped, see [`MAX_TRACKED_CANARIES`]). Never a URL or an error
//! message.

use std::collections::HashSet;
use std::sync::Mutex;

use herald_api::CanaryPhase;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// `herald_canary_status` tracks at most this many canaries, so that events posted with made-up
/// names cannot grow the metric without bound.
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
    /// Never sent: the receiver's queue was full, or Herald stopped first.
    Dropped,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Delivered => "delivered",
            Outcome::Failed => "failed",
            Outcome::Dropped => "dropped",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CanaryLabels {
    pub name: String,
    pub namespace: String,
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
    pub queue_depth: Gauge,
    pub canary_status: Family<CanaryLabels, Gauge>,
    pub policies_loaded: Gauge,
    pub policy_reloads: Family<ResultLabels, Counter>,
    tracked_canaries: Mutex<HashSet<(String, String)>>,
}

fn duration_histogram() -> Histogram {
    // 1 ms .. ~65 s: loopback deliveries up to retried ones.
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let events_received = Counter::default();
        registry.register(
            "herald_events_received",
            "Flagger events accepted",
            events_received.clone(),
        );
        let events_rejected = Counter::default();
        registry.register(
            "herald_events_rejected",
            "Event bodies rejected as invalid",
            events_rejected.clone(),
        );
        let events_duplicate = Family::<SourceLabels, Counter>::default();
        registry.register(
            "herald_events_duplicate",
            "Events not sent because the other source had already reported the same Flagger action (source: the report not sent, webhook or watch)",
            events_duplicate.clone(),
        );
        let deliveries = Family::<DeliveryLabels, Counter>::default();
        registry.register(
            "herald_deliveries",
            "Notifications by final outcome: delivered, failed (after retries or on a non-retryable answer), dropped (queue full or shutdown)",
            deliveries.clone(),
        );
        let delivery_attempts = Family::<ReceiverLabels, Counter>::default();
        registry.register(
            "herald_delivery_attempts",
            "HTTP requests made to receivers, retries included",
            delivery_attempts.clone(),
        );
        let delivery_duration = Family::<ReceiverLabels, Histogram>::new_with_constructor(
            duration_histogram as fn() -> Histogram,
        );
        registry.register(
            "herald_delivery_duration_seconds",
            "Time from receiving an event to the final outcome of one of its notifications",
            delivery_duration.clone(),
        );
        let render_failures = Counter::default();
        registry.register(
            "herald_render_failures",
            "Notifications whose template failed for an event",
            render_failures.clone(),
        );
        let repeats_held = Counter::default();
        registry.register(
            "herald_repeats_held",
            "Notifications not sent because the same message went to the receiver within its policy's repeatInterval",
            repeats_held.clone(),
        );
        let queue_depth = Gauge::default();
        registry.register(
            "herald_queue_depth",
            "Notifications queued or being delivered",
            queue_depth.clone(),
        );
        let canary_status = Family::<CanaryLabels, Gauge>::default();
        registry.register(
            "herald_canary_status",
            "Last known canary status, as Flagger's flagger_canary_status: 0 progressing, 1 otherwise, 2 failed",
            canary_status.clone(),
        );
        let policies_loaded = Gauge::default();
        registry.register(
            "herald_policies",
            "Valid policies in effect",
            policies_loaded.clone(),
        );
        let policy_reloads = Family::<ResultLabels, Counter>::default();
        registry.register(
            "herald_policy_reloads",
            "Policy reloads by result (success or failure)",
            policy_reloads.clone(),
        );
        Metrics {
            registry,
            events_received,
            events_rejected,
            events_duplicate,
            deliveries,
            delivery_attempts,
            delivery_duration,
            render_failures,
            repeats_held,
            queue_depth,
            canary_status,
            policies_loaded,
            policy_reloads,
            tracked_canaries: Mutex::new(HashSet::new()),
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
        {
            let mut tracked = self.tracked_canaries.lock().expect("metrics lock poisoned");
            let key = (name.to_owned(), namespace.to_owned());
            if !tracked.contains(&key) {
                if tracked.len() >= MAX_TRACKED_CANARIES {
                    return;
                }
                tracked.insert(key);
            }
        }
        self.canary_status
            .get_or_create(&CanaryLabels {
                name: name.to_owned(),
                namespace: namespace.to_owned(),
            })
            .set(status);
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
