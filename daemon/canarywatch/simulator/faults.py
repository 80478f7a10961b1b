"""Fault injection: a plan of rules the server consults once per request.

A rule is "when a request matches, do this, ``times`` times (``None``: forever), with
``probability``". Rules are tried in the order they were added; the first that fires wins.
Request faults answer instead of the real handler (a Status, a proxy's HTML page, a connection
closed before any response); ``delay`` only slows the real answer down. Stream faults apply to
watches: the stream is opened normally and misbehaves after ``after_events`` lines.

    api.faults.status(429, retry_after=2, verb="list", resource="events", times=1)
    api.faults.stream(StreamAction.ERROR, after_events=3, code=410)
    api.faults.random(0.2, codes=(500, 503), seed=7)

Randomness comes from one seeded ``random.Random``, so a fuzzing run can be replayed.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass, field

_REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    409: "Conflict",
    410: "Expired",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}
_MESSAGES = {
    401: "Unauthorized",
    403: 'events is forbidden: User "system:serviceaccount:flagger:canarywatch" cannot list '
    'resource "events" in API group "" at the cluster scope',
    404: "the server could not find the requested resource",
    409: "the object has been modified; please apply your changes to the latest version and "
    "try again",
    410: "too old resource version",
    422: "the request is invalid",
    429: "Too many requests, please try again later.",
    500: "Internal error occurred: injected fault",
    503: "the server is currently unable to handle the request",
    504: "Timeout: request did not complete within the allotted timeout",
}


def reason_for(code: int) -> str:
    """The Status ``reason`` the apiserver uses for an HTTP code."""
    return _REASONS.get(code, "InternalError" if code >= 500 else "BadRequest")


@dataclass(frozen=True, slots=True)
class RequestInfo:
    """What a rule can match on. ``verb`` is the apiserver's: get, list, watch, create, update,
    patch, delete."""

    verb: str
    resource: str
    namespace: str | None
    name: str | None
    path: str


class StreamAction(enum.StrEnum):
    ERROR = "error"
    """Send one ``ERROR`` event carrying a Status, then end the stream."""
    DROP = "drop"
    """Abort the TCP connection mid-stream (the client sees a payload error)."""
    TRUNCATE = "truncate"
    """Write half of the next JSON line, then end the body."""
    SILENT = "silent"
    """Keep the connection open and send nothing more, not even the end (half-open peer)."""
    CLOSE = "close"
    """End the body cleanly right away (accept-then-close when ``after_events=0``)."""


@dataclass(frozen=True, slots=True)
class StatusFault:
    code: int
    reason: str
    message: str
    retry_after: float | None = None


@dataclass(frozen=True, slots=True)
class RawFault:
    """A non-JSON body, e.g. the HTML error page of a proxy in front of the apiserver."""

    code: int
    body: str
    content_type: str = "text/html"


@dataclass(frozen=True, slots=True)
class DisconnectFault:
    """Close the connection without sending any response."""


@dataclass(frozen=True, slots=True)
class DelayFault:
    seconds: float


@dataclass(frozen=True, slots=True)
class StreamFault:
    action: StreamAction
    after_events: int = 0
    code: int = 500
    message: str = ""


Fault = StatusFault | RawFault | DisconnectFault | DelayFault | StreamFault


@dataclass(slots=True)
class FaultRule:
    """One programmed fault; ``fired`` counts how often it was applied."""

    fault: Fault
    verb: str | None = None
    resource: str | None = None
    namespace: str | None = None
    name: str | None = None
    times: int | None = 1
    probability: float = 1.0
    fired: int = 0
    choices: tuple[Fault, ...] = field(default=())
    """For random rules: pick one of these each time instead of ``fault``."""

    def matches(self, info: RequestInfo) -> bool:
        if self.times is not None and self.fired >= self.times:
            return False
        return (
            (self.verb is None or self.verb == info.verb)
            and (self.resource is None or self.resource == info.resource)
            and (self.namespace is None or self.namespace == info.namespace)
            and (self.name is None or self.name == info.name)
        )


class FaultPlan:
    """The rules, consulted by the server via ``take`` for every request."""

    def __init__(self, seed: int = 0) -> None:
        self._rng = random.Random(seed)  # noqa: S311 - seeded so fault runs replay, not security
        self.rules: list[FaultRule] = []

    def clear(self) -> None:
        self.rules.clear()

    def add(self, rule: FaultRule) -> FaultRule:
        self.rules.append(rule)
        return rule

    def take(self, info: RequestInfo) -> Fault | None:
        """The fault to apply to this request, if any (consumes one use of the rule).

        Stream faults are only offered to watches and never to anything else."""
        for rule in self.rules:
            if not rule.matches(info):
                continue
            if isinstance(rule.fault, StreamFault) and info.verb != "watch":
                continue
            if rule.probability < 1.0 and self._rng.random() >= rule.probability:
                continue
            rule.fired += 1
            return self._rng.choice(rule.choices) if rule.choices else rule.fault
        return None

    # -- convenience builders ------------------------------------------------------------

    def status(
        self,
        code: int,
        *,
        message: str | None = None,
        reason: str | None = None,
        retry_after: float | None = None,
        verb: str | None = None,
        resource: str | None = None,
        namespace: str | None = None,
        name: str | None = None,
        times: int | None = 1,
    ) -> FaultRule:
        """Answer with HTTP ``code`` and a Status body (429 adds ``Retry-After``)."""
        if code == 429 and retry_after is None:
            retry_after = 1
        fault = StatusFault(
            code,
            reason or reason_for(code),
            message or _MESSAGES.get(code, f"injected HTTP {code}"),
            retry_after,
        )
        return self.add(FaultRule(fault, verb, resource, namespace, name, times))

    def raw(
        self,
        code: int = 502,
        body: str = "<html><body><h1>502 Bad Gateway</h1></body></html>",
        *,
        content_type: str = "text/html",
        verb: str | None = None,
        resource: str | None = None,
        times: int | None = 1,
    ) -> FaultRule:
        """Answer with a non-JSON body, as a proxy or load balancer would."""
        return self.add(FaultRule(RawFault(code, body, content_type), verb, resource, times=times))

    def disconnect(
        self, *, verb: str | None = None, resource: str | None = None, times: int | None = 1
    ) -> FaultRule:
        """Close the connection before any response is sent."""
        return self.add(FaultRule(DisconnectFault(), verb, resource, times=times))

    def delay(
        self,
        seconds: float,
        *,
        verb: str | None = None,
        resource: str | None = None,
        times: int | None = 1,
    ) -> FaultRule:
        """Answer normally, but only after ``seconds``."""
        return self.add(FaultRule(DelayFault(seconds), verb, resource, times=times))

    def stream(
        self,
        action: StreamAction,
        *,
        after_events: int = 0,
        code: int = 500,
        message: str = "",
        resource: str | None = None,
        namespace: str | None = None,
        times: int | None = 1,
    ) -> FaultRule:
        """Make the next matching watch stream misbehave after ``after_events`` lines."""
        return self.add(
            FaultRule(
                StreamFault(action, after_events, code, message),
                "watch",
                resource,
                namespace,
                times=times,
            )
        )

    def random(
        self,
        probability: float,
        *,
        codes: tuple[int, ...] = (500, 503, 504),
        verb: str | None = None,
        resource: str | None = None,
        times: int | None = None,
        seed: int | None = None,
    ) -> FaultRule:
        """Fail matching requests with ``probability`` using one of ``codes`` at random."""
        if seed is not None:
            self._rng.seed(seed)
        choices = tuple(
            StatusFault(c, reason_for(c), _MESSAGES.get(c, f"injected HTTP {c}")) for c in codes
        )
        return self.add(
            FaultRule(
                choices[0],
                verb,
                resource,
                times=times,
                probability=probability,
                choices=choices,
            )
        )
