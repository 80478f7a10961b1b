"""Config sections of the process itself: ``server`` (its HTTP listener), ``log`` and ``state``
(where it keeps what must survive a restart).
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, Field

from canarywatch.config.fields import SECTION, Duration, SecretField


class StateSettings(BaseModel):
    """Where and for how long the daemon keeps what must survive a restart."""

    model_config = SECTION

    dir: Path = Field(
        default=Path("state"),
        description="Directory of the state database; relative to the working directory.",
        json_schema_extra={"doc_default": "./state"},
    )
    retention: Duration = Field(
        default=120 * 3600.0,
        gt=0,
        description="How long the notification log and resolved conditions are kept.",
        json_schema_extra={"doc_default": "120h"},
    )
    max_held_notifications: int = Field(
        default=1000,
        ge=1,
        description=(
            "While the state store cannot be written (disk full, read-only, I/O error): "
            "notifications held in memory until it can; past this the oldest is dropped "
            "(counted in `canarywatch_events_dropped_total`)."
        ),
    )
    write_retry_max: Duration = Field(
        default=30.0,
        gt=0,
        description=(
            "While the state store cannot be written: the longest wait between attempts to "
            "write what is held (the wait doubles from 0.5s up to this)."
        ),
        json_schema_extra={"doc_default": "30s"},
    )


def split_host_port(listen: str) -> tuple[str, int]:
    """``"127.0.0.1:9797"`` / ``"[::1]:9797"`` / ``":9797"`` -> host, port."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"listen must be HOST:PORT, e.g. 127.0.0.1:9797, not {listen!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _listen(value: str) -> str:
    split_host_port(value)
    return value


class ServerSettings(BaseModel):
    """The HTTP listener: Flagger webhooks, ``/metrics``, ``/healthz``, ``/readyz``."""

    model_config = SECTION

    listen: Annotated[str, AfterValidator(_listen)] = Field(
        default="127.0.0.1:9797",
        description="HOST:PORT to listen on; a non-loopback address requires `token`.",
    )
    token: SecretField | None = Field(
        default=None,
        description="Bearer token required on the webhook endpoint: `{env: ...}`/`{file: ...}`.",
    )

    @property
    def host(self) -> str:
        return split_host_port(self.listen)[0]

    @property
    def port(self) -> int:
        return split_host_port(self.listen)[1]

    @property
    def loopback(self) -> bool:
        return is_loopback(self.host)


class LogSettings(BaseModel):
    """The daemon's own log (stderr or a file; never stdout)."""

    model_config = SECTION

    level: Literal["debug", "info", "warning", "error"] = Field(
        default="info", description="Minimum level logged."
    )
    format: Literal["auto", "json", "console"] = Field(
        default="auto",
        description="`json` (journald), `console` (human), `auto`: console on a TTY, else json.",
    )
    file: Path | None = Field(
        default=None,
        description="Append the log to this file instead of stderr (stdout is never used: it "
        "carries the console sink's notifications).",
    )
