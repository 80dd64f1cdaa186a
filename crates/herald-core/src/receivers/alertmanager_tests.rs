//! Alertmanager's bodies: the canary's labels, a firing alert for a failure and the same
//! alert with `endsAt` for a success; the credentials only in the request's header.

use herald_api::EventType;

use super::*;
use crate::{load_sources, FlaggerEvent, MatchInput, PolicySet};

const POLICY: &str = r#"
apiVersion: v1
kind: Secret
metadata: {name: am, namespace: default}
stringData: {password: "s3cr:et"}
---
apiVersion: herald.dev/v1alpha1
kind: NotificationPolicy
metadata: {name: oncall, namespace: default}
spec:
  receivers:
    - name: am
      alertmanager:
        url: http://alertmanager.monitoring:9093/
        labels: {team: payments}
        generatorUrl: https://flagger.example.com/canaries
        basicAuth: {username: herald, passwordSecretRef: {name: am}}
"#;

fn set(cluster: &str) -> PolicySet {
    let mut loaded = load_sources([("p.yaml", POLICY)]);
    let set = loaded.build(cluster, "default");
    assert_eq!(loaded.problems, []);
    set
}

fn event(phase: &str, message: &str) -> FlaggerEvent {
    FlaggerEvent::new(
        "podinfo",
        "default",
        phase,
        message,
        EventType::Warning,
        1_578_607_635_167,
    )
}

fn body(set: &PolicySet, ev: &FlaggerEvent) -> Option<String> {
    let got = set.notifications(&MatchInput::event(ev), None);
    got.into_iter()
        .next()
        .map(|n| String::from_utf8(n.unwrap().body).unwrap())
}

#[test]
fn a_failure_fires_and_a_success_resolves_the_same_alert() {
    let set = set("prod-eu");
    let receiver = set.receiver(0, 0);
    assert_eq!(
        receiver.url.expose(),
        "http://alertmanager.monitoring:9093/api/v2/alerts"
    );
    let headers = receiver.request.headers_for(b"");
    assert_eq!(headers[0].name, "Authorization");
    // base64("herald:s3cr:et")
    assert_eq!(headers[0].value.expose(), "Basic aGVyYWxkOnMzY3I6ZXQ=");
    assert!(headers[0].sensitive);
    let rollback = "Rolling back podinfo.default failed checks threshold reached 5";
    assert_eq!(
        body(&set, &event("Progressing", rollback)).unwrap(),
        format!(
            r#"[{{"labels":{{"alertname":"FlaggerCanaryFailed","canary":"podinfo","namespace":"default","cluster":"prod-eu","severity":"critical","team":"payments"}},"annotations":{{"summary":"[prod-eu] podinfo.default: {rollback}","description":"{rollback}"}},"startsAt":"2020-01-09T22:07:15.167Z","generatorURL":"https://flagger.example.com/canaries"}}]"#
        )
    );
    let done = "Promotion completed! Scaling down podinfo.default";
    assert_eq!(
        body(&set, &event("Succeeded", done)).unwrap(),
        format!(
            r#"[{{"labels":{{"alertname":"FlaggerCanaryFailed","canary":"podinfo","namespace":"default","cluster":"prod-eu","severity":"critical","team":"payments"}},"annotations":{{"summary":"[prod-eu] podinfo.default: {done}","description":"{done}"}},"startsAt":"2020-01-09T22:07:15.167Z","endsAt":"2020-01-09T22:07:15.167Z","generatorURL":"https://flagger.example.com/canaries"}}]"#
        )
    );
    let progress = event("Progressing", "Advance podinfo.default canary weight 10");
    assert_eq!(body(&set, &progress), None);
}

#[test]
fn without_a_cluster_there_is_no_cluster_label() {
    let set = set("");
    let got = body(
        &set,
        &event("Failed", "Canary failed! Scaling down podinfo.default"),
    )
    .unwrap();
    let alert: serde_json::Value = serde_json::from_str(&got).unwrap();
    let labels = alert[0]["labels"].as_object().unwrap();
    assert_eq!(
        labels.keys().collect::<Vec<_>>(),
        ["alertname", "canary", "namespace", "severity", "team"]
    );
}

#[test]
fn base64_is_rfc_4648() {
    for (plain, encoded) in [
        ("", ""),
        ("f", "Zg=="),
        ("fo", "Zm8="),
        ("foo", "Zm9v"),
        ("foob", "Zm9vYg=="),
        ("fooba", "Zm9vYmE="),
        ("foobar", "Zm9vYmFy"),
    ] {
        assert_eq!(base64(plain.as_bytes()), encoded, "{plain}");
    }
}

#[test]
fn label_names_are_prometheus_names() {
    for ok in ["team", "_x", "Team_2"] {
        assert!(is_label_name(ok), "{ok}");
    }
    for bad in ["", "2x", "a-b", "__name__", "é"] {
        assert!(!is_label_name(bad), "{bad}");
    }
}

#[test]
fn a_failure_is_repeated_until_a_success_closes_it() {
    let set = set("");
    let kind = &set.receiver(0, 0).kind;
    let cases = [
        (
            "Failed",
            "Canary failed! Scaling down podinfo.default",
            KeepOpen::Repeat(DEFAULT_RESEND_INTERVAL),
        ),
        (
            "Progressing",
            "Rolling back podinfo.default failed checks threshold reached 5",
            KeepOpen::Repeat(Duration::from_secs(60)),
        ),
        (
            "Succeeded",
            "Promotion completed! Scaling down podinfo.default",
            KeepOpen::Close,
        ),
        (
            "Progressing",
            "Advance podinfo.default canary weight 20",
            KeepOpen::Leave,
        ),
    ];
    for (phase, message, expected) in cases {
        assert_eq!(
            kind.keeps_open(&event(phase, message)),
            expected,
            "{message}"
        );
    }
    let every = |interval: &str| {
        let policy = POLICY.replace(
            "labels: {team: payments}",
            &format!("resendInterval: {interval}"),
        );
        let mut loaded = load_sources([("p.yaml", policy.as_str())]);
        let set = loaded.build("", "default");
        assert_eq!(loaded.problems, []);
        set.receiver(0, 0)
            .kind
            .keeps_open(&event("Failed", "Canary failed!"))
    };
    assert_eq!(every("15s"), KeepOpen::Repeat(Duration::from_secs(15)));
    assert_eq!(every("1m30s"), KeepOpen::Repeat(Duration::from_secs(90)));
}
