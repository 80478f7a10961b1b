"""The status page in a real browser (Debian's headless Chromium driven by Playwright) against
the real daemon and the simulated cluster ``canarywatch demo`` runs (issue 18).

One run, in the order a person would use it: canaries appear on ``/`` without a reload; on
checkout's page its second rollout's rollback appears within a second of the daemon notifying
it; a silence made on the page (the API's own error text shown for a wrong one) mutes checkout's
next transition, as its decision trail says; a dead letter is retried from the outbox page. A
screenshot of each view is taken and checked for what it must show (the DOM text at that moment,
and a PNG of a real size). ``CANARYWATCH_UPDATE_SCREENSHOTS=1`` also writes them to
``docs/screenshots/`` (the README's), which a normal run leaves alone.

Without Chromium or Playwright the test is skipped with one line; under ``CI=true`` it fails.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import shutil
import struct
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from tests.e2e.test_daemon import Cluster, running, simulated_cluster
from tests.support.binaries import require_binary
from tests.support.webhook_receiver import WebhookReceiver, run_webhook_receiver

from canarywatch.app import App
from canarywatch.config import parse_config
from canarywatch.secrets import Secret
from canarywatch.simulator.scenarios import (
    CHECKOUT_ANALYSIS,
    play_all,
    promoted_rollout,
    realtime_pace,
)

SPEED = 600.0
"""Flagger time per wall second: a Flagger minute is 0.1 s."""
MINUTE = 60.0
TOKEN = "page-browser-token"
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"


def _playwright() -> Any:
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        reason = "playwright is not installed (pip install -e '.[dev]')"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason} (CI=true requires it)", pytrace=False)
        pytest.skip(reason)
    return async_playwright


def _config(cluster: Cluster, out: Path, state: Path, pager_url: str) -> Any:
    text = f"""
cluster: sim
clusters:
  - name: sim
    connection: host
    host: "{cluster.api.url}"
receivers:
  - name: capture
    sink: jsonl
    options: {{path: "{out}"}}
  - name: pager
    sink: webhook
    options: {{url: {{value: "{pager_url}"}}}}
route:
  receiver: capture
  group_by: ["..."]
  group_wait: 0s
  routes:
    - {{receiver: pager, matchers: ['canary="podinfo"', 'transition="rolled-back"'],
        continue: true, group_wait: 0s}}
    - {{receiver: capture, group_wait: 0s}}
state: {{dir: "{state}"}}
server: {{listen: "127.0.0.1:0"}}
metrics_source:
  mode: scrape
  interval: 1s
  timeout: 1s
  targets: [{{name: flagger, url: "{cluster.metrics_url}", cluster: sim}}]
"""
    config = parse_config(text)
    server = config.server.model_copy(update={"token": Secret(TOKEN)})
    return dataclasses.replace(config, server=server)


def _notified(out: Path, canary: str, transition: str) -> int:
    if not out.exists():
        return 0
    count = 0
    for line in out.read_text(encoding="utf-8").splitlines():
        for event in json.loads(line)["events"]:
            count += event["canary"] == canary and event["transition"] == transition
    return count


async def _until(predicate: Any, what: str, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def _png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    width, height = struct.unpack(">II", head[16:24])
    return width, height


async def _shot(page: Any, name: str, tmp: Path, must_show: list[str]) -> None:
    """Screenshot the view; what it must show is checked in the DOM at that moment."""
    text = await page.inner_text("body")
    for needle in must_show:
        assert needle in text, f"{name} view does not show {needle!r}"
    path = tmp / f"{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    width, height = _png_size(path)
    assert width >= 1000
    assert height >= 300
    assert path.stat().st_size > 10_000
    if os.environ.get("CANARYWATCH_UPDATE_SCREENSHOTS") == "1":
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, SCREENSHOTS / f"{name}.png")


@dataclasses.dataclass
class Rig:
    app: App
    cluster: Cluster
    out: Path
    pager: WebhookReceiver
    url: str


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    out = tmp_path / "out.jsonl"
    async with simulated_cluster() as cluster, run_webhook_receiver() as pager:
        for _ in range(20):
            pager.script(400)  # the pager refuses: its notifications are dead letters
        config = _config(cluster, out, tmp_path / "state", pager.url)
        async with running(config) as app:
            assert app.web is not None
            yield Rig(app, cluster, out, pager, f"http://127.0.0.1:{app.web.port}")


async def _api(rig: Rig, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, rig.url + path, json=body, headers=headers) as r,
    ):
        return r.status, await r.json()


@pytest.mark.timeout(90)
async def test_the_status_page_in_a_browser(rig: Rig, tmp_path: Path) -> None:
    chromium = require_binary("chromium")
    async_playwright = _playwright()
    pace = realtime_pace(SPEED)
    sim = rig.cluster.sim
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=chromium, args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 800})
            page.set_default_timeout(10_000)

            # -- canaries appear on `/`, live: the page is never reloaded -------------------
            await page.goto(rig.url + "/")  # loopback: readable without the token
            await page.evaluate("window.__notReloaded = true")
            # play_all deletes each scenario's canaries when it ends: checkout comes after.
            await play_all(sim, pace, names=["rollback_failed_checks", "manual_approval_gate"])
            checkout = sim.create_canary(
                "shop", "checkout", analysis=CHECKOUT_ANALYSIS, revision="865dbb8b64"
            )
            await promoted_rollout(checkout, pace, revision="5f7e2c10", not_ready=False)
            for canary in ("shop/checkout", "test/podinfo", "test/frontend"):
                await page.wait_for_selector(f'tr[data-canary="{canary}"]')
            assert await page.evaluate("window.__notReloaded === true")
            await _until(
                lambda: page.is_visible('tr[data-canary="test/podinfo"] >> text=Failed'),
                "podinfo's rollback on the list",
            )

            # -- checkout's rollout 2: its rollback on the timeline within a second -----------
            await page.goto(rig.url + "/canaries/shop/checkout?cluster=sim")
            await page.wait_for_selector("#rollout-1 >> text=promoted ✓")
            checkout.new_revision("b7d2e914")
            await pace(MINUTE)
            checkout.start_analysis()
            await pace(MINUTE)
            checkout.advance()
            for value in (96.12, 93.87, 92.5, 91.4, 89.96):
                await pace(MINUTE)
                checkout.halt_metric("request-success-rate", value)
            await page.wait_for_selector("#rollout-2 >> text=in progress")
            checkout.rollback("failed-checks")
            notified_at = shown_at = 0.0
            deadline = time.monotonic() + 10
            while not (notified_at and shown_at) and time.monotonic() < deadline:
                now = time.monotonic()
                if not notified_at and _notified(rig.out, "shop/checkout", "rolled-back"):
                    notified_at = now
                if not shown_at and await page.is_visible("#rollout-2 >> text=rolled back ✗"):
                    shown_at = now
                await asyncio.sleep(0.02)
            assert notified_at, "the daemon never notified checkout's rollback"
            assert shown_at, "checkout's rollback never appeared on its timeline"
            assert shown_at - notified_at <= 1.0, shown_at - notified_at
            trail = page.locator('#rollout-2 tr[data-transition="rolled-back"] details')
            await trail.locator("summary").click()
            await _shot(
                page,
                "canary",
                tmp_path,
                [
                    "Rollout 2",
                    "rolled back ✗",
                    "Rollout 1",
                    "promoted ✓",
                    "delivered to capture",  # who was told
                    "Flagger said:",
                    "seen by",
                ],
            )
            svg = await page.get_attribute("#rollout-2 svg", "data-weights")
            assert svg is not None
            weights = [int(w) for w in svg.split()]
            assert weights[0] == 0, weights  # the new revision starts at 0 %
            assert max(weights) == 20, weights  # analysis reached 20 % (10, then 20) ...
            assert weights[-1] == 0, weights  # ... and the rollback put it back at 0 %

            # -- a silence made on the page; the API's error text shown as it is -------------
            await page.goto(rig.url + "/silences")
            await page.fill("#s-matchers", 'namespace="shop"\ncanary="checkout"')
            await page.fill("#s-duration", "1h")
            await page.fill("#s-created-by", "oncall")
            await page.fill("#s-comment", "checkout rollback under investigation")
            await page.click("#silence-form button[type=submit]")
            await page.wait_for_selector("#silence-result >> text=missing or wrong bearer token")
            await page.fill("#token", TOKEN)
            await page.click("#token-form button[type=submit]")
            await page.fill("#s-duration", "an hour")
            await page.click("#silence-form button[type=submit]")
            _, refused = await _api(
                rig,
                "POST",
                "/api/v1/silences",
                {
                    "matchers": ['namespace="shop"', 'canary="checkout"'],
                    "duration": "an hour",
                    "created_by": "oncall",
                    "comment": "x",
                },
            )
            await page.wait_for_selector(f"#silence-result >> text={refused['error']}")
            await page.fill("#s-duration", "1h")
            await page.click("#silence-form button[type=submit]")
            await page.wait_for_selector("td >> text=checkout rollback under investigation")
            assert TOKEN not in await page.content()
            await _shot(
                page,
                "silences",
                tmp_path,
                ['namespace="shop"', 'canary="checkout"', "active", "oncall", "Create silence"],
            )
            _, listed = await _api(rig, "GET", "/api/v1/silences")
            (silence,) = [s for s in listed["silences"] if s["created_by"] == "oncall"]

            # -- ... and it mutes checkout's next transition --------------------------------
            before = _notified(rig.out, "shop/checkout", "revision-detected")
            checkout.new_revision("c0ffee11")

            async def silenced() -> bool:
                _, answer = await _api(
                    rig, "GET", "/api/v1/explain/shop/checkout?transition=revision-detected"
                )
                last = answer["trails"][-1] if answer["trails"] else {}
                return (last.get("suppressed") or {}).get("reason") == "silenced"

            await _until(silenced, "the silence to mute checkout's next revision")
            _, answer = await _api(
                rig, "GET", "/api/v1/explain/shop/checkout?transition=revision-detected"
            )
            assert silence["id"] in answer["trails"][-1]["suppressed"]["detail"]
            await asyncio.sleep(0.5)
            assert _notified(rig.out, "shop/checkout", "revision-detected") == before
            await page.goto(rig.url + "/canaries/shop/checkout?cluster=sim")
            await page.wait_for_selector("#rollout-3 >> text=suppressed (silenced)")

            # -- the outbox: podinfo's rollback was refused by the pager: retry it ----------
            await page.goto(rig.url + "/outbox")
            await page.wait_for_selector("button[data-action=retry]")
            await _shot(page, "outbox", tmp_path, ["Dead letters", "pager", "test/podinfo"])
            dead_id = await page.get_attribute("button[data-action=retry]", "data-id")
            await page.click("button[data-action=retry]")
            await page.wait_for_selector(f"#outbox-result >> text=retrying item {dead_id}")

            # -- the canaries once more, for their screenshot: each in a different state -----
            await page.goto(rig.url + "/")
            await page.wait_for_selector('tr[data-canary="shop/checkout"] >> text=Progressing')
            await _shot(
                page,
                "canaries",
                tmp_path,
                ["checkout", "podinfo", "frontend", "✓ Succeeded", "✗ Failed", "▶ Progressing"],
            )
        finally:
            await browser.close()
