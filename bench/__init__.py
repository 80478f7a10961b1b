"""canarywatch benchmarks: ``make bench`` (``python -m bench [NAME ...]``).

Each benchmark prints its figures and ends with a one-line summary; none of them asserts on
timing: targets are reported as ratios, never as test failures.
"""
