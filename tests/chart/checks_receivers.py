"""Flagger's receiver values (Slack webhook or bot, Teams, the event webhook) and the
Secret and ClusterNotificationPolicies they become; the errors for values that contradict
each other."""

from __future__ import annotations

import json
import re

from common import (
    FLAGGER_VALUES,
    NAMESPACE,
    PATTERN,
    SECRET,
    SLACK_BOT_VALUES,
    SLACK_TOKEN,
    SLACK_URL,
    TEAMS_URL,
    WEBHOOK_URL,
    check,
    container,
    expect_equal,
    one,
    policy_specs,
    receiver_secrets,
    render,
    render_error,
    render_files,
)


@check
def flagger_values() -> None:
    """Flagger's values give the Secret and the ClusterNotificationPolicies Flagger's
    notifications correspond to, exactly; URLs only in the Secret."""
    docs = render(FLAGGER_VALUES)
    secret = one(docs, "Secret", SECRET)
    expect_equal(secret["metadata"]["name"], SECRET, "Secret name")
    expect_equal(secret["metadata"]["namespace"], NAMESPACE, "Secret namespace")
    expect_equal(secret.get("type"), "Opaque", "Secret type")
    expect_equal(
        secret.get("stringData"),
        {"slack": SLACK_URL, "msteams": TEAMS_URL, "webhook": WEBHOOK_URL},
        "stringData",
    )
    assert "data" not in secret, "no data expected besides stringData"
    expect_equal(
        policy_specs(docs),
        {
            "herald-default": {
                "messagePattern": PATTERN,
                "receivers": [
                    {
                        "name": "slack",
                        "slack": {
                            "secretRef": {"name": SECRET, "key": "slack"},
                            "channel": "#deploys",
                            "username": "flagger",
                        },
                    },
                    {
                        "name": "msteams",
                        "msteams": {
                            "secretRef": {"name": SECRET, "key": "msteams"},
                        },
                    },
                ],
            },
            "herald-default-webhook": {
                "receivers": [
                    {"name": "webhook", "webhook": {"secretRef": {"name": SECRET, "key": "webhook"}}}
                ],
            },
        },
        "ClusterNotificationPolicies",
    )
    assert "--cluster-name=prod-eu" in container(docs)["args"], container(docs)["args"]
    for doc in docs:
        if doc["kind"] != "Secret":
            text = json.dumps(doc)
            for url in (SLACK_URL, TEAMS_URL, WEBHOOK_URL):
                assert url not in text, f"{doc['kind']}/{doc['metadata']['name']} holds a receiver URL"
    # A message pattern in Rust regex syntax that Flagger's alert messages match.
    for message, sent in (
        ("Initialization done! podinfo.test", True),
        ("New revision detected! Scaling up podinfo.test", True),
        ("Promotion completed! Scaling down podinfo.test", True),
        ("Rolling back podinfo.test failed checks threshold reached 5", True),
        ("Canary failed! Scaling down podinfo.test", True),
        ("Advance podinfo.test canary weight 10", False),
        ("Starting canary analysis for podinfo.test", False),
    ):
        assert bool(re.search(PATTERN, message)) == sent, f"pattern on {message!r}"



@check
def receiver_variants() -> None:
    """Each receiver alone, the Teams format, templates, namespaces, and no default policy."""
    only_webhook = render({"eventWebhook": WEBHOOK_URL})
    expect_equal(
        sorted(policy_specs(only_webhook)), ["herald-default-webhook"], "policies for eventWebhook only"
    )
    expect_equal(
        one(only_webhook, "Secret", SECRET)["stringData"],
        {"webhook": WEBHOOK_URL},
        "stringData for eventWebhook only",
    )

    only_slack = render({"slack": {"url": SLACK_URL, "user": ""}})
    expect_equal(
        policy_specs(only_slack),
        {
            "herald-default": {
                "messagePattern": PATTERN,
                "receivers": [{"name": "slack", "slack": {"secretRef": {"name": SECRET, "key": "slack"}}}],
            }
        },
        "policies for Slack only, no channel or user",
    )

    teams = render(
        {
            "msteams": {"url": TEAMS_URL, "format": "MessageCard"},
            "defaultPolicy": {
                "template": {"title": "[{{cluster}}] {{name}}", "text": "{{message}} ({{phase}})"},
                "namespaceSelector": {"matchNames": ["prod-*"]},
                "repeatInterval": "30m",
            },
        }
    )
    expect_equal(
        policy_specs(teams),
        {
            "herald-default": {
                "namespaceSelector": {"matchNames": ["prod-*"]},
                "messagePattern": PATTERN,
                "repeatInterval": "30m",
                "template": {"title": "[{{cluster}}] {{name}}", "text": "{{message}} ({{phase}})"},
                "receivers": [
                    {
                        "name": "msteams",
                        "msteams": {"secretRef": {"name": SECRET, "key": "msteams"}, "format": "MessageCard"},
                    }
                ],
            }
        },
        "Teams MessageCard policy with templates, a namespace selector and a repeat interval",
    )

    disabled = render({**FLAGGER_VALUES, "defaultPolicy": {"enabled": False}})
    expect_equal(policy_specs(disabled), {}, "policies with defaultPolicy.enabled=false")
    assert one(disabled, "Secret", SECRET)["metadata"]["name"] == SECRET, "the Secret stays for your own policies"

    named = render(FLAGGER_VALUES, name="notify")
    expect_equal(
        sorted(policy_specs(named)),
        ["notify-default", "notify-default-webhook"],
        "policy names follow the release",
    )
    assert one(named, "Secret", "notify-herald-receivers")["metadata"]["name"] == "notify-herald-receivers", "Secret name"



@check
def existing_secret() -> None:
    """existingSecret options reference the given Secrets and render no Secret."""
    docs = render(
        {
            "slack": {"existingSecret": {"name": "flagger-slack", "key": "url"}, "channel": "#ops"},
            "msteams": {"existingSecret": {"name": "teams"}},
            "eventWebhookExistingSecret": {"name": "audit", "key": "endpoint"},
        }
    )
    assert not receiver_secrets(docs), "no Secret expected with existing Secrets"
    expect_equal(
        policy_specs(docs),
        {
            "herald-default": {
                "messagePattern": PATTERN,
                "receivers": [
                    {
                        "name": "slack",
                        "slack": {
                            "secretRef": {"name": "flagger-slack", "key": "url"},
                            "channel": "#ops",
                            "username": "flagger",
                        },
                    },
                    {
                        "name": "msteams",
                        "msteams": {
                            "secretRef": {"name": "teams", "key": "address"},
                        },
                    },
                ],
            },
            "herald-default-webhook": {
                "receivers": [
                    {"name": "webhook", "webhook": {"secretRef": {"name": "audit", "key": "endpoint"}}}
                ],
            },
        },
        "policies with existing Secrets",
    )
    error = render_error({"slack": {"url": SLACK_URL, "existingSecret": {"name": "flagger-slack"}}})
    assert "slack.url" in error, f"both a URL and an existing Secret: {error}"



@check
def slack_bot() -> None:
    """slack.token: the token only in the Secret (key slackToken), the default policy's Slack
    receiver a bot (tokenSecretRef, channel, username); threads=false passes through."""
    docs = render(SLACK_BOT_VALUES)
    secret = one(docs, "Secret", SECRET)
    expect_equal(secret["metadata"]["name"], SECRET, "Secret name")
    expect_equal(secret.get("stringData"), {"slackToken": SLACK_TOKEN}, "stringData with a Slack bot token")
    expect_equal(
        policy_specs(docs),
        {
            "herald-default": {
                "messagePattern": PATTERN,
                "receivers": [
                    {
                        "name": "slack",
                        "slack": {
                            "tokenSecretRef": {"name": SECRET, "key": "slackToken"},
                            "channel": "#deploys",
                            "username": "flagger",
                        },
                    }
                ],
            }
        },
        "policies with a Slack bot token",
    )
    assert "--cluster-name=prod-eu" in container(docs)["args"], container(docs)["args"]
    for doc in docs:
        if doc["kind"] != "Secret":
            assert SLACK_TOKEN not in json.dumps(doc), f"{doc['kind']}/{doc['metadata']['name']} holds the token"

    # With Teams and the event webhook, threads off, no username.
    docs = render(
        {
            **FLAGGER_VALUES,
            "slack": {"token": SLACK_TOKEN, "channel": "C0123ABCD", "threads": False, "user": ""},
        }
    )
    expect_equal(
        one(docs, "Secret", SECRET)["stringData"],
        {"slackToken": SLACK_TOKEN, "msteams": TEAMS_URL, "webhook": WEBHOOK_URL},
        "stringData with a Slack bot token, Teams and the event webhook",
    )
    expect_equal(
        policy_specs(docs)["herald-default"]["receivers"],
        [
            {
                "name": "slack",
                "slack": {
                    "tokenSecretRef": {"name": SECRET, "key": "slackToken"},
                    "channel": "C0123ABCD",
                    "threads": False,
                },
            },
            {"name": "msteams", "msteams": {"secretRef": {"name": SECRET, "key": "msteams"}}},
        ],
        "receivers with a Slack bot (threads off, no username) and Teams",
    )
    expect_equal(
        sorted(policy_specs(docs)), ["herald-default", "herald-default-webhook"], "policies with every receiver"
    )

    # defaultPolicy.enabled=false: the token stays in the Secret for your own policies, and
    # needs no channel (your policies name theirs).
    disabled = render({"slack": {"token": SLACK_TOKEN}, "defaultPolicy": {"enabled": False}})
    expect_equal(policy_specs(disabled), {}, "policies with defaultPolicy.enabled=false")
    expect_equal(one(disabled, "Secret", SECRET)["stringData"], {"slackToken": SLACK_TOKEN}, "the Secret stays")

    # NOTES.txt tells to invite the bot to the channel.
    notes_ = render_files(SLACK_BOT_VALUES)["herald/templates/NOTES.txt"]
    assert "invite the app (scope chat:write) to #deploys" in notes_, notes_
    assert "Each rollout is one thread." in notes_, notes_
    assert "invite the app" not in render_files(FLAGGER_VALUES)["herald/templates/NOTES.txt"], "bot notes without a bot"



@check
def slack_bot_existing_secret() -> None:
    """slack.existingTokenSecret is referenced as given (key defaults to `token`) and renders
    no Secret."""
    for existing, ref in (
        ({"name": "slack-bot", "key": "bot-token"}, {"name": "slack-bot", "key": "bot-token"}),
        ({"name": "slack-bot"}, {"name": "slack-bot", "key": "token"}),
        # null drops the values' default key: the template's default is `token` too.
        ({"name": "slack-bot", "key": None}, {"name": "slack-bot", "key": "token"}),
    ):
        docs = render({"slack": {"existingTokenSecret": existing, "channel": "#deploys"}})
        assert not receiver_secrets(docs), f"no Secret expected with an existing token Secret: {existing}"
        expect_equal(
            policy_specs(docs),
            {
                "herald-default": {
                    "messagePattern": PATTERN,
                    "receivers": [
                        {
                            "name": "slack",
                            "slack": {"tokenSecretRef": ref, "channel": "#deploys", "username": "flagger"},
                        }
                    ],
                }
            },
            f"policies with the existing token Secret {existing}",
        )



@check
def slack_bot_errors() -> None:
    """A bot token without slack.channel, or with a Slack webhook, or given twice, fails the
    render and says what to set."""
    no_channel = (
        "slack.channel is required with a Slack bot token (slack.token or slack.existingTokenSecret)"
    )
    both = (
        "set either a Slack webhook (slack.url or slack.existingSecret) or a Slack bot token "
        "(slack.token or slack.existingTokenSecret), not both"
    )
    cases = [
        ({"slack": {"token": SLACK_TOKEN}}, no_channel),
        ({"slack": {"existingTokenSecret": {"name": "slack-bot"}}}, no_channel),
        ({**FLAGGER_VALUES, "slack": {"token": SLACK_TOKEN, "channel": ""}}, no_channel),
        ({"slack": {"token": SLACK_TOKEN, "url": SLACK_URL, "channel": "#deploys"}}, both),
        ({"slack": {"token": SLACK_TOKEN, "existingSecret": {"name": "hook"}, "channel": "#d"}}, both),
        ({"slack": {"existingTokenSecret": {"name": "bot"}, "url": SLACK_URL, "channel": "#d"}}, both),
        (
            {"slack": {"existingTokenSecret": {"name": "bot"}, "existingSecret": {"name": "hook"}, "channel": "#d"}},
            both,
        ),
        # Also without the default policy: the values contradict each other.
        ({"slack": {"token": SLACK_TOKEN, "url": SLACK_URL}, "defaultPolicy": {"enabled": False}}, both),
        (
            {"slack": {"token": SLACK_TOKEN, "existingTokenSecret": {"name": "bot"}, "channel": "#d"}},
            "set either slack.token or its existing Secret, not both",
        ),
    ]
    for values, message in cases:
        error = render_error(values)
        assert message in error, f"{json.dumps(values)}:\n  expected {message!r}\n  got {error}"
