"""The real ``amtool`` as the oracle for Alertmanager's config parsing and routing.

``AlertmanagerOracle(workdir)`` writes one config per question into ``workdir`` and asks the
binary: does ``amtool check-config`` accept it, which receivers does
``amtool config routes test`` pick for a label set, and how does ``amtool config routes`` print
the route tree (matchers parsed, sorted and re-rendered by Alertmanager itself). Each call is a
short-lived process (about 15 ms); nothing is left running.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from itertools import count
from pathlib import Path
from typing import Any

from tests.support.binaries import require_binary

from canarywatch.labels.matchers import escape_value

_TIMEOUT_S = 30.0


@dataclass(frozen=True, slots=True)
class Checked:
    ok: bool
    output: str
    path: Path


class AlertmanagerOracle:
    """``amtool`` questions about configs (dicts, written as JSON, which is YAML)."""

    def __init__(self, workdir: Path) -> None:
        self.binary = require_binary("amtool")
        self.workdir = workdir
        self._names = count()

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.binary, *args],
            capture_output=True,
            text=True,
            timeout=_TIMEOUT_S,
            check=False,
        )

    def check(self, config: Mapping[str, Any]) -> Checked:
        """``amtool check-config`` on ``config``."""
        return self.check_text(json.dumps(config, indent=2))

    def check_text(self, text: str) -> Checked:
        """``amtool check-config`` on YAML ``text`` as written (quoting and all)."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        path = self.workdir / f"am-{next(self._names)}.yml"
        path.write_text(text, encoding="utf-8")
        done = self._run("check-config", str(path))
        return Checked(done.returncode == 0, (done.stdout + done.stderr).strip(), path)

    def receivers(self, checked: Checked, labels: Mapping[str, str]) -> list[str]:
        """The receivers ``amtool config routes test`` routes ``labels`` to, in tree order."""
        assert checked.ok, checked.output
        # amtool reads each label as a matcher: quote the value so any text survives.
        args = [f'{name}="{escape_value(value)}"' for name, value in labels.items()]
        done = self._run("config", "routes", "test", f"--config.file={checked.path}", *args)
        assert done.returncode == 0, done.stderr
        return [name for name in done.stdout.strip().split(",") if name]

    def tree(self, checked: Checked) -> str:
        """``amtool config routes``: the tree as Alertmanager renders it."""
        assert checked.ok, checked.output
        done = self._run("config", "routes", f"--config.file={checked.path}")
        assert done.returncode == 0, done.stderr
        return done.stdout
