"""`nixherd add NODE`: a node added to the inventory, as a line of its role's fan-out targets or
as an explicit [nodes.NODE] table; validated before it is written."""

from __future__ import annotations

import argparse

HELP = "add a node to the inventory (a fan-out target of its role, or an explicit node)"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "node",
        metavar="NODE",
        nargs="?",
        help="the node's name (a fan-out target may leave it out: <role>-<host>)",
    )
    parser.add_argument("--role", metavar="ROLE", help="the role the node plays")
    parser.add_argument("--host", metavar="HOST", help="where ssh connects to")
    from nixherd.cli import numbers

    parser.add_argument("--port", metavar="N", type=numbers.port_or_false, help="the ssh port")
    parser.add_argument("--user", metavar="USER", help="the ssh login (false: ssh decides)")
    parser.add_argument("--system", metavar="SYSTEM", help="the platform, e.g. aarch64-linux")
    parser.add_argument(
        "--tag", metavar="TAG", action="append", default=[], help="a tag (repeatable)"
    )
    parser.add_argument(
        "--module", metavar="PATH", action="append", default=[], help="a module (repeatable)"
    )
    parser.add_argument(
        "--var",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        help="a variable (repeatable; KEY may be dotted; VALUE is TOML when it parses, else a "
        "string)",
    )
    kind = parser.add_mutually_exclusive_group()
    kind.add_argument(
        "--fan-out",
        dest="fan_out",
        action="store_const",
        const=True,
        help="a target of the role (default when the role already has targets)",
    )
    kind.add_argument(
        "--explicit",
        dest="fan_out",
        action="store_const",
        const=False,
        help="an explicit [nodes.NODE] table (default when the role has no targets)",
    )
    from nixherd.cli import editing

    editing.add_dry_run(parser)


def run(args: argparse.Namespace) -> int:
    from typing import Any

    from nixherd.cli import editing
    from nixherd.inventory.edit import NodeSpec, add_node

    values: dict[str, Any] = {}
    for key in ("host", "user", "system"):
        if getattr(args, key) is not None:
            values[key] = editing.parse_value(key, getattr(args, key))
    if args.port is not None:
        values["port"] = args.port
    if args.tag:
        values["tags"] = list(args.tag)
    if args.module:
        values["modules"] = list(args.module)
    if args.var:
        values["vars"] = editing.nested([editing.key_value(v) for v in args.var])
    spec = NodeSpec(args.node, args.role, values, args.fan_out)
    return editing.apply_edit(args, lambda text, inv: add_node(text, inv, spec))
