use herald_api::{Decision, GateType, Verdict};

use super::slack::{parse_interaction, verify_signature, SignatureError};
use super::*;

fn key() -> RevisionKey {
    RevisionKey {
        namespace: "test".into(),
        canary: "podinfo".into(),
        revision: "7c4d1a2f9e".into(),
    }
}

fn decision(gate: Option<GateType>, verdict: Verdict) -> Decision {
    Decision {
        gate,
        verdict,
        by: "<@U1>".into(),
        via: "slack".into(),
        at: "2026-12-02T10:00:00Z".into(),
    }
}

#[test]
fn flagger_gate_payload_is_read_and_needs_its_checksum() {
    let call = GateCall::from_json(
        br#"{"name":"podinfo","namespace":"test","phase":"WaitingPromotion","checksum":"7c4d1a2f9e","metadata":null}"#,
    )
    .unwrap();
    assert_eq!(call.key(), key());
    let error = GateCall::from_json(br#"{"name":"podinfo","namespace":"test","phase":"Waiting"}"#)
        .unwrap_err();
    assert_eq!(error.field, "checksum");
    assert!(error.message.contains("bound to a revision"), "{error}");
    assert_eq!(GateCall::from_json(b"[]").unwrap_err().field, "body");
}

#[test]
fn a_gate_is_closed_until_approved_and_only_for_its_revision_and_gate() {
    let mut record = key().record();
    let closed = answer(&key(), GateType::ConfirmPromotion, Some(&record));
    assert_eq!(
        (closed.status(), closed.message.as_str()),
        (
            403,
            "closed: promotion of podinfo.test (revision 7c4d1a2f) waits for approval"
        )
    );
    assert_eq!(
        answer(&key(), GateType::ConfirmPromotion, None).status(),
        403
    );
    assert_eq!(
        record_decision(
            &mut record,
            decision(Some(GateType::ConfirmPromotion), Verdict::Approve)
        ),
        Recorded::New
    );
    let open = answer(&key(), GateType::ConfirmPromotion, Some(&record));
    assert_eq!(
        (open.status(), open.message.as_str()),
        (
            200,
            "promotion of podinfo.test (revision 7c4d1a2f) approved by <@U1> via slack"
        )
    );
    // Another gate of the same revision is not opened by it, nor is the rollback gate.
    assert_eq!(
        answer(&key(), GateType::ConfirmRollout, Some(&record)).status(),
        403
    );
    assert_eq!(
        answer(&key(), GateType::Rollback, Some(&record)).status(),
        403
    );
}

#[test]
fn a_rollback_opens_the_rollback_gate_and_closes_the_others_for_good() {
    let mut record = key().record();
    record_decision(
        &mut record,
        decision(Some(GateType::ConfirmPromotion), Verdict::Rollback),
    );
    let rollback = answer(&key(), GateType::Rollback, Some(&record));
    assert_eq!(rollback.status(), 200);
    assert_eq!(
        rollback.message,
        "roll back podinfo.test (revision 7c4d1a2f): requested by <@U1> via slack"
    );
    assert_eq!(
        answer(&key(), GateType::ConfirmPromotion, Some(&record)).status(),
        403
    );
    // The first decision counts: approving after a rollback changes nothing.
    let late = decision(Some(GateType::ConfirmPromotion), Verdict::Approve);
    assert!(
        matches!(record_decision(&mut record, late), Recorded::AlreadyDecided(d) if d.verdict == Verdict::Rollback)
    );
    assert_eq!(record.decisions.len(), 1);
}

#[test]
fn each_gate_is_asked_once_per_revision() {
    let mut record = key().record();
    assert!(mark_asked(
        &mut record,
        GateType::ConfirmPromotion,
        "2026-12-02T10:00:00Z"
    ));
    assert!(!mark_asked(
        &mut record,
        GateType::ConfirmPromotion,
        "2026-12-02T10:01:00Z"
    ));
    assert!(mark_asked(
        &mut record,
        GateType::ConfirmRollout,
        "2026-12-02T10:01:00Z"
    ));
    let now = times::parse_ms("2026-12-02T10:31:00Z").unwrap();
    let waits: Vec<_> = waiting(&record, now)
        .into_iter()
        .map(|(a, ms)| (a.gate, ms))
        .collect();
    assert_eq!(
        waits,
        [
            (GateType::ConfirmPromotion, 31 * 60_000),
            (GateType::ConfirmRollout, 30 * 60_000)
        ]
    );
    record_decision(
        &mut record,
        decision(Some(GateType::ConfirmRollout), Verdict::Approve),
    );
    assert_eq!(waiting(&record, now).len(), 1);
}

#[test]
fn object_names_are_valid_kubernetes_names() {
    assert_eq!(key().object_name(), "podinfo-7c4d1a2f9e");
    let long = RevisionKey {
        canary: "c".repeat(253),
        revision: "AB_cd".repeat(8),
        ..key()
    };
    let name = long.object_name();
    assert!(name.len() <= 253, "{}", name.len());
    assert_eq!(name, format!("{}-{}", "c".repeat(212), "ab-cd".repeat(8)));
    assert!(name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'));
    assert_eq!(name.len(), 253);
}

const SECRET: &[u8] = b"8f742231b10e8888abcd99yyyzzz85a5";

fn signed(body: &[u8], ts: &str) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(SECRET).unwrap();
    mac.update(format!("v0:{ts}:").as_bytes());
    mac.update(body);
    format!("v0={}", hex::encode(mac.finalize().into_bytes()))
}

#[test]
fn slack_signatures_are_checked_with_their_timestamp() {
    let body = b"payload=%7B%7D";
    let signature = signed(body, "1531420618");
    assert_eq!(
        verify_signature(
            SECRET,
            Some("1531420618"),
            Some(&signature),
            body,
            1531420618 + 299
        ),
        Ok(())
    );
    assert_eq!(
        verify_signature(
            SECRET,
            Some("1531420618"),
            Some(&signature),
            body,
            1531420618 + 301
        ),
        Err(SignatureError::Stale)
    );
    assert_eq!(
        verify_signature(
            SECRET,
            Some("1531420618"),
            Some(&signature),
            b"payload=%7B%7E",
            1531420618
        ),
        Err(SignatureError::Mismatch)
    );
    assert_eq!(
        verify_signature(
            b"other",
            Some("1531420618"),
            Some(&signature),
            body,
            1531420618
        ),
        Err(SignatureError::Mismatch)
    );
    assert_eq!(
        verify_signature(SECRET, None, Some(&signature), body, 0),
        Err(SignatureError::NoTimestamp)
    );
    assert_eq!(
        verify_signature(SECRET, Some("1531420618"), None, body, 1531420618),
        Err(SignatureError::Mismatch)
    );
}

#[test]
fn a_button_press_is_read_from_slacks_form_body() {
    let value = r#"{"ns":"test","c":"podinfo","r":"7c4d1a2f9e","g":"confirm-promotion","p":"test/gates","rc":"slack"}"#;
    let payload = serde_json::json!({
        "type": "block_actions",
        "user": {"id": "U1", "username": "alice"},
        "container": {"type": "message", "message_ts": "1700000000.000200", "channel_id": "C1"},
        "channel": {"id": "C1", "name": "deploys"},
        "message": {"ts": "1700000000.000200", "thread_ts": "1700000000.000100", "text": "Promotion waits"},
        "response_url": "http://127.0.0.1:9/actions/T1/1/abc",
        "actions": [{"action_id": "herald_rollback", "block_id": "herald_gate", "type": "button", "value": value}],
    });
    let body = serde_urlencoded::to_string([("payload", payload.to_string())]).unwrap();
    let press = parse_interaction(body.as_bytes()).unwrap().unwrap();
    assert_eq!(press.user, "U1");
    assert_eq!(press.verdict, Verdict::Rollback);
    assert_eq!(press.value.key(), key());
    assert_eq!(press.value.gate, GateType::ConfirmPromotion);
    assert_eq!(press.thread_ts.as_deref(), Some("1700000000.000100"));
    assert_eq!(press.channel, "C1");
    // Other interactions to the same URL are not Herald's.
    let other = serde_json::json!({"type": "view_submission", "user": {"id": "U1"}});
    let body = serde_urlencoded::to_string([("payload", other.to_string())]).unwrap();
    assert_eq!(parse_interaction(body.as_bytes()), Ok(None));
    assert!(parse_interaction(b"nothing=here").is_err());
}
