"""Config section ``receivers``: named destinations, each a sink plugin with its options.

The options are the plugin's business (``canarywatch.sinks`` validates them against its own
model); the loader only turns ``{env: ...}``/``{file: ...}`` values into secrets and refuses
secrets written inline.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from pydantic import BaseModel, Field

from canarywatch.config.fields import SECTION, Name

DEFAULT_RECEIVER: Final = "default"
"""The receiver of a config without ``receivers`` (and of no config at all)."""
DEFAULT_SINK: Final = "console"
"""``DEFAULT_RECEIVER``'s sink: notifications on stdout."""


class Receiver(BaseModel):
    """A named destination: a sink plugin plus the options handed to it."""

    model_config = SECTION

    name: Name = Field(description="Unique name routes refer to.")
    sink: Name = Field(
        description="Entry-point name of the sink plugin (`console`, `jsonl`, `slack`, ...)."
    )
    send_resolved: bool = Field(default=False, description="Also notify when a condition resolves.")
    options: Mapping[str, object] = Field(
        default_factory=dict,
        description=(
            "Passed to the sink plugin as is; `{env: NAME}`/`{file: PATH}` values become "
            "secrets. Keys that look secret (token, password, webhook_url, ...) must use them."
        ),
        json_schema_extra={"doc_default": "{}"},
    )
