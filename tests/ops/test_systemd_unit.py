"""``systemd/canarywatch.service``: the directives the daemon relies on, and systemd's verdict."""

from __future__ import annotations

import itertools
import re
import shlex
import subprocess
from collections import defaultdict
from pathlib import Path

import pytest
from tests.support.binaries import require_binary

from canarywatch.config import parse_config
from canarywatch.sdnotify import watchdog_interval_s

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "systemd" / "canarywatch.service"
ENV_EXAMPLE = ROOT / "systemd" / "canarywatch.env.example"
EXEC_START = "/opt/canarywatch/bin/canarywatch run --config /etc/canarywatch/config.yaml"

Unit = dict[str, dict[str, list[str]]]

_TIME_UNITS = {"": 1.0, "s": 1.0, "sec": 1.0, "min": 60.0, "m": 60.0, "h": 3600.0, "ms": 0.001}

RESTART_BACKOFF_SINCE = 254
"""The systemd version that knows ``RestartSteps=`` and ``RestartMaxDelaySec=``."""

# `systemd-analyze verify` output we accept, each with the reason. Apart from these the unit
# verifies without a single warning once ExecStart points at an existing executable.
EXPLAINED_VERIFY_WARNINGS: tuple[tuple[re.Pattern[str], str], ...] = (
    (
        re.compile(r"Unknown key '(RestartSteps|RestartMaxDelaySec)' in section \[Service\]"),
        f"systemd < {RESTART_BACKOFF_SINCE} has no restart backoff: it ignores these keys and "
        "restarts every RestartSec, still without a start limit",
    ),
)


def parse_unit(text: str) -> Unit:
    """Sections -> key -> every value in order (systemd allows repeated keys)."""
    unit: Unit = {}
    section: dict[str, list[str]] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = unit.setdefault(line[1:-1], defaultdict(list))
            continue
        assert section is not None, f"directive outside a section: {line!r}"
        key, sep, value = line.partition("=")
        assert sep, f"not KEY=VALUE: {line!r}"
        section[key.strip()].append(value.strip())
    return unit


def seconds(value: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([a-z]*)", value)
    assert match is not None, f"unsupported time span {value!r}"
    assert match[2] in _TIME_UNITS, f"unsupported time unit in {value!r}"
    return float(match[1]) * _TIME_UNITS[match[2]]


@pytest.fixture(scope="module")
def unit() -> Unit:
    return parse_unit(UNIT.read_text(encoding="utf-8"))


def one(unit: Unit, section: str, key: str) -> str:
    values = unit[section].get(key, [])
    assert len(values) == 1, f"[{section}] {key}= expected once, found {values}"
    return values[0]


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("Type", "notify"),
        ("NotifyAccess", "main"),
        ("ExecStart", EXEC_START),
        ("ExecReload", "/bin/kill -HUP $MAINPID"),
        ("Restart", "on-failure"),
        ("WatchdogSec", "30"),
        ("TimeoutStopSec", "30"),
        ("StateDirectory", "canarywatch"),
        ("DynamicUser", "yes"),
        ("EnvironmentFile", "-/etc/canarywatch/canarywatch.env"),
        ("LoadCredential", "secrets:/etc/canarywatch/credentials"),
        ("UMask", "0077"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("NoNewPrivileges", "yes"),
        ("CapabilityBoundingSet", ""),
        ("RestrictAddressFamilies", "AF_UNIX AF_INET AF_INET6"),
        ("LockPersonality", "yes"),
        ("MemoryDenyWriteExecute", "yes"),
        ("ProtectKernelTunables", "yes"),
        ("ProtectKernelModules", "yes"),
        ("ProtectKernelLogs", "yes"),
        ("ProtectControlGroups", "yes"),
        ("RestrictNamespaces", "yes"),
        ("RestrictRealtime", "yes"),
        ("SystemCallArchitectures", "native"),
    ],
)
def test_service_directive(unit: Unit, key: str, expected: str) -> None:
    assert one(unit, "Service", key) == expected


def test_syscall_filter_is_the_system_service_set(unit: Unit) -> None:
    filters = unit["Service"]["SystemCallFilter"]
    assert filters[0] == "@system-service"
    # Later lines may only take away (`~`), never widen the allow list.
    assert all(f.startswith("~") for f in filters[1:])


def test_stop_timeout_exceeds_the_drain_timeout(unit: Unit) -> None:
    drain_s = parse_config("").dispatch.drain_timeout
    stop_s = seconds(one(unit, "Service", "TimeoutStopSec"))
    assert stop_s > drain_s, "SIGKILL would cut the drain short"
    # SIGTERM to the main process only; the rest of the cgroup gets SIGKILL at the end.
    assert one(unit, "Service", "KillMode") == "mixed"


def test_watchdog_ping_interval_is_half_of_watchdog_sec(unit: Unit) -> None:
    watchdog_s = seconds(one(unit, "Service", "WatchdogSec"))
    usec = str(int(watchdog_s * 1_000_000))
    assert watchdog_interval_s({"WATCHDOG_USEC": usec}) == watchdog_s / 2


def restart_delays(unit: Unit, restarts: int) -> list[float]:
    """The wait before each of the first ``restarts`` automatic restarts, as systemd >= 254
    computes it: from RestartSec to RestartMaxDelaySec in RestartSteps exponential steps."""
    first = seconds(one(unit, "Service", "RestartSec"))
    longest = seconds(one(unit, "Service", "RestartMaxDelaySec"))
    steps = int(one(unit, "Service", "RestartSteps"))
    return [
        first * (longest / first) ** (min(n, steps) / steps) if steps else first
        for n in range(restarts)
    ]


def test_restarts_never_give_up_during_a_long_outage(unit: Unit) -> None:
    """Five failed starts in a row used to be systemd's "start request repeated too quickly":
    the service stayed down for good. Now there is no start limit, and the restarts back off
    instead of spinning."""
    assert one(unit, "Service", "Restart") == "on-failure"
    interval = one(unit, "Unit", "StartLimitIntervalSec")
    assert seconds(interval) == 0, "StartLimitIntervalSec=0: no start rate limit at all"
    assert "StartLimitBurst" not in unit["Unit"], "a burst without an interval means nothing"

    delays = restart_delays(unit, 200)
    assert delays[0] >= 1, "RestartSec: not a hot loop even on systemd < 254"
    assert delays == sorted(delays)
    assert max(delays) <= 5 * 60, "back within 5 minutes once the outage is over"
    elapsed = itertools.accumulate(delays)
    in_ten_minutes = sum(1 for t in elapsed if t <= 600)
    assert in_ten_minutes <= 20, "a crash loop costs a start every few minutes, not seconds"


def test_exec_start_runs_the_venv_binary_with_the_etc_config(unit: Unit) -> None:
    argv = shlex.split(one(unit, "Service", "ExecStart"))
    assert argv[:2] == ["/opt/canarywatch/bin/canarywatch", "run"]
    assert argv[argv.index("--config") + 1] == "/etc/canarywatch/config.yaml"


def test_working_directory_is_the_state_directory(unit: Unit) -> None:
    # A config that keeps the default relative `state.dir: ./state` still lands on the
    # writable state directory instead of failing on the read-only root.
    assert one(unit, "Service", "WorkingDirectory") == "%S/canarywatch"


def test_header_documents_paths_and_credentials() -> None:
    text = UNIT.read_text(encoding="utf-8")
    for needle in (
        "state.dir: /var/lib/canarywatch",
        "/run/credentials/canarywatch.service/secrets_",
        "/etc/canarywatch/credentials/",
        "ProtectHome=yes",
        "drain_timeout",
    ):
        assert needle in text


def test_install_section(unit: Unit) -> None:
    assert one(unit, "Install", "WantedBy") == "multi-user.target"
    assert "network-online.target" in one(unit, "Unit", "Wants")


def test_env_example_only_holds_commented_assignments() -> None:
    for number, raw in enumerate(ENV_EXAMPLE.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        assert not line or line.startswith("#"), f"line {number} is active: {raw!r}"
        body = line.lstrip("#").strip()
        if re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", body):
            assert " " not in body.split("=", 1)[0]


def _verifiable_copy(tmp_path: Path) -> Path:
    """The unit with ExecStart on an executable that exists (verify checks it)."""
    text = UNIT.read_text(encoding="utf-8")
    assert text.count("ExecStart=/opt/canarywatch/bin/canarywatch ") == 1
    copy = tmp_path / "canarywatch.service"
    copy.write_text(
        text.replace("ExecStart=/opt/canarywatch/bin/canarywatch ", "ExecStart=/bin/true "),
        encoding="utf-8",
    )
    return copy


@pytest.mark.needs_binaries
def test_systemd_analyze_verify_is_clean(tmp_path: Path) -> None:
    analyze = require_binary("systemd-analyze")
    copy = _verifiable_copy(tmp_path)
    result = subprocess.run(
        [analyze, "verify", "--man=no", str(copy)],
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
        cwd=tmp_path,
    )
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    explained = EXPLAINED_VERIFY_WARNINGS if _version(analyze) < RESTART_BACKOFF_SINCE else ()
    unexplained = [
        line for line in lines if not any(pattern.search(line) for pattern, _ in explained)
    ]
    assert result.returncode == 0, result.stderr
    assert unexplained == []


def _version(analyze: str) -> int:
    """``systemd 252 (252.38-1~deb12u1)`` -> 252."""
    done = subprocess.run(
        [analyze, "--version"], capture_output=True, text=True, timeout=20, check=False
    )
    match = re.match(r"systemd (\d+)", done.stdout)
    assert match is not None, done.stdout
    return int(match[1])


@pytest.mark.needs_binaries
def test_systemd_analyze_verify_catches_a_typo(tmp_path: Path) -> None:
    """The check above is meaningful: a misspelt directive is reported."""
    analyze = require_binary("systemd-analyze")
    copy = _verifiable_copy(tmp_path)
    copy.write_text(
        copy.read_text(encoding="utf-8").replace("ProtectSystem=", "ProtectSytem="),
        encoding="utf-8",
    )
    result = subprocess.run(
        [analyze, "verify", "--man=no", str(copy)],
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
        cwd=tmp_path,
    )
    assert "ProtectSytem" in result.stdout + result.stderr


@pytest.mark.needs_binaries
def test_security_exposure_stays_low(tmp_path: Path) -> None:
    analyze = require_binary("systemd-analyze")
    copy = _verifiable_copy(tmp_path)
    # Exposure 0.0-10.0 is given to --threshold x10; 20 means "2.0, OK" (today about 1.0).
    result = subprocess.run(
        [analyze, "security", "--offline=true", "--threshold=20", "--no-pager", str(copy)],
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr
