//! Flagger's body read strictly and written back byte for byte; severities as Flagger alerts.

use super::*;

fn event_json(name: &str, namespace: &str) -> String {
    serde_json::json!({
        "name": name, "namespace": namespace, "phase": "Progressing",
        "metadata": {"eventMessage": "m", "eventType": "Normal", "timestamp": "1"}
    })
    .to_string()
}

#[test]
fn names_follow_kubernetes_rules() {
    let field = |name: &str, ns: &str| {
        FlaggerEvent::from_json(event_json(name, ns).as_bytes())
            .err()
            .map(|e| e.field_path().unwrap_or("").to_owned())
    };
    assert_eq!(field("podinfo", "test"), None);
    assert_eq!(field("podinfo.v2-a", "team-1"), None);
    assert_eq!(field(&"a".repeat(253), &"b".repeat(63)), None);
    assert_eq!(field(&"a".repeat(254), "test").as_deref(), Some("name"));
    assert_eq!(field(&"a".repeat(60_000), "test").as_deref(), Some("name"));
    assert_eq!(field("PodInfo", "test").as_deref(), Some("name"));
    assert_eq!(field("pod..info", "test").as_deref(), Some("name"));
    assert_eq!(field("-pod", "test").as_deref(), Some("name"));
    assert_eq!(field("pod info", "test").as_deref(), Some("name"));
    assert_eq!(
        field("podinfo", &"b".repeat(64)).as_deref(),
        Some("namespace")
    );
    assert_eq!(field("podinfo", "a.b").as_deref(), Some("namespace"));
    assert_eq!(field("podinfo", "Test").as_deref(), Some("namespace"));
}

#[test]
fn duplicate_keys_are_refused_by_name() {
    let body = br#"{"name":"a","name":"b","namespace":"n","phase":"Failed","metadata":{"eventMessage":"m","eventType":"Normal","timestamp":"1"}}"#;
    let e = FlaggerEvent::from_json(body).unwrap_err();
    assert_eq!(e.field_path(), Some("name"));
    let body = br#"{"name":"a","namespace":"n","phase":"Failed","metadata":{"eventMessage":"m","eventType":"Normal","eventType":"Warning","timestamp":"1"}}"#;
    let e = FlaggerEvent::from_json(body).unwrap_err();
    assert_eq!(e.field_path(), Some("metadata.eventType"));
    assert!(e.to_string().contains("duplicate key"), "{e}");
    let body = br#"{"name":"a","namespace":"n","phase":"Failed","x":[{"k":1,"k":2}],"metadata":{"eventMessage":"m","eventType":"Normal","timestamp":"1"}}"#;
    let e = FlaggerEvent::from_json(body).unwrap_err();
    assert_eq!(e.field_path(), Some("x[0].k"));
    // Same key in different objects is fine; values round-trip.
    let body = br#"{"name":"a","namespace":"n","phase":"Failed","x":{"name":1.5,"y":[null,true,-3]},"metadata":{"eventMessage":"m","eventType":"Normal","timestamp":"1"}}"#;
    let event = FlaggerEvent::from_json(body).unwrap();
    assert_eq!(
        event.extra["x"],
        serde_json::json!({"name":1.5,"y":[null,true,-3]})
    );
    // Syntax errors still report their position.
    let e = FlaggerEvent::from_json(b"{\"name\": }").unwrap_err();
    assert!(e.to_string().contains("line 1"), "{e}");
}

const FLAGGER: &str = r#"{"name":"podinfo","namespace":"default","phase":"Progressing","checksum":"6d8f9b5c7","metadata":{"eventMessage":"New revision detected! Scaling up podinfo.default","eventType":"Normal","timestamp":"1578607635167"}}"#;

#[test]
fn parses_flagger_payload_and_serialises_it_back_byte_for_byte() {
    let event = FlaggerEvent::from_json(FLAGGER.as_bytes()).unwrap();
    assert_eq!(event.name, "podinfo");
    assert_eq!(event.namespace, "default");
    assert_eq!(event.known_phase(), Some(CanaryPhase::Progressing));
    assert_eq!(event.checksum.as_deref(), Some("6d8f9b5c7"));
    assert_eq!(
        event.message(),
        "New revision detected! Scaling up podinfo.default"
    );
    assert_eq!(event.event_type(), EventType::Normal);
    assert_eq!(event.timestamp_ms(), 1_578_607_635_167);
    assert_eq!(String::from_utf8(event.to_json()).unwrap(), FLAGGER);
}

#[test]
fn payload_without_checksum_and_with_extra_metadata_round_trips() {
    let body = r#"{"name":"podinfo","namespace":"test","phase":"Failed","metadata":{"cluster":"prod-eu","eventMessage":"Canary failed! Scaling down podinfo.test","eventType":"Warning","timestamp":"1"}}"#;
    let event = FlaggerEvent::from_json(body.as_bytes()).unwrap();
    assert_eq!(event.checksum, None);
    assert_eq!(event.metadata["cluster"], "prod-eu");
    assert_eq!(String::from_utf8(event.to_json()).unwrap(), body);
}

#[test]
fn unknown_phase_is_kept() {
    let body = FLAGGER.replace("Progressing", "Paused");
    let event = FlaggerEvent::from_json(body.as_bytes()).unwrap();
    assert_eq!(event.phase, "Paused");
    assert_eq!(event.known_phase(), None);
    assert_eq!(String::from_utf8(event.to_json()).unwrap(), body);
}

#[test]
fn unknown_top_level_fields_are_kept() {
    let body = FLAGGER.replace(r#""phase""#, r#""zeta":[1],"phase""#);
    let event = FlaggerEvent::from_json(body.as_bytes()).unwrap();
    assert_eq!(event.extra["zeta"], serde_json::json!([1]));
    assert!(String::from_utf8(event.to_json())
        .unwrap()
        .ends_with(r#"},"zeta":[1]}"#));
}

/// The event JSON written directly is byte for byte `serde_json` over `Serialize`.
#[test]
fn event_json_is_the_serde_json_serialisation() {
    let mut events = vec![
        FlaggerEvent::from_json(FLAGGER.as_bytes()).unwrap(),
        FlaggerEvent::new("p\u{e9}\"q\\", "ns\n\t", "", "", EventType::Warning, 0),
        FlaggerEvent::new(
            "a",
            "b",
            "Failed",
            "Rolling back \u{1}\u{1F680}",
            EventType::Normal,
            7,
        ),
    ];
    events[1].checksum = Some("c\"1".into());
    events[2]
        .metadata
        .insert("k\"ey\u{7f}".into(), "v\r".into());
    events[2].metadata.clear();
    events[0]
        .extra
        .insert("zeta".into(), serde_json::json!([1, "x\"", {"b": null}]));
    events[0].extra.insert("a\n".into(), serde_json::json!(1.5));
    events[1]
        .metadata
        .insert("k\"ey\u{7f}".into(), "v\r".into());
    for event in &events {
        assert_eq!(
            String::from_utf8(event.to_json()).unwrap(),
            serde_json::to_string(event).unwrap()
        );
    }
}

fn error_of(body: &str) -> String {
    FlaggerEvent::from_json(body.as_bytes())
        .unwrap_err()
        .to_string()
}

#[test]
fn bad_payloads_name_the_field() {
    assert_eq!(error_of(r#"{"namespace":"d"}"#), "name: missing field");
    assert_eq!(
        error_of(&FLAGGER.replace(r#""podinfo""#, "7")),
        "name: expected a string, found a number"
    );
    assert_eq!(
        error_of(&FLAGGER.replace(r#""Normal""#, r#""Info""#)),
        r#"metadata.eventType: expected "Normal" or "Warning", found "Info""#
    );
    assert_eq!(
        error_of(&FLAGGER.replace(r#""1578607635167""#, "1578607635167")),
        "metadata.timestamp: expected a string, found a number"
    );
    assert_eq!(
        error_of(&FLAGGER.replace(r#""1578607635167""#, r#""2020-01-09T22:07:15Z""#)),
        r#"metadata.timestamp: expected unix milliseconds as a string of digits, found "2020-01-09T22:07:15Z""#
    );
    assert_eq!(
        error_of(
            r#"{"name":"a","namespace":"b","phase":"Failed","metadata":{"eventType":"Normal","timestamp":"1"}}"#
        ),
        "metadata.eventMessage: missing field"
    );
    assert_eq!(
        error_of(r#"{"name":"a","namespace":"b","phase":"Failed"}"#),
        "metadata: missing field"
    );
    assert_eq!(error_of("[1]"), "expected a JSON object");
    assert_eq!(
        error_of(&FLAGGER.replace(r#""default""#, r#""""#)),
        "namespace: must not be empty"
    );
}

#[test]
fn syntax_errors_have_a_position() {
    assert_eq!(
        error_of("{\n\"name\": }"),
        "invalid JSON at line 2, column 9: expected value"
    );
}

#[test]
fn severity_follows_what_flagger_alerts_on() {
    let ev = |phase: &str, msg: &str, t: EventType| {
        FlaggerEvent::new("p", "d", phase, msg, t, 1).severity()
    };
    assert_eq!(
        ev(
            "Progressing",
            "New revision detected! Scaling up p.d",
            EventType::Normal
        ),
        Severity::Info
    );
    // As Flagger really sends it: with the previous rollout's phase. Still progress.
    for previous in ["Succeeded", "Failed", "Initialized"] {
        assert_eq!(
            ev(
                previous,
                "New revision detected! Scaling up p.d",
                EventType::Normal
            ),
            Severity::Info,
            "after {previous}"
        );
        let event = FlaggerEvent::new(
            "p",
            "d",
            previous,
            "New revision detected! Scaling up p.d",
            EventType::Normal,
            1,
        );
        assert_eq!(event.rollout_phase(), Some(CanaryPhase::Progressing));
        assert_eq!(event.phase, previous, "the phase Flagger sent is kept");
    }
    assert_eq!(
        ev(
            "Succeeded",
            "Promotion completed! Scaling down p.d",
            EventType::Normal
        ),
        Severity::Success
    );
    assert_eq!(
        ev(
            "Progressing",
            "Rolling back p.d failed checks threshold reached 5",
            EventType::Warning
        ),
        Severity::Error
    );
    assert_eq!(
        ev(
            "Failed",
            "Canary failed! Scaling down p.d",
            EventType::Warning
        ),
        Severity::Error
    );
    assert_eq!(
        ev(
            "Progressing",
            "Halt advancement no values found",
            EventType::Warning
        ),
        Severity::Warning
    );
    assert_eq!(
        ev(
            "WaitingPromotion",
            "Canary promotion is waiting for approval.",
            EventType::Normal
        ),
        Severity::Warning
    );
}
