"""The README's configuration reference is generated from the schema and must not drift.

Regenerate with ``CANARYWATCH_UPDATE_README=1 make test`` (or run this file alone).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from canarywatch.config import config_schema_markdown

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCK = re.compile(
    r"(<!-- config-reference:start -->\n)(.*?)(<!-- config-reference:end -->)", re.DOTALL
)


def test_config_reference_matches_the_schema() -> None:
    text = README.read_text(encoding="utf-8")
    match = BLOCK.search(text)
    assert match is not None, "README.md lost its config-reference markers"
    expected = config_schema_markdown().strip() + "\n"
    if os.environ.get("CANARYWATCH_UPDATE_README") == "1" and match.group(2) != expected:
        README.write_text(
            text[: match.start(2)] + expected + text[match.end(2) :], encoding="utf-8"
        )
        return
    assert match.group(2) == expected, (
        "README configuration reference is out of date: "
        "run CANARYWATCH_UPDATE_README=1 .venv/bin/python -m pytest tests/test_readme.py"
    )


def test_readme_names_the_two_commands() -> None:
    text = README.read_text(encoding="utf-8")
    assert "make demo" in text
    assert "make test" in text


def test_metrics_reference_lists_every_exported_metric() -> None:
    from canarywatch.app import App
    from canarywatch.config import parse_config
    from canarywatch.sources.flagger_webhook import webhook_rejected_counter

    registry = App(parse_config("")).registry
    webhook_rejected_counter(registry)
    text = README.read_text(encoding="utf-8")
    missing = []
    for family in registry.collect():
        name = family.name + ("_total" if family.type == "counter" else "")
        if f"`{name}`" not in text:
            missing.append(name)
    assert missing == [], f"README metrics table lacks: {missing}"
