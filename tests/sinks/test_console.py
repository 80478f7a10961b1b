"""The ``console`` sink: golden renders, untrusted text, stream selection."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import timedelta

import aiohttp
import pytest
import structlog
from tests.sinks.golden import assert_golden_text

from canarywatch.model import Notification, NotificationStatus, Phase, Transition
from canarywatch.sinks import DeliveryError, DeliveryReason
from canarywatch.testing import T0, check_sink_contract, make_event, make_notification
from canarywatch_sinks.console import ConsoleSink, weight_bar


def rollout_story() -> Notification:
    s = timedelta(seconds=1)
    evs = [
        make_event(
            Transition.REVISION_DETECTED,
            at=T0 - 300 * s,
            rollout="2",
            target="podinfo",
            message="New revision detected! Scaling up podinfo.test",
        ),
        make_event(
            Transition.ANALYSIS_STARTED,
            at=T0 - 240 * s,
            rollout="2",
            message="Starting canary analysis for podinfo.test",
        ),
        make_event(
            Transition.WEIGHT_ADVANCED,
            at=T0 - 180 * s,
            rollout="2",
            weight=10,
            detail="10",
            message="Advance podinfo.test canary weight 10",
        ),
        make_event(
            Transition.WEIGHT_ADVANCED,
            at=T0 - 120 * s,
            rollout="2",
            weight=30,
            detail="30",
            message="Advance podinfo.test canary weight 30",
        ),
        make_event(
            Transition.HALTED,
            at=T0 - 60 * s,
            rollout="2",
            phase=Phase.PROGRESSING,
            reason="request-success-rate 88.50 < 99",
            message="Halt podinfo.test advancement success rate 88.50% < 99%",
        ),
        make_event(
            Transition.ROLLED_BACK,
            at=T0,
            rollout="2",
            failed_checks=5,
            reason="failed-checks",
            phase=Phase.FAILED,
            message="Rolling back podinfo.test failed checks threshold reached 5",
        ),
        make_event(
            Transition.ROLLED_BACK,
            canary="payments/api-gateway",
            cluster="prod-eu",
            at=T0 + 2 * s,
            rollout="7",
            failed_checks=2,
            reason="webhook",
        ),
    ]
    return make_notification(*evs, group_labels={"namespace": "test", "severity": "critical"})


@pytest.fixture
async def make_sink() -> AsyncIterator[Callable[..., ConsoleSink]]:
    async with aiohttp.ClientSession() as http:
        made: list[ConsoleSink] = []

        def build(**options: object) -> ConsoleSink:
            sink = ConsoleSink("console", options, http=http, log=structlog.get_logger())
            made.append(sink)
            return sink

        yield build
        for sink in made:
            await sink.aclose()


def test_weight_bar() -> None:
    assert weight_bar(30) == "▰▰▰▱▱▱▱▱▱▱ 30%"
    assert weight_bar(0) == "▱" * 10 + " 0%"
    assert weight_bar(100) == "▰" * 10 + " 100%"
    assert weight_bar(250) == "▰" * 10 + " 100%"
    assert weight_bar(45) == "▰" * 5 + "▱" * 5 + " 45%"


async def test_render_golden_plain(make_sink: Callable[..., ConsoleSink]) -> None:
    sink = make_sink(color="never")
    text = sink.render(rollout_story())
    assert_golden_text("console_rollout.txt", text)
    assert "\x1b" not in text


async def test_render_golden_resolved_and_colored(make_sink: Callable[..., ConsoleSink]) -> None:
    n = make_notification(
        make_event(Transition.PROMOTED, rollout="3", message="Promotion completed! podinfo.test"),
        status=NotificationStatus.RESOLVED,
    )
    assert_golden_text("console_resolved_plain.txt", make_sink(color="never").render(n))
    colored = make_sink(color="always").render(n)
    assert_golden_text("console_resolved_color.txt", colored)
    assert "\x1b[1;32mRESOLVED\x1b[0m" in colored


async def test_untrusted_text_cannot_reach_the_terminal(
    make_sink: Callable[..., ConsoleSink],
) -> None:
    ev = make_event(
        Transition.HALTED,
        canary="te\x1b[2Jst/pod\ninfo",
        message='evil \x1b]0;pwned\x07title\r\n\x1b[31mred "quoted" \u202etxt\x07',
        reason="a\x00b",
    )
    n = make_notification(ev, receiver="team\x1b[5m", group_labels={"k\n": "v\x1b[0m"})
    text = make_sink(color="never").render(n)
    assert "\x1b" not in text
    assert "\x07" not in text
    assert "\u202e" not in text
    assert "\x00" not in text
    assert text.count("\n") == 1  # one event line, nothing injected
    assert 'reason=ab  "evil title red \\"quoted\\" txt"' in text
    assert "test/pod info" in text


async def test_deliver_writes_to_the_chosen_stream(
    make_sink: Callable[..., ConsoleSink], capsys: pytest.CaptureFixture[str]
) -> None:
    n = make_notification()
    out = make_sink(color="never")
    await out.deliver(out.render(n))
    err = make_sink(stream="stderr", color="auto")
    await err.deliver(err.render(n))
    captured = capsys.readouterr()
    assert captured.out == out.render(n)
    assert captured.err == out.render(n)  # auto: not a TTY under capture, so no colour
    with pytest.raises(DeliveryError) as exc:
        await out.deliver({"not": "text"})
    assert exc.value.reason is DeliveryReason.INVALID_PAYLOAD


async def test_console_passes_the_sink_contract() -> None:
    payloads = await check_sink_contract(ConsoleSink, {"color": "never"})
    assert len(payloads) == 2 * len(Transition) + 1


async def test_a_closed_stream_says_which_and_the_notification_is_not_logged_twice(
    make_sink: Callable[..., ConsoleSink], monkeypatch: pytest.MonkeyPatch
) -> None:
    class Closed:
        def write(self, text: str) -> int:
            raise BrokenPipeError(32, "Broken pipe")

        def isatty(self) -> bool:
            return False

    sink = make_sink(color="never")
    assert sink.prints_notifications  # dispatch logs its deliveries at debug
    monkeypatch.setattr("sys.stdout", Closed())
    with pytest.raises(DeliveryError) as exc:
        await sink.deliver(sink.render(make_notification()))
    assert not exc.value.retryable
    assert exc.value.detail == "cannot write to stdout: broken pipe"
