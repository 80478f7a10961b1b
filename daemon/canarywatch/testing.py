"""Test helpers shipped with the package, for our tests and for third-party sink authors.

- ``make_event`` / ``make_notification``: small, valid model objects with overridable fields.
- ``RecordingSink``: a sink that keeps what it was given and fails, hangs or blocks on cue.
- ``check_sink_contract``: the minimal checks every sink plugin should pass.
- ``run_in_virtual_time``: await something while moving a ``VirtualClock`` to each deadline.

No mocks: these are real implementations of the contracts, small enough to trust.
"""

from __future__ import annotations

import asyncio
import re
from collections import deque
from collections.abc import Awaitable, Iterable, Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, Final, TypeVar

import aiohttp
import structlog
from structlog.testing import capture_logs

from canarywatch.clock import Clock, VirtualClock
from canarywatch.model import (
    TRANSITIONS,
    CanaryEvent,
    CanaryRef,
    Notification,
    NotificationStatus,
    SourceName,
    Transition,
)
from canarywatch.sinks import (
    API_VERSION,
    BoundLogger,
    DeliveryError,
    DeliveryReason,
    Payload,
    Sink,
    SinkLoadError,
    inspect_abstract,
    notification_to_json,
    validate_sink_options,
)

T = TypeVar("T")

T0: Final = datetime(2025, 1, 2, 14, 8, 2, tzinfo=UTC)
"""The default timestamp of the factories: fixed, so renders are reproducible."""


def make_event(
    transition: Transition = Transition.ROLLED_BACK,
    *,
    canary: str = "test/podinfo",
    cluster: str = "",
    at: datetime = T0,
    **fields: Any,
) -> CanaryEvent:
    """A ``CanaryEvent`` with the transition's severity and the usual labels.

    ``canary`` is ``namespace/name``; any other ``CanaryEvent`` field can be given by keyword.
    """
    namespace, _, name = canary.partition("/")
    ref = CanaryRef(namespace, name, cluster)
    severity = TRANSITIONS[transition].severity
    labels = {
        "canary": str(ref),
        "namespace": namespace,
        "name": name,
        "transition": transition.value,
        "severity": severity.value,
    }
    if cluster:
        labels["cluster"] = cluster
    event = CanaryEvent(
        canary=ref,
        transition=transition,
        observed_at=at,
        sources=(SourceName.KUBERNETES_EVENTS,),
        severity=severity,
        labels=labels,
    )
    return replace(event, **fields) if fields else event


def make_notification(
    *events: CanaryEvent,
    receiver: str = "team-payments",
    status: NotificationStatus = NotificationStatus.FIRING,
    group_labels: Mapping[str, str] | None = None,
    group_key: str | None = None,
    created_at: datetime | None = None,
) -> Notification:
    """A ``Notification`` of ``events`` (default: one ``make_event()``), grouped by canary."""
    evs = events or (make_event(),)
    labels = dict(group_labels) if group_labels is not None else {"canary": str(evs[0].canary)}
    key = group_key
    if key is None:
        key = receiver + ":{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"
    return Notification(
        receiver=receiver,
        status=status,
        group_key=key,
        group_labels=labels,
        events=tuple(evs),
        created_at=created_at if created_at is not None else max(e.observed_at for e in evs),
    )


class _Hang:
    """Script step: the attempt never finishes (until the dispatcher's timeout cancels it)."""


HANG: Final = _Hang()


class RecordingSink(Sink):
    """A sink that records payloads and follows a script of failures.

    ``render`` returns ``notification_to_json(n)``. Each ``deliver`` call is one attempt: it
    takes the next scripted step (``fail_next``/``hang_next``; none left means succeed), then
    waits while ``pause()``d, then records the payload. With a ``clock`` it also records when
    each attempt started (``attempted_at``), so tests can assert backoff delays.

    Unlike real sinks it needs no ``http`` session; pass one or not.
    """

    supports_resolve: ClassVar[bool] = True

    def __init__(
        self,
        name: str = "recording",
        options: Mapping[str, object] | None = None,
        *,
        http: aiohttp.ClientSession | None = None,
        log: BoundLogger | None = None,
        clock: Clock | None = None,
    ) -> None:
        # Deliberately not Sink.__init__: that one requires a session this sink never uses.
        self.name = name
        self.log = log if log is not None else structlog.get_logger()
        self.clock = clock
        self.payloads: list[Payload] = []
        self.attempts = 0
        self.attempted_at: list[datetime] = []
        self.checked = False
        self.closed = False
        self._script: deque[DeliveryError | _Hang] = deque()
        self._open = asyncio.Event()
        self._open.set()
        self._changed = asyncio.Condition()

    def fail_next(self, n: int = 1, error: DeliveryError | None = None) -> None:
        """Make the next ``n`` attempts raise ``error`` (default: a retryable HTTP 503)."""
        err = error or DeliveryError(DeliveryReason.HTTP_5XX, retryable=True, status_code=503)
        self._script.extend([err] * n)

    def hang_next(self, n: int = 1) -> None:
        """Make the next ``n`` attempts hang until cancelled (exercises per-attempt timeouts)."""
        self._script.extend([HANG] * n)

    def pause(self) -> None:
        """Block every attempt (after its scripted step) until ``resume()``."""
        self._open.clear()

    def resume(self) -> None:
        self._open.set()

    def render(self, n: Notification) -> Payload:
        return notification_to_json(n)

    async def deliver(self, payload: Payload) -> None:
        self.attempts += 1
        if self.clock is not None:
            self.attempted_at.append(self.clock.now())
        async with self._changed:
            self._changed.notify_all()
        step = self._script.popleft() if self._script else None
        if isinstance(step, _Hang):
            await asyncio.Event().wait()
        elif step is not None:
            raise step
        await self._open.wait()
        self.payloads.append(payload)
        async with self._changed:
            self._changed.notify_all()

    async def wait_for(self, count: int) -> list[Payload]:
        """Wait until at least ``count`` payloads were delivered (bound it with a timeout)."""
        async with self._changed:
            await self._changed.wait_for(lambda: len(self.payloads) >= count)
        return self.payloads

    async def wait_for_attempts(self, count: int) -> None:
        """Wait until ``deliver`` was entered at least ``count`` times."""
        async with self._changed:
            await self._changed.wait_for(lambda: self.attempts >= count)

    async def check(self) -> None:
        self.checked = True

    async def aclose(self) -> None:
        self.closed = True


async def run_in_virtual_time(
    clock: VirtualClock, aw: Awaitable[T], *, max_steps: int = 100_000
) -> T:
    """Await ``aw``, advancing ``clock`` to the next ``sleep_until`` deadline whenever the loop
    has nothing else to do. Real waits (I/O, ``asyncio.timeout``) still take real time."""
    task = asyncio.ensure_future(aw)
    for _ in range(max_steps):
        if task.done():
            return task.result()
        await asyncio.sleep(0)
        if task.done():
            return task.result()
        wakeup = clock.next_wakeup()
        if wakeup is not None:
            clock.advance_to(wakeup)
        else:
            await asyncio.sleep(0.001)
    task.cancel()
    raise TimeoutError(f"not done after {max_steps} steps")


# --- the sink contract check -------------------------------------------------------------------

_SECRET_KEY = re.compile(r"token|secret|password|authorization|webhook_url|url", re.IGNORECASE)


class SinkContractError(AssertionError):
    """``check_sink_contract`` found problems; the message lists each."""


def _secret_values(options: Mapping[str, object], extra: Iterable[str]) -> list[str]:
    found = [s for s in extra if s]
    for key, value in options.items():
        reveal = getattr(value, "reveal", None)
        if callable(reveal):
            revealed = reveal()
            if isinstance(revealed, str) and revealed:
                found.append(revealed)
        elif isinstance(value, str) and value and _SECRET_KEY.search(key):
            found.append(value)
    return found


def contract_notifications() -> list[Notification]:
    """One firing and one resolved notification per ``Transition``, with awkward text."""
    out: list[Notification] = []
    for i, transition in enumerate(Transition):
        ev = make_event(
            transition,
            at=T0 + timedelta(seconds=i),
            weight=30 if transition is Transition.WEIGHT_ADVANCED else None,
            failed_checks=5 if transition is Transition.ROLLED_BACK else None,
            message=f"podinfo.test {transition.value} \x1b[31m<!here> ünïcødé\n\u202etxt",
            reason="request-success-rate 88.5 < 99" if i % 2 else "",
            rollout="2",
        )
        for status in NotificationStatus:
            out.append(make_notification(ev, status=status))
    many = [make_event(t, at=T0 + timedelta(seconds=i)) for i, t in enumerate(Transition)]
    out.append(make_notification(*many))
    return out


async def check_sink_contract(
    sink_cls: type[Sink],
    options: Mapping[str, object],
    *,
    secrets: Iterable[str] = (),
    deliver: bool = False,
) -> list[Payload]:
    """Minimal contract checks for a sink class; raises ``SinkContractError`` listing problems.

    Checks: declared ``api_version`` and flags; options validate; ``render`` accepts a
    notification of every transition (firing and resolved) and is deterministic; secrets (the
    ``secrets`` given, ``Secret`` option values, and string options whose key looks secret)
    never appear in ``repr(sink)``, in captured log events, or (with ``deliver=True``, which
    makes one real attempt: point the sink somewhere that fails) in ``str(DeliveryError)``.
    Returns the rendered payloads.
    """
    problems: list[str] = []
    if sink_cls.api_version != API_VERSION:
        problems.append(f"api_version is {sink_cls.api_version!r}, expected {API_VERSION}")
    for flag in ("supports_edit", "supports_threads", "supports_resolve"):
        if not isinstance(getattr(sink_cls, flag, None), bool):
            problems.append(f"{flag} must be a bool")
    if missing := inspect_abstract(sink_cls):
        raise SinkContractError(f"abstract methods not implemented: {missing}")
    try:
        validate_sink_options(sink_cls, options)
    except SinkLoadError as exc:
        problems.append(f"options rejected: {exc}")
    hidden = _secret_values(options, secrets)
    rendered: list[Payload] = []
    errors: list[DeliveryError] = []

    with capture_logs() as logs:
        async with aiohttp.ClientSession() as http:
            sink = sink_cls("contract", options, http=http, log=structlog.get_logger())
            try:
                for n in contract_notifications():
                    try:
                        first = sink.render(n)
                        second = sink.render(n)
                    except Exception as exc:  # noqa: BLE001 - reported, not raised
                        problems.append(f"render raised {exc!r} for {n.events[0].transition}")
                        continue
                    if first != second:
                        problems.append(f"render not deterministic for {n.events[0].transition}")
                    rendered.append(first)
                if deliver and rendered:
                    try:
                        async with asyncio.timeout(10):
                            await sink.deliver(rendered[0])
                    except DeliveryError as exc:
                        errors.append(exc)
                for secret in hidden:
                    if secret in repr(sink):
                        problems.append("a secret appears in repr(sink)")
            finally:
                await sink.aclose()

    for secret in hidden:
        if any(secret in repr(entry) for entry in logs):
            problems.append("a secret appears in a log event")
        if any(secret in str(e) or secret in repr(e) for e in errors):
            problems.append("a secret appears in a DeliveryError")
    if problems:
        raise SinkContractError("; ".join(dict.fromkeys(problems)))
    return rendered
