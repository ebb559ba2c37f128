"""`nixherd build`: evaluate and build the selected nodes' systems; print their store paths."""

from __future__ import annotations

import argparse

from nixherd.cli import runs

HELP = "build the selected nodes' systems (one nix process) and print their store paths"


def configure(parser: argparse.ArgumentParser) -> None:
    runs.add_selection(parser)
    runs.add_flake(parser)
    runs.add_keep_result(parser)
    runs.add_nix_flags(parser)
    runs.add_output(parser)


def run(args: argparse.Namespace) -> int:
    import sys

    from nixherd.fleet import pipeline
    from nixherd.fleet.plan import DeployOptions
    from nixherd.node.goal import Goal

    flags = runs.nix_flags(args)
    inventory, nodes = runs.load_nodes(args)
    flags = runs.with_builders(flags, inventory)
    options = DeployOptions(
        goal=Goal.BUILD,
        flake=runs.flake_ref(args),
        keep_result=args.keep_result,
        results_dir=runs.results_dir(args),
        nix=flags,
        evaluation=runs.eval_limits(args),
    )
    names = [n.name for n in nodes]
    with runs.progress(args, names, title="build") as view:
        report = pipeline.deploy(
            nodes,
            options,
            base_dir=str(inventory.path.parent),
            emit=view,
            command="build",
        )
    report = runs.report_with_logs(report, view)
    if not args.json:
        width = max((len(n) for n in names), default=0)
        for result in report.nodes:
            if result.store_path and not result.failed:
                sys.stdout.write(f"{result.node.ljust(width)}  {result.store_path}\n")
        sys.stdout.flush()
    return runs.finish(args, report, summary=bool(report.failed or report.interrupted))
