"""`nixherd diff`: per node, what the new build changes against the system the node runs."""

from __future__ import annotations

import argparse

from nixherd.cli import runs

HELP = "show what the new build changes on each node: packages, versions, closure size"


def configure(parser: argparse.ArgumentParser) -> None:
    runs.add_selection(parser)
    runs.add_flake(parser)
    runs.add_parallel(parser)
    runs.add_nix_flags(parser)
    parser.add_argument("--json", action="store_true", help="print a JSON object on stdout")


def run(args: argparse.Namespace) -> int:
    import json
    import sys

    from nixherd.cli.progress import Progress
    from nixherd.errors import NodesFailedError
    from nixherd.fleet.commands import diff_fleet
    from nixherd.node.diff import ClosureDiff, plan_text

    flags = runs.nix_flags(args)
    _inventory, nodes = runs.load_nodes(args)
    names = [n.name for n in nodes]
    with Progress(names, title="diff", show_lines=False, build_logs=flags.print_build_logs) as view:
        diffs = diff_fleet(
            nodes,
            runs.flake_ref(args),
            parallel=args.parallel,
            emit=view,
            flags=flags,
        )
    if args.json:
        data = {
            name: diff.to_data() if isinstance(diff, ClosureDiff) else {"error": str(diff)}
            for name, diff in diffs.items()
        }
        sys.stdout.write(json.dumps(data, indent=2) + "\n")
    else:
        sys.stdout.write(plan_text(dict(diffs)))
    sys.stdout.flush()
    bad = [name for name, diff in diffs.items() if not isinstance(diff, ClosureDiff)]
    # The whole reason on stderr (stdout's plan has its first line): Nix's error with its file
    # positions, or the failing command.
    for name in bad:
        sys.stderr.write(f"{name}: {diffs[name]}\n")
    if bad:
        raise NodesFailedError(
            f"{len(bad)} of {len(diffs)} nodes could not be diffed: {', '.join(bad)}"
        )
    return 0
