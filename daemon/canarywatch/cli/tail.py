"""``canarywatch tail``: a live terminal view of a running daemon.

It reads the daemon's live API (``canarywatch.web.live``): every canary with its phase, a weight
bar
(``▰▰▰▱▱▱▱▱▱▱ 30%``), failed checks, the last transition and its age, and a log of transitions
coloured by severity.

- On a terminal the transition log scrolls (each transition is printed once, so it stays in the
  scrollback) and the canary table below it is redrawn in place with ANSI cursor movement, every
  ``interval_s`` (the ages move) and at once on news.
- Not on a terminal (a pipe, a file) nothing is redrawn and no escape sequence is written: the
  table is printed once, then one plain line per transition.
- ``--once`` prints the table and the recent transitions and exits.
- A transition nothing was sent of (inhibited, silenced, muted, start-up state) is marked
  ``[not sent: <reason>]``, followed by why (``canarywatch explain`` shows the whole trail).

Ages are measured on the *daemon's* clock (its ``at`` stamps), so a skewed laptop clock does not
show "in 3 minutes". When the stream ends (daemon restart, a client too slow) tail reconnects
and continues after the last transition it showed; an unreachable daemon at start is one line
on stderr and exit status 1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import sys
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final, TextIO

import aiohttp
from yarl import URL

from canarywatch.cli.common import read_token, while_stdout_read
from canarywatch.cli.exitcodes import EXIT_OK, EXIT_RUNTIME
from canarywatch.formats.human import format_age
from canarywatch.sinks import weight_bar

__all__ = ["TailError", "View", "render_snapshot", "tail", "weight_bar"]

REQUEST_TIMEOUT_S: Final = 10.0
ONCE_TRANSITIONS: Final = 10
LOG_KEEP: Final = 200
RECONNECT_MAX_S: Final = 5.0
STABLE_S: Final = 1.0
"""A connection that lasted this long counts as recovered (backoff and "lost" notice reset)."""
READ_BUFFER: Final = 1 << 22
"""The ``canaries`` snapshot is one NDJSON line; allow a large table."""

RESET: Final = "\x1b[0m"
BOLD: Final = "\x1b[1m"
DIM: Final = "\x1b[2m"
RED: Final = "\x1b[31m"
GREEN: Final = "\x1b[32m"
YELLOW: Final = "\x1b[33m"
CYAN: Final = "\x1b[36m"
HIDE_CURSOR: Final = "\x1b[?25l"
SHOW_CURSOR: Final = "\x1b[?25h"
CLEAR_LINE: Final = "\x1b[K"
CLEAR_BELOW: Final = "\x1b[J"

SEVERITY_STYLE: Final[Mapping[str, str]] = {
    "info": GREEN,
    "warning": YELLOW,
    "critical": BOLD + RED,
}
PHASE_STYLE: Final[Mapping[str, str]] = {
    "Succeeded": GREEN,
    "Failed": RED,
    "Progressing": CYAN,
    "Promoting": CYAN,
    "Finalising": CYAN,
    "Waiting": YELLOW,
    "WaitingPromotion": YELLOW,
}

Row = Mapping[str, Any]
"""A canary row or a transition record, as the daemon sent it (``canarywatch.views.live``)."""


class TailError(Exception):
    """The daemon cannot be used: unreachable, refused the token, or has no live API.

    ``fatal`` errors (the daemon answered, but no) end ``tail`` even after it was connected;
    the others (connection lost) are retried once it has been.
    """

    def __init__(self, message: str, *, fatal: bool = False) -> None:
        super().__init__(message)
        self.fatal = fatal


# -- formatting (pure) --------------------------------------------------------------------------


def _time(text: object) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


def _transition_text(row: Row, key: str = "transition") -> str:
    name = str(row.get(key) or "")
    detail = str(row.get("detail") or "")
    if detail and name != "weight-advanced":
        return f"{name} {detail}"
    return name


@dataclass(frozen=True, slots=True)
class _Cell:
    text: str
    width: int = 0
    style: str = ""


def _fit(cells: Sequence[_Cell], *, width: int | None, color: bool) -> str:
    """Join cells (padded to their widths) and cut at ``width`` visible characters.

    Cutting happens on the plain text, so an escape sequence is never split and the line never
    wraps (wrapping would break the cursor arithmetic of the redraw).
    """
    out: list[str] = []
    used = 0
    for index, cell in enumerate(cells):
        text = cell.text.ljust(cell.width) if index < len(cells) - 1 else cell.text
        if index < len(cells) - 1:
            text += "  "
        if width is not None and used + len(text) > width:
            text = text[: max(width - used, 0)]
        if text:
            out.append(f"{cell.style}{text}{RESET}" if color and cell.style else text)
        used += len(text)
        if width is not None and used >= width:
            break
    return "".join(out).rstrip() if not color else "".join(out)


_HEADERS: Final = ("CLUSTER", "CANARY", "PHASE", "WEIGHT", "FAILED", "LAST TRANSITION", "AGE")


def render_table(
    rows: Sequence[Row],
    ages: Sequence[float | None],
    *,
    color: bool,
    width: int | None = None,
) -> list[str]:
    """The canary table: a header and one line per canary."""
    if not rows:
        return ["no canaries seen yet"]
    body = [
        (
            str(r.get("cluster") or "-"),
            str(r.get("canary") or ""),
            str(r.get("phase") or "?"),
            weight_bar(r.get("weight") if isinstance(r.get("weight"), int) else None),
            str(r.get("failed_checks") or 0),
            _transition_text(r, "last_transition"),
            format_age(age),
        )
        for r, age in zip(rows, ages, strict=True)
    ]
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(_HEADERS)]
    lines = [
        _fit(
            [_Cell(h, w, BOLD) for h, w in zip(_HEADERS, widths, strict=True)],
            width=width,
            color=color,
        )
    ]
    for r, cells in zip(rows, body, strict=True):
        severity = str(r.get("severity") or "")
        failed = cells[4] != "0"
        styles = (
            DIM,
            BOLD,
            PHASE_STYLE.get(cells[2], ""),
            CYAN,
            RED if failed else DIM,
            SEVERITY_STYLE.get(severity, ""),
            DIM,
        )
        lines.append(
            _fit(
                [_Cell(c, w, s) for c, w, s in zip(cells, widths, styles, strict=True)],
                width=width,
                color=color,
            )
        )
    return lines


def render_transition(
    record: Row, *, color: bool, width: int | None = None, clusters: bool = False
) -> str:
    """One log line: ``14:08:02  test/podinfo  rolled-back  Canary failed! …``."""
    at = _time(record.get("at"))
    clock = at.strftime("%H:%M:%S") if at is not None else "--:--:--"
    canary = str(record.get("canary") or "")
    if clusters and record.get("cluster"):
        canary = f"{record['cluster']}:{canary}"
    what = _transition_text(record)
    weight = record.get("weight")
    if record.get("transition") == "weight-advanced" and isinstance(weight, int):
        what = f"{what} {weight}%"
    style = SEVERITY_STYLE.get(str(record.get("severity") or ""), "")
    message = str(record.get("message") or record.get("reason") or "")
    cells = [
        _Cell(clock, 8, DIM),
        _Cell(canary, 0, BOLD),
        _Cell(what, 0, style),
    ]
    suppressed = record.get("suppressed")
    if isinstance(suppressed, Mapping):
        # Nothing of it was sent: say so first, and why (``canarywatch explain`` tells more).
        reason = str(suppressed.get("reason") or "suppressed").replace("_", "-")
        detail = str(suppressed.get("detail") or "")
        cells[2] = _Cell(what, 0, DIM)
        cells.append(_Cell(f"[not sent: {reason}]", 0, YELLOW))
        message = " · ".join(part for part in (detail, message) if part)
    cells.append(_Cell(message, 0, ""))
    return _fit(cells, width=width, color=color)


def render_snapshot(
    rows: Sequence[Row],
    records: Sequence[Row],
    *,
    origin: str,
    color: bool,
    width: int | None = None,
) -> str:
    """What ``--once`` prints."""
    ages = [r.get("age_s") if isinstance(r.get("age_s"), int | float) else None for r in rows]
    title = f"canarywatch · {origin} · {len(rows)} canar{'y' if len(rows) == 1 else 'ies'}"
    lines = [f"{BOLD}{title}{RESET}" if color else title]
    lines += render_table(rows, ages, color=color, width=width)
    multi = len({r.get("cluster") for r in rows}) > 1
    lines += ["", "recent transitions (UTC):" if records else "no transitions yet"]
    lines += [render_transition(r, color=color, width=width, clusters=multi) for r in records]
    return "\n".join(lines) + "\n"


# -- the live model -----------------------------------------------------------------------------


@dataclass(slots=True)
class View:
    """What the stream said so far: the table, the log, and the daemon's clock."""

    rows: dict[str, Row] = field(default_factory=dict)
    log: deque[Row] = field(default_factory=lambda: deque(maxlen=LOG_KEEP))
    instance: str | None = None
    last_seq: int = 0
    server_at: datetime | None = None
    mono_at: float = 0.0
    synced: bool = False
    """The table has been received (nothing is drawn before)."""

    def _sync(self, at: object, mono: float, *, now: bool = True) -> None:
        """Take the daemon's time from a stamp: ``now`` stamps (hello, heartbeat, table) are
        its clock at sending; a transition's is when it was seen, so it only moves time on."""
        when = _time(at)
        if when is not None and (now or self.server_at is None or when >= self.now(mono)):
            self.server_at = when
            self.mono_at = mono

    def now(self, mono: float) -> datetime:
        """The daemon's time now, from its last stamp plus the time passed here since."""
        if self.server_at is None:
            raise LookupError("no time from the daemon yet")
        return self.server_at + timedelta(seconds=mono - self.mono_at)

    def apply(self, message: Row, mono: float) -> tuple[list[Row], int]:
        """Take one stream line; returns the new transitions and how many were missed."""
        kind = message.get("type")
        news: list[Row] = []
        missed = 0
        if kind == "hello":
            instance = str(message.get("instance") or "")
            if self.instance is not None and instance != self.instance:
                self.last_seq = 0  # another daemon process: its seqs start over
            elif self.instance is not None:
                oldest = message.get("oldest_seq")
                if isinstance(oldest, int) and oldest - 1 > self.last_seq:
                    missed = oldest - 1 - self.last_seq
            self.instance = instance
            self._sync(message.get("at"), mono)
        elif kind == "canaries":
            rows = message.get("canaries") or []
            self.rows = {_key(r): r for r in rows if isinstance(r, Mapping)}
            self.synced = True
            self._sync(message.get("at"), mono)
        elif kind == "transition":
            record = message.get("transition")
            if isinstance(record, Mapping):
                seq = record.get("seq")
                if isinstance(seq, int) and seq > self.last_seq:
                    self.last_seq = seq
                    self.log.append(record)
                    news.append(record)
                self._sync(record.get("at"), mono, now=False)
            row = message.get("canary")
            if isinstance(row, Mapping):
                self.rows[_key(row)] = row
        elif kind == "heartbeat":
            self._sync(message.get("at"), mono)
        return news, missed

    def sorted_rows(self) -> list[Row]:
        return [self.rows[k] for k in sorted(self.rows)]

    def ages(self, rows: Sequence[Row], mono: float) -> list[float | None]:
        if self.server_at is None:
            return [None] * len(rows)
        now = self.now(mono)
        out: list[float | None] = []
        for row in rows:
            last = _time(row.get("last_transition_at"))
            out.append((now - last).total_seconds() if last is not None else None)
        return out


def _key(row: Row) -> str:
    return f"{row.get('cluster') or ''}/{row.get('namespace') or ''}/{row.get('name') or ''}"


# -- the terminal ---------------------------------------------------------------------------


class _Screen:
    """Writes the log (scrolling, above) and the table (redrawn in place, below) on a TTY; on
    anything else, plain lines and no redraw."""

    def __init__(self, out: TextIO, *, tty: bool, color: bool, origin: str) -> None:
        self.out = out
        self.tty = tty
        self.color = color
        self.origin = origin
        self.status = "connecting"
        self._footer = 0
        self._printed_table = False

    def size(self) -> tuple[int, int]:
        try:
            columns, lines = os.get_terminal_size(self.out.fileno())
        except (OSError, ValueError, AttributeError):
            columns, lines = shutil.get_terminal_size()
        return max(columns, 20), max(lines, 4)

    def _write(self, text: str) -> None:
        self.out.write(text)
        self.out.flush()

    def start(self) -> None:
        if self.tty:
            self._write(HIDE_CURSOR)

    def stop(self) -> None:
        if self.tty:
            self._write(SHOW_CURSOR)

    def line(self, text: str) -> None:
        """A line that stays (a note); on a TTY it goes above the table."""
        if self.tty:
            self._write(self._erase() + text + CLEAR_LINE + "\n")
            self._footer = 0
        else:
            self._write(text + "\n")

    def _erase(self) -> str:
        return f"\r\x1b[{self._footer}A{CLEAR_BELOW}" if self._footer else f"\r{CLEAR_BELOW}"

    def paint(self, view: View, news: Sequence[Row]) -> None:
        multi = len({r.get("cluster") for r in view.rows.values()}) > 1
        if not self.tty:
            if not self._printed_table:
                self._printed_table = True
                rows = view.sorted_rows()
                ages = view.ages(rows, time.monotonic())
                self._write(
                    "\n".join([self._title(len(rows)), *render_table(rows, ages, color=self.color)])
                    + "\n\n"
                )
            for record in news:
                self._write(render_transition(record, color=self.color, clusters=multi) + "\n")
            return
        columns, lines = self.size()
        width = columns - 1
        parts = [self._erase()]
        for record in news:
            text = render_transition(record, color=self.color, width=width, clusters=multi)
            parts.append(text + CLEAR_LINE + "\n")
        rows = view.sorted_rows()
        table = render_table(rows, view.ages(rows, time.monotonic()), color=self.color, width=width)
        footer = ["", self._title(len(rows)), *table]
        room = lines - 1
        if len(footer) > room:
            hidden = len(footer) - room + 1
            footer = [*footer[: room - 1], f"… {hidden} more"]
        parts.append("\n".join(f"{text}{CLEAR_LINE}" for text in footer))
        self._footer = len(footer) - 1
        self._write("".join(parts))

    def _title(self, count: int) -> str:
        text = (
            f"canarywatch · {self.origin} · {count} canar{'y' if count == 1 else 'ies'}"
            f" · {self.status}"
        )
        return f"{BOLD}{text}{RESET}" if self.color else text

    def finish(self) -> None:
        if self.tty and self._footer:
            self._write("\n")
            self._footer = 0


# -- HTTP -----------------------------------------------------------------------------------------


def origin_of(base_url: str) -> str:
    """``scheme://host:port``: all of the URL tail ever shows."""
    try:
        url = URL(base_url)
    except (TypeError, ValueError):
        return "the given address"
    if not url.host:
        return "the given address"
    port = f":{url.port}" if url.explicit_port else ""
    return f"{url.scheme}://{url.host}{port}"


def _why(exc: BaseException) -> str:
    if isinstance(exc, aiohttp.ClientConnectorError):
        return exc.os_error.strerror or type(exc.os_error).__name__
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    return str(exc) or type(exc).__name__


def _check_status(response: aiohttp.ClientResponse, origin: str) -> None:
    if response.status == 401:
        raise TailError(
            f"the daemon at {origin} refused the token (401): pass --token-file", fatal=True
        )
    if response.status == 404:
        raise TailError(
            f"the daemon at {origin} has no live API (404): is it an older version?", fatal=True
        )
    if response.status != 200:
        raise TailError(f"the daemon at {origin} answered HTTP {response.status}", fatal=True)


async def _get_json(
    http: aiohttp.ClientSession, url: str, origin: str, params: Mapping[str, str]
) -> Any:
    try:
        async with (
            asyncio.timeout(REQUEST_TIMEOUT_S),
            http.get(url, params=params) as response,
        ):
            _check_status(response, origin)
            return await response.json()
    except (aiohttp.ClientError, TimeoutError, json.JSONDecodeError) as exc:
        raise TailError(f"cannot reach the daemon at {origin}: {_why(exc)}") from None


async def _once(
    http: aiohttp.ClientSession, base: str, origin: str, out: TextIO, color: bool, tty: bool
) -> None:
    rows = await _get_json(http, f"{base}/api/v1/canaries", origin, {})
    records = await _get_json(
        http, f"{base}/api/v1/transitions", origin, {"last": str(ONCE_TRANSITIONS)}
    )
    if not isinstance(rows, list) or not isinstance(records, list):
        raise TailError(f"the daemon at {origin} sent something that is not the live API")
    width = None
    if tty:
        with contextlib.suppress(OSError, ValueError, AttributeError):
            width = os.get_terminal_size(out.fileno()).columns - 1
    out.write(render_snapshot(rows, records, origin=origin, color=color, width=width))
    out.flush()


class _StreamEnded(Exception):
    """The stream closed (daemon stopping, this client too slow, connection lost)."""


async def _follow(
    http: aiohttp.ClientSession,
    base: str,
    origin: str,
    view: View,
    screen: _Screen,
    interval_s: float,
    connected: asyncio.Event,
) -> None:
    """One stream connection, until it ends (``_StreamEnded``) or fails (``TailError``)."""
    params = {"after": str(view.last_seq)} if view.instance is not None else {}
    if view.instance is not None:
        params["instance"] = view.instance
    try:
        async with asyncio.timeout(REQUEST_TIMEOUT_S):
            response = await http.get(f"{base}/api/v1/transitions/stream", params=params)
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise TailError(f"cannot reach the daemon at {origin}: {_why(exc)}") from None
    async with response:
        _check_status(response, origin)
        connected.set()
        screen.status = "live"
        pending: list[Row] = []
        dirty = asyncio.Event()
        dirty.set()

        async def read() -> None:
            try:
                async for raw in response.content:
                    if not raw.strip():
                        continue
                    message = json.loads(raw)
                    if not isinstance(message, Mapping):
                        continue
                    if message.get("type") in ("bye", "overflow"):
                        break
                    news, missed = view.apply(message, time.monotonic())
                    if missed:
                        screen.line(f"… {missed} transitions happened while disconnected")
                    pending.extend(news)
                    dirty.set()
            except (aiohttp.ClientError, ValueError, TimeoutError):
                pass
            raise _StreamEnded

        async def paint() -> None:
            while True:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(interval_s):
                        await dirty.wait()
                dirty.clear()
                if not view.synced:
                    continue
                news = pending[:]
                pending.clear()
                screen.paint(view, news)

        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(read())
                group.create_task(paint())
        except* _StreamEnded:
            if view.synced:
                screen.paint(view, pending)
            raise _StreamEnded from None


async def tail(
    base_url: str,
    *,
    token: str | None,
    once: bool,
    out: TextIO,
    interval_s: float = 1.0,
    color: bool | None = None,
    err: TextIO | None = None,
) -> int:
    """Show the daemon at ``base_url``; returns the exit status (0, or 1 when unusable)."""
    err = err if err is not None else sys.stderr
    base = base_url.rstrip("/")
    origin = origin_of(base)
    tty = _isatty(out)
    if color is None:
        color = tty and not os.environ.get("NO_COLOR")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=REQUEST_TIMEOUT_S)
    async with aiohttp.ClientSession(
        headers=headers, timeout=timeout, read_bufsize=READ_BUFFER
    ) as http:
        if once:
            try:
                await _once(http, base, origin, out, color, tty)
            except TailError as exc:
                print(f"canarywatch tail: {exc}", file=err)
                return EXIT_RUNTIME
            return EXIT_OK
        return await _live(
            http, base, origin, out, err, tty=tty, color=color, interval_s=interval_s
        )


async def _live(
    http: aiohttp.ClientSession,
    base: str,
    origin: str,
    out: TextIO,
    err: TextIO,
    *,
    tty: bool,
    color: bool,
    interval_s: float,
) -> int:
    view = View()
    screen = _Screen(out, tty=tty, color=color, origin=origin)
    ever_connected = False
    lost = False
    delay = 0.5
    screen.start()
    try:
        while True:
            connected = asyncio.Event()
            began = time.monotonic()
            try:
                await _follow(http, base, origin, view, screen, interval_s, connected)
            except TailError as exc:
                if exc.fatal or not ever_connected:
                    screen.finish()
                    print(f"canarywatch tail: {exc}", file=err)
                    return EXIT_RUNTIME
            except _StreamEnded:
                pass
            if connected.is_set():
                ever_connected = True
                if time.monotonic() - began >= STABLE_S:  # not a daemon that was just stopping
                    lost = False
                    delay = 0.5
            if not lost:  # say it once per outage
                lost = True
                screen.status = "reconnecting…"
                if tty:
                    screen.paint(view, [])
                else:
                    screen.line(f"canarywatch tail: connection to {origin} lost, reconnecting")
            await asyncio.sleep(delay)
            delay = min(delay * 2, RECONNECT_MAX_S)
    finally:
        screen.finish()
        screen.stop()


def _isatty(out: TextIO) -> bool:
    try:
        return out.isatty()
    except (AttributeError, ValueError):
        return False


async def tail_command(args: argparse.Namespace) -> int:
    """``canarywatch tail``: the live terminal view of a running daemon."""
    token = read_token(args.token_file)
    view = asyncio.ensure_future(
        tail(
            args.url,
            token=token,
            once=args.once,
            out=sys.stdout,
            interval_s=max(args.interval, 0.1),
            color=args.color,
        )
    )
    return await while_stdout_read(view)
