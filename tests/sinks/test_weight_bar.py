"""One weight bar (``canarywatch.sinks.weight_bar``), the same in every sink that shows one.

Before issue 14 three copies rounded differently: 25 % was 2 cells in Slack, Teams, Discord and
``tail`` (Python's round-half-even) but 3 on the console (half up). The rule now, everywhere:
a cell half filled or more counts, so 25 % is 3 cells.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable

import aiohttp
import pytest
import structlog

from canarywatch.cli.tail import render_snapshot
from canarywatch.model import Notification, Transition
from canarywatch.secrets import Secret
from canarywatch.sinks import Sink, weight_bar
from canarywatch.testing import make_event, make_notification
from canarywatch_sinks.console import ConsoleSink
from canarywatch_sinks.discord import DiscordSink
from canarywatch_sinks.slack import SlackSink
from canarywatch_sinks.teams import TeamsSink

BARS = {
    0: "▱▱▱▱▱▱▱▱▱▱ 0%",
    25: "▰▰▰▱▱▱▱▱▱▱ 25%",
    50: "▰▰▰▰▰▱▱▱▱▱ 50%",
    100: "▰▰▰▰▰▰▰▰▰▰ 100%",
}

TEAMS_URL = (
    "https://prod-12.westeurope.logic.azure.com:443/workflows/abc/triggers/manual/paths/invoke"
    "?api-version=2016-06-01&sp=%2Ftriggers%2Fmanual%2Frun&sv=1.0&sig=s3cr3t-sig-value"
)
SLACK_HOOK = "http://127.0.0.1:9/services/T000/B000/XXXX"
DISCORD_HOOK = "http://127.0.0.1:9/api/webhooks/123456/token-value"

SinkBuilder = Callable[[aiohttp.ClientSession], Sink]
SINKS: dict[str, SinkBuilder] = {
    "console": lambda http: ConsoleSink(
        "console", {"color": "never"}, http=http, log=structlog.get_logger()
    ),
    "slack-webhook": lambda http: SlackSink(
        "slack",
        {"webhook_url": Secret(SLACK_HOOK), "min_interval_s": 0},
        http=http,
        log=structlog.get_logger(),
    ),
    "slack-bot": lambda http: SlackSink(
        "slack",
        {
            "token": Secret("xoxb-fake-bot-token-0123456789"),
            "channel": "C0FAKE0001",
            "api_url": "http://127.0.0.1:9/api",
            "min_interval_s": 0,
        },
        http=http,
        log=structlog.get_logger(),
    ),
    "discord": lambda http: DiscordSink(
        "discord", {"webhook_url": Secret(DISCORD_HOOK)}, http=http, log=structlog.get_logger()
    ),
    "teams": lambda http: TeamsSink(
        "teams",
        {"webhook_url": Secret(TEAMS_URL), "min_interval_s": 0},
        http=http,
        log=structlog.get_logger(),
    ),
}


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def at_weight(weight: int) -> Notification:
    return make_notification(
        make_event(
            Transition.WEIGHT_ADVANCED,
            rollout="2",
            weight=weight,
            detail=str(weight),
            message=f"Advance podinfo.test canary weight {weight}",
        )
    )


@pytest.mark.parametrize(("weight", "bar"), BARS.items())
def test_weight_bar_rounds_half_a_cell_up(weight: int, bar: str) -> None:
    assert weight_bar(weight) == bar


def test_weight_bar_edges() -> None:
    assert weight_bar(4) == "▱" * 10 + " 4%"
    assert weight_bar(5) == "▰" + "▱" * 9 + " 5%"
    assert weight_bar(45) == "▰" * 5 + "▱" * 5 + " 45%"
    assert weight_bar(250) == "▰" * 10 + " 100%"
    assert weight_bar(-3) == "▱" * 10 + " 0%"
    assert weight_bar(None) == "▱" * 10 + " –"
    assert weight_bar(25, cells=4) == "▰▱▱▱ 25%"


@pytest.mark.parametrize("sink_name", SINKS)
@pytest.mark.parametrize(("weight", "bar"), BARS.items())
async def test_every_sink_shows_the_same_bar(
    http: aiohttp.ClientSession, sink_name: str, weight: int, bar: str
) -> None:
    sink = SINKS[sink_name](http)
    try:
        payload = sink.render(at_weight(weight))
    finally:
        await sink.aclose()
    text = payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False)
    assert bar in text
    assert sum(text.count(other) for w, other in BARS.items() if w != weight) == 0


@pytest.mark.parametrize(("weight", "bar"), BARS.items())
def test_tail_shows_the_same_bar(weight: int, bar: str) -> None:
    row = {"cluster": "prod", "canary": "test/podinfo", "phase": "Progressing", "weight": weight}
    text = render_snapshot([row], [], origin="http://127.0.0.1:9797", color=False)
    assert bar in text
