"""A receiver whose sink cannot be built is named at the same key and line by every command that
builds sinks (``check-config``, ``replay --send``, ``demo --replay``, ``test-sink``): the bad
option's own key, not the receiver's ``sink``."""

from __future__ import annotations

from pathlib import Path

import pytest

from canarywatch.cli.entry import main
from canarywatch.cli.exitcodes import EXIT_CONFIG

RECORDING = Path(__file__).resolve().parents[1] / "recordings" / "rollback.jsonl"


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(
        "receivers:\n"
        "  - name: out\n"
        "    sink: jsonl\n"
        "    options:\n"
        "      colour: red\n"
        "route: {receiver: out}\n",
        encoding="utf-8",
    )
    return path


@pytest.mark.parametrize(
    "command",
    [
        ["check-config", "{config}"],
        ["replay", str(RECORDING), "--send", "--config", "{config}"],
        ["demo", "--replay", "--config", "{config}"],
        ["test-sink", "out", "--config", "{config}"],
    ],
    ids=lambda command: command[0] + (" --send" if "--send" in command else ""),
)
def test_every_command_names_a_bad_sink_option_at_its_own_key_and_line(
    command: list[str], config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([arg.format(config=config) for arg in command]) == EXIT_CONFIG
    said = capsys.readouterr()
    assert f"{config}:5: receivers[0].options.colour: unknown option 'colour'" in (
        said.err + said.out
    )
    assert "receivers[0].sink" not in said.err + said.out
