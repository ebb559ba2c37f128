"""`nixherd check-health`: run the selected nodes' health checks now and report per node."""

from __future__ import annotations

import argparse

from nixherd.cli import runs

HELP = "run the health checks of the selected nodes (inventory `checks`) and report per node"


def configure(parser: argparse.ArgumentParser) -> None:
    runs.add_selection(parser)
    runs.add_parallel(parser)
    runs.add_output(parser, logs=False)


def run(args: argparse.Namespace) -> int:
    from nixherd.fleet.commands import check_health

    _inventory, nodes = runs.load_nodes(args)
    names = [n.name for n in nodes]
    with runs.progress(args, names, title="check-health") as view:
        report = check_health(nodes, parallel=args.parallel, emit=view)
    return runs.finish(args, report)
