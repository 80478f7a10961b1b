"""The one Prometheus client of the sources: a GET with auth, TLS, a timeout and a size cap, and
the instant-query API on top of it.

Two sources talk to Prometheus-speaking endpoints: the Flagger metrics source (a ``/metrics``
scrape, or an instant query for every ``flagger_*`` series) and the low-traffic check (a
request-count query evaluated at the promotion time). Both go through :func:`fetch_text` and
:func:`query_instant` here, so credentials, TLS, redirects, size limits and the way a failure is
classified cannot drift between them.

Failures are :class:`FetchError` with a fixed :class:`FailureKind` and at most an HTTP status:
never the URL (paths and queries can hold tokens), never a credential, never a response body.
Credentials are :class:`~canarywatch.secrets.Secret` until :meth:`RequestOptions.headers` puts
them on the wire.
"""

from __future__ import annotations

import asyncio
import base64
import enum
import json
import os
import socket
import ssl
from collections.abc import Container, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Final, Protocol

import aiohttp

from canarywatch.errors import ConfigError
from canarywatch.model import JSONValue
from canarywatch.secrets import Secret

DEFAULT_MAX_BODY_BYTES: Final = 16 * 1024 * 1024
SCRAPE_ACCEPT: Final = "text/plain;version=0.0.4;q=1,*/*;q=0.1"
"""Ask promhttp for the classic text format (not protobuf, not OpenMetrics)."""
_SUCCESS: Final = range(200, 300)
_SUCCESS_OR_API_ERROR: Final = frozenset(range(200, 300)) | frozenset(range(400, 500))
"""Statuses whose body is read by :func:`query_instant`: Prometheus explains a 4xx in JSON."""


class FailureKind(enum.StrEnum):
    """Why one fetch failed (a fixed set: log field, self-event reason, metric label)."""

    TIMEOUT = "timeout"
    CONNECTION = "connection"
    TLS = "tls"
    HTTP_STATUS = "http_status"
    TOO_LARGE = "too_large"
    BAD_RESPONSE = "bad_response"
    QUERY_ERROR = "query_error"
    NO_SERIES = "no_series"
    """The answer was fine but held no ``flagger_*`` series at all."""


class FetchError(Exception):
    """One failed fetch; ``str()`` is built from the kind and status only."""

    def __init__(
        self,
        kind: FailureKind,
        *,
        status_code: int | None = None,
        error_type: str | None = None,
        os_reason: str | None = None,
    ) -> None:
        self.kind = kind
        self.status_code = status_code
        self.error_type = error_type
        """The class name of the underlying exception (its text may hold the URL)."""
        self.os_reason = os_reason
        """The system's words for a transport failure (``connection refused``, ``no answer
        within 4s``, ``certificate has expired``): never the address, URL or body."""
        super().__init__(self.describe())

    def describe(self) -> str:
        """``http_status 503`` / ``timeout``: safe for logs and notifications."""
        if self.status_code is None:
            return self.kind.value
        return f"{self.kind.value} {self.status_code}"

    def explain(self) -> str:
        """What went wrong in plain words (``connection refused``, ``answered HTTP 404``), for
        ``/readyz``; as safe as ``describe()``."""
        kind, status, why = self.kind, self.status_code, self.os_reason
        if kind is FailureKind.TIMEOUT:
            return why or "no answer in time"
        if kind is FailureKind.CONNECTION:
            return why or "cannot connect"
        if kind is FailureKind.TLS:
            return f"TLS: {why}" if why else "TLS handshake failed"
        if kind is FailureKind.HTTP_STATUS:
            return f"answered HTTP {status}"
        if kind is FailureKind.TOO_LARGE:
            return "answer larger than the size limit"
        if kind is FailureKind.QUERY_ERROR:
            return f"Prometheus refused the query (HTTP {status})"
        if kind is FailureKind.NO_SERIES:
            return "answered without a single flagger_* series"
        return "answer is not what was expected" + (f" (HTTP {status})" if status else "")

    @property
    def answered(self) -> bool:
        """Whether the other side answered at all (vs. timeout, refused, TLS failure)."""
        return self.kind not in (FailureKind.TIMEOUT, FailureKind.CONNECTION, FailureKind.TLS)


def os_reason(exc: BaseException) -> str | None:
    """The operating system's words for why ``exc`` (or what caused it) failed, lower case:
    ``connection refused``, ``name or service not known``, ``certificate has expired``. Built
    from the errno, never from the exception's text (which names the address and the URL)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        inner = getattr(current, "os_error", None)  # aiohttp.ClientConnectorError wraps it
        if isinstance(inner, OSError):
            current = inner
        if isinstance(current, ssl.SSLCertVerificationError):
            return str(current.verify_message or "certificate verification failed")
        if isinstance(current, socket.gaierror):
            return "host name not resolved"
        if isinstance(current, OSError) and current.errno and current.errno > 0:
            return os.strerror(current.errno).lower()
        current = current.__cause__ or current.__context__
    return None


# -- what every request carries: auth, TLS, limits --------------------------------------------


@dataclass(frozen=True, slots=True)
class BearerAuth:
    token: Secret


@dataclass(frozen=True, slots=True)
class BasicAuth:
    username: str
    password: Secret


HttpAuth = BearerAuth | BasicAuth


class BasicAuthConfig(Protocol):
    """The shape of a ``basic_auth:`` config block (``config.sources.BasicAuthSpec``)."""

    @property
    def username(self) -> str: ...
    @property
    def password(self) -> Secret: ...


class TLSConfig(Protocol):
    """The shape of a ``tls:`` config block (``config.sources.TLSSpec``)."""

    @property
    def ca_file(self) -> Path | None: ...
    @property
    def cert_file(self) -> Path | None: ...
    @property
    def key_file(self) -> Path | None: ...
    @property
    def insecure_skip_verify(self) -> bool: ...


def http_auth(bearer_token: Secret | None, basic_auth: BasicAuthConfig | None) -> HttpAuth | None:
    """The credential a Prometheus config block names (config validation allows at most one)."""
    if bearer_token is not None:
        return BearerAuth(bearer_token)
    if basic_auth is not None:
        return BasicAuth(basic_auth.username, basic_auth.password)
    return None


@dataclass(frozen=True, slots=True)
class TLSOptions:
    """Client TLS settings; the defaults verify the server against the system CAs."""

    ca_file: str | None = None
    insecure_skip_verify: bool = False
    cert_file: str | None = None
    key_file: str | None = None
    """Defaults to ``cert_file`` (a PEM holding both)."""

    @classmethod
    def from_config(cls, tls: TLSConfig) -> TLSOptions:
        """The options of a ``tls:`` config block."""
        return cls(
            ca_file=str(tls.ca_file) if tls.ca_file else None,
            insecure_skip_verify=tls.insecure_skip_verify,
            cert_file=str(tls.cert_file) if tls.cert_file else None,
            key_file=str(tls.key_file) if tls.key_file else None,
        )

    def ssl_context(self, *, path: str = "tls") -> ssl.SSLContext:
        """Build the context once, at start-up; unreadable files are a ``ConfigError``."""
        try:
            context = ssl.create_default_context(cafile=self.ca_file)
        except (OSError, ssl.SSLError):
            raise ConfigError("cannot load the CA file", path=f"{path}.ca_file") from None
        if self.insecure_skip_verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if self.cert_file is not None:
            try:
                context.load_cert_chain(self.cert_file, self.key_file)
            except (OSError, ssl.SSLError):
                raise ConfigError(
                    "cannot load the client certificate/key", path=f"{path}.cert_file"
                ) from None
        elif self.key_file is not None:
            raise ConfigError("key_file needs cert_file", path=f"{path}.key_file")
        return context

    def request_ssl(self, *, path: str = "tls") -> ssl.SSLContext | bool:
        """What ``RequestOptions.ssl`` takes: ``True`` (aiohttp's default verification) when
        nothing is configured, else a context built by :meth:`ssl_context`."""
        if self == TLSOptions():
            return True
        return self.ssl_context(path=path)


@dataclass(frozen=True, slots=True)
class RequestOptions:
    """What every request of one source carries."""

    timeout_s: float
    auth: HttpAuth | None = None
    ssl: ssl.SSLContext | bool = True
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES

    def headers(self, accept: str) -> dict[str, str]:
        """Request headers; the credential is revealed here, at the last moment."""
        headers = {"Accept": accept}
        if isinstance(self.auth, BearerAuth):
            headers["Authorization"] = f"Bearer {self.auth.token.reveal()}"
        elif isinstance(self.auth, BasicAuth):
            pair = f"{self.auth.username}:{self.auth.password.reveal()}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(pair).decode("ascii")
        return headers


# -- the HTTP call ------------------------------------------------------------------------------


async def fetch_text(
    http: aiohttp.ClientSession,
    url: str,
    options: RequestOptions,
    *,
    params: Mapping[str, str] | None = None,
    accept: str = SCRAPE_ACCEPT,
    ok_statuses: Container[int] = _SUCCESS,
) -> tuple[int, str]:
    """GET ``url`` under ``asyncio.timeout``; ``(status, body)`` or :class:`FetchError`.

    Redirects are not followed (a credential must not travel to another location). A status
    outside ``ok_statuses`` raises ``http_status`` without reading the body.
    """
    try:
        async with asyncio.timeout(options.timeout_s):
            async with http.get(
                url,
                params=params,
                headers=options.headers(accept),
                ssl=options.ssl,
                allow_redirects=False,
            ) as response:
                if response.status not in ok_statuses:
                    raise FetchError(FailureKind.HTTP_STATUS, status_code=response.status)
                body = await _read_capped(response, options.max_body_bytes)
                return response.status, body.decode("utf-8", errors="replace")
    # aiohttp's messages name the host and sometimes the whole URL: keep the kind and the
    # exception's class name, drop its text and its traceback chain.
    except TimeoutError as exc:
        raise FetchError(
            FailureKind.TIMEOUT,
            error_type=type(exc).__name__,
            os_reason=f"no answer within {options.timeout_s:g}s",
        ) from None
    except (aiohttp.ClientSSLError, ssl.SSLError) as exc:
        raise FetchError(
            FailureKind.TLS, error_type=type(exc).__name__, os_reason=os_reason(exc)
        ) from None
    except (aiohttp.ClientError, OSError) as exc:
        raise FetchError(
            FailureKind.CONNECTION, error_type=type(exc).__name__, os_reason=os_reason(exc)
        ) from None


async def _read_capped(response: aiohttp.ClientResponse, limit: int) -> bytes:
    if response.content_length is not None and response.content_length > limit:
        raise FetchError(FailureKind.TOO_LARGE)
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > limit:
            raise FetchError(FailureKind.TOO_LARGE)
        chunks.append(chunk)
    return b"".join(chunks)


# -- Prometheus' instant-query API ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PromSample:
    """One element of an instant vector: metric name, labels (without ``__name__``), value."""

    name: str
    """Empty for a series an aggregation made (``sum(...)`` drops ``__name__``)."""
    labels: Mapping[str, str]
    value: str
    """As Prometheus wrote it (``"1"``, ``"0.212"``, ``"NaN"``, ``"+Inf"``)."""

    @property
    def number(self) -> float:
        """The value as a float (checked to parse when the answer was read)."""
        return float(self.value)


async def query_instant(
    http: aiohttp.ClientSession,
    base_url: str,
    promql: str,
    options: RequestOptions,
    *,
    at: datetime | None = None,
) -> tuple[PromSample, ...]:
    """Run an instant query via ``GET <base_url>/api/v1/query``, at ``at`` or else "now".

    4xx answers with Prometheus' JSON error body (bad query, ...) are ``query_error``; any other
    non-2xx is ``http_status``; a body that is not a vector result is ``bad_response``.
    """
    url = base_url.rstrip("/") + "/api/v1/query"
    params = {"query": promql}
    if at is not None:
        params["time"] = f"{at.timestamp():.3f}"
    status, text = await fetch_text(
        http,
        url,
        options,
        params=params,
        accept="application/json",
        ok_statuses=_SUCCESS_OR_API_ERROR,
    )
    try:
        body: JSONValue = json.loads(text)
    except ValueError:
        raise FetchError(FailureKind.BAD_RESPONSE, status_code=status) from None
    if not 200 <= status < 300:
        is_api_error = isinstance(body, dict) and body.get("status") == "error"
        kind = FailureKind.QUERY_ERROR if is_api_error else FailureKind.HTTP_STATUS
        raise FetchError(kind, status_code=status)
    return parse_vector(body)


def parse_vector(body: JSONValue) -> tuple[PromSample, ...]:
    """The samples of a ``/api/v1/query`` success body, or ``bad_response``.

    Only an instant vector is accepted (what both callers' queries return); a sample whose value
    is not a number, or whose labels are not strings, makes the whole answer ``bad_response``.
    """
    if not isinstance(body, dict) or body.get("status") != "success":
        raise FetchError(FailureKind.BAD_RESPONSE)
    data = body.get("data")
    if not isinstance(data, dict) or data.get("resultType") != "vector":
        raise FetchError(FailureKind.BAD_RESPONSE)
    result = data.get("result")
    if not isinstance(result, list):
        raise FetchError(FailureKind.BAD_RESPONSE)
    samples: list[PromSample] = []
    for item in result:
        sample = _parse_sample(item)
        if sample is None:
            raise FetchError(FailureKind.BAD_RESPONSE)
        samples.append(sample)
    return tuple(samples)


def _parse_sample(item: JSONValue) -> PromSample | None:
    if not isinstance(item, dict):
        return None
    metric, value = item.get("metric", {}), item.get("value")
    if not isinstance(metric, dict) or not isinstance(value, list) or len(value) != 2:
        return None
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in metric.items()):
        return None
    name, raw = metric.get("__name__", ""), value[1]
    if not isinstance(name, str) or not isinstance(raw, str):
        return None
    try:
        float(raw)
    except ValueError:
        return None
    labels = {k: v for k, v in metric.items() if k != "__name__" and isinstance(v, str)}
    return PromSample(name=name, labels=labels, value=raw)
