"""`nixherd status`: what each node runs, whether it is the flake's build, when it was deployed."""

from __future__ import annotations

import argparse

from nixherd.cli import runs

HELP = "show each node's current system, whether it matches the flake, and its generation"


def configure(parser: argparse.ArgumentParser) -> None:
    runs.add_selection(parser)
    runs.add_flake(parser)
    runs.add_parallel(parser)
    parser.add_argument(
        "--no-eval",
        dest="eval",
        action="store_false",
        help="do not evaluate the flake (no 'matches' column)",
    )
    parser.add_argument("--json", action="store_true", help="print a JSON array on stdout")


def _when(epoch: int | None) -> str:
    import datetime

    if epoch is None:
        return "-"
    return datetime.datetime.fromtimestamp(epoch).strftime("%Y-%m-%d %H:%M:%S")


def _first_line(error: str | None) -> str:
    return error.splitlines()[0] if error else ""


def run(args: argparse.Namespace) -> int:
    import json
    import os
    import sys

    from nixherd.errors import NodesFailedError
    from nixherd.fleet.commands import status

    _inventory, nodes = runs.load_nodes(args)
    names = [n.name for n in nodes]
    expected: dict[str, str | None] | None = None
    eval_errors: dict[str, str] = {}
    if args.eval:
        from nixherd.fleet import evaluate as fleet

        evals = fleet.eval_nodes(runs.flake_ref(args), names)
        expected = {name: evals[name].out_path for name in names}
        eval_errors = {n: e.error for n, e in evals.items() if e.error}
    rows = status(nodes, expected=expected, parallel=args.parallel)
    if args.json:
        data = [row.to_data() | {"eval_error": eval_errors.get(row.node)} for row in rows]
        sys.stdout.write(json.dumps(data, indent=2) + "\n")
    else:
        table = [("node", "reachable", "current system", "matches", "generation", "deployed")]
        for row in rows:
            state = row.state
            current = os.path.basename(state.current) if state and state.current else "-"
            matches = {True: "yes", False: "NO", None: "-"}[row.matches]
            if row.node in eval_errors:
                matches = "eval error"
            table.append(
                (
                    row.node,
                    "yes" if row.reachable else f"NO: {_first_line(row.error)}".rstrip(": "),
                    current,
                    matches,
                    str(state.generation) if state and state.generation is not None else "-",
                    _when(state.generation_time if state else None),
                )
            )
        widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
        for line in table:
            cells = "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True))
            sys.stdout.write(cells.rstrip() + "\n")
        # An error that does not fit a cell (a refused host key and how to trust it) in full.
        for row in rows:
            if row.error and "\n" in row.error:
                sys.stderr.write(f"\n{row.node}: {row.error}\n")
    sys.stdout.flush()
    down = [row.node for row in rows if not row.reachable]
    if down:
        raise NodesFailedError(f"{len(down)} of {len(rows)} nodes unreachable: {', '.join(down)}")
    return 0
