"""`nixherd set NODE KEY VALUE`: one key of one node (its explicit table, or its fan-out target's
line), validated before it is written."""

from __future__ import annotations

import argparse

HELP = "set one key of a node in the inventory (e.g. `set web-3 port 2222`, `set db vars.x 1`)"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("node", metavar="NODE", help="the node's name")
    parser.add_argument(
        "key", metavar="KEY", help="a field (port, host, tags, ...) or a dotted key (vars.a.b)"
    )
    parser.add_argument(
        "value",
        metavar="VALUE",
        help="string fields take it as is; port an integer; tags/modules/ssh_options a TOML "
        "array or a,b,c; elsewhere TOML when it parses (true, 3, [1], { a = 1 }), else a string",
    )
    from nixherd.cli import editing

    editing.add_dry_run(parser)


def run(args: argparse.Namespace) -> int:
    from nixherd.cli import editing
    from nixherd.errors import UsageError
    from nixherd.inventory.edit import set_value

    if not args.key or any(not part for part in args.key.split(".")):
        raise UsageError(f"KEY {args.key!r}: an empty part")
    value = editing.parse_value(args.key, args.value)
    return editing.apply_edit(
        args, lambda text, inv: set_value(text, inv, args.node, args.key, value)
    )
