"""`nixherd apply [GOAL]`: evaluate, build, copy and activate the selected nodes in parallel."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from nixherd.cli import numbers, runs

if TYPE_CHECKING:
    from collections.abc import Mapping

    from nixherd.fleet.plan import DeployOptions
    from nixherd.fleet.rollout import Rollout
    from nixherd.node.delivery import System

HELP = "deploy the selected nodes (goal: build, push, switch, boot, test, dry-activate)"

GOALS = ("build", "push", "switch", "boot", "test", "dry-activate")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "goal",
        nargs="?",
        default="switch",
        choices=GOALS,
        metavar="GOAL",
        help="what to reach on each node: " + ", ".join(GOALS) + " (default switch)",
    )
    runs.add_selection(parser)
    runs.add_flake(parser)
    runs.add_parallel(parser)
    build = parser.add_argument_group("building and copying")
    runs.add_keep_result(build)
    build.add_argument(
        "--substitute-on-destination",
        action="store_true",
        help="let nodes fetch paths from their own substituters instead of from here",
    )
    build.add_argument(
        "--build-on-target",
        action="store_true",
        help="copy the derivations and build on each node instead of here",
    )
    runs.add_nix_flags(parser)
    safety = parser.add_argument_group("activation and safety")
    safety.add_argument(
        "--no-rollback",
        dest="rollback",
        action="store_false",
        help="do not roll back a node that fails its checks or cannot be reached after switching",
    )
    safety.add_argument(
        "--confirm-timeout",
        type=numbers.seconds,
        default=30.0,
        metavar="S",
        help="seconds a node waits for the confirmation before rolling back "
        f"({numbers.SECONDS_RULE}, default 30)",
    )
    runs.add_activation_timeout(safety)
    safety.add_argument(
        "--no-keys", dest="keys", action="store_false", help="do not upload secret keys"
    )
    safety.add_argument(
        "--reboot",
        action="store_true",
        help="reboot each node after switch/boot and wait until it is back on the new system",
    )
    safety.add_argument(
        "--reboot-timeout",
        type=numbers.seconds,
        default=300.0,
        metavar="S",
        help=f"seconds to wait for a rebooted node ({numbers.SECONDS_RULE}, default 300)",
    )
    staged = parser.add_argument_group("staged rollout")
    staged.add_argument(
        "--canary",
        type=numbers.count,
        default=0,
        metavar="N",
        help="deploy N nodes first; all must succeed",
    )
    staged.add_argument(
        "--batch", metavar="N|P%", help="then deploy in batches of N nodes (or P%% of them)"
    )
    staged.add_argument(
        "--max-failures",
        metavar="N|P%",
        help="start no new node once more than N nodes (or P%%) have failed",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="print the plan; evaluate, build and change nothing"
    )
    parser.add_argument(
        "--confirm",
        action="store_true",
        help="after the build, show what changes on each node and ask before touching any",
    )
    runs.add_output(parser)
    parser.add_argument(
        "--html",
        metavar="FILE",
        help="also write the run as an HTML deploy timeline to FILE (as `nixherd report` does)",
    )


def options_from(args: argparse.Namespace) -> DeployOptions:
    """The core's DeployOptions from the command line (the Namespace stops here)."""
    from nixherd.errors import UsageError
    from nixherd.fleet.plan import OptionError
    from nixherd.fleet.rollout import Amount, Rollout

    rollout = Rollout(
        canary=args.canary,
        batch=Amount.parse(args.batch, option="--batch") if args.batch else None,
        max_failures=(
            Amount.parse(args.max_failures, option="--max-failures")
            if args.max_failures is not None
            else None
        ),
    )
    try:
        return _options(args, rollout)
    except OptionError as exc:
        # The core says what does not go together; the command line says it with its flags.
        hint = _FLAG_HINTS.get(exc.option)
        if hint is None:
            raise
        raise UsageError(hint.format(goal=args.goal)) from None


# Options the core refuses together, worded with the flags that set them.
_FLAG_HINTS = {
    "reboot": "--reboot goes with switch or boot, not {goal}",
    "build_on_target": "--build-on-target needs a goal that reaches the nodes, not {goal}",
}


def _options(args: argparse.Namespace, rollout: Rollout) -> DeployOptions:
    from nixherd.fleet.plan import DeployOptions
    from nixherd.node.goal import Goal

    return DeployOptions(
        goal=Goal(args.goal),
        flake=runs.flake_ref(args),
        parallel=args.parallel,
        keep_result=args.keep_result,
        results_dir=runs.results_dir(args),
        substitute_on_destination=args.substitute_on_destination,
        build_on_target=args.build_on_target,
        reboot=args.reboot,
        reboot_timeout=args.reboot_timeout,
        rollback=args.rollback,
        confirm_timeout=args.confirm_timeout,
        activation_timeout=args.activation_timeout,
        keys=args.keys,
        rollout=rollout,
        nix=runs.nix_flags(args),
        evaluation=runs.eval_limits(args),
    )


def run(args: argparse.Namespace) -> int:
    import dataclasses
    import sys

    from nixherd.errors import NixherdError, UsageError
    from nixherd.fleet import commands, pipeline
    from nixherd.fleet.plan import describe

    if args.dry_run and (args.json or args.report or args.html):
        raise UsageError("--dry-run prints a plan for people; it has no --json, --report or --html")
    options = options_from(args)
    inventory, nodes = runs.load_nodes(args)
    options = dataclasses.replace(options, nix=runs.with_builders(options.nix, inventory))
    caches = runs.caches_of(inventory, nodes)
    if args.dry_run:
        for line in describe(nodes, options, extra=runs.cache_plan(caches, options)):
            sys.stdout.write(line + "\n")
        return 0
    if args.confirm and not sys.stdin.isatty():
        raise UsageError("--confirm asks on the terminal, but stdin is not one")
    names = [n.name for n in nodes]
    with runs.progress(args, names, title=f"apply {options.goal.value}") as view:

        def ask(systems: Mapping[str, System]) -> bool:
            from nixherd.node.diff import plan_text

            diffs = commands.closure_diffs(nodes, systems, parallel=options.parallel)
            # With --json, stdout holds the JSON document alone: the question goes to stderr.
            out = sys.stderr if args.json else sys.stdout
            with view.suspended():
                out.write(plan_text(dict(diffs)))
                out.write(f"Deploy {options.goal.value} to {len(systems)} nodes? [y/N] ")
                out.flush()
                answer = input()
            return answer.strip().lower() in ("y", "yes")

        report = pipeline.deploy(
            nodes,
            options,
            base_dir=str(inventory.path.parent),
            emit=view,
            confirm=ask if args.confirm else None,
            caches=caches,
        )
    report = runs.report_with_logs(report, view)
    if args.html:
        # Before finish(), which raises once the summary is out when a node failed: the
        # timeline matters most then.
        from nixherd.cli import timeline

        drawn = timeline.from_data(report.command, report.to_data(), source="the report")
        timeline.write(args.html, timeline.page(drawn))
    code = runs.finish(args, report)
    if any(r.detail == "declined" for r in report.nodes):
        raise NixherdError("not confirmed: no node was touched")
    return code
