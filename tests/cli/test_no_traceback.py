"""No Python traceback reaches a user: every subcommand, as a real process, when things go wrong.

The subcommands, their options and the options' types come from the parser itself
(``canarywatch.cli.entry.build_parser``), so a command added later is covered without touching this
file. Each is run with:

- bad arguments (an unknown option; a value its type refuses): exit 2 with argparse's usage;
- a missing file, and a directory, wherever it takes a file: non-zero, one line naming it;
- stdout already closed (``| head`` that exited): no ``BrokenPipeError``, no "Exception
  ignored", and 141 from the commands that print;
- for the commands that listen (``run``, ``demo --port``), a port someone else holds: exit 1,
  one line naming the address.

A command that is still running after a few seconds is stopped with SIGTERM, as systemd would,
and must then exit cleanly too. The processes spend their time importing, so the module starts
them all at once, a few at a time (``WORKERS``), and each test reads its own outcome.
"""

from __future__ import annotations

import argparse
import os
import subprocess
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest
from tests.cli import (
    CLI,
    ENV,
    Daemon,
    Done,
    assert_clean,
    busy_port,
    closed_pipe,
    daemon_config,
    run_cli,
)
from tests.support.ports import free_port

from canarywatch.cli import entry as cli
from canarywatch.cli.entry import build_parser
from canarywatch.cli.exitcodes import EXIT_BROKEN_PIPE, EXIT_CONFIG, EXIT_RUNTIME

LONG_RUNNING_S = 5.0
"""A command still running after this long (``run``, a live view) gets SIGTERM."""
EXITS_BY_ITSELF_S = 60.0
"""A command that must end on its own (a busy port) is stopped only after this long: on a loaded
machine, starting the demo's simulator and the daemon before the bind fails took over 5 s."""
WORKERS = 3
"""Commands running at once."""

VALUES: dict[str, list[str]] = {
    "canary": ["test/podinfo"],
    "matchers": ['canary="no-such-canary"'],
    "recording": [str(Path(__file__).parents[1] / "recordings" / "rollback.jsonl")],
    "receiver": ["default"],
    "scenarios": ["successful_rollout"],
    "shell": ["bash"],
}
"""Values by destination where a made-up word would be refused for a reason beside the point."""

BASELINE: dict[tuple[str, ...], list[str]] = {
    ("demo",): ["--duration", "1s"],
    ("record",): ["--duration", "1s"],
    ("tail",): ["--once"],
    ("test-sink",): ["--dry-run"],
}
"""Extra arguments that make a command short and make it print (the stdout cases)."""

PRINTS = {
    ("demo",),
    ("replay",),
    ("check-config",),
    ("plugins",),
    ("completion",),
    ("test-sink",),
    ("tail",),
    ("explain",),
    ("silence", "list"),
    ("outbox", "list"),
}
"""Commands whose baseline writes to stdout: with stdout closed they must exit 141."""


@dataclass(frozen=True)
class Leaf:
    """One runnable command (``silence add``) and its parsers, outermost first."""

    path: tuple[str, ...]
    parsers: tuple[argparse.ArgumentParser, ...]

    @property
    def id(self) -> str:
        return " ".join(self.path)


def _subparsers(
    parser: argparse.ArgumentParser,
) -> argparse._SubParsersAction[argparse.ArgumentParser] | None:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    return None


def _leaves(
    parser: argparse.ArgumentParser,
    path: tuple[str, ...] = (),
    chain: tuple[argparse.ArgumentParser, ...] = (),
) -> Iterator[Leaf]:
    sub = _subparsers(parser)
    if sub is None:
        yield Leaf(path, chain)
        return
    for name, child in sub.choices.items():
        yield from _leaves(child, (*path, name), (*chain, child))


LEAVES = list(_leaves(build_parser()))


def _arguments(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [
        a
        for a in parser._actions
        if not isinstance(a, argparse._SubParsersAction | argparse._HelpAction)
        and a.dest != argparse.SUPPRESS
    ]


def _takes_file(action: argparse.Action) -> bool:
    return action.type is Path


@dataclass
class Scratch:
    """Files the commands are given when a file is not what is being tested."""

    directory: Path
    config: Path
    """A config a daemon command runs with (no cluster, port 0, state in tmp)."""
    url: str
    """A running daemon, for the commands that talk to one."""

    def file_for(self, action: argparse.Action) -> Path:
        if action.dest == "output":
            return self.directory / "out.jsonl"
        if action.dest == "config" and action.default is not None:
            return self.config  # a daemon config where the default is /etc/canarywatch/...
        empty = self.directory / f"empty-{action.dest}"
        empty.touch()
        return empty


def _value(action: argparse.Action, scratch: Scratch) -> list[str]:
    if action.dest in VALUES:
        return VALUES[action.dest]
    if _takes_file(action):
        return [str(scratch.file_for(action))]
    if action.dest == "url":
        return [scratch.url]
    if action.type is int:
        return ["1"]
    if action.type is cli._port:
        return ["0"]
    if action.type is cli._duration:
        return ["1s"]
    return ["x"]


def _given(action: argparse.Action) -> bool:
    """Given even when not required: the daemon's address (ours, not 127.0.0.1:9797), a port,
    and a config where the default is a system path (``run``, ``record``)."""
    if action.required:
        return True
    if action.dest == "url":
        return action.default is not argparse.SUPPRESS
    if action.type is cli._port:
        return True  # any free port: never the one a real daemon uses
    return action.dest == "config" and isinstance(action.default, Path)


def argv(
    leaf: Leaf,
    scratch: Scratch,
    *,
    replace: tuple[int, argparse.Action, str] | None = None,
    extra: tuple[str, ...] = (),
) -> list[str]:
    """The command with what it needs, plus what the test changes: ``replace`` gives one
    argument (at one level) a value, ``extra`` goes last."""
    out: list[str] = []
    last = len(leaf.path) - 1
    for level, (name, parser) in enumerate(zip(leaf.path, leaf.parsers, strict=True)):
        options: list[str] = []
        positionals: list[str] = []
        for action in _arguments(parser):
            if replace is not None and replace[0] == level and replace[1] is action:
                value = [replace[2]]
            elif _given(action):
                value = _value(action, scratch)
            else:
                continue
            if action.option_strings:
                options += [action.option_strings[0], *value]
            else:
                positionals += value
        out += [name, *options, *positionals]
        if level == last:
            out += [*BASELINE.get(leaf.path, []), *extra]
    return out


def _typed() -> Iterator[tuple[Leaf, int, argparse.Action]]:
    for leaf in LEAVES:
        for level, parser in enumerate(leaf.parsers):
            for action in _arguments(parser):
                if action.type not in (None, str, Path):
                    yield leaf, level, action


def _file_arguments() -> Iterator[tuple[Leaf, int, argparse.Action]]:
    seen: set[int] = set()
    for leaf in LEAVES:
        for level, parser in enumerate(leaf.parsers):
            for action in _arguments(parser):
                # An option of ``silence`` itself is tried once, not once per action.
                if _takes_file(action) and id(action) not in seen:
                    seen.add(id(action))
                    yield leaf, level, action


def _listening() -> Iterator[tuple[Leaf, int, argparse.Action]]:
    for leaf in LEAVES:
        for level, parser in enumerate(leaf.parsers):
            for action in _arguments(parser):
                if action.type is cli._port:
                    yield leaf, level, action


TYPED = list(_typed())
FILES = list(_file_arguments())
DIRECTORIES = list({action.dest: (leaf, level, action) for leaf, level, action in FILES}.values())
"""A directory instead of a file: once per kind of file (config, recording, output, token);
each kind is read by one function whichever command reads it."""
LISTENING = list(_listening())


def _name(action: argparse.Action) -> str:
    return action.option_strings[0] if action.option_strings else action.dest


def _case_id(leaf: Leaf, level: int, action: argparse.Action) -> str:
    before = " (before the action)" if level < len(leaf.path) - 1 else ""
    return f"{leaf.id}{before} {_name(action)}"


def _closed_stdout(args: list[str]) -> Done:
    pipe = closed_pipe()
    try:
        return run_cli(args, stdout=pipe, stop_after=LONG_RUNNING_S)
    finally:
        os.close(pipe)


def _closed_descriptor(args: list[str]) -> Done:
    """``canarywatch ... >&-``: Python starts with no ``sys.stdout`` at all."""
    done = subprocess.run(
        ["sh", "-c", 'exec "$@" >&-', "sh", *CLI, *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=ENV,
        timeout=60,
        check=False,
    )
    return Done(tuple(args), done.returncode, "", done.stderr, signalled=False)


class Outcomes:
    """Every case of the module, started together when the module's first test asks."""

    def __init__(self, pool: ThreadPoolExecutor) -> None:
        self._pool = pool
        self._futures: dict[str, Future[Done]] = {}
        self.expected: dict[str, str] = {}
        """What the one line must name (the file, the address), by case."""

    def start(self, key: str, case: Callable[[], Done], *, names: str = "") -> None:
        assert key not in self._futures, key
        self._futures[key] = self._pool.submit(case)
        self.expected[key] = names

    def __getitem__(self, key: str) -> Done:
        return self._futures[key].result()


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Outcomes]:
    directory = tmp_path_factory.mktemp("cli")
    daemon = Daemon(tmp_path_factory.mktemp("daemon"))
    daemon.start()
    scratch = Scratch(directory, daemon_config(directory), daemon.url)
    with ExitStack() as held, ThreadPoolExecutor(WORKERS) as pool:
        runs = Outcomes(pool)
        # The slowest first (they mostly wait), so the rest fill the time.
        run_port = held.enter_context(busy_port())
        busy_config = daemon_config(tmp_path_factory.mktemp("busy"), listen=f"127.0.0.1:{run_port}")
        runs.start(
            "port run",
            lambda: run_cli(["run", "--config", str(busy_config)], stop_after=EXITS_BY_ITSELF_S),
            names=f"127.0.0.1:{run_port}",
        )
        for leaf in LEAVES:
            runs.start(f"stdout {leaf.id}", lambda leaf=leaf: _closed_stdout(argv(leaf, scratch)))
        runs.start("live tail", lambda: _closed_stdout(["tail", "--url", scratch.url]))
        runs.start("closed fd", lambda: _closed_descriptor(["plugins"]))
        for leaf, level, action in LISTENING:
            port = held.enter_context(busy_port())
            args = argv(leaf, scratch, replace=(level, action, str(port)))
            runs.start(
                f"port {leaf.id}",
                lambda args=args: run_cli(args, stop_after=EXITS_BY_ITSELF_S),
                names=f"127.0.0.1:{port}",
            )
        for number, case in enumerate(FILES):
            missing = directory / f"no-such-dir-{number}" / "file"  # one each: none is created
            args = argv(case[0], scratch, replace=(case[1], case[2], str(missing)))
            runs.start(
                f"missing {_case_id(*case)}", lambda args=args: run_cli(args), names=str(missing)
            )
        for case in DIRECTORIES:
            args = argv(case[0], scratch, replace=(case[1], case[2], str(directory)))
            runs.start(
                f"directory {_case_id(*case)}",
                lambda args=args: run_cli(args),
                names=str(directory),
            )
        for leaf in LEAVES:
            args = argv(leaf, scratch, extra=("--no-such-option",))
            runs.start(f"unknown option {leaf.id}", lambda args=args: run_cli(args))
        for leaf, level, action in TYPED:
            bad = "65536" if action.type is cli._port else "banana"
            args = argv(leaf, scratch, replace=(level, action, bad))
            runs.start(f"typed {_case_id(leaf, level, action)}", lambda args=args: run_cli(args))
        for args in ([], ["no-such-command"], ["--no-such-option"]):
            runs.start(f"top {args}", lambda args=args: run_cli(args))
        _start_explain_cases(runs, scratch)
        try:
            yield runs
        finally:
            pool.shutdown(wait=True)
            assert daemon.stop() == 0, daemon.log()


def _start_explain_cases(runs: Outcomes, scratch: Scratch) -> None:
    """``canarywatch explain`` beyond what the parser-driven cases cover (issue 15)."""
    canary = ["explain", "test/podinfo"]
    nobody = f"127.0.0.1:{free_port()}"
    runs.start(
        "explain unreachable",
        lambda: run_cli([*canary, "--url", f"http://{nobody}"]),
        names=f"could not reach http://{nobody}",
    )
    runs.start(
        "explain bad canary",
        lambda: run_cli(["explain", "podinfo", "--url", scratch.url]),
        names="NAMESPACE/CANARY",
    )
    runs.start(
        "explain bad transition",
        lambda: run_cli([*canary, "--transition", "rolledback", "--url", scratch.url]),
        names="'rolledback' is neither a transition",
    )
    token_dir = scratch.directory / "token-dir"
    token_dir.mkdir()
    runs.start(
        "explain token directory",
        lambda: run_cli([*canary, "--url", scratch.url, "--token-file", str(token_dir)]),
        names=f"{token_dir}: cannot read token file",
    )
    runs.start(
        "explain nothing recorded",
        lambda: run_cli([*canary, "--url", scratch.url]),
        names="test/podinfo: no transition recorded",
    )


# -- bad arguments ----------------------------------------------------------------------------


def test_the_parser_has_the_commands_this_module_expects_to_find() -> None:
    ids = {leaf.id for leaf in LEAVES}
    assert {"run", "demo", "replay", "record", "tail", "silence add", "outbox drop"} <= ids
    assert {"completion", "check-config", "explain"} <= ids
    assert [leaf.id for leaf, _, _ in LISTENING] == ["demo"]


@pytest.mark.parametrize("args", [[], ["no-such-command"], ["--no-such-option"]], ids=str)
def test_no_command_or_an_unknown_one_is_a_usage_error(args: list[str], outcomes: Outcomes) -> None:
    done = outcomes[f"top {args}"]
    assert_clean(done)
    assert done.returncode == EXIT_CONFIG, done.explain()
    assert done.stderr.startswith("usage: canarywatch"), done.explain()


@pytest.mark.parametrize("leaf", LEAVES, ids=lambda leaf: leaf.id)
def test_an_unknown_option_is_a_usage_error(leaf: Leaf, outcomes: Outcomes) -> None:
    done = outcomes[f"unknown option {leaf.id}"]
    assert_clean(done)
    assert done.returncode == EXIT_CONFIG, done.explain()
    assert "unrecognized arguments: --no-such-option" in done.last_line, done.explain()


@pytest.mark.parametrize(("leaf", "level", "action"), TYPED, ids=[_case_id(*c) for c in TYPED])
def test_a_value_its_type_refuses_is_a_usage_error(
    leaf: Leaf, level: int, action: argparse.Action, outcomes: Outcomes
) -> None:
    done = outcomes[f"typed {_case_id(leaf, level, action)}"]
    assert_clean(done)
    assert done.returncode == EXIT_CONFIG, done.explain()
    assert f"error: argument {_name(action)}" in done.last_line, done.explain()


# -- a missing file, a directory ----------------------------------------------------------------


def _assert_one_line_naming(outcomes: Outcomes, key: str) -> None:
    done = outcomes[key]
    assert_clean(done)
    assert done.returncode in (EXIT_RUNTIME, EXIT_CONFIG), done.explain()
    assert done.last_line.startswith(("canarywatch", "test-sink")), done.explain()
    assert "unrecognized arguments" not in done.last_line, done.explain()  # it was read
    assert outcomes.expected[key] in done.last_line, done.explain()


@pytest.mark.parametrize(("leaf", "level", "action"), FILES, ids=[_case_id(*c) for c in FILES])
def test_a_missing_file_is_one_line_naming_it(
    leaf: Leaf, level: int, action: argparse.Action, outcomes: Outcomes
) -> None:
    _assert_one_line_naming(outcomes, f"missing {_case_id(leaf, level, action)}")


@pytest.mark.parametrize(
    ("leaf", "level", "action"), DIRECTORIES, ids=[_case_id(*c) for c in DIRECTORIES]
)
def test_a_directory_where_a_file_is_taken_is_one_line_naming_it(
    leaf: Leaf, level: int, action: argparse.Action, outcomes: Outcomes
) -> None:
    _assert_one_line_naming(outcomes, f"directory {_case_id(leaf, level, action)}")


# -- stdout closed early ------------------------------------------------------------------------


@pytest.mark.parametrize("leaf", LEAVES, ids=lambda leaf: leaf.id)
def test_stdout_closed_early_ends_quietly(leaf: Leaf, outcomes: Outcomes) -> None:
    done = outcomes[f"stdout {leaf.id}"]
    assert_clean(done)
    if leaf.path in PRINTS:
        assert done.returncode == EXIT_BROKEN_PIPE, done.explain()
        assert "canarywatch:" not in done.stderr, done.explain()  # quiet, as Unix tools are


def test_a_live_view_ends_when_its_reader_goes(outcomes: Outcomes) -> None:
    """``tail`` writes only when something happens: it watches for its reader going away."""
    done = outcomes["live tail"]
    assert_clean(done)
    assert not done.signalled, done.explain()
    assert done.returncode == EXIT_BROKEN_PIPE, done.explain()
    assert done.stderr == "", done.explain()


def test_a_closed_stdout_descriptor_is_not_an_error(outcomes: Outcomes) -> None:
    done = outcomes["closed fd"]
    assert done.returncode == 0, done.explain()
    assert done.stderr == "", done.explain()


# -- the listen port is taken --------------------------------------------------------------------


def _assert_busy(outcomes: Outcomes, key: str) -> None:
    done = outcomes[key]
    assert_clean(done)
    assert not done.signalled, done.explain()
    assert done.returncode == EXIT_RUNTIME, done.explain()
    address = outcomes.expected[key]
    assert done.last_line == (f"canarywatch: cannot listen on {address}: address already in use"), (
        done.explain()
    )


def test_run_on_a_busy_port_is_one_line_naming_the_address(outcomes: Outcomes) -> None:
    _assert_busy(outcomes, "port run")


@pytest.mark.parametrize("leaf", [leaf for leaf, _, _ in LISTENING], ids=lambda leaf: leaf.id)
def test_a_busy_port_is_one_line_naming_the_address(leaf: Leaf, outcomes: Outcomes) -> None:
    _assert_busy(outcomes, f"port {leaf.id}")


# -- canarywatch explain -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("case", "code"),
    [
        ("explain unreachable", EXIT_RUNTIME),
        ("explain bad canary", EXIT_CONFIG),
        ("explain bad transition", EXIT_CONFIG),
        ("explain token directory", EXIT_CONFIG),
    ],
)
def test_explain_fails_in_one_line(case: str, code: int, outcomes: Outcomes) -> None:
    done = outcomes[case]
    assert_clean(done)
    assert done.returncode == code, done.explain()
    assert len(done.stderr.strip().splitlines()) == 1 or case == "explain bad canary", (
        done.explain()
    )  # argparse prints its usage line first
    assert outcomes.expected[case] in done.last_line, done.explain()
    assert done.stdout == "", done.explain()


def test_explain_of_a_canary_never_seen_says_so(outcomes: Outcomes) -> None:
    done = outcomes["explain nothing recorded"]
    assert_clean(done)
    assert (done.returncode, done.stderr) == (0, ""), done.explain()
    assert done.stdout.startswith(outcomes.expected["explain nothing recorded"]), done.explain()
