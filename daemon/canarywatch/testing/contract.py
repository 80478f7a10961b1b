"""The contract-test kit for sink plugins (see ``docs/writing-a-sink-plugin.md``).

Render purity over every transition, escaping fuzz with hostile text, HTTP status mapping
against a local server, and secret leaks. ``SinkContract`` runs each check separately (one
pytest test per check reads well in a third-party plugin's suite); ``check_sink_contract`` runs
them all at once. Every problem is collected and reported together in one
``SinkContractError``, so a failing run says everything that is wrong rather than the first
thing.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, MutableMapping
from dataclasses import dataclass, field, replace
from datetime import timedelta
from types import MappingProxyType
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import structlog
from aiohttp import web
from structlog.testing import capture_logs

from canarywatch.model import CanaryEvent, Notification, NotificationStatus, Transition
from canarywatch.secrets import Secret
from canarywatch.sinks import (
    API_VERSION,
    DeliveryError,
    DeliveryReason,
    Payload,
    Sink,
    SinkLoadError,
    inspect_abstract,
    validate_sink_options,
)
from canarywatch.sinks.text import secret_values
from canarywatch.testing.factories import T0, make_event, make_notification

__all__ = [
    "HOSTILE_STRINGS",
    "HTTP_EXPECTATIONS",
    "MENTION_TOKENS",
    "RETRY_AFTER_S",
    "HttpExpectation",
    "SinkContract",
    "SinkContractError",
    "check_sink_contract",
    "contract_notifications",
    "hostile_notifications",
    "payload_strings",
]

_SECRET_KEY = re.compile(r"token|secret|password|authorization|webhook_url|url", re.IGNORECASE)

MENTION_TOKENS: Final[tuple[str, ...]] = (
    "<!channel>",
    "<!here>",
    "@everyone",
    "@here",
    "<@U123>",
    "<http://evil|x>",
)
"""Raw mention/link tokens (the first of ``HOSTILE_STRINGS``); pick the ones live in your
service's markup as ``forbidden_in_payload`` (Slack: the ``<...>`` ones; Discord: all of them)."""

HOSTILE_STRINGS: Final[tuple[str, ...]] = (
    *MENTION_TOKENS,
    "&amp;",
    "&lt;b&gt; <b>bold</b>",
    "\x1b[31mred\x1b[0m \x1b]0;title\x07",
    "\u202eevil\u202c right-to-left",
    "emoji 🚀 👩\u200d💻 🇪🇺 e\u0301",
    "*bold* _it_ ~strike~ `code` [x](http://evil) ||spoiler|| # heading",
    'quote " back\\slash \x00 nul \x07 bell',
    "line\nbreak\r\ncr\ttab",
    "{canary} {namespace} %s %(x)s {{ .Values }}",
    "x" * 10_000,
)
"""Untrusted text the escaping fuzz puts into every free-text field of an event."""


class SinkContractError(AssertionError):
    """``check_sink_contract`` found problems; the message lists each."""


@dataclass(frozen=True, slots=True)
class HttpExpectation:
    """What ``deliver`` must do when the endpoint answers one HTTP status."""

    ok: bool
    """``deliver`` returns (no error)."""
    reasons: frozenset[DeliveryReason] = frozenset()
    """Acceptable ``DeliveryError.reason`` values when not ``ok``."""
    retryable: bool | None = None
    retry_after_s: float | None = None
    """Required ``DeliveryError.retry_after_s`` (the kit's 429 sends ``Retry-After: 7``)."""

    @classmethod
    def success(cls) -> HttpExpectation:
        return cls(ok=True)

    @classmethod
    def failure(
        cls, *reasons: DeliveryReason, retryable: bool, retry_after_s: float | None = None
    ) -> HttpExpectation:
        return cls(
            ok=False, reasons=frozenset(reasons), retryable=retryable, retry_after_s=retry_after_s
        )

    def describe(self) -> str:
        if self.ok:
            return "success"
        reasons = "/".join(sorted(r.value for r in self.reasons))
        text = f"{reasons}, {'retryable' if self.retryable else 'not retryable'}"
        if self.retry_after_s is not None:
            text += f", retry_after_s={self.retry_after_s:g}"
        return text


RETRY_AFTER_S: Final = 7
"""The ``Retry-After`` the kit's local server sends with its 429."""

HTTP_EXPECTATIONS: Final[Mapping[int, HttpExpectation]] = MappingProxyType(
    {
        200: HttpExpectation.success(),
        204: HttpExpectation.success(),
        400: HttpExpectation.failure(
            DeliveryReason.HTTP_4XX, DeliveryReason.INVALID_PAYLOAD, retryable=False
        ),
        401: HttpExpectation.failure(DeliveryReason.HTTP_4XX, retryable=False),
        404: HttpExpectation.failure(DeliveryReason.HTTP_4XX, retryable=False),
        429: HttpExpectation.failure(
            DeliveryReason.RATE_LIMITED, retryable=True, retry_after_s=RETRY_AFTER_S
        ),
        500: HttpExpectation.failure(DeliveryReason.HTTP_5XX, retryable=True),
        503: HttpExpectation.failure(DeliveryReason.HTTP_5XX, retryable=True),
    }
)
"""The default mapping ``check_http_outcomes`` asserts (``classify_http``'s, with 400 also
allowed to be ``invalid_payload``). Override single statuses with ``http_expectations=``."""


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


def hostile_notifications(strings: Iterable[str] = HOSTILE_STRINGS) -> list[Notification]:
    """Firing and resolved notifications carrying each hostile string in every free-text field
    (message, reason, detail, target, a label, a group label, the canary's name), plus one that
    groups them all."""
    out: list[Notification] = []
    events: list[CanaryEvent] = []
    for i, text in enumerate(strings):
        transition = (Transition.ROLLED_BACK, Transition.WEIGHT_ADVANCED, Transition.HALTED)[i % 3]
        ev = make_event(
            transition,
            canary=f"test/{text}" if i % 2 else "test/podinfo",
            at=T0 + timedelta(seconds=i),
            weight=20 if transition is Transition.WEIGHT_ADVANCED else None,
            failed_checks=5 if transition is Transition.ROLLED_BACK else None,
            message=text,
            reason=text,
            detail=text,
            target=text,
            rollout=text if i % 3 == 0 else "1",
        )
        ev = replace(ev, labels={**ev.labels, "team": text})
        events.append(ev)
        for status in NotificationStatus:
            out.append(
                make_notification(
                    ev, status=status, group_labels={"canary": str(ev.canary), "team": text}
                )
            )
    if events:
        out.append(make_notification(*events, group_labels={"team": "many"}))
    return out


def payload_strings(payload: object) -> Iterator[str]:
    """Every string in a payload: the text itself, or each JSON key and string value."""
    if isinstance(payload, str):
        yield payload
    elif isinstance(payload, bytes | bytearray):
        yield bytes(payload).decode("utf-8", errors="replace")
    elif isinstance(payload, Mapping):
        for key, value in payload.items():
            yield from payload_strings(key)
            yield from payload_strings(value)
    elif isinstance(payload, list | tuple):
        for value in payload:
            yield from payload_strings(value)


def _swap_host(value: object, base_url: str) -> object | None:
    """``value`` (a URL string or a ``Secret`` of one) pointing at ``base_url`` instead, keeping
    its path and query (validators often check them); ``None`` when it is not a URL."""
    reveal = getattr(value, "reveal", None)
    raw = reveal() if callable(reveal) else value
    if not isinstance(raw, str):
        return None
    parts = urlsplit(raw)
    if not parts.scheme or not parts.netloc:
        return None
    base = urlsplit(base_url)
    swapped = urlunsplit((base.scheme, base.netloc, parts.path, parts.query, parts.fragment))
    return Secret(swapped) if callable(reveal) else swapped


@dataclass(slots=True)
class _Run:
    """What one run of checks saw; leak checks look at all of it at the end."""

    problems: list[str] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)
    reprs: list[str] = field(default_factory=list)
    hidden: list[str] = field(default_factory=list)
    payloads: list[Payload] = field(default_factory=list)
    outcomes: dict[int, DeliveryError | None] = field(default_factory=dict)


class _StatusServer:
    """A local HTTP endpoint answering every request with ``status`` (429 with Retry-After)."""

    def __init__(self) -> None:
        self.status = 200
        self.requests = 0
        self._runner: web.AppRunner | None = None
        self.base_url = ""

    async def _handle(self, request: web.Request) -> web.Response:
        await request.read()
        self.requests += 1
        status = self.status
        if status == 204:
            return web.Response(status=204)
        body: dict[str, object] = {"ok": 200 <= status < 300, "error": "contract_kit"}
        headers: dict[str, str] = {}
        if status == 429:
            headers["Retry-After"] = str(RETRY_AFTER_S)
            body["retry_after"] = RETRY_AFTER_S
        return web.json_response(body, status=status, headers=headers)

    async def __aenter__(self) -> _StatusServer:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = int(self._runner.addresses[0][1])
        self.base_url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


class SinkContract:
    """The contract-test kit for a sink class: run from pytest, one check per test if you like.

    ``options`` must validate (point URLs at a closed local port or a local server: nothing here
    needs the real service). ``secrets`` are extra values that must never leak; ``Secret``
    values and string options whose key looks secret (``token``, ``url``, ...) are added
    automatically. ``forbidden_in_payload`` (opt-in, for chat sinks) lists raw tokens, such as
    ``MENTION_TOKENS``, that must not appear in any string of a payload rendered from hostile
    text; ``wire_strings`` picks the strings that go on the wire (default: every key and string
    value, ``payload_strings``), for payloads that also carry bookkeeping for ``deliver``.
    ``url_option`` names the string (or ``Secret``) option holding the endpoint URL;
    ``check_http_outcomes`` points it at a local server (keeping path and query) and needs it.
    ``http_expectations`` overrides single entries of ``HTTP_EXPECTATIONS``.

    Each ``check_*`` raises ``SinkContractError`` listing every problem it found, and checks
    for leaks (``repr(sink)``, ``str``/``repr`` of ``DeliveryError``s, captured structlog
    events) over what it ran.
    """

    def __init__(
        self,
        sink_cls: type[Sink],
        options: Mapping[str, object],
        *,
        secrets: Iterable[str] = (),
        forbidden_in_payload: Iterable[str] = (),
        url_option: str | None = None,
        http_expectations: Mapping[int, HttpExpectation] | None = None,
        wire_strings: Callable[[Payload], Iterable[str]] = payload_strings,
        timeout_s: float = 10.0,
    ) -> None:
        self.sink_cls = sink_cls
        self.options = dict(options)
        self.secrets = tuple(secrets)
        self.forbidden_in_payload = tuple(t for t in forbidden_in_payload if t)
        self.url_option = url_option
        self.http_expectations: Mapping[int, HttpExpectation] = {
            **HTTP_EXPECTATIONS,
            **(http_expectations or {}),
        }
        self.wire_strings = wire_strings
        self.timeout_s = timeout_s

    # --- public checks -------------------------------------------------------------------------

    def check_declaration(self) -> None:
        """``api_version``, the capability flags, abstract methods, and that options validate."""
        problems = self._declaration()
        if problems:
            raise SinkContractError("; ".join(dict.fromkeys(problems)))

    async def check_render(self) -> list[Payload]:
        """Every transition renders (firing; resolved too when ``supports_resolve``), without
        raising and purely: twice on one instance and on a fresh one in reverse order, the same.
        Returns the payloads."""
        run = await self._run(self._render_phase)
        return run.payloads

    async def check_escaping(self) -> list[Payload]:
        """``hostile_notifications()`` render without raising, deterministically, and without any
        ``forbidden_in_payload`` token in a payload string. Returns the payloads."""
        run = await self._run(self._escaping_phase)
        return run.payloads

    async def check_http_outcomes(self) -> dict[int, DeliveryError | None]:
        """For each status of ``http_expectations``, a fresh sink delivers one rolled-back
        notification to a local server answering that status; ``deliver`` must return or raise
        the expected ``DeliveryError``. Returns what each status produced."""
        run = await self._run(self._http_phase)
        return run.outcomes

    async def check_secrets(self, *, deliver: bool = False) -> None:
        """Render everything (and with ``deliver=True`` make one real attempt with the given
        options) and check no secret reaches ``repr(sink)``, an error or a log event."""
        phases = [self._render_phase]
        if deliver:
            phases.append(self._deliver_phase)
        await self._run(*phases)

    async def check_all(self, *, deliver: bool = False) -> list[Payload]:
        """Every check above (HTTP outcomes only with ``url_option``); returns the payloads of
        ``check_render``."""
        phases = [self._render_phase, self._escaping_phase]
        if deliver:
            phases.append(self._deliver_phase)
        if self.url_option is not None:
            phases.append(self._http_phase)
        run = await self._run(*phases, keep_payloads_of=self._render_phase)
        return run.payloads

    # --- machinery -----------------------------------------------------------------------------

    def _declaration(self) -> list[str]:
        cls = self.sink_cls
        if missing := inspect_abstract(cls):
            raise SinkContractError(f"abstract methods not implemented: {missing}")
        problems: list[str] = []
        if cls.api_version != API_VERSION:
            problems.append(f"api_version is {cls.api_version!r}, expected {API_VERSION}")
        for flag in ("supports_edit", "supports_threads", "supports_resolve"):
            if not isinstance(getattr(cls, flag, None), bool):
                problems.append(f"{flag} must be a bool")
        try:
            validate_sink_options(cls, self.options)
        except SinkLoadError as exc:
            problems.append(f"options rejected: {exc}")
        return problems

    async def _run(
        self,
        *phases: Callable[[_Run, aiohttp.ClientSession], Awaitable[None]],
        keep_payloads_of: Callable[[_Run, aiohttp.ClientSession], Awaitable[None]] | None = None,
    ) -> _Run:
        problems = self._declaration()
        if any(p.startswith("options rejected") for p in problems):
            raise SinkContractError("; ".join(problems))
        hidden = [s for s in self.secrets if s] + secret_values(self.options, keys=_SECRET_KEY)
        run = _Run(problems=problems, hidden=hidden)
        kept: list[Payload] | None = None
        with capture_logs() as logs:
            async with aiohttp.ClientSession() as http:
                for phase in phases:
                    before = len(run.payloads)
                    await phase(run, http)
                    if phase == keep_payloads_of:
                        kept = run.payloads[before:]
        self._check_leaks(run, logs)
        if run.problems:
            raise SinkContractError("; ".join(dict.fromkeys(run.problems)))
        if kept is not None:
            run.payloads = kept
        return run

    def _check_leaks(self, run: _Run, logs: list[MutableMapping[str, Any]]) -> None:
        texts: list[tuple[str, str]] = [("repr(sink)", text) for text in run.reprs]
        for entry in logs:
            texts.append(("a log event", repr(entry)))
            texts.extend(("a log event", str(v)) for v in entry.values())
        for error in run.errors:
            where = "a DeliveryError" if isinstance(error, DeliveryError) else "an exception"
            chain: BaseException | None = error
            while chain is not None:
                texts.append((where, str(chain)))
                texts.append((where, repr(chain)))
                chain = chain.__cause__
        for secret in dict.fromkeys(run.hidden):
            for where, text in texts:
                if secret in text:
                    run.problems.append(f"a secret appears in {where}")

    def _build(self, http: aiohttp.ClientSession, options: Mapping[str, object]) -> Sink:
        sink = self.sink_cls(
            "contract", options, http=http, log=structlog.get_logger().bind(sink="contract")
        )
        return sink

    def _statuses(self) -> tuple[NotificationStatus, ...]:
        if self.sink_cls.supports_resolve:
            return tuple(NotificationStatus)
        return (NotificationStatus.FIRING,)

    async def _render_all(
        self,
        run: _Run,
        http: aiohttp.ClientSession,
        notifications: list[Notification],
        what: str,
    ) -> list[Payload]:
        """Render on one instance twice and on a fresh one in reverse; report differences."""
        rendered: list[Payload] = []
        first = self._build(http, self.options)
        fresh = self._build(http, self.options)
        try:
            run.reprs.append(repr(first))
            results: list[Payload | None] = []
            for n in notifications:
                label = f"{what} {n.events[0].transition if n.events else 'empty'} {n.status}"
                try:
                    one = first.render(n)
                    two = first.render(n)
                except Exception as exc:  # noqa: BLE001 - reported, not raised
                    run.problems.append(f"render raised {type(exc).__name__} for {label}")
                    run.errors.append(exc)
                    results.append(None)
                    continue
                if one != two:
                    run.problems.append(f"render not deterministic for {label}")
                results.append(one)
                rendered.append(one)
            for n, expected in reversed(list(zip(notifications, results, strict=True))):
                if expected is None:
                    continue
                try:
                    again = fresh.render(n)
                except Exception as exc:  # noqa: BLE001 - reported, not raised
                    run.problems.append(f"render raised {type(exc).__name__} on a fresh sink")
                    run.errors.append(exc)
                    continue
                if again != expected:
                    run.problems.append(
                        f"render not deterministic for {what} "
                        f"{n.events[0].transition if n.events else 'empty'} {n.status} "
                        "(a fresh sink rendering in another order differs: hidden state?)"
                    )
        finally:
            await first.aclose()
            await fresh.aclose()
        return rendered

    async def _render_phase(self, run: _Run, http: aiohttp.ClientSession) -> None:
        statuses = self._statuses()
        notifications = [n for n in contract_notifications() if n.status in statuses]
        run.payloads.extend(await self._render_all(run, http, notifications, "transition"))

    async def _escaping_phase(self, run: _Run, http: aiohttp.ClientSession) -> None:
        statuses = self._statuses()
        notifications = [n for n in hostile_notifications() if n.status in statuses]
        payloads = await self._render_all(run, http, notifications, "hostile text")
        for payload in payloads:
            for text in self.wire_strings(payload):
                for token in self.forbidden_in_payload:
                    if token in text:
                        run.problems.append(f"{token!r} appears unescaped in a rendered payload")
        run.payloads.extend(payloads)

    async def _deliver_phase(self, run: _Run, http: aiohttp.ClientSession) -> None:
        error = await self._attempt(run, http, self.options)
        if isinstance(error, DeliveryError):
            run.errors.append(error)
        elif isinstance(error, TimeoutError):
            run.problems.append(f"deliver did not finish within {self.timeout_s:g} s")
        elif error is not None:
            raise error

    async def _http_phase(self, run: _Run, http: aiohttp.ClientSession) -> None:
        key = self.url_option
        if key is None:
            run.problems.append("check_http_outcomes needs url_option")
            return
        async with _StatusServer() as server:
            swapped = _swap_host(self.options.get(key), server.base_url)
            if swapped is None:
                run.problems.append(f"url_option {key!r} is not a URL option of these options")
                return
            options = {**self.options, key: swapped}
            local = urlsplit(str(getattr(swapped, "reveal", lambda: swapped)()))
            run.hidden.append(local.geturl())
            path_and_query = local.path + (f"?{local.query}" if local.query else "")
            if len(path_and_query) >= 8:  # the credential part of a webhook URL
                run.hidden.append(path_and_query)
            try:
                validate_sink_options(self.sink_cls, options)
            except SinkLoadError as exc:
                run.problems.append(f"options rejected with {key} on a local http URL: {exc}")
                return
            for status in sorted(self.http_expectations):
                server.status = status
                seen = server.requests
                finished, error = await self._deliver_once(run, http, options, status)
                if server.requests == seen:
                    run.problems.append(f"HTTP {status}: deliver sent no request to {key}")
                elif finished:
                    self._judge(run, status, error)

    async def _deliver_once(
        self,
        run: _Run,
        http: aiohttp.ClientSession,
        options: Mapping[str, object],
        status: int,
    ) -> tuple[bool, DeliveryError | None]:
        """``(True, None)`` on success, ``(True, error)`` on a ``DeliveryError``, ``(False,
        None)`` after reporting another outcome (a timeout, another exception) as a problem."""
        error = await self._attempt(run, http, options)
        if error is None or isinstance(error, DeliveryError):
            if error is not None:
                run.errors.append(error)
            run.outcomes[status] = error
            return True, error
        if isinstance(error, TimeoutError):
            run.problems.append(f"HTTP {status}: deliver did not finish in {self.timeout_s:g} s")
            return False, None
        run.errors.append(error)
        run.problems.append(
            f"HTTP {status}: deliver raised {type(error).__name__} instead of DeliveryError"
        )
        return False, None

    async def _attempt(
        self, run: _Run, http: aiohttp.ClientSession, options: Mapping[str, object]
    ) -> Exception | None:
        """One real attempt: a fresh sink renders ``make_notification()`` and delivers it once,
        within ``timeout_s``. Returns what that raised (``TimeoutError`` when it took too long),
        ``None`` when it returned; the caller decides what is a problem. ``repr(sink)`` is kept
        before and after, and the sink is closed."""
        sink = self._build(http, options)
        run.reprs.append(repr(sink))
        try:
            payload = sink.render(make_notification())
            async with asyncio.timeout(self.timeout_s):
                await sink.deliver(payload)
        except Exception as exc:  # noqa: BLE001 - returned to the caller, which judges it
            return exc
        finally:
            run.reprs.append(repr(sink))
            await sink.aclose()
        return None

    def _judge(self, run: _Run, status: int, error: DeliveryError | None) -> None:
        expected = self.http_expectations[status]
        if error is None:
            if not expected.ok:
                run.problems.append(
                    f"HTTP {status}: deliver returned, expected {expected.describe()}"
                )
            return
        got = f"{error.reason.value}, {'retryable' if error.retryable else 'not retryable'}"
        if error.retry_after_s is not None:
            got += f", retry_after_s={error.retry_after_s:g}"
        wrong = (
            expected.ok
            or error.reason not in expected.reasons
            or (expected.retryable is not None and error.retryable != expected.retryable)
            or (
                expected.retry_after_s is not None
                and (
                    error.retry_after_s is None
                    or abs(error.retry_after_s - expected.retry_after_s) > 0.5
                )
            )
        )
        if wrong:
            run.problems.append(f"HTTP {status}: got {got}, expected {expected.describe()}")
        if error.status_code is not None and error.status_code != status:
            run.problems.append(f"HTTP {status}: DeliveryError.status_code is {error.status_code}")


async def check_sink_contract(
    sink_cls: type[Sink],
    options: Mapping[str, object],
    *,
    secrets: Iterable[str] = (),
    deliver: bool = False,
    forbidden_in_payload: Iterable[str] = (),
    url_option: str | None = None,
    http_expectations: Mapping[int, HttpExpectation] | None = None,
    wire_strings: Callable[[Payload], Iterable[str]] = payload_strings,
) -> list[Payload]:
    """The whole contract for a sink class; raises ``SinkContractError`` listing problems.

    Checks: declared ``api_version`` and flags; options validate; ``render`` accepts a
    notification of every transition (firing, and resolved when ``supports_resolve``) and is
    pure; hostile text (``HOSTILE_STRINGS``) renders without raising and, with
    ``forbidden_in_payload``, without those raw tokens in the payload; with ``url_option``, the
    HTTP statuses of ``HTTP_EXPECTATIONS`` (overridable per status) map to the right outcome;
    secrets (the ``secrets`` given, ``Secret`` option values, and string options whose key
    looks secret) never appear in ``repr(sink)``, in captured log events, or in
    ``str(DeliveryError)`` (``deliver=True`` makes one real attempt with ``options`` as given:
    point the sink somewhere that fails). Returns the payloads of the transition renders.

    ``SinkContract`` runs the same checks one at a time.
    """
    contract = SinkContract(
        sink_cls,
        options,
        secrets=secrets,
        forbidden_in_payload=forbidden_in_payload,
        url_option=url_option,
        http_expectations=http_expectations,
        wire_strings=wire_strings,
    )
    return await contract.check_all(deliver=deliver)
