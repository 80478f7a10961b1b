"""``canarywatch silence|outbox|explain``: ask the running daemon, through its local API."""

from __future__ import annotations

import argparse
import sys

from canarywatch.cli.common import parse_transition, read_token
from canarywatch.cli.control_client import ControlClient, format_outbox, format_silences
from canarywatch.cli.exitcodes import EXIT_OK
from canarywatch.views.explain import render_explanation


async def control_command(args: argparse.Namespace) -> int:
    """``canarywatch silence|outbox ...``: talk to the running daemon's local API."""
    client = ControlClient(args.url, token=read_token(args.token_file))
    if args.command == "silence":
        if args.action == "add":
            added = await client.add_silence(
                args.matchers,
                duration_s=args.duration,
                created_by=args.created_by,
                comment=args.comment,
            )
            print(f"silence {added['id']} added")
        elif args.action == "list":
            print(format_silences(await client.list_silences(include_expired=args.expired)))
        else:
            await client.expire_silence(args.id)
            print(f"silence {args.id} expired")
        return EXIT_OK
    if args.action == "list":
        print(format_outbox(await client.outbox_list(dead=args.dead)))
    elif args.action == "retry":
        await client.outbox_retry(args.id)
        print(f"outbox item {args.id} queued again")
    else:
        await client.outbox_drop(args.id)
        print(f"outbox item {args.id} dropped")
    return EXIT_OK


async def explain_command(args: argparse.Namespace) -> int:
    """``canarywatch explain NAMESPACE/CANARY [--transition T]``: the running daemon's decision
    trails of that canary's recent transitions (``canarywatch.views.explain``)."""
    namespace, name = args.canary
    transition = parse_transition(args.transition)
    client = ControlClient(args.url, token=read_token(args.token_file))
    answer = await client.explain(namespace, name, transition)
    sys.stdout.write(render_explanation(answer))
    return EXIT_OK
