"""The Dockerfile, read as text (there is no Docker engine here): stages, user, entrypoint,
read-only-root friendliness, and that ``.dockerignore`` lets exactly the sources through."""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"

BUILD_TOOLS = ("gcc", "g++", "build-essential", "make", "python3-dev", "libc6-dev", "git")


@dataclass
class Instruction:
    keyword: str
    args: str
    line: int


@dataclass
class Stage:
    image: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def env(self) -> dict[str, str]:
        values: dict[str, str] = {}
        for instruction in self.all("ENV"):
            for token in shlex.split(instruction.args):
                key, sep, value = token.partition("=")
                assert sep, f"line {instruction.line}: use ENV KEY=VALUE, not {token!r}"
                values[key] = value
        return values


def parse_dockerfile(text: str) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the stages, with continuation lines joined."""
    logical: list[tuple[int, str]] = []
    buffer = ""
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not buffer):
            continue
        if not buffer:
            start = number
        if stripped.endswith("\\"):
            buffer += stripped[:-1] + " "
            continue
        logical.append((start, buffer + stripped))
        buffer = ""
    assert not buffer, "dangling line continuation at the end"

    args: dict[str, str] = {}
    stages: list[Stage] = []
    for number, line in logical:
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        rest = rest.strip()
        if keyword == "FROM":
            words = rest.split()
            image = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args[m[1] or m[2]], words[0])
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(image=image, name=name))
        elif not stages:
            assert keyword == "ARG", f"line {number}: only ARG may precede the first FROM"
            key, _, default = rest.partition("=")
            args[key] = default
        else:
            stages[-1].instructions.append(Instruction(keyword, rest, number))
    return args, stages


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse_dockerfile(DOCKERFILE.read_text(encoding="utf-8"))[1]


@pytest.fixture(scope="module")
def final(stages: list[Stage]) -> Stage:
    return stages[-1]


def exec_form(instruction: Instruction) -> list[str]:
    value = json.loads(instruction.args)
    assert isinstance(value, list), f"line {instruction.line}: use the JSON (exec) form"
    assert all(isinstance(item, str) for item in value)
    return value


def test_multi_stage_on_slim_python_3_11(stages: list[Stage]) -> None:
    assert len(stages) >= 2
    for stage in stages:
        assert re.fullmatch(r"python:3\.11(\.\d+)?-slim(-\w+)?(@sha256:[0-9a-f]{64})?", stage.image)
    assert stages[0].name == "builder"


def test_builder_builds_a_wheel_and_installs_it_into_the_venv(stages: list[Stage]) -> None:
    runs = " ".join(i.args for i in stages[0].all("RUN"))
    assert re.search(r"pip wheel .*--wheel-dir /wheels \.", runs)
    assert "python -m venv /opt/canarywatch" in runs
    assert re.search(r"/opt/canarywatch/bin/pip install [^&]*/wheels/canarywatch-\*\.whl", runs)


def test_final_stage_copies_only_the_venv(final: Stage) -> None:
    copies = final.all("COPY")
    assert [c.args for c in copies] == ["--from=builder /opt/canarywatch /opt/canarywatch"]
    assert final.all("ADD") == []


def test_final_stage_has_no_build_tools(final: Stage) -> None:
    for run in final.all("RUN"):
        words = set(re.split(r"[\s;&|]+", run.args))
        assert not words & set(BUILD_TOOLS), f"line {run.line} installs build tools"
        assert "pip" not in run.args, f"line {run.line}: install in the builder, not here"
        assert "apt-get install" not in run.args, f"line {run.line}: nothing to install"


def test_runs_as_numeric_non_root_user(final: Stage) -> None:
    (user,) = final.all("USER")
    uid, _, gid = user.args.partition(":")
    assert uid == "10001"
    assert gid in ("", "10001")
    # The user is created before USER switches to it, with the same numeric ids.
    setup = " ".join(r.args for r in final.all("RUN") if r.line < user.line)
    assert "--uid 10001" in setup
    assert "--gid 10001" in setup


def test_read_only_root_compatible(final: Stage) -> None:
    env = final.env()
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    (volume,) = final.all("VOLUME")
    assert exec_form(volume) == ["/var/lib/canarywatch"]
    (workdir,) = final.all("WORKDIR")
    assert workdir.args == "/var/lib/canarywatch"  # a relative state.dir lands on the volume
    setup = " ".join(r.args for r in final.all("RUN"))
    assert "install -d -o 10001 -g 10001 -m 0700 /var/lib/canarywatch" in setup


def test_entrypoint_and_cmd(final: Stage) -> None:
    (entrypoint,) = final.all("ENTRYPOINT")
    (cmd,) = final.all("CMD")
    assert exec_form(entrypoint) == ["canarywatch"]
    assert exec_form(cmd) == ["run", "--config", "/etc/canarywatch/config.yaml"]
    assert final.env()["PATH"].startswith("/opt/canarywatch/bin:")


def test_exposes_the_metrics_port_without_healthcheck(final: Stage) -> None:
    assert [e.args for e in final.all("EXPOSE")] == ["9797"]
    assert final.all("HEALTHCHECK") == []


# --- .dockerignore --------------------------------------------------------------------------


def _pattern(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern (Go filepath.Match plus ``**``) as a regex on relative paths.

    A pattern that matches a directory also matches everything below it.
    """
    pattern = pattern.strip("/")
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
        elif pattern.startswith("**", i):
            out += ".*"
            i += 2
        elif pattern[i] == "*":
            out += "[^/]*"
            i += 1
        elif pattern[i] == "?":
            out += "[^/]"
            i += 1
        else:
            out += re.escape(pattern[i])
            i += 1
    return re.compile(out + "(?:/.*)?")


def dockerignore_excludes(rules: list[str], path: str) -> bool:
    """Whether ``path`` is left out of the build context (the last matching rule wins)."""
    excluded = False
    for rule in rules:
        negated = rule.startswith("!")
        if _pattern(rule.removeprefix("!")).fullmatch(path):
            excluded = not negated
    return excluded


@pytest.fixture(scope="module")
def ignore_rules() -> list[str]:
    lines = DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def test_copied_sources_are_in_the_context(stages: list[Stage], ignore_rules: list[str]) -> None:
    for stage in stages:
        for copy in stage.all("COPY"):
            words = copy.args.split()
            if any(word.startswith("--from=") for word in words):
                continue
            for source in words[:-1]:
                assert (ROOT / source).exists(), f"line {copy.line}: {source} does not exist"
                assert not dockerignore_excludes(ignore_rules, source), source


def test_package_files_reach_the_build(ignore_rules: list[str]) -> None:
    package = [
        p.relative_to(ROOT).as_posix()
        for tree in ("daemon", "plugins")
        for p in (ROOT / tree).rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and ".egg-info" not in str(p)
    ]
    assert "daemon/canarywatch/scenarios/day.jsonl" in package  # package data, not only .py
    assert "plugins/canarywatch_sinks/py.typed" in package
    left_out = [p for p in package if dockerignore_excludes(ignore_rules, p)]
    assert left_out == []


@pytest.mark.parametrize(
    "path",
    [
        ".git/HEAD",
        ".venv/bin/python",
        "tests/cli/test_cli.py",
        "state/canarywatch.db",
        "daemon/canarywatch/__pycache__/cli.cpython-311.pyc",
        "canarywatch.egg-info/PKG-INFO",
        "config/canarywatch.example.yaml",
        "Dockerfile",
    ],
)
def test_local_artefacts_stay_out(ignore_rules: list[str], path: str) -> None:
    assert dockerignore_excludes(ignore_rules, path)


def test_ignore_matcher_semantics() -> None:
    rules = ["*", "!daemon/", "**/__pycache__"]
    assert dockerignore_excludes(rules, "x.txt")
    assert not dockerignore_excludes(rules, "daemon/a/b.py")
    assert dockerignore_excludes(rules, "daemon/a/__pycache__/b.pyc")
