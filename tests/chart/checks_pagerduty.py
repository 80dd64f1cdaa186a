"""The PagerDuty values (a routing key, or an existing Secret; change events) and the default
policy they become."""

from __future__ import annotations

import json

from common import SECRET, check, expect_equal, one, policy_specs, receiver_secrets, render, render_error


@check
def pagerduty_default_policy() -> None:
    """pagerduty.routingKey gives `<release>-default-pagerduty` (failures and promotions,
    PagerDuty's own choice: no message pattern) reading the key from the chart's Secret; an
    existing Secret instead, and the key and its Secret together, refused."""
    key = "R0UT1NGKEY0123456789abcdefABCDEF"
    docs = render({"pagerduty": {"routingKey": key}, "clusterName": "prod-eu"})
    expect_equal(
        one(docs, "Secret", SECRET)["stringData"], {"pagerdutyRoutingKey": key}, "stringData"
    )
    expect_equal(
        policy_specs(docs),
        {
            "herald-default-pagerduty": {
                "receivers": [
                    {
                        "name": "pagerduty",
                        "pagerduty": {
                            "routingKeySecretRef": {"name": SECRET, "key": "pagerdutyRoutingKey"},
                            "source": "prod-eu",
                        },
                    }
                ],
            }
        },
        "the PagerDuty policy",
    )
    for doc in docs:
        if doc["kind"] != "Secret":
            assert key not in json.dumps(doc), f"{doc['kind']}/{doc['metadata']['name']} holds the routing key"

    existing = render(
        {
            "pagerduty": {"existingSecret": {"name": "pd"}, "changeEvents": True},
            "defaultPolicy": {"namespaceSelector": {"matchNames": ["prod-*"]}},
        }
    )
    assert not receiver_secrets(existing), "no Secret expected with an existing Secret"
    expect_equal(
        policy_specs(existing),
        {
            "herald-default-pagerduty": {
                "namespaceSelector": {"matchNames": ["prod-*"]},
                "receivers": [
                    {
                        "name": "pagerduty",
                        "pagerduty": {
                            "routingKeySecretRef": {"name": "pd", "key": "routingKey"},
                            "changeEvents": True,
                        },
                    }
                ],
            }
        },
        "the PagerDuty policy from an existing Secret, with change events",
    )
    error = render_error({"pagerduty": {"routingKey": key, "existingSecret": {"name": "pd"}}})
    assert "set either pagerduty.routingKey or its existing Secret, not both" in error, error
    disabled = render({"pagerduty": {"routingKey": key}, "defaultPolicy": {"enabled": False}})
    expect_equal(policy_specs(disabled), {}, "no PagerDuty policy with defaultPolicy.enabled=false")
