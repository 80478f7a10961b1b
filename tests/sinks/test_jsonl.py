"""The ``jsonl`` sink: golden render, file output, stdout output."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import aiohttp
import pytest
import structlog
from tests.sinks.golden import assert_golden_text

from canarywatch.formats.jsonout import notification_to_json
from canarywatch.model import Notification, NotificationStatus, Phase, SourceName, Transition
from canarywatch.sinks import DeliveryError, DeliveryReason
from canarywatch.testing import T0, check_sink_contract, make_event, make_notification
from canarywatch_sinks.jsonl import JsonlSink


def notifications() -> list[Notification]:
    rolled = make_event(
        Transition.ROLLED_BACK,
        cluster="prod-eu",
        rollout="2",
        episode=1,
        failed_checks=5,
        phase=Phase.FAILED,
        reason="failed-checks",
        target="podinfo",
        message="Rolling back podinfo.test failed checks threshold reached 5 — ünïcødé",
        occurred_at=T0 - timedelta(milliseconds=1500),
        sources=(SourceName.KUBERNETES_EVENTS, SourceName.FLAGGER_WEBHOOK),
    )
    advanced = make_event(
        Transition.WEIGHT_ADVANCED, at=T0 - timedelta(seconds=60), weight=30, detail="30"
    )
    return [
        make_notification(advanced, rolled),
        make_notification(
            make_event(Transition.PROMOTED, rollout="3"),
            status=NotificationStatus.RESOLVED,
            receiver="audit",
        ),
    ]


async def test_render_golden() -> None:
    async with aiohttp.ClientSession() as http:
        sink = JsonlSink("jsonl", {}, http=http, log=structlog.get_logger())
        lines = [sink.render(n) for n in notifications()]
    assert all("\n" not in line for line in lines)
    assert_golden_text("jsonl_notifications.jsonl", "\n".join(lines) + "\n")


async def test_appends_lines_to_a_file_creating_parents(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "out.jsonl"
    ns = notifications()
    async with aiohttp.ClientSession() as http:
        sink = JsonlSink("jsonl", {"path": str(path)}, http=http, log=structlog.get_logger())
        await sink.check()
        assert path.exists()
        await sink.deliver(sink.render(ns[0]))
        # flushed per line: readable before close
        assert len(path.read_text(encoding="utf-8").splitlines()) == 1
        await sink.deliver(sink.render(ns[1]))
        await sink.aclose()
        again = JsonlSink("jsonl", {"path": str(path)}, http=http, log=structlog.get_logger())
        await again.deliver(again.render(ns[0]))
        await again.aclose()
    lines = path.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == [
        notification_to_json(ns[0]),
        notification_to_json(ns[1]),
        notification_to_json(ns[0]),
    ]


async def test_writes_to_stdout_by_default(capsys: pytest.CaptureFixture[str]) -> None:
    n = notifications()[1]
    async with aiohttp.ClientSession() as http:
        sink = JsonlSink("jsonl", {}, http=http, log=structlog.get_logger())
        await sink.deliver(sink.render(n))
        with pytest.raises(DeliveryError) as exc:
            await sink.deliver("two\nlines")
    assert exc.value.reason is DeliveryReason.INVALID_PAYLOAD
    assert json.loads(capsys.readouterr().out) == notification_to_json(n)


async def test_unwritable_path_fails_check(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    async with aiohttp.ClientSession() as http:
        sink = JsonlSink(
            "jsonl", {"path": str(blocker / "x.jsonl")}, http=http, log=structlog.get_logger()
        )
        with pytest.raises(DeliveryError) as exc:
            await sink.check()
    # What happened, not just "connection (not retryable)": the path and the system's words.
    assert exc.value.detail == (
        f"cannot open {blocker / 'x.jsonl'} for appending: {blocker}: not a directory"
    )
    assert str(exc.value) == (
        f"delivery failed: {exc.value.detail} (reason connection, not retryable)"
    )


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (ENOSPC on write)")
async def test_a_failed_write_says_what_and_why() -> None:
    full = "/dev/full"
    async with aiohttp.ClientSession() as http:
        sink = JsonlSink("jsonl", {"path": full}, http=http, log=structlog.get_logger())
        with pytest.raises(DeliveryError) as exc:
            await sink.deliver(sink.render(notifications()[1]))
        await sink.aclose()
    assert exc.value.retryable  # a full disk may clear
    assert exc.value.detail == "cannot write to /dev/full: no space left on device"


def test_only_the_stdout_sink_prints_its_notifications(tmp_path: Path) -> None:
    log = structlog.get_logger()
    http = None  # the sink does not use it
    assert JsonlSink("jsonl", {}, http=http, log=log).prints_notifications  # type: ignore[arg-type]
    path = {"path": str(tmp_path / "x.jsonl")}
    assert not JsonlSink("jsonl", path, http=http, log=log).prints_notifications  # type: ignore[arg-type]


async def test_jsonl_passes_the_sink_contract(tmp_path: Path) -> None:
    await check_sink_contract(JsonlSink, {"path": str(tmp_path / "c.jsonl")}, deliver=True)
    assert (tmp_path / "c.jsonl").read_text(encoding="utf-8").count("\n") == 1
