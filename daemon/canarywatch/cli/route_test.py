"""``canarywatch route-test FILE NAME=VALUE...``: the receivers a label set reaches."""

from __future__ import annotations

import sys
from pathlib import Path

from canarywatch.cli.common import UsageError, load_config_arg
from canarywatch.cli.exitcodes import EXIT_OK, EXIT_RUNTIME
from canarywatch.config.fields import LABEL_NAME
from canarywatch.pipeline import policy
from canarywatch.pipeline.route import group_labels


def route_test_command(path: Path, label_args: list[str], *, verify: str | None) -> int:
    """``amtool config routes test``'s counterpart: the receivers a label set reaches.

    Prints the receivers in tree order, comma-separated as amtool does, then one line per target
    with the labels that name its group. Time intervals are not applied (as in amtool). A
    receiver reached by two routes with the same group is one target in canarywatch (two in
    Alertmanager: README, differences). ``verify``: the receivers expected, comma-separated;
    exit 1 when they differ.
    """
    # First: a missing config is the first thing to hear about. Routing needs no secret, so
    # none is read (a config whose secrets exist only where it runs can be tested anywhere).
    config = load_config_arg(path, skip_secrets=True)
    labels = _label_set(label_args)
    root = policy.build_router(config).root
    targets: dict[tuple[str, tuple[tuple[str, str], ...]], None] = {}
    for node in root.match(labels):
        targets.setdefault((node.receiver, tuple(group_labels(labels, node.group_by).items())))
    receivers = list(dict.fromkeys(receiver for receiver, _ in targets))
    print(",".join(receivers))
    for receiver, group in targets:
        rendered = ", ".join(f'{name}="{value}"' for name, value in group)
        print(f"  {receiver}: group {{{rendered}}}")
    if verify is not None:
        expected = [name for name in verify.split(",") if name]
        if expected != receivers:
            print(
                f"canarywatch route-test: expected receivers {','.join(expected)} "
                f"but the labels reach {','.join(receivers) or 'none'}",
                file=sys.stderr,
            )
            return EXIT_RUNTIME
    return EXIT_OK


def _label_set(args: list[str]) -> dict[str, str]:
    """``name=value`` arguments (a value may hold ``=``); a bad one is a usage error."""
    labels: dict[str, str] = {}
    for arg in args:
        name, sep, value = arg.partition("=")
        if not sep or not LABEL_NAME.fullmatch(name):
            raise UsageError(
                f"route-test: {arg!r} is not a label: write name=value "
                "(a name is letters, digits and _, not starting with a digit)"
            )
        labels[name] = (
            value.strip('"') if len(value) >= 2 and value[0] == value[-1] == '"' else value
        )
    return labels
