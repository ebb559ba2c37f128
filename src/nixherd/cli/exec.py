"""`nixherd exec -- CMD...`: run one command on the selected nodes, output prefixed by node."""

from __future__ import annotations

import argparse

from nixherd.cli import numbers, runs

HELP = "run a command on the selected nodes in parallel (after --), output prefixed by node"


def configure(parser: argparse.ArgumentParser) -> None:
    runs.add_selection(parser)
    runs.add_parallel(parser)
    parser.add_argument("--sudo", action="store_true", help="run the command through sudo")
    parser.add_argument(
        "--timeout",
        type=numbers.seconds,
        default=None,
        metavar="S",
        help=f"give up on a node after S seconds ({numbers.SECONDS_RULE})",
    )
    runs.add_report_json(parser, "the report (each node's exit code and output, bounded)")
    parser.add_argument(
        "command", nargs=argparse.REMAINDER, metavar="-- CMD...", help="the command and its args"
    )


def run(args: argparse.Namespace) -> int:
    import sys

    from nixherd.cli.progress import Progress, print_summary
    from nixherd.errors import UsageError
    from nixherd.fleet.commands import exec_everywhere

    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        raise UsageError("exec: give the command after --, e.g. nixherd exec -- uname -a")
    _inventory, nodes = runs.load_nodes(args)
    names = [n.name for n in nodes]
    # The command's output is this command's product: plain prefixed lines on stdout.
    stream = sys.stderr if args.json else sys.stdout
    with Progress(names, title="exec", live=False, stream=stream, show_stages=False) as view:
        report = exec_everywhere(
            nodes,
            command,
            parallel=args.parallel,
            elevate=args.sudo,
            timeout=args.timeout,
            emit=view,
        )
    if not args.json:
        print_summary(report, stream=sys.stderr)
    return runs.finish(args, report, summary=False)
