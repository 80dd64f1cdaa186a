"""Herald's policies against the CRDs in crds/: the structural schema as JSON Schema (unknown
fields refused), and the CEL rules evaluated by hand, as the API server would."""

from __future__ import annotations

import re
from typing import Any, Callable

import jsonschema
import yaml

from common import CRDS, strip


def receiver_kinds_from_crds() -> tuple[str, ...]:
    """The receiver kinds, in the order the CRD's one-kind rule lists them (the Rust list)."""
    crd = yaml.safe_load((CRDS / "notificationpolicies.herald.dev.yaml").read_text())
    receiver = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"][
        "properties"
    ]["receivers"]["items"]
    for validation in receiver.get("x-kubernetes-validations", []):
        if validation["rule"].endswith("].filter(k, k).size() == 1"):
            return tuple(re.findall(r"has\(self\.(\w+)\)", validation["rule"]))
    raise SystemExit("crds/: the receiver's one-kind rule is missing")


RECEIVER_KINDS = receiver_kinds_from_crds()

def cel_rule(rule: str) -> Callable[[dict], bool] | None:
    """The CEL rule forms the CRDs use, over an object's fields being set, as a function of
    the object; `None` for a rule this checker does not evaluate. Each kind's own rules are
    evaluated from the CRD, so a new kind needs no change here; a rule of another form fails
    the check until it is taught here (jsonschema cannot evaluate CEL)."""
    field = r"has\(self\.(\w+)\)"
    if m := re.fullmatch(field, rule):
        return lambda o: m[1] in o
    if m := re.fullmatch(f"{field} != {field}", rule):
        return lambda o: (m[1] in o) != (m[2] in o)
    if m := re.fullmatch(f"!{field} \\|\\| !{field}", rule):
        return lambda o: m[1] not in o or m[2] not in o
    if m := re.fullmatch(f"!{field} \\|\\| {field}", rule):
        return lambda o: m[1] not in o or m[2] in o
    if m := re.fullmatch(r"\[(.*)\]\.filter\(k, k\)\.size\(\) == 1", rule):
        fields = re.findall(field, m[1])
        if ", ".join(f"has(self.{f})" for f in fields) == m[1]:
            return lambda o: sum(f in o for f in fields) == 1
    return None



def load_crds() -> dict[str, dict]:
    crds = {}
    for path in sorted(CRDS.glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        crds[crd["spec"]["names"]["kind"]] = crd
    return crds


def structural_to_jsonschema(schema: Any, rules: set[str]) -> Any:
    """A CRD's structural schema as JSON Schema: `nullable` becomes a null type, objects
    with properties reject unknown fields (the API server's strict field validation), and
    x-kubernetes-* keys are dropped (CEL rules are collected in `rules`)."""
    if isinstance(schema, list):
        return [structural_to_jsonschema(s, rules) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {}
    for key, value in schema.items():
        if key == "x-kubernetes-validations":
            rules.update(v["rule"] for v in value)
        if key.startswith("x-kubernetes-") or key in ("nullable", "format"):
            continue
        if key == "properties":
            out[key] = {k: structural_to_jsonschema(v, rules) for k, v in value.items()}
        else:
            out[key] = structural_to_jsonschema(value, rules)
    if schema.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    if (
        "properties" in schema
        and "additionalProperties" not in schema
        and not schema.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def crd_validator(crd: dict) -> tuple[jsonschema.protocols.Validator, set[str], str]:
    versions = [v for v in crd["spec"]["versions"] if v.get("served")]
    assert versions, "the CRD serves no version"
    version = versions[0]
    rules: set[str] = set()
    schema = structural_to_jsonschema(version["schema"]["openAPIV3Schema"], rules)
    # The object's identity fields are not in the CRD's schema; the API server adds them.
    schema["properties"].update(
        {"apiVersion": {"type": "string"}, "kind": {"type": "string"}, "metadata": {"type": "object"}}
    )
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema), rules, f"{crd['spec']['group']}/{version['name']}"


def kind_rules(crd: dict, kind: str) -> list[dict]:
    """The CEL rules of one receiver kind's settings, as the CRD states them."""
    version = next(v for v in crd["spec"]["versions"] if v.get("served"))
    spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    receiver = spec["properties"]["receivers"]["items"]
    return receiver["properties"][kind].get("x-kubernetes-validations", [])


def validate_policy(policy: dict, crds: dict[str, dict]) -> list[str]:
    """A herald.dev object against its CRD: schema, CEL rules, list-map keys, identity."""
    kind = policy.get("kind")
    if kind not in crds:
        return [f"no CRD for kind {kind!r}"]
    validator, rules, api_version = crd_validator(crds[kind])
    unknown = {rule for rule in rules if cel_rule(rule) is None}
    if unknown:
        return [f"the CRD has CEL rules this checker does not evaluate: {sorted(unknown)}"]
    name = policy.get("metadata", {}).get("name", "?")
    problems = []
    if policy.get("apiVersion") != api_version:
        problems.append(f"{kind}/{name}: apiVersion {policy.get('apiVersion')!r}, not {api_version}")
    for error in validator.iter_errors(strip(policy)):
        path = ".".join(str(p) for p in error.absolute_path)
        problems.append(f"{kind}/{name}: {path}: {error.message}")
    receivers = policy.get("spec", {}).get("receivers") or []
    names = [r.get("name") for r in receivers if isinstance(r, dict)]
    if len(names) != len(set(names)):
        problems.append(f"{kind}/{name}: receiver names are not unique: {names}")
    for i, receiver in enumerate(r for r in receivers if isinstance(r, dict)):
        kinds_set = [k for k in RECEIVER_KINDS if receiver.get(k) is not None]
        if len(kinds_set) != 1:
            problems.append(
                f"{kind}/{name}: receivers[{i}]: a receiver sets exactly one of {', '.join(RECEIVER_KINDS)}"
            )
        for k in kinds_set:
            target = receiver[k]
            if not isinstance(target, dict):
                continue
            for validation in kind_rules(crds[kind], k):
                if not cel_rule(validation["rule"])(target):
                    message = validation.get("message", validation["rule"])
                    problems.append(f"{kind}/{name}: receivers[{i}].{k}: {message}")
    return problems
