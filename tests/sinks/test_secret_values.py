"""``secret_values``: the one answer to "which option values must never be shown", used by
``test-sink`` (to mask its output) and the sink contract kit (to look for leaks)."""

from __future__ import annotations

import re

import pydantic

from canarywatch.config import SECRET_OPTION_KEY
from canarywatch.secrets import Secret
from canarywatch.sinks.text import secret_values

OPTIONS: dict[str, object] = {
    "webhook_url": Secret("https://hooks.example/T0/B0/abcdef"),
    "token": "xoxb-plain-token",
    "channel": "#deploys",
    "urls": ["http://a.example", Secret("http://user:pw@b.example")],
    "auth": {"password": "hunter22", "user": "me"},
    "links": [{"api_key": pydantic.SecretStr("k-123456")}],
    "pin": Secret("42"),
}


def test_secrets_at_any_depth_and_string_options_whose_key_looks_secret() -> None:
    assert secret_values(OPTIONS, keys=SECRET_OPTION_KEY) == [
        "https://hooks.example/T0/B0/abcdef",
        "xoxb-plain-token",
        "http://user:pw@b.example",  # a Secret in a list; plain list items are addresses
        "hunter22",
        "k-123456",
        "42",
    ]


def test_short_values_are_left_out_when_asked_and_the_key_pattern_is_the_callers() -> None:
    assert "42" not in secret_values(OPTIONS, keys=SECRET_OPTION_KEY, min_len=4)
    by_url = secret_values({"url": "http://x.example/k", "token": "t0ken"}, keys=re.compile("url"))
    assert by_url == ["http://x.example/k"]
