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
const DEFAULT_X: fn() -> Option<PolicyId> = || Some(PolicyId::namespaced("default", "x"));
/// The one-kind message, from the list of kinds.
fn one_kind() -> String {
    herald_api::exactly_one_kind_message()
}

const NOT_A_URL: &str = "must be an http:// or https:// URL with a host";
const NO_THREADS_WITHOUT_A_BOT: &str =
    "only applies to a bot token (tokenSecretRef); an incoming webhook cannot thread";

fn slack_policy(receiver: &str) -> String {
    format!(
        "apiVersion: herald.dev/v1alpha1\nkind: NotificationPolicy\nmetadata:\n  name: x\n  namespace: default\nspec:\n  receivers:\n{receiver}"
    )
}

/// One input and everything `herald check` must report for it.
#[derive(Default)]
struct Case<'a> {
    /// What the case shows: printed when it fails.
    what: &'a str,
    /// One source, `p.yaml`.
    yaml: String,
    /// The problems, in order: document, field path, the Ready reason the problem gives the
    /// policy (`UNPARSED`: the document does not parse, so it names no policy), and message.
    /// Every policy that parses here is `default/x`.
    problems: &'a [(usize, &'a str, Option<Reason>, &'a str)],
    /// Policies left in the set.
    valid: usize,
    /// How the first problem is shown by `herald check`, when the case says.
    shown: Option<&'a str>,
    /// A secret that no problem may echo, in its message or anywhere in it.
    hides: Option<&'a str>,
}

const SPEC: Option<Reason> = Some(Reason::InvalidSpec);
const SECRET: Option<Reason> = Some(Reason::SecretNotFound);
const TEMPLATE: Option<Reason> = Some(Reason::TemplateError);
const UNPARSED: Option<Reason> = None;

/// Checks every case: the problems (with origin and policy), the Ready reasons given to the
/// rejected policy, the policies left valid, and what the case adds.
fn assert_reports(cases: &[Case<'_>]) {
    for case in cases {
        let what = case.what;
        let (problems, reasons, valid) = check(&case.yaml);
        let expected: Vec<LoadProblem> = case
            .problems
            .iter()
            .map(|&(document, path, reason, message)| {
                let policy = reason.and_then(|_| DEFAULT_X());
                problem("p.yaml", document, policy, path, message)
            })
            .collect();
        assert_eq!(problems, expected, "{what}");
        let expected_reasons: Vec<(Reason, String)> = case
            .problems
            .iter()
            .filter_map(|&(_, path, reason, _)| reason.map(|r| (r, path.to_owned())))
            .collect();
        assert_eq!(reasons, expected_reasons, "{what}: Ready reasons");
        assert_eq!(valid, case.valid, "{what}: policies left valid");
        if let Some(shown) = case.shown {
            assert_eq!(problems[0].to_string(), shown, "{what}");
        }
        if let Some(secret) = case.hides {
            assert!(!format!("{problems:?}").contains(secret), "{what}");
            for p in &problems {
                assert!(
                    !p.to_string().contains(secret),
                    "{what}: secret echoed: {p}"
                );
            }
        }
    }
}

#[test]
#[rustfmt::skip]
fn receivers_name_one_kind_and_its_address() {
    let one_kind = one_kind();
    let two_chat_kinds_shown = format!(
        "p.yaml (document 1) NotificationPolicy default/x: spec.receivers[1]: {}",
        one_kind
    );
    assert_reports(&[
        Case {
            what: "a Secret that is not there",
            yaml: slack_policy(
                "    - name: team\n      slack:\n        secretRef:\n          name: x\n",
            ),
            problems: &[(1, "spec.receivers[0].slack.secretRef", SECRET, "Secret default/x not found")],
            shown: Some("p.yaml (document 1) NotificationPolicy default/x: spec.receivers[0].slack.secretRef: Secret default/x not found"),
            ..Case::default()
        },
        Case {
            // No key named: `address` is read.
            what: "a Secret without the key",
            yaml: format!(
                "{}---\n{}",
                "---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: x\n  namespace: default\nstringData:\n  url: https://hooks.example.com/a\n",
                slack_policy("    - name: team\n      slack:\n        secretRef:\n          name: x\n    - name: other\n      msteams:\n        secretRef:\n          name: x\n          key: token\n")
            ),
            problems: &[
                (2, "spec.receivers[0].slack.secretRef", SECRET, r#"Secret default/x has no key "address""#),
                (2, "spec.receivers[1].msteams.secretRef", SECRET, r#"Secret default/x has no key "token""#),
            ],
            ..Case::default()
        },
        Case {
            what: "a receiver with two kinds",
            yaml: slack_policy(
                "    - name: team\n      slack:\n        url: https://hooks.example.com/a\n      webhook:\n        url: https://hooks.example.com/b\n",
            ),
            problems: &[(1, "spec.receivers[0]", SPEC, &one_kind)],
            ..Case::default()
        },
        Case {
            what: "a receiver with no kind",
            yaml: slack_policy("    - name: team\n"),
            problems: &[(1, "spec.receivers[0]", SPEC, &one_kind)],
            ..Case::default()
        },
        Case {
            what: "a receiver with two of the chat kinds",
            yaml: slack_policy(
                "    - name: ok\n      discord:\n        url: https://discord.example.com/api/webhooks/1/a\n    - name: team\n      googlechat:\n        url: https://chat.example.com/v1/spaces/A/messages?key=K&token=T\n      rocketchat:\n        url: https://rocket.example.com/hooks/a/b\n",
            ),
            problems: &[(1, "spec.receivers[1]", SPEC, &one_kind)],
            shown: Some(&two_chat_kinds_shown),
            ..Case::default()
        },
        Case {
            what: "chat kinds check their address like the others",
            yaml: slack_policy(
                "    - name: neither\n      discord:\n        username: herald\n    - name: both\n      googlechat:\n        url: https://chat.example.com/a\n        secretRef:\n          name: x\n    - name: missing\n      rocketchat:\n        secretRef:\n          name: nowhere\n          key: rocket\n",
            ),
            problems: &[
                (1, "spec.receivers[0].discord", SPEC, "set exactly one of url, secretRef"),
                (1, "spec.receivers[1].googlechat", SPEC, "set exactly one of url, secretRef"),
                (1, "spec.receivers[2].rocketchat.secretRef", SECRET, "Secret default/nowhere not found"),
            ],
            ..Case::default()
        },
        Case {
            what: "chat kinds reject bad URLs without echoing them",
            yaml: format!(
                "{}{}",
                "apiVersion: v1\nkind: Secret\nmetadata:\n  name: chat\nstringData:\n  rocket: rocket.example.com/hooks/SECRET-TOKEN\n---\n",
                slack_policy(
                    "    - name: discord\n      discord:\n        url: discord.com/api/webhooks/1/SECRET-TOKEN\n    - name: gchat\n      googlechat:\n        url: \"https://?key=SECRET-TOKEN\"\n    - name: rocket\n      rocketchat:\n        secretRef:\n          name: chat\n          key: rocket\n",
                )
            ),
            problems: &[
                (2, "spec.receivers[0].discord.url", SPEC, NOT_A_URL),
                (2, "spec.receivers[1].googlechat.url", SPEC, NOT_A_URL),
                (2, "spec.receivers[2].rocketchat.secretRef", SPEC, NOT_A_URL),
            ],
            hides: Some("SECRET-TOKEN"),
            ..Case::default()
        },
        Case {
            what: "Discord overrides Discord would refuse",
            yaml: slack_policy(
                "    - name: a\n      discord:\n        url: https://discord.example.com/a\n        username: Discord Bot\n    - name: b\n      discord:\n        url: https://discord.example.com/b\n        username: \"\"\n        avatarUrl: herald.png\n    - name: c\n      discord:\n        url: https://discord.example.com/c\n        username: here\n    - name: ok\n      discord:\n        url: https://discord.example.com/d\n        username: Herald (prod) 🚀\n        avatarUrl: https://example.com/herald.png\n",
            ),
            problems: &[
                (1, "spec.receivers[0].discord.username", SPEC, "Discord refuses user names containing \"discord\""),
                (1, "spec.receivers[1].discord.username", SPEC, "must be 1 to 80 characters, not 0"),
                (1, "spec.receivers[1].discord.avatarUrl", SPEC, NOT_A_URL),
                (1, "spec.receivers[2].discord.username", SPEC, "Discord refuses the user name \"here\""),
            ],
            ..Case::default()
        },
        Case {
            what: "a Discord user name over 80 characters",
            yaml: slack_policy(&format!(
                "    - name: a\n      discord:\n        url: https://discord.example.com/a\n        username: {}\n",
                "h".repeat(81)
            )),
            problems: &[(1, "spec.receivers[0].discord.username", SPEC, "must be 1 to 80 characters, not 81")],
            ..Case::default()
        },
        Case {
            what: "an unknown Discord field",
            yaml: slack_policy("    - name: team\n      discord:\n        url: https://chat.example.com/a\n        avatarURL: x\n"),
            problems: &[(1, "spec.receivers[0].discord.avatarURL", UNPARSED, "unknown field")],
            ..Case::default()
        },
        Case {
            what: "an unknown Google Chat field",
            yaml: slack_policy("    - name: team\n      googlechat:\n        url: https://chat.example.com/a\n        threadKey: x\n"),
            problems: &[(1, "spec.receivers[0].googlechat.threadKey", UNPARSED, "unknown field")],
            ..Case::default()
        },
        Case {
            what: "an unknown Rocket.Chat field",
            yaml: slack_policy("    - name: team\n      rocketchat:\n        url: https://chat.example.com/a\n        icon_emoji: x\n"),
            problems: &[(1, "spec.receivers[0].rocketchat.icon_emoji", UNPARSED, "unknown field")],
            ..Case::default()
        },
        Case {
            what: "a receiver without url or secretRef, or with both",
            yaml: slack_policy(
                "    - name: neither\n      slack:\n        channel: \"#deploys\"\n    - name: both\n      webhook:\n        url: https://hooks.example.com/a\n        secretRef:\n          name: x\n",
            ),
            problems: &[
                (1, "spec.receivers[0].slack", SPEC, "set exactly one of url, secretRef, tokenSecretRef"),
                (1, "spec.receivers[1].webhook", SPEC, "set exactly one of url, secretRef"),
            ],
            ..Case::default()
        },
        Case {
            what: "bad URLs, reported without echoing them",
            yaml: slack_policy(
                "    - name: ftp\n      slack:\n        url: ftp://hooks.example.com/T0001/SECRET-TOKEN\n    - name: nohost\n      msteams:\n        url: https:///SECRET-TOKEN\n    - name: relative\n      webhook:\n        url: /SECRET-TOKEN\n",
            ),
            problems: &[
                (1, "spec.receivers[0].slack.url", SPEC, NOT_A_URL),
                (1, "spec.receivers[1].msteams.url", SPEC, NOT_A_URL),
                (1, "spec.receivers[2].webhook.url", SPEC, NOT_A_URL),
            ],
            hides: Some("SECRET-TOKEN"),
            ..Case::default()
        },
        Case {
            what: "a bad URL in a Secret, reported without echoing it",
            yaml: format!(
                "apiVersion: v1\nkind: Secret\nmetadata:\n  name: x\nstringData:\n  address: hooks.example.com/SECRET-TOKEN\n---\n{}",
                slack_policy("    - name: team\n      slack:\n        secretRef:\n          name: x\n")
            ),
            problems: &[(2, "spec.receivers[0].slack.secretRef", SPEC, NOT_A_URL)],
            hides: Some("SECRET-TOKEN"),
            ..Case::default()
        },
        Case {
            what: "duplicate receiver names",
            yaml: slack_policy(
                "    - name: team\n      slack:\n        url: https://hooks.example.com/a\n    - name: team\n      webhook:\n        url: https://hooks.example.com/b\n",
            ),
            problems: &[(1, "spec.receivers[1].name", SPEC, r#"duplicate receiver name "team""#)],
            ..Case::default()
        },
        Case {
            what: "a receiver name that is not a DNS label",
            yaml: slack_policy(
                "    - name: Team_Slack\n      slack:\n        url: https://hooks.example.com/a\n",
            ),
            problems: &[(1, "spec.receivers[0].name", SPEC, "must be a DNS label: lower-case letters, digits and '-', at most 63 characters")],
            ..Case::default()
        },
        Case {
            what: "no receivers",
            yaml: "apiVersion: herald.dev/v1alpha1\nkind: NotificationPolicy\nmetadata:\n  name: x\nspec:\n  receivers: []\n".to_owned(),
            problems: &[(1, "spec.receivers", SPEC, "at least one receiver is required")],
            ..Case::default()
        },
    ]);
}

#[test]
#[rustfmt::skip]
fn webhook_credentials_headers_and_slack_bots_are_checked() {
    assert_reports(&[
        Case {
            what: "webhook credentials and headers, checked without echoing secrets",
            yaml: format!(
                "{}---\n{}",
                "---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: hook\n  namespace: default\nstringData:\n  address: https://hooks.example.com/signed\n  token: \"s3cr3t\\nvalue\"\n",
                slack_policy(concat!(
                    "    - name: signed\n      webhook:\n        secretRef:\n          name: hook\n",
                    "        headers:\n          \"Bad Header\": x\n          X-Ok: \"a\\r\\nb\"\n",
                    "        bearerTokenSecretRef:\n          name: hook\n",
                    "        signature:\n          secretRef:\n            name: hook\n",
                ))
            ),
            problems: &[
                (2, "spec.receivers[0].webhook.headers", SPEC, r#""Bad Header" is not a valid HTTP header name"#),
                (2, "spec.receivers[0].webhook.headers.X-Ok", SPEC, "a header value must be one line of visible ASCII"),
                (2, "spec.receivers[0].webhook.bearerTokenSecretRef", SPEC, "the token must be one line of visible ASCII"),
                (2, "spec.receivers[0].webhook.signature.secretRef", SECRET, r#"Secret default/hook has no key "signingKey""#),
            ],
            hides: Some("s3cr3t"),
            ..Case::default()
        },
        Case {
            what: "webhook headers that conflict, refused at load time",
            yaml: format!(
                "{}---\n{}",
                "---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: hook\n  namespace: default\nstringData:\n  address: https://hooks.example.com/signed\n  token: t0k3n\n  signingKey: k3y\n",
                slack_policy(concat!(
                    "    - name: signed\n      webhook:\n        secretRef:\n          name: hook\n",
                    "        headers:\n          Authorization: Basic abc\n          Content-Length: \"3\"\n          X-Team: a\n          x-team: b\n",
                    "        bearerTokenSecretRef:\n          name: hook\n",
                    "        signature:\n          secretRef:\n            name: hook\n          header: x-TEAM\n",
                ))
            ),
            problems: &[
                (2, "spec.receivers[0].webhook.headers.Authorization", SPEC, "Authorization is set by bearerTokenSecretRef"),
                (2, "spec.receivers[0].webhook.headers.Content-Length", SPEC, r#""Content-Length" is set by Herald's HTTP client"#),
                (2, "spec.receivers[0].webhook.headers.x-team", SPEC, r#""x-team" is given twice (header names ignore case)"#),
                (2, "spec.receivers[0].webhook.signature.header", SPEC, r#""x-TEAM" is already sent with another value"#),
            ],
            ..Case::default()
        },
        Case {
            what: "a Slack bot needs a token, a channel and no webhook URL",
            yaml: slack_policy(concat!(
                "    - name: bot\n      slack:\n        url: https://hooks.slack.com/services/x\n",
                "        tokenSecretRef:\n          name: slack-bot\n",
            )),
            problems: &[
                (1, "spec.receivers[0].slack", SPEC, "set exactly one of url, secretRef, tokenSecretRef"),
                (1, "spec.receivers[0].slack.channel", SPEC, "a bot token (tokenSecretRef) needs a channel"),
                (1, "spec.receivers[0].slack.tokenSecretRef", SECRET, "Secret default/slack-bot not found"),
            ],
            ..Case::default()
        },
        Case {
            what: "Slack thread options need a bot token",
            yaml: slack_policy(concat!(
                "    - name: hook\n      slack:\n        url: https://hooks.slack.com/services/x\n",
                "        threads: true\n        apiUrl: https://slack.com/api\n",
            )),
            problems: &[
                (1, "spec.receivers[0].slack.apiUrl", SPEC, NO_THREADS_WITHOUT_A_BOT),
                (1, "spec.receivers[0].slack.threads", SPEC, NO_THREADS_WITHOUT_A_BOT),
            ],
            ..Case::default()
        },
    ]);
}

#[test]
#[rustfmt::skip]
fn templates_are_compiled_and_tried_at_load_time() {
    assert_reports(&[
        Case {
            what: "an unclosed template block, named with where it opened",
            yaml: policy("default", "x", "template:\n  text: \"ok {{#if name}}unclosed\""),
            problems: &[(1, "spec.template.text", TEMPLATE, "unclosed {{#if}} block opened at line 1, column 4")],
            ..Case::default()
        },
        Case {
            what: "a misspelt template variable",
            yaml: policy("default", "x", "template:\n  title: \"Canary {{name}}\\n  moved to {{phsae}}\""),
            problems: &[(1, "spec.template.title", TEMPLATE, r#"line 2, column 12: variable "phsae" not found"#)],
            ..Case::default()
        },
        Case {
            what: "a misspelt variable in a receiver's template",
            yaml: slack_policy(
                "    - name: team\n      slack:\n        url: https://hooks.example.com/a\n      template:\n        text: \"{{mesage}}\"\n",
            ),
            problems: &[(1, "spec.receivers[0].template.text", TEMPLATE, r#"line 1, column 1: variable "mesage" not found"#)],
            ..Case::default()
        },
        Case {
            what: "a webhook body that renders invalid JSON",
            yaml: slack_policy(
                "    - name: audit\n      webhook:\n        url: https://hooks.example.com/a\n        body: '{\"text\": {{message}}}'\n",
            ),
            problems: &[(1, "spec.receivers[0].webhook.body", TEMPLATE, "renders invalid JSON (line 1, column 10 of the output: expected value); insert values with {{json ...}}")],
            ..Case::default()
        },
        Case {
            what: "a webhook body using the json helper",
            yaml: slack_policy(
                "    - name: audit\n      webhook:\n        url: https://hooks.example.com/a\n        body: '{\"text\": {{json message}}, \"n\": {{timestamp}}}'\n",
            ),
            valid: 1,
            ..Case::default()
        },
    ]);
}

#[test]
#[rustfmt::skip]
fn repeat_intervals_and_policy_names() {
    assert_reports(&[
        Case {
            what: "a repeat interval that is not a duration",
            yaml: policy("default", "x", r#"repeatInterval: "1 day""#),
            problems: &[(1, "spec.repeatInterval", SPEC, r#""1 day" is not a duration such as 30s, 10m or 1h30m"#)],
            ..Case::default()
        },
        Case {
            what: "a repeat interval of 1h30m",
            yaml: policy("default", "x", "repeatInterval: 1h30m"),
            valid: 1,
            ..Case::default()
        },
        Case {
            what: "a zero repeat interval: 0s",
            yaml: policy("default", "x", "repeatInterval: 0s"),
            problems: &[(1, "spec.repeatInterval", SPEC, r#""0s" is zero: give a longer interval, or leave repeatInterval unset to send every repeat"#)],
            ..Case::default()
        },
        Case {
            what: "a zero repeat interval: 0ms",
            yaml: policy("default", "x", "repeatInterval: 0ms"),
            problems: &[(1, "spec.repeatInterval", SPEC, r#""0ms" is zero: give a longer interval, or leave repeatInterval unset to send every repeat"#)],
            ..Case::default()
        },
        Case {
            what: "a zero repeat interval: 0h0m",
            yaml: policy("default", "x", "repeatInterval: 0h0m"),
            problems: &[(1, "spec.repeatInterval", SPEC, r#""0h0m" is zero: give a longer interval, or leave repeatInterval unset to send every repeat"#)],
            ..Case::default()
        },
        Case {
            what: "the same name in two namespaces is not a duplicate",
            yaml: [policy("team-a", "x", ""), policy("team-b", "x", "")].concat(),
            valid: 2,
            ..Case::default()
        },
    ]);
}

#[test]
#[rustfmt::skip]
fn unknown_and_missing_fields_are_not_silently_ignored() {
    assert_reports(&[
        Case {
            // `phase:` instead of `phases:` must not mean "every phase".
            what: "an unknown field in spec",
            yaml: policy("default", "x", "phase: [Failed]"),
            problems: &[(1, "spec.phase", UNPARSED, "unknown field")],
            shown: Some("p.yaml (document 1): spec.phase: unknown field"),
            ..Case::default()
        },
        Case {
            what: "an unknown nested field",
            yaml: slack_policy(
                "    - name: team\n      slack:\n        url: https://hooks.example.com/a\n        chanel: \"#deploys\"\n",
            ),
            problems: &[(1, "spec.receivers[0].slack.chanel", UNPARSED, "unknown field")],
            ..Case::default()
        },
        Case {
            what: "an unknown field in metadata",
            yaml: "apiVersion: herald.dev/v1alpha1\nkind: NotificationPolicy\nmetadata:\n  name: x\n  nmespace: team-a\nspec:\n  receivers:\n    - name: hook\n      webhook:\n        url: https://hooks.example.com/a\n".to_owned(),
            problems: &[(1, "metadata.nmespace", UNPARSED, "unknown field")],
            ..Case::default()
        },
        Case {
            what: "an unknown field at the top",
            yaml: format!("{}specs: {{}}\n", policy("default", "x", "")),
            problems: &[(1, "specs", UNPARSED, "unknown field")],
            ..Case::default()
        },
        Case {
            what: "a wrong apiVersion",
            yaml: policy("default", "x", "").replace("herald.dev/v1alpha1", "herald.dev/v1"),
            problems: &[(1, "apiVersion", UNPARSED, r#"NotificationPolicy is served as herald.dev/v1alpha1, not "herald.dev/v1""#)],
            ..Case::default()
        },
        Case {
            what: "no kind",
            yaml: "apiVersion: herald.dev/v1alpha1\nmetadata:\n  name: x\n".to_owned(),
            problems: &[(1, "kind", UNPARSED, "missing field")],
            ..Case::default()
        },
    ]);
}

// The cases below check messages by their start, or several sources at once.

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
#[rustfmt::skip]
fn gate_settings() {
    assert_reports(&[
        Case {
            what: "gates with every setting",
            yaml: policy("default", "x", "gates:\n  types: [confirm-promotion, rollback]\n  receivers: [hook]\n  approvers:\n    slackUsers: [U012AB3CD, W0123ABC]\n    slackUserGroups: [S0614TZR7]\n    identities: [alice@example.com]\n  remindAfter: 30m\n  escalateAfter: 2h\n  escalateTo: [hook]"),
            valid: 1,
            ..Case::default()
        },
        Case {
            what: "a receiver the policy does not have",
            yaml: policy("default", "x", "gates:\n  receivers: [pager]\n  escalateTo: [hook, oncall]"),
            problems: &[
                (1, "spec.gates.receivers[0]", SPEC, r#"no receiver named "pager" in spec.receivers"#),
                (1, "spec.gates.escalateTo[1]", SPEC, r#"no receiver named "oncall" in spec.receivers"#),
            ],
            ..Case::default()
        },
        Case {
            what: "an escalation with nobody to escalate to, and a reminder that is no duration",
            yaml: policy("default", "x", "gates:\n  remindAfter: soon\n  escalateAfter: 1h"),
            problems: &[
                (1, "spec.gates.escalateTo", SPEC, "escalateAfter is set: name the receivers to escalate to"),
                (1, "spec.gates.remindAfter", SPEC, r#""soon" is not a duration such as 30s, 10m or 1h30m"#),
            ],
            ..Case::default()
        },
        Case {
            what: "Slack names where IDs belong",
            yaml: policy("default", "x", "gates:\n  approvers:\n    slackUsers: [alice]\n    slackUserGroups: [U012AB3CD]"),
            problems: &[
                (1, "spec.gates.approvers.slackUsers[0]", SPEC, r#""alice" is not a Slack user ID (such as U012AB3CD)"#),
                (1, "spec.gates.approvers.slackUserGroups[0]", SPEC, r#""U012AB3CD" is not a Slack user group ID (such as S012AB3CD)"#),
            ],
            ..Case::default()
        },
    ]);
}
