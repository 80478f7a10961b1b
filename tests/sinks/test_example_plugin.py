"""A third-party sink plugin, end to end: the example distribution in ``tests/example_plugin``
is installed into a throwaway directory, then canarywatch (as a subprocess, with only
``PYTHONPATH`` pointing there) discovers it, configures it and delivers through it."""

from __future__ import annotations

import asyncio
import importlib.metadata
import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = Path(__file__).parents[1] / "example_plugin"
RECORDING = Path(__file__).parents[1] / "recordings" / "rollback.jsonl"
DIST = "canarywatch-example-sink"
VERSION = "0.3.1"


def _canarywatch() -> list[str]:
    script = Path(sys.executable).with_name("canarywatch")
    return [str(script)] if script.exists() else [sys.executable, "-m", "canarywatch"]


def _can_build_wheels() -> bool:
    """setuptools < 70.1 needs the ``wheel`` distribution for ``bdist_wheel``."""
    return bool(importlib.metadata.entry_points(group="distutils.commands", name="bdist_wheel"))


def install_example(work: Path) -> Path:
    """Install the example distribution into ``work/target`` without network; return it.

    The source is copied first so build droppings (``build/``, ``*.egg-info``) stay out of the
    repository. With ``wheel`` available this is ``pip install --no-deps --no-build-isolation
    --target``; without it, setuptools' own install into the same directory. Either way the
    result is the package plus its metadata (``*.dist-info`` or ``*.egg-info``, both read by
    ``importlib.metadata``) carrying the entry point.
    """
    source = work / "src"
    target = work / "target"
    shutil.copytree(
        EXAMPLE,
        source,
        ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info", ".pytest_cache"),
    )
    if _can_build_wheels():
        command = [
            sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
            "--no-build-isolation", "--no-index", "--target", str(target), str(source),
        ]  # fmt: skip
    else:
        command = [
            sys.executable, "-c", "from setuptools import setup; setup()", "--quiet",
            "install", "--single-version-externally-managed", "--record", str(work / "record"),
            "--install-lib", str(target), "--install-scripts", str(work / "bin"),
            "--install-data", str(work / "data"), "--install-headers", str(work / "headers"),
        ]  # fmt: skip
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    done = subprocess.run(
        command, cwd=source, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return target


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return install_example(tmp_path_factory.mktemp("example-plugin"))


def _env(target: Path | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if target is not None:
        env["PYTHONPATH"] = str(target)
    return env


def run(args: list[str], *, target: Path | None, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*_canarywatch(), *args],
        cwd=cwd,  # not the repository: nothing may be imported from the example's source
        env=_env(target),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def write_config(path: Path, options: str) -> Path:
    path.write_text(
        "route:\n"
        "  receiver: oncall\n"
        "receivers:\n"
        "  - name: oncall\n"
        "    sink: pager\n"
        "    options:\n" + "".join(f"      {line}\n" for line in options.strip().splitlines()),
        encoding="utf-8",
    )
    return path


def test_the_install_holds_the_package_and_its_entry_point(target: Path) -> None:
    assert (target / "canarywatch_example_sink" / "__init__.py").is_file()
    dists = list(importlib.metadata.distributions(path=[str(target)]))
    assert [(d.metadata["Name"], d.version) for d in dists] == [(DIST, VERSION)]
    (ep,) = dists[0].entry_points.select(group="canarywatch.sinks")
    assert (ep.name, ep.value) == ("pager", "canarywatch_example_sink:PagerSink")


def test_canarywatch_discovers_the_installed_plugin(target: Path, tmp_path: Path) -> None:
    done = run(["plugins"], target=target, cwd=tmp_path)
    lines = {line.split()[0]: line for line in done.stdout.splitlines() if line.strip()}
    assert "pager" in lines, done.stdout + done.stderr
    pager = lines["pager"]
    assert f"{DIST} {VERSION}" in pager
    assert "canarywatch_example_sink:PagerSink" in pager
    assert "[supports_resolve]" in pager
    assert "FAILED" not in pager
    assert "webhook" in lines  # the built-ins are still there beside it

    without = run(["plugins"], target=None, cwd=tmp_path)
    assert "pager" not in {line.split()[0] for line in without.stdout.splitlines() if line}


def test_check_config_accepts_good_options_and_rejects_bad_ones(
    target: Path, tmp_path: Path
) -> None:
    good = write_config(tmp_path / "good.yaml", "url: http://127.0.0.1:9/v1/events")
    done = run(["check-config", str(good)], target=target, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "ok (1 receivers" in done.stdout

    bad = write_config(tmp_path / "bad.yaml", "url: ftp://pager.example/x\ncolour: red")
    done = run(["check-config", str(bad)], target=target, cwd=tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "receivers[0].options" in done.stderr
    assert "must be an http(s) URL" in done.stderr
    assert "colour" in done.stderr
    assert "ftp://pager.example/x" not in done.stderr  # option values may be secrets

    missing = run(["check-config", str(good)], target=None, cwd=tmp_path)
    assert missing.returncode == 2
    assert "unknown sink 'pager'" in missing.stderr


@pytest.fixture
async def capture() -> AsyncIterator[tuple[str, list[object]]]:
    received: list[object] = []

    async def handle(request: web.Request) -> web.Response:
        received.append(await request.json())
        return web.Response(status=202)

    app = web.Application()
    app.router.add_post("/v1/events", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}/v1/events", received
    finally:
        await runner.cleanup()


async def test_replay_delivers_the_rollback_through_the_plugin(
    target: Path, tmp_path: Path, capture: tuple[str, list[object]]
) -> None:
    url, received = capture
    config = write_config(tmp_path / "send.yaml", f"url: {url}")
    proc = await asyncio.create_subprocess_exec(
        *_canarywatch(),
        "replay",
        str(RECORDING),
        "--config",
        str(config),
        "--send",
        cwd=tmp_path,
        env=_env(target),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(60):
        out, err = await proc.communicate()
    assert proc.returncode == 0, out.decode() + err.decode()
    assert received, "the capture server received nothing"
    bodies = [body for body in received if isinstance(body, dict)]
    assert len(bodies) == len(received)
    assert all(set(body) == {"summary", "severity", "canary"} for body in bodies)
    rolled_back = [body for body in bodies if "rolled back" in body["summary"]]
    assert rolled_back == [
        {
            "summary": (
                "test/podinfo rolled back: Rolling back podinfo.test failed checks threshold "
                "reached 5"
            ),
            "severity": "critical",
            "canary": "test/podinfo",
        }
    ]
    assert received[-1] == rolled_back[0]
