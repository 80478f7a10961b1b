"""HTTP outcomes as ``DeliveryError``s, classified once for every sink.

5xx, 408, 429 and connection failures are retryable, other 4xx are not; ``Retry-After`` is
honoured (capped). Error text never carries a URL's path, query or credentials: webhook URLs
are secrets, so ``redact_urls`` keeps only scheme and host.

``send_json`` is the one request every HTTP sink makes: send a JSON body once, read the answer,
classify it with ``classify_http``, and turn a transport failure into ``classify_exception``'s
error raised ``from None`` (aiohttp's exception text can quote the secret URL).
"""

from __future__ import annotations

import json
import os
import re
import socket
import ssl
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import aiohttp

from canarywatch.clock import SystemClock
from canarywatch.errors import DeliveryError
from canarywatch.formats.jsonout import dumps
from canarywatch.model import DeliveryReason, JSONValue

__all__ = [
    "RETRY_AFTER_CAP_S",
    "HttpAnswer",
    "classify_exception",
    "classify_http",
    "encode_json",
    "parse_retry_after",
    "redact_urls",
    "send_json",
]

RETRY_AFTER_CAP_S = 3600.0
"""Longest ``Retry-After`` taken at face value; the dispatcher's retry budget caps it further."""

_URL = re.compile(r"\b([a-zA-Z][a-zA-Z0-9+.-]*://)([^/\s?#@]*@)?([^/\s?#]+)[^\s\"'<>]*")


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


def encode_json(payload: object) -> bytes:
    """``payload`` as the compact UTF-8 JSON canarywatch sends (``dumps``: keys sorted).

    Raises a permanent ``invalid_payload`` ``DeliveryError`` when it cannot be encoded, so a
    sink that encodes once (to sign the bytes, or to send them to several replicas) fails the
    same way ``send_json`` does.
    """
    try:
        return dumps(payload).encode()
    except (TypeError, ValueError):
        raise DeliveryError(DeliveryReason.INVALID_PAYLOAD, retryable=False) from None


@dataclass(frozen=True, slots=True)
class HttpAnswer:
    """What one request got back, read and classified (see ``send_json``)."""

    status: int
    headers: Mapping[str, str]
    """The response headers, names lower-cased (servers and proxies differ in case)."""
    text: str
    """The body as text (undecodable bytes replaced). Never put it in a ``DeliveryError``;
    clean it (``clean_text``, ``redact_urls``) before logging it."""
    error: DeliveryError | None
    """``None`` for 2xx, else the error to raise: ``classify_http``'s verdict, with the
    statuses a sink named in ``payload_errors`` turned into a permanent ``invalid_payload``."""

    def json(self) -> JSONValue:
        """The body decoded as JSON; ``None`` when it is empty or not JSON."""
        try:
            return json.loads(self.text) if self.text.strip() else None
        except ValueError:
            return None


async def send_json(
    http: aiohttp.ClientSession,
    url: str,
    body: object = None,
    *,
    method: str = "POST",
    headers: Mapping[str, str] | None = None,
    client_timeout: aiohttp.ClientTimeout | None = None,
    ssl_context: ssl.SSLContext | bool = True,
    payload_errors: Collection[int] = (),
) -> HttpAnswer:
    """Send ``body`` as JSON once and return the classified answer; never retries.

    ``body``: a JSON object or array (encoded with ``encode_json``), the exact ``bytes`` to
    send (already encoded, e.g. because they are signed), or ``None`` for no body.
    ``Content-Type: application/json`` is set unless ``headers`` name one; ``client_timeout``
    (aiohttp's, per request) defaults to the session's. Redirects are not
    followed (a redirect would carry the body, and any secret in it, elsewhere): a 3xx is a
    permanent ``http_4xx``. ``payload_errors``: statuses by which the service says the body is
    wrong (Discord's 400 and 413, say), reported as a permanent ``invalid_payload``.

    Returns the answer for any status, so a sink can look closer (a body error code, a
    rate-limit header) before raising ``answer.error``. Raises ``classify_exception``'s
    ``DeliveryError`` ``from None`` when the request fails in transport (connection, timeout,
    TLS), or when aiohttp refuses to build it.
    """
    data = body if isinstance(body, bytes) or body is None else encode_json(body)
    send_headers = dict(headers or {})
    if data is not None and not any(k.lower() == "content-type" for k in send_headers):
        send_headers["Content-Type"] = "application/json"
    try:
        async with http.request(
            method,
            url,
            data=data,
            headers=send_headers,
            ssl=ssl_context,
            allow_redirects=False,
            timeout=client_timeout if client_timeout is not None else http.timeout,
        ) as response:
            status = response.status
            answer_headers = {k.lower(): v for k, v in response.headers.items()}
            text = await response.text(errors="replace")
    except (aiohttp.ClientError, TimeoutError, OSError, TypeError, ValueError) as exc:
        # ``from None``: aiohttp's exception text can quote the URL, which may be the secret.
        raise classify_exception(exc) from None
    error = classify_http(status, answer_headers, body=text)
    if error is not None and status in payload_errors:
        error = DeliveryError(DeliveryReason.INVALID_PAYLOAD, retryable=False, status_code=status)
    return HttpAnswer(status=status, headers=answer_headers, text=text, error=error)
