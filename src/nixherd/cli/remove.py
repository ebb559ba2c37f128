"""`nixherd remove NODE`: an explicit node's tables, or a fan-out target's line, taken out of the
inventory; every other line stays as it was."""

from __future__ import annotations

import argparse

HELP = "remove a node from the inventory (an explicit node or a fan-out target)"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("node", metavar="NODE", help="the node's name")
    from nixherd.cli import editing

    editing.add_dry_run(parser)


def run(args: argparse.Namespace) -> int:
    from nixherd.cli import editing
    from nixherd.inventory.edit import remove_node

    return editing.apply_edit(args, lambda text, inv: remove_node(text, inv, args.node))
