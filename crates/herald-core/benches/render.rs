//! Rendering one notification per receiver kind: templates (title, text or body) and the
//! receiver's JSON payload, through `PolicySet::deliveries` restricted to one policy.
//!
//! `cargo bench -p herald-core --bench render`

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use herald_core::bench_fixtures as fixtures;
use herald_core::receivers::slack::{self, SlackOptions};
use herald_core::receivers::Message;
use herald_core::template::{self, TemplateEngine};
use herald_core::{load_sources, FlaggerEvent, MatchInput, PolicyId};

fn bench_render(c: &mut Criterion) {
    let yaml = fixtures::hot_policies("https://hooks.example.com");
    let mut loaded = load_sources([("bench.yaml", yaml.as_str())]);
    let set = loaded.build("prod-eu", "herald");
    assert!(loaded.problems.is_empty(), "{:?}", loaded.problems);
    let event = FlaggerEvent::from_json(fixtures::event_json(1).as_bytes()).unwrap();
    let input = MatchInput::event(&event);

    let mut group = c.benchmark_group("render");
    group.throughput(Throughput::Elements(1));
    for (kind, id) in [
        ("slack", PolicyId::namespaced("payments", "hot-slack")),
        (
            "msteams_adaptive",
            PolicyId::namespaced("payments", "hot-teams"),
        ),
        ("msteams_messagecard", PolicyId::cluster("hot-connector")),
        (
            "webhook_default",
            PolicyId::namespaced("payments", "hot-webhook"),
        ),
        ("webhook_body_template", PolicyId::cluster("hot-body")),
    ] {
        let index = set.find(&id).expect("hot policy loaded");
        let once = set.notifications(&input, Some(index));
        assert!(matches!(once.as_slice(), [Ok(_)]), "{kind}: {once:?}");
        group.bench_function(kind, |b| {
            b.iter(|| set.notifications(std::hint::black_box(&input), Some(index)))
        });
    }
    group.finish();

    // The parts of a render, to see what dominates.
    let mut group = c.benchmark_group("render_parts");
    group.bench_function("event_context", |b| {
        b.iter(|| template::event_context(std::hint::black_box(&event), "prod-eu", None))
    });
    let mut context = template::event_context(&event, "prod-eu", None);
    group.bench_function("set_delivery", |b| {
        b.iter(|| template::set_delivery(&mut context, "payments/hot-slack", "deploys"))
    });
    let mut engine = TemplateEngine::new();
    let title = engine.compile(template::DEFAULT_TITLE).unwrap();
    let text = engine.compile(template::DEFAULT_TEXT).unwrap();
    group.bench_function("default_title", |b| {
        b.iter(|| {
            engine
                .render(title, std::hint::black_box(&context))
                .unwrap()
        })
    });
    group.bench_function("default_text", |b| {
        b.iter(|| engine.render(text, std::hint::black_box(&context)).unwrap())
    });
    let message = Message {
        title: "[prod-eu] team-payments-api.payments",
        text: event.message(),
        event: &event,
        cluster: "prod-eu",
    };
    let slack = SlackOptions {
        channel: Some("#deploys".to_owned()),
        username: Some("herald".to_owned()),
        icon_emoji: Some(":rocket:".to_owned()),
        icon_url: None,
    };
    group.bench_function("slack_payload", |b| {
        b.iter(|| slack::slack(&slack, std::hint::black_box(&message)))
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
    targets = bench_render
}
criterion_main!(benches);
