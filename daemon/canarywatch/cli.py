"""Command line: parse arguments, hand off, map errors to exit codes. Nothing else.

Exit codes: 0 success, 1 runtime failure, 2 configuration or usage error.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

from canarywatch import commands as commands
from canarywatch.durations import parse_duration
from canarywatch.errors import CanarywatchError, ConfigError
from canarywatch.recording import RecordingError

EXIT_OK = 0
EXIT_RUNTIME = 1
EXIT_CONFIG = 2

DEFAULT_CONFIG = Path("/etc/canarywatch/config.yaml")


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="canarywatch",
        description="One notification per Flagger canary transition.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the daemon")
    run.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="configuration file")

    demo = sub.add_parser(
        "demo", help="the daemon against the built-in simulated cluster, on the terminal"
    )
    demo.add_argument("--config", type=Path, help="policy/config file (default: built-in)")
    demo.add_argument(
        "--scenario", action="append", dest="scenarios", help="play only this scenario"
    )
    demo.add_argument(
        "--duration", type=_duration, default=40.0, help="wall time of the demo (default 40s)"
    )
    demo.add_argument("--port", type=int, default=9797, help="the daemon's HTTP port")
    demo.add_argument(
        "--replay",
        action="store_true",
        help="instead: replay the bundled Flagger day (no cluster) on virtual time",
    )
    demo.add_argument(
        "--json", action="store_true", help="with --replay: print JSON lines, not the console"
    )

    replay = sub.add_parser(
        "replay",
        help="run a recording through the pipeline on virtual time",
        description=(
            "Replay a recording (JSON Lines of observations) through the whole pipeline on "
            "virtual time and print each notification that would be sent as one JSON line."
        ),
    )
    replay.add_argument("recording", type=Path, help="recording file (JSON Lines)")
    replay.add_argument("--config", type=Path, help="policy/config file (default: built-in)")
    replay.add_argument(
        "--send", action="store_true", help="deliver through the configured sinks instead"
    )
    replay.add_argument(
        "--stats", action="store_true", help="print pipeline counters to stderr at the end"
    )

    record = sub.add_parser("record", help="write what the sources see to a recording")
    record.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    record.add_argument("--output", type=Path, required=True, help="recording file to append to")
    record.add_argument("--duration", type=_duration, help="stop after this long (e.g. 10m)")

    check = sub.add_parser("check-config", help="validate a configuration file")
    check.add_argument("config", type=Path)

    sub.add_parser("plugins", help="list every discovered sink plugin")

    test_sink = sub.add_parser(
        "test-sink", help="send a sample rollback notification through one receiver"
    )
    test_sink.add_argument("receiver", help="receiver name from the config")
    test_sink.add_argument("--config", type=Path, help="config file (default: built-in)")
    test_sink.add_argument(
        "--dry-run", action="store_true", help="print the rendered payload instead of sending"
    )

    tail = sub.add_parser("tail", help="live view of the running daemon: canaries and transitions")
    tail.add_argument("--url", default="http://127.0.0.1:9797", help="the daemon's HTTP address")
    tail.add_argument("--token-file", type=Path, help="file holding the API token")
    tail.add_argument("--once", action="store_true", help="print a snapshot and exit")
    tail.add_argument(
        "--interval", type=_duration, default=1.0, help="redraw interval (default 1s)"
    )
    tail.add_argument("--color", action=argparse.BooleanOptionalAction, default=None)

    for name, help_text in (
        ("silence", "add, list or expire silences of the running daemon"),
        ("outbox", "list, retry or drop undelivered notifications of the running daemon"),
    ):
        control = sub.add_parser(name, help=help_text)
        control.add_argument(
            "--url", default="http://127.0.0.1:9797", help="the daemon's HTTP address"
        )
        control.add_argument("--token-file", type=Path, help="file holding the API token")
        actions = control.add_subparsers(dest="action", required=True, metavar="ACTION")
        if name == "silence":
            add = actions.add_parser("add", help="add a silence")
            add.add_argument("matchers", nargs="+", help='e.g. namespace="shop" canary=~"check.*"')
            add.add_argument("--duration", type=_duration, default=3600.0, help="default 1h")
            add.add_argument("--created-by", required=True)
            add.add_argument("--comment", required=True)
            listing = actions.add_parser("list", help="list silences")
            listing.add_argument("--expired", action="store_true", help="include expired ones")
            expire = actions.add_parser("expire", help="expire a silence")
            expire.add_argument("id")
        else:
            listing = actions.add_parser("list", help="list pending notifications")
            listing.add_argument("--dead", action="store_true", help="the dead-letter table")
            retry = actions.add_parser("retry", help="move a dead letter back to pending")
            retry.add_argument("id", type=int)
            drop = actions.add_parser("drop", help="delete an outbox item")
            drop.add_argument("id", type=int)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _dispatch(args)
    except KeyboardInterrupt:
        return 130
    except (CanarywatchError, ExceptionGroup) as exc:
        return _report(exc)


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


def _report(exc: BaseException) -> int:
    """Print what went wrong; config/recording errors exit 2, other known errors 1.

    The daemon runs in a ``TaskGroup``, so its errors arrive as exception groups: they are
    flattened here. An unexpected exception (a bug) is re-raised with its traceback.
    """
    leaves = _leaves(exc)
    if not all(isinstance(leaf, CanarywatchError) for leaf in leaves):
        raise exc
    code = EXIT_RUNTIME
    for leaf in leaves:
        if isinstance(leaf, ConfigError):
            print(f"canarywatch: configuration error: {leaf}", file=sys.stderr)
            code = EXIT_CONFIG
        elif isinstance(leaf, RecordingError):
            print(f"canarywatch: bad recording: {leaf}", file=sys.stderr)
            code = EXIT_CONFIG
        else:
            print(f"canarywatch: {leaf}", file=sys.stderr)
    return code


def _dispatch(args: argparse.Namespace) -> int:
    command: str = args.command
    if command == "run":
        return asyncio.run(commands.run_command(args.config))
    if command == "demo":
        if args.replay:
            scenario = resources.files("canarywatch") / "scenarios" / "day.jsonl"
            with resources.as_file(scenario) as path:
                return asyncio.run(
                    commands.replay_demo_command(path, config_path=args.config, as_json=args.json)
                )
        return asyncio.run(
            commands.demo_command(
                config_path=args.config,
                scenarios=args.scenarios,
                duration_s=args.duration,
                port=args.port,
            )
        )
    if command == "replay":
        return asyncio.run(
            commands.replay_command(
                args.recording, config_path=args.config, send=args.send, stats=args.stats
            )
        )
    if command == "record":
        return asyncio.run(commands.record_command(args.config, args.output, args.duration))
    if command == "check-config":
        return commands.check_config_command(args.config)
    if command == "plugins":
        return commands.plugins_command()
    if command == "test-sink":
        return asyncio.run(
            commands.test_sink_command(args.config, args.receiver, dry_run=args.dry_run)
        )
    if command == "tail":
        return asyncio.run(commands.tail_command(args))
    if command in ("silence", "outbox"):
        return asyncio.run(commands.control_command(args))
    raise AssertionError(f"unhandled command {command}")  # argparse guarantees a known one


if __name__ == "__main__":
    sys.exit(main())
