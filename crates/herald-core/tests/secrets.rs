//! Receiver URLs read from Secret documents next to the policies: `data` (base64) and
//! `stringData`, which key, which namespace, and how values are cleaned up.

mod common;

use common::*;
use herald_core::{LoadProblem, PolicyId, PolicySet, Reason};

/// A namespaced policy in `default` with one Slack receiver whose URL is in `secret_ref`
/// (YAML lines of the `secretRef` mapping).
fn slack_from_secret(secret_ref: &str) -> String {
    format!(
        "---\napiVersion: herald.dev/v1alpha1\nkind: NotificationPolicy\nmetadata:\n  name: team\n  namespace: default\nspec:\n  receivers:\n    - name: slack\n      slack:\n        secretRef:\n{}",
        secret_ref
            .lines()
            .map(|l| format!("          {l}\n"))
            .collect::<String>()
    )
}

fn url_of(set: &PolicySet, id: &PolicyId) -> String {
    let index = index_of(set, id);
    set.receiver(index, 0).url.expose().to_owned()
}

fn team() -> PolicyId {
    PolicyId::namespaced("default", "team")
}

#[test]
fn data_is_base64() {
    let yaml = format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: hooks\n  namespace: default\ndata:\n  address: aHR0cHM6Ly9ob29rcy5leGFtcGxlLmNvbS9kYXRh\n{}",
        slack_from_secret("name: hooks")
    );
    let set = build_ok(&yaml);
    assert_eq!(url_of(&set, &team()), "https://hooks.example.com/data");
}

#[test]
fn string_data_is_plain_text() {
    let yaml = format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: hooks\n  namespace: default\nstringData:\n  address: https://hooks.example.com/plain\n{}",
        slack_from_secret("name: hooks")
    );
    let set = build_ok(&yaml);
    assert_eq!(url_of(&set, &team()), "https://hooks.example.com/plain");
}

#[test]
fn trailing_newline_is_trimmed_in_data_and_string_data() {
    // base64 of "https://hooks.example.com/data\n", as `kubectl create secret --from-file`
    // makes it from a file ending in a newline.
    let yaml = format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: from-file\ndata:\n  address: aHR0cHM6Ly9ob29rcy5leGFtcGxlLmNvbS9kYXRhCg==\n---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: block\nstringData:\n  address: |\n    https://hooks.example.com/block\n{}{}",
        slack_from_secret("name: from-file"),
        slack_from_secret("name: block").replace("name: team", "name: team-block")
    );
    let set = build_ok(&yaml);
    assert_eq!(url_of(&set, &team()), "https://hooks.example.com/data");
    assert_eq!(
        url_of(&set, &PolicyId::namespaced("default", "team-block")),
        "https://hooks.example.com/block"
    );
}

#[test]
fn string_data_wins_over_data() {
    let yaml = format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: hooks\ndata:\n  address: aHR0cHM6Ly9ob29rcy5leGFtcGxlLmNvbS9mcm9tLWRhdGE=\n  other: aHR0cHM6Ly9ob29rcy5leGFtcGxlLmNvbS9kYXRh\nstringData:\n  address: https://hooks.example.com/from-string-data\n{}{}",
        slack_from_secret("name: hooks"),
        slack_from_secret("name: hooks\nkey: other").replace("name: team", "name: other")
    );
    let set = build_ok(&yaml);
    assert_eq!(
        url_of(&set, &team()),
        "https://hooks.example.com/from-string-data"
    );
    // Keys only in `data` are kept.
    assert_eq!(
        url_of(&set, &PolicyId::namespaced("default", "other")),
        "https://hooks.example.com/data"
    );
}

#[test]
fn a_named_key_is_read() {
    let yaml = format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: hooks\nstringData:\n  address: https://hooks.example.com/default-key\n  deploys: https://hooks.example.com/deploys\n{}",
        slack_from_secret("name: hooks\nkey: deploys")
    );
    let set = build_ok(&yaml);
    assert_eq!(url_of(&set, &team()), "https://hooks.example.com/deploys");
}

#[test]
fn secrets_are_read_from_the_policys_namespace() {
    // The only `hooks` Secret is in team-a; the policy is in default.
    let yaml = format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: hooks\n  namespace: team-a\nstringData:\n  address: https://hooks.example.com/a\n{}{}",
        slack_from_secret("name: hooks"),
        slack_from_secret("name: hooks").replace("namespace: default", "namespace: team-a")
    );
    let (loaded, set) = load_and_build(&[("p.yaml", &yaml)]);
    assert_eq!(
        loaded.problems,
        [LoadProblem {
            origin: herald_core::Origin {
                source: "p.yaml".to_owned(),
                document: 2
            },
            policy: Some(team()),
            path: "spec.receivers[0].slack.secretRef".to_owned(),
            message: "Secret default/hooks not found".to_owned(),
        }]
    );
    assert_eq!(
        url_of(&set, &PolicyId::namespaced("team-a", "team")),
        "https://hooks.example.com/a"
    );
}

#[test]
fn cluster_policies_read_secrets_from_heralds_namespace() {
    let cluster = "---\napiVersion: herald.dev/v1alpha1\nkind: ClusterNotificationPolicy\nmetadata:\n  name: oncall\nspec:\n  receivers:\n    - name: teams\n      msteams:\n        secretRef:\n          name: oncall\n";
    let in_default = "apiVersion: v1\nkind: Secret\nmetadata:\n  name: oncall\nstringData:\n  address: https://hooks.example.com/default\n";
    let (loaded, set) = load_and_build(&[("s.yaml", in_default), ("c.yaml", cluster)]);
    assert_eq!(loaded.problems.len(), 1, "{:?}", loaded.problems);
    assert_eq!(
        loaded.problems[0].message,
        format!("Secret {HERALD_NAMESPACE}/oncall not found")
    );
    assert_eq!(
        set.problems()[&PolicyId::cluster("oncall")][0].reason,
        Reason::SecretNotFound
    );

    let in_herald = format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: oncall\n  namespace: {HERALD_NAMESPACE}\nstringData:\n  address: https://hooks.example.com/herald\n"
    );
    let (loaded, set) = load_and_build(&[("s.yaml", &in_herald), ("c.yaml", cluster)]);
    assert!(loaded.problems.is_empty(), "{:?}", loaded.problems);
    assert_eq!(
        url_of(&set, &PolicyId::cluster("oncall")),
        "https://hooks.example.com/herald"
    );
}

#[test]
fn a_secret_in_a_later_file_still_counts() {
    let (loaded, set) = load_and_build(&[
        ("policy.yaml", &slack_from_secret("name: hooks")),
        (
            "secret.yaml",
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: hooks\nstringData:\n  address: https://hooks.example.com/later\n",
        ),
    ]);
    assert!(loaded.problems.is_empty(), "{:?}", loaded.problems);
    assert_eq!(url_of(&set, &team()), "https://hooks.example.com/later");
}

#[test]
fn binary_secret_value_is_invalid_spec_and_not_echoed() {
    // base64 of the bytes ff fe 00 01: not UTF-8.
    let yaml = format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: hooks\ndata:\n  address: //4AAQ==\n{}",
        slack_from_secret("name: hooks")
    );
    let (loaded, set) = load_and_build(&[("p.yaml", &yaml)]);
    assert_eq!(loaded.problems.len(), 1, "{:?}", loaded.problems);
    assert_eq!(loaded.problems[0].path, "spec.receivers[0].slack.secretRef");
    assert_eq!(
        loaded.problems[0].message,
        r#"Secret default/hooks key "address" is not UTF-8 text"#
    );
    assert_eq!(set.problems()[&team()][0].reason, Reason::InvalidSpec);
}

#[test]
fn invalid_base64_is_reported_on_the_secret() {
    let yaml =
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: hooks\ndata:\n  address: not base64!\n";
    let (loaded, _) = load_and_build(&[("s.yaml", yaml)]);
    assert_eq!(loaded.problems.len(), 1, "{:?}", loaded.problems);
    assert_eq!(loaded.problems[0].path, "data.address");
    assert_eq!(loaded.secrets.len(), 0);
}

#[test]
fn resolved_urls_are_redacted_in_debug_output() {
    let yaml = format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: hooks\nstringData:\n  address: https://hooks.slack.com/services/T000/B000/SECRET\n{}",
        slack_from_secret("name: hooks")
    );
    let set = build_ok(&yaml);
    let receiver = set.receiver(index_of(&set, &team()), 0);
    let shown = format!("{receiver:?} {}", receiver.url);
    assert!(!shown.contains("SECRET"), "{shown}");
    assert!(shown.contains("[redacted]"), "{shown}");
    assert_eq!(
        receiver.url.expose(),
        "https://hooks.slack.com/services/T000/B000/SECRET"
    );
}
