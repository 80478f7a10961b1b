"""The ``canarywatch`` command line: one parser, one set of exit codes, a module per command.

``main`` (in ``cli.entry``) is the console script's entry point, ``canarywatch.cli:main``.
"""

from canarywatch.cli.entry import main

__all__ = ["main"]
