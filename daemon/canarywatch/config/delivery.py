"""Config section ``dispatch``: how notifications reach receivers (timeouts, retries, drain)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from canarywatch.config.fields import SECTION, Duration


class DispatchSettings(BaseModel):
    """Delivery: timeouts, retries and the shutdown drain."""

    model_config = SECTION

    attempt_timeout: Duration = Field(default=10.0, gt=0, description="One delivery attempt.")
    retry_budget: Duration = Field(
        default=300.0, ge=0, description="How long one notification is retried."
    )
    drain_timeout: Duration = Field(
        default=20.0,
        ge=0,
        description="On shutdown, how long queued notifications may still be delivered.",
    )
    queue_size: int = Field(default=1000, ge=1, description="Per-receiver queue bound.")
