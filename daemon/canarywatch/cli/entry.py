"""Command line: parse arguments, hand off, map errors to exit codes. Nothing else.

Exit codes: 0 success (also a demo stopped with Ctrl-C or SIGTERM, and ``run`` stopped by
SIGTERM after its drain), 1 runtime failure, 2 configuration or usage error, 130 interrupted
with Ctrl-C (after the same clean shutdown as SIGTERM), 141 stdout closed early (``| head``).

No Python traceback reaches a user for anything but a bug: every expected failure is one line
on stderr. The command modules are imported only once the arguments parsed, so ``--help``,
``--version`` and usage errors answer at once.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

from canarywatch.cli import stdio
from canarywatch.cli.exitcodes import (
    EXIT_BROKEN_PIPE,
    EXIT_CONFIG,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_RUNTIME,
)
from canarywatch.errors import CanarywatchError, ConfigError
from canarywatch.labels.durations import parse_duration

DEFAULT_CONFIG = Path("/etc/canarywatch/config.yaml")
DEFAULT_URL = "http://127.0.0.1:9797"


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0 to 65535 (0: any free port), not {port}")
    return port


def _canary(text: str) -> tuple[str, str]:
    """``NAMESPACE/CANARY`` -> ``(namespace, name)``."""
    namespace, slash, name = text.partition("/")
    if not slash or not namespace or not name or "/" in name:
        raise argparse.ArgumentTypeError(f"write the canary as NAMESPACE/CANARY, not {text!r}")
    return namespace, name


class _Version(argparse.Action):
    """``--version``: the installed distribution's version, as ``canarywatch_build_info``."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: object) -> None:
        super().__init__(
            option_strings,
            dest=argparse.SUPPRESS,
            default=argparse.SUPPRESS,
            nargs=0,
            help="print the version and exit",
        )

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option_string: str | None = None,
    ) -> None:
        from canarywatch.metrics import package_version

        print(f"canarywatch {package_version()}")
        parser.exit()


def _daemon_options(parser: argparse.ArgumentParser, *, defaults: bool) -> None:
    """``--url`` and ``--token-file``. On an action (``silence add``) they default to nothing,
    so given after the action they count as much as before it, and not given they leave the
    value from before it alone."""
    url_default: object = DEFAULT_URL if defaults else argparse.SUPPRESS
    path_default: object = None if defaults else argparse.SUPPRESS
    parser.add_argument("--url", default=url_default, help="the daemon's HTTP address")
    parser.add_argument(
        "--token-file", type=Path, default=path_default, help="file holding the API token"
    )


def build_parser() -> argparse.ArgumentParser:
    """The whole command line (tests walk it to run every subcommand)."""
    parser = argparse.ArgumentParser(
        prog="canarywatch",
        description="One notification per Flagger canary transition.",
    )
    parser.add_argument("--version", action=_Version)
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
    demo.add_argument(
        "--port", type=_port, default=9797, help="the daemon's HTTP port (0: any free one)"
    )
    demo.add_argument(
        "--keep-running",
        action="store_true",
        help="after the last scenario keep the daemon and its status page up until Ctrl-C",
    )
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
    replay.add_argument(
        "recording", type=Path, help="recording file (JSON Lines; -: standard input)"
    )
    replay.add_argument(
        "--config", type=Path, help="policy/config file (default: built-in; -: standard input)"
    )
    replay.add_argument(
        "--send", action="store_true", help="deliver through the configured sinks instead"
    )
    replay.add_argument(
        "--stats", action="store_true", help="print pipeline counters to stderr at the end"
    )
    replay.add_argument(
        "--explain",
        action="store_true",
        help="instead of the notifications, print why each transition was (not) notified, "
        "as `canarywatch explain` does",
    )
    replay.add_argument(
        "--canary",
        type=_canary,
        help="with --explain: only this canary (NAMESPACE/CANARY)",
    )
    replay.add_argument(
        "--transition", help="with --explain: only this transition (a name or a trail id)"
    )

    record = sub.add_parser("record", help="write what the sources see to a recording")
    record.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    record.add_argument(
        "--output",
        type=Path,
        required=True,
        help="recording file to append to (-: standard output)",
    )
    record.add_argument("--duration", type=_duration, help="stop after this long (e.g. 10m)")

    check = sub.add_parser(
        "check-config",
        help="validate a configuration file",
        description=(
            "Validate a configuration file and report every problem at once (file, line, key "
            "path): YAML, values, references, sinks and their options, secrets."
        ),
    )
    check.add_argument("config", type=Path, help="configuration file (-: standard input)")
    check.add_argument(
        "--skip-secrets",
        action="store_true",
        help="check the form of {env: ...}/{file: ...} secrets but do not read them "
        "(for a config whose secrets exist only where it runs)",
    )

    route_test = sub.add_parser(
        "route-test",
        help="which receivers a label set reaches (like amtool config routes test)",
    )
    route_test.add_argument("config", type=Path, help="configuration file (-: standard input)")
    route_test.add_argument("labels", nargs="+", metavar="NAME=VALUE", help="the event's labels")
    route_test.add_argument(
        "--verify-receivers",
        metavar="R1,R2",
        help="the receivers expected, comma-separated, in tree order; exit 1 if they differ",
    )

    sub.add_parser("plugins", help="list every discovered sink plugin")

    completion = sub.add_parser(
        "completion",
        help="print a shell completion script (bash or zsh)",
        description=(
            "Print a completion script generated from this command line. bash: "
            "canarywatch completion bash > ~/.local/share/bash-completion/completions/canarywatch; "
            'zsh: eval "$(canarywatch completion zsh)" in ~/.zshrc, after compinit.'
        ),
    )
    completion.add_argument("shell", choices=("bash", "zsh"), help="the shell")

    test_sink = sub.add_parser(
        "test-sink", help="send a sample rollback notification through one receiver"
    )
    test_sink.add_argument("receiver", help="receiver name from the config")
    test_sink.add_argument(
        "--config", type=Path, help="config file (default: built-in; -: standard input)"
    )
    test_sink.add_argument(
        "--dry-run", action="store_true", help="print the rendered payload instead of sending"
    )

    tail = sub.add_parser("tail", help="live view of the running daemon: canaries and transitions")
    _daemon_options(tail, defaults=True)
    tail.add_argument("--once", action="store_true", help="print a snapshot and exit")
    tail.add_argument(
        "--interval", type=_duration, default=1.0, help="redraw interval (default 1s)"
    )
    tail.add_argument("--color", action=argparse.BooleanOptionalAction, default=None)

    explain = sub.add_parser(
        "explain",
        help="why the running daemon did (not) notify a canary's recent transitions",
        description=(
            "Print the decision trail of a canary's recent transitions, as the running daemon "
            "kept it: which sources saw each and when, what it was deduplicated against, which "
            "inhibit rule or silence muted it, which receivers and groups it was routed to, and "
            "when it was delivered (or why it was dead-lettered)."
        ),
    )
    explain.add_argument("canary", type=_canary, help="the canary, as NAMESPACE/CANARY")
    explain.add_argument("--transition", help="only this transition: a name (halted) or a trail id")
    _daemon_options(explain, defaults=True)

    for name, help_text in (
        ("silence", "add, list or expire silences of the running daemon"),
        ("outbox", "list, retry or drop undelivered notifications of the running daemon"),
    ):
        control = sub.add_parser(name, help=help_text)
        _daemon_options(control, defaults=True)
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
        for action in actions.choices.values():
            _daemon_options(action, defaults=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    stdio.ensure_std_streams()
    command = ""
    try:
        args = build_parser().parse_args(argv)
        command = args.command
        return _run(args)
    except (KeyboardInterrupt, asyncio.CancelledError):
        # Ctrl-C outside the commands' own handling: before a command started (or after it
        # ended), or a second Ctrl-C that cut a shutdown short.
        return _interrupted(command, None)
    except BrokenPipeError as exc:
        return _broken_pipe(exc)


def _run(args: argparse.Namespace) -> int:
    from canarywatch.cli.common import Interrupted

    try:
        code = _dispatch(args)
        sys.stdout.flush()  # a reader that went away shows here, not at interpreter exit
    except Interrupted as exc:
        return _interrupted(args.command, exc.detail)
    except (CanarywatchError, ExceptionGroup) as exc:
        return _report(exc)
    return code


def _interrupted(command: str, detail: str | None) -> int:
    """Ctrl-C: one line. Stopping a demo is how a demo ends, so that is a success."""
    if command == "demo":
        print("canarywatch demo: stopped", file=sys.stderr)
        return EXIT_OK
    who = f"canarywatch {command}" if command else "canarywatch"
    suffix = f" ({detail})" if detail else ""
    print(f"{who}: interrupted{suffix}", file=sys.stderr)
    return EXIT_INTERRUPTED


def _broken_pipe(exc: BrokenPipeError) -> int:
    """stdout's reader went away: quiet, as Unix tools are. Any other broken pipe is an error."""
    if stdio.stdout_gone() or stdio.stdout_discarded():
        stdio.discard_stdout()
        return EXIT_BROKEN_PIPE
    print(f"canarywatch: {exc.strerror or exc}", file=sys.stderr)
    return EXIT_RUNTIME


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


def _report(exc: BaseException) -> int:
    """Print what went wrong; config, usage and recording errors exit 2, other known errors 1.

    The daemon runs in a ``TaskGroup``, so its errors arrive as exception groups: they are
    flattened here. An unexpected exception (a bug) is re-raised with its traceback.
    """
    from canarywatch.cli.common import UsageError
    from canarywatch.formats.recording import RecordingError

    leaves = _leaves(exc)
    pipes = [leaf for leaf in leaves if isinstance(leaf, BrokenPipeError)]
    if pipes and all(isinstance(leaf, BrokenPipeError | CanarywatchError) for leaf in leaves):
        return _broken_pipe(pipes[0])
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
        elif isinstance(leaf, UsageError):
            print(f"canarywatch: {leaf}", file=sys.stderr)
            code = EXIT_CONFIG
        else:
            print(f"canarywatch: {leaf}", file=sys.stderr)
    return code


def _dispatch(args: argparse.Namespace) -> int:
    """Run the command ``args`` names; its module is imported only now (see the docstring)."""
    command: str = args.command
    if command == "run":
        from canarywatch.cli.run import run_command

        return asyncio.run(run_command(args.config))
    if command == "demo":
        return _demo(args)
    if command == "replay":
        from canarywatch.cli.replay import replay_command

        explain = args.explain or args.canary is not None or args.transition is not None
        return asyncio.run(
            replay_command(
                args.recording,
                config_path=args.config,
                send=args.send,
                stats=args.stats,
                explain=(args.canary, args.transition) if explain else None,
            )
        )
    if command == "record":
        from canarywatch.cli.record import record_command

        return asyncio.run(record_command(args.config, args.output, args.duration))
    if command == "check-config":
        from canarywatch.cli.check_config import check_config_command

        return check_config_command(args.config, skip_secrets=args.skip_secrets)
    if command == "route-test":
        from canarywatch.cli.route_test import route_test_command

        return route_test_command(args.config, args.labels, verify=args.verify_receivers)
    if command == "plugins":
        from canarywatch.cli.plugins import plugins_command

        return plugins_command()
    if command == "completion":
        from canarywatch.cli.completion import completion_script

        sys.stdout.write(completion_script(build_parser(), args.shell))
        return EXIT_OK
    if command == "test-sink":
        from canarywatch.cli.testsink import test_sink_command

        return asyncio.run(test_sink_command(args.config, args.receiver, dry_run=args.dry_run))
    if command == "tail":
        from canarywatch.cli.tail import tail_command

        return asyncio.run(tail_command(args))
    if command == "explain":
        from canarywatch.cli.control import explain_command

        return asyncio.run(explain_command(args))
    if command in ("silence", "outbox"):
        from canarywatch.cli.control import control_command

        return asyncio.run(control_command(args))
    raise AssertionError(f"unhandled command {command}")  # argparse guarantees a known one


def _demo(args: argparse.Namespace) -> int:
    """``demo``: the bundled day on virtual time (``--replay``), or the live simulated cluster."""
    from canarywatch.cli.common import UsageError

    if args.replay:
        from canarywatch.cli.replay import replay_demo_command

        scenario = resources.files("canarywatch") / "scenarios" / "day.jsonl"
        with resources.as_file(scenario) as path:
            return asyncio.run(
                replay_demo_command(path, config_path=args.config, as_json=args.json)
            )
    if args.json:
        raise UsageError(
            "demo --json needs --replay: the live demo notifies through its receivers "
            "(the console by default; a jsonl receiver in --config prints JSON lines)"
        )
    from canarywatch.cli.demo import demo_command

    # Until the demo installs its own handlers, SIGTERM stops it as Ctrl-C does.
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        return asyncio.run(
            demo_command(
                config_path=args.config,
                scenarios=args.scenarios,
                duration_s=args.duration,
                port=args.port,
                keep_running=args.keep_running,
            )
        )
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
