"""The real Kubernetes control plane for tests: etcd and kube-apiserver on 127.0.0.1.

The binaries come from ``tests/realcluster/build.sh`` (a cache outside the repository). Absent,
a test skips with a one-line reason, or fails under ``CI=true`` (``.ci/run`` builds them).

``RealControlPlane`` starts etcd, then kube-apiserver with generated serving certificates, a
static token file, RBAC authorization and service-account token signing; waits for ``/readyz``;
installs the Canary CRD (``flagger.app/v1beta1`` with the status subresource); writes a
kubeconfig; and stops both processes afterwards. It is synchronous so that one instance can be
shared by a whole pytest session; the tests talk to it asynchronously through ``KubeRest``.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from tests.support.ports import free_port

REPO = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO / "tests" / "realcluster" / "build.sh"
ADMIN_TOKEN = "canarywatch-test-admin-token"
START_TIMEOUT_S = 90.0

CANARY_CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "canaries.flagger.app"},
    "spec": {
        "group": "flagger.app",
        "names": {
            "kind": "Canary",
            "listKind": "CanaryList",
            "plural": "canaries",
            "singular": "canary",
            "shortNames": ["canary"],
            "categories": ["all"],
        },
        "scope": "Namespaced",
        "versions": [
            {
                "name": "v1beta1",
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "x-kubernetes-preserve-unknown-fields": True,
                            },
                            "status": {
                                "type": "object",
                                "x-kubernetes-preserve-unknown-fields": True,
                            },
                        },
                    }
                },
            }
        ],
    },
}
"""The Canary CRD as Flagger installs it, as far as the API server's behaviour goes: the same
group, version, names, scope and status subresource (Flagger's full schema only validates)."""


def built_binary(name: str) -> Path:
    """The path of a binary ``build.sh`` made (``kube-apiserver``, ``etcd``, ``flagger-v1.44.0``);
    the calling test skips when it is absent, or fails under ``CI=true``."""
    result = subprocess.run(
        ["bash", str(BUILD_SCRIPT), "--print", name], capture_output=True, text=True, check=False
    )
    if result.returncode == 0:
        return Path(result.stdout.strip())
    reason = (
        f"{name} not built (needs Go; run `make realcluster`, several minutes once)"
        if shutil.which("go")
        else f"{name} not built and no Go toolchain to build it"
    )
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true requires it)", pytrace=False)
    pytest.skip(reason)


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def generate_pki(directory: Path) -> None:
    """A CA, a serving certificate for 127.0.0.1/localhost, and a service-account key pair."""
    directory.mkdir(parents=True, exist_ok=True)
    _openssl("genrsa", "-out", "ca.key", "2048", cwd=directory)
    _openssl(
        "req", "-x509", "-new", "-key", "ca.key", "-subj", "/CN=canarywatch-test-ca",
        "-days", "2", "-out", "ca.crt", cwd=directory,
    )  # fmt: skip
    _openssl("genrsa", "-out", "server.key", "2048", cwd=directory)
    _openssl(
        "req", "-new", "-key", "server.key", "-subj", "/CN=kube-apiserver",
        "-out", "server.csr", cwd=directory,
    )  # fmt: skip
    (directory / "san.ext").write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default\n"
        "extendedKeyUsage=serverAuth\n"
    )
    _openssl(
        "x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", "2", "-extfile", "san.ext", "-out", "server.crt",
        cwd=directory,
    )  # fmt: skip
    _openssl("genrsa", "-out", "sa.key", "2048", cwd=directory)
    _openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=directory)


@dataclass
class _Process:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 20.0) -> None:
        if self.popen.poll() is not None:
            return
        self.popen.send_signal(sig)
        try:
            self.popen.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()


class RealControlPlane:
    """etcd + kube-apiserver in ``workdir``; ``start()``/``stop()`` or a ``with`` block."""

    def __init__(self, workdir: Path, crds: list[dict[str, Any]] | None = None) -> None:
        """Skips the calling test (fails under ``CI=true``) when the binaries are not built.
        ``crds``: the CustomResourceDefinitions to install (default: the Canary CRD)."""
        self.workdir = workdir
        self.crds = crds if crds is not None else [CANARY_CRD]
        self.apiserver_binary = built_binary("kube-apiserver")
        self.etcd_binary = built_binary("etcd")
        self.pki = workdir / "pki"
        self.etcd_port = free_port()
        self.etcd_peer_port = free_port()
        self.port = free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        self.etcd_url = f"http://127.0.0.1:{self.etcd_port}"
        self.ca_file = self.pki / "ca.crt"
        self.token = ADMIN_TOKEN
        self.kubeconfig = workdir / "kubeconfig"
        self._etcd: _Process | None = None
        self._apiserver: _Process | None = None
        self._ssl = None  # type: ssl.SSLContext | None

    # -- life cycle -----------------------------------------------------------------------

    def __enter__(self) -> RealControlPlane:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        generate_pki(self.pki)
        (self.workdir / "tokens.csv").write_text(
            f'{ADMIN_TOKEN},canarywatch-test-admin,1,"system:masters"\n'
        )
        self._ssl = ssl.create_default_context(cafile=str(self.ca_file))
        try:
            self._start_etcd()
            self.start_apiserver()
            for crd in self.crds:
                self.apply(crd, "/apis/apiextensions.k8s.io/v1/customresourcedefinitions")
            self._wait_for_path("/apis/flagger.app/v1beta1/canaries")
        except BaseException:
            self.stop()
            raise
        self.write_kubeconfig(self.kubeconfig, self.token)

    def stop(self) -> None:
        for process in (self._apiserver, self._etcd):
            if process is not None:
                process.stop()

    def _spawn(self, name: str, argv: list[str]) -> _Process:
        log = self.workdir / f"{name}.log"
        handle = log.open("ab")
        popen = subprocess.Popen(
            argv, stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            cwd=self.workdir, start_new_session=True,
        )  # fmt: skip
        handle.close()
        return _Process(name, popen, log)

    def _start_etcd(self) -> None:
        peer = f"http://127.0.0.1:{self.etcd_peer_port}"
        self._etcd = self._spawn(
            "etcd",
            [
                str(self.etcd_binary),
                "--name=test",
                f"--data-dir={self.workdir / 'etcd'}",
                f"--listen-client-urls={self.etcd_url}",
                f"--advertise-client-urls={self.etcd_url}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=test={peer}",
                "--listen-metrics-urls=",
                "--unsafe-no-fsync",
                "--log-level=warn",
            ],
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            self._check_alive(self._etcd)
            try:
                with urllib.request.urlopen(f"{self.etcd_url}/health", timeout=2) as reply:  # noqa: S310
                    if json.load(reply).get("health") == "true":
                        return
            except (OSError, ValueError):
                pass
            time.sleep(0.1)
        raise RuntimeError(f"etcd did not become healthy:\n{self._etcd.tail()}")

    def start_apiserver(self) -> None:
        """Start (or restart, after ``stop_apiserver``) kube-apiserver; wait for /readyz."""
        pki = self.pki
        self._apiserver = self._spawn(
            "kube-apiserver",
            [
                str(self.apiserver_binary),
                f"--etcd-servers={self.etcd_url}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={self.port}",
                f"--tls-cert-file={pki / 'server.crt'}",
                f"--tls-private-key-file={pki / 'server.key'}",
                f"--client-ca-file={pki / 'ca.crt'}",
                f"--token-auth-file={self.workdir / 'tokens.csv'}",
                "--authorization-mode=RBAC",
                "--service-account-issuer=https://kubernetes.default.svc",
                f"--service-account-key-file={pki / 'sa.pub'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                "--service-cluster-ip-range=10.96.0.0/24",
                f"--cert-dir={self.workdir / 'certs'}",
                "--endpoint-reconciler-type=none",
                "--enable-priority-and-fairness=false",
                "--profiling=false",
                "--v=0",
            ],
        )
        self._wait_for_path("/readyz")

    def stop_apiserver(self, sig: int = signal.SIGTERM) -> None:
        if self._apiserver is not None:
            self._apiserver.stop(sig)

    def _check_alive(self, process: _Process) -> None:
        if process.popen.poll() is not None:
            raise RuntimeError(
                f"{process.name} exited ({process.popen.returncode}):\n{process.tail()}"
            )

    def _wait_for_path(self, path: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        last = ""
        while time.monotonic() < deadline:
            if self._apiserver is not None:
                self._check_alive(self._apiserver)
            try:
                self.request("GET", path)
            except (OSError, urllib.error.HTTPError) as error:
                last = str(error)
            else:
                return
            time.sleep(0.2)
        tail = self._apiserver.tail() if self._apiserver else ""
        raise RuntimeError(f"kube-apiserver: {path} not ready ({last}):\n{tail}")

    # -- requests -------------------------------------------------------------------------

    def request(
        self, method: str, path: str, body: Any = None, *, token: str | None = None,
        content_type: str = "application/json",
    ) -> Any:  # fmt: skip
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(  # noqa: S310 - https to our own 127.0.0.1 server
            self.url + path, data=data, method=method,
            headers={
                "Authorization": f"Bearer {token or self.token}",
                "Content-Type": content_type,
            },
        )  # fmt: skip
        with urllib.request.urlopen(request, timeout=30, context=self._ssl) as reply:  # noqa: S310
            raw = reply.read()
        return json.loads(raw) if raw.strip().startswith(b"{") else raw.decode()

    def apply(self, obj: dict[str, Any], collection: str) -> Any:
        """Create ``obj`` in ``collection``, or leave it when it already exists."""
        try:
            return self.request("POST", collection, obj)
        except urllib.error.HTTPError as error:
            if error.code != 409:
                raise
            return None

    def ensure_namespace(self, name: str) -> None:
        self.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}},
                   "/api/v1/namespaces")  # fmt: skip

    def etcd_revision(self) -> int:
        reply = self._etcd_call("/v3/kv/range", {"key": base64.b64encode(b"/").decode()})
        return int(reply["header"]["revision"])

    def compact_etcd(self) -> int:
        """Compact etcd to its current revision (what kube-apiserver does every 5 minutes)."""
        revision = self.etcd_revision()
        self._etcd_call("/v3/kv/compaction", {"revision": str(revision), "physical": True})
        return revision

    def _etcd_call(self, path: str, body: dict[str, Any]) -> Any:
        request = urllib.request.Request(  # noqa: S310 - our own etcd on 127.0.0.1
            self.etcd_url + path, data=json.dumps(body).encode(), method="POST",
            headers={"Content-Type": "application/json"},
        )  # fmt: skip
        with urllib.request.urlopen(request, timeout=10) as reply:  # noqa: S310
            return json.load(reply)

    def write_kubeconfig(self, path: Path, token: str, *, namespace: str = "default") -> Path:
        """A kubeconfig as a user would have it: server URL, CA data, bearer token."""
        ca_data = base64.b64encode(self.ca_file.read_bytes()).decode()
        path.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [
                        {
                            "name": "real",
                            "cluster": {"server": self.url, "certificate-authority-data": ca_data},
                        }
                    ],
                    "users": [{"name": "tester", "user": {"token": token}}],
                    "contexts": [
                        {
                            "name": "real",
                            "context": {
                                "cluster": "real",
                                "user": "tester",
                                "namespace": namespace,
                            },
                        }
                    ],
                    "current-context": "real",
                },
                indent=2,
            )
        )
        path.chmod(0o600)
        return path
