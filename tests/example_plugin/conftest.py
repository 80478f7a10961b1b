"""Run the example's tests from its source tree when it is not installed."""

import importlib.util
import sys
from pathlib import Path

if importlib.util.find_spec("canarywatch_example_sink") is None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
