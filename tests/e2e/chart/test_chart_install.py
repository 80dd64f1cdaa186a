"""Herald as users install it: the chart rendered with Helm's engine (Flagger-style values),
its objects applied to a real kube-apiserver 1.20, and the release binary run with the rendered
Deployment's args and env as the chart's ServiceAccount (a TokenRequest token, not an admin).

Each test installs the chart into its own namespace (`herald-<test>`), its canaries live in
`apps-<test>`. Run one: tests/e2e/run.sh --chart-only -k paused_leader
"""

from __future__ import annotations

import json
import os
import random
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone

import harness as h
import pytest

# How long a receiver may take to get an Event while Herald runs normally.
DELIVERY = 15
# Quiet period after which no more deliveries are expected.
SETTLE = 4


def settle(seconds: float = SETTLE) -> None:
    time.sleep(seconds)


def test_chart_renders_what_the_harness_runs(install):
    """The harness itself: the chart renders, the SA token works, Herald starts without 403s."""
    install.install(replicas=1, start=False)
    # Without the debugging knob's extraArgs: the chart's defaults.
    one = h.render_chart({k: v for k, v in install.values(1).items() if k != "extraArgs"}, install.namespace)
    args, env = h.deployment_command(one)
    assert args[0] == "controller"
    assert "--leader-election" not in args
    assert {e["name"] for e in env} >= {"POD_NAMESPACE", "POD_NAME"}
    two = h.render_chart(install.values(2), install.namespace)
    assert "--leader-election" in h.deployment_command(two)[0]
    # The token is the ServiceAccount's: it can read Canaries but not, say, every ConfigMap.
    sa = h.Kube.from_kubeconfig(str(install.kubeconfig))
    assert sa.request("GET", "/apis/flagger.app/v1beta1/canaries")[0] == 200
    assert sa.request("GET", "/api/v1/configmaps")[0] == 403
    install.replicas[0].start()


def idle(install, herald: h.Herald, label: str) -> tuple[list[str], list[dict], float]:
    """10 s with nothing happening: Herald's new log lines and API requests."""
    lines_before = len(herald.log_lines())
    t0 = time.time()
    time.sleep(10)
    t1 = time.time()
    lines = [l for l in herald.log_lines()[lines_before:]]
    requests = install.audit.requests(install.user, t0, t1)
    per_min = len(requests) * 60 / (t1 - t0)
    h.measure(f"idle, {label}: {len(lines)} log lines in 10 s")
    if install.audit.path:
        h.measure(
            f"idle, {label}: {len(requests)} API requests in 10 s = {per_min:.0f}/min"
            f" ({h.summarize_requests(requests) or 'none'})"
        )
    h.measure(f"RSS, {label}: {herald.rss_kib()} KiB")
    return lines, requests, per_min


def test_single_replica_notifies_and_is_quiet_when_idle(install):
    """Scenario 1: the chart's default, one replica without --leader-election."""
    install.install(replicas=1)
    herald = install.replicas[0]
    canary = install.canary("podinfo")
    time.sleep(3)
    # Idle first (measured even when the deliveries below fail), asserted at the end.
    idle_lines, idle_requests, per_min = idle(install, herald, "1 replica, 1 canary, after start-up")
    messages = [
        ("New revision detected! Scaling up podinfo.{ns}", True),
        ("Starting canary analysis for podinfo.{ns}", False),
        ("Advance podinfo.{ns} canary weight 10", False),
    ]
    messages = [(m.format(ns=install.apps), alert) for m, alert in messages]
    created = []
    for message, _ in messages:
        created.append(install.event("podinfo", message, uid=canary["metadata"]["uid"]))
        time.sleep(1.1)  # distinct lastTimestamps (whole seconds)
    first, alert_text = created[0], messages[0][0]

    slack = install.wait_slack(alert_text, DELIVERY)
    body = slack.json()
    assert slack.method == "POST" and slack.path == "/slack"
    assert slack.headers.get("content-type", "").startswith("application/json")
    assert body["channel"] == "#deploys"
    assert body["username"] == "flagger"
    att = body["attachments"][0]
    title = f"[{h.CLUSTER_NAME}] podinfo.{install.apps}"
    assert att["author_name"] == title
    assert att["text"] == alert_text
    assert att["fallback"] == f"{title} {alert_text}"
    assert att["color"] == "#0076D7"
    fields = {f["title"]: f["value"] for f in att["fields"]}
    assert fields.get("Phase") == "Progressing", att["fields"]
    assert fields.get("Cluster") == h.CLUSTER_NAME, att["fields"]
    event_time = datetime.strptime(first["lastTimestamp"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    # The event's time (Flagger's own webhook takes the time it sends: either is right).
    assert int(event_time.timestamp()) <= att["ts"] <= time.time() + 1, att["ts"]

    teams = h.wait_for("Teams to get the alert", lambda: install.teams.snapshot(), DELIVERY)
    assert teams[0].path == "/teams"
    assert alert_text in h.teams_text(teams[0]), teams[0].body
    for message, _ in messages:
        hook = install.wait_hook(message, DELIVERY)
        payload = hook.json()
        assert payload["name"] == "podinfo" and payload["namespace"] == install.apps
        assert payload["phase"] == "Progressing"
        assert payload.get("checksum"), payload
        assert payload["metadata"]["eventType"] == "Normal"
    settle()
    # Once each; Slack and Teams only get what the default messagePattern selects.
    assert [h.slack_text(r) for r in install.slack.snapshot()] == [alert_text]
    assert len(install.teams.snapshot()) == 1
    assert install.hook_messages() == [m for m, _ in messages]

    after_lines, after_requests, after_per_min = idle(install, herald, "1 replica, after 3 Events")
    for lines, requests, rate in ((idle_lines, idle_requests, per_min), (after_lines, after_requests, after_per_min)):
        assert len(lines) < 5, f"Herald logged {len(lines)} lines in 10 s idle:\n" + "\n".join(lines[:10])
        if install.audit.path:
            assert rate < 20, f"{rate:.0f} API requests/min when idle: {h.summarize_requests(requests)}"


def test_kill_9_keeps_the_events_answered_202(install):
    """The chart's stateDir (an emptyDir, which outlives the container): events POSTed to
    /events and answered 202 while the event webhook fails are delivered after kill -9 (an
    OOM kill) and the container's restart, each once, in order."""
    install.install(replicas=1)
    herald = install.replicas[0]
    install.canary("podinfo")
    install.hook.status = 500
    messages = [f"Advance podinfo.{install.apps} canary weight {n}" for n in range(1, 21)]
    for message in messages:
        status, answer = install.post_event(herald, message)
        assert (status, json.loads(answer)) == (202, {"deliveries": 1}), (status, answer)
    # One canary: its notifications go one at a time, the first retrying, the rest behind it.
    h.wait_for("the first notification tried", lambda: install.hook.snapshot(), DELIVERY, 0.05)
    herald.kill()
    install.hook.status = 200
    t0 = time.monotonic()
    herald.start()
    h.wait_for(
        "every event delivered after the restart",
        lambda: len([r for r in install.hook.snapshot() if r.at > t0]) >= len(messages),
        DELIVERY,
        0.05,
    )
    h.measure(f"kill -9 with {len(messages)} events queued: delivered {time.monotonic() - t0:.1f} s after the restart")
    settle()
    assert [h.webhook_message(r) for r in install.hook.snapshot() if r.at > t0] == messages
    assert '"events":20,"notifications":20,"forgotten":0' in herald.log_text(), herald.log_tail()


def handover(install, old: h.Herald, how: int, message: str, timeout: float) -> float:
    """Stops the leader with `how` right after it renewed its lease and records an Event at
    once: the seconds until a receiver has it."""
    install.wait_lease_renewed()
    t0 = time.monotonic()
    if how == signal.SIGKILL:
        old.kill()
    else:
        old.signal(how)
    install.event("podinfo", message)
    got = install.wait_hook(message, timeout)
    return got.at - t0


def test_leader_handover_sigterm_and_kill(install):
    """Scenario 2: replicaCount 2 (--leader-election)."""
    install.install(replicas=2)
    install.canary("podinfo")
    leader = install.leader()
    warm = f"New revision detected! Scaling up podinfo.{install.apps}"
    install.event("podinfo", warm)
    install.wait_slack(warm, DELIVERY)
    idle(install, leader, "2 replicas (requests: both; log lines: the leader's)")

    # A rolling update: the kubelet sends SIGTERM; the other replica should take over at once.
    msg_term = f"Advance podinfo.{install.apps} canary weight 20"
    took = handover(install, leader, signal.SIGTERM, msg_term, 40)
    h.measure(f"takeover after SIGTERM of the leader: {took:.1f} s (to the Event's delivery; SIGTERM right after a renewal)")
    assert leader.proc.wait(30) is not None
    new_pod = install.add_replica().start()  # the Deployment's replacement pod
    settle()
    assert install.count_hook(msg_term) == 1, install.hook_messages()

    # A crash: the lease must expire first (15 s).
    leader = install.leader()
    msg_kill = f"Advance podinfo.{install.apps} canary weight 30"
    took_kill = handover(install, leader, signal.SIGKILL, msg_kill, 60)
    h.measure(f"takeover after kill -9 of the leader: {took_kill:.1f} s (lease 15 s, killed right after a renewal)")
    settle()
    assert install.count_hook(msg_kill) == 1, install.hook_messages()
    assert install.count_hook(warm) == 1 and install.count_slack(warm) == 1
    assert new_pod.running()
    assert took < 5, f"SIGTERM handover took {took:.1f} s (the lease is not released on SIGTERM?)"
    assert took_kill < 15 + 5, f"kill -9 handover took {took_kill:.1f} s"


def test_paused_leader_sends_nothing_after_its_lease_expired(install):
    """Scenario 3: the leader is stopped (SIGSTOP: a long GC pause, a partition) past its lease."""
    install.install(replicas=2)
    install.canary("podinfo")
    leader = install.leader()
    other = next(r for r in install.replicas if r is not leader)
    warm = f"Starting canary analysis for podinfo.{install.apps}"
    install.event("podinfo", warm)
    install.wait_hook(warm, DELIVERY)

    install.wait_lease_renewed()
    leader.signal(signal.SIGSTOP)
    t0 = time.monotonic()
    h.wait_for("the other replica to take the lease", lambda: install.lease_holder() == other.pod, 60, 0.2)
    took = time.monotonic() - t0
    h.measure(f"lease taken from a paused (SIGSTOP) leader after {took:.1f} s")
    message = f"Rolling back podinfo.{install.apps} failed checks threshold reached 5"
    install.event("podinfo", message, "Warning")
    install.wait_hook(message, DELIVERY)
    install.wait_slack(message, DELIVERY)
    paused = time.monotonic() - t0
    if paused < 21:
        time.sleep(21 - paused)
    leader.signal(signal.SIGCONT)
    settle(8)
    assert leader.running() or leader.proc.returncode is not None
    assert install.count_hook(message) == 1, f"E delivered {install.count_hook(message)} times"
    assert install.count_slack(message) == 1, f"E sent to Slack {install.count_slack(message)} times"
    assert install.count_hook(warm) == 1


def test_downtime_events_are_sent_once_in_time_order(install):
    """Scenario 4: Events recorded while Herald is down come out once, in the order they happened."""
    install.install(replicas=1)
    herald = install.replicas[0]
    canary = install.canary("podinfo")
    warm = f"Starting canary analysis for podinfo.{install.apps}"
    install.event("podinfo", warm)
    install.wait_hook(warm, DELIVERY)
    settle(3)  # the state is saved
    assert herald.terminate() == 0, herald.log_tail()
    start = datetime.now(timezone.utc) + timedelta(seconds=1)
    time.sleep(6)  # the five Events happen at start+0..4 s, all in the past when recorded
    messages = [f"Advance podinfo.{install.apps} canary weight {10 * (i + 1)}" for i in range(5)]
    # Names sort in reverse time order (unlike client-go's time-based names), and they are
    # recorded in yet another order.
    for i in [2, 4, 0, 3, 1]:
        install.event(
            "podinfo",
            messages[i],
            at=start + timedelta(seconds=i),
            name=f"podinfo.{0xFFFF - i:x}",
            uid=canary["metadata"]["uid"],
        )
    herald.start()
    h.wait_for(
        "the five downtime Events delivered",
        lambda: all(install.count_hook(m) for m in messages),
        30,
        0.1,
    )
    settle()
    got = [m for m in install.hook_messages() if m in messages]
    assert got == messages, f"delivered in this order: {got}"
    assert install.count_hook(warm) == 1, "an Event from before the downtime was sent again"


def test_deleted_state_configmap(install):
    """Scenario 5: someone deletes the state ConfigMaps while Herald runs."""
    install.install(replicas=1)
    herald = install.replicas[0]
    install.canary("podinfo")
    first = f"Starting canary analysis for podinfo.{install.apps}"
    install.event("podinfo", first)
    install.wait_hook(first, DELIVERY)
    h.wait_for("the state ConfigMap", install.state, 20, 0.2)
    for name in h.STATE_CONFIGMAPS:
        path = f"/api/v1/namespaces/{install.namespace}/configmaps/{name}"
        if install.kube.get(path):
            install.kube.delete(path)
            install.kube.wait_gone(path)
    assert install.state() is None

    second = f"Advance podinfo.{install.apps} canary weight 10"
    install.event("podinfo", second)
    install.wait_hook(second, DELIVERY)
    h.wait_for("the state ConfigMap recreated", install.state, 30, 0.2)
    settle(3)
    before = len(install.hook.snapshot())
    assert herald.terminate() == 0
    third = f"Advance podinfo.{install.apps} canary weight 20"  # recorded while Herald is down
    install.event("podinfo", third)
    herald.start()
    install.wait_hook(third, DELIVERY)
    settle()
    assert install.count_hook(first) == 1 and install.count_hook(second) == 1, install.hook_messages()
    assert len(install.hook.snapshot()) == before + 1, f"re-sent after restart: {install.hook_messages()}"


def test_crds_recreated(install, kube):
    """Scenario 6: Herald's CRDs (and so its policies), the Canary CRD and the canary are
    deleted and created again; Events meanwhile and after are not lost."""
    install.install(replicas=1)
    install.canary("podinfo")
    before = f"Starting canary analysis for podinfo.{install.apps}"
    install.event("podinfo", before)
    install.wait_hook(before, DELIVERY)

    crds = h.chart_crds() + [h.canary_crd()]
    for crd in crds:
        kube.delete(f"{h.collection(crd)}/{crd['metadata']['name']}")
    for crd in crds:
        kube.wait_gone(f"{h.collection(crd)}/{crd['metadata']['name']}", 60)
    during = f"New revision detected! Scaling up podinfo.{install.apps}"
    install.event("podinfo", during)
    time.sleep(2)
    for crd in crds:
        h.install_crd(kube, crd)
    install.apply_rendered({"ClusterNotificationPolicy"})
    install.canary("podinfo", revision="rev-2")
    after = f"Advance podinfo.{install.apps} canary weight 10"
    install.event("podinfo", after)

    for message in (during, after):
        hook = install.wait_hook(message, 30).json()
        assert hook["phase"] == "Progressing", f"{message!r} delivered with phase {hook['phase']!r}"
        assert hook.get("checksum"), f"{message!r} delivered without the canary's checksum: {hook}"
    install.wait_slack(during, 10)
    settle()
    for message in (before, during, after):
        assert install.count_hook(message) == 1, install.hook_messages()


def test_aggregated_event(install):
    """Scenario 7: client-go's event aggregation rewrote Flagger's message."""
    install.install(replicas=1)
    install.canary("podinfo")
    flagger = f"Rolling back podinfo.{install.apps} failed checks threshold reached 5"
    install.event("podinfo", f"(combined from similar events): {flagger}", "Warning")
    slack = install.wait_slack(flagger, DELIVERY).json()
    assert slack["attachments"][0]["text"] == flagger
    teams = h.wait_for("Teams to get the alert", lambda: install.teams.snapshot(), DELIVERY)
    assert flagger in h.teams_text(teams[0]) and "combined from" not in h.teams_text(teams[0])
    hook = install.wait_hook(flagger, DELIVERY).json()
    assert hook["metadata"]["eventType"] == "Warning"
    settle()
    assert install.count_slack(flagger) == 1 and install.count_hook(flagger) == 1


SCALE_CANARIES = int(os.environ.get("HERALD_E2E_SCALE_CANARIES", "200"))
SCALE_EVENTS = int(os.environ.get("HERALD_E2E_SCALE_EVENTS", "100"))
# Seconds the Event creation may take before fewer Events per canary are recorded.
SCALE_BUDGET = float(os.environ.get("HERALD_E2E_SCALE_BUDGET", "120"))


def test_scale_200_canaries(install, kube):
    """Scenario 8: 200 canaries with 100 Events each, delivered once each, the state saved,
    nothing re-sent after a restart."""
    install.install(replicas=1)
    # The last test: its 20,000 Events are left to the API server, which run.sh throws away
    # (deleting them takes longer than the API's request timeout).
    install.cleanup = False
    herald = install.replicas[0]
    names = [f"app{i:03d}" for i in range(SCALE_CANARIES)]
    h.parallel(lambda n: install.canary(n), names, 8)
    settle(2)
    t_start = time.time()
    m0 = time.monotonic()
    rounds = 0
    # Round i records the i-th Event of every canary (as 200 rollouts progressing at once),
    # 16 requests at a time; fewer rounds if the API server cannot take them in the budget.
    pool = ThreadPoolExecutor(16)  # one keep-alive connection per thread, for all rounds
    for i in range(SCALE_EVENTS):
        list(
            pool.map(
                lambda n, i=i: install.event(n, f"Advance {n}.{install.apps} canary iteration {i + 1}/{SCALE_EVENTS}"),
                names,
            )
        )
        rounds += 1
        elapsed = time.monotonic() - m0
        if elapsed / rounds * (rounds + 1) > SCALE_BUDGET and rounds < SCALE_EVENTS:
            print(f"scale: stopping after {rounds} Events per canary ({elapsed:.0f} s)")
            break
    pool.shutdown()
    created_s = time.monotonic() - m0
    total = rounds * len(names)
    h.measure(
        f"scale: {len(names)} canaries x {rounds} Events = {total} Events created in {created_s:.0f} s"
        f" ({total / created_s:.0f}/s, 16 at a time)"
    )
    expected = {f"Advance {n}.{install.apps} canary iteration {i + 1}/{SCALE_EVENTS}" for n in names for i in range(rounds)}

    def delivered():
        return len(expected & set(install.hook_messages())) == total

    try:
        h.wait_for(f"{total} Events delivered", delivered, 90, 1)
    finally:
        # Measured whether or not all arrived.
        t_end = time.time()
        got = set(install.hook_messages())
        h.measure(
            f"scale: {len(expected & got)}/{total} delivered, the last {time.monotonic() - m0:.0f} s after the"
            f" first was recorded (RSS {herald.rss_kib()} KiB)"
        )
        if install.audit.path:
            reqs = install.audit.requests(install.user, t_start, t_end)
            h.measure(
                f"scale: {len(reqs)} API requests by Herald from the first Event to the last delivery ="
                f" {len(reqs) * 1000 / total:.1f} per 1,000 Events ({h.summarize_requests(reqs)})"
            )
    settle(5)
    counts: dict[str, int] = {}
    for m in install.hook_messages():
        counts[m] = counts.get(m, 0) + 1
    dupes = {m: c for m, c in counts.items() if c > 1}
    state = h.wait_for("the state ConfigMap", install.state, 20)
    size = sum(len(k) + len(v) for k, v in (state.get("data") or {}).items())
    size += sum(len(k) + len(v) for k, v in (state.get("binaryData") or {}).items())
    h.measure(
        f"scale: state ConfigMap {size} bytes for {len(names)} canaries = {size / len(names):.0f} bytes per canary"
        f" ({len(state.get('data') or {})} keys)"
    )
    # The checks below are collected, so one run reports all of them (the restart included).
    problems = []
    if dupes:
        problems.append(f"{len(dupes)} Events delivered more than once, e.g. {list(dupes.items())[:5]}")
    h.measure(f"RSS, 1 replica, {len(names)} canaries, {total} Events: {herald.rss_kib()} KiB")
    warn = [l for l in herald.log_lines() if "could not save" in l or "Too long" in l]
    if size >= 1 << 20:
        problems.append(f"the state is {size} bytes")
    if warn:
        problems.append(f"saving the state failed {len(warn)} times: {warn[0][:600]}")

    before = len(install.hook.snapshot())
    code = herald.terminate()
    if code != 0:
        problems.append(f"herald exited with {code} on SIGTERM: {herald.log_tail(1)[:600]}")
    herald.start()
    settle(10)
    resent = install.hook.snapshot()[before:]
    h.measure(f"scale: {len(resent)} notifications sent again in 10 s after a restart")
    if resent:
        problems.append(
            f"{len(resent)} notifications re-sent after a restart, e.g. {[h.webhook_message(r) for r in resent[:3]]}"
        )
    assert not problems, "\n".join(problems)
