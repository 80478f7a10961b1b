"""The exit codes of every ``canarywatch`` command, in one place.

``cli`` maps errors to them (``except*``): a configuration or usage problem is 2, anything that
failed at run time (a delivery, a query, an unreachable daemon) is 1. Scripts and systemd read
these numbers, so they are a public interface.
"""

from __future__ import annotations

from typing import Final

__all__ = ["EXIT_BROKEN_PIPE", "EXIT_CONFIG", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_RUNTIME"]

EXIT_OK: Final = 0
EXIT_RUNTIME: Final = 1
"""Something failed while running: a delivery, a query, a daemon that cannot be reached."""
EXIT_CONFIG: Final = 2
"""The configuration or the command line cannot work."""
EXIT_INTERRUPTED: Final = 130
"""128 + SIGINT: what a shell reports for a command stopped with Ctrl-C."""
EXIT_BROKEN_PIPE: Final = 141
"""128 + SIGPIPE: what a shell reports for ``yes | head``; nothing is printed."""
