"""The state store: what canarywatch must remember across restarts.

``StateStore`` (protocol and record types in ``base``), backed by ``SqliteStateStore`` in the
daemon and ``MemoryStateStore`` in tests and ``replay``; in the daemon ``HoldingStateStore``
wraps it, holding writes in memory (and retrying them) while the disk is full or read-only.
``codec`` holds the exact JSON encodings of events and notifications that stored state uses.
"""

from __future__ import annotations

from canarywatch.state.base import (
    DB_FILENAME,
    SCHEMA_VERSION,
    LastNotification,
    OutboxItem,
    SilenceRecord,
    StateError,
    StateHeld,
    StateStore,
    StateUnwritable,
)
from canarywatch.state.holding import HoldingStateStore
from canarywatch.state.memory import MemoryStateStore
from canarywatch.state.sqlite import SqliteStateStore

__all__ = [
    "DB_FILENAME",
    "SCHEMA_VERSION",
    "HoldingStateStore",
    "LastNotification",
    "MemoryStateStore",
    "OutboxItem",
    "SilenceRecord",
    "SqliteStateStore",
    "StateError",
    "StateHeld",
    "StateStore",
    "StateUnwritable",
]
