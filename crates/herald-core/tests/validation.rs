//! What `herald check` reports: every problem with its source, document, field path and
//! message, and the Ready reason the controller would set.

mod common;

use common::*;
use herald_core::receivers::slack::SlackBot;
use herald_core::{LoadProblem, Origin, PolicyId, Reason};

fn origin(source: &str, document: usize) -> Origin {
    Origin {
        source: source.to_owned(),
        document,
    }
}

fn problem(
    source: &str,
    document: usize,
    policy: Option<PolicyId>,
    path: &str,
    message: &str,
) -> LoadProblem {
    LoadProblem {
        origin: origin(source, document),
        policy,
        path: path.to_owned(),
        message: message.to_owned(),
    }
}

/// Loads one source `p.yaml` and returns the problems, the `Reason`s the builder gave the
/// (single) rejected policy, and whether any policy made it into the set.
fn check(yaml: &str) -> (Vec<LoadProblem>, Vec<(Reason, String)>, usize) {
    let (loaded, set) = load_and_build(&[("p.yaml", yaml)]);
    let reasons = set
        .problems()
        .values()
        .flatten()
        .map(|p| (p.reason, p.path.clone()))
        .collect();
    (loaded.problems, reasons, set.policies().len())
}

/// Each problem's field path and message, in order.
fn paths_and_messages(problems: &[LoadProblem]) -> Vec<(&str, &str)> {
    problems
        .iter()
        .map(|p| (p.path.as_str(), p.message.as_str()))
        .collect()
}

const DEFAULT_X: fn() -> Option<PolicyId> = || Some(PolicyId::namespaced("default", "x"));
/// The one-kind message, from the list of kinds.
fn one_kind() -> String {
    herald_api::exactly_one_kind_message()
}

fn slack_policy(receiver: &str) -> String {
    format!(
        "apiVersion: herald.dev/v1alpha1\nkind: NotificationPolicy\nmetadata:\n  name: x\n  namespace: default\nspec:\n  receivers:\n{receiver}"
    )
}

#[test]
fn missing_secret() {
    let yaml =
        slack_policy("    - name: team\n      slack:\n        secretRef:\n          name: x\n");
    let (problems, reasons, valid) = check(&yaml);
    assert_eq!(
        problems,
        [problem(
            "p.yaml",
            1,
            DEFAULT_X(),
            "spec.receivers[0].slack.secretRef",
            "Secret default/x not found"
        )]
    );
    assert_eq!(
        reasons,
        [(
            Reason::SecretNotFound,
            "spec.receivers[0].slack.secretRef".to_owned()
        )]
    );
    assert_eq!(valid, 0, "a policy with problems is left out");
    assert_eq!(
        problems[0].to_string(),
        "p.yaml (document 1) NotificationPolicy default/x: spec.receivers[0].slack.secretRef: Secret default/x not found"
    );
}

#[test]
fn secret_without_the_key() {
    let secret = "---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: x\n  namespace: default\nstringData:\n  url: https://hooks.example.com/a\n";
    // No key named: `address` is read.
    let yaml = format!(
        "{secret}---\n{}",
        slack_policy("    - name: team\n      slack:\n        secretRef:\n          name: x\n    - name: other\n      msteams:\n        secretRef:\n          name: x\n          key: token\n")
    );
    let (problems, reasons, _) = check(&yaml);
    assert_eq!(
        problems,
        [
            problem(
                "p.yaml",
                2,
                DEFAULT_X(),
                "spec.receivers[0].slack.secretRef",
                r#"Secret default/x has no key "address""#
            ),
            problem(
                "p.yaml",
                2,
                DEFAULT_X(),
                "spec.receivers[1].msteams.secretRef",
                r#"Secret default/x has no key "token""#
            ),
        ]
    );
    assert_eq!(
        reasons,
        [
            (
                Reason::SecretNotFound,
                "spec.receivers[0].slack.secretRef".to_owned()
            ),
            (
                Reason::SecretNotFound,
                "spec.receivers[1].msteams.secretRef".to_owned()
            ),
        ]
    );
}

#[test]
fn receiver_with_two_kinds() {
    let yaml = slack_policy(
        "    - name: team\n      slack:\n        url: https://hooks.example.com/a\n      webhook:\n        url: https://hooks.example.com/b\n",
    );
    let (problems, reasons, valid) = check(&yaml);
    assert_eq!(
        problems,
        [problem(
            "p.yaml",
            1,
            DEFAULT_X(),
            "spec.receivers[0]",
            &one_kind()
        )]
    );
    assert_eq!(
        reasons,
        [(Reason::InvalidSpec, "spec.receivers[0]".to_owned())]
    );
    assert_eq!(valid, 0);
}

#[test]
fn receiver_with_no_kind() {
    let (problems, _, _) = check(&slack_policy("    - name: team\n"));
    assert_eq!(
        problems,
        [problem(
            "p.yaml",
            1,
            DEFAULT_X(),
            "spec.receivers[0]",
            &one_kind()
        )]
    );
}

#[test]
fn receiver_with_two_of_the_chat_kinds() {
    let yaml = slack_policy(
        "    - name: ok\n      discord:\n        url: https://discord.example.com/api/webhooks/1/a\n    - name: team\n      googlechat:\n        url: https://chat.example.com/v1/spaces/A/messages?key=K&token=T\n      rocketchat:\n        url: https://rocket.example.com/hooks/a/b\n",
    );
    let (problems, reasons, valid) = check(&yaml);
    assert_eq!(
        problems,
        [problem(
            "p.yaml",
            1,
            DEFAULT_X(),
            "spec.receivers[1]",
            &one_kind()
        )]
    );
    assert_eq!(
        problems[0].to_string(),
        format!(
            "p.yaml (document 1) NotificationPolicy default/x: spec.receivers[1]: {}",
            one_kind()
        )
    );
    assert_eq!(
        reasons,
        [(Reason::InvalidSpec, "spec.receivers[1]".to_owned())]
    );
    assert_eq!(valid, 0);
}

#[test]
fn chat_kinds_check_their_address_like_the_others() {
    let yaml = slack_policy(
        "    - name: neither\n      discord:\n        username: herald\n    - name: both\n      googlechat:\n        url: https://chat.example.com/a\n        secretRef:\n          name: x\n    - name: missing\n      rocketchat:\n        secretRef:\n          name: nowhere\n          key: rocket\n",
    );
    let (problems, reasons, valid) = check(&yaml);
    assert_eq!(
        problems,
        [
            problem(
                "p.yaml",
                1,
                DEFAULT_X(),
                "spec.receivers[0].discord",
                "set exactly one of url, secretRef"
            ),
            problem(
                "p.yaml",
                1,
                DEFAULT_X(),
                "spec.receivers[1].googlechat",
                "set exactly one of url, secretRef"
            ),
            problem(
                "p.yaml",
                1,
                DEFAULT_X(),
                "spec.receivers[2].rocketchat.secretRef",
                "Secret default/nowhere not found"
            ),
        ]
    );
    assert_eq!(
        reasons,
        [
            (Reason::InvalidSpec, "spec.receivers[0].discord".to_owned()),
            (
                Reason::InvalidSpec,
                "spec.receivers[1].googlechat".to_owned()
            ),
            (
                Reason::SecretNotFound,
                "spec.receivers[2].rocketchat.secretRef".to_owned()
            ),
        ]
    );
    assert_eq!(valid, 0);
}

#[test]
fn chat_kinds_reject_bad_urls_without_echoing_them() {
    let secret = "apiVersion: v1\nkind: Secret\nmetadata:\n  name: chat\nstringData:\n  rocket: rocket.example.com/hooks/SECRET-TOKEN\n---\n";
    let yaml = format!(
        "{secret}{}",
        slack_policy(
            "    - name: discord\n      discord:\n        url: discord.com/api/webhooks/1/SECRET-TOKEN\n    - name: gchat\n      googlechat:\n        url: \"https://?key=SECRET-TOKEN\"\n    - name: rocket\n      rocketchat:\n        secretRef:\n          name: chat\n          key: rocket\n",
        )
    );
    let (problems, reasons, valid) = check(&yaml);
    let message = "must be an http:// or https:// URL with a host";
    assert_eq!(
        problems,
        [
            problem(
                "p.yaml",
                2,
                DEFAULT_X(),
                "spec.receivers[0].discord.url",
                message
            ),
            problem(
                "p.yaml",
                2,
                DEFAULT_X(),
                "spec.receivers[1].googlechat.url",
                message
            ),
            problem(
                "p.yaml",
                2,
                DEFAULT_X(),
                "spec.receivers[2].rocketchat.secretRef",
                message
            ),
        ]
    );
    for p in &problems {
        assert!(!p.to_string().contains("SECRET-TOKEN"), "{p}");
    }
    assert!(reasons.iter().all(|(r, _)| *r == Reason::InvalidSpec));
    assert_eq!(valid, 0);
}

#[test]
fn discord_overrides_discord_would_refuse() {
    let yaml = slack_policy(
        "    - name: a\n      discord:\n        url: https://discord.example.com/a\n        username: Discord Bot\n    - name: b\n      discord:\n        url: https://discord.example.com/b\n        username: \"\"\n        avatarUrl: herald.png\n    - name: c\n      discord:\n        url: https://discord.example.com/c\n        username: here\n    - name: ok\n      discord:\n        url: https://discord.example.com/d\n        username: Herald (prod) 🚀\n        avatarUrl: https://example.com/herald.png\n",
    );
    let (problems, reasons, _) = check(&yaml);
    assert_eq!(
        problems,
        [
            problem(
                "p.yaml",
                1,
                DEFAULT_X(),
                "spec.receivers[0].discord.username",
                "Discord refuses user names containing \"discord\""
            ),
            problem(
                "p.yaml",
                1,
                DEFAULT_X(),
                "spec.receivers[1].discord.username",
                "must be 1 to 80 characters, not 0"
            ),
            problem(
                "p.yaml",
                1,
                DEFAULT_X(),
                "spec.receivers[1].discord.avatarUrl",
                "must be an http:// or https:// URL with a host"
            ),
            problem(
                "p.yaml",
                1,
                DEFAULT_X(),
                "spec.receivers[2].discord.username",
                "Discord refuses the user name \"here\""
            ),
        ]
    );
    assert!(reasons.iter().all(|(r, _)| *r == Reason::InvalidSpec));
    let long = slack_policy(&format!(
        "    - name: a\n      discord:\n        url: https://discord.example.com/a\n        username: {}\n",
        "h".repeat(81)
    ));
    let (problems, _, _) = check(&long);
    assert_eq!(problems[0].message, "must be 1 to 80 characters, not 81");
}

#[test]
fn chat_kinds_reject_unknown_fields() {
    for (kind, field) in [
        ("discord", "avatarURL"),
        ("googlechat", "threadKey"),
        ("rocketchat", "icon_emoji"),
    ] {
        let yaml = slack_policy(&format!(
            "    - name: team\n      {kind}:\n        url: https://chat.example.com/a\n        {field}: x\n"
        ));
        let (problems, _, _) = check(&yaml);
        assert_eq!(
            problems,
            [problem(
                "p.yaml",
                1,
                None,
                &format!("spec.receivers[0].{kind}.{field}"),
                "unknown field"
            )]
        );
    }
}

#[test]
fn receiver_without_url_or_secret_ref_or_with_both() {
    let yaml = slack_policy(
        "    - name: neither\n      slack:\n        channel: \"#deploys\"\n    - name: both\n      webhook:\n        url: https://hooks.example.com/a\n        secretRef:\n          name: x\n",
    );
    let (problems, reasons, _) = check(&yaml);
    assert_eq!(
        problems,
        [
            problem(
                "p.yaml",
                1,
                DEFAULT_X(),
                "spec.receivers[0].slack",
                "set exactly one of url, secretRef, tokenSecretRef"
            ),
            problem(
                "p.yaml",
                1,
                DEFAULT_X(),
                "spec.receivers[1].webhook",
                "set exactly one of url, secretRef"
            ),
        ]
    );
    assert!(reasons.iter().all(|(r, _)| *r == Reason::InvalidSpec));
}

#[test]
fn bad_url_is_reported_without_echoing_it() {
    let yaml = slack_policy(
        "    - name: ftp\n      slack:\n        url: ftp://hooks.example.com/T0001/SECRET-TOKEN\n    - name: nohost\n      msteams:\n        url: https:///SECRET-TOKEN\n    - name: relative\n      webhook:\n        url: /SECRET-TOKEN\n",
    );
    let (problems, reasons, valid) = check(&yaml);
    let message = "must be an http:// or https:// URL with a host";
    assert_eq!(
        problems,
        [
            problem(
                "p.yaml",
                1,
                DEFAULT_X(),
                "spec.receivers[0].slack.url",
                message
            ),
            problem(
                "p.yaml",
                1,
                DEFAULT_X(),
                "spec.receivers[1].msteams.url",
                message
            ),
            problem(
                "p.yaml",
                1,
                DEFAULT_X(),
                "spec.receivers[2].webhook.url",
                message
            ),
        ]
    );
    for p in &problems {
        assert!(!p.to_string().contains("SECRET-TOKEN"), "{p}");
    }
    assert!(reasons.iter().all(|(r, _)| *r == Reason::InvalidSpec));
    assert_eq!(valid, 0);
}

#[test]
fn bad_url_in_a_secret_is_reported_without_echoing_it() {
    let yaml = format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: x\nstringData:\n  address: hooks.example.com/SECRET-TOKEN\n---\n{}",
        slack_policy("    - name: team\n      slack:\n        secretRef:\n          name: x\n")
    );
    let (problems, reasons, _) = check(&yaml);
    assert_eq!(
        problems,
        [problem(
            "p.yaml",
            2,
            DEFAULT_X(),
            "spec.receivers[0].slack.secretRef",
            "must be an http:// or https:// URL with a host"
        )]
    );
    assert_eq!(
        reasons,
        [(
            Reason::InvalidSpec,
            "spec.receivers[0].slack.secretRef".to_owned()
        )]
    );
    assert!(!format!("{problems:?}").contains("SECRET-TOKEN"));
}

#[test]
fn invalid_regex() {
    let yaml = policy("default", "x", r#"messagePattern: "^(Rolling back""#);
    let (problems, reasons, valid) = check(&yaml);
    assert_eq!(problems.len(), 1, "{problems:?}");
    let p = &problems[0];
    assert_eq!(p.origin, origin("p.yaml", 1));
    assert_eq!(p.policy, DEFAULT_X());
    assert_eq!(p.path, "spec.messagePattern");
    assert!(
        p.message.starts_with("invalid regular expression: ")
            && p.message.contains("unclosed group"),
        "{}",
        p.message
    );
    assert!(!p.message.contains('\n'), "one line: {:?}", p.message);
    assert_eq!(
        reasons,
        [(Reason::InvalidSpec, "spec.messagePattern".to_owned())]
    );
    assert_eq!(valid, 0);
}

#[test]
fn invalid_repeat_interval() {
    let yaml = policy("default", "x", r#"repeatInterval: "1 day""#);
    let (problems, reasons, valid) = check(&yaml);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].path, "spec.repeatInterval");
    assert_eq!(
        problems[0].message,
        r#""1 day" is not a duration such as 30s, 10m or 1h30m"#
    );
    assert_eq!(
        reasons,
        [(Reason::InvalidSpec, "spec.repeatInterval".to_owned())]
    );
    assert_eq!(valid, 0);
    let (problems, _, valid) = check(&policy("default", "x", "repeatInterval: 1h30m"));
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(valid, 1);
}

#[test]
fn a_zero_repeat_interval_is_refused() {
    for zero in ["0s", "0ms", "0h0m"] {
        let yaml = policy("default", "x", &format!("repeatInterval: {zero}"));
        let (problems, reasons, valid) = check(&yaml);
        assert_eq!(
            paths_and_messages(&problems),
            [(
                "spec.repeatInterval",
                format!("{zero:?} is zero: give a longer interval, or leave repeatInterval unset to send every repeat").as_str()
            )]
        );
        assert_eq!(
            reasons,
            [(Reason::InvalidSpec, "spec.repeatInterval".to_owned())]
        );
        assert_eq!(valid, 0);
    }
}

/// The CRD's pattern for `repeatInterval` accepts what validation accepts, and refuses zero.
#[test]
fn the_crd_repeat_interval_pattern_agrees_with_validation() {
    let crd = serde_json::to_value(&herald_api::crds()[0]).unwrap();
    let pattern = crd
        .pointer("/spec/versions/0/schema/openAPIV3Schema/properties/spec/properties/repeatInterval/pattern")
        .and_then(|p| p.as_str())
        .expect("repeatInterval has a pattern");
    let pattern = regex::Regex::new(pattern).unwrap();
    for (text, valid) in [
        ("30s", true),
        ("10m", true),
        ("1h30m", true),
        ("500ms", true),
        ("0m30s", true),
        ("10s0ms", true),
        ("0s", false),
        ("00m", false),
        ("0h0m0s", false),
        ("1 day", false),
        ("", false),
        ("5", false),
    ] {
        assert_eq!(pattern.is_match(text), valid, "the CRD pattern on {text:?}");
        let yaml = policy("default", "x", &format!("repeatInterval: {text:?}"));
        assert_eq!(check(&yaml).2 == 1, valid, "validation on {text:?}");
    }
}

#[test]
fn match_labels_keys_must_be_label_keys() {
    let yaml = policy(
        "default",
        "x",
        "matchLabels:\n    app.kubernetes.io/name: web\n    \"bad key\": x",
    );
    let (problems, reasons, valid) = check(&yaml);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].path, "spec.matchLabels");
    assert!(
        problems[0]
            .message
            .starts_with(r#""bad key" is not a valid label key: the name "bad key" must be"#),
        "{}",
        problems[0].message
    );
    assert_eq!(
        reasons,
        [(Reason::InvalidSpec, "spec.matchLabels".to_owned())]
    );
    assert_eq!(valid, 0);
}

#[test]
fn namespace_selector_label_keys_must_be_label_keys() {
    let yaml = cluster_policy("c", "namespaceSelector:\n  matchLabels:\n    team/: a");
    let (problems, _, valid) = check(&yaml);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].path, "spec.namespaceSelector.matchLabels");
    assert!(
        problems[0]
            .message
            .starts_with(r#""team/" is not a valid label key"#),
        "{}",
        problems[0].message
    );
    assert_eq!(valid, 0);
}

#[test]
fn invalid_and_empty_globs() {
    let yaml = [
        policy(
            "default",
            "x",
            r#"canaries: ["ok", "payments-[", "", "{a,b"]"#,
        ),
        cluster_policy("c", "namespaceSelector:\n  matchNames: [\"team-[\"]"),
    ]
    .concat();
    let (problems, _, valid) = check(&yaml);
    let got: Vec<(usize, Option<String>, &str, &str)> = problems
        .iter()
        .map(|p| {
            (
                p.origin.document,
                p.policy.as_ref().map(|id| id.to_string()),
                p.path.as_str(),
                p.message.as_str(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (
                1,
                Some("default/x".to_owned()),
                "spec.canaries[1]",
                "invalid glob: unclosed character class; missing ']'"
            ),
            (1, Some("default/x".to_owned()), "spec.canaries[2]", "must not be empty"),
            (
                1,
                Some("default/x".to_owned()),
                "spec.canaries[3]",
                "invalid glob: unclosed alternate group; missing '}' (maybe escape '{' with '[{]'?)"
            ),
            (
                2,
                Some("c".to_owned()),
                "spec.namespaceSelector.matchNames[0]",
                "invalid glob: unclosed character class; missing ']'"
            ),
        ]
    );
    assert_eq!(valid, 0);
}

#[test]
fn duplicate_receiver_names() {
    let yaml = slack_policy(
        "    - name: team\n      slack:\n        url: https://hooks.example.com/a\n    - name: team\n      webhook:\n        url: https://hooks.example.com/b\n",
    );
    let (problems, reasons, valid) = check(&yaml);
    assert_eq!(
        problems,
        [problem(
            "p.yaml",
            1,
            DEFAULT_X(),
            "spec.receivers[1].name",
            r#"duplicate receiver name "team""#
        )]
    );
    assert_eq!(
        reasons,
        [(Reason::InvalidSpec, "spec.receivers[1].name".to_owned())]
    );
    assert_eq!(valid, 0);
}

#[test]
fn receiver_name_must_be_a_dns_label() {
    let yaml = slack_policy(
        "    - name: Team_Slack\n      slack:\n        url: https://hooks.example.com/a\n",
    );
    let (problems, _, _) = check(&yaml);
    assert_eq!(
        problems,
        [problem(
            "p.yaml",
            1,
            DEFAULT_X(),
            "spec.receivers[0].name",
            "must be a DNS label: lower-case letters, digits and '-', at most 63 characters"
        )]
    );
}

#[test]
fn no_receivers() {
    let yaml = "apiVersion: herald.dev/v1alpha1\nkind: NotificationPolicy\nmetadata:\n  name: x\nspec:\n  receivers: []\n";
    let (problems, _, valid) = check(yaml);
    assert_eq!(
        problems,
        [problem(
            "p.yaml",
            1,
            DEFAULT_X(),
            "spec.receivers",
            "at least one receiver is required"
        )]
    );
    assert_eq!(valid, 0);
}

#[test]
fn template_syntax_error_has_line_and_column() {
    let yaml = policy("default", "x", "template:\n  text: \"ok\\n{{name\"");
    let (problems, reasons, valid) = check(&yaml);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].path, "spec.template.text");
    assert!(
        problems[0].message.starts_with("line 2, column 7: "),
        "{}",
        problems[0].message
    );
    assert_eq!(
        reasons,
        [(Reason::TemplateError, "spec.template.text".to_owned())]
    );
    assert_eq!(valid, 0);
}

#[test]
fn an_unclosed_template_block_is_named_with_where_it_opened() {
    let yaml = policy(
        "default",
        "x",
        "template:\n  text: \"ok {{#if name}}unclosed\"",
    );
    let (problems, reasons, valid) = check(&yaml);
    assert_eq!(
        paths_and_messages(&problems),
        [(
            "spec.template.text",
            "unclosed {{#if}} block opened at line 1, column 4"
        )]
    );
    assert_eq!(
        reasons,
        [(Reason::TemplateError, "spec.template.text".to_owned())]
    );
    assert_eq!(valid, 0);
}

#[test]
fn misspelt_template_variable_is_caught_at_load_time() {
    let yaml = policy(
        "default",
        "x",
        "template:\n  title: \"Canary {{name}}\\n  moved to {{phsae}}\"",
    );
    let (problems, reasons, valid) = check(&yaml);
    assert_eq!(
        problems,
        [problem(
            "p.yaml",
            1,
            DEFAULT_X(),
            "spec.template.title",
            r#"line 2, column 12: variable "phsae" not found"#
        )]
    );
    assert_eq!(
        reasons,
        [(Reason::TemplateError, "spec.template.title".to_owned())]
    );
    assert_eq!(valid, 0);
}

#[test]
fn misspelt_variable_in_a_receiver_template() {
    let yaml = slack_policy(
        "    - name: team\n      slack:\n        url: https://hooks.example.com/a\n      template:\n        text: \"{{mesage}}\"\n",
    );
    let (problems, reasons, _) = check(&yaml);
    assert_eq!(
        problems,
        [problem(
            "p.yaml",
            1,
            DEFAULT_X(),
            "spec.receivers[0].template.text",
            r#"line 1, column 1: variable "mesage" not found"#
        )]
    );
    assert_eq!(
        reasons,
        [(
            Reason::TemplateError,
            "spec.receivers[0].template.text".to_owned()
        )]
    );
}

#[test]
fn webhook_body_that_renders_invalid_json() {
    let yaml = slack_policy(
        "    - name: audit\n      webhook:\n        url: https://hooks.example.com/a\n        body: '{\"text\": {{message}}}'\n",
    );
    let (problems, reasons, valid) = check(&yaml);
    assert_eq!(
        problems,
        [problem(
            "p.yaml",
            1,
            DEFAULT_X(),
            "spec.receivers[0].webhook.body",
            "renders invalid JSON (line 1, column 10 of the output: expected value); insert values with {{json ...}}"
        )]
    );
    assert_eq!(
        reasons,
        [(
            Reason::TemplateError,
            "spec.receivers[0].webhook.body".to_owned()
        )]
    );
    assert_eq!(valid, 0);
}

#[test]
fn webhook_body_using_json_helper_is_accepted() {
    let yaml = slack_policy(
        "    - name: audit\n      webhook:\n        url: https://hooks.example.com/a\n        body: '{\"text\": {{json message}}, \"n\": {{timestamp}}}'\n",
    );
    let (problems, _, valid) = check(&yaml);
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(valid, 1);
}

#[test]
fn unknown_field_is_not_silently_ignored() {
    // `phase:` instead of `phases:` must not mean "every phase".
    let yaml = policy("default", "x", "phase: [Failed]");
    let (loaded, set) = load_and_build(&[("p.yaml", &yaml)]);
    assert_eq!(
        loaded.problems,
        [problem("p.yaml", 1, None, "spec.phase", "unknown field")]
    );
    assert!(set.policies().is_empty());
    assert_eq!(
        loaded.problems[0].to_string(),
        "p.yaml (document 1): spec.phase: unknown field"
    );
}

#[test]
fn unknown_nested_field() {
    let yaml = slack_policy(
        "    - name: team\n      slack:\n        url: https://hooks.example.com/a\n        chanel: \"#deploys\"\n",
    );
    let (problems, _, _) = check(&yaml);
    assert_eq!(
        problems,
        [problem(
            "p.yaml",
            1,
            None,
            "spec.receivers[0].slack.chanel",
            "unknown field"
        )]
    );
}

#[test]
fn unknown_field_in_metadata_or_at_the_top() {
    let yaml = "apiVersion: herald.dev/v1alpha1\nkind: NotificationPolicy\nmetadata:\n  name: x\n  nmespace: team-a\nspec:\n  receivers:\n    - name: hook\n      webhook:\n        url: https://hooks.example.com/a\n";
    let (problems, _, _) = check(yaml);
    assert_eq!(
        problems,
        [problem(
            "p.yaml",
            1,
            None,
            "metadata.nmespace",
            "unknown field"
        )]
    );
    let yaml = format!("{}specs: {{}}\n", policy("default", "x", ""));
    let (problems, _, _) = check(&yaml);
    assert_eq!(
        problems,
        [problem("p.yaml", 1, None, "specs", "unknown field")]
    );
}

#[test]
fn wrong_type_names_the_field() {
    let yaml = slack_policy(
        "    - name: team\n      slack:\n        url: [https://hooks.example.com/a]\n",
    );
    let (problems, _, valid) = check(&yaml);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].path, "spec.receivers[0].slack.url");
    assert_eq!(problems[0].policy, None);
    assert!(
        problems[0]
            .message
            .starts_with("invalid type: sequence, expected a string"),
        "{}",
        problems[0].message
    );
    assert!(
        !problems[0].message.contains(" at line "),
        "{}",
        problems[0].message
    );
    assert_eq!(valid, 0);
}

#[test]
fn unknown_phase_name_in_a_policy_is_rejected() {
    let yaml = policy("default", "x", "phases: [Progressing, Paused]");
    let (problems, _, _) = check(&yaml);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].path, "spec.phases[1]");
    assert!(
        problems[0].message.starts_with("unknown variant `Paused`"),
        "{}",
        problems[0].message
    );
}

#[test]
fn wrong_api_version() {
    let yaml = policy("default", "x", "").replace("herald.dev/v1alpha1", "herald.dev/v1");
    let (problems, _, valid) = check(&yaml);
    assert_eq!(
        problems,
        [problem(
            "p.yaml",
            1,
            None,
            "apiVersion",
            r#"NotificationPolicy is served as herald.dev/v1alpha1, not "herald.dev/v1""#
        )]
    );
    assert_eq!(valid, 0);
}

#[test]
fn missing_kind() {
    let yaml = "apiVersion: herald.dev/v1alpha1\nmetadata:\n  name: x\n";
    let (problems, _, _) = check(yaml);
    assert_eq!(
        problems,
        [problem("p.yaml", 1, None, "kind", "missing field")]
    );
}

#[test]
fn yaml_syntax_error_has_a_position_and_stops_the_file() {
    let yaml = [
        policy("default", "first", ""),
        "---\napiVersion: herald.dev/v1alpha1\nkind: NotificationPolicy\nmetadata:\n  name: [broken\n".to_owned(),
        policy("default", "after", ""),
    ]
    .concat();
    let (loaded, set) =
        load_and_build(&[("p.yaml", &yaml), ("q.yaml", &policy("default", "q", ""))]);
    assert_eq!(loaded.problems.len(), 1, "{:?}", loaded.problems);
    let p = &loaded.problems[0];
    assert_eq!(p.origin, origin("p.yaml", 2));
    assert_eq!(p.path, "");
    assert!(
        p.message.starts_with("invalid YAML at line "),
        "{}",
        p.message
    );
    assert!(
        p.to_string()
            .starts_with("p.yaml (document 2): invalid YAML at line "),
        "{p}"
    );
    // The documents before the error, and other files, are still read.
    let ids: Vec<String> = set.policies().iter().map(|p| p.id.to_string()).collect();
    assert_eq!(ids, ["default/first", "default/q"]);
}

#[test]
fn duplicate_policy_id_across_sources() {
    let a = policy("default", "x", "");
    let b = [
        cluster_policy("x", ""),
        policy("default", "x", r#"canaries: ["other"]"#),
    ]
    .concat();
    let (loaded, set) = load_and_build(&[("a.yaml", &a), ("b.yaml", &b)]);
    assert_eq!(
        loaded.problems,
        [problem(
            "b.yaml",
            2,
            DEFAULT_X(),
            "metadata.name",
            "already defined in a.yaml (document 1)"
        )]
    );
    assert_eq!(
        loaded.problems[0].to_string(),
        "b.yaml (document 2) NotificationPolicy default/x: metadata.name: already defined in a.yaml (document 1)"
    );
    // The first definition wins; a cluster policy of the same name is a different policy.
    let ids: Vec<String> = set.policies().iter().map(|p| p.id.to_string()).collect();
    assert_eq!(ids, ["x", "default/x"]);
    assert_eq!(
        matched_event(&set, &progressing("podinfo", "default")),
        ["x", "default/x"]
    );
}

#[test]
fn same_name_in_two_namespaces_is_not_a_duplicate() {
    let yaml = [policy("team-a", "x", ""), policy("team-b", "x", "")].concat();
    let (problems, _, valid) = check(&yaml);
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(valid, 2);
}

#[test]
fn load_problem_display_names_source_document_policy_and_path() {
    let yaml = [
        policy("default", "fine", ""),
        cluster_policy("oops", r#"messagePattern: "(""#),
    ]
    .concat();
    let (loaded, set) = load_and_build(&[("policies/team.yaml", &yaml)]);
    assert_eq!(loaded.problems.len(), 1);
    let shown = loaded.problems[0].to_string();
    assert!(
        shown.starts_with(
            "policies/team.yaml (document 2) ClusterNotificationPolicy oops: spec.messagePattern: invalid regular expression: "
        ),
        "{shown}"
    );
    // The valid neighbour still works.
    assert_eq!(
        matched_event(&set, &progressing("podinfo", "default")),
        ["default/fine"]
    );
}

#[test]
fn every_problem_of_a_policy_is_reported_in_field_order() {
    let yaml = "apiVersion: herald.dev/v1alpha1\nkind: NotificationPolicy\nmetadata:\n  name: x\nspec:\n  canaries: [\"\"]\n  messagePattern: \"[\"\n  template:\n    text: \"{{nme}}\"\n  receivers:\n    - name: a\n      slack:\n        secretRef:\n          name: missing\n    - name: a\n      webhook:\n        url: nope\n";
    let (problems, reasons, _) = check(yaml);
    let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "spec.canaries[0]",
            "spec.messagePattern",
            "spec.template.text",
            "spec.receivers[0].slack.secretRef",
            "spec.receivers[1].name",
            "spec.receivers[1].webhook.url",
        ]
    );
    let kinds: Vec<Reason> = reasons.iter().map(|(r, _)| *r).collect();
    assert_eq!(
        kinds,
        [
            Reason::InvalidSpec,
            Reason::InvalidSpec,
            Reason::TemplateError,
            Reason::SecretNotFound,
            Reason::InvalidSpec,
            Reason::InvalidSpec,
        ]
    );
}

#[test]
fn other_kinds_are_skipped_and_empty_documents_ignored() {
    let yaml = format!(
        "---\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: podinfo\n{}",
        policy("default", "x", "")
    );
    let (loaded, set) = load_and_build(&[("p.yaml", &yaml)]);
    assert!(loaded.problems.is_empty(), "{:?}", loaded.problems);
    assert_eq!(
        loaded.skipped,
        [(origin("p.yaml", 2), "apps/v1 Deployment".to_owned())]
    );
    assert_eq!(set.policies().len(), 1);
}

#[test]
fn duplicate_key_spoils_only_its_own_document() {
    // A duplicate key is not a syntax error: the documents after it are still read, so the
    // Secret below is found and only the real mistake is reported.
    let secrets = "apiVersion: herald.dev/v1alpha1\nkind: NotificationPolicy\nmetadata:\n  name: x\nspec:\n  canaries: [a]\n  canaries: [b]\n  receivers:\n    - name: hook\n      webhook:\n        url: https://hooks.example.com/a\n---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: hooks\nstringData:\n  address: https://hooks.example.com/b\n";
    let policy =
        slack_policy("    - name: team\n      slack:\n        secretRef:\n          name: hooks\n")
            .replace("name: x", "name: team");
    let (loaded, set) = load_and_build(&[("a.yaml", secrets), ("b.yaml", &policy)]);
    assert_eq!(
        loaded.problems,
        [problem(
            "a.yaml",
            1,
            None,
            "",
            r#"invalid YAML at line 6, column 3: spec: duplicate entry with key "canaries""#
        )]
    );
    assert_eq!(loaded.secrets.len(), 1);
    assert_eq!(
        set.policies()
            .iter()
            .map(|p| p.id.to_string())
            .collect::<Vec<_>>(),
        ["default/team"]
    );
}

#[test]
fn webhook_credentials_and_headers_are_checked_without_echoing_secrets() {
    let secret = "---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: hook\n  namespace: default\nstringData:\n  address: https://hooks.example.com/signed\n  token: \"s3cr3t\\nvalue\"\n";
    let yaml = format!(
        "{secret}---\n{}",
        slack_policy(concat!(
            "    - name: signed\n      webhook:\n        secretRef:\n          name: hook\n",
            "        headers:\n          \"Bad Header\": x\n          X-Ok: \"a\\r\\nb\"\n",
            "        bearerTokenSecretRef:\n          name: hook\n",
            "        signature:\n          secretRef:\n            name: hook\n",
        ))
    );
    let (problems, reasons, valid) = check(&yaml);
    let paths = paths_and_messages(&problems);
    assert_eq!(
        paths,
        [
            (
                "spec.receivers[0].webhook.headers",
                r#""Bad Header" is not a valid HTTP header name"#
            ),
            (
                "spec.receivers[0].webhook.headers.X-Ok",
                "a header value must be one line of visible ASCII"
            ),
            (
                "spec.receivers[0].webhook.bearerTokenSecretRef",
                "the token must be one line of visible ASCII"
            ),
            (
                "spec.receivers[0].webhook.signature.secretRef",
                r#"Secret default/hook has no key "signingKey""#
            ),
        ]
    );
    assert!(reasons.contains(&(
        Reason::SecretNotFound,
        "spec.receivers[0].webhook.signature.secretRef".to_owned()
    )));
    assert_eq!(valid, 0);
    for p in &problems {
        assert!(!p.to_string().contains("s3cr3t"), "secret echoed: {p}");
    }
}

#[test]
fn a_slack_bot_needs_a_token_a_channel_and_no_webhook_url() {
    let yaml = slack_policy(concat!(
        "    - name: bot\n      slack:\n        url: https://hooks.slack.com/services/x\n",
        "        tokenSecretRef:\n          name: slack-bot\n",
    ));
    let (problems, reasons, valid) = check(&yaml);
    let paths = paths_and_messages(&problems);
    assert_eq!(
        paths,
        [
            (
                "spec.receivers[0].slack",
                "set exactly one of url, secretRef, tokenSecretRef"
            ),
            (
                "spec.receivers[0].slack.channel",
                "a bot token (tokenSecretRef) needs a channel"
            ),
            (
                "spec.receivers[0].slack.tokenSecretRef",
                "Secret default/slack-bot not found"
            ),
        ]
    );
    assert_eq!(reasons.len(), 3);
    assert_eq!(valid, 0);
}

#[test]
fn a_slack_bot_compiles_to_the_web_api() {
    let secret = "---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: slack-bot\n  namespace: default\nstringData:\n  token: \"xoxb-1-2-3\\n\"\n";
    let yaml = format!(
        "{secret}---\n{}",
        slack_policy(concat!(
            "    - name: bot\n      slack:\n        channel: C0123ABCD\n",
            "        tokenSecretRef:\n          name: slack-bot\n",
        ))
    );
    let set = build_ok(&yaml);
    let receiver = &set.policies()[0].receivers[0];
    assert_eq!(
        receiver.url.expose(),
        "https://slack.com/api/chat.postMessage"
    );
    let bot = receiver.kind.as_any().downcast_ref::<SlackBot>().unwrap();
    let api = &bot.api;
    assert_eq!(api.update_url, "https://slack.com/api/chat.update");
    assert!(api.threads);
    // The trailing newline a `kubectl create secret --from-file` leaves is not sent.
    let headers = receiver.request.headers_for(b"{}");
    assert_eq!(headers[0].name, "Authorization");
    assert_eq!(headers[0].value.expose(), "Bearer xoxb-1-2-3");
    assert!(headers[0].sensitive);
}

#[test]
fn conflicting_webhook_headers_are_refused_at_load_time() {
    let secret = "---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: hook\n  namespace: default\nstringData:\n  address: https://hooks.example.com/signed\n  token: t0k3n\n  signingKey: k3y\n";
    let yaml = format!(
        "{secret}---\n{}",
        slack_policy(concat!(
            "    - name: signed\n      webhook:\n        secretRef:\n          name: hook\n",
            "        headers:\n          Authorization: Basic abc\n          Content-Length: \"3\"\n          X-Team: a\n          x-team: b\n",
            "        bearerTokenSecretRef:\n          name: hook\n",
            "        signature:\n          secretRef:\n            name: hook\n          header: x-TEAM\n",
        ))
    );
    let (problems, _, valid) = check(&yaml);
    let paths = paths_and_messages(&problems);
    assert_eq!(
        paths,
        [
            (
                "spec.receivers[0].webhook.headers.Authorization",
                "Authorization is set by bearerTokenSecretRef"
            ),
            (
                "spec.receivers[0].webhook.headers.Content-Length",
                r#""Content-Length" is set by Herald's HTTP client"#
            ),
            (
                "spec.receivers[0].webhook.headers.x-team",
                r#""x-team" is given twice (header names ignore case)"#
            ),
            (
                "spec.receivers[0].webhook.signature.header",
                r#""x-TEAM" is already sent with another value"#
            ),
        ]
    );
    assert_eq!(valid, 0);
}

#[test]
fn slack_thread_options_need_a_bot_token() {
    let yaml = slack_policy(concat!(
        "    - name: hook\n      slack:\n        url: https://hooks.slack.com/services/x\n",
        "        threads: true\n        apiUrl: https://slack.com/api\n",
    ));
    let (problems, _, valid) = check(&yaml);
    let paths = paths_and_messages(&problems);
    let why = "only applies to a bot token (tokenSecretRef); an incoming webhook cannot thread";
    assert_eq!(
        paths,
        [
            ("spec.receivers[0].slack.apiUrl", why),
            ("spec.receivers[0].slack.threads", why)
        ]
    );
    assert_eq!(valid, 0);
}
