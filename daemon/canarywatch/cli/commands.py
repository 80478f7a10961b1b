"""What each CLI command does, once its arguments are parsed (``cli.py`` only parses)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import errno
import io
import json
import signal
import sys
from collections.abc import Iterable, Iterator, Mapping
from contextlib import AsyncExitStack
from pathlib import Path

import aiohttp
import structlog
from prometheus_client import CollectorRegistry

from canarywatch.cli import stdio
from canarywatch.cli.exitcodes import EXIT_OK, EXIT_RUNTIME
from canarywatch.cli.progress import Progress, format_elapsed
from canarywatch.clock import SystemClock
from canarywatch.config import Check, Config, Loc, UncheckedSecret, load_config, parse_config
from canarywatch.config.fields import LABEL_NAME
from canarywatch.delivery.dispatch import Dispatcher
from canarywatch.errors import CanarywatchError, ConfigError
from canarywatch.formats import recording
from canarywatch.formats.jsonout import dumps, notification_to_json
from canarywatch.logs import configure_logging, get_logger
from canarywatch.metrics import Metrics
from canarywatch.model import Notification, Observation
from canarywatch.pipeline import policy
from canarywatch.pipeline.core import PipelineStats
from canarywatch.pipeline.replay import replay
from canarywatch.pipeline.route import group_labels
from canarywatch.sinks import Sink, SinkLoadError, build_sink, discover_sinks
from canarywatch.views.explain import (
    DecisionRecorder,
    explanation,
    render_explanation,
    transition_filter,
)


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


def _load(config_path: Path | None, *, skip_secrets: bool = False) -> Config | None:
    if config_path is None:
        return None
    return load_config_arg(config_path, skip_secrets=skip_secrets)


def check_config_command(path: Path, *, skip_secrets: bool = False) -> int:
    """Every problem of the file at once (syntax, values, references, sinks and their options),
    or one summary line. ``skip_secrets``: secret references are checked but not read."""
    config = load_config_arg(path, skip_secrets=skip_secrets, check=receiver_problems)
    routes = sum(1 for _ in policy.build_route(config.route).walk()) if config.receivers else 0
    unread = "; secrets not read" if skip_secrets else ""
    print(
        f"{STDIN_NAME if path == STDIN else path}: ok ({len(config.receivers)} receivers, "
        f"{routes} routes, {len(policy.build_inhibitor(config))} inhibit rules, "
        f"{len(config.silences)} silences{unread})"
    )
    return EXIT_OK


def route_test_command(path: Path, label_args: list[str], *, verify: str | None) -> int:
    """``amtool config routes test``'s counterpart: the receivers a label set reaches.

    Prints the receivers in tree order, comma-separated as amtool does, then one line per target
    with the labels that name its group. Time intervals are not applied (as in amtool). A
    receiver reached by two routes with the same group is one target in canarywatch (two in
    Alertmanager: README, differences). ``verify``: the receivers expected, comma-separated;
    exit 1 when they differ.
    """
    # First: a missing config is the first thing to hear about. Routing needs no secret, so
    # none is read (a config whose secrets exist only where it runs can be tested anywhere).
    config = load_config_arg(path, skip_secrets=True)
    labels = _label_set(label_args)
    root = policy.build_router(config).root
    targets: dict[tuple[str, tuple[tuple[str, str], ...]], None] = {}
    for node in root.match(labels):
        targets.setdefault((node.receiver, tuple(group_labels(labels, node.group_by).items())))
    receivers = list(dict.fromkeys(receiver for receiver, _ in targets))
    print(",".join(receivers))
    for receiver, group in targets:
        rendered = ", ".join(f'{name}="{value}"' for name, value in group)
        print(f"  {receiver}: group {{{rendered}}}")
    if verify is not None:
        expected = [name for name in verify.split(",") if name]
        if expected != receivers:
            print(
                f"canarywatch route-test: expected receivers {','.join(expected)} "
                f"but the labels reach {','.join(receivers) or 'none'}",
                file=sys.stderr,
            )
            return EXIT_RUNTIME
    return EXIT_OK


def _label_set(args: list[str]) -> dict[str, str]:
    """``name=value`` arguments (a value may hold ``=``); a bad one is a usage error."""
    labels: dict[str, str] = {}
    for arg in args:
        name, sep, value = arg.partition("=")
        if not sep or not LABEL_NAME.fullmatch(name):
            raise UsageError(
                f"route-test: {arg!r} is not a label: write name=value "
                "(a name is letters, digits and _, not starting with a digit)"
            )
        labels[name] = (
            value.strip('"') if len(value) >= 2 and value[0] == value[-1] == '"' else value
        )
    return labels


def receiver_problems(config: Config) -> list[ConfigError]:
    """Every receiver names an installed sink whose options validate: one error per unknown
    sink and per bad option, at that option's own key and line. Options holding a secret that
    was not read (``--skip-secrets``, or reported unreadable already) are not judged."""
    from canarywatch.sinks import SinkRegistry, validate_sink_options

    registry = SinkRegistry(log=get_logger("sinks"))
    problems: list[ConfigError] = []
    for index, receiver in enumerate(config.receivers):
        at: Loc = ("receivers", index)
        try:
            cls = registry.load(receiver.sink)
        except SinkLoadError as exc:
            problems.append(config.error_at((*at, "sink"), exc.message))
            continue
        try:
            validate_sink_options(cls, receiver.options)
        except SinkLoadError as exc:
            for loc, message in exc.option_problems or (((), exc.message),):
                if not _holds_unread_secret(receiver.options, loc):
                    problems.append(config.error_at((*at, "options", *loc), message))
    return problems


def _holds_unread_secret(options: Mapping[str, object], loc: tuple[str | int, ...]) -> bool:
    value: object = options
    for part in loc:
        if isinstance(value, Mapping):
            if part not in value:
                return False
            value = value[part]
        elif isinstance(value, tuple | list) and isinstance(part, int) and part < len(value):
            value = value[part]
        else:
            return False
        if isinstance(value, UncheckedSecret):
            return True
    return False


def plugins_command() -> int:
    infos = discover_sinks(log=get_logger("sinks"))
    width = max((len(i.name) for i in infos), default=4)
    for info in sorted(infos, key=lambda i: i.name):
        dist = f"{info.distribution or '?'} {info.version or ''}".strip()
        if info.ok:
            caps = ", ".join(info.capabilities) or "-"
            print(f"{info.name:<{width}}  {dist:<24}  {info.target}  [{caps}]")
        else:
            print(f"{info.name:<{width}}  {dist:<24}  FAILED: {info.error}")
    return EXIT_OK if all(i.ok for i in infos) else EXIT_RUNTIME


async def replay_command(
    path: Path,
    *,
    config_path: Path | None,
    send: bool,
    stats: bool,
    explain: tuple[tuple[str, str] | None, str | None] | None = None,
) -> int:
    """``canarywatch replay``: a recording (``-``: standard input) through the pipeline.

    ``explain`` (``--explain``, ``(canary, transition)`` filters): print every decision trail
    instead of the notifications (the same text as ``canarywatch explain``).
    """
    if path == STDIN and config_path == STDIN:
        raise UsageError("replay: the recording and --config cannot both be standard input (-)")
    transition = _transition_filter(explain[1]) if explain is not None else None
    config = _load(config_path, skip_secrets=not send)  # only delivering needs the secrets
    configure_logging(level=config.log.level if config else "warning", stream=sys.stderr)
    observations = read_recording(path)
    recorder = (
        DecisionRecorder(per_canary=REPLAY_PER_CANARY, max_age_s=None, max_trails=None)
        if explain
        else None
    )
    pipeline = policy.build_pipeline(config, log=get_logger("pipeline"), explain=recorder)
    # On a terminal, a status line, unless the notifications are printed to the same one.
    with Progress(sys.stderr, unless=None if send else sys.stdout) as status:
        sent = 0

        def show(done: int, total: int) -> None:
            status.update(f"replaying: {done}/{total} observations, {sent} notifications")

        def counted(notifications: Iterable[Notification]) -> Iterator[Notification]:
            nonlocal sent
            for n in notifications:
                sent += 1
                yield n

        notifications = counted(replay(observations, pipeline, progress=show))
        if send:
            failed = await _deliver_all(config, notifications, explain=recorder)
        elif recorder is not None:
            for _ in notifications:
                pass  # the trails are the output
            failed = 0
        else:
            for n in notifications:
                sys.stdout.write(dumps(notification_to_json(n)) + "\n")
            sys.stdout.flush()
            failed = 0
    if explain is not None and recorder is not None:
        _print_explanations(recorder, explain[0], transition)
    if stats:
        print(json.dumps(_stats(pipeline.stats), sort_keys=True), file=sys.stderr)
    return EXIT_RUNTIME if failed else EXIT_OK


REPLAY_PER_CANARY = 100_000
"""``replay --explain`` keeps every trail of the recording (it is finite)."""


def _transition_filter(text: str | None) -> str | None:
    try:
        return transition_filter(text)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _print_explanations(
    recorder: DecisionRecorder, canary: tuple[str, str] | None, transition: str | None
) -> None:
    """Every canary's trails (or ``canary``'s), as ``canarywatch explain`` prints them."""
    refs = sorted({(ref.namespace, ref.name) for ref in recorder.canaries()})
    if canary is not None:
        refs = [canary]
    texts = [
        render_explanation(explanation(recorder, namespace, name, transition=transition))
        for namespace, name in refs
    ]
    sys.stdout.write("\n".join(texts) if texts else "the recording has no transition\n")
    sys.stdout.flush()


def read_recording(path: Path) -> list[Observation]:
    """``recording.read`` of a command-line path, where ``-`` is standard input."""
    if path == STDIN:
        text = read_stdin("recording")
        return list(recording.iter_lines(io.StringIO(text), name=STDIN_NAME))
    return recording.read(path)


async def replay_demo_command(path: Path, *, config_path: Path | None, as_json: bool) -> int:
    """``demo --replay``: the bundled day of Flagger activity, replayed on virtual time."""
    config = _load(config_path)
    configure_logging(level="warning", stream=sys.stderr)
    observations = recording.read(path)
    pipeline = policy.build_pipeline(config, log=get_logger("pipeline"))
    print(
        f"canarywatch demo: replaying {len(observations)} observations of a Flagger day "
        f"({path.name}) on virtual time\n",
        file=sys.stderr,
    )
    notifications = list(replay(observations, pipeline))
    if as_json:
        for n in notifications:
            print(dumps(notification_to_json(n)))
        failed = 0
    else:
        failed = await _deliver_all(config, notifications)
    stats = pipeline.stats
    suppressed = ", ".join(f"{k}={v}" for k, v in sorted(stats.suppressed.items())) or "none"
    print(
        f"\n{stats.observations} observations -> {stats.transitions} transitions -> "
        f"{len(notifications)} notifications (suppressed: {suppressed})",
        file=sys.stderr,
    )
    return EXIT_RUNTIME if failed else EXIT_OK


async def _deliver_all(
    config: Config | None,
    notifications: Iterable[Notification],
    *,
    explain: DecisionRecorder | None = None,
) -> int:
    """Deliver through the configured sinks (one attempt loop each); returns failures.
    ``explain`` records each outcome (``replay --send --explain``)."""
    log = get_logger("dispatch")
    metrics = Metrics(CollectorRegistry())
    failed = 0
    async with AsyncExitStack() as stack:
        http = await stack.enter_async_context(aiohttp.ClientSession())
        sinks = _build_sinks(config, http=http, log=log)
        for sink in sinks.values():
            stack.push_async_callback(sink.aclose)
            await sink.check()
        dispatcher = Dispatcher(sinks, clock=SystemClock(), metrics=metrics, log=log)
        for n in notifications:
            _stop_if_stdout_gone()  # `demo --replay | head`: the console sink's reader left
            outcome = await dispatcher.deliver_now(n)
            if explain is not None:
                if outcome.ok:
                    explain.delivered(n, outcome, n.created_at)
                else:
                    explain.dead_lettered(n, outcome, n.created_at)
            if not outcome.ok:
                _stop_if_stdout_gone()
                failed += 1
    return failed


def _stop_if_stdout_gone() -> None:
    if stdio.stdout_gone():
        raise BrokenPipeError(errno.EPIPE, "stdout closed")


def _build_sinks(
    config: Config | None,
    *,
    http: aiohttp.ClientSession,
    log: structlog.typing.FilteringBoundLogger,
) -> dict[str, Sink]:
    sinks: dict[str, Sink] = {}
    for index, (receiver, sink_name, options) in enumerate(policy.receivers(config)):
        try:
            sinks[receiver] = build_sink(sink_name, options, http=http, log=log)
        except SinkLoadError as exc:
            if config is None:
                raise
            raise config.error_at(("receivers", index, "sink"), exc.message) from None
    return sinks


def _stats(stats: PipelineStats) -> Mapping[str, object]:
    return dataclasses.asdict(stats)


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
    from canarywatch.app import App  # only now: a mistyped config path answers at once

    class TerminalApp(App):
        """Tells Ctrl-C (exit 130) from SIGTERM (exit 0). Both drain the same way: the exit
        status is the command line's business, so the app keeps its one stop handler and
        this wraps it for SIGINT."""

        interrupted = False

        def _install_signals(self, loop: asyncio.AbstractEventLoop) -> None:
            super()._install_signals(loop)
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(signal.SIGINT, self._on_interrupt)

        def _on_interrupt(self) -> None:
            self.interrupted = True
            self._on_stop_signal()

    app = TerminalApp(config, config_path=config_path)
    await app.run()
    if app.interrupted:
        raise Interrupted("shut down cleanly")
    return EXIT_OK


async def demo_command(
    *, config_path: Path | None, scenarios: list[str] | None, duration_s: float, port: int
) -> int:
    """``canarywatch demo``: the daemon against the built-in simulated cluster.

    While the daemon runs it handles SIGINT/SIGTERM (a graceful stop the demo reports); before
    it starts and after it ends, a signal cancels the demo, which cleans up on the way out
    (``Interrupted``: one line, exit 0). When stdout's reader goes away (``| head``) the demo
    stops the same way and ends quietly.
    """
    from canarywatch.cli.demo import run_demo

    configure_logging(level="warning", stream=sys.stderr)
    demo = asyncio.ensure_future(
        run_demo(
            config_path=config_path, scenarios=scenarios, duration_s=duration_s, listen_port=port
        )
    )
    return await _while_stdout_read(demo, stop_signals=(signal.SIGINT, signal.SIGTERM))


async def _while_stdout_read(
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
    for sig in stop_signals:
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, work.cancel)
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
        for sig in stop_signals:
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)
    if stdio.stdout_discarded():
        raise BrokenPipeError(errno.EPIPE, "stdout closed")
    if work.cancelled():
        raise Interrupted
    return work.result()


async def record_command(config_path: Path, output: Path, duration_s: float | None) -> int:
    """``canarywatch record``: until ``--duration``, SIGTERM (exit 0) or Ctrl-C (exit 130).

    ``--output -`` writes to standard output (``record ... --output - | replay -``). On a
    terminal, a status line counts the observations and the time.
    """
    from canarywatch.cli.record import record

    to_stdout = output == STDIN
    if not to_stdout:
        _check_output(output)
    config = load_config(config_path)
    configure_logging(level=config.log.level, fmt=config.log.format, stream=sys.stderr)
    if not to_stdout:
        _open_output(output)
    target = "standard output" if to_stdout else str(output)
    stop = asyncio.Event()
    interrupted = False

    def on_signal(sig: signal.Signals) -> None:
        nonlocal interrupted
        interrupted = interrupted or sig == signal.SIGINT
        stop.set()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, on_signal, sig)
    started = loop.time()
    written = 0
    with Progress(sys.stderr, unless=sys.stdout if to_stdout else None) as status:

        def show(count: int | None = None, *, force: bool = False) -> None:
            nonlocal written
            written = written if count is None else count
            elapsed = format_elapsed(loop.time() - started)
            status.update(f"recording to {target}: {written} observations, {elapsed}", force=force)

        async def tick() -> None:
            while True:
                show(force=True)
                await asyncio.sleep(1.0)

        ticker = asyncio.ensure_future(tick()) if status.active else None
        try:
            count = await record(
                config,
                output,
                duration_s=duration_s,
                stop=stop,
                stream=sys.stdout if to_stdout else None,
                on_observation=show,
            )
        finally:
            if ticker is not None:
                ticker.cancel()
            for sig in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.remove_signal_handler(sig)
    summary = f"recorded {count} observations to {target}"
    if interrupted:
        raise Interrupted(summary)
    print(summary, file=sys.stderr)
    return EXIT_OK


def _check_output(output: Path) -> None:
    """Before anything else: ``--output`` must be a file in a directory that exists."""
    if output.is_dir():
        raise UsageError(f"{output}: cannot write the recording: it is a directory")
    parent = output.parent
    if not parent.is_dir():
        why = "not a directory" if parent.exists() else "no such directory"
        raise UsageError(f"{output}: cannot write the recording: {parent}: {why}")


def _open_output(output: Path) -> None:
    """Once the configuration loaded: the file opens for appending (permissions, disk)."""
    try:
        with output.open("a", encoding="utf-8"):
            pass
    except OSError as exc:
        raise UsageError(f"{output}: cannot write the recording: {exc.strerror or exc}") from None


async def test_sink_command(config_path: Path | None, receiver: str, *, dry_run: bool) -> int:
    from canarywatch.cli.testsink import test_sink

    config = load_config_arg(config_path) if config_path is not None else parse_config("")
    configure_logging(level="warning", stream=sys.stderr)
    return await test_sink(config, receiver, dry_run=dry_run, out=sys.stdout)


async def control_command(args: argparse.Namespace) -> int:
    """``canarywatch silence|outbox ...``: talk to the running daemon's local API."""
    from canarywatch.cli.control_client import ControlClient, format_outbox, format_silences

    client = ControlClient(args.url, token=read_token(args.token_file))
    if args.command == "silence":
        if args.action == "add":
            added = await client.add_silence(
                args.matchers,
                duration_s=args.duration,
                created_by=args.created_by,
                comment=args.comment,
            )
            print(f"silence {added['id']} added")
        elif args.action == "list":
            print(format_silences(await client.list_silences(include_expired=args.expired)))
        else:
            await client.expire_silence(args.id)
            print(f"silence {args.id} expired")
        return EXIT_OK
    if args.action == "list":
        print(format_outbox(await client.outbox_list(dead=args.dead)))
    elif args.action == "retry":
        await client.outbox_retry(args.id)
        print(f"outbox item {args.id} queued again")
    else:
        await client.outbox_drop(args.id)
        print(f"outbox item {args.id} dropped")
    return EXIT_OK


async def explain_command(args: argparse.Namespace) -> int:
    """``canarywatch explain NAMESPACE/CANARY [--transition T]``: the running daemon's decision
    trails of that canary's recent transitions (``canarywatch.views.explain``)."""
    from canarywatch.cli.control_client import ControlClient

    namespace, name = args.canary
    transition = _transition_filter(args.transition)
    client = ControlClient(args.url, token=read_token(args.token_file))
    answer = await client.explain(namespace, name, transition)
    sys.stdout.write(render_explanation(answer))
    return EXIT_OK


async def tail_command(args: argparse.Namespace) -> int:
    """``canarywatch tail``: the live terminal view of a running daemon."""
    from canarywatch.cli.tail import tail

    token = read_token(args.token_file)
    view = asyncio.ensure_future(
        tail(
            args.url,
            token=token,
            once=args.once,
            out=sys.stdout,
            interval_s=max(args.interval, 0.1),
            color=args.color,
        )
    )
    return await _while_stdout_read(view)
