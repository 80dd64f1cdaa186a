"""The schemas: values.schema.json refuses typos; the chart ships crds/ as they are; the
policies it renders, and the examples, are valid for those CRDs."""

from __future__ import annotations

import copy
import os
import tempfile
from pathlib import Path

import helm_python as helm
import kubernetes_validate
import yaml

from common import (
    CHART,
    CRDS,
    EXAMPLES,
    FLAGGER_VALUES,
    KUBE_VERSION,
    NAMESPACE,
    RELEASE,
    SECRET,
    SLACK_BOT_VALUES,
    SLACK_TOKEN,
    SLACK_URL,
    TEAMS_URL,
    WEBHOOK_URL,
    check,
    expect_equal,
    kinds,
    one,
    render,
    render_error,
)
from crd_schema import load_crds, validate_policy


@check
def schema_rejects_typos() -> None:
    """values.schema.json refuses misspelt and unknown values when rendering, installing and
    linting; the default and Flagger values pass."""
    with helm.Chart.load(CHART) as chart:
        schema = chart.schema
        assert schema is not None, "the chart has no values.schema.json"
        expect_equal(schema.get("$schema"), "http://json-schema.org/draft-07/schema#", "$schema")
        for path in (
            [],
            ["slack"],
            ["msteams"],
            ["defaultPolicy"],
            ["defaultPolicy", "template"],
            ["eventWebhookExistingSecret"],
            ["slack", "existingSecret"],
            ["slack", "existingTokenSecret"],
            ["msteams", "existingSecret"],
            ["stateDir"],
        ):
            node = schema
            for key in path:
                node = node["properties"][key]
            assert (
                node.get("additionalProperties") is False
            ), f"{'.'.join(path) or 'top level'}: additionalProperties is not false"
        chart.validate_schema({})
        chart.validate_schema(FLAGGER_VALUES)
        chart.validate_schema(SLACK_BOT_VALUES)
        typos = [
            ({"slack": {"ur": SLACK_URL}}, "ur"),
            ({"clustername": "prod"}, "clustername"),
            ({"msteams": {"urll": TEAMS_URL}}, "urll"),
            ({"eventwebhook": WEBHOOK_URL}, "eventwebhook"),
            ({"defaultPolicy": {"template": {"titel": "x"}}}, "titel"),
            ({"slack": {"existingSecret": {"nmae": "x"}}}, "nmae"),
            ({"msteams": {"format": "Adaptive"}}, "Adaptive"),
            ({"slack": {"url": "hooks.slack.com/services/x"}}, "pattern"),
            ({"slack": {"proxy": "http://proxy:3128"}}, "proxy"),
            ({"slack": {"tokn": SLACK_TOKEN}}, "tokn"),
            ({"slack": {"existingTokenSecret": {"nmae": "x"}}}, "nmae"),
            ({"slack": {"token": SLACK_URL, "channel": "#d"}}, "pattern"),
            ({"slack": {"threads": "no"}}, "threads"),
            ({"defaultPolicy": {"repeatInterval": "30 minutes"}}, "pattern"),
            ({"stateDir": {"existingclaim": "q"}}, "existingclaim"),
            ({"stateDir": {"sizeLimit": "1 GB"}}, "pattern"),
        ]
        for values, word in typos:
            try:
                chart.validate_schema(values)
            except helm.HelmValuesError as e:
                assert word in str(e), f"{values}: the error does not name {word!r}: {e}"
            else:
                raise AssertionError(f"the schema accepted {values}")
            error = render_error(values)
            assert word in error, f"render of {values}: {error}"
    report = helm.lint(CHART, {"slack": {"ur": SLACK_URL}}, namespace=NAMESPACE)
    assert report["errors"], f"lint accepted a typo: {report}"
    # `helm install` (client-side dry run: no cluster is contacted) refuses it as well.
    with helm.Chart.load(CHART) as chart, helm.Config(
        namespace=NAMESPACE, storage_driver="memory", kube_apiserver="https://127.0.0.1:1"
    ) as cfg:
        try:
            cfg.install(chart, RELEASE, {"slack": {"ur": SLACK_URL}}, namespace=NAMESPACE, dry_run="client")
        except helm.HelmError as e:
            assert "ur" in str(e), str(e)
        else:
            raise AssertionError("install accepted a typo")
        release = cfg.install(chart, RELEASE, FLAGGER_VALUES, namespace=NAMESPACE, dry_run="client")
        installed = sorted(
            (d["kind"], d["metadata"]["name"]) for d in yaml.safe_load_all(release["manifest"]) if d
        )
        expect_equal(installed, kinds(render(FLAGGER_VALUES)), "objects of a dry-run install")
        assert "clusternotificationpolicies" in release["notes"], release["notes"]



@check
def crds_match() -> None:
    """The chart ships exactly the files in crds/, byte for byte."""
    with helm.Chart.load(CHART) as chart:
        shipped = {Path(c["name"]).name: c["data"] for c in chart.crds}
    expected = {p.name: p.read_text() for p in sorted(CRDS.glob("*.yaml"))}
    assert expected, "crds/ is empty"
    expect_equal(sorted(shipped), sorted(expected), "CRD files in the chart")
    for name, data in expected.items():
        assert shipped[name] == data, f"charts/herald/crds/{name} differs from crds/{name}"
    link = CHART / "crds"
    if link.is_symlink():
        assert link.resolve() == CRDS.resolve(), f"charts/herald/crds points at {os.readlink(link)}"
    # A packaged chart carries the files themselves.
    with tempfile.TemporaryDirectory() as tmp:
        archive = helm.package(CHART, destination=tmp)
        with helm.Chart.load(archive) as packaged:
            packed = {Path(c["name"]).name: c["data"] for c in packaged.crds}
    expect_equal(sorted(packed), sorted(expected), "CRD files in the packaged chart")
    for name, data in expected.items():
        assert packed[name] == data, f"the packaged chart's {name} differs from crds/{name}"
    problems = []
    for name in expected:
        crd = yaml.safe_load(expected[name])
        try:
            kubernetes_validate.validate(crd, KUBE_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            problems.append(f"{name}: {'.'.join(map(str, e.path))}: {e.message}")
    assert not problems, "\n".join(problems)



@check
def policies_match_crd() -> None:
    """Rendered policies are valid for the CRDs in crds/ (schema with unknown fields refused,
    CEL rules, unique receiver names); so are the examples; broken ones are refused."""
    crds = load_crds()
    problems = []
    value_sets = [
        FLAGGER_VALUES,
        {
            "slack": {"existingSecret": {"name": "s", "key": "k"}},
            "msteams": {"url": TEAMS_URL, "format": "MessageCard"},
            "defaultPolicy": {
                "template": {"title": "t", "text": "x"},
                "namespaceSelector": {"matchNames": ["a"], "matchLabels": {"b": "c"}},
            },
        },
        {"eventWebhookExistingSecret": {"name": "audit"}},
        SLACK_BOT_VALUES,
        {
            "slack": {"existingTokenSecret": {"name": "bot"}, "channel": "C0123ABCD", "threads": False},
            "msteams": {"existingSecret": {"name": "teams"}},
        },
    ]
    rendered = 0
    for values in value_sets:
        for policy in render(values):
            if policy["apiVersion"].startswith("herald.dev/"):
                rendered += 1
                problems += validate_policy(policy, crds)
    assert rendered == 6, f"expected 6 policies across the value sets, got {rendered}"
    examples = 0
    for path in sorted(EXAMPLES.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("apiVersion", "").startswith("herald.dev/"):
                examples += 1
                problems += [f"{path.name}: {p}" for p in validate_policy(doc, crds)]
    assert examples >= 3, f"only {examples} example policies"
    assert not problems, "\n".join(problems)
    # The validation must refuse what the API server refuses.
    good = one(render(FLAGGER_VALUES), "ClusterNotificationPolicy", "herald-default")
    bot = one(render(SLACK_BOT_VALUES), "ClusterNotificationPolicy", "herald-default")
    broken_cases = {
        "unknown field": lambda p: p["spec"]["receivers"][0]["slack"].update(chanel="#x"),
        "bad receiver name": lambda p: p["spec"]["receivers"][0].update(name="Slack_1"),
        "no receivers": lambda p: p["spec"].update(receivers=[]),
        "two kinds in a receiver": lambda p: p["spec"]["receivers"][0].update(webhook={"url": "https://x"}),
        "url and secretRef": lambda p: p["spec"]["receivers"][0]["slack"].update(url="https://x"),
        "two chat kinds in a receiver": lambda p: p["spec"]["receivers"].append(
            {"name": "chat", "discord": {"url": "https://x"}, "rocketchat": {"url": "https://y"}}
        ),
        "chat kind without url or secretRef": lambda p: p["spec"]["receivers"].append(
            {"name": "chat", "googlechat": {}}
        ),
        "Slack bot without a channel": lambda p: p["spec"]["receivers"][0].update(
            slack={"tokenSecretRef": {"name": "bot"}}
        ),
        "unknown chat field": lambda p: p["spec"]["receivers"].append(
            {"name": "chat", "rocketchat": {"url": "https://x", "icon_emoji": ":x:"}}
        ),
        "duplicate receiver": lambda p: p["spec"]["receivers"].append(
            copy.deepcopy(p["spec"]["receivers"][0])
        ),
        "bad format": lambda p: p["spec"]["receivers"][1]["msteams"].update(format="Card"),
        "bad phase": lambda p: p["spec"].update(phases=["Done"]),
        "wrong apiVersion": lambda p: p.update(apiVersion="herald.dev/v1"),
    }
    # The chart's Slack bot receiver, broken.
    bot_broken_cases = {
        "Slack bot without its channel": lambda p: p["spec"]["receivers"][0]["slack"].pop("channel"),
        "Slack bot and a webhook": lambda p: p["spec"]["receivers"][0]["slack"].update(
            secretRef={"name": SECRET, "key": "slack"}
        ),
        "Slack bot token ref without a name": lambda p: p["spec"]["receivers"][0]["slack"]["tokenSecretRef"].pop(
            "name"
        ),
        "Slack bot threads not a boolean": lambda p: p["spec"]["receivers"][0]["slack"].update(threads="no"),
    }
    missed = []
    for base, cases in ((good, broken_cases), (bot, bot_broken_cases)):
        for label, breaks in cases.items():
            policy = copy.deepcopy(base)
            breaks(policy)
            if not validate_policy(policy, crds):
                missed.append(label)
    assert not missed, f"invalid policies accepted: {missed}"
