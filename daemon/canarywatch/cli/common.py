"""What several commands share: their two exceptions, reading ``-``, the token file, and
running a long command only while someone reads its output."""

from __future__ import annotations

import asyncio
import errno
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from canarywatch.cli import stdio
from canarywatch.config import Check, Config, load_config, parse_config
from canarywatch.errors import CanarywatchError
from canarywatch.signals import install_signal_handlers, remove_signal_handlers
from canarywatch.views.explain import transition_filter

__all__ = [
    "STDIN",
    "STDIN_NAME",
    "Interrupted",
    "UsageError",
    "load_config_arg",
    "load_optional_config",
    "parse_transition",
    "read_stdin",
    "read_token",
    "while_stdout_read",
]


class UsageError(CanarywatchError):
    """A command-line argument that cannot work (an unreadable file, options that exclude
    each other): one line, exit 2, like a configuration error."""


class Interrupted(Exception):
    """Ctrl-C ended the command after it cleaned up; ``detail`` completes the one line."""

    def __init__(self, detail: str | None = None) -> None:
        super().__init__(detail or "interrupted")
        self.detail = detail


def read_token(path: Path | None) -> str | None:
    """The API token from ``--token-file``; ``UsageError`` naming the file and why not."""
    if path is None:
        return None
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise UsageError(f"{path}: cannot read token file: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise UsageError(f"{path}: cannot read token file: not UTF-8 text") from None


STDIN = Path("-")
"""``-`` where a config or recording path is taken: read standard input instead."""
STDIN_NAME = "<stdin>"


def read_stdin(what: str) -> str:
    """All of standard input (for ``-``); ``UsageError`` when there is none to read."""
    if sys.stdin is None:
        raise UsageError(f"-: cannot read the {what} from standard input: it is closed")
    try:
        return sys.stdin.read()
    except UnicodeDecodeError:
        raise UsageError(f"{STDIN_NAME}: the {what} is not UTF-8 text") from None
    except OSError as exc:
        raise UsageError(f"{STDIN_NAME}: cannot read the {what}: {exc.strerror or exc}") from None


def load_config_arg(
    path: Path, *, skip_secrets: bool = False, check: Check | None = None
) -> Config:
    """``load_config`` of a command-line path, where ``-`` is standard input."""
    if path == STDIN:
        text = read_stdin("configuration")
        return parse_config(text, filename=STDIN_NAME, skip_secrets=skip_secrets, check=check)
    return load_config(path, skip_secrets=skip_secrets, check=check)


def load_optional_config(config_path: Path | None, *, skip_secrets: bool = False) -> Config | None:
    """``load_config_arg`` of an optional ``--config``; ``None``: the built-in policy."""
    if config_path is None:
        return None
    return load_config_arg(config_path, skip_secrets=skip_secrets)


def parse_transition(text: str | None) -> str | None:
    """``--transition`` (a transition's name or a trail id) as ``views.explain`` filters it."""
    try:
        return transition_filter(text)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


async def while_stdout_read(
    work: asyncio.Future[int], *, stop_signals: tuple[signal.Signals, ...] = ()
) -> int:
    """Await ``work`` (a long-running command) while someone reads its stdout.

    When stdout's reader goes away (``| head``), ``work`` is cancelled (it cleans up on the
    way out), stdout is discarded and ``BrokenPipeError`` tells the command line to end
    quietly. A signal in ``stop_signals`` cancels ``work`` too (``Interrupted``) until
    something inside it installs its own handler.
    """
    loop = asyncio.get_running_loop()
    watcher = asyncio.ensure_future(stdio.until_stdout_gone())
    install_signal_handlers(loop, {sig: _canceller(work) for sig in stop_signals})
    either = asyncio.Event()
    work.add_done_callback(lambda _: either.set())
    watcher.add_done_callback(lambda _: either.set())
    try:
        await either.wait()
        if watcher.done() and not watcher.cancelled():
            stdio.discard_stdout()
    finally:
        watcher.cancel()
        if not work.done():
            work.cancel()
            await asyncio.wait({work})
        remove_signal_handlers(loop, stop_signals)
    if stdio.stdout_discarded():
        raise BrokenPipeError(errno.EPIPE, "stdout closed")
    if work.cancelled():
        raise Interrupted
    return work.result()


def _canceller(work: asyncio.Future[int]) -> Callable[[], None]:
    def cancel() -> None:
        work.cancel()

    return cancel
