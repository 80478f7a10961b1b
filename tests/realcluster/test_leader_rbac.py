"""Leader election on a real ``coordination.k8s.io/v1`` Lease and the RBAC we ship.

Two ``canarywatch run`` processes follow the same cluster through a kubeconfig; the leader is
killed with SIGKILL mid-rollout and the standby must take over with no gap and no repeat (the
ConfigMap-shared notification log tells it what was sent). Then the daemon runs under a
ServiceAccount token bound to exactly ``config/kubernetes/base``'s Role and ClusterRole: nothing
may be forbidden; with one verb removed, the error must say which.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.realcluster.target import KubeTarget
from tests.realcluster.test_daemon import rig
from tests.resilience import announced, diff, expected, wait_for_count
from tests.resilience.test_crash_restart import Daemon, unique_by_idempotency_key
from tests.support.kube_apiserver import RealControlPlane
from tests.support.kube_rest import KubeApiError, KubeRest
from tests.support.webhook_receiver import run_webhook_receiver

from canarywatch.simulator.flagger import PODINFO_ANALYSIS

REPO = Path(__file__).resolve().parents[2]
RBAC = REPO / "config" / "kubernetes" / "base" / "rbac.yaml"
SERVICE_ACCOUNT = REPO / "config" / "kubernetes" / "base" / "serviceaccount.yaml"
LEASE_NS = "canarywatch"


def daemon_config_text(
    target: KubeTarget, kubeconfig: Path, hook_url: str, state: Path, identity: str
) -> str:
    return (
        "receivers:\n"
        "  - name: hook\n"
        "    sink: webhook\n"
        f'    options: {{url: {{value: "{hook_url}"}}, timeout_s: 5}}\n'
        'route: {receiver: hook, group_by: ["..."], group_wait: 0s, group_interval: 0s}\n'
        f"state: {{dir: {str(state)!r}}}\n"
        f'clusters: [{{name: sim, connection: kubeconfig, kubeconfig: "{kubeconfig}"}}]\n'
        "dispatch: {attempt_timeout: 5s, retry_budget: 60s, drain_timeout: 5s}\n"
        'server: {listen: "127.0.0.1:0"}\n'
        "log: {level: info, format: json}\n"
        "leader_election:\n"
        "  enabled: true\n"
        f"  lease_namespace: {LEASE_NS}\n"
        f"  identity: {identity}\n"
        "  lease_duration: 3s\n"
        "  renew_deadline: 2s\n"
        "  retry_period: 1s\n"
    )


def start_daemon(
    target: KubeTarget, tmp_path: Path, name: str, hook_url: str, kubeconfig: Path | None = None
) -> Daemon:
    workdir = tmp_path / name
    workdir.mkdir()
    config = workdir / "canarywatch.yaml"
    config.write_text(
        daemon_config_text(
            target, kubeconfig or target.kubeconfig, hook_url, workdir / "state", name
        ),
        encoding="utf-8",
    )
    daemon = Daemon(config, workdir)
    daemon.start()
    return daemon


async def lease_holder(rest: KubeRest) -> str:
    """The replica holding the Lease: its ``holderIdentity`` without the per-process suffix
    (``replica-a_1f2e3d4c`` -> ``replica-a``); "" when nobody holds it, or before the first
    candidate created it (a loaded machine: the daemon lists before it elects)."""
    try:
        lease = await rest.get(
            f"/apis/coordination.k8s.io/v1/namespaces/{LEASE_NS}/leases/canarywatch"
        )
    except KubeApiError as error:
        if error.status == 404:
            return ""
        raise
    holder = str(lease["spec"].get("holderIdentity") or "")
    replica, _, suffix = holder.rpartition("_")
    assert not holder or (replica and len(suffix) == 8), f"holderIdentity {holder!r}"
    return replica


async def test_kill_9_the_leader_no_gap_no_repeat(
    fresh_kube_target: KubeTarget, tmp_path: Path
) -> None:
    target = fresh_kube_target
    want = expected(["rollback_failed_checks"])
    async with run_webhook_receiver(path="/") as receiver, rig(target) as r:
        a = start_daemon(target, tmp_path, "replica-a", receiver.url)
        await a.wait_listed()
        async with asyncio.timeout(20):
            while await lease_holder(target.rest) != "replica-a":
                await asyncio.sleep(0.1)
        b = start_daemon(target, tmp_path, "replica-b", receiver.url)
        try:
            await b.wait_listed()
            c = r.sim.create_canary("test", "podinfo", analysis=PODINFO_ANALYSIS)
            c.new_revision("bbb222")
            c.start_analysis()
            await r.mirror.drained()
            await wait_for_count(receiver.requests, 3, timeout_s=20)
            a.kill()  # no drain, no release of the Lease
            c.advance()
            c.halt_metric("request-success-rate", 91.0)
            for value in (90.0, 89.0, 88.0, 87.0):
                c.halt_metric("request-success-rate", value)
            c.rollback("failed-checks")
            await r.mirror.drained()
            async with asyncio.timeout(30):
                while await lease_holder(target.rest) != "replica-b":
                    await asyncio.sleep(0.1)
            await wait_for_count(receiver.requests, sum(want.values()), timeout_s=30)
            await asyncio.sleep(1.5)  # a late repeat would show now
            nflog = await target.rest.get(
                f"/api/v1/namespaces/{LEASE_NS}/configmaps/canarywatch-nflog"
            )
        finally:
            await b.stop()
    unique, resent = unique_by_idempotency_key(receiver.requests)
    got = announced(req.json() for req in unique)
    assert got == want, f"{diff(got, want)} ({resent} idempotent resends)"
    assert nflog["data"], "the leader shares what it sent through the ConfigMap"


# -- RBAC -------------------------------------------------------------------------------------

_COLLECTIONS = {
    "ClusterRole": "/apis/rbac.authorization.k8s.io/v1/clusterroles",
    "ClusterRoleBinding": "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
    "Role": "/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/roles",
    "RoleBinding": "/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings",
    "ServiceAccount": "/api/v1/namespaces/{ns}/serviceaccounts",
}


def manifests(*, drop_verb: tuple[str, str] | None = None) -> list[dict[str, Any]]:
    """The shipped ServiceAccount and RBAC objects; ``drop_verb=(resource, verb)`` removes one
    verb from the ClusterRole rule on that resource."""
    objects = [
        *yaml.safe_load_all(SERVICE_ACCOUNT.read_text()),
        *yaml.safe_load_all(RBAC.read_text()),
    ]
    if drop_verb is not None:
        resource, verb = drop_verb
        for obj in objects:
            if obj["kind"] != "ClusterRole":
                continue
            for rule in obj["rules"]:
                if resource in rule["resources"] and rule.get("apiGroups") == [""]:
                    rule["verbs"] = [v for v in rule["verbs"] if v != verb]
    return objects


async def service_account_kubeconfig(plane: RealControlPlane, rest: KubeRest, path: Path) -> Path:
    """Apply the shipped RBAC, then a kubeconfig holding a token of the canarywatch
    ServiceAccount (TokenRequest API), as the pod would have it."""
    await rest.ensure_namespace(LEASE_NS)
    for obj in manifests():
        collection = _COLLECTIONS[obj["kind"]].format(ns=obj["metadata"].get("namespace", ""))
        await rest.post(collection, obj)
    token = await rest.post(
        f"/api/v1/namespaces/{LEASE_NS}/serviceaccounts/canarywatch/token",
        {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
         "spec": {"expirationSeconds": 3600}},
    )  # fmt: skip
    return plane.write_kubeconfig(path, token["status"]["token"])


def forbidden_lines(daemon: Daemon) -> list[dict[str, object]]:
    return [
        e
        for e in daemon.log_events()
        if "forbidden" in json.dumps(e).lower() or e.get("status_code") == 403
    ]


@pytest.mark.parametrize("fresh_kube_target", ["real"], indirect=True)
async def test_shipped_rbac_is_enough_and_a_missing_verb_is_named(
    fresh_kube_target: KubeTarget, tmp_path: Path
) -> None:
    target = fresh_kube_target
    assert target.plane is not None
    kubeconfig = await service_account_kubeconfig(
        target.plane, target.rest, tmp_path / "sa-kubeconfig"
    )
    want = {("test/podinfo", "revision-detected", ""): 1}
    async with run_webhook_receiver(path="/") as receiver, rig(target) as r:
        daemon = start_daemon(target, tmp_path, "rbac", receiver.url, kubeconfig)
        try:
            await daemon.wait_listed()
            async with asyncio.timeout(20):
                while await lease_holder(target.rest) != "rbac":
                    await asyncio.sleep(0.1)
            c = r.sim.create_canary("test", "podinfo", analysis=PODINFO_ANALYSIS)
            c.new_revision("ccc333")
            await r.mirror.drained()
            await wait_for_count(receiver.requests, 1, timeout_s=20, settle_s=2.0)
        finally:
            await daemon.stop()
        assert forbidden_lines(daemon) == []
        assert announced(req.json() for req in receiver.requests) == want
        nflog = await target.rest.get(f"/api/v1/namespaces/{LEASE_NS}/configmaps/canarywatch-nflog")
        assert nflog["data"]

        # Take `watch` on Events away: the daemon must say what is missing, not fail silently.
        cluster_role = next(o for o in manifests(drop_verb=("events", "watch"))
                            if o["kind"] == "ClusterRole")  # fmt: skip
        await target.rest.put(
            "/apis/rbac.authorization.k8s.io/v1/clusterroles/canarywatch", cluster_role
        )
        broken = start_daemon(target, tmp_path, "rbac-broken", receiver.url, kubeconfig)
        try:
            async with asyncio.timeout(30):
                while not forbidden_lines(broken):
                    await asyncio.sleep(0.2)
        finally:
            await broken.stop()
    line = forbidden_lines(broken)[0]
    assert line.get("event") == "watch_forbidden", line
    assert line["resource"] == "events"
    assert line["level"] == "error"
    # The API server's own words name the verb and the identity; canarywatch passes them on.
    message = str(line["message"])
    assert 'cannot watch resource "events"' in message, message
    assert "system:serviceaccount:canarywatch:canarywatch" in message
    assert "RBAC" in str(line["hint"])
