"""A kubernetes_asyncio ``client.Configuration`` per cluster, never the process-global default.

Every loader of kubernetes_asyncio overwrites the global default Configuration unless it is
given ``client_configuration=`` (``reference/kubernetes-watch.md`` §3); canarywatch may watch
several clusters, so each gets its own object, passed to its own ``ApiClient``.

Modes:

- ``in-cluster``: the pod's ServiceAccount (``KUBERNETES_SERVICE_HOST``/``_PORT``, token and
  CA under ``/var/run/secrets/kubernetes.io/serviceaccount``). kubernetes_asyncio re-reads the
  token file every minute, so projected-token rotation works.
- ``kubeconfig``: a kubeconfig file (default ``$KUBECONFIG`` or ``~/.kube/config``) and
  optionally a context other than the current one.
- ``auto`` (default): in-cluster when ``KUBERNETES_SERVICE_HOST`` is set, else kubeconfig.
- ``host``: an explicit URL and nothing else (the simulator and the tests).

TLS verification stays on by default: only an explicit ``verify_ssl=False`` turns it off (and
a kubeconfig's own ``insecure-skip-tls-verify`` is honoured as the user wrote it).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from kubernetes_asyncio import client, config
from kubernetes_asyncio.config.incluster_config import (
    SERVICE_CERT_FILENAME,
    SERVICE_TOKEN_FILENAME,
    InClusterConfigLoader,
)

from canarywatch.errors import ConfigError

Mode = Literal["auto", "in-cluster", "kubeconfig", "host"]


@dataclass(frozen=True, slots=True)
class ClusterAccess:
    """How to reach one cluster's API server."""

    mode: Mode = "auto"
    kubeconfig: str | None = None
    """Path of the kubeconfig file; ``None``: ``$KUBECONFIG`` or ``~/.kube/config``."""
    context: str | None = None
    """kubeconfig context; ``None``: the file's current context."""
    host: str | None = None
    """``mode="host"``: the API server URL, e.g. ``http://127.0.0.1:PORT``."""
    verify_ssl: bool = True
    ca_file: str | None = None
    token_file: str = SERVICE_TOKEN_FILENAME
    """``in-cluster``: the ServiceAccount token (overridable for tests)."""
    cert_file: str = SERVICE_CERT_FILENAME


def resolve_mode(access: ClusterAccess, environ: Mapping[str, str] | None = None) -> Mode:
    """``auto`` decided: in-cluster when ``KUBERNETES_SERVICE_HOST`` is set, else kubeconfig
    (``host`` when a host is given)."""
    if access.mode != "auto":
        return access.mode
    env = os.environ if environ is None else environ
    if access.host:
        return "host"
    return "in-cluster" if env.get("KUBERNETES_SERVICE_HOST") else "kubeconfig"


async def build_configuration(
    access: ClusterAccess, *, environ: Mapping[str, str] | None = None
) -> client.Configuration:
    """A fresh Configuration for ``access``; raises ``ConfigError`` naming what is missing.

    A coroutine because kubeconfig loading is one (exec plugins, OIDC refresh)."""
    env = os.environ if environ is None else environ
    mode = resolve_mode(access, env)
    configuration: Any = client.Configuration()
    try:
        if mode == "host":
            if not access.host:
                raise ConfigError("host mode needs a host", path="kubernetes.host")
            configuration.host = access.host.rstrip("/")
        elif mode == "in-cluster":
            InClusterConfigLoader(
                token_filename=access.token_file,
                cert_filename=access.cert_file,
                environ=dict(env),
            ).load_and_set(configuration)
        else:
            await config.load_kube_config(
                config_file=access.kubeconfig or env.get("KUBECONFIG") or "~/.kube/config",
                context=access.context,
                client_configuration=configuration,
                persist_config=False,
            )
    except (config.ConfigException, OSError) as error:
        raise ConfigError(f"cannot load {mode} configuration: {error}", path="kubernetes") from None
    if access.ca_file:
        configuration.ssl_ca_cert = access.ca_file
    if not access.verify_ssl:
        configuration.verify_ssl = False
    result: client.Configuration = configuration
    return result
