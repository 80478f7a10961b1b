"""``console``: a human-readable block per notification on stdout or stderr.

Meant for ``canarywatch demo``, local runs and ``tail``-style debugging. One header line per
notification, then one aligned line per event::

    ── 2025-01-02T14:08:02Z  team-payments  FIRING  canary=test/podinfo
    14:05:00  INFO      test/podinfo  weight-advanced  rollout 2  ▰▰▰▱▱▱▱▱▱▱ 30%
    14:08:02  CRITICAL  test/podinfo  rolled-back      rollout 2  failed_checks=5  "Rolling back…"

Event text comes from the cluster (messages, names, labels) and is untrusted: escape sequences
and control characters are stripped so nobody can repaint the operator's terminal.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import ClassVar, Literal, TextIO

import pydantic

from canarywatch.model import CanaryEvent, Notification, NotificationStatus, Severity, Transition
from canarywatch.sinks import (
    DeliveryError,
    DeliveryReason,
    Payload,
    clean_text,
    format_time,
    weight_bar,
)
from canarywatch_sinks.base import BuiltinSink

_RESET = "\x1b[0m"
_BOLD = "\x1b[1m"
_DIM = "\x1b[2m"
_SEVERITY_STYLE: Mapping[Severity, str] = {
    Severity.CRITICAL: "\x1b[1;31m",
    Severity.WARNING: "\x1b[33m",
    Severity.INFO: "\x1b[36m",
}
_STATUS_STYLE: Mapping[NotificationStatus, str] = {
    NotificationStatus.FIRING: "\x1b[1;31m",
    NotificationStatus.RESOLVED: "\x1b[1;32m",
}
_SEVERITY_WIDTH = max(len(s.value) for s in Severity)
_MESSAGE_MAX = 500


class ConsoleOptions(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    stream: Literal["stdout", "stderr"] = "stdout"
    color: Literal["auto", "always", "never"] = "auto"
    """``auto``: colour when the stream is a terminal and ``NO_COLOR`` is not set."""


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


class ConsoleSink(BuiltinSink[ConsoleOptions]):
    """Prints notifications for humans; never fails except on a closed stream."""

    supports_resolve: ClassVar[bool] = True
    options_model: ClassVar[type[pydantic.BaseModel] | None] = ConsoleOptions
    prints_notifications = True
    """The notification on the terminal is the record: dispatch logs its delivery at debug."""

    def _setup(self) -> None:
        if self._options.color == "auto":
            stream = self._stream()
            self._color = stream.isatty() and not os.environ.get("NO_COLOR")
        else:
            self._color = self._options.color == "always"

    def _stream(self) -> TextIO:
        # Looked up on each use, so redirections made after start-up (tests, `tail`) apply.
        return sys.stderr if self._options.stream == "stderr" else sys.stdout

    def _style(self, style: str, text: str) -> str:
        return f"{style}{text}{_RESET}" if self._color and text else text

    def render(self, n: Notification) -> str:
        """The whole block as text, ending in a newline.

        A firing notification with one event is one line (the common case: the default
        policy sends each transition on its own); anything else gets a header line with the
        receiver, status and group labels above its event lines.
        """
        if len(n.events) == 1 and n.status is NotificationStatus.FIRING:
            (ev,) = n.events
            canary = self._canary(ev)
            receiver = self._style(_DIM, f"[{clean_text(n.receiver)}]")
            line = self._event_line(ev, canary, len(canary), len(ev.transition.value))
            return f"{line}  {receiver}\n"
        status = n.status.value.upper()
        header = [
            self._style(_DIM, "──"),
            format_time(n.created_at),
            clean_text(n.receiver),
            self._style(_STATUS_STYLE.get(n.status, _BOLD), status),
        ]
        group = " ".join(
            f"{clean_text(k)}={clean_text(v)}" for k, v in sorted(n.group_labels.items())
        )
        if group:
            header.append(group)
        lines = ["  ".join(header)]
        canaries = [self._canary(ev) for ev in n.events]
        canary_width = max((len(c) for c in canaries), default=0)
        transition_width = max((len(ev.transition.value) for ev in n.events), default=0)
        for ev, canary in zip(n.events, canaries, strict=True):
            lines.append(self._event_line(ev, canary, canary_width, transition_width))
        return "\n".join(lines) + "\n"

    @staticmethod
    def _canary(ev: CanaryEvent) -> str:
        ref = f"{clean_text(ev.canary.namespace)}/{clean_text(ev.canary.name)}"
        cluster = clean_text(ev.canary.cluster)
        return f"{cluster}:{ref}" if cluster else ref

    def _event_line(
        self, ev: CanaryEvent, canary: str, canary_width: int, transition_width: int
    ) -> str:
        at = format_time(ev.observed_at)[11:19]
        severity = ev.severity.value.upper().ljust(_SEVERITY_WIDTH)
        parts = [
            at,
            self._style(_SEVERITY_STYLE.get(ev.severity, ""), severity),
            canary.ljust(canary_width),
            self._style(_BOLD, ev.transition.value.ljust(transition_width)),
        ]
        if ev.rollout:
            parts.append(f"rollout {clean_text(ev.rollout)}")
        if ev.transition is Transition.WEIGHT_ADVANCED and ev.weight is not None:
            parts.append(weight_bar(ev.weight))
        facts = []
        if ev.reason:
            facts.append(f"reason={clean_text(ev.reason, max_len=120)}")
        if ev.failed_checks is not None:
            facts.append(f"failed_checks={ev.failed_checks}")
        if ev.detail and ev.transition is not Transition.WEIGHT_ADVANCED:
            facts.append(f"detail={clean_text(ev.detail, max_len=60)}")
        if facts:
            parts.append(" ".join(facts))
        message = clean_text(ev.message, max_len=_MESSAGE_MAX)
        if message:
            parts.append(self._style(_DIM, _quote(message)))
        return "  ".join(parts).rstrip()

    async def deliver(self, payload: Payload) -> None:
        if not isinstance(payload, str):
            raise DeliveryError(DeliveryReason.INVALID_PAYLOAD, retryable=False)
        stream = self._stream()
        try:
            stream.write(payload)
            stream.flush()
        except (OSError, ValueError) as exc:  # closed pipe or stream
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else "closed"
            raise DeliveryError(
                DeliveryReason.CONNECTION,
                retryable=False,
                detail=f"cannot write to {self._options.stream}: {why.lower()}",
            ) from exc
