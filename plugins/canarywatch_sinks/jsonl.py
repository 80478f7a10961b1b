"""``jsonl``: one JSON object per notification per line, to stdout or appended to a file.

The object is ``canarywatch.sinks.notification_to_json`` (the same shape ``canarywatch replay``
prints), so a file written here can be diffed, grepped with ``jq`` or compared with a replay.
Each line is flushed as it is written; the file and its parent directories are created on demand.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import sys
from pathlib import Path
from typing import ClassVar, TextIO

import pydantic

from canarywatch.model import Notification
from canarywatch.sinks import (
    DeliveryError,
    DeliveryReason,
    Payload,
    dumps,
    notification_to_json,
)
from canarywatch_sinks.base import BuiltinSink


class JsonlOptions(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    path: str | None = None
    """File to append to; stdout when unset."""


class JsonlSink(BuiltinSink[JsonlOptions]):
    """Writes ``notification_to_json`` lines; file writes run off the event loop."""

    supports_resolve: ClassVar[bool] = True
    options_model: ClassVar[type[pydantic.BaseModel] | None] = JsonlOptions

    def _setup(self) -> None:
        path = self._options.path
        self._path = Path(path) if path else None
        self.prints_notifications = self._path is None  # stdout: the line is the record
        self._file: TextIO | None = None
        self._lock = asyncio.Lock()

    def render(self, n: Notification) -> str:
        """One compact, key-sorted JSON object, without the trailing newline."""
        return dumps(notification_to_json(n))

    def _open(self, path: Path) -> TextIO:
        if self._file is None:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except FileExistsError:  # a file where a directory should be
                raise NotADirectoryError(
                    errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(path.parent)
                ) from None
            self._file = path.open("a", encoding="utf-8")
        return self._file

    def _write(self, line: str) -> None:
        if self._path is None:
            sys.stdout.write(line)
            sys.stdout.flush()
            return
        stream = self._open(self._path)
        try:
            stream.write(line)
            stream.flush()
        except OSError:
            # Drop the file with what it buffered: the retry writes the line again, once.
            self._file = None
            with contextlib.suppress(OSError):
                stream.close()
            raise

    async def check(self) -> None:
        """Open (creating) the output file now, so a bad path fails at start-up."""
        if self._path is not None:
            try:
                await asyncio.to_thread(self._open, self._path)
            except OSError as exc:
                raise DeliveryError(
                    DeliveryReason.CONNECTION, retryable=False, detail=self._cannot("open", exc)
                ) from exc

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
                raise DeliveryError(
                    DeliveryReason.CONNECTION, retryable=True, detail=self._cannot("write", exc)
                ) from exc

    def _cannot(self, verb: str, exc: OSError) -> str:
        """``cannot open /var/lib/x.jsonl for appending: not a directory``: the path and the
        system's words for the errno (``exc``'s text, which repeats the path, is not used)."""
        where = str(self._path) if self._path is not None else "stdout"
        what = {"open": f"open {where} for appending", "write": f"write to {where}"}.get(
            verb, f"{verb} {where}"
        )
        why = os.strerror(exc.errno).lower() if exc.errno else type(exc).__name__
        if exc.filename is not None and str(exc.filename) != where:  # a parent directory
            why = f"{exc.filename}: {why}"
        return f"cannot {what}: {why}"

    async def aclose(self) -> None:
        if self._file is not None:
            file, self._file = self._file, None
            try:
                await asyncio.to_thread(file.close)
            except OSError as exc:  # what it still buffered could not be written
                self.log.warning("sink_close_failed", detail=self._cannot("close", exc))
