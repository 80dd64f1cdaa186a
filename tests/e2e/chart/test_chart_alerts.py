"""An Alertmanager receiver as the chart runs it: one replica with the chart's defaults (its
stateDir, its ServiceAccount), a real Alertmanager on 127.0.0.1 (Debian's
prometheus-alertmanager, which .ci/run installs). A canary that fails and stays failed keeps
its alert firing past Alertmanager's resolve_timeout while Flagger says nothing more, also
after Herald is killed with kill -9 and started again as the kubelet does; the promotion
resolves it for good.

Run: tests/e2e/run.sh --chart-only -k alert
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import harness as h
import pytest

BINARY = "prometheus-alertmanager"
# Alertmanager ends an alert this long after it last heard of it; Herald posts it every second.
RESOLVE_TIMEOUT = 2


class Alertmanager:
    """A real Alertmanager on a free loopback port whose one receiver sends nowhere."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="herald-am-"))
        config = self.dir / "alertmanager.yml"
        config.write_text(
            f"global:\n  resolve_timeout: {RESOLVE_TIMEOUT}s\n"
            "route:\n  receiver: nowhere\nreceivers:\n  - name: nowhere\n"
        )
        self.port = h.free_port()
        self.proc = subprocess.Popen(
            [
                BINARY,
                f"--config.file={config}",
                f"--storage.path={self.dir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--cluster.listen-address=",
                "--log.level=warn",
            ],
            stdout=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
        )
        h.wait_for("Alertmanager ready", lambda: self.get("/-/ready") is not None, 20)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get(self, path: str):
        try:
            with urllib.request.urlopen(self.url + path, timeout=2) as response:
                return response.read()
        except OSError:
            return None

    def alerts(self) -> list[dict]:
        """The active alerts, as Alertmanager's API lists them."""
        return json.loads(self.get("/api/v2/alerts"))

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def metric(herald: h.Herald, name: str) -> float:
    with urllib.request.urlopen(herald.url + "/metrics", timeout=2) as response:
        for line in response.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    raise AssertionError(f"no {name}")


def policies_loaded(herald: h.Herald) -> float:
    return metric(herald, "herald_policies")


@pytest.mark.skipif(shutil.which(BINARY) is None, reason=f"{BINARY} is not installed")
def test_a_failed_canary_stays_firing_through_kill_9_until_promoted(install):
    am = Alertmanager()
    install.servers.append(am)
    install.install(replicas=1)
    args = h.deployment_command(install.docs)[0]
    assert "--state-dir=/var/lib/herald" in args, args
    herald = install.replicas[0]
    install.canary("podinfo", phase="Progressing")
    loaded = policies_loaded(herald)
    install.kube.apply(
        {
            "apiVersion": "herald.dev/v1alpha1",
            "kind": "NotificationPolicy",
            "metadata": {"name": "oncall", "namespace": install.apps},
            "spec": {
                "canaries": ["podinfo"],
                "receivers": [{"name": "am", "alertmanager": {"url": am.url, "resendInterval": "1s"}}],
            },
        }
    )
    # In effect (Ready is written by the policy's reconciler, a moment before the set of
    # policies in effect is swapped): one more policy loaded than the chart's own.
    h.wait_for("the policy in effect", lambda: policies_loaded(herald) == loaded + 1, 30)

    h.set_phase(install.kube, "podinfo", install.apps, "Failed")
    failed = f"Canary failed! Scaling down podinfo.{install.apps}"
    install.event("podinfo", failed, "Warning")
    alerts = h.wait_for("the alert fires", lambda: (a := am.alerts()) and a, 20)
    assert alerts[0]["labels"] == {
        "alertname": "FlaggerCanaryFailed",
        "canary": "podinfo",
        "namespace": install.apps,
        "cluster": h.CLUSTER_NAME,
        "severity": "critical",
    }
    started = alerts[0]["startsAt"]

    # Flagger says nothing more; twice resolve_timeout later the alert still fires.
    time.sleep(2 * RESOLVE_TIMEOUT)
    alerts = am.alerts()
    assert len(alerts) == 1 and alerts[0]["status"]["state"] == "active", alerts
    assert alerts[0]["startsAt"] == started

    # kill -9, and the kubelet starts the container again with the same emptyDir.
    herald.kill()
    herald.start()
    time.sleep(2 * RESOLVE_TIMEOUT)
    alerts = am.alerts()
    assert len(alerts) == 1, f"still firing after kill -9: {alerts}"
    assert alerts[0]["startsAt"] == started
    assert metric(herald, "herald_reposts_open") == 1

    h.set_phase(install.kube, "podinfo", install.apps, "Succeeded")
    install.event("podinfo", f"Promotion completed! Scaling down podinfo.{install.apps}")
    h.wait_for("the alert resolved", lambda: am.alerts() == [], 20)
    time.sleep(2 * RESOLVE_TIMEOUT)
    assert am.alerts() == [], "fired again after the promotion"
    assert metric(herald, "herald_reposts_open") == 0
    assert herald.forbidden_lines() == []
