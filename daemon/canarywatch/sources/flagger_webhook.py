"""The fourth source: Flagger's event webhook, received as ``POST /v1/flagger/events``.

Flagger calls the webhook (the global ``-event-webhook`` / ``EVENT_WEBHOOK_URL``, or a Canary's
own ``analysis.webhooks[]`` entry with ``type: event``) **synchronously** on every
``recordEvent``, with a 10 s timeout and, for the global hook, no retry
(``reference/flagger.md`` §4). So this route does as little as possible: check the secret and
the size, decode, validate the fields canarywatch needs, hand an
:class:`~canarywatch.model.Observation` to the intake and answer ``202 Accepted``. Everything
that decides anything (which transition, is it a repeat of one the Event watch already saw)
happens later in the pipeline, like for every other source. Flagger counts any status <= 202 as
success and only logs failures.

Point Flagger at the daemon's listener::

    # Helm: eventWebhook, or the flag -event-webhook, or env EVENT_WEBHOOK_URL
    http://canarywatch.canarywatch:9797/v1/flagger/events?token=<secret>

The route is not under ``/api/``, so ``server.token`` does not guard it: Flagger cannot set
headers on this webhook. Its own shared secret (``webhook_intake.secret``) is accepted in either
form, compared in constant time and never logged:

- ``?token=<secret>`` in the URL given to Flagger (the only form Flagger can send);
- ``Authorization: Bearer <secret>`` (curl, a proxy that adds it).

Answers (every body is JSON):

- ``202 {"status": "accepted"}``: on the intake.
- ``401`` missing or wrong secret; ``413`` body over ``max_body_bytes``; ``415`` a Content-Type
  that is not JSON; ``400 {"error": reason}`` a body that is not JSON, not an object, or lacks
  ``name``/``namespace``/``metadata.eventMessage``; ``503`` when the intake stays full for
  ``emit_timeout_s`` (Flagger waits on us, so we do not wait long).

Each refusal is counted by ``reason`` (``canarywatch_webhook_rejected_total``) and logged once as
``webhook_rejected``.
"""

from __future__ import annotations

import asyncio
import hmac
import json
from collections.abc import Callable
from typing import Final

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter
from structlog.typing import FilteringBoundLogger

from canarywatch.clock import Clock
from canarywatch.config.sources import WebhookIntakeSettings
from canarywatch.model import JSONValue, Observation, SourceName
from canarywatch.normalise.webhook import read_payload
from canarywatch.secrets import Secret
from canarywatch.sources.base import Emit
from canarywatch.web.server import read_body_limited

__all__ = [
    "REJECT_REASONS",
    "WEBHOOK_PATH",
    "webhook_rejected_counter",
    "webhook_routes",
]

WEBHOOK_PATH: Final = "/v1/flagger/events"
TOKEN_PARAM: Final = "token"  # noqa: S105 - the name of the query parameter, not a secret
DEFAULT_EMIT_TIMEOUT_S: Final = 2.0
"""How long a POST may wait for room on a full intake before it is answered 503."""

UNAUTHORIZED = "unauthorized"
TOO_LARGE = "too_large"
UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
INVALID_JSON = "invalid_json"
NOT_OBJECT = "not_object"
MISSING_FIELD = "missing_field"
OVERLOADED = "overloaded"
REJECT_REASONS: Final = (
    UNAUTHORIZED,
    TOO_LARGE,
    UNSUPPORTED_MEDIA_TYPE,
    INVALID_JSON,
    NOT_OBJECT,
    MISSING_FIELD,
    OVERLOADED,
)
"""The ``reason`` label values of ``canarywatch_webhook_rejected_total``: a fixed set."""

CountRejected = Callable[[str], None]
"""Called once per refused request with its reason (one of ``REJECT_REASONS``)."""


def webhook_rejected_counter(registry: CollectorRegistry) -> Counter:
    """``canarywatch_webhook_rejected_total{reason}``, every reason pre-declared at 0."""
    counter = Counter(
        "canarywatch_webhook_rejected",
        "Flagger event-webhook requests refused, by reason.",
        ["reason"],
        registry=registry,
    )
    for reason in REJECT_REASONS:
        counter.labels(reason=reason)
    return counter


def _is_json_type(content_type: str) -> bool:
    """``application/json``, ``application/<x>+json`` or ``text/json`` (parameters ignored)."""
    mime = content_type.split(";", 1)[0].strip().lower()
    kind, _, subtype = mime.partition("/")
    return (kind in ("application", "text") and subtype == "json") or (
        kind == "application" and subtype.endswith("+json")
    )


def _authorised(request: web.Request, secret: Secret) -> bool:
    expected = secret.reveal().encode()
    header = request.headers.get("Authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), expected):
        return True
    query_token = request.query.get(TOKEN_PARAM)
    return query_token is not None and hmac.compare_digest(query_token.encode(), expected)


def _missing_field_reason(note: str) -> str:
    return NOT_OBJECT if note == "body is not a JSON object" else MISSING_FIELD


def webhook_routes(
    emit: Emit,
    settings: WebhookIntakeSettings,
    *,
    clock: Clock,
    rejected: Counter | CountRejected,
    log: FilteringBoundLogger,
    default_cluster: str = "",
    emit_timeout_s: float = DEFAULT_EMIT_TIMEOUT_S,
) -> list[web.RouteDef]:
    """The route for ``web.build_app(extra_routes=...)``.

    ``rejected`` is ``webhook_rejected_counter(registry)`` or any callable taking the reason.
    Observations are stamped ``cluster=settings.cluster or default_cluster`` (pass the first
    configured cluster's name: the webhook event must carry the same ``cluster`` as the Event
    watch's, or the two are not recognised as one transition).
    """
    cluster = settings.cluster or default_cluster
    secret = settings.secret
    limit = settings.max_body_bytes
    count: CountRejected
    if isinstance(rejected, Counter):
        counter = rejected

        def count(reason: str) -> None:
            counter.labels(reason=reason).inc()

    else:
        count = rejected

    def refuse(status: int, reason: str, error: str, **facts: str) -> web.Response:
        count(reason)
        log.warning("webhook_rejected", reason=reason, status_code=status, **facts)
        return web.json_response({"error": error}, status=status)

    async def receive(request: web.Request) -> web.Response:
        if secret is not None and not _authorised(request, secret):
            return refuse(401, UNAUTHORIZED, "missing or wrong token")
        if not _is_json_type(request.headers.get("Content-Type", "")):
            return refuse(415, UNSUPPORTED_MEDIA_TYPE, "Content-Type must be application/json")
        body = await read_body_limited(request, limit)
        if body is None:
            return refuse(413, TOO_LARGE, f"body larger than {limit} bytes")
        try:
            data: JSONValue = json.loads(body)
        except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
            return refuse(400, INVALID_JSON, "body is not valid JSON")
        payload = read_payload(data, cluster=cluster)
        if isinstance(payload, str):
            return refuse(400, _missing_field_reason(payload), payload)
        observation = Observation(
            at=clock.now(), source=SourceName.FLAGGER_WEBHOOK, data=data, cluster=cluster
        )
        try:
            async with asyncio.timeout(emit_timeout_s):
                await emit(observation)
        except TimeoutError:
            return refuse(
                503, OVERLOADED, "intake full, try again later", canary=str(payload.canary)
            )
        log.debug("webhook_accepted", canary=str(payload.canary), event_type=payload.event_type)
        return web.json_response({"status": "accepted"}, status=202)

    return [web.post(WEBHOOK_PATH, receive)]
