"""`.ci/install-packages` on a machine that lacks what CI needs.

Each test runs the real script with a PATH built for it: the commands a fresh machine image has
(bash, coreutils, a `kubectl` of its own), without the ones the tests need. That is how CI meets a
new machine, and how the old single `apt-get install ... kubernetes-client` broke it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / ".ci" / "install-packages"
# What the script itself runs, besides the commands it looks for.
_BASE_COMMANDS = ("bash", "env", "mktemp", "rm", "cat", "printf", "chmod")


def _path_with(tmp_path: Path, present: dict[str, str]) -> str:
    """A PATH holding only the base commands plus ``present`` (name -> script body)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in _BASE_COMMANDS:
        found = shutil.which(name)
        assert found is not None, name
        (bin_dir / name).symlink_to(found)
    for name, body in present.items():
        tool = bin_dir / name
        tool.write_text(f"#!/bin/sh\n{body}\n")
        tool.chmod(0o755)
    return str(bin_dir)


def _run(path: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PATH"} | {"PATH": path}
    return subprocess.run(
        ["bash", str(SCRIPT), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        executable=shutil.which("bash"),
    )


def test_fresh_image_with_its_own_kubectl_never_installs_kubernetes_client(tmp_path: Path) -> None:
    path = _path_with(tmp_path, {"kubectl": "exit 0"})
    result = _run(path, "--dry-run")
    assert result.returncode == 0, result.stderr
    packages = result.stdout.split()
    assert packages == [
        "prometheus",
        "prometheus-alertmanager",
        "systemd",
        "openssl",
        "zsh",
        "chromium",
    ]
    assert "kubernetes-client" not in packages


def test_each_package_is_named_once_and_only_for_missing_commands(tmp_path: Path) -> None:
    present = {
        name: "exit 0"
        for name in ("prometheus", "amtool", "systemd-analyze", "openssl", "zsh", "chromium")
    }
    result = _run(_path_with(tmp_path, present), "--dry-run")
    # promtool is missing (prometheus present): the package is still needed, once.
    assert result.stdout.split() == ["prometheus", "prometheus-alertmanager", "kubernetes-client"]


def test_nothing_missing_installs_nothing(tmp_path: Path) -> None:
    names = (
        "prometheus",
        "promtool",
        "prometheus-alertmanager",
        "amtool",
        "systemd-analyze",
        "kubectl",
        "openssl",
        "zsh",
        "chromium",
    )
    # An apt-get that records being called: it must not be.
    marker = tmp_path / "apt-called"
    present = {name: "exit 0" for name in names} | {"apt-get": f"touch {marker}; exit 0"}
    result = _run(_path_with(tmp_path, present))
    assert result.returncode == 0, result.stderr
    assert not marker.exists()
    assert "every command the tests need is present" in result.stderr


def test_apt_failure_is_shown_and_fails_the_run(tmp_path: Path) -> None:
    apt = (
        'if [ "$1" = update ]; then exit 0; fi\n'
        'echo "dpkg: error processing archive kubernetes-client: trying to overwrite '
        "'/usr/bin/kubectl'\" >&2; exit 100"
    )
    result = _run(_path_with(tmp_path, {"apt-get": apt}))
    assert result.returncode == 1
    assert "trying to overwrite '/usr/bin/kubectl'" in result.stderr
    assert "failed" in result.stderr


def test_a_package_that_does_not_provide_its_command_is_reported(tmp_path: Path) -> None:
    # apt "succeeds" but nothing appears on PATH: the script must say which command is missing.
    result = _run(_path_with(tmp_path, {"apt-get": "exit 0"}))
    assert result.returncode == 1
    assert "is still not on PATH" in result.stderr


def test_bad_argument_is_a_usage_error(tmp_path: Path) -> None:
    result = _run(_path_with(tmp_path, {}), "--bogus")
    assert result.returncode == 2
    assert "usage" in result.stderr


@pytest.mark.needs_binaries
def test_real_apt_resolves_the_packages_a_fresh_image_needs(tmp_path: Path) -> None:
    """apt itself, on this machine's package lists, accepts the set chosen for a fresh image."""
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.skip("needs root and apt-get to simulate an install")
    # The real PATH minus the commands the packages provide: a fresh image as far as the script
    # can tell, with the machine's real apt-get.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    hidden = {"prometheus", "promtool", "prometheus-alertmanager", "amtool"}
    for name in (
        *_BASE_COMMANDS,
        "apt-get",
        "apt-config",
        "dpkg",
        "kubectl",
        "systemd-analyze",
        "openssl",
        "zsh",
        "chromium",
        "sed",
        "grep",
        "cut",
    ):
        found = shutil.which(name)
        if found is not None and name not in hidden:
            (bin_dir / name).symlink_to(found)
    dry = _run(str(bin_dir), "--dry-run")
    assert dry.stdout.split() == ["prometheus", "prometheus-alertmanager"]
    result = _run(f"{bin_dir}:/usr/sbin:/sbin", "--simulate")
    assert result.returncode == 0, result.stderr
    assert "without conflicts" in result.stderr
