"""The public sink plugin contract and the loader for entry-point group ``canarywatch.sinks``.

A sink turns a ``Notification`` into a wire body (``render``, pure) and sends it once
(``deliver``). Everything around that (queueing, per-attempt timeouts, retries, dedup,
recording) belongs to ``canarywatch.delivery.dispatch``, so a sink stays small and testable with golden
files. Plugins, built-in or third-party, import only this module and ``canarywatch.model``; what
they need from elsewhere (``DeliveryError``, the JSON output shape) is re-exported here.

Plugins are found through stevedore without ``invoke_on_load``: listing plugins never runs their
constructors, and one broken third-party distribution is reported (``sink_load_failed``, and in
``discover_sinks()``) instead of taking the daemon down.
"""

from __future__ import annotations

import abc
import hashlib
import importlib.metadata
import os
import re
import socket
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import ClassVar, Final, Protocol, TypeAlias

import aiohttp
import pydantic
import structlog
from stevedore import ExtensionManager
from structlog.typing import FilteringBoundLogger

from canarywatch.clock import SystemClock
from canarywatch.config.validation import describe, format_key_path, key_path
from canarywatch.errors import ConfigError, DeliveryError
from canarywatch.formats.jsonout import dumps, event_to_json, format_time, notification_to_json
from canarywatch.identity import fingerprint
from canarywatch.model import (
    DeliveryReason,
    JSONValue,
    Notification,
    NotificationStatus,
    Transition,
)

__all__ = [
    "API_VERSION",
    "NAMESPACE",
    "VERDICTS",
    "BoundLogger",
    "DeliveryError",
    "DeliveryReason",
    "InMemorySinkMemory",
    "OptionProblem",
    "Payload",
    "PluginInfo",
    "Sink",
    "SinkLoadError",
    "SinkMemory",
    "SinkRegistry",
    "build_sink",
    "classify_exception",
    "classify_http",
    "clean_text",
    "discover_sinks",
    "dumps",
    "event_to_json",
    "format_time",
    "idempotency_key",
    "inspect_abstract",
    "is_verdict",
    "load_sink_class",
    "notification_to_json",
    "parse_retry_after",
    "redact_urls",
    "reveal_secret",
    "validate_sink_options",
    "weight_bar",
]

NAMESPACE = "canarywatch.sinks"
"""The entry-point group plugins register under (not user-visible; entry-point names are)."""

API_VERSION = 1
"""The ``Sink.api_version`` this canarywatch speaks; a plugin declaring another is refused."""


def idempotency_key(n: Notification) -> str:
    """32 hex digits naming what ``n`` announces: its receiver, status and the identities
    (``identity.fingerprint``) of its events; a ``repeat_interval`` re-send adds its time.

    Not a hash of the rendered body: the body carries times that differ between a retry after a
    restart, a replica taking over and the first attempt, and a receiver must be able to drop
    every one of those as the same message. A deliberate repeat is a new message.
    """
    parts = [n.receiver, n.status.value, *sorted(fingerprint(e) for e in n.events)]
    if n.repeat:
        parts.append(format_time(n.created_at))
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]


BoundLogger: TypeAlias = FilteringBoundLogger
"""The structlog logger type handed to components (bound once, passed in)."""

Payload: TypeAlias = str | bytes | Mapping[str, JSONValue] | Sequence[JSONValue]
"""What ``Sink.render`` returns and ``Sink.deliver`` receives: the wire body of one message.

A JSON object or array for HTTP sinks (posted as-is), text or bytes for stream-like sinks. The
dispatcher treats it as opaque: it renders once per notification and hands the same payload to
every attempt. ``deliver`` receives the base type; a sink narrows it with ``isinstance`` and
raises ``DeliveryError(reason=DeliveryReason.INVALID_PAYLOAD, retryable=False)`` on a mismatch.
"""

RETRY_AFTER_CAP_S = 3600.0
"""Longest ``Retry-After`` taken at face value; the dispatcher's retry budget caps it further."""


OptionProblem: TypeAlias = tuple[tuple[str | int, ...], str]
"""One bad sink option: its key path inside ``options`` (``("links", 0, "url")``, ``()`` for
the options as a whole) and what is wrong, in canarywatch's words, without the value."""


class SinkLoadError(ConfigError):
    """A sink cannot be loaded or configured: unknown name, broken plugin, bad options.

    A ``ConfigError`` because it is one when the sink is named in config (``check-config`` exits
    2); ``config.py`` may re-raise it with the key path filled in. ``option_problems`` lists each
    bad option (from ``validate_sink_options``), so a caller can point at each key's own line.
    """

    def __init__(self, message: str, *, option_problems: Sequence[OptionProblem] = ()) -> None:
        super().__init__(message)
        self.option_problems: tuple[OptionProblem, ...] = tuple(option_problems)


class SinkMemory(Protocol):
    """A sink's small durable key/value store (message ids for edit-in-place and threads).

    The daemon backs it with the state store, so a restart keeps editing the same message;
    keys are the sink's own (e.g. ``"thread:<rollout key>"``), scoped per receiver.
    """

    def get(self, key: str) -> Mapping[str, str] | None: ...

    def put(self, key: str, value: Mapping[str, str]) -> None: ...


class InMemorySinkMemory:
    """``SinkMemory`` that forgets on restart: the default, and for tests."""

    def __init__(self) -> None:
        self._data: dict[str, dict[str, str]] = {}

    def get(self, key: str) -> Mapping[str, str] | None:
        return self._data.get(key)

    def put(self, key: str, value: Mapping[str, str]) -> None:
        self._data[key] = dict(value)


class Sink(abc.ABC):
    """A notification destination.

    Call order: ``__init__`` -> ``check()`` once -> (``render`` -> ``deliver``)* -> ``aclose()``.

    Ownership: ``http`` is the process-wide session, owned by the app (never close it);
    ``aclose`` releases only what the sink itself opened (files, its own sessions). ``render``
    is pure: same notification, same payload, no I/O, no clock; it is golden-file tested.
    ``deliver`` makes exactly one attempt and never retries or sleeps: it returns on success and
    raises ``DeliveryError(retryable=..., reason=...)`` on failure (``classify_http`` and
    ``classify_exception`` do the classification); dispatch owns timeouts and retries.

    Secrets (webhook URLs, tokens) arrive in ``options``: keep them out of ``repr``, log fields
    and exception text (``redact_urls`` helps). The default ``repr`` shows only the name.
    """

    api_version: ClassVar[int] = API_VERSION
    supports_edit: ClassVar[bool] = False
    """Can update a message it sent earlier (e.g. Slack chat.update)."""
    supports_threads: ClassVar[bool] = False
    """Can post follow-ups under one rollout's first message."""
    supports_resolve: ClassVar[bool] = False
    """Renders ``resolved`` notifications meaningfully (receivers may then send them)."""
    options_model: ClassVar[type[pydantic.BaseModel] | None] = None
    """Validates ``options`` at load/check-config time; ``None`` means "takes no options"."""
    prints_notifications: bool = False
    """Writes each notification where the operator reads the log (a terminal: the console
    sink, ``jsonl`` to stdout). Dispatch then logs a successful delivery at debug instead of
    info, so a notification is not shown twice. A class attribute a sink may set per instance.

    Health needs nothing from a sink: dispatch marks it unhealthy when a delivery fails
    permanently (a not-retryable ``DeliveryError`` other than ``invalid_payload``) and healthy
    again when one succeeds (``canarywatch.delivery.dispatch.SinkHealth``)."""

    def __init__(
        self,
        name: str,
        options: Mapping[str, object],
        *,
        http: aiohttp.ClientSession,
        log: BoundLogger,
        memory: SinkMemory | None = None,
    ) -> None:
        """``name`` is the entry-point name (``slack``): the ``sink`` label in logs and metrics.

        Subclasses parse ``options`` (``self.options_model.model_validate(options)``) and keep
        the parsed result, not the raw mapping. ``memory`` persists message ids across
        restarts (see ``SinkMemory``); sinks that edit or thread use it, others ignore it.
        """
        self.name = name
        self.http = http
        self.log = log
        self.memory: SinkMemory = memory if memory is not None else InMemorySinkMemory()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} name={self.name!r}>"

    @abc.abstractmethod
    def render(self, n: Notification) -> Payload:
        """Turn a notification into the wire body (pure; golden-file tested)."""

    @abc.abstractmethod
    async def deliver(self, payload: Payload) -> None:
        """Send once; raise ``DeliveryError(retryable=..., reason=...)`` on failure."""

    async def check(self) -> None:  # noqa: B027 - optional hook: the default does nothing
        """Optional start-up self-test (reachability, credentials); default does nothing."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook: the default does nothing
        """Release what ``__init__``/``check`` took; the default holds nothing."""


# --- helpers shared by sinks -------------------------------------------------------------------

_ANSI = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]"  # CSI: colours, cursor movement
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?"  # OSC: titles, hyperlinks
    r"|\x1b[@-Z\\-_]"  # other two-byte escapes
)
_KEEP_FORMAT = frozenset({"\u200d"})  # zero-width joiner: part of emoji sequences
_SPACE_RUNS = re.compile(r"\s+")
_URL = re.compile(r"\b([a-zA-Z][a-zA-Z0-9+.-]*://)([^/\s?#@]*@)?([^/\s?#]+)[^\s\"'<>]*")


def clean_text(text: str, *, max_len: int | None = None) -> str:
    """Untrusted text made safe to show on one line.

    Removes ANSI/terminal escape sequences, control characters and invisible format characters
    (bidi overrides and the like, which can disguise text), turns line breaks and tabs into
    spaces, collapses runs of whitespace and trims. With ``max_len``, cuts the result to at most
    that many characters, ending in ``…`` when it cut.
    """
    text = _ANSI.sub("", text)
    out = []
    for ch in text:
        cat = unicodedata.category(ch)
        if ch in "\t\n\r\v\f\x85\u2028\u2029":
            out.append(" ")
        elif cat in ("Cc", "Cs", "Co") or (cat == "Cf" and ch not in _KEEP_FORMAT):
            continue
        else:
            out.append(ch)
    cleaned = _SPACE_RUNS.sub(" ", "".join(out)).strip()
    if max_len is not None and len(cleaned) > max_len:
        cleaned = cleaned[: max(max_len - 1, 0)].rstrip() + "…"
    return cleaned


def weight_bar(weight: int | None, *, cells: int = 10) -> str:
    """``▰▰▰▱▱▱▱▱▱▱ 30%``: the canary's share of traffic at a glance, the one bar every view draws.

    The weight is clamped to 0-100 and each cell stands for ``100 / cells`` percent; a cell that
    is half filled or more counts as filled (round half up, never Python's round-half-even), so
    with ten cells 25 % shows 3 cells, 5 % shows 1 and only 0 % shows none. An unknown weight
    (``None``) is an empty bar with ``–``.
    """
    if weight is None:
        return "▱" * cells + " –"
    pct = max(0, min(100, weight))
    filled = (pct * cells + 50) // 100
    return "▰" * filled + "▱" * (cells - filled) + f" {pct}%"


VERDICTS: Final = frozenset(
    {Transition.PROMOTED, Transition.ROLLED_BACK, Transition.PROMOTION_FAILED}
)
"""The transitions that end a rollout with its outcome."""


def is_verdict(n: Notification) -> bool:
    """A firing notification carrying the rollout's outcome (a verdict transition)."""
    return n.status is NotificationStatus.FIRING and any(e.transition in VERDICTS for e in n.events)


def reveal_secret(value: object) -> object:
    """A ``canarywatch.secrets.Secret`` to its plain text, anything else as given.

    For an option model's ``mode="before"`` validator: config hands secrets over as ``Secret``
    objects, tests as plain ``str``. Duck-typed on ``reveal()`` returning ``str``, so a plugin
    never needs to import ``canarywatch.secrets``.
    """
    reveal = getattr(value, "reveal", None)
    if callable(reveal):
        revealed = reveal()
        if isinstance(revealed, str):
            return revealed
    return value


def redact_urls(text: str) -> str:
    """Replace every URL's credentials, path and query by ``…``: webhook URLs carry secrets."""

    def keep_host(m: re.Match[str]) -> str:
        scheme, userinfo, host, rest = m.group(1), m.group(2), m.group(3), m.group(0)
        tail = rest[len(scheme) + len(userinfo or "") + len(host) :]
        return f"{scheme}{'…@' if userinfo else ''}{host}{'/…' if tail else ''}"

    return _URL.sub(keep_host, text)


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is not None:
        return value
    lowered = name.lower()
    for key, val in headers.items():
        if key.lower() == lowered:
            return val
    return None


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """``Retry-After`` as seconds from ``now``: delta-seconds or an HTTP-date (RFC 9110 §10.2.3).

    ``None`` when absent or unparsable; clamped to ``[0, RETRY_AFTER_CAP_S]``. ``now`` is needed
    only for the HTTP-date form; without it the system clock is read.
    """
    if value is None:
        return None
    value = value.strip()
    seconds: float
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        if now is None:
            now = SystemClock().now()
        seconds = (when - now).total_seconds()
    if seconds != seconds:  # NaN
        return None
    return min(max(seconds, 0.0), RETRY_AFTER_CAP_S)


def classify_http(
    status: int,
    headers: Mapping[str, str],
    *,
    body: str = "",
    now: datetime | None = None,
) -> DeliveryError | None:
    """The one HTTP classification every sink uses: ``None`` for 2xx, else the error to raise.

    429 is retryable (``rate_limited``) with ``Retry-After`` parsed into ``retry_after_s``; 408
    is a retryable ``timeout``; 5xx is retryable (``http_5xx``); anything else (other 4xx, and
    1xx/3xx a sink did not expect) is permanent (``http_4xx``). ``body`` is accepted so sinks can
    pass it uniformly, but ``DeliveryError`` carries no free text; a sink that classifies by body
    (Slack's ``invalid_token``) does so before calling this and logs the cleaned body itself.
    """
    del body  # see the docstring: never copied into the error
    if 200 <= status < 300:
        return None
    if status == 429:
        return DeliveryError(
            DeliveryReason.RATE_LIMITED,
            retryable=True,
            status_code=status,
            retry_after_s=parse_retry_after(_header(headers, "Retry-After"), now=now),
        )
    if status == 408:
        return DeliveryError(DeliveryReason.TIMEOUT, retryable=True, status_code=status)
    if status >= 500:
        return DeliveryError(DeliveryReason.HTTP_5XX, retryable=True, status_code=status)
    return DeliveryError(DeliveryReason.HTTP_4XX, retryable=False, status_code=status)


def classify_exception(exc: Exception) -> DeliveryError:
    """Classify an exception raised while sending: timeouts and transport errors are retryable.

    ``ClientResponseError`` (from ``raise_for_status``) goes through ``classify_http``; bad
    payloads (``TypeError``/``ValueError`` while encoding) are permanent ``invalid_payload``.
    """
    if isinstance(exc, DeliveryError):
        return exc
    if isinstance(exc, aiohttp.ClientResponseError):
        error = classify_http(exc.status, dict(exc.headers or {}))
        if error is not None:
            return error
    if isinstance(exc, TimeoutError | aiohttp.ServerTimeoutError):
        return DeliveryError(DeliveryReason.TIMEOUT, retryable=True)
    if isinstance(exc, aiohttp.ClientError | OSError):
        return DeliveryError(
            DeliveryReason.CONNECTION, retryable=True, detail=_connection_detail(exc)
        )
    if isinstance(exc, TypeError | ValueError):
        return DeliveryError(DeliveryReason.INVALID_PAYLOAD, retryable=False)
    return DeliveryError(DeliveryReason.CONNECTION, retryable=False)


def _os_words(error: OSError) -> str:
    """``connection refused``: the system's words for an ``OSError`` (not its text, which can
    repeat an address), or the resolver's for a failed name lookup."""
    if isinstance(error, socket.gaierror) or not error.errno or error.errno < 0:
        words = error.strerror or type(error).__name__
    else:
        words = os.strerror(error.errno)
    return words[:1].lower() + words[1:]


def _connection_detail(exc: aiohttp.ClientError | OSError) -> str | None:
    """A failed connection in plain words, naming the host and port it was to (never a URL's
    path, query or credentials, where secrets live): ``cannot connect to hooks.example.com:443:
    connection refused``, ``cannot resolve hooks.example.com: name or service not known``."""
    if isinstance(exc, aiohttp.ClientConnectorError):
        where = f"{exc.host}:{exc.port}"
        if isinstance(exc.os_error, socket.gaierror):
            return f"cannot resolve {exc.host}: {_os_words(exc.os_error)}"
        if isinstance(exc, aiohttp.ClientSSLError):
            return f"TLS with {where} failed: {type(exc).__name__}"
        return f"cannot connect to {where}: {_os_words(exc.os_error)}"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "the server closed the connection without answering"
    if isinstance(exc, OSError):
        return f"connection failed: {_os_words(exc)}"
    return None


# --- the loader --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PluginInfo:
    """One entry point of ``canarywatch.sinks``, loaded or not (for ``canarywatch plugins``)."""

    name: str
    """The entry-point name users write in config (``slack``)."""
    target: str
    """Where it points: ``module:attribute``."""
    distribution: str | None
    version: str | None
    ok: bool
    error: str | None = None
    """Why it cannot be used, when ``ok`` is false."""
    api_version: int | None = None
    capabilities: tuple[str, ...] = ()


def _distributions_by_entry_point() -> dict[tuple[str, str], tuple[str, str]]:
    """``(entry-point name, value) -> (distribution, version)`` for our group.

    stevedore's entry-point cache keeps only name/value/group, so the owning distribution is
    looked up here from the installed metadata.
    """
    found: dict[tuple[str, str], tuple[str, str]] = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"]
        if not name:
            continue
        for ep in dist.entry_points.select(group=NAMESPACE):
            found.setdefault((ep.name, ep.value), (name, dist.version))
    return found


def _describe_error(exc: BaseException) -> str:
    return redact_urls(clean_text(f"{type(exc).__name__}: {exc}", max_len=500))


class SinkRegistry:
    """The sink plugins of one stevedore ``ExtensionManager``.

    Without a manager it scans the installed entry points (``invoke_on_load=False``); tests pass
    ``ExtensionManager.make_test_instance([...])``. Each plugin is checked for being a ``Sink``
    subclass with a supported ``api_version``; failures are logged once as ``sink_load_failed``
    and kept, so ``load`` can explain them if the plugin is named in config.
    """

    def __init__(
        self,
        manager: ExtensionManager[object] | None = None,
        *,
        log: BoundLogger | None = None,
    ) -> None:
        self._log: BoundLogger = log if log is not None else structlog.get_logger()
        self._log = self._log.bind(component="sinks.loader")
        self._failed: list[tuple[importlib.metadata.EntryPoint, BaseException]] = []
        if manager is None:
            manager = ExtensionManager(
                namespace=NAMESPACE,
                invoke_on_load=False,
                on_load_failure_callback=self._on_load_failure,
            )
        self._manager = manager
        self._classes: dict[str, type[Sink]] = {}
        self._infos: dict[str, PluginInfo] = {}
        self._scan()

    def _on_load_failure(
        self,
        manager: ExtensionManager[object],
        entry_point: importlib.metadata.EntryPoint,
        exc: BaseException,
    ) -> None:
        self._failed.append((entry_point, exc))

    def _scan(self) -> None:
        dists = _distributions_by_entry_point()

        def info(
            ep: importlib.metadata.EntryPoint,
            *,
            ok: bool,
            error: str | None = None,
            api_version: int | None = None,
            capabilities: tuple[str, ...] = (),
        ) -> PluginInfo:
            dist: str | None
            version: str | None
            dist, version = dists.get((ep.name, ep.value), (None, None))
            if dist is None and ep.dist is not None:
                dist, version = ep.dist.metadata["Name"], ep.dist.version
            return PluginInfo(
                name=ep.name,
                target=ep.value,
                distribution=dist,
                version=version,
                ok=ok,
                error=error,
                api_version=api_version,
                capabilities=capabilities,
            )

        for ep, exc in self._failed:
            self._record_failure(info(ep, ok=False, error=_describe_error(exc)))
        for ext in self._manager.extensions:
            plugin = ext.plugin
            if not (isinstance(plugin, type) and issubclass(plugin, Sink)):
                self._record_failure(
                    info(
                        ext.entry_point, ok=False, error="not a subclass of canarywatch.sinks.Sink"
                    )
                )
                continue
            declared = getattr(plugin, "api_version", None)
            if declared != API_VERSION:
                self._record_failure(
                    info(
                        ext.entry_point,
                        ok=False,
                        api_version=declared if isinstance(declared, int) else None,
                        error=(
                            f"api_version {declared!r} is not supported "
                            f"(this canarywatch speaks api_version {API_VERSION})"
                        ),
                    )
                )
                continue
            if inspect_abstract(plugin):
                self._record_failure(
                    info(
                        ext.entry_point,
                        ok=False,
                        api_version=declared,
                        error="abstract methods not implemented: " + inspect_abstract(plugin),
                    )
                )
                continue
            caps = tuple(
                flag
                for flag in ("supports_edit", "supports_threads", "supports_resolve")
                if getattr(plugin, flag, False)
            )
            if ext.name in self._infos:  # first registration wins, as in stevedore's lookup
                continue
            self._classes[ext.name] = plugin
            self._infos[ext.name] = info(
                ext.entry_point, ok=True, api_version=declared, capabilities=caps
            )

    def _record_failure(self, info: PluginInfo) -> None:
        self._log.warning(
            "sink_load_failed",
            sink=info.name,
            target=info.target,
            distribution=info.distribution,
            error=info.error,
        )
        self._infos.setdefault(info.name, info)

    def plugins(self) -> list[PluginInfo]:
        """Every entry point found, sorted by name, with its load result."""
        return [self._infos[k] for k in sorted(self._infos)]

    def names(self) -> list[str]:
        """The names of the sinks that loaded and can be used."""
        return sorted(self._classes)

    def load(self, name: str) -> type[Sink]:
        """The class registered as ``name``; ``SinkLoadError`` explains why not."""
        cls = self._classes.get(name)
        if cls is not None:
            return cls
        info = self._infos.get(name)
        if info is not None:
            raise SinkLoadError(
                f"sink {name!r} ({info.target}, from {info.distribution or 'unknown'}) "
                f"cannot be used: {info.error}"
            )
        known = ", ".join(self.names()) or "none installed"
        raise SinkLoadError(f"unknown sink {name!r}; known sinks: {known}")


def inspect_abstract(cls: type) -> str:
    """Comma-separated abstract methods ``cls`` leaves unimplemented ('' when none)."""
    return ", ".join(sorted(getattr(cls, "__abstractmethods__", ())))


def discover_sinks(*, log: BoundLogger | None = None) -> list[PluginInfo]:
    """All installed sink plugins with distribution, version and load result; never raises."""
    return SinkRegistry(log=log).plugins()


def load_sink_class(name: str, *, log: BoundLogger | None = None) -> type[Sink]:
    """The installed sink class for entry-point ``name``; ``SinkLoadError`` names known sinks."""
    return SinkRegistry(log=log).load(name)


def validate_sink_options(cls: type[Sink], options: Mapping[str, object]) -> None:
    """Check ``options`` against ``cls.options_model``; ``SinkLoadError`` names each bad key.

    Input values are left out of the message: options carry secrets.
    """
    model = cls.options_model
    if model is None:
        if options:
            raise SinkLoadError(
                f"sink takes no options, got: {', '.join(sorted(options))}",
                option_problems=[
                    ((key,), f"unknown option {key!r}: this sink takes no options")
                    for key in sorted(options)
                ],
            )
        return
    try:
        model.model_validate(dict(options))
    except pydantic.ValidationError as exc:
        found = [
            (key_path(err["loc"]), describe(err, model=model, noun="option"))
            for err in exc.errors(include_input=False, include_url=False)
        ]
        text = "; ".join(f"{format_key_path(loc) or '(options)'}: {why}" for loc, why in found)
        raise SinkLoadError(f"invalid options: {text}", option_problems=found) from None


def build_sink(
    name: str,
    options: Mapping[str, object],
    *,
    http: aiohttp.ClientSession,
    log: BoundLogger,
    registry: SinkRegistry | None = None,
    memory: SinkMemory | None = None,
) -> Sink:
    """Load, validate and construct the sink ``name`` with a logger bound to ``sink.<name>``."""
    cls = (registry or SinkRegistry(log=log)).load(name)
    try:
        validate_sink_options(cls, options)
    except SinkLoadError as exc:
        raise SinkLoadError(f"sink {name!r}: {exc.message}") from None
    return cls(
        name,
        options,
        http=http,
        log=log.bind(component=f"sink.{name}", sink=name),
        memory=memory,
    )
