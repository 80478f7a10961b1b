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
from canarywatch.errors import CanarywatchError, ConfigError
from canarywatch.recording import RecordingError

EXIT_OK = 0
EXIT_RUNTIME = 1
EXIT_CONFIG = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="canarywatch",
        description="One notification per Flagger canary transition.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

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

    check = sub.add_parser("check-config", help="validate a configuration file")
    check.add_argument("config", type=Path)

    sub.add_parser("plugins", help="list every discovered sink plugin")

    demo = sub.add_parser(
        "demo", help="replay the bundled Flagger scenarios and print the notifications"
    )
    demo.add_argument("--config", type=Path, help="policy/config file (default: built-in)")
    demo.add_argument(
        "--json", action="store_true", help="print JSON lines instead of the console sink"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _dispatch(args)
    except ConfigError as exc:
        print(f"canarywatch: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except RecordingError as exc:
        print(f"canarywatch: bad recording: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except CanarywatchError as exc:
        print(f"canarywatch: {exc}", file=sys.stderr)
        return EXIT_RUNTIME
    except KeyboardInterrupt:
        return 130


def _dispatch(args: argparse.Namespace) -> int:
    command: str = args.command
    if command == "replay":
        return asyncio.run(
            commands.replay_command(
                args.recording, config_path=args.config, send=args.send, stats=args.stats
            )
        )
    if command == "check-config":
        return commands.check_config_command(args.config)
    if command == "plugins":
        return commands.plugins_command()
    if command == "demo":
        scenario = resources.files("canarywatch") / "scenarios" / "day.jsonl"
        with resources.as_file(scenario) as path:
            return asyncio.run(
                commands.demo_command(path, config_path=args.config, as_json=args.json)
            )
    raise AssertionError(f"unhandled command {command}")  # argparse guarantees a known one


if __name__ == "__main__":
    sys.exit(main())
