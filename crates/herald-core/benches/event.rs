//! Flagger event JSON: strict parsing and byte-compatible serialisation.
//!
//! `cargo bench -p herald-core --bench event`

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use herald_core::bench_fixtures as fixtures;
use herald_core::FlaggerEvent;

fn bench_event(c: &mut Criterion) {
    let body = fixtures::event_json(123_456);
    let event = FlaggerEvent::from_json(body.as_bytes()).unwrap();
    assert_eq!(event.to_json(), body.as_bytes());

    let mut group = c.benchmark_group("event");
    group.throughput(Throughput::Bytes(body.len() as u64));
    group.bench_function("parse", |b| {
        b.iter(|| FlaggerEvent::from_json(std::hint::black_box(body.as_bytes())).unwrap())
    });
    group.bench_function("serialise", |b| {
        b.iter(|| std::hint::black_box(&event).to_json())
    });
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
    targets = bench_event
}
criterion_main!(benches);
