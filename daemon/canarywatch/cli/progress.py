"""One status line on the terminal while a long command works (``record``, ``replay``).

Only when stderr is a terminal: in a pipe, a file or journald the line would be noise, so
``Progress`` then does nothing at all. Nor when stdout is the same terminal and the command
prints there (``replay`` to the screen): the notifications are the progress. The line is
rewritten in place with a carriage return (no escape sequences, so a dumb terminal shows it
too), at most every ``min_interval_s``, and cleared before the command's last words.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from types import TracebackType
from typing import TextIO

MIN_INTERVAL_S = 0.1
"""Least time between two redraws: a fast replay does not spend its time drawing."""


def _is_terminal(stream: TextIO | None) -> bool:
    try:
        return stream is not None and stream.isatty()
    except (AttributeError, ValueError, OSError):  # closed, or a stand-in without isatty
        return False


class Progress:
    """A status line on ``stream`` if it is a terminal (and ``unless`` is not one)."""

    def __init__(
        self,
        stream: TextIO | None,
        *,
        unless: TextIO | None = None,
        min_interval_s: float = MIN_INTERVAL_S,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self._stream = stream if _is_terminal(stream) and not _is_terminal(unless) else None
        self._min_interval_s = min_interval_s
        self._now = now
        self._last_drawn: float | None = None
        self._width = 0

    @property
    def active(self) -> bool:
        """Whether anything is drawn at all."""
        return self._stream is not None

    def update(self, text: str, *, force: bool = False) -> None:
        """Show ``text`` instead of the previous line (skipped if one was drawn just now)."""
        if self._stream is None:
            return
        now = self._now()
        if (
            not force
            and self._last_drawn is not None
            and now - self._last_drawn < self._min_interval_s
        ):
            return
        self._last_drawn = now
        padding = " " * max(0, self._width - len(text))
        self._stream.write(f"\r{text}{padding}")
        self._stream.flush()
        self._width = len(text)

    def clear(self) -> None:
        """Remove the line, leaving the cursor where it started."""
        if self._stream is None or not self._width:
            return
        self._stream.write("\r" + " " * self._width + "\r")
        self._stream.flush()
        self._width = 0

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.clear()


def format_elapsed(seconds: float) -> str:
    """``75.2`` -> ``1m15s``; ``3725`` -> ``1h02m05s``."""
    total = int(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m{secs:02d}s"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"
