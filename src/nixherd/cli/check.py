"""`nixherd check`: validate the inventory and list every problem; with `--eval`, also evaluate the
selected nodes' systems with Nix."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nixherd.cli.payloads import EvalNode
    from nixherd.errors import Problem
    from nixherd.inventory import Node
    from nixherd.run.nix import NixFlags

HELP = "validate the inventory (every problem listed); --eval also evaluates the nodes with Nix"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--eval", action="store_true", help="also evaluate each selected node's system with Nix"
    )
    parser.add_argument(
        "--on", metavar="SEL", help="select nodes: names, @tags, role:R, !exclude, &intersect"
    )
    from nixherd.cli import jsonout, runs

    jsonout.add_json(parser, "the problems (and with --eval, each evaluation)")
    runs.add_nix_flags(parser)


def run(args: argparse.Namespace) -> int:
    from nixherd.cli import inventory_path, render, runs
    from nixherd.errors import InventoryError, UsageError
    from nixherd.inventory import Selection, load, select

    flags = runs.nix_flags(args)
    if flags.words() and not args.eval:
        raise UsageError("Nix flags go with --eval: check alone runs no Nix")
    selection = None if args.on is None else Selection.parse(args.on)
    path = inventory_path(args)
    try:
        inventory = load(path)
    except InventoryError as exc:
        _report_problems(args, exc.problems)
        return exc.exit_code
    if inventory.terraform_sources:
        from nixherd.inventory.terraform_outputs import stale

        # A snapshot older than its sources resolves fine, to the old hosts: a problem all the same.
        found = stale(path)
        if found:
            _report_problems(args, tuple(found))
            return 2
    nodes = select(inventory, selection)
    summary = (
        f"{render.plural(len(inventory.nodes), 'node')}, "
        f"{render.plural(len(inventory.roles), 'role')}"
    )
    if args.on is not None:
        summary += f" ({len(nodes)} selected)"
    evaluated: list[EvalNode] | None = None
    failed = 0
    if args.eval:
        evaluated, failed = _eval(nodes, path, flags)
    if args.json:
        from nixherd.cli import jsonout

        jsonout.emit(
            "check",
            {
                "ok": not failed,
                "nodes": len(inventory.nodes),
                "roles": len(inventory.roles),
                "selected": [node.name for node in nodes],
                "problems": [],
                "eval": evaluated,
            },
        )
    else:
        status = f"{failed} of {len(nodes)} failed to evaluate" if failed else "ok"
        print(f"{summary}: {status}")
    return 1 if failed else 0


def _report_problems(args: argparse.Namespace, problems: tuple[Problem, ...]) -> None:
    import sys

    from nixherd.cli import render

    if args.json:
        from nixherd.cli import jsonout

        jsonout.emit(
            "check",
            {
                "ok": False,
                "nodes": None,
                "roles": None,
                "selected": None,
                "problems": [
                    {"file": p.file, "path": p.path, "message": p.message} for p in problems
                ],
                "eval": None,
            },
        )
    else:
        # One problem per line, `file: key.path: message`, on stdout: the result of a check.
        sys.stdout.write("".join(f"{problem}\n" for problem in problems))
    sys.stderr.write(f"nixherd: error: {render.plural(len(problems), 'problem')} found\n")


def _eval(nodes: list[Node], path: str, flags: NixFlags) -> tuple[list[EvalNode], int]:
    """Evaluate the nodes' systems with `nixherd.fleet.evaluate` (the flake next to the inventory).

    Returns the per-node results as data and how many failed; failures are printed as they are
    found (on stderr, with a line per node that evaluated).
    """
    import sys

    from nixherd.fleet import evaluate as fleet

    results = fleet.eval_nodes(fleet.flake_for(path), [node.name for node in nodes], flags=flags)
    failed = 0
    for name, result in results.items():
        if not result.ok:
            failed += 1
            sys.stderr.write(f"{name}: {result.error}\n")
        else:
            sys.stderr.write(f"{name}: ok {result.out_path}\n")
    from nixherd.cli.jsonout import eval_node

    return [eval_node(results[node.name]) for node in nodes], failed
