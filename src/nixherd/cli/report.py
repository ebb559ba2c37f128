"""`nixherd report REPORT.json --html FILE`: a run report (`apply --report`) as a deploy timeline.

Reads the JSON document a run command wrote (docs/json.md, envelope v1) and writes one
self-contained HTML page: a Gantt row per node with its stages, result and error
(nixherd.cli.timeline). Needs no inventory, no Nix and no node.
"""

from __future__ import annotations

import argparse

HELP = "draw a run report (apply --report FILE) as an HTML deploy timeline"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("report", metavar="REPORT.json", help="a run report (apply --report FILE)")
    parser.add_argument(
        "--html",
        required=True,
        metavar="FILE",
        help="write the timeline to FILE: one self-contained HTML page (no script, no network)",
    )


def run(args: argparse.Namespace) -> int:
    import sys

    from nixherd.cli import timeline

    drawn = timeline.load(args.report)
    timeline.write(args.html, timeline.page(drawn))
    sys.stderr.write(f"timeline of {len(drawn.rows)} nodes: {args.html}\n")
    return 0
