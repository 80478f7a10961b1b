"""``canarywatch run``: the daemon, in the foreground, until a signal stops it."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

from canarywatch.cli.common import Interrupted
from canarywatch.cli.exitcodes import EXIT_OK
from canarywatch.config import load_config
from canarywatch.logs import configure_logging, get_logger


async def run_command(config_path: Path) -> int:
    """``canarywatch run``: the daemon, until SIGTERM (exit 0) or Ctrl-C (``Interrupted``)."""
    config = load_config(config_path)
    # The log goes to stderr (or log.file), as every command's: stdout is the console sink's.
    try:
        configure_logging(
            level=config.log.level, fmt=config.log.format, stream=sys.stderr, file=config.log.file
        )
    except OSError as exc:
        reason = (exc.strerror or type(exc).__name__).lower()
        raise config.error_at(("log", "file"), f"cannot open the log file: {reason}") from None
    watched = bool(config.clusters) or config.metrics_source.mode != "off"
    if not watched and not config.webhook_intake.enabled:
        get_logger("cli").warning(
            "sources_not_configured",
            config=str(config_path),
            detail="no clusters, metrics_source or webhook_intake: nothing to notify about",
        )
    # Only now: a mistyped config path answers at once.
    from canarywatch.app import App
    from canarywatch.signals import install_signal_handlers

    class TerminalApp(App):
        """Tells Ctrl-C (exit 130) from SIGTERM (exit 0). Both drain the same way: the exit
        status is the command line's business, so the app keeps its one stop handler and
        this wraps it for SIGINT."""

        interrupted = False

        def _install_signals(self, loop: asyncio.AbstractEventLoop) -> None:
            super()._install_signals(loop)
            install_signal_handlers(loop, {signal.SIGINT: self._on_interrupt})

        def _on_interrupt(self) -> None:
            self.interrupted = True
            self._on_stop_signal()

    app = TerminalApp(config, config_path=config_path)
    await app.run()
    if app.interrupted:
        raise Interrupted("shut down cleanly")
    return EXIT_OK
