"""The control API's client (``canarywatch silence|outbox``) and the CLI's table formatting.

``ControlClient`` speaks to ``canarywatch.web.control`` over HTTP. Every failure becomes a
``ControlError`` whose text is safe to print: the server's own reason, or "could not reach"
naming only ``scheme://host:port`` (never the token, never a path or query from the base URL).
Each call opens and closes its own HTTP session: the CLI makes one or two calls per run.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Final

import aiohttp
from yarl import URL

from canarywatch.errors import CanarywatchError
from canarywatch.model import JSONValue

__all__ = ["DEFAULT_TIMEOUT_S", "ControlClient", "ControlError", "format_outbox", "format_silences"]

DEFAULT_TIMEOUT_S: Final = 10.0


class ControlError(CanarywatchError):
    """A control API call failed; ``status`` is the HTTP status when the daemon answered."""

    def __init__(self, message: str, *, status: int | None = None, field: str | None = None):
        super().__init__(message)
        self.status = status
        self.field = field


def _origin(base_url: str) -> str:
    """``scheme://host:port`` of ``base_url``: nothing else of it is ever shown."""
    try:
        url = URL(base_url)
        host = url.host or "?"
    except (TypeError, ValueError):
        return "the configured address"
    if ":" in host:
        host = f"[{host}]"
    port = url.port
    return f"{url.scheme}://{host}" + (f":{port}" if port is not None else "")


class ControlClient:
    """Async client of the daemon's control API (see ``canarywatch.web.control``)."""

    def __init__(
        self, base_url: str, *, token: str | None, timeout_s: float = DEFAULT_TIMEOUT_S
    ) -> None:
        try:
            url = URL(base_url)
        except (TypeError, ValueError):
            url = URL()
        if url.scheme not in ("http", "https") or not url.host:
            raise ControlError("the control API address must look like http://HOST:PORT")
        # Credentials travel as the bearer token only; a query or fragment means nothing here.
        self._base = url.with_user(None).with_query(None).with_fragment(None)
        self._origin = _origin(base_url)
        self._token = token
        self._timeout_s = timeout_s

    def __repr__(self) -> str:
        return f"ControlClient({self._origin!r})"

    async def _call(
        self,
        method: str,
        path: str,
        *,
        body: Mapping[str, JSONValue] | None = None,
        query: Mapping[str, str] | None = None,
    ) -> Any:
        url = self._base / path
        if query:
            url = url.with_query(query)
        headers = {"Accept": "application/json"}
        if self._token is not None:
            headers["Authorization"] = f"Bearer {self._token}"
        data = json.dumps(body).encode() if body is not None else None
        if data is not None:
            headers["Content-Type"] = "application/json"
        try:
            async with (
                asyncio.timeout(self._timeout_s),
                aiohttp.ClientSession() as http,
                http.request(method, url, data=data, headers=headers) as resp,
            ):
                status = resp.status
                raw = await resp.read()
        except TimeoutError:
            raise ControlError(
                f"timed out after {self._timeout_s:g}s waiting for the daemon at {self._origin}"
            ) from None
        except aiohttp.ClientError:
            raise ControlError(f"is the daemon running? could not reach {self._origin}") from None
        try:
            decoded = json.loads(raw) if raw else None
        except ValueError:
            decoded = None
        if status >= 400:
            if isinstance(decoded, dict) and isinstance(decoded.get("error"), str):
                field = decoded.get("field")
                raise ControlError(
                    decoded["error"],
                    status=status,
                    field=field if isinstance(field, str) else None,
                )
            raise ControlError(
                f"the daemon at {self._origin} answered HTTP {status}", status=status
            )
        if decoded is None:
            raise ControlError(
                f"the daemon at {self._origin} sent a response that is not JSON (HTTP {status})",
                status=status,
            )
        return decoded

    @staticmethod
    def _rows(answer: Any, key: str) -> list[dict[str, Any]]:
        rows = answer.get(key) if isinstance(answer, dict) else None
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise ControlError(f"unexpected response from the daemon: no {key!r} list")
        return rows

    @staticmethod
    def _object(answer: Any) -> dict[str, Any]:
        if not isinstance(answer, dict):
            raise ControlError("unexpected response from the daemon: not a JSON object")
        return answer

    # -- decision trails --------------------------------------------------------------------

    async def explain(self, namespace: str, name: str, transition: str | None = None) -> Any:
        """The decision trails of ``namespace/name`` (``control_api.explain_routes``)."""
        if not namespace or not name or "/" in namespace + name:
            raise ControlError(f"not a canary: {namespace}/{name}")
        query = {"transition": transition} if transition else None
        answer = await self._call("GET", f"api/v1/explain/{namespace}/{name}", query=query)
        self._rows(answer, "trails")  # the shape is checked; rendering is explain's
        return answer

    # -- silences ---------------------------------------------------------------------------

    async def add_silence(
        self,
        matchers: Sequence[str],
        *,
        created_by: str,
        comment: str,
        duration_s: float | None = None,
        ends_at: datetime | None = None,
        starts_at: datetime | None = None,
    ) -> dict[str, Any]:
        """Add a silence for ``duration_s`` seconds or until ``ends_at`` (exactly one)."""
        if (duration_s is None) == (ends_at is None):
            raise ValueError("give exactly one of duration_s and ends_at")
        if isinstance(matchers, str):
            raise TypeError("matchers is a sequence of matcher strings")
        body: dict[str, JSONValue] = {
            "matchers": list(matchers),
            "created_by": created_by,
            "comment": comment,
        }
        if duration_s is not None:
            body["duration"] = duration_s
        if ends_at is not None:
            body["ends_at"] = _rfc3339(ends_at)
        if starts_at is not None:
            body["starts_at"] = _rfc3339(starts_at)
        return self._object(await self._call("POST", "api/v1/silences", body=body))

    async def list_silences(self, include_expired: bool = False) -> list[dict[str, Any]]:
        query = {"expired": "true"} if include_expired else {}
        answer = await self._call("GET", "api/v1/silences", query=query)
        return self._rows(answer, "silences")

    async def expire_silence(self, id: str) -> dict[str, Any]:
        if not id or "/" in id:
            raise ControlError(f"not a silence id: {id!r}")
        return self._object(await self._call("DELETE", f"api/v1/silences/{id}"))

    # -- outbox -----------------------------------------------------------------------------

    async def outbox_list(self, dead: bool = False) -> list[dict[str, Any]]:
        path = "api/v1/outbox/dead" if dead else "api/v1/outbox"
        return self._rows(await self._call("GET", path), "items")

    async def outbox_retry(self, id: int) -> dict[str, Any]:
        return self._object(await self._call("POST", f"api/v1/outbox/{int(id)}/retry"))

    async def outbox_drop(self, id: int) -> dict[str, Any]:
        return self._object(await self._call("DELETE", f"api/v1/outbox/{int(id)}"))


def _rfc3339(at: datetime) -> str:
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError("times sent to the daemon must be timezone-aware")
    return at.isoformat()


# --- formatting for the CLI ---------------------------------------------------------------------

_COMMENT_WIDTH: Final = 48
_ERROR_WIDTH: Final = 160


def _cell(value: object) -> str:
    if value is None:
        return "-"
    text = " ".join(str(value).split())  # one line: newlines and runs of spaces become one
    return text or "-"


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    lines = [headers, *rows]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )


def format_silences(rows: Sequence[Mapping[str, Any]]) -> str:
    """A table of silences: id, matchers, starts, ends, created_by, comment, state."""
    if not rows:
        return "no silences"
    headers = ("ID", "MATCHERS", "STARTS", "ENDS", "CREATED_BY", "COMMENT", "STATE")
    body = []
    for row in rows:
        matchers = row.get("matchers")
        matcher_text = (
            "{" + ", ".join(str(m) for m in matchers) + "}" if isinstance(matchers, list) else "-"
        )
        state = _cell(row.get("state"))
        if row.get("origin") == "config":
            state += " (config)"
        body.append(
            (
                _cell(row.get("id")),
                _cell(matcher_text),
                _cell(row.get("starts_at")),
                _cell(row.get("ends_at")),
                _cell(row.get("created_by")),
                _clip(_cell(row.get("comment")), _COMMENT_WIDTH),
                state,
            )
        )
    return _table(headers, body)


def format_outbox(rows: Sequence[Mapping[str, Any]]) -> str:
    """A table of outbox items: id, state, receiver, status, canaries, events, failed attempts,
    when created, when the next attempt is due and why the last one failed (last, and cut only
    past ``_ERROR_WIDTH``: the reason is the point). Held items (accepted while the state store
    could not be written, not yet in the outbox) are explained under the table."""
    if not rows:
        return "outbox is empty"
    headers = (
        "ID",
        "STATE",
        "RECEIVER",
        "STATUS",
        "CANARIES",
        "EVENTS",
        "ATTEMPTS",
        "CREATED",
        "NEXT_ATTEMPT",
        "LAST_ERROR",
    )
    body = []
    for row in rows:
        canaries = row.get("canaries")
        canary_text = ", ".join(str(c) for c in canaries) if isinstance(canaries, list) else None
        body.append(
            (
                _cell(row.get("id")),
                _cell(row.get("state")),
                _cell(row.get("receiver")),
                _cell(row.get("status")),
                _clip(_cell(canary_text), _COMMENT_WIDTH),
                _cell(row.get("events")),
                _cell(row.get("attempts")),
                _cell(row.get("created_at")),
                _cell(row.get("next_attempt_at")),
                _clip(_cell(row.get("last_error")), _ERROR_WIDTH),
            )
        )
    table = _table(headers, body)
    held = next((row for row in rows if row.get("state") == "held"), None)
    if held is not None:
        because = _cell(held.get("held_because") or "not yet written to the state store")
        table += f"\nheld: {because}; delivered once written"
    return table
