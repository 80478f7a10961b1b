"""The recording format writes timestamps with the same ``format_time`` as the JSON output."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from canarywatch.formats.jsonout import format_time
from canarywatch.formats.recording import decode_line, encode
from canarywatch.model import Observation, SourceName


@pytest.mark.parametrize(
    ("at", "text"),
    [
        (datetime(999, 3, 4, 5, 6, 7, tzinfo=UTC), "0999-03-04T05:06:07Z"),
        (datetime(2026, 8, 4, 14, 8, 2, 123000, tzinfo=UTC), "2026-08-04T14:08:02.123Z"),
    ],
)
def test_encode_writes_at_like_the_json_output_and_reads_back(at: datetime, text: str) -> None:
    obs = Observation(at=at, source=SourceName.FLAGGER_METRICS, data="")
    line = encode(obs)
    assert json.loads(line)["at"] == text == format_time(at)
    back = decode_line(line)
    assert back is not None
    assert back.at == at
