"""Test helpers shipped with the package, for our tests and for third-party sink authors.

- ``make_event`` / ``make_notification``: small, valid model objects with overridable fields
  (``factories``).
- ``RecordingSink``: a sink that keeps what it was given and fails, hangs or blocks on cue
  (``recording_sink``).
- ``SinkContract`` / ``check_sink_contract``: the contract-test kit for sink plugins (render
  purity over every transition, escaping fuzz, HTTP status mapping against a local server,
  secret leaks); see ``docs/writing-a-sink-plugin.md`` (``contract``).
- ``run_in_virtual_time``: await something while moving a ``VirtualClock`` to each deadline
  (``virtual_time``).

No mocks: these are real implementations of the contracts, small enough to trust. Import from
here (``from canarywatch.testing import ...``): the submodules are how it is kept, not the API.
"""

from __future__ import annotations

from canarywatch.testing.contract import (
    HOSTILE_STRINGS,
    HTTP_EXPECTATIONS,
    MENTION_TOKENS,
    RETRY_AFTER_S,
    HttpExpectation,
    SinkContract,
    SinkContractError,
    check_sink_contract,
    contract_notifications,
    hostile_notifications,
    payload_strings,
)
from canarywatch.testing.factories import T0, make_event, make_notification
from canarywatch.testing.recording_sink import HANG, RecordingSink
from canarywatch.testing.virtual_time import run_in_virtual_time

__all__ = [
    "HANG",
    "HOSTILE_STRINGS",
    "HTTP_EXPECTATIONS",
    "MENTION_TOKENS",
    "RETRY_AFTER_S",
    "T0",
    "HttpExpectation",
    "RecordingSink",
    "SinkContract",
    "SinkContractError",
    "check_sink_contract",
    "contract_notifications",
    "hostile_notifications",
    "make_event",
    "make_notification",
    "payload_strings",
    "run_in_virtual_time",
]
