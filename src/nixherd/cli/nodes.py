"""`nixherd nodes`: list the (selected) nodes of the inventory, without any Nix evaluation."""

from __future__ import annotations

import argparse

HELP = "list the nodes of the inventory (no Nix needed)"

HEADERS = ("NAME", "ROLE", "HOST", "USER", "PORT", "TAGS")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--on", metavar="SEL", help="select nodes: names, @tags, role:R, !exclude, &intersect"
    )
    from nixherd.cli import jsonout

    jsonout.add_json(parser, "the nodes")


def run(args: argparse.Namespace) -> int:
    import gc

    # The inventory is allocated and never freed before the listing is printed: the cyclic
    # collector would only walk it, over and over (as long as the rest of the work together).
    enabled = gc.isenabled()
    gc.disable()
    try:
        return _list(args)
    finally:
        if enabled:
            gc.enable()


def _list(args: argparse.Namespace) -> int:
    from nixherd.cli import inventory_path, render
    from nixherd.inventory import Selection, load, select

    # A malformed --on is reported before the inventory is even read.
    selection = None if args.on is None else Selection.parse(args.on)
    nodes = select(load(inventory_path(args), cache=True), selection)
    if args.json:
        from nixherd.cli import jsonout

        jsonout.emit("nodes", {"nodes": [jsonout.node_summary(node) for node in nodes]})
        return 0
    rows = [
        (
            node.name,
            node.role or "-",
            node.host,
            # "-": not set, ssh decides (no `ssh -G` here: listing stays instant).
            node.user or "-",
            "-" if node.port is None else str(node.port),
            ",".join(node.tags),
        )
        for node in nodes
    ]
    render.print_table(HEADERS, rows)
    return 0
