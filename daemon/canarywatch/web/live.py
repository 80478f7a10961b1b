"""The live API: what ``canarywatch tail`` reads, served from a ``LiveState``.

Routes (``live_routes``; under ``/api/`` so ``server.token`` guards them when set):

- ``GET /api/v1/canaries`` -> JSON list of canary rows (``age_s`` by the daemon's clock).
- ``GET /api/v1/transitions?after=<seq>&limit=<n>&last=<n>`` -> JSON list of transition records
  ``{seq, at, canary, transition, severity, phase, weight, reason, message, ...}`` with
  ``seq > after``, oldest first: at most ``limit`` (paging forward), or only the newest ``last``.
  ``suppressed`` is ``{reason, detail}`` for a transition nothing was sent of (inhibited,
  silenced, muted, catch_up: as decided when it arrived; ``canarywatch explain`` has the rest).
- ``GET /api/v1/transitions/stream?after=<seq>&instance=<id>&backlog=<n>`` -> newline-delimited
  JSON, long-lived. Lines, each an object with ``type``:

  1. ``hello`` ``{instance, at, seq, oldest_seq, heartbeat_s}``: the daemon's identity and clock;
  2. ``canaries`` ``{at, canaries: [row, ...]}``: the whole table;
  3. ``transition`` ``{transition: record, canary: row | null}`` for the backlog (records after
     ``after``; when ``instance`` names another process, or ``after`` is absent, the last
     ``backlog``), then live, each with the canary's updated row;
  4. ``heartbeat`` ``{at}`` every ``heartbeat_s`` of silence;
  5. ``overflow`` (a client too slow to keep up: reconnect with ``after``) or ``bye``
     (shutdown), then the stream ends.

A subscriber's queue is bounded: a stuck client is cut off, never the pipeline slowed down.
Call ``LiveState.close()`` before stopping the web server so open streams end at once.
"""

from __future__ import annotations

import asyncio
from typing import Final

from aiohttp import web

from canarywatch.clock import Clock
from canarywatch.formats.jsonout import format_time
from canarywatch.views.live import LiveState, encode_line

__all__ = [
    "CANARIES_PATH",
    "STREAM_PATH",
    "TRANSITIONS_PATH",
    "live_routes",
]

CANARIES_PATH: Final = "/api/v1/canaries"
TRANSITIONS_PATH: Final = "/api/v1/transitions"
STREAM_PATH: Final = "/api/v1/transitions/stream"

DEFAULT_HEARTBEAT_S: Final = 5.0
DEFAULT_BACKLOG: Final = 50
MAX_LIMIT: Final = 10_000
NDJSON: Final = "application/x-ndjson"


class _BadQuery(Exception):
    pass


def _int_param(request: web.Request, name: str, *, default: int | None) -> int | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise _BadQuery(f"{name} must be an integer") from None
    if value < 0:
        raise _BadQuery(f"{name} must not be negative")
    return min(value, MAX_LIMIT) if name != "after" else value


def _bad(reason: str) -> web.Response:
    return web.json_response({"error": reason}, status=400)


def live_routes(
    state: LiveState, *, clock: Clock, heartbeat_s: float = DEFAULT_HEARTBEAT_S
) -> list[web.RouteDef]:
    """The routes for ``web.build_app(extra_routes=...)``; see the module docstring."""

    async def canaries(_: web.Request) -> web.Response:
        now = clock.now()
        return web.json_response([row.to_json(now) for row in state.canaries()])

    async def transitions(request: web.Request) -> web.Response:
        try:
            after = _int_param(request, "after", default=0) or 0
            limit = _int_param(request, "limit", default=None)
            last = _int_param(request, "last", default=None)
        except _BadQuery as exc:
            return _bad(str(exc))
        records = state.transitions(after=after, limit=limit, last=last)
        return web.json_response([r.to_json() for r in records])

    async def stream(request: web.Request) -> web.StreamResponse:
        try:
            after = _int_param(request, "after", default=None)
            backlog = _int_param(request, "backlog", default=DEFAULT_BACKLOG)
        except _BadQuery as exc:
            return _bad(str(exc))
        instance = request.query.get("instance")
        # Subscribe and snapshot in one step (no await in between): nothing missed, nothing twice.
        sub = state.subscribe()
        now = clock.now()
        if after is None or (instance is not None and instance != state.instance):
            records = state.transitions(last=backlog)
        else:
            records = state.transitions(after=after)
        head = [
            encode_line(
                {
                    "type": "hello",
                    "instance": state.instance,
                    "at": format_time(now),
                    "seq": state.last_seq,
                    "oldest_seq": state.oldest_seq,
                    "heartbeat_s": heartbeat_s,
                }
            ),
            encode_line(
                {
                    "type": "canaries",
                    "at": format_time(now),
                    "canaries": [row.to_json() for row in state.canaries()],
                }
            ),
        ]
        # The backlog's canaries are in the table above: its transitions carry no row.
        head += [
            encode_line({"type": "transition", "transition": r.to_json(), "canary": None})
            for r in records
        ]
        response = web.StreamResponse(
            headers={
                "Content-Type": NDJSON,
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
            }
        )
        try:
            await response.prepare(request)
            await response.write(b"".join(head))
            while True:
                try:
                    line = await asyncio.wait_for(sub.queue.get(), heartbeat_s)
                except TimeoutError:
                    line = encode_line({"type": "heartbeat", "at": format_time(clock.now())})
                if line is None:
                    if sub.overflowed:
                        await response.write(encode_line({"type": "overflow"}))
                    break
                await response.write(line)
        except ConnectionResetError:
            pass  # the client went away
        finally:
            state.unsubscribe(sub)
        return response

    return [
        web.get(CANARIES_PATH, canaries),
        web.get(TRANSITIONS_PATH, transitions),
        web.get(STREAM_PATH, stream),
    ]
