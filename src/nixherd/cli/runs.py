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
    from nixherd.fleet.evaluate import EvalLimits
    from nixherd.fleet.plan import DeployOptions
    from nixherd.fleet.report import RunReport
    from nixherd.inventory.cachecfg import Cache
    from nixherd.inventory.model import Inventory, Node
    from nixherd.run.nix import NixFlags

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

    try:
        return fleet.flake_for(inventory_path(args, required=False))
    except fleet.FlakeError:
        inventory_path(args)  # no inventory anywhere: that is the news, said by this
        raise


def add_nix_flags(parser: argparse.ArgumentParser) -> None:
    """Nix's own flags, spelled as `nix build` spells them, for every local nix eval and build."""
    group = parser.add_argument_group("Nix flags (for every nix eval and build run here)")
    group.add_argument(
        "--show-trace", action="store_true", help="show Nix's trace with evaluation errors"
    )
    group.add_argument(
        "-L",
        "--print-build-logs",
        action="store_true",
        help="show the build's log lines as they come (also in the live view and in diff)",
    )
    group.add_argument(
        "--impure", action="store_true", help="let the evaluation read the environment and files"
    )
    group.add_argument(
        "--option",
        nargs=2,
        action="append",
        default=[],
        metavar=("NAME", "VALUE"),
        dest="nix_option",
        help="set a Nix setting (repeatable); Nix is asked first whether it knows NAME",
    )
    group.add_argument(
        "--builders", metavar="SPEC", help="Nix's builders setting, as Nix reads it (or @FILE)"
    )
    group.add_argument(
        "--max-jobs",
        type=numbers.max_jobs,
        metavar="N",
        help=f"builds at once here: 'auto' or 0..{numbers.MAX_JOBS} (0: only on --builders)",
    )
    add_eval_limits(parser)


def add_eval_limits(parser: argparse.ArgumentParser) -> None:
    """How the nodes' evaluation is bounded (fleet/evaluate.py, docs/scale.md)."""
    group = parser.add_argument_group("Evaluation (nix processes of at most K nodes, N at once)")
    group.add_argument(
        "--eval-workers",
        type=numbers.eval_workers,
        metavar="N",
        help=f"evaluation processes at once, 1..{numbers.MAX_EVAL_WORKERS} (default: the cores)",
    )
    group.add_argument(
        "--eval-node-limit",
        type=numbers.eval_node_limit,
        metavar="K",
        help="nodes per evaluation process: 'auto' (default: from the available memory, 512 MB "
        "a node as Colmena), 0 (no limit: the nodes shared by the processes) or a number",
    )


def eval_limits(args: argparse.Namespace) -> EvalLimits:
    from nixherd.fleet.evaluate import EvalLimits

    return EvalLimits(
        workers=getattr(args, "eval_workers", None),
        node_limit=getattr(args, "eval_node_limit", None),
    )


def nix_flags(args: argparse.Namespace) -> NixFlags:
    """The Nix flags of the command line, checked (their form here, the options by Nix)."""
    from nixherd.run import nix

    flags = nix.NixFlags(
        show_trace=getattr(args, "show_trace", False),
        print_build_logs=getattr(args, "print_build_logs", False),
        impure=getattr(args, "impure", False),
        options=tuple((name, value) for name, value in getattr(args, "nix_option", [])),
        builders=getattr(args, "builders", None),
        max_jobs=getattr(args, "max_jobs", None),
    )
    nix.check_options(flags)
    return flags


def add_report_json(parser: argparse.ArgumentParser, what: str) -> None:
    """`--json` of the commands whose `--json` took a FILE before the JSON contract v1 (apply,
    build, exec, rollback, check-health), and `--report FILE`.

    The old spelling `--json FILE` is refused while parsing (nothing started), naming --report,
    rather than read as before: `apply --json boot` would otherwise write a file "boot" and
    switch, and `exec --json out.json -- cmd` would run `out.json` on the nodes.
    """
    parser.add_argument(  # the same flag as nixherd.cli.jsonout.add_json, refusing a value
        "--json",
        nargs="?",
        const=True,
        default=False,
        type=_json_takes_no_value,
        help=f"print {what} as JSON on stdout (docs/json.md); progress stays on stderr",
    )
    parser.add_argument(
        "--report", metavar="FILE", help="also write the JSON report to FILE (docs/json.md)"
    )


def _json_takes_no_value(value: str) -> bool:
    raise argparse.ArgumentTypeError(
        f"takes no value (got {value!r}): --report FILE writes the report to a file, --json "
        "alone prints it on stdout; put a GOAL or command before --json"
    )


def add_output(parser: argparse.ArgumentParser, *, logs: bool = True) -> None:
    add_report_json(parser, "the report")
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


def with_builders(flags: NixFlags, inventory: Inventory) -> NixFlags:
    """The command line's Nix flags, with the inventory's `[defaults] builders` when `--builders`
    was not given (the command line replaces them, as Nix's own flag replaces nix.conf's)."""
    if flags.builders is not None or not inventory.builders:
        return flags
    import dataclasses

    from nixherd.inventory.cachecfg import builders_spec

    spec = builders_spec(inventory.builders, str(inventory.path.parent))
    return dataclasses.replace(flags, builders=spec)


def caches_of(inventory: Inventory, nodes: list[Node]) -> dict[str, Cache]:
    """Node name -> its binary cache, for the nodes that have one."""
    from nixherd.inventory.cachecfg import cache_of

    base = str(inventory.path.parent)
    found = {n.name: cache_of(n.cache, base) for n in nodes if n.cache}
    return {name: cache for name, cache in found.items() if cache is not None}


def cache_plan(caches: dict[str, Cache], options: DeployOptions) -> dict[str, str]:
    """`apply --dry-run`'s lines about binary caches: which nodes go through which cache."""
    if not caches or options.build_on_target or not options.goal.copies:
        return {}
    by_cache: dict[Cache, list[str]] = {}
    for name, cache in caches.items():
        by_cache.setdefault(cache, []).append(name)
    return {
        f"binary cache {cache.url}": f"{len(names)} nodes substitute from it, trusting "
        f"{cache.public_key.split(':')[0]}; pushed once to {cache.push}"
        + (
            " (signed with the key in " + cache.secret_key_file + ")"
            if cache.secret_key_file
            else ""
        )
        + "; a node it fails gets a direct nix copy"
        for cache, names in by_cache.items()
    }


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
    return Progress(
        names,
        title=title,
        verbose=args.verbose,
        log_dir=log_dir,
        build_logs=getattr(args, "print_build_logs", False),
    )


def finish(args: argparse.Namespace, report: RunReport, *, summary: bool = True) -> int:
    """Print the JSON report (--json) or the summary, write --report; the exit code
    (NodesFailedError when a node failed)."""
    import sys

    from nixherd.cli import jsonout
    from nixherd.cli.progress import print_failures, print_summary
    from nixherd.errors import NodesFailedError

    # Why nodes failed is a diagnostic: on stderr, whatever stdout carries (table or JSON).
    data = report.to_data()
    if args.json:
        jsonout.emit(report.command, data)
        print_failures(report, sys.stderr)
    elif summary:
        print_summary(report, details=sys.stderr)
    else:
        print_failures(report, sys.stderr)
    if args.report:
        jsonout.write(report.command, data, args.report)
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
