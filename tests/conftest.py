"""Suite-wide fixtures."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from canarywatch.logs import reset_logging


@pytest.fixture(autouse=True)
def _fresh_logging() -> Iterator[None]:
    """Commands configure structlog process-wide (level filter, renderer); undo it per test so
    ``capture_logs`` in a later test sees every level."""
    yield
    reset_logging()
