"""The daemon's local control API: silences and the outbox, for ``canarywatch silence|outbox``;
decision trails for ``canarywatch explain`` (``explain_routes``).

Routes (``control_routes`` returns them for ``web.build_app(extra_routes=...)``, whose
middleware demands the bearer token under ``/api/`` whenever one is configured):

- ``GET /api/v1/silences[?expired=true]`` -> ``{"silences": [...]}``: config silences (read-only,
  ``"origin": "config"``) then runtime ones; expired ones only with ``expired=true``.
- ``POST /api/v1/silences`` with ``{"matchers": [...], "starts_at"?, "ends_at" | "duration",
  "created_by", "comment"}`` -> 201 and the silence. ``duration`` is a Prometheus duration
  (``"2h"``) or a number of seconds; times are RFC 3339 with an offset. As in Alertmanager a
  ``starts_at`` in the past means now, and at least one matcher must not match the empty string
  (else the silence would mute everything).
- ``DELETE /api/v1/silences/{id}`` -> the expired silence; 404 unknown, 409 when already expired
  or declared in config (those are ended by editing the config file).
- ``GET /api/v1/outbox[?receiver=&limit=]`` -> ``{"items": [...]}`` pending deliveries, each
  with its failed ``attempts``, ``last_error`` (in plain words), ``last_attempt_at`` and
  ``next_attempt_at``; then, while the state store cannot be written, the notifications held in
  memory (``"state": "held"``, ``"id": null``, ``held_because``): not yet in the outbox;
  ``GET /api/v1/outbox/dead`` -> dead letters; ``POST /api/v1/outbox/{id}/retry`` (dead ->
  pending; 409 when the item is not dead); ``DELETE /api/v1/outbox/{id}`` (drop, any state).

Every response body is JSON, errors included: ``{"error": reason, "field": name | null}``; a
catch-all answers unknown paths/methods under ``/api/v1/`` with a JSON 404 (aiohttp tries longer
path prefixes first, so routes added later, like ``/api/v1/other``, are not shadowed).
Request bodies over 64 KiB are refused with 413, malformed JSON with 400. Each change is logged
once (``silence_added``, ``silence_expired``, ``outbox_retried``, ``outbox_dropped``).

Each change is written through the store's ``*_async`` methods: durable before the response
says so, but committed off the event loop (with whatever else is being written), so a slow disk
delays the request, not the daemon's deliveries or its other requests.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime, timedelta
from typing import Final

import structlog
from aiohttp import web

from canarywatch.clock import Clock
from canarywatch.formats.jsonout import format_time
from canarywatch.labels.durations import parse_duration
from canarywatch.labels.matchers import Matcher, parse_matcher_set
from canarywatch.model import JSONValue
from canarywatch.pipeline.silence import ParsedSilence, SilenceOrigin, Silencer, SilenceState
from canarywatch.state.base import OutboxItem, SilenceRecord, StateError, StateStore
from canarywatch.state.holding import HeldNotification, HoldingStateStore
from canarywatch.views.explain import DecisionRecorder, explanation, transition_filter
from canarywatch.web.server import read_body_limited

__all__ = [
    "API_PREFIX",
    "MAX_CONTROL_BODY_BYTES",
    "control_routes",
    "dead_letter_rows",
    "explain_routes",
    "pending_rows",
    "silence_rows",
]

API_PREFIX: Final = "/api/v1"
MAX_CONTROL_BODY_BYTES: Final = 64 * 1024
"""Request bodies above this are refused (413): a silence is a few hundred bytes."""

_DEFAULT_OUTBOX_LIMIT: Final = 100
_MAX_OUTBOX_LIMIT: Final = 10_000
_SILENCE_FIELDS: Final = frozenset(
    {"matchers", "starts_at", "ends_at", "duration", "created_by", "comment"}
)
_RFC3339: Final = re.compile(
    r"(?P<date>\d{4}-\d{2}-\d{2})[Tt ](?P<time>\d{2}:\d{2}:\d{2})(?:\.(?P<frac>\d+))?"
    r"(?P<offset>[Zz]|[+-]\d{2}:\d{2})"
)
_TRUE: Final = frozenset({"1", "true", "yes"})
_FALSE: Final = frozenset({"", "0", "false", "no"})


class _BadRequest(Exception):
    """Bad input: becomes ``{"error": reason, "field": field}`` with ``status``."""

    def __init__(self, reason: str, field: str | None = None, *, status: int = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.field = field
        self.status = status


def _error(status: int, reason: str, field: str | None = None) -> web.Response:
    return web.json_response({"error": reason, "field": field}, status=status)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _json_errors(handler: Handler) -> Handler:
    """Turn ``_BadRequest`` and ``StateError`` into JSON error responses."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except _BadRequest as exc:
            return _error(exc.status, exc.reason, exc.field)
        except StateError as exc:
            return _error(503, f"state store unavailable: {exc}")

    return wrapped


# --- request parsing ----------------------------------------------------------------------------


async def _read_json_object(request: web.Request) -> Mapping[str, JSONValue]:
    """The body as a JSON object, refusing more than ``MAX_CONTROL_BODY_BYTES`` (413)."""
    too_large = _BadRequest(
        f"request body exceeds {MAX_CONTROL_BODY_BYTES} bytes", None, status=413
    )
    body = await read_body_limited(request, MAX_CONTROL_BODY_BYTES)
    if body is None:
        raise too_large
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise _BadRequest(f"request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise _BadRequest("request body must be a JSON object")
    return data


def parse_rfc3339(text: str) -> datetime:
    """An RFC 3339 timestamp with an offset (``Z`` or ``+02:00``); ``ValueError`` otherwise.

    Fractions beyond microseconds (Go writes nanoseconds) are truncated.
    """
    found = _RFC3339.fullmatch(text)
    if found is None:
        raise ValueError(f"{text!r} is not an RFC 3339 time with an offset (2024-05-01T12:00:00Z)")
    frac = (found["frac"] or "")[:6]
    offset = found["offset"].upper().replace("Z", "+00:00")
    normal = f"{found['date']}T{found['time']}{'.' + frac.ljust(6, '0') if frac else ''}{offset}"
    try:
        return datetime.fromisoformat(normal)
    except ValueError as exc:
        raise ValueError(f"{text!r} is not a valid time: {exc}") from None


def _text_field(body: Mapping[str, JSONValue], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value.strip():
        raise _BadRequest(f"{name} must be a non-empty string", name)
    return value.strip()


def _time_field(body: Mapping[str, JSONValue], name: str) -> datetime | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _BadRequest(f"{name} must be an RFC 3339 string", name)
    try:
        return parse_rfc3339(value)
    except ValueError as exc:
        raise _BadRequest(str(exc), name) from None


def _matchers_field(body: Mapping[str, JSONValue]) -> tuple[Matcher, ...]:
    raw = body.get("matchers")
    if not isinstance(raw, list) or not raw:
        raise _BadRequest("matchers must be a non-empty list of matcher strings", "matchers")
    parsed: list[Matcher] = []
    for index, text in enumerate(raw):
        if not isinstance(text, str):
            raise _BadRequest(f"matchers[{index}] must be a string", "matchers")
        try:
            parsed.extend(parse_matcher_set(text))
        except ValueError as exc:
            raise _BadRequest(f"matchers[{index}]: {exc}", "matchers") from None
    if not parsed:
        raise _BadRequest("matchers must contain at least one matcher", "matchers")
    if all(m.matches({}) for m in parsed):
        raise _BadRequest(
            "at least one matcher must not match the empty string "
            "(otherwise the silence would mute every event)",
            "matchers",
        )
    return tuple(parsed)


def _duration_field(body: Mapping[str, JSONValue]) -> timedelta:
    value = body["duration"]
    seconds: float
    if isinstance(value, bool):
        raise _BadRequest("duration must be a duration string (2h) or seconds", "duration")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        try:
            seconds = parse_duration(value)
        except ValueError as exc:
            raise _BadRequest(str(exc), "duration") from None
    else:
        raise _BadRequest("duration must be a duration string (2h) or seconds", "duration")
    if not math.isfinite(seconds) or seconds <= 0:
        raise _BadRequest("duration must be positive", "duration")
    try:
        return timedelta(seconds=seconds)
    except OverflowError:
        raise _BadRequest("duration is too long", "duration") from None


def _silence_window(body: Mapping[str, JSONValue], now: datetime) -> tuple[datetime, datetime]:
    starts_at = _time_field(body, "starts_at")
    if starts_at is None or starts_at < now:
        starts_at = now  # Alertmanager: a start in the past means "from now"
    has_ends, has_duration = body.get("ends_at") is not None, body.get("duration") is not None
    if has_ends == has_duration:
        raise _BadRequest("give exactly one of ends_at and duration", "ends_at")
    if has_duration:
        try:
            ends_at = starts_at + _duration_field(body)
        except OverflowError:
            raise _BadRequest("duration is too long", "duration") from None
    else:
        ends_at = _time_field(body, "ends_at") or now
        if ends_at <= now:
            raise _BadRequest(
                "ends_at is in the past: the silence would already be over", "ends_at"
            )
        if ends_at <= starts_at:
            raise _BadRequest("ends_at must be after starts_at", "ends_at")
    return starts_at, ends_at


def _outbox_id(request: web.Request) -> int:
    text = request.match_info["id"]
    if not text.isascii() or not text.isdigit():
        raise _BadRequest(f"outbox id must be a whole number, got {text!r}", "id")
    return int(text)


def _flag(request: web.Request, name: str) -> bool:
    value = request.query.get(name, "").strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise _BadRequest(f"{name} must be true or false", name)


def _limit(request: web.Request) -> int:
    text = request.query.get("limit")
    if text is None:
        return _DEFAULT_OUTBOX_LIMIT
    if not text.isascii() or not text.isdigit() or not 1 <= int(text) <= _MAX_OUTBOX_LIMIT:
        raise _BadRequest(f"limit must be a whole number from 1 to {_MAX_OUTBOX_LIMIT}", "limit")
    return int(text)


# --- JSON shapes --------------------------------------------------------------------------------


def _silence_json(s: ParsedSilence, now: datetime) -> dict[str, JSONValue]:
    return {
        "id": s.id,
        "matchers": [str(m) for m in s.matchers],
        "starts_at": format_time(s.starts_at),
        "ends_at": format_time(s.ends_at),
        "created_by": s.created_by,
        "comment": s.comment,
        "state": s.state(now).value,
        "origin": s.origin.value,
    }


def _record_json(r: SilenceRecord, now: datetime) -> dict[str, JSONValue]:
    state = SilenceState.EXPIRED if r.expired(now) else SilenceState.ACTIVE
    if r.starts_at > now:
        state = SilenceState.PENDING
    return {
        "id": r.id,
        "matchers": list(r.matchers),
        "starts_at": format_time(r.starts_at),
        "ends_at": format_time(r.ends_at),
        "created_by": r.created_by,
        "comment": r.comment,
        "state": state.value,
        "origin": SilenceOrigin.RUNTIME.value,
    }


def _outbox_json(item: OutboxItem, state: str) -> dict[str, JSONValue]:
    n = item.notification
    return {
        "id": item.id,
        "state": state,
        "receiver": item.receiver,
        "created_at": format_time(item.created_at),
        "attempts": item.attempts,
        "last_error": item.last_error,
        "last_attempt_at": _time_or_none(item.last_attempt_at),
        "next_attempt_at": _time_or_none(item.next_attempt_at),
        "status": n.status.value,
        "group_key": n.group_key,
        "group": dict(sorted(n.group_labels.items())),
        "events": len(n.events),
        "canaries": sorted({str(ev.canary) for ev in n.events}),
    }


def _time_or_none(at: datetime | None) -> str | None:
    return format_time(at) if at is not None else None


def _held_json(held: HeldNotification, because: str) -> dict[str, JSONValue]:
    """A notification held in memory while the state store cannot be written: it has no id
    yet and is not attempted until it has been written (``HoldingStateStore``)."""
    item = OutboxItem(0, held.receiver, held.notification, held.accepted_at, 0, None)
    return {**_outbox_json(item, "held"), "id": None, "held_because": because}


def silence_rows(
    store: StateStore, silencer: Silencer, now: datetime, *, include_expired: bool = False
) -> list[dict[str, JSONValue]]:
    """``GET /api/v1/silences``'s rows (the status page renders the same)."""
    rows = [
        _silence_json(s, now)
        for s in silencer.config_silences
        if include_expired or s.state(now) is not SilenceState.EXPIRED
    ]
    rows += [
        _record_json(r, now)
        for r in store.silences(include_expired=include_expired)
        if include_expired or not r.expired(now)
    ]
    return rows


def pending_rows(
    store: StateStore, limit: int = _DEFAULT_OUTBOX_LIMIT
) -> list[dict[str, JSONValue]]:
    """``GET /api/v1/outbox``'s rows: pending items, then those held in memory."""
    rows = [_outbox_json(i, "pending") for i in store.outbox_pending(None, limit=limit)]
    if isinstance(store, HoldingStateStore) and len(rows) < limit:
        because = f"not yet written to the state store: {store.failure or 'holding'}"
        rows += [_held_json(h, because) for h in store.held_outbox(None)[: limit - len(rows)]]
    return rows


def dead_letter_rows(store: StateStore) -> list[dict[str, JSONValue]]:
    """``GET /api/v1/outbox/dead``'s rows."""
    return [_outbox_json(i, "dead") for i in store.outbox_dead_letters()]


# --- routes -------------------------------------------------------------------------------------


def control_routes(
    store: StateStore,
    silencer: Silencer,
    *,
    clock: Clock,
    on_outbox_retry: Callable[[int], Awaitable[None]] | None = None,
    log: structlog.typing.FilteringBoundLogger | None = None,
) -> list[web.RouteDef]:
    """The control API's routes (see the module docstring).

    ``on_outbox_retry(id)`` is awaited after a dead letter went back to pending: the daemon
    passes ``DurableDelivery.retried``, which hands it to its receiver's queue now (without it
    the item would wait for the next start). ``silencer.reload()`` runs after every silence
    change, so the pipeline sees it on the next event.
    """
    logger = log or structlog.get_logger().bind(component="control_api")

    def find_runtime(id: str) -> SilenceRecord | None:
        return next((r for r in store.silences(include_expired=True) if r.id == id), None)

    async def list_silences(request: web.Request) -> web.StreamResponse:
        rows = silence_rows(store, silencer, clock.now(), include_expired=_flag(request, "expired"))
        return web.json_response({"silences": rows})

    async def add_silence(request: web.Request) -> web.StreamResponse:
        body = await _read_json_object(request)
        unknown = sorted(set(body) - _SILENCE_FIELDS)
        if unknown:
            raise _BadRequest(f"unknown field {unknown[0]!r}", unknown[0])
        matchers = _matchers_field(body)
        now = clock.now()
        starts_at, ends_at = _silence_window(body, now)
        created_by = _text_field(body, "created_by")
        comment = _text_field(body, "comment")
        texts = [str(m) for m in matchers]
        id_ = await store.add_silence_async(texts, starts_at, ends_at, created_by, comment)
        silencer.reload()
        record = find_runtime(id_) or SilenceRecord(
            id_, tuple(texts), starts_at, ends_at, created_by, comment
        )
        logger.info(
            "silence_added",
            silence_id=id_,
            matchers=texts,
            starts_at=format_time(record.starts_at),
            ends_at=format_time(record.ends_at),
            created_by=created_by,
            comment=comment,
        )
        return web.json_response(_record_json(record, now), status=201)

    async def expire_silence(request: web.Request) -> web.StreamResponse:
        id_ = request.match_info["id"]
        if silencer.is_config(id_):
            raise _BadRequest(
                f"silence {id_} is declared in the configuration file and cannot be expired "
                "here: remove it from `silences:` in the config file and restart canarywatch",
                "id",
                status=409,
            )
        now = clock.now()
        record = find_runtime(id_)
        if record is None:
            raise _BadRequest(f"no silence with id {id_}", "id", status=404)
        if not await store.expire_silence_async(id_, now):
            raise _BadRequest(f"silence {id_} has already expired", "id", status=409)
        silencer.reload()
        expired = find_runtime(id_) or record
        logger.info(
            "silence_expired",
            silence_id=id_,
            matchers=list(record.matchers),
            created_by=record.created_by,
            comment=record.comment,
        )
        return web.json_response(_record_json(expired, now))

    def find_item(id_: int) -> tuple[OutboxItem, str] | None:
        for item in store.outbox_dead_letters():
            if item.id == id_:
                return item, "dead"
        for item in store.outbox_pending(limit=1 << 62):
            if item.id == id_:
                return item, "pending"
        return None

    async def outbox_pending(request: web.Request) -> web.StreamResponse:
        receiver = request.query.get("receiver") or None
        limit = _limit(request)
        rows = [_outbox_json(i, "pending") for i in store.outbox_pending(receiver, limit=limit)]
        if isinstance(store, HoldingStateStore) and len(rows) < limit:
            because = f"not yet written to the state store: {store.failure or 'holding'}"
            held = store.held_outbox(receiver)[: limit - len(rows)]
            rows += [_held_json(h, because) for h in held]
        return web.json_response({"items": rows})

    async def outbox_dead(_: web.Request) -> web.StreamResponse:
        return web.json_response({"items": dead_letter_rows(store)})

    async def outbox_retry(request: web.Request) -> web.StreamResponse:
        id_ = _outbox_id(request)
        found = find_item(id_)
        if found is None:
            raise _BadRequest(f"no outbox item with id {id_}", "id", status=404)
        item, state = found
        if state != "dead" or not await store.outbox_retry_async(id_):
            raise _BadRequest(
                f"outbox item {id_} is not a dead letter (it is {state})", "id", status=409
            )
        logger.info(
            "outbox_retried",
            outbox_id=id_,
            receiver=item.receiver,
            group_key=item.notification.group_key,
            last_error=item.last_error,
        )
        if on_outbox_retry is not None:
            await on_outbox_retry(id_)
        return web.json_response({"id": id_, "state": "pending", "receiver": item.receiver})

    async def outbox_drop(request: web.Request) -> web.StreamResponse:
        id_ = _outbox_id(request)
        found = find_item(id_)
        if not await store.outbox_drop_async(id_):
            raise _BadRequest(f"no outbox item with id {id_}", "id", status=404)
        receiver = found[0].receiver if found else None
        state = found[1] if found else "done"
        logger.info("outbox_dropped", outbox_id=id_, receiver=receiver, state=state)
        return web.json_response({"id": id_, "dropped": True, "state": state})

    async def not_found(request: web.Request) -> web.StreamResponse:
        return _error(404, f"no such endpoint: {request.method} {request.path}")

    p = API_PREFIX
    return [
        web.get(f"{p}/silences", _json_errors(list_silences)),
        web.post(f"{p}/silences", _json_errors(add_silence)),
        web.delete(f"{p}/silences/{{id}}", _json_errors(expire_silence)),
        web.get(f"{p}/outbox", _json_errors(outbox_pending)),
        web.get(f"{p}/outbox/dead", _json_errors(outbox_dead)),
        web.post(f"{p}/outbox/{{id}}/retry", _json_errors(outbox_retry)),
        web.delete(f"{p}/outbox/{{id}}", _json_errors(outbox_drop)),
        # Last: anything else under the prefix (unknown path or method) still answers JSON.
        web.route("*", p + "/{tail:.*}", not_found),
    ]


# --- decision trails ----------------------------------------------------------------------------

_K8S_NAME: Final = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")


def explain_routes(recorder: DecisionRecorder, *, clock: Clock) -> list[web.RouteDef]:
    """The decision trails of recent transitions (``canarywatch.views.explain``), under the same
    bearer token as the rest of the control API:

    - ``GET /api/v1/explain`` -> ``{"canaries": [{"canary", "cluster", "transitions"}]}``;
    - ``GET /api/v1/explain/{namespace}/{name}[?transition=T]`` -> ``explain.explanation``:
      ``{"canary", "transition", "kept", "trails": [...]}`` (every cluster's canary of that
      name; ``T`` a transition name or a trail id prefix; 400 otherwise). A canary with nothing
      recorded is an empty ``trails`` list, not a 404: "nothing seen" is the answer.
    """

    async def canaries(_: web.Request) -> web.StreamResponse:
        recorder.prune(clock.now())
        rows: list[JSONValue] = [
            {
                "canary": str(ref),
                "cluster": ref.cluster,
                "transitions": recorder.count(ref),
            }
            for ref in recorder.canaries()
        ]
        return web.json_response({"canaries": rows})

    async def one(request: web.Request) -> web.StreamResponse:
        namespace, name = request.match_info["namespace"], request.match_info["name"]
        for field, value in (("namespace", namespace), ("name", name)):
            if not _K8S_NAME.fullmatch(value):
                raise _BadRequest(f"{field} {value!r} is not a Kubernetes name", field)
        try:
            transition = transition_filter(request.query.get("transition"))
        except ValueError as exc:
            raise _BadRequest(str(exc), "transition") from None
        answer = explanation(recorder, namespace, name, transition=transition, now=clock.now())
        return web.json_response(answer)

    p = API_PREFIX
    return [
        web.get(f"{p}/explain", _json_errors(canaries)),
        web.get(f"{p}/explain/{{namespace}}/{{name}}", _json_errors(one)),
    ]
