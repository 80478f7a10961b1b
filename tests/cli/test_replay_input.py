"""``canarywatch replay``: a line whose ``data`` has the wrong shape is rejected with FILE:LINE and
what is wrong (exit 2), as the README says; ``-`` is standard input; ``--stats`` is documented."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from tests.cli import CLI, ENV

from canarywatch.cli.entry import main
from canarywatch.cli.exitcodes import EXIT_CONFIG
from canarywatch.formats import recording

ROOT = Path(__file__).resolve().parents[2]
RECORDINGS = ROOT / "tests" / "recordings"
ROLLBACK = RECORDINGS / "rollback.jsonl"


def _lines() -> list[dict[str, object]]:
    return [
        json.loads(line)
        for line in ROLLBACK.read_text(encoding="utf-8").splitlines()
        if line.startswith("{")
    ]


def _event(**changes: object) -> dict[str, object]:
    line = _lines()[0]
    data = line["data"]
    assert isinstance(data, dict)
    data["object"].update(changes)
    return line


def _webhook(body: object) -> dict[str, object]:
    return {"at": "2026-08-04T14:00:02Z", "source": "flagger-webhook", "data": body}


GOOD_BODY = {
    "name": "podinfo",
    "namespace": "test",
    "phase": "Progressing",
    "metadata": {"eventMessage": "New revision detected! Scaling up podinfo.test"},
}

BAD = {
    "webhook name is a number": (
        _webhook({**GOOD_BODY, "name": 5}),
        "field 'data.name': expected a string, got a number",
    ),
    "webhook without metadata.eventMessage": (
        _webhook({**GOOD_BODY, "metadata": {"eventType": "Normal"}}),
        "field 'data.metadata.eventMessage' is missing",
    ),
    "webhook without namespace": (
        _webhook({k: v for k, v in GOOD_BODY.items() if k != "namespace"}),
        "field 'data.namespace' is missing",
    ),
    "Event message is a number": (
        _event(message=42),
        "field 'data.object.message': expected a string, got a number",
    ),
    "Event involvedObject is a string": (
        _event(involvedObject="podinfo"),
        "field 'data.object.involvedObject': expected an object, got a string",
    ),
    "unknown watch type": (
        {**_lines()[0], "data": {**_lines()[0]["data"], "type": "CHANGED"}},  # type: ignore[dict-item]
        "field 'data.type': expected one of ADDED, MODIFIED, DELETED, BOOKMARK, ERROR",
    ),
}


@pytest.mark.parametrize(("line", "complaint"), BAD.values(), ids=BAD.keys())
def test_a_line_of_the_wrong_shape_is_rejected_naming_file_line_and_field(
    line: dict[str, object], complaint: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.jsonl"
    good = ROLLBACK.read_text(encoding="utf-8").splitlines()[1]
    path.write_text(f"{good}\n{json.dumps(line)}\n", encoding="utf-8")
    assert main(["replay", str(path)]) == EXIT_CONFIG
    out, err = capsys.readouterr()
    assert out == ""  # nothing replayed from a file with a bad line
    assert err == f"canarywatch: bad recording: {path}:2: {complaint}\n"


def test_a_good_webhook_body_is_accepted() -> None:
    obs = recording.decode_line(json.dumps(_webhook(GOOD_BODY)))
    assert obs is not None
    assert obs.data == GOOD_BODY


def test_every_bundled_recording_has_the_right_shape() -> None:
    paths = sorted(RECORDINGS.glob("**/*.jsonl"))
    paths.append(ROOT / "daemon" / "canarywatch" / "scenarios" / "day.jsonl")
    assert len(paths) > 8
    for path in paths:
        assert recording.read(path), path


def _replay(args: list[str], stdin: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, "replay", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=ENV,
        timeout=60,
        check=False,
    )


def test_dash_replays_standard_input() -> None:
    text = ROLLBACK.read_text(encoding="utf-8")
    from_stdin = _replay(["-"], text)
    from_file = _replay([str(ROLLBACK)], "")
    assert from_stdin.returncode == 0, from_stdin.stderr
    assert from_stdin.stdout == from_file.stdout
    assert len(from_stdin.stdout.splitlines()) == 6


def test_a_bad_line_on_standard_input_is_named_stdin() -> None:
    done = _replay(["-"], "\n" + json.dumps(_webhook({**GOOD_BODY, "name": 5})) + "\n")
    assert done.returncode == EXIT_CONFIG
    assert done.stderr == (
        "canarywatch: bad recording: <stdin>:2: "
        "field 'data.name': expected a string, got a number\n"
    )


def test_the_config_may_come_from_standard_input_but_not_both() -> None:
    policy = "route: {receiver: all}\nreceivers: [{name: all, sink: jsonl}]\n"
    done = _replay([str(ROLLBACK), "--config", "-"], policy)
    assert done.returncode == 0, done.stderr
    assert {json.loads(line)["receiver"] for line in done.stdout.splitlines()} == {"all"}
    both = _replay(["-", "--config", "-"], policy)
    assert both.returncode == EXIT_CONFIG
    assert both.stderr == (
        "canarywatch: replay: the recording and --config cannot both be standard input (-)\n"
    )


def test_stats_is_documented_with_its_counters(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["replay", str(ROLLBACK), "--stats"]) == 0
    stats = json.loads(capsys.readouterr().err.splitlines()[-1])
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Recordings and replay") :]
    section = section[: section.index("\n## ")]
    assert "`--stats`" in section
    for key in stats:
        assert f"`{key}`" in section, key
    assert "replay -" in section


def test_record_writes_to_standard_output_for_dash(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(f"state: {{dir: {json.dumps(str(tmp_path / 'state'))}}}\n")
    done = subprocess.run(
        [*CLI, "record", "--config", str(config), "--output", "-", "--duration", "1s"],
        capture_output=True,
        text=True,
        env=ENV,
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""  # no source configured: nothing observed
    assert done.stderr.endswith("recorded 0 observations to standard output\n")
    assert not (tmp_path / "-").exists()
