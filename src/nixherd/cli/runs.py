"""Shared by the commands that work on selected nodes (eval, build, apply, exec, status):
their common options, loading the selection, and ending a run (report, summary, exit code).
"""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING

from nixherd.cli import numbers

if TYPE_CHECKING:
    from nixherd.cli.progress import Progress
    from nixherd.fleet.report import RunReport
    from nixherd.inventory.model import Inventory, Node

INTERRUPTED_EXIT = 130
# Where logs and GC roots go by default (cli/state.py says why there).
STATE_HINT = "$XDG_STATE_HOME/nixherd/fleets/<fleet>"


def add_selection(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--on", metavar="SEL", help="select nodes: names, @tags, role:R, !exclude, &intersect"
    )


def add_parallel(parser: argparse.ArgumentParser, default: int = 10) -> None:
    parser.add_argument(
        "--parallel",
        type=numbers.parallel,
        default=default,
        metavar="N",
        help=f"nodes worked on at once, 0..{numbers.MAX_PARALLEL} (0: all; default {default})",
    )


DEFAULT_ACTIVATION_TIMEOUT = 600.0


def add_activation_timeout(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    parser.add_argument(
        "--activation-timeout",
        type=numbers.seconds,
        default=DEFAULT_ACTIVATION_TIMEOUT,
        metavar="S",
        help="seconds switch-to-configuration may run on a node before it is stopped and the "
        f"node rolled back ({numbers.SECONDS_RULE}, default {DEFAULT_ACTIVATION_TIMEOUT:g})",
    )


def add_keep_result(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    parser.add_argument(
        "--keep-result",
        action="store_true",
        help=f"keep each node's system as a GC root in {STATE_HINT}/results/<node>",
    )


def results_dir(args: argparse.Namespace) -> str:
    """Where --keep-result puts its GC roots: the fleet's state directory, made now (before any
    work: a place that cannot be written is said at once). Without --keep-result, the core's
    default (no root is kept there)."""
    if not getattr(args, "keep_result", False):
        from nixherd.fleet.plan import RESULTS_DIR

        return RESULTS_DIR
    from nixherd.cli import inventory_path, state

    return str(state.ensure(state.for_inventory(inventory_path(args)) / "results"))


def add_flake(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--flake",
        default=os.environ.get("NIXHERD_FLAKE"),
        metavar="REF",
        help="the fleet's flake (default: $NIXHERD_FLAKE, else the directory of the inventory)",
    )


def flake_ref(args: argparse.Namespace) -> str:
    """The flake to evaluate: --flake, $NIXHERD_FLAKE, or the one beside the inventory.

    One rule for every command (`check --eval` included), so `-i other/inventory.toml` never
    evaluates the flake of the current directory by accident.
    """
    given: str | None = getattr(args, "flake", None)
    if given:
        return given
    from nixherd.cli import inventory_path
    from nixherd.fleet import evaluate as fleet

    return fleet.flake_for(inventory_path(args))


def add_output(parser: argparse.ArgumentParser, *, logs: bool = True) -> None:
    parser.add_argument("--json", metavar="FILE", help="write a JSON report to FILE (- : stdout)")
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="show every output line, also in the live view"
    )
    if logs:
        parser.add_argument(
            "--log-dir",
            metavar="DIR",
            help=f"per-node logs go to DIR/<timestamp>/ (default {STATE_HINT}/logs)",
        )


def load_nodes(args: argparse.Namespace) -> tuple[Inventory, list[Node]]:
    """The inventory and the selected nodes, in name order."""
    from nixherd.cli import inventory_path
    from nixherd.inventory import load, select

    inventory = load(inventory_path(args))
    return inventory, select(inventory, getattr(args, "on", None))


def progress(args: argparse.Namespace, names: list[str], title: str) -> Progress:
    from nixherd.cli.progress import Progress, new_log_dir
    from nixherd.errors import UsageError

    log_base = getattr(args, "log_dir", None)
    log_dir = None
    if log_base is None and hasattr(args, "log_dir"):
        from nixherd.cli import inventory_path, state

        where = state.ensure(state.for_inventory(inventory_path(args)) / "logs")
        try:
            log_dir = new_log_dir(str(where))
        except OSError as exc:
            raise state.unwritable(exc.filename or where, exc) from exc
    elif log_base:
        try:
            log_dir = new_log_dir(log_base)
        except OSError as exc:
            # Before any node is touched: a place for the logs is part of the command line.
            where = exc.filename or log_base
            raise UsageError(
                f"--log-dir {log_base}: cannot create {where}: {exc.strerror or exc}"
            ) from exc
    return Progress(names, title=title, verbose=args.verbose, log_dir=log_dir)


def finish(args: argparse.Namespace, report: RunReport, *, summary: bool = True) -> int:
    """Write the JSON report, print the summary; the exit code (NodesFailedError when failed)."""
    from nixherd.cli.progress import print_summary
    from nixherd.errors import NodesFailedError
    from nixherd.fleet.report import to_json_text, write_json

    target = getattr(args, "json", None)
    if target == "-":
        import sys

        sys.stdout.write(to_json_text(report))
        sys.stdout.flush()
    else:
        if summary:
            print_summary(report)
        if target:
            write_json(report, target)
    if report.interrupted:
        return INTERRUPTED_EXIT
    failed = report.failed
    if failed:
        names = ", ".join(r.node for r in failed[:10]) + (" ..." if len(failed) > 10 else "")
        raise NodesFailedError(f"{len(failed)} of {len(report.nodes)} nodes failed: {names}")
    return 0


def report_with_logs(report: RunReport, progress: Progress) -> RunReport:
    import dataclasses

    return dataclasses.replace(report, log_dir=progress.log_dir)
