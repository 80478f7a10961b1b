"""structlog configuration and the redaction processor.

Named ``logs`` so it never shadows the standard library's ``logging``. Output is JSON lines
when the stream is not a TTY (journald, kubectl logs) and ``ConsoleRenderer`` on a TTY. The log
goes to stderr (or the file ``log.file`` names), never to stdout: stdout is command output and
the console sink's notifications, which must not be interleaved with log lines.
Everything passes ``Redactor`` last before rendering, including the standard-library records
of aiohttp and kubernetes_asyncio, so a webhook URL or token in an exception text is cut down
to ``scheme://host`` before it is written anywhere.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Final, TextIO, cast

import structlog
from structlog.processors import NAME_TO_LEVEL
from structlog.typing import EventDict, FilteringBoundLogger, Processor, WrappedLogger

from canarywatch.secrets import Secret

MASK: Final = "***"
LEVELS: Final = ("debug", "info", "warning", "error")
FORMATS: Final = ("auto", "json", "console")

_SECRET_KEY: Final = re.compile(r"token|secret|password|authorization|webhook_url", re.I)
_URL: Final = re.compile(
    r"(?P<scheme>https?)://(?:[^\s/?#@'\"<>]*@)?(?P<host>[^\s/?#'\"<>)\]]+)"
    r"(?P<rest>[/?#][^\s'\"<>)\]]*)?",
    re.IGNORECASE,
)
_SCALARS: Final = (int, float, bool, type(None))

_HANDLER_NAME: Final = "canarywatch"


def strip_urls(text: str) -> str:
    """Cut every http(s) URL in ``text`` down to ``scheme://host[:port]``.

    Paths, queries, fragments and user info are where webhook tokens and API keys live.
    """
    return _URL.sub(lambda m: f"{m['scheme']}://{m['host']}", text)


class Redactor:
    """Processor masking secrets in an event dict, recursively.

    - values of keys matching ``token|secret|password|authorization|webhook_url`` -> ``***``;
    - ``Secret`` objects -> ``***`` wherever they appear;
    - http(s) URLs in strings, exception values and other objects' ``str`` -> scheme://host.
    """

    def __call__(self, logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
        return {key: self._field(key, value) for key, value in event_dict.items()}

    def _field(self, key: object, value: object) -> object:
        if isinstance(key, str) and _SECRET_KEY.search(key) and value is not None:
            return MASK
        return self.redact(value)

    def redact(self, value: object) -> object:
        """``value`` with secrets masked and URLs stripped; JSON-friendly types kept."""
        if isinstance(value, Secret):
            return MASK
        if isinstance(value, str):
            return strip_urls(value)
        if isinstance(value, _SCALARS):
            return value
        if isinstance(value, BaseException):
            return strip_urls(f"{type(value).__name__}: {value}")
        if isinstance(value, Mapping):
            return {k: self._field(k, v) for k, v in value.items()}
        if isinstance(value, list | tuple | set | frozenset):
            return [self.redact(v) for v in value]
        return strip_urls(str(value))


class LevelFilter:
    """Processor dropping events below ``level``: one threshold every logger reads at each call,
    so a reload's ``set_level`` reaches the loggers components bound at start-up."""

    def __init__(self, level: int = logging.INFO) -> None:
        self.level = level

    def __call__(self, logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
        if NAME_TO_LEVEL.get(method_name, logging.CRITICAL) < self.level:
            raise structlog.DropEvent
        return event_dict


_LEVEL_FILTER: Final = LevelFilter()

_configured: tuple[str, str, TextIO] | None = None
_log_file: tuple[Path, TextIO] | None = None
"""The file ``log.file`` named, open for appending (kept open across reconfigurations)."""


def configure_logging(
    level: str = "info",
    fmt: str = "auto",
    stream: TextIO | None = None,
    *,
    file: str | Path | None = None,
) -> None:
    """Configure structlog (and route stdlib logging through the same chain).

    The log goes to ``file`` when given (appended, line-buffered; ``OSError`` when it cannot be
    opened), else to ``stream``, else to stderr. Idempotent: calling again with the same
    arguments changes nothing; different arguments replace the previous configuration (the CLI
    configures a default, then the config's).
    """
    global _configured
    if level not in LEVELS:
        raise ValueError(f"log level must be one of {', '.join(LEVELS)}, not {level!r}")
    if fmt not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    out = _open_log_file(Path(file)) if file is not None else (stream or sys.stderr)
    key = (level, fmt, out)
    if _configured is not None and _configured[:2] == key[:2] and _configured[2] is out:
        return
    console = fmt == "console" or (fmt == "auto" and _isatty(out))
    renderer: Processor = (
        structlog.dev.ConsoleRenderer(colors=_isatty(out))
        if console
        else structlog.processors.JSONRenderer()
    )
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
        # Render tracebacks to text *before* redaction, so URLs in them are stripped too.
        structlog.processors.format_exc_info,
        Redactor(),
    ]
    numeric = logging.getLevelNamesMapping()[level.upper()]
    _LEVEL_FILTER.level = numeric
    structlog.configure(
        # The level is the filter's, read at each call, so ``set_level`` reaches loggers bound
        # before it (a bound logger keeps the wrapper class it was built with).
        processors=[_LEVEL_FILTER, *shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
        logger_factory=structlog.WriteLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )
    _route_stdlib(out, numeric, shared, renderer)
    _configured = key


def set_level(level: str) -> None:
    """Change the minimum level of the configured log at once, for loggers bound earlier too
    (``log.level`` changed by a reload); the format and destination stay."""
    global _configured
    if level not in LEVELS:
        raise ValueError(f"log level must be one of {', '.join(LEVELS)}, not {level!r}")
    numeric = logging.getLevelNamesMapping()[level.upper()]
    _LEVEL_FILTER.level = numeric
    logging.getLogger().setLevel(numeric)
    if _configured is not None:
        _configured = (level, _configured[1], _configured[2])


def _open_log_file(path: Path) -> TextIO:
    global _log_file
    if _log_file is not None and _log_file[0] == path:
        return _log_file[1]
    path.parent.mkdir(parents=True, exist_ok=True)
    stream = path.open("a", encoding="utf-8", buffering=1)
    if _log_file is not None:
        _log_file[1].close()
    _log_file = (path, stream)
    return stream


def reset_logging() -> None:
    """Undo ``configure_logging`` (tests): structlog defaults, no stdlib handler of ours."""
    global _configured, _log_file
    structlog.reset_defaults()
    root = logging.getLogger()
    for handler in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(handler)
    _configured = None
    if _log_file is not None:
        _log_file[1].close()
        _log_file = None


def _route_stdlib(out: TextIO, level: int, shared: list[Processor], renderer: Processor) -> None:
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
    handler = logging.StreamHandler(out)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared[:-2]],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                Redactor(),
                renderer,
            ],
        )
    )
    root.addHandler(handler)
    root.setLevel(level)


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def get_logger(component: str) -> FilteringBoundLogger:
    """A logger bound to ``component`` (``"stage.inhibit"``, ``"sink.slack"``)."""
    return cast(FilteringBoundLogger, structlog.get_logger(component=component))
