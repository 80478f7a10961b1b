"""A state directory whose disk a test can fill up and free again.

Two kinds, one interface (``fill()``, ``free()``, ``store()``):

- ``tmpfs``: a real filesystem of a few MB mounted for the test (needs root and permission to
  mount; skipped with the reason otherwise). ``fill()`` writes a file until ``ENOSPC``; SQLite
  then fails exactly as on a full disk in production, and the write probe finds ``ENOSPC``.
- ``size-cap``: no privileges needed. The database's connection is capped with SQLite's
  ``max_page_count`` (``SqliteStateStore(max_size_bytes=...)``), and ``fill()`` grows the file to
  the cap through a second connection (ballast rows), so the store's next write gets SQLite's
  own "database or disk is full" (SQLITE_FULL). ``free()`` deletes the ballast: its pages are
  reused, like space freed on a disk.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from canarywatch.clock import Clock
from canarywatch.state import DB_FILENAME, SqliteStateStore

KINDS = ("tmpfs", "size-cap")


class SmallDisk:
    """A directory for the state database, on a disk that ``fill()`` fills."""

    kind = ""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.db = directory / DB_FILENAME

    def store(self, clock: Clock) -> SqliteStateStore:
        return SqliteStateStore(self.db, clock=clock)

    def fill(self) -> None:
        raise NotImplementedError

    def free(self) -> None:
        raise NotImplementedError


class TmpfsDisk(SmallDisk):
    kind = "tmpfs"

    def __init__(self, directory: Path) -> None:
        super().__init__(directory)
        self._filler = directory / "filler"

    def fill(self) -> None:
        """Write until the filesystem says ENOSPC (big chunks, then small ones, then bytes)."""
        fd = os.open(self._filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            for chunk in (1 << 16, 4096, 512, 1):
                with contextlib.suppress(OSError):
                    while True:
                        os.write(fd, bytes(chunk))
            os.fsync(fd)
        finally:
            os.close(fd)

    def free(self) -> None:
        self._filler.unlink(missing_ok=True)

    def remount(self, mode: str) -> None:
        """``mode`` ``"ro"`` or ``"rw"`` (read-only needs no file open for writing on it)."""
        subprocess.run(
            ["mount", "-o", f"remount,{mode}", str(self.dir)],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        )


class CappedDisk(SmallDisk):
    kind = "size-cap"
    SPARE_BYTES = 1 << 20
    """Room the capped store has before ``fill()``."""

    def __init__(self, directory: Path) -> None:
        super().__init__(directory)
        self._cap: int | None = None

    def store(self, clock: Clock) -> SqliteStateStore:
        if self._cap is None:
            with SqliteStateStore(self.db, clock=clock):
                pass
            self._cap = self._size() + self.SPARE_BYTES
        return SqliteStateStore(self.db, clock=clock, max_size_bytes=self._cap)

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.db, timeout=5.0, isolation_level=None)

    def _size(self) -> int:
        conn = self._connect()
        try:
            pages = conn.execute("PRAGMA page_count").fetchone()[0]
            size = conn.execute("PRAGMA page_size").fetchone()[0]
        finally:
            conn.close()
        return int(pages * size)

    def fill(self) -> None:
        """Grow the file past the cap (another connection is not capped) and use up free
        pages, so the capped store cannot allocate one more page."""
        assert self._cap is not None, "open the store first"
        conn = self._connect()
        try:
            n = 0
            while True:
                conn.execute(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                    (f"ballast-{n}", "x" * 3000),
                )
                n += 1
                pages, free = (
                    conn.execute("PRAGMA page_count").fetchone()[0],
                    conn.execute("PRAGMA freelist_count").fetchone()[0],
                )
                size = conn.execute("PRAGMA page_size").fetchone()[0]
                if free == 0 and pages * size >= self._cap + 8 * size:
                    break
        finally:
            conn.close()

    def free(self) -> None:
        conn = self._connect()
        try:
            conn.execute("DELETE FROM meta WHERE key LIKE 'ballast-%'")
        finally:
            conn.close()


def _mount_tmpfs(directory: Path, size: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    directory.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(directory)],
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip() or done.returncode}")


def _unmount(directory: Path) -> None:
    done = subprocess.run(["umount", str(directory)], capture_output=True, timeout=20, check=False)
    if done.returncode != 0:  # something still holds a file open: detach it anyway
        subprocess.run(
            ["umount", "-l", str(directory)], capture_output=True, timeout=20, check=False
        )


@contextlib.contextmanager
def small_disk(kind: str, base: Path, *, size: str = "4m") -> Iterator[SmallDisk]:
    """A ``SmallDisk`` of ``kind`` (one of ``KINDS``) under ``base``; unmounted afterwards."""
    directory = base / f"disk-{kind}"
    if kind == "size-cap":
        directory.mkdir(parents=True, exist_ok=True)
        yield CappedDisk(directory)
        return
    if kind != "tmpfs":
        raise ValueError(f"unknown disk kind {kind!r}")
    _mount_tmpfs(directory, size)
    try:
        yield TmpfsDisk(directory)
    finally:
        _unmount(directory)
