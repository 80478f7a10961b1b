"""Golden files for sink ``render()`` output: reviewed like code, regenerated on request.

``CANARYWATCH_UPDATE_GOLDEN=1`` rewrites them; otherwise a difference fails the test.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("CANARYWATCH_UPDATE_GOLDEN") == "1"


def assert_golden_text(name: str, text: str) -> None:
    path = GOLDEN / name
    if UPDATE:
        path.write_text(text, encoding="utf-8")
    assert text == path.read_text(encoding="utf-8"), f"{name} differs; review, then regenerate"


def assert_golden_json(name: str, payload: object) -> None:
    assert_golden_text(
        name, json.dumps(payload, indent=2, ensure_ascii=False, sort_keys=True) + "\n"
    )
