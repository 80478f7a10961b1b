"""``jsonl``: one JSON object per notification per line, to stdout or appended to a file.

The object is ``canarywatch.sinks.notification_to_json`` (the same shape ``canarywatch replay``
prints), so a file written here can be diffed, grepped with ``jq`` or compared with a replay.
Each line is flushed as it is written; the file and its parent directories are created on demand.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import ClassVar, TextIO

import aiohttp
import pydantic

from canarywatch.model import Notification
from canarywatch.sinks import (
    BoundLogger,
    DeliveryError,
    DeliveryReason,
    Payload,
    Sink,
    SinkMemory,
    dumps,
    notification_to_json,
)


class JsonlOptions(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    path: str | None = None
    """File to append to; stdout when unset."""


class JsonlSink(Sink):
    """Writes ``notification_to_json`` lines; file writes run off the event loop."""

    supports_resolve: ClassVar[bool] = True
    options_model: ClassVar[type[pydantic.BaseModel] | None] = JsonlOptions

    def __init__(
        self,
        name: str,
        options: Mapping[str, object],
        *,
        http: aiohttp.ClientSession,
        log: BoundLogger,
        memory: SinkMemory | None = None,
    ) -> None:
        super().__init__(name, options, http=http, log=log, memory=memory)
        opts = JsonlOptions.model_validate(dict(options))
        self._path = Path(opts.path) if opts.path else None
        self._file: TextIO | None = None
        self._lock = asyncio.Lock()

    def render(self, n: Notification) -> str:
        """One compact, key-sorted JSON object, without the trailing newline."""
        return dumps(notification_to_json(n))

    def _open(self, path: Path) -> TextIO:
        if self._file is None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._file = path.open("a", encoding="utf-8")
        return self._file

    def _write(self, line: str) -> None:
        stream = self._open(self._path) if self._path is not None else sys.stdout
        stream.write(line)
        stream.flush()

    async def check(self) -> None:
        """Open (creating) the output file now, so a bad path fails at start-up."""
        if self._path is not None:
            try:
                await asyncio.to_thread(self._open, self._path)
            except OSError as exc:
                raise DeliveryError(DeliveryReason.CONNECTION, retryable=False) from exc

    async def deliver(self, payload: Payload) -> None:
        if not isinstance(payload, str) or "\n" in payload:
            raise DeliveryError(DeliveryReason.INVALID_PAYLOAD, retryable=False)
        async with self._lock:
            try:
                if self._path is None:
                    self._write(payload + "\n")
                else:
                    await asyncio.to_thread(self._write, payload + "\n")
            except OSError as exc:  # disk full, permissions: may clear, so retry
                raise DeliveryError(DeliveryReason.CONNECTION, retryable=True) from exc

    async def aclose(self) -> None:
        if self._file is not None:
            file, self._file = self._file, None
            await asyncio.to_thread(file.close)
