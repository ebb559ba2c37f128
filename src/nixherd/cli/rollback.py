"""`nixherd rollback`: each selected node back to its previous system generation, checked."""

from __future__ import annotations

import argparse

from nixherd.cli import numbers, runs

HELP = "switch each node back to its previous generation (with health checks and magic rollback)"


def configure(parser: argparse.ArgumentParser) -> None:
    runs.add_selection(parser)
    runs.add_parallel(parser)
    parser.add_argument(
        "--confirm-timeout",
        type=numbers.seconds,
        default=30.0,
        metavar="S",
        help="seconds a node waits for the confirmation before undoing the rollback "
        f"({numbers.SECONDS_RULE}, default 30)",
    )
    runs.add_activation_timeout(parser)
    runs.add_output(parser)


def run(args: argparse.Namespace) -> int:
    from nixherd.fleet.commands import rollback_nodes

    _inventory, nodes = runs.load_nodes(args)
    names = [n.name for n in nodes]
    with runs.progress(args, names, title="rollback") as view:
        report = rollback_nodes(
            nodes,
            parallel=args.parallel,
            confirm_timeout=args.confirm_timeout,
            timeout=args.activation_timeout,
            emit=view,
        )
    return runs.finish(args, runs.report_with_logs(report, view))
