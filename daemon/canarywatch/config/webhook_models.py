"""Config section ``webhook_intake``: Flagger's event webhook, received by the daemon.

Same conventions as ``config.daemon_models``: a frozen pydantic model, extra keys refused, every
field described for the generated reference. The route itself is
``canarywatch.sources.flagger_webhook``; it is served on the daemon's own listener
(``server.listen``) at ``POST /v1/flagger/events``.
"""

from __future__ import annotations

from typing import Final

from pydantic import BaseModel, ConfigDict, Field

from canarywatch.config.fields import Name, SecretField

_MODEL = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

DEFAULT_MAX_BODY_BYTES: Final = 256 * 1024
"""Flagger's bodies are a few hundred bytes; custom ``metadata`` rarely adds more than a few KiB."""

LIMIT_MAX_BODY_BYTES: Final = 1 << 20
"""The web server refuses larger bodies on every route anyway (``web.MAX_BODY_BYTES``)."""


class WebhookIntakeSettings(BaseModel):
    """Flagger's event webhook (`-event-webhook` or a Canary `type: event` webhook).

    Point Flagger at `http://<canarywatch>:<port>/v1/flagger/events`. Flagger cannot send
    headers on this webhook, so when `secret` is set put it in the URL as
    `?token=<secret>`; `Authorization: Bearer <secret>` is accepted too (proxies, curl).
    """

    model_config = _MODEL

    enabled: bool = Field(default=False, description="Accept Flagger's event webhook.")
    secret: SecretField | None = Field(
        default=None,
        description=(
            "Shared secret required on every POST, as `?token=` in the URL Flagger is given "
            "or as `Authorization: Bearer`; `{env: ...}`/`{file: ...}`. Default: none."
        ),
    )
    max_body_bytes: int = Field(
        default=DEFAULT_MAX_BODY_BYTES,
        ge=1024,
        le=LIMIT_MAX_BODY_BYTES,
        description="Larger request bodies are refused with 413.",
        json_schema_extra={"doc_default": "256 KiB"},
    )
    cluster: Name | None = Field(
        default=None,
        description=(
            "The `cluster` label stamped on webhook events (the Flagger that posts them runs "
            "there); default: the first configured cluster."
        ),
        json_schema_extra={"doc_default": "first cluster"},
    )
