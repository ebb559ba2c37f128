"""`nixherd eval`: evaluate the selected nodes' systems in one nix process; no build."""

from __future__ import annotations

import argparse

from nixherd.cli import jsonout, runs

HELP = "evaluate the selected nodes' systems (one nix process); print derivations or errors"


def configure(parser: argparse.ArgumentParser) -> None:
    runs.add_selection(parser)
    runs.add_flake(parser)
    runs.add_nix_flags(parser)
    jsonout.add_json(parser, "each node's evaluation")


def run(args: argparse.Namespace) -> int:
    import sys

    from nixherd.errors import NodesFailedError
    from nixherd.fleet import evaluate as fleet

    flags = runs.nix_flags(args)
    _, nodes = runs.load_nodes(args)
    names = [n.name for n in nodes]
    results = fleet.eval_nodes(runs.flake_ref(args), names, flags=flags)
    failed = [r for r in results.values() if not r.ok]
    if args.json:
        from nixherd.cli import jsonout

        jsonout.emit("eval", {"nodes": [jsonout.eval_node(results[n]) for n in names]})
    else:
        width = max((len(n) for n in names), default=0)
        for name in names:
            result = results[name]
            if result.ok:
                sys.stdout.write(f"{name.ljust(width)}  {result.drv_path}\n")
    sys.stdout.flush()
    # Why a node failed is a diagnostic (stderr), in Nix's words with their file positions:
    # stdout keeps the derivations (or the JSON) for whatever reads them.
    for result in failed:
        sys.stderr.write(f"{result.name}: {result.error or 'failed'}\n")
    sys.stderr.flush()
    if failed:
        raise NodesFailedError(
            f"{len(failed)} of {len(names)} nodes failed to evaluate: "
            + ", ".join(r.name for r in failed[:10])
        )
    return 0
