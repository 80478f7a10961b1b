"""``canarywatch completion bash|zsh``: scripts generated from the parser that the shells accept
and that complete subcommands, nested actions, options, choices and file names."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from tests.cli import CLI, ENV
from tests.support.binaries import require_binary

from canarywatch.cli.completion import bash_script
from canarywatch.cli.entry import build_parser, main

BASH = shutil.which("bash")

pytestmark = pytest.mark.skipif(BASH is None, reason="bash is not installed")


@pytest.fixture(scope="module")
def script(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bash script as the installed command prints it."""
    done = subprocess.run(
        [*CLI, "completion", "bash"], capture_output=True, text=True, env=ENV, check=False
    )
    assert done.returncode == 0, done.stderr
    path = tmp_path_factory.mktemp("completion") / "canarywatch.bash"
    path.write_text(done.stdout, encoding="utf-8")
    return path


def complete(script: Path, *words: str, cwd: Path | None = None) -> list[str]:
    """What bash offers for ``canarywatch WORDS...`` (the last word is the one being typed)."""
    assert BASH is not None
    program = (
        f'source "$1"; shift; COMP_WORDS=(canarywatch "$@"); COMP_CWORD={len(words)}; '
        'COMP_LINE="${COMP_WORDS[*]}"; COMP_POINT=${#COMP_LINE}; '
        '_canarywatch canarywatch "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"; '
        'printf "%s\\n" "${COMPREPLY[@]}"'
    )
    done = subprocess.run(
        [BASH, "--norc", "--noprofile", "-c", program, "bash", str(script), *words],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    return [line for line in done.stdout.splitlines() if line]


def test_bash_accepts_the_script_and_registers_the_function(script: Path) -> None:
    assert BASH is not None
    syntax = subprocess.run([BASH, "-n", str(script)], capture_output=True, text=True, check=False)
    assert syntax.returncode == 0, syntax.stderr
    registered = subprocess.run(
        [BASH, "--norc", "-c", 'source "$1"; complete -p canarywatch', "bash", str(script)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert registered.returncode == 0, registered.stderr
    assert registered.stdout.strip() == "complete -o filenames -F _canarywatch canarywatch"


def test_it_completes_every_subcommand_of_the_parser(script: Path) -> None:
    parser = build_parser()
    subcommands = next(a for a in parser._actions if a.dest == "command").choices
    assert subcommands is not None
    assert complete(script, "") == list(subcommands)
    assert complete(script, "ch") == ["check-config"]
    assert complete(script, "re") == ["replay", "record"]


def test_it_completes_actions_options_and_choices(script: Path) -> None:
    assert complete(script, "silence", "") == ["add", "list", "expire"]
    # Options given before the action are skipped with their values.
    assert complete(script, "outbox", "--url", "http://x", "d") == ["drop"]
    assert complete(script, "check-config", "--s") == ["--skip-secrets"]
    assert set(complete(script, "silence", "add", "--")) >= {"--duration", "--comment", "--url"}
    assert complete(script, "completion", "") == ["bash", "zsh"]
    assert complete(script, "--v") == ["--version"]


def test_it_completes_file_names_where_a_file_is_taken(script: Path, tmp_path: Path) -> None:
    (tmp_path / "policy.yaml").touch()
    (tmp_path / "day.jsonl").touch()
    assert complete(script, "replay", "d", cwd=tmp_path) == ["day.jsonl"]
    assert complete(script, "replay", "day.jsonl", "--config", "p", cwd=tmp_path) == ["policy.yaml"]
    assert complete(script, "check-config", "p", cwd=tmp_path) == ["policy.yaml"]
    assert complete(script, "tail", "--url", "", cwd=tmp_path) == []  # a URL: nothing to offer


def test_the_command_prints_it(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["completion", "bash"]) == 0
    assert capsys.readouterr().out == bash_script(build_parser())


def test_zsh_accepts_its_script_and_completes_through_bashcompinit(tmp_path: Path) -> None:
    zsh = require_binary("zsh")  # skips without zsh; fails under CI=true (.ci/run installs it)
    done = subprocess.run(
        [*CLI, "completion", "zsh"], capture_output=True, text=True, env=ENV, check=False
    )
    assert done.returncode == 0, done.stderr
    script = tmp_path / "canarywatch.zsh"
    script.write_text(done.stdout, encoding="utf-8")
    syntax = subprocess.run([zsh, "-n", str(script)], capture_output=True, text=True, check=False)
    assert syntax.returncode == 0, syntax.stderr
    # compgen of bashcompinit runs the function in sh emulation; so does this.
    program = (
        'autoload -U +X compinit && compinit -u -D; source "$1"; '
        "f() { emulate -L sh; setopt kshglob noshglob braceexpand; "
        'COMP_WORDS=(canarywatch silence ""); COMP_CWORD=2; '
        '_canarywatch canarywatch "" silence; print -l -- "${COMPREPLY[@]}"; }; f'
    )
    run = subprocess.run(
        [zsh, "-f", "-c", program, "zsh", str(script)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=30,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["add", "list", "expire"]
