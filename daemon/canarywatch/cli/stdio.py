"""The command line's standard streams: a reader that goes away ends a command quietly.

``canarywatch replay day.jsonl | head`` closes the pipe after ten lines; Unix tools then stop
without a word (they die of SIGPIPE, which a shell reports as 141). Python ignores SIGPIPE and
raises ``BrokenPipeError`` instead, so the command line follows the Python documentation's
recipe: point stdout at ``/dev/null`` (nothing more can fail on it, not even the flush at
interpreter exit) and exit 141. Long-running commands that write to stdout only now and then
(the demo) watch for the reader going away instead of waiting for their next write to fail.
"""

from __future__ import annotations

import asyncio
import os
import select
import stat
import sys

STDOUT_POLL_S = 0.2
"""How often ``until_stdout_gone`` looks at a stdout that is a socket."""

_discarded = False


def ensure_std_streams() -> None:
    """Give a closed stdout or stderr (``>&-``) ``/dev/null``.

    Python sets ``sys.stdout`` to ``None`` when fd 1 is closed at start-up, and the next file
    the process opens (the state database) would become fd 1: every stray write would land in
    it. Taking the descriptor first makes both harmless.
    """
    for fd, name in ((1, "stdout"), (2, "stderr")):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_WRONLY)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)
            setattr(sys, name, open(fd, "w", encoding="utf-8", closefd=False))  # noqa: SIM115


def _stdout_fd() -> int | None:
    """stdout's descriptor when it is a pipe or a socket (only those lose their reader)."""
    try:
        fd = sys.stdout.fileno()
        mode = os.fstat(fd).st_mode
    except (AttributeError, OSError, ValueError):
        return None
    return fd if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) else None


def stdout_gone() -> bool:
    """True when stdout is a pipe or socket whose reader has gone (``| head`` exited)."""
    fd = _stdout_fd()
    if fd is None:
        return False
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    return any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0))


def discard_stdout() -> None:
    """Point stdout at ``/dev/null``: what is still buffered, or written later, goes nowhere."""
    global _discarded
    _discarded = True
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        return
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, fd)
    finally:
        os.close(null)


def stdout_discarded() -> bool:
    """True once ``discard_stdout`` ran: the reader had gone, the command is ending quietly."""
    return _discarded


async def until_stdout_gone(poll_s: float = STDOUT_POLL_S) -> None:
    """Return once stdout's reader has gone; never, when stdout is a terminal or a file.

    A pipe's writing end reports an error to the event loop the moment its reader closes
    (it never reports anything else), so for a pipe this wakes at once; a socket is polled.
    """
    fd = _stdout_fd()
    if fd is None:
        await asyncio.Event().wait()
        return
    if stat.S_ISFIFO(os.fstat(fd).st_mode):
        loop = asyncio.get_running_loop()
        gone = asyncio.Event()
        try:
            loop.add_reader(fd, gone.set)
        except (NotImplementedError, OSError, ValueError):
            pass  # no such event loop support: poll
        else:
            try:
                await gone.wait()
            finally:
                loop.remove_reader(fd)
            return
    while True:  # no event for it on every kind of descriptor: poll
        if stdout_gone():
            return
        await asyncio.sleep(poll_s)
