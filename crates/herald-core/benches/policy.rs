//! Matching one event against 10, 1,000 and 10,000 policies (`PolicySet::matching`), and
//! matching plus rendering every notification (`PolicySet::deliveries`).
//!
//! `cargo bench -p herald-core --bench policy`

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use herald_core::bench_fixtures as fixtures;
use herald_core::{load_sources, FlaggerEvent, MatchInput, PolicySet};

fn policy_set(n: usize) -> PolicySet {
    let yaml = fixtures::policies_yaml(n, "https://hooks.example.com");
    let mut loaded = load_sources([("bench.yaml", yaml.as_str())]);
    let set = loaded.build("prod-eu", "herald");
    assert!(loaded.problems.is_empty(), "{:?}", loaded.problems);
    assert_eq!(set.policies().len(), n);
    set
}

fn bench_policy(c: &mut Criterion) {
    let event = FlaggerEvent::from_json(fixtures::event_json(1).as_bytes()).unwrap();
    let input = MatchInput::event(&event);
    let sets: Vec<(usize, PolicySet)> = [10, 1_000, 10_000]
        .into_iter()
        .map(|n| (n, policy_set(n)))
        .collect();
    let single = FlaggerEvent::from_json(fixtures::single_event_json().as_bytes()).unwrap();
    let single = MatchInput::event(&single);
    for (_, set) in &sets {
        assert_eq!(set.matching(&input).len(), fixtures::HOT_POLICIES);
        let deliveries = set.notifications(&input, None);
        assert_eq!(deliveries.len(), fixtures::HOT_POLICIES);
        assert!(deliveries.iter().all(Result::is_ok));
        assert_eq!(set.notifications(&single, None).len(), 1);
    }

    let mut group = c.benchmark_group("matching");
    group.throughput(Throughput::Elements(1));
    for (n, set) in &sets {
        group.bench_with_input(BenchmarkId::from_parameter(n), set, |b, set| {
            b.iter(|| set.matching(std::hint::black_box(&input)))
        });
    }
    group.finish();

    // Match and render: the 5 notifications (one per receiver kind) the event produces.
    let mut group = c.benchmark_group("deliveries");
    group.throughput(Throughput::Elements(1));
    for (n, set) in &sets {
        group.bench_with_input(BenchmarkId::from_parameter(n), set, |b, set| {
            b.iter(|| set.notifications(std::hint::black_box(&input), None))
        });
    }
    group.finish();

    // Match and render an event that produces one (Slack) notification.
    let mut group = c.benchmark_group("deliveries_single");
    group.throughput(Throughput::Elements(1));
    for (n, set) in &sets {
        group.bench_with_input(BenchmarkId::from_parameter(n), set, |b, set| {
            b.iter(|| set.notifications(std::hint::black_box(&single), None))
        });
    }
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(30)
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench_policy
}
criterion_main!(benches);
