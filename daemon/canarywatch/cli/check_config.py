"""``canarywatch check-config FILE``: every problem of a configuration file at once."""

from __future__ import annotations

from pathlib import Path

from canarywatch.cli.common import STDIN, STDIN_NAME, load_config_arg
from canarywatch.cli.exitcodes import EXIT_OK
from canarywatch.pipeline import policy
from canarywatch.sinks.loader import receiver_problems


def check_config_command(path: Path, *, skip_secrets: bool = False) -> int:
    """Every problem of the file at once (syntax, values, references, sinks and their options),
    or one summary line. ``skip_secrets``: secret references are checked but not read."""
    config = load_config_arg(path, skip_secrets=skip_secrets, check=receiver_problems)
    routes = sum(1 for _ in policy.build_route(config.route).walk()) if config.receivers else 0
    unread = "; secrets not read" if skip_secrets else ""
    print(
        f"{STDIN_NAME if path == STDIN else path}: ok ({len(config.receivers)} receivers, "
        f"{routes} routes, {len(policy.build_inhibitor(config))} inhibit rules, "
        f"{len(config.silences)} silences{unread})"
    )
    return EXIT_OK
