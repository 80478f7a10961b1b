"""``config/kubernetes``: the kustomize base and the sidecar component, built in Python.

``build()`` is the small part of kustomize these manifests use (resources, components,
configMapGenerator without the hash suffix, strategic-merge patches merged by ``name``,
images); ``test_kubectl_kustomize_agrees`` checks it against the real thing when kubectl is
installed. RBAC is compared with the Kubernetes API calls found in the daemon's source.
"""

from __future__ import annotations

import copy
import os
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.support.binaries import require_binary

import canarywatch.sources.canaries as canaries_source
from canarywatch.config import Config, parse_config

ROOT = Path(__file__).resolve().parents[2]
KUBE = ROOT / "config" / "kubernetes"
BASE = KUBE / "base"
SIDECAR = KUBE / "sidecar"
NAMESPACE = "canarywatch"
SECRET_MOUNT = "/var/run/secrets/canarywatch"
TMP_MOUNT = "/tmp"  # noqa: S108 - the container's /tmp, an emptyDir
IMAGE_REPO = "ghcr.io/example/canarywatch"

Doc = dict[str, Any]

# A minimal Flagger Deployment (the shape of Flagger's kustomize base) for the component.
FLAGGER_DEPLOYMENT: Doc = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "flagger", "namespace": "flagger-system"},
    "spec": {
        "selector": {"matchLabels": {"app": "flagger"}},
        "template": {
            "metadata": {"labels": {"app": "flagger"}},
            "spec": {
                "serviceAccountName": "flagger",
                "containers": [
                    {
                        "name": "flagger",
                        "image": "ghcr.io/fluxcd/flagger:1.44.0",
                        "ports": [{"name": "http", "containerPort": 8080}],
                    }
                ],
            },
        },
    },
}


# --- a kustomize subset --------------------------------------------------------------------


def load_docs(path: Path) -> list[Doc]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]


def strategic_merge(target: Any, patch: Any) -> Any:
    """Maps merge recursively; lists of maps with ``name`` merge by name; other lists replace."""
    if isinstance(target, dict) and isinstance(patch, dict):
        merged = dict(target)
        for key, value in patch.items():
            merged[key] = strategic_merge(target[key], value) if key in target else value
        return merged
    if (
        isinstance(target, list)
        and isinstance(patch, list)
        and all(isinstance(i, dict) and "name" in i for i in target + patch)
    ):
        by_name = {item["name"]: item for item in target}
        added = [item for item in patch if item["name"] not in by_name]
        patched = {item["name"]: item for item in patch}
        kept = [
            strategic_merge(item, patched[item["name"]]) if item["name"] in patched else item
            for item in target
        ]
        return added + kept  # kustomize puts new items first
    return patch


def _matches(doc: Doc, target: dict[str, str]) -> bool:
    group, _, version = doc["apiVersion"].rpartition("/")
    wanted = {
        "kind": doc["kind"],
        "name": doc["metadata"]["name"],
        "group": group,
        "version": version,
    }
    return all(wanted.get(key) == value for key, value in target.items())


def _pod_containers(doc: Doc) -> list[Doc]:
    spec = doc.get("spec", {}).get("template", {}).get("spec", {})
    return list(spec.get("containers", [])) + list(spec.get("initContainers", []))


def apply_kustomization(directory: Path, docs: list[Doc]) -> list[Doc]:
    """Apply the kustomization (or Component) in ``directory`` on top of ``docs``."""
    spec = yaml.safe_load((directory / "kustomization.yaml").read_text(encoding="utf-8"))
    unknown = set(spec) - {
        "apiVersion",
        "kind",
        "resources",
        "components",
        "configMapGenerator",
        "patches",
        "images",
        "namespace",
    }
    assert not unknown, f"the test's kustomize subset lacks {unknown}"
    for resource in spec.get("resources", []):
        path = directory / resource
        docs = apply_kustomization(path, docs) if path.is_dir() else docs + load_docs(path)
    for component in spec.get("components", []):
        docs = apply_kustomization(directory / component, docs)
    for generator in spec.get("configMapGenerator", []):
        metadata = {"name": generator["name"]}
        if "namespace" in generator:
            metadata["namespace"] = generator["namespace"]
        data = {
            Path(f).name: (directory / f).read_text(encoding="utf-8") for f in generator["files"]
        }
        docs = [
            *docs,
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": data},
        ]
    for patch in spec.get("patches", []):
        (body,) = load_docs(directory / patch["path"])
        hits = [i for i, doc in enumerate(docs) if _matches(doc, patch["target"])]
        assert hits, f"patch {patch['path']} matches nothing"
        for i in hits:
            docs[i] = strategic_merge(docs[i], body)
    for image in spec.get("images", []):
        for doc in docs:
            for container in _pod_containers(doc):
                name = re.split(r"[:@]", container["image"], maxsplit=1)[0]
                if name == image["name"]:
                    container["image"] = f"{image.get('newName', name)}:{image['newTag']}"
    if "namespace" in spec:
        for doc in docs:
            if doc["kind"] not in {"Namespace", "ClusterRole", "ClusterRoleBinding"}:
                doc["metadata"]["namespace"] = spec["namespace"]
    return docs


def build(directory: Path) -> list[Doc]:
    return copy.deepcopy(apply_kustomization(directory, []))


def find(docs: list[Doc], kind: str, name: str | None = None) -> Doc:
    hits = [d for d in docs if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    assert len(hits) == 1, f"expected one {kind} {name or ''}, found {len(hits)}"
    return hits[0]


@pytest.fixture(scope="module")
def base() -> list[Doc]:
    return build(BASE)


@pytest.fixture(scope="module")
def deployment(base: list[Doc]) -> Doc:
    return find(base, "Deployment", "canarywatch")


@pytest.fixture(scope="module")
def container(deployment: Doc) -> Doc:
    (only,) = deployment["spec"]["template"]["spec"]["containers"]
    assert isinstance(only, dict)
    return only


@pytest.fixture(scope="module")
def sidecar() -> list[Doc]:
    return apply_kustomization(SIDECAR, [copy.deepcopy(FLAGGER_DEPLOYMENT)])


# --- config loading with the secrets the Secret would provide ------------------------------


def _rewrite_files(node: Any, replace: dict[str, Path], tmp: Path) -> Any:
    if isinstance(node, dict):
        if set(node) == {"file"}:
            source = str(node["file"])
            if source not in replace:
                target = tmp / f"secret-{len(replace)}"
                value = "https://hooks.slack.com/services/T000/B000/XXXX"
                target.write_text(value if "url" in source else "not-a-real-token\n")
                replace[source] = target
            return {"file": str(replace[source])}
        return {k: _rewrite_files(v, replace, tmp) for k, v in node.items()}
    if isinstance(node, list):
        return [_rewrite_files(v, replace, tmp) for v in node]
    return node


def with_local_secrets(text: str, tmp: Path) -> tuple[str, dict[str, Path]]:
    """``text`` with every ``{file: PATH}`` pointing at a temp file; also the mapping."""
    replace: dict[str, Path] = {}
    data = _rewrite_files(yaml.safe_load(text), replace, tmp)
    return yaml.safe_dump(data, sort_keys=False), replace


def load_with_secrets(text: str, tmp: Path) -> tuple[Config, dict[str, Path]]:
    rewritten, replace = with_local_secrets(text, tmp)
    return parse_config(rewritten, filename="config.yaml"), replace


def configmap_config(docs: list[Doc], name: str) -> str:
    text = find(docs, "ConfigMap", name)["data"]["config.yaml"]
    assert isinstance(text, str)
    return text


# --- every file --------------------------------------------------------------------------


def all_yaml() -> Iterator[Path]:
    yield from sorted(KUBE.rglob("*.yaml"))


@pytest.mark.parametrize("path", list(all_yaml()), ids=lambda p: str(p.relative_to(KUBE)))
def test_every_file_parses(path: Path) -> None:
    docs = load_docs(path)
    assert docs, f"{path} is empty"
    for doc in docs:
        assert isinstance(doc, dict)


def test_every_manifest_is_referenced() -> None:
    for directory in (BASE, SIDECAR):
        spec = yaml.safe_load((directory / "kustomization.yaml").read_text(encoding="utf-8"))
        used = {"kustomization.yaml", *spec.get("resources", [])}
        used |= {f for g in spec.get("configMapGenerator", []) for f in g["files"]}
        used |= {p["path"] for p in spec.get("patches", [])}
        present = {p.name for p in directory.glob("*.yaml")}
        assert present == used, f"{directory.name}: unreferenced {present - used}"


def test_base_objects_and_namespaces(base: list[Doc]) -> None:
    kinds = sorted(d["kind"] for d in base)
    assert kinds == sorted(
        [
            "Namespace",
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "Role",
            "RoleBinding",
            "Deployment",
            "PodDisruptionBudget",
            "Service",
            "ServiceMonitor",
            "PrometheusRule",
            "ConfigMap",
        ]
    )
    for doc in base:
        if doc["kind"] in {"Namespace", "ClusterRole", "ClusterRoleBinding"}:
            assert "namespace" not in doc["metadata"]
        else:
            assert doc["metadata"]["namespace"] == NAMESPACE, doc["kind"]
    assert not [d for d in base if d["kind"] == "Secret"], "no secrets in git"


# --- the Deployment ----------------------------------------------------------------------


def test_image_is_the_released_version(container: Doc) -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert container["image"] == f"{IMAGE_REPO}:{pyproject['project']['version']}"
    assert container["imagePullPolicy"] == "IfNotPresent"


def test_two_replicas_and_a_disruption_budget(base: list[Doc], deployment: Doc) -> None:
    assert deployment["spec"]["replicas"] == 2
    pdb = find(base, "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["selector"] == deployment["spec"]["selector"]


def test_probes(container: Doc) -> None:
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http-metrics"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http-metrics"}
    assert container["ports"] == [
        {"name": "http-metrics", "containerPort": 9797, "protocol": "TCP"}
    ]


def check_security(pod_spec: Doc | None, container: Doc) -> None:
    ctx = container["securityContext"]
    assert ctx["runAsNonRoot"] is True
    assert ctx["runAsUser"] == 10001
    assert ctx["readOnlyRootFilesystem"] is True
    assert ctx["allowPrivilegeEscalation"] is False
    assert ctx["capabilities"] == {"drop": ["ALL"]}
    assert ctx["seccompProfile"] == {"type": "RuntimeDefault"}
    assert "add" not in ctx["capabilities"]
    if pod_spec is not None:
        pod = pod_spec["securityContext"]
        assert pod["runAsNonRoot"] is True
        assert pod["runAsUser"] == 10001
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}


def check_resources(container: Doc) -> None:
    resources = container["resources"]
    assert set(resources["requests"]) == {"cpu", "memory"}
    assert set(resources["limits"]) >= {"memory"}


def test_security_context(deployment: Doc, container: Doc) -> None:
    check_security(deployment["spec"]["template"]["spec"], container)
    check_resources(container)


def test_command_matches_the_image(container: Doc) -> None:
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    cmd = re.search(r"^CMD (.+)$", dockerfile, re.MULTILINE)
    assert cmd is not None
    assert container["args"] == yaml.safe_load(cmd[1])
    assert "command" not in container  # keep the image's ENTRYPOINT


def _mounts(container: Doc, volumes: list[Doc]) -> dict[str, Doc]:
    """mountPath -> the volume mounted there."""
    by_name = {v["name"]: v for v in volumes}
    return {m["mountPath"]: by_name[m["name"]] for m in container["volumeMounts"]}


def test_volumes(deployment: Doc, container: Doc, base: list[Doc]) -> None:
    volumes = deployment["spec"]["template"]["spec"]["volumes"]
    mounts = _mounts(container, volumes)
    assert "emptyDir" in mounts["/var/lib/canarywatch"]
    assert "emptyDir" in mounts[TMP_MOUNT]
    config_map = mounts["/etc/canarywatch"]["configMap"]["name"]
    assert "config.yaml" in find(base, "ConfigMap", config_map)["data"]
    assert mounts[SECRET_MOUNT]["secret"]["secretName"] == "canarywatch-secrets"
    writable = {m["mountPath"] for m in container["volumeMounts"] if not m.get("readOnly")}
    assert writable == {"/var/lib/canarywatch", TMP_MOUNT}


def test_service_and_service_monitor(base: list[Doc], deployment: Doc) -> None:
    service = find(base, "Service")
    assert service["spec"]["ports"] == [
        {"name": "http-metrics", "port": 9797, "targetPort": "http-metrics", "protocol": "TCP"}
    ]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    monitor = find(base, "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == "http-metrics"
    assert endpoint["path"] == "/metrics"
    assert find(base, "PrometheusRule")["apiVersion"] == "monitoring.coreos.com/v1"


# --- the sample config -------------------------------------------------------------------


def test_configmap_config_loads(
    base: list[Doc], deployment: Doc, container: Doc, tmp_path: Path
) -> None:
    config, secrets = load_with_secrets(configmap_config(base, "canarywatch-config"), tmp_path)
    assert config.leader_election.enabled
    assert config.leader_election.lease_namespace == NAMESPACE
    assert [c.connection for c in config.clusters] == ["in-cluster"]
    assert config.server.port == container["ports"][0]["containerPort"]
    assert not config.server.loopback
    assert config.server.token is not None
    assert str(config.state.dir) == "/var/lib/canarywatch"
    grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > config.dispatch.drain_timeout
    for source in secrets:
        assert source.startswith(SECRET_MOUNT + "/"), source
    assert {Path(s).name for s in secrets} == {"server-token", "slack-webhook-url"}
    env = {e["name"]: e for e in container["env"]}
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"


def test_configmap_config_passes_check_config(base: list[Doc], tmp_path: Path) -> None:
    """The CLI's check also loads the sinks and validates their options."""
    text, _ = with_local_secrets(configmap_config(base, "canarywatch-config"), tmp_path)
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "canarywatch", "check-config", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_secret_keys_are_documented(base: list[Doc], tmp_path: Path) -> None:
    _, secrets = load_with_secrets(configmap_config(base, "canarywatch-config"), tmp_path)
    kustomization = (BASE / "kustomization.yaml").read_text(encoding="utf-8")
    docs = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    for name in {Path(s).name for s in secrets}:
        assert f"--from-file={name}=" in kustomization
        assert f"--from-file={name}=" in docs


# --- RBAC --------------------------------------------------------------------------------

Permission = tuple[str, str, str, str | None]
"""(apiGroup, resource, verb, resourceName or None for any)."""

_CALL = re.compile(
    r"\b(list|read|create|replace|patch|delete)_"
    r"(?:(?:namespaced|cluster)_([a-z_]+?)|([a-z_]+?)_for_all_namespaces|(namespace))\b"
)
"""A generated Kubernetes client method (``list_namespaced_event``, ``replace_namespaced_lease``,
``list_event_for_all_namespaces``, and the cluster-scoped ``list_namespace``), called or passed
around (``partial(api.list_...)``)."""
_VERBS = {
    "list": ("list", "watch"),  # every list call is also made with watch=True
    "read": ("get",),
    "create": ("create",),
    "replace": ("update",),
    "patch": ("patch",),
    "delete": ("delete",),
}
_RESOURCES = {
    # core/v1 or events.k8s.io/v1, chosen by clusters[].events_api
    "event": (("", "events"), ("events.k8s.io", "events")),
    "custom_object": ((canaries_source.GROUP, canaries_source.PLURAL),),
    "lease": (("coordination.k8s.io", "leases"),),
    # the notification log shared between leaders (canarywatch.state.configmap)
    "config_map": (("", "configmaps"),),
    # Flagger's Service, for metrics_source.discover (canarywatch.sources.flagger_discovery)
    "service": (("", "services"),),
    # namespaces matching clusters[].namespace_selector (canarywatch.sources.build)
    "namespace": (("", "namespaces"),),
}
_NAMESPACED = {"leases", "configmaps"}
"""Only in the daemon's namespace (a Role), and get/update only on the objects it owns."""
# Read access granted beyond the calls: `get` on what is listed (reference §4; harmless).
_EXTRA_GETS = {("", "events"), ("events.k8s.io", "events"), ("flagger.app", "canaries")}


def api_call_sites() -> list[tuple[str, str, str]]:
    """(file, verb prefix, resource stem) of every Kubernetes API call canarywatch makes,
    including the ones kubernetes_asyncio's LeaseLock makes for the leader elector."""
    from kubernetes_asyncio.leaderelection.resourcelock import leaselock

    files = [
        p
        for p in (ROOT / "daemon" / "canarywatch").rglob("*.py")
        if "simulator" not in p.parts and p.name != "testing.py"
    ]
    files.append(Path(leaselock.__file__))
    sites = []
    for path in files:
        for match in _CALL.finditer(path.read_text(encoding="utf-8")):
            sites.append((path.name, match[1], match[2] or match[3] or match[4]))
    return sites


def needed_permissions(lease_name: str) -> set[Permission]:
    owned = {"leases": lease_name, "configmaps": f"{lease_name}-nflog"}
    needed: set[Permission] = set()
    for file, verb, stem in api_call_sites():
        assert stem in _RESOURCES, f"{file}: new API call on {stem!r}: extend RBAC and this test"
        for group, resource in _RESOURCES[stem]:
            for rbac_verb in _VERBS[verb]:
                name = owned[resource] if resource in owned and rbac_verb != "create" else None
                needed.add((group, resource, rbac_verb, name))
    return needed


def granted_permissions(rules: list[Doc]) -> set[Permission]:
    granted: set[Permission] = set()
    for rule in rules:
        assert "nonResourceURLs" not in rule
        names = rule.get("resourceNames") or [None]
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    for name in names:
                        granted.add((group, resource, verb, name))
    return granted


def test_api_call_scan_finds_the_known_calls() -> None:
    found = {(verb, stem) for _, verb, stem in api_call_sites()}
    assert {
        ("list", "event"),
        ("list", "custom_object"),
        ("read", "lease"),
        ("create", "lease"),
        ("replace", "lease"),
        ("read", "config_map"),
        ("create", "config_map"),
        ("replace", "config_map"),
    } <= found


def test_rbac_covers_exactly_what_the_code_calls(base: list[Doc], tmp_path: Path) -> None:
    config, _ = load_with_secrets(configmap_config(base, "canarywatch-config"), tmp_path)
    needed = needed_permissions(config.leader_election.lease_name)
    cluster_role = find(base, "ClusterRole", "canarywatch")
    role = find(base, "Role", "canarywatch-leader-election")
    assert role["metadata"]["namespace"] == config.leader_election.lease_namespace
    cluster_granted = granted_permissions(cluster_role["rules"])
    role_granted = granted_permissions(role["rules"])

    assert all(p[1] not in _NAMESPACED for p in cluster_granted), "only in the own namespace"
    assert all(p[1] in _NAMESPACED for p in role_granted)
    granted = cluster_granted | role_granted
    extra_gets = {(g, r, "get", None) for g, r in _EXTRA_GETS}
    assert needed <= granted, f"missing: {sorted(needed - granted, key=str)}"
    assert granted - needed <= extra_gets, f"more than needed: {granted - needed - extra_gets}"


def test_rbac_never_writes_watched_objects_nor_reads_secrets(base: list[Doc]) -> None:
    for doc in base:
        for rule in doc.get("rules", []) if doc["kind"] in {"ClusterRole", "Role"} else []:
            assert "*" not in rule["verbs"]
            assert "*" not in rule["resources"]
            assert "*" not in rule["apiGroups"]
            assert "secrets" not in rule["resources"]
            if set(rule["resources"]) & {"events", "canaries"}:
                assert set(rule["verbs"]) <= {"get", "list", "watch"}


def test_bindings_name_the_service_account(base: list[Doc], deployment: Doc) -> None:
    account = find(base, "ServiceAccount")["metadata"]
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == account["name"]
    for kind, role_kind, role in (
        ("ClusterRoleBinding", "ClusterRole", "canarywatch"),
        ("RoleBinding", "Role", "canarywatch-leader-election"),
    ):
        binding = find(base, kind)
        assert binding["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": role_kind,
            "name": role,
        }
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": account["name"], "namespace": account["namespace"]}
        ]


# --- the sidecar component ---------------------------------------------------------------


def test_sidecar_is_added_next_to_flagger(sidecar: list[Doc], tmp_path: Path) -> None:
    deployment = find(sidecar, "Deployment", "flagger")
    pod = deployment["spec"]["template"]["spec"]
    assert sorted(c["name"] for c in pod["containers"]) == ["canarywatch", "flagger"]
    flagger = next(c for c in pod["containers"] if c["name"] == "flagger")
    assert flagger == FLAGGER_DEPLOYMENT["spec"]["template"]["spec"]["containers"][0]
    assert pod["serviceAccountName"] == "flagger"  # Flagger's account: no RBAC of our own
    assert not [d for d in sidecar if d["kind"] in {"Role", "ClusterRole", "ServiceAccount"}]

    container = next(c for c in pod["containers"] if c["name"] == "canarywatch")
    check_security(None, container)
    check_resources(container)
    assert container["image"].startswith(f"{IMAGE_REPO}:")
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    mounts = _mounts(container, pod["volumes"])
    config_map = mounts["/etc/canarywatch"]["configMap"]["name"]
    config, secrets = load_with_secrets(configmap_config(sidecar, config_map), tmp_path)
    assert not config.leader_election.enabled
    assert [c.connection for c in config.clusters] == ["in-cluster"]
    assert [c.events_api for c in config.clusters] == ["core/v1"]  # Flagger's ClusterRole
    assert str(config.state.dir) in mounts
    assert "emptyDir" in mounts[str(config.state.dir)]
    assert all(s.startswith(SECRET_MOUNT + "/") for s in secrets)
    ports = {p["containerPort"] for c in pod["containers"] for p in c.get("ports", [])}
    assert len(ports) == sum(len(c.get("ports", [])) for c in pod["containers"])  # no clash
    assert config.server.port in ports


# --- the real kustomize ------------------------------------------------------------------


def _normalise(docs: list[Doc]) -> list[Doc]:
    text = yaml.safe_dump_all(docs, sort_keys=True)
    text = re.sub(r"(canarywatch(?:-sidecar)?-config)-[a-z0-9]{10}\b", r"\1", text)
    return sorted(
        (d for d in yaml.safe_load_all(text) if d),
        key=lambda d: (d["kind"], d["metadata"]["name"]),
    )


def _kubectl_kustomize(kubectl: str, directory: Path) -> list[Doc]:
    result = subprocess.run(
        [kubectl, "kustomize", str(directory)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


@pytest.mark.needs_binaries
def test_kubectl_kustomize_agrees(tmp_path: Path) -> None:
    kubectl = require_binary("kubectl")
    assert _normalise(_kubectl_kustomize(kubectl, BASE)) == _normalise(build(BASE))

    (tmp_path / "flagger.yaml").write_text(yaml.safe_dump(FLAGGER_DEPLOYMENT), encoding="utf-8")
    component = os.path.relpath(SIDECAR, tmp_path)  # kustomize refuses absolute paths
    (tmp_path / "kustomization.yaml").write_text(
        yaml.safe_dump({"resources": ["flagger.yaml"], "components": [component]}),
        encoding="utf-8",
    )
    real = _normalise(_kubectl_kustomize(kubectl, tmp_path))
    ours = _normalise(apply_kustomization(SIDECAR, [copy.deepcopy(FLAGGER_DEPLOYMENT)]))
    assert real == ours
