"""Every rendered object against the Kubernetes schemas (strict), with its names, labels and
namespace, and the references between the objects (selectors, ports, ServiceAccount, roles)."""

from __future__ import annotations

import re

import kubernetes_validate

from common import CLUSTER_SCOPED, KUBE_VERSION, NAMESPACE, objects, strip


DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def validate_structure(docs: list[dict]) -> list[str]:
    """Every rendered object: identity fields, names, labels, the Kubernetes schema of its
    kind (strict: unknown fields are errors) and the references between objects."""
    problems = []
    for doc in docs:
        where = f"{doc.get('__source__')}: {doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
        obj = strip(doc)
        for field in ("apiVersion", "kind"):
            if not isinstance(obj.get(field), str) or not obj[field]:
                problems.append(f"{where}: no {field}")
        meta = obj.get("metadata")
        if not isinstance(meta, dict) or not isinstance(meta.get("name"), str):
            problems.append(f"{where}: no metadata.name")
            continue
        name = meta["name"]
        if len(name) > 253 or not DNS_SUBDOMAIN.match(name):
            problems.append(f"{where}: name {name!r} is not a DNS subdomain")
        if obj["kind"] == "Service" and (len(name) > 63 or not DNS_LABEL.match(name)):
            problems.append(f"{where}: a Service name must be a DNS-1035 label")
        if obj["kind"] in CLUSTER_SCOPED:
            if "namespace" in meta:
                problems.append(f"{where}: cluster-scoped object with a namespace")
        elif meta.get("namespace") != NAMESPACE:
            problems.append(f"{where}: namespace {meta.get('namespace')!r}, not {NAMESPACE!r}")
        for key, value in (meta.get("labels") or {}).items():
            if not isinstance(value, str) or len(value) > 63 or not LABEL_VALUE.match(value):
                problems.append(f"{where}: label {key}={value!r} is not a valid label value")
        if obj["apiVersion"].startswith(("herald.dev/", "monitoring.coreos.com/")):
            continue  # Not Kubernetes kinds: checked by their own checks.
        try:
            kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            path = ".".join(str(p) for p in e.path)
            problems.append(f"{where}: Kubernetes {KUBE_VERSION} schema: {path}: {e.message}")
        except kubernetes_validate.SchemaNotFoundError as e:
            problems.append(f"{where}: {e.message}")
    problems.extend(check_references(docs))
    return problems


def check_references(docs: list[dict]) -> list[str]:
    problems = []
    deployments = objects(docs, "Deployment")
    if not deployments:
        return ["no Deployment"]
    deployment = deployments[0]
    pod = deployment["spec"]["template"]
    pod_labels = pod["metadata"].get("labels") or {}
    selector = deployment["spec"]["selector"]["matchLabels"]
    if not selector or any(pod_labels.get(k) != v for k, v in selector.items()):
        problems.append(f"Deployment selector {selector} does not select its pods {pod_labels}")
    port_names = {
        p["name"]: p["containerPort"] for c in pod["spec"]["containers"] for p in c.get("ports", [])
    }
    for c in pod["spec"]["containers"]:
        for probe in ("livenessProbe", "readinessProbe"):
            port = c.get(probe, {}).get("httpGet", {}).get("port")
            if isinstance(port, str) and port not in port_names:
                problems.append(f"{probe} port {port!r} is no container port")
    service_accounts = {d["metadata"]["name"] for d in objects(docs, "ServiceAccount")}
    sa = pod["spec"].get("serviceAccountName")
    if sa not in service_accounts:
        problems.append(f"the pods' ServiceAccount {sa!r} is not rendered")
    services = objects(docs, "Service")
    for service in services:
        sel = service["spec"]["selector"]
        if any(pod_labels.get(k) != v for k, v in sel.items()):
            problems.append(f"Service selector {sel} does not select the pods {pod_labels}")
        for port in service["spec"]["ports"]:
            target = port.get("targetPort")
            if isinstance(target, str) and target not in port_names:
                problems.append(f"Service targetPort {target!r} is no container port")
    roles = {(d["kind"], d["metadata"]["name"]) for d in objects(docs, "Role") + objects(docs, "ClusterRole")}
    for binding in objects(docs, "RoleBinding") + objects(docs, "ClusterRoleBinding"):
        ref = binding["roleRef"]
        if (ref["kind"], ref["name"]) not in roles:
            problems.append(f"{binding['kind']} {binding['metadata']['name']} refers to missing {ref}")
        for subject in binding["subjects"]:
            if (
                subject["kind"] != "ServiceAccount"
                or subject["name"] != sa
                or subject.get("namespace") != NAMESPACE
            ):
                problems.append(f"{binding['kind']} subject {subject} is not Herald's ServiceAccount")
    for monitor in objects(docs, "ServiceMonitor"):
        sel = monitor["spec"]["selector"]["matchLabels"]
        matching = [
            s
            for s in services
            if all((s["metadata"].get("labels") or {}).get(k) == v for k, v in sel.items())
        ]
        if len(matching) != 1:
            problems.append(f"ServiceMonitor selects {len(matching)} Services")
        else:
            names = {p["name"] for p in matching[0]["spec"]["ports"]}
            for endpoint in monitor["spec"]["endpoints"]:
                if endpoint["port"] not in names:
                    problems.append(
                        f"ServiceMonitor endpoint port {endpoint['port']!r} is not a Service port"
                    )
    return problems
