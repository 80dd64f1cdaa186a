//! Which policies fire for which events: YAML policies → `load_sources` → `Loaded::build` →
//! `PolicySet::matching` / `PolicySet::deliveries`.

mod common;

use common::*;
use herald_api::EventType;
use herald_core::{MatchInput, PolicyId};

#[test]
fn exact_canary_names_match_only_those_canaries() {
    let set = build_ok(&policy(
        "default",
        "exact",
        r#"canaries: ["podinfo", "checkout"]"#,
    ));
    for name in ["podinfo", "checkout"] {
        assert_eq!(
            matched_event(&set, &progressing(name, "default")),
            ["default/exact"],
            "{name}"
        );
    }
    for name in [
        "podinfo-primary",
        "podinf",
        "Podinfo",
        "checkout2",
        "xpodinfo",
    ] {
        assert!(
            matched_event(&set, &progressing(name, "default")).is_empty(),
            "{name} must not match an exact name"
        );
    }
}

#[test]
fn glob_canary_names() {
    let set = build_ok(
        &[
            policy("default", "payments", r#"canaries: ["payments-*"]"#),
            policy("default", "single", r#"canaries: ["web-?"]"#),
            policy("default", "alternates", r#"canaries: ["{api,worker}-eu"]"#),
            policy("default", "classes", r#"canaries: ["db-[0-9]"]"#),
        ]
        .concat(),
    );
    let cases: &[(&str, &[&str])] = &[
        ("payments-api", &["default/payments"]),
        ("payments-", &["default/payments"]),
        ("payments-api-v2", &["default/payments"]),
        ("payments", &[]),
        ("my-payments-api", &[]),
        ("web-1", &["default/single"]),
        ("web-12", &[]),
        ("web-", &[]),
        ("api-eu", &["default/alternates"]),
        ("worker-eu", &["default/alternates"]),
        ("cron-eu", &[]),
        ("db-7", &["default/classes"]),
        ("db-x", &[]),
    ];
    for (name, expected) in cases {
        assert_eq!(
            matched_event(&set, &progressing(name, "default")),
            *expected,
            "canary {name}"
        );
    }
}

#[test]
fn exact_names_and_globs_together_fire_once() {
    let set = build_ok(&policy(
        "default",
        "mixed",
        r#"canaries: ["payments-api", "payments-*", "podinfo"]"#,
    ));
    assert_eq!(
        delivery_pairs(
            &set,
            &MatchInput::event(&progressing("payments-api", "default")),
            None
        ),
        pairs(&[("default/mixed", "hook")]),
        "a canary named twice by one policy is notified once"
    );
    assert_eq!(
        matched_event(&set, &progressing("podinfo", "default")),
        ["default/mixed"]
    );
    assert!(matched_event(&set, &progressing("checkout", "default")).is_empty());
}

#[test]
fn no_canaries_means_every_canary() {
    let set = build_ok(
        &[
            policy("default", "all", ""),
            policy("default", "only-podinfo", r#"canaries: ["podinfo"]"#),
        ]
        .concat(),
    );
    assert_eq!(
        matched_event(&set, &progressing("anything-at-all", "default")),
        ["default/all"]
    );
    assert_eq!(
        matched_event(&set, &progressing("podinfo", "default")),
        ["default/all", "default/only-podinfo"]
    );
}

#[test]
fn match_labels_need_known_labels_that_all_agree() {
    let set = build_ok(
        &[
            policy(
                "default",
                "labelled",
                "matchLabels:\n  team: payments\n  tier: backend",
            ),
            policy("default", "unlabelled", ""),
        ]
        .concat(),
    );
    let ev = progressing("podinfo", "default");
    let with = |canary| MatchInput {
        event: &ev,
        canary,
        namespace_labels: None,
    };

    // An event received over HTTP carries no labels: a policy with matchLabels cannot fire.
    assert_eq!(matched(&set, &with(None)), ["default/unlabelled"]);

    let empty = canary(&[]);
    assert_eq!(matched(&set, &with(Some(&empty))), ["default/unlabelled"]);

    let partial = canary(&[("team", "payments")]);
    assert_eq!(matched(&set, &with(Some(&partial))), ["default/unlabelled"]);

    let different = canary(&[("team", "payments"), ("tier", "frontend")]);
    assert_eq!(
        matched(&set, &with(Some(&different))),
        ["default/unlabelled"]
    );

    let all = canary(&[("team", "payments"), ("tier", "backend")]);
    assert_eq!(
        matched(&set, &with(Some(&all))),
        ["default/labelled", "default/unlabelled"]
    );

    let superset = canary(&[
        ("team", "payments"),
        ("tier", "backend"),
        ("app", "podinfo"),
    ]);
    assert_eq!(
        matched(&set, &with(Some(&superset))),
        ["default/labelled", "default/unlabelled"]
    );
}

#[test]
fn phases_filter_and_unknown_phases() {
    let set = build_ok(
        &[
            policy("default", "outcomes", "phases: [Succeeded, Failed]"),
            policy("default", "every-phase", ""),
        ]
        .concat(),
    );
    let at = |phase: &str| {
        matched_event(
            &set,
            &event(
                "podinfo",
                "default",
                phase,
                "something happened",
                EventType::Normal,
            ),
        )
    };
    assert_eq!(at("Succeeded"), ["default/every-phase", "default/outcomes"]);
    assert_eq!(at("Failed"), ["default/every-phase", "default/outcomes"]);
    assert_eq!(at("Progressing"), ["default/every-phase"]);
    assert_eq!(at("Initialized"), ["default/every-phase"]);
    // A phase from a newer Flagger never matches a phase list, but still reaches policies
    // that list no phases.
    assert_eq!(at("Paused"), ["default/every-phase"]);
    assert_eq!(at(""), ["default/every-phase"]);
    // Phase names are case-sensitive, as Flagger writes them.
    assert_eq!(at("failed"), ["default/every-phase"]);
}

#[test]
fn unknown_phase_from_the_wire_matches_only_policies_without_phases() {
    let set = build_ok(
        &[
            policy("default", "listed", "phases: [Progressing]"),
            policy("default", "unlisted", ""),
        ]
        .concat(),
    );
    let body = br#"{"name":"podinfo","namespace":"default","phase":"Paused","metadata":{"eventMessage":"paused","eventType":"Normal","timestamp":"1"}}"#;
    let ev = herald_core::FlaggerEvent::from_json(body).unwrap();
    assert_eq!(
        delivery_pairs(&set, &MatchInput::event(&ev), None),
        pairs(&[("default/unlisted", "hook")])
    );
    let listed = index_of(&set, &PolicyId::namespaced("default", "listed"));
    assert!(set
        .notifications(&MatchInput::event(&ev), Some(listed))
        .is_empty());
}

#[test]
fn event_types_filter() {
    let set = build_ok(
        &[
            policy("default", "warnings", "eventTypes: [Warning]"),
            policy("default", "normals", "eventTypes: [Normal]"),
            policy("default", "both", "eventTypes: [Normal, Warning]"),
        ]
        .concat(),
    );
    let of = |t| matched_event(&set, &event("podinfo", "default", "Progressing", "m", t));
    assert_eq!(of(EventType::Warning), ["default/both", "default/warnings"]);
    assert_eq!(of(EventType::Normal), ["default/both", "default/normals"]);
}

#[test]
fn message_pattern_is_a_regex_searched_in_the_message() {
    let set = build_ok(
        &[
            policy(
                "default",
                "anchored",
                r#"messagePattern: "^(Rolling back|Canary failed)""#,
            ),
            policy("default", "anywhere", r#"messagePattern: 'weight \d+$'"#),
        ]
        .concat(),
    );
    let say = |message: &str| {
        matched_event(
            &set,
            &event(
                "podinfo",
                "default",
                "Progressing",
                message,
                EventType::Warning,
            ),
        )
    };
    assert_eq!(
        say("Rolling back podinfo.default failed checks threshold reached 5"),
        ["default/anchored"]
    );
    assert_eq!(
        say("Canary failed! Scaling down podinfo.default"),
        ["default/anchored"]
    );
    assert_eq!(say("Not Rolling back"), Vec::<String>::new());
    assert_eq!(
        say("Advance podinfo.default canary weight 20"),
        ["default/anywhere"]
    );
    assert_eq!(
        say("Advance podinfo.default canary weight twenty"),
        Vec::<String>::new()
    );
}

#[test]
fn suspended_policy_never_fires() {
    let set = build_ok(
        &[
            policy("default", "paused", "suspend: true"),
            policy("default", "active", "suspend: false"),
        ]
        .concat(),
    );
    let id = PolicyId::namespaced("default", "paused");
    // Suspended is valid: the policy is in the set, not among the problems.
    let paused = index_of(&set, &id);
    assert!(set.policy(paused).suspend);
    assert!(set.problems().is_empty());

    let ev = progressing("podinfo", "default");
    let input = MatchInput::event(&ev);
    assert_eq!(matched(&set, &input), ["default/active"]);
    assert_eq!(
        delivery_pairs(&set, &input, None),
        pairs(&[("default/active", "hook")])
    );
    // Not even when asked for by index (`herald render --policy`, a replay).
    assert!(set.notifications(&input, Some(paused)).is_empty());
    let active = index_of(&set, &PolicyId::namespaced("default", "active"));
    assert_eq!(
        delivery_pairs(&set, &input, Some(active)),
        pairs(&[("default/active", "hook")])
    );
}

#[test]
fn namespaced_policy_fires_only_for_its_own_namespace() {
    let set = build_ok(
        &[
            policy("team-a", "mine", ""),
            // No namespace in the manifest: `default`, as kubectl apply would put it.
            "---\napiVersion: herald.dev/v1alpha1\nkind: NotificationPolicy\nmetadata:\n  name: implicit\nspec:\n  receivers:\n    - name: hook\n      webhook:\n        url: https://hooks.example.com/x\n".to_owned(),
        ]
        .concat(),
    );
    assert_eq!(
        matched_event(&set, &progressing("podinfo", "team-a")),
        ["team-a/mine"]
    );
    assert_eq!(
        matched_event(&set, &progressing("podinfo", "default")),
        ["default/implicit"]
    );
    assert!(matched_event(&set, &progressing("podinfo", "team-b")).is_empty());
    assert!(matched_event(&set, &progressing("podinfo", "team-a-2")).is_empty());

    // Asked for directly, a policy still does not fire for another namespace.
    let mine = index_of(&set, &PolicyId::namespaced("team-a", "mine"));
    let other = progressing("podinfo", "team-b");
    assert!(set
        .notifications(&MatchInput::event(&other), Some(mine))
        .is_empty());
}

#[test]
fn cluster_policy_namespace_selector_match_names() {
    let set = build_ok(
        &[
            cluster_policy("exact", "namespaceSelector:\n  matchNames: [prod, staging]"),
            cluster_policy("glob", "namespaceSelector:\n  matchNames: [\"team-*\"]"),
            cluster_policy(
                "mixed",
                "namespaceSelector:\n  matchNames: [prod, \"qa-?\"]",
            ),
            cluster_policy("everywhere", ""),
        ]
        .concat(),
    );
    let cases: &[(&str, &[&str])] = &[
        ("prod", &["everywhere", "exact", "mixed"]),
        ("staging", &["everywhere", "exact"]),
        ("prod-eu", &["everywhere"]),
        ("team-a", &["everywhere", "glob"]),
        ("team-payments", &["everywhere", "glob"]),
        ("teams", &["everywhere"]),
        ("qa-1", &["everywhere", "mixed"]),
        ("qa-12", &["everywhere"]),
        ("default", &["everywhere"]),
    ];
    for (namespace, expected) in cases {
        assert_eq!(
            matched_event(&set, &progressing("podinfo", namespace)),
            *expected,
            "namespace {namespace}"
        );
    }
}

#[test]
fn cluster_policy_namespace_selector_match_labels_needs_namespace_labels() {
    let set = build_ok(
        &[
            cluster_policy(
                "prod-labelled",
                "namespaceSelector:\n  matchLabels:\n    env: prod",
            ),
            cluster_policy(
                "prod-named-and-labelled",
                "namespaceSelector:\n  matchNames: [payments]\n  matchLabels:\n    env: prod",
            ),
        ]
        .concat(),
    );
    let prod = labels(&[("env", "prod"), ("owner", "x")]);
    let dev = labels(&[("env", "dev")]);
    let at = |namespace: &str, namespace_labels| {
        let ev = progressing("podinfo", namespace);
        matched(
            &set,
            &MatchInput {
                event: &ev,
                canary: None,
                namespace_labels,
            },
        )
    };
    // Namespace labels unknown (standalone Herald): never matches.
    assert!(at("payments", None).is_empty());
    assert!(at("payments", Some(&dev)).is_empty());
    assert_eq!(
        at("payments", Some(&prod)),
        ["prod-labelled", "prod-named-and-labelled"]
    );
    // Both matchNames and matchLabels must match.
    assert_eq!(at("checkout", Some(&prod)), ["prod-labelled"]);
}

#[test]
fn canary_labels_do_not_satisfy_a_namespace_selector() {
    let set = build_ok(&cluster_policy(
        "prod",
        "namespaceSelector:\n  matchLabels:\n    env: prod",
    ));
    let prod = canary(&[("env", "prod")]);
    let ev = progressing("podinfo", "payments");
    let input = MatchInput {
        event: &ev,
        canary: Some(&prod),
        namespace_labels: None,
    };
    assert!(matched(&set, &input).is_empty());
}

#[test]
fn every_filter_must_agree() {
    let set = build_ok(&policy(
        "default",
        "strict",
        "canaries: [\"payments-*\"]\nphases: [Progressing]\neventTypes: [Warning]\nmessagePattern: \"^Rolling back\"\nmatchLabels:\n  team: payments",
    ));
    let team = canary(&[("team", "payments")]);
    let check = |name: &str, phase: &str, message: &str, t, canary| {
        let ev = event(name, "default", phase, message, t);
        !matched(
            &set,
            &MatchInput {
                event: &ev,
                canary,
                namespace_labels: None,
            },
        )
        .is_empty()
    };
    let rb = "Rolling back payments-api.default failed checks threshold reached 5";
    assert!(check(
        "payments-api",
        "Progressing",
        rb,
        EventType::Warning,
        Some(&team)
    ));
    assert!(!check(
        "checkout",
        "Progressing",
        rb,
        EventType::Warning,
        Some(&team)
    ));
    assert!(!check(
        "payments-api",
        "Failed",
        rb,
        EventType::Warning,
        Some(&team)
    ));
    assert!(!check(
        "payments-api",
        "Progressing",
        rb,
        EventType::Normal,
        Some(&team)
    ));
    assert!(!check(
        "payments-api",
        "Progressing",
        "Advance",
        EventType::Warning,
        Some(&team)
    ));
    assert!(!check(
        "payments-api",
        "Progressing",
        rb,
        EventType::Warning,
        None
    ));
}

#[test]
fn deliveries_are_ordered_by_policy_id_then_receiver_order() {
    // Declared out of order, across two sources; receivers deliberately not alphabetical.
    let a = [
        policy("team-b", "zeta", ""),
        "---\napiVersion: herald.dev/v1alpha1\nkind: NotificationPolicy\nmetadata:\n  name: alpha\n  namespace: team-b\nspec:\n  receivers:\n    - name: zz-last-alphabetically\n      webhook:\n        url: https://hooks.example.com/1\n    - name: aa-first-alphabetically\n      webhook:\n        url: https://hooks.example.com/2\n    - name: mm\n      slack:\n        url: https://hooks.example.com/3\n".to_owned(),
        cluster_policy("zz-cluster", ""),
    ]
    .concat();
    let b = [
        policy("team-a", "omega", ""),
        cluster_policy("aa-cluster", ""),
        policy("team-b", "middle", r#"canaries: ["other"]"#),
    ]
    .concat();
    let (loaded, set) = load_and_build(&[("a.yaml", &a), ("b.yaml", &b)]);
    assert!(loaded.problems.is_empty(), "{:?}", loaded.problems);

    let ev = progressing("podinfo", "team-b");
    let input = MatchInput::event(&ev);
    // Policy ids sort cluster policies (no namespace) first, then by namespace and name.
    assert_eq!(
        delivery_pairs(&set, &input, None),
        pairs(&[
            ("aa-cluster", "hook"),
            ("zz-cluster", "hook"),
            ("team-b/alpha", "zz-last-alphabetically"),
            ("team-b/alpha", "aa-first-alphabetically"),
            ("team-b/alpha", "mm"),
            ("team-b/zeta", "hook"),
        ])
    );
    // The indices in each delivery point at that policy and receiver.
    for result in set.notifications(&input, None) {
        let d = result.unwrap();
        let receiver = set.receiver(d.policy, d.receiver);
        assert_eq!(
            receiver.type_name,
            if receiver.name == "mm" {
                "slack"
            } else {
                "webhook"
            }
        );
    }
    // Matching alone gives the same order, and agrees with the PolicyId order.
    let ids: Vec<PolicyId> = set
        .matching(&input)
        .into_iter()
        .map(|i| set.policy(i).id.clone())
        .collect();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids, sorted);
    assert_eq!(ids.len(), 4);
}

#[test]
fn deliveries_for_one_policy_only() {
    let set = build_ok(
        &[
            policy("default", "one", ""),
            policy("default", "two", ""),
            policy("default", "elsewhere", r#"canaries: ["checkout"]"#),
        ]
        .concat(),
    );
    let ev = progressing("podinfo", "default");
    let input = MatchInput::event(&ev);
    let two = index_of(&set, &PolicyId::namespaced("default", "two"));
    assert_eq!(
        delivery_pairs(&set, &input, Some(two)),
        pairs(&[("default/two", "hook")])
    );
    let elsewhere = index_of(&set, &PolicyId::namespaced("default", "elsewhere"));
    assert!(set.notifications(&input, Some(elsewhere)).is_empty());
}

#[test]
fn ten_thousand_policies_match_exactly_the_right_ones() {
    const N: usize = 10_000;
    let mut yaml = String::with_capacity(N * 220);
    for i in 0..N {
        yaml.push_str(&policy(
            "default",
            &format!("p-{i:05}"),
            &format!("canaries: [svc-{i}]"),
        ));
        // The same canary names in another namespace: must never match in `default`.
        if i % 10 == 0 {
            yaml.push_str(&policy(
                "other",
                &format!("p-{i:05}"),
                &format!("canaries: [svc-{i}]"),
            ));
        }
    }
    yaml.push_str(&policy("default", "g-prefix", r#"canaries: ["svc-12*"]"#));
    yaml.push_str(&policy("default", "g-one-digit", r#"canaries: ["svc-?"]"#));
    yaml.push_str(&policy("default", "g-suffix", r#"canaries: ["*99"]"#));
    yaml.push_str(&policy("default", "g-all", ""));
    yaml.push_str(&cluster_policy(
        "c-glob",
        "canaries: [\"svc-7*\"]\nnamespaceSelector:\n  matchNames: [default]",
    ));
    let set = build_ok(&yaml);
    assert_eq!(set.policies().len(), N + N / 10 + 5);

    // A reference matcher, written out by hand.
    let expected = |i: usize| -> Vec<String> {
        let name = format!("svc-{i}");
        let mut ids = Vec::new();
        if name.starts_with("svc-7") {
            ids.push("c-glob".to_owned());
        }
        ids.push("default/g-all".to_owned());
        if i < 10 {
            ids.push("default/g-one-digit".to_owned());
        }
        if name.starts_with("svc-12") {
            ids.push("default/g-prefix".to_owned());
        }
        if name.ends_with("99") {
            ids.push("default/g-suffix".to_owned());
        }
        ids.push(format!("default/p-{i:05}"));
        ids
    };
    for i in 0..N {
        assert_eq!(
            matched_event(&set, &progressing(&format!("svc-{i}"), "default")),
            expected(i),
            "svc-{i}"
        );
    }
    // Names no exact policy lists.
    assert_eq!(
        matched_event(&set, &progressing("svc-10000", "default")),
        ["default/g-all"]
    );
    assert_eq!(
        matched_event(&set, &progressing("svc-1299", "default")),
        [
            "default/g-all",
            "default/g-prefix",
            "default/g-suffix",
            "default/p-01299"
        ]
    );
    // In the other namespace only its own exact policy fires.
    assert_eq!(
        matched_event(&set, &progressing("svc-120", "other")),
        ["other/p-00120"]
    );
    assert!(matched_event(&set, &progressing("svc-121", "other")).is_empty());
    assert!(matched_event(&set, &progressing("svc-1", "nowhere")).is_empty());
}
