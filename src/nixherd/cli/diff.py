"""`nixherd diff`: per node, what the new build changes against the system the node runs."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from nixherd.cli import jsonout, runs

if TYPE_CHECKING:
    from nixherd.cli.payloads import ClosureDiffData
    from nixherd.node.diff import ClosureDiff

HELP = "show what the new build changes on each node: packages, versions, closure size"


def configure(parser: argparse.ArgumentParser) -> None:
    runs.add_selection(parser)
    runs.add_flake(parser)
    runs.add_parallel(parser)
    runs.add_nix_flags(parser)
    jsonout.add_json(parser, "each node's diff")


def closure_diff(diff: ClosureDiff) -> ClosureDiffData:
    """A closure diff as the JSON contract has it (docs/json.md)."""
    return {
        "before": diff.before,
        "after": diff.after,
        "identical": diff.identical,
        "added": {name: list(versions) for name, versions in diff.added},
        "removed": {name: list(versions) for name, versions in diff.removed},
        "changed": {
            c.name: {"before": list(c.before), "after": list(c.after)} for c in diff.changed
        },
        "rebuilt": list(diff.rebuilt),
        "paths_added": diff.paths_added,
        "paths_removed": diff.paths_removed,
        "size_before": diff.size_before,
        "size_after": diff.size_after,
        "size_change": diff.size_change,
    }


def run(args: argparse.Namespace) -> int:
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
        from nixherd.cli import jsonout

        jsonout.emit(
            "diff",
            {
                "nodes": [
                    {"node": name, "diff": closure_diff(diff), "error": None}
                    if isinstance(diff, ClosureDiff)
                    else {"node": name, "diff": None, "error": str(diff)}
                    for name, diff in diffs.items()
                ]
            },
        )
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
