"""Process signals on the event loop, installed and removed in one place.

The daemon (``run``), ``record`` and the long-running commands of the command line each stop on
SIGINT/SIGTERM; they share these helpers so the platform caveats (no ``add_signal_handler`` on
Windows or off the main thread) are handled once.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable, Iterable, Iterator, Mapping


def install_signal_handlers(
    loop: asyncio.AbstractEventLoop, handlers: Mapping[signal.Signals, Callable[[], None]]
) -> None:
    """Call each handler on its signal (where the loop supports it: not on Windows, not off the
    main thread, where this does nothing)."""
    for sig, handler in handlers.items():
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, handler)


def remove_signal_handlers(
    loop: asyncio.AbstractEventLoop, signals: Iterable[signal.Signals]
) -> None:
    for sig in signals:
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.remove_signal_handler(sig)


@contextlib.contextmanager
def signal_handlers(handlers: Mapping[signal.Signals, Callable[[], None]]) -> Iterator[None]:
    """``install_signal_handlers`` on the running loop for the block, removed after it."""
    loop = asyncio.get_running_loop()
    install_signal_handlers(loop, handlers)
    try:
        yield
    finally:
        remove_signal_handlers(loop, handlers)
