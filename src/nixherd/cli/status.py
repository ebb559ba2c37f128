"""`nixherd status`: what each node runs, whether it is the flake's build, when it was deployed."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from nixherd.cli import jsonout, runs

if TYPE_CHECKING:
    from nixherd.cli.payloads import StatusData, StatusNode
    from nixherd.node.status import NodeStatus

# `status --exit-code`: every node reachable and evaluated, and some do not run the flake's build.
# (Unreachable or unevaluated nodes are failures: exit 1, as every command's failed nodes.)
DRIFT_EXIT = 3

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
    jsonout.add_json(parser, "every node's state")
    parser.add_argument(
        "--exit-code",
        action="store_true",
        help=f"exit {DRIFT_EXIT} when a node does not run the flake's build (drift), 1 when a node "
        "is unreachable or its build does not evaluate, 0 when every node matches",
    )


def _when(epoch: int | None) -> str:
    import datetime

    if epoch is None:
        return "-"
    return datetime.datetime.fromtimestamp(epoch).strftime("%Y-%m-%d %H:%M:%S")


def _first_line(error: str | None) -> str:
    return error.splitlines()[0] if error else ""


def data(rows: list[NodeStatus], eval_errors: dict[str, str], *, evaluated: bool) -> StatusData:
    """The status as the JSON contract has it (docs/json.md)."""
    nodes: list[StatusNode] = [
        {
            "node": row.node,
            "reachable": row.reachable,
            "current": row.state.current if row.state else None,
            "profile": row.state.profile if row.state else None,
            "generation": row.state.generation if row.state else None,
            "generation_time": row.state.generation_time if row.state else None,
            "expected": row.expected,
            "matches": row.matches,
            "error": row.error,
            "eval_error": eval_errors.get(row.node),
        }
        for row in rows
    ]
    unreachable = [row.node for row in rows if not row.reachable]
    unknown = [row.node for row in rows if row.node in eval_errors]
    drifted = [row.node for row in rows if row.reachable and row.matches is False]
    return {
        "evaluated": evaluated,
        "ok": not (unreachable or unknown or drifted),
        "unreachable": unreachable,
        "drifted": drifted,
        "unknown": unknown,
        "nodes": nodes,
    }


def run(args: argparse.Namespace) -> int:
    import os
    import sys

    from nixherd.errors import NodesFailedError, UsageError
    from nixherd.fleet.commands import status

    if args.exit_code and not args.eval:
        raise UsageError("--exit-code compares with the flake: it does not go with --no-eval")
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
    result = data(rows, eval_errors, evaluated=args.eval)
    if args.json:
        from nixherd.cli import jsonout

        jsonout.emit("status", result)
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
    down = result["unreachable"]
    if down:
        raise NodesFailedError(f"{len(down)} of {len(rows)} nodes unreachable: {', '.join(down)}")
    if args.exit_code:
        if result["unknown"]:
            unknown = ", ".join(result["unknown"])
            raise NodesFailedError(f"{len(result['unknown'])} nodes did not evaluate: {unknown}")
        if result["drifted"]:
            drifted = result["drifted"]
            sys.stderr.write(
                f"nixherd: {len(drifted)} of {len(rows)} nodes do not run the flake's build: "
                f"{', '.join(drifted)}\n"
            )
            return DRIFT_EXIT
    return 0
