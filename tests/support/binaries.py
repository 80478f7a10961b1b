"""Real binaries for ``needs_binaries`` tests: skip when absent, fail when ``CI=true``."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

_FALLBACK_DIRS = ("/usr/bin", "/usr/local/bin")


def require_binary(name: str) -> str:
    """The path of executable ``name`` (PATH first, then /usr/bin, /usr/local/bin).

    Absent: the calling test is skipped with a one-line reason, or fails when the environment
    says ``CI=true`` (CI provides pinned binaries, so a missing one is a broken runner).
    """
    found = shutil.which(name)
    if found is None:
        for directory in _FALLBACK_DIRS:
            candidate = Path(directory) / name
            if candidate.is_file() and os.access(candidate, os.X_OK):
                found = str(candidate)
                break
    if found is not None:
        return found
    reason = f"binary {name!r} not found on PATH"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true requires it)", pytrace=False)
    pytest.skip(reason)
