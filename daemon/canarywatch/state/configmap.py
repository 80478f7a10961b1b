"""The notification log shared by replicas through a Kubernetes ConfigMap (HA without volumes).

With leader election, only the leader delivers; its SQLite file lives on its own pod. So that
a standby that takes over knows what the old leader already sent, the leader also appends every
delivered fingerprint to a ConfigMap (``data["nflog"]``: JSON ``{"<receiver>|<status>|<fp>":
"<RFC 3339 sent at>"}``), pruned to ``retention_s`` and ``max_entries`` so it stays far below
the 1 MiB object limit. The new leader reads it once at takeover and drops held notifications
whose events were already delivered.

Writes are read-modify-write with the ConfigMap's ``resourceVersion`` (409 Conflict -> re-read
and retry), so two replicas that briefly both believe they lead cannot lose each other's
entries. The remaining window: a leader killed between the sink's acknowledgement and this
write may have its last notification repeated by the successor; nothing is ever lost.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

import structlog
from kubernetes_asyncio import client

from canarywatch.model import NotificationStatus

DATA_KEY = "nflog"
MAX_CONFLICT_RETRIES = 5


def entry_key(receiver: str, status: NotificationStatus, fingerprint: str) -> str:
    return f"{receiver}|{status.value}|{fingerprint}"


class ConfigMapNotificationLog:
    def __init__(
        self,
        api_client: client.ApiClient,
        *,
        namespace: str,
        name: str = "canarywatch-nflog",
        retention_s: float = 3600.0,
        max_entries: int = 5000,
        log: structlog.typing.FilteringBoundLogger | None = None,
    ) -> None:
        self._core = client.CoreV1Api(api_client)
        self.namespace = namespace
        self.name = name
        self._retention = timedelta(seconds=retention_s)
        self._max_entries = max_entries
        self._log = log or structlog.get_logger().bind(component="state.configmap")

    async def load(self) -> dict[str, datetime]:
        """Every entry still within retention (empty when the ConfigMap does not exist)."""
        obj = await self._read()
        return {} if obj is None else _entries(obj)

    async def record(
        self,
        receiver: str,
        status: NotificationStatus,
        fingerprints: Iterable[str],
        at: datetime,
    ) -> None:
        new = {entry_key(receiver, status, fp): at for fp in fingerprints}
        if not new:
            return
        for _ in range(MAX_CONFLICT_RETRIES):
            obj = await self._read()
            entries = {} if obj is None else _entries(obj)
            entries.update(new)
            body = self._body(entries, at)
            try:
                if obj is None:
                    await self._core.create_namespaced_config_map(
                        self.namespace,
                        client.V1ConfigMap(metadata=client.V1ObjectMeta(name=self.name), data=body),
                    )
                else:
                    obj.data = body
                    await self._core.replace_namespaced_config_map(self.name, self.namespace, obj)
            except client.ApiException as exc:
                if exc.status == 409:  # someone else wrote in between: re-read and merge
                    continue
                raise
            return
        self._log.warning("shared_log_conflicts", retries=MAX_CONFLICT_RETRIES)

    def _body(self, entries: Mapping[str, datetime], now: datetime) -> dict[str, str]:
        cutoff = now - self._retention
        kept = sorted(((k, v) for k, v in entries.items() if v >= cutoff), key=lambda kv: kv[1])[
            -self._max_entries :
        ]
        return {DATA_KEY: json.dumps({k: v.isoformat() for k, v in kept}, sort_keys=True)}

    async def _read(self) -> Any:
        """The ConfigMap (a kubernetes_asyncio ``V1ConfigMap``), or ``None`` if absent."""
        try:
            return await self._core.read_namespaced_config_map(self.name, self.namespace)
        except client.ApiException as exc:
            if exc.status == 404:
                return None
            raise


def _entries(obj: Any) -> dict[str, datetime]:
    data: Mapping[str, str] = obj.data or {}
    try:
        decoded = json.loads(data.get(DATA_KEY, "{}"))
        return {str(k): datetime.fromisoformat(str(v)) for k, v in decoded.items()}
    except (ValueError, AttributeError):
        return {}
