"""`nixherd data diff|push`: per-node runtime data files rendered from vars, no rebuild."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING

from nixherd.cli.keys import add_node_options, error_text, finish, load_selection, progress

if TYPE_CHECKING:
    from nixherd.cli.payloads import DataDiffData, DataDiffNode, DataPushData, DataPushNode
    from nixherd.errors import NixherdError
    from nixherd.node.data import DataResult, FileDiff

HELP = "show (diff) or push the nodes' runtime data files, without a rebuild"


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    diff = sub.add_parser("diff", help="show what a push would change on each node")
    add_node_options(diff)
    push = sub.add_parser("push", help="write the files that differ, then run their reloads")
    add_node_options(push)


def run(args: argparse.Namespace) -> int:
    from nixherd.fleet import commands

    inventory, names = load_selection(args)
    with_data = [name for name in names if inventory.nodes[name].data]
    skipped = len(names) - len(with_data)
    note = f" ({skipped} selected nodes have no data files)" if skipped else ""

    nodes = [inventory.nodes[name] for name in with_data]
    with progress(with_data, f"data {args.action}") as emit:
        if args.action == "diff":
            diffs = commands.data_diff(nodes, emit=emit, parallel=args.parallel).outcomes()
        else:
            pushes = commands.data_push(nodes, emit=emit, parallel=args.parallel).outcomes()
    if args.action == "diff":
        return _diff_summary(diffs, json_mode=args.json, note=note)
    return _push_summary(pushes, json_mode=args.json, note=note)


def _push_summary(
    results: Mapping[str, DataResult | NixherdError], *, json_mode: bool, note: str
) -> int:
    from nixherd.errors import NixherdError

    def rows(name: str, r: DataResult | NixherdError) -> list[str]:
        if isinstance(r, NixherdError):
            return [name, "failed", "-", "-", "-", error_text(r)]
        result = "ok" if r.changed else "up to date"
        return [name, result, str(len(r.changed)), str(len(r.unchanged)), str(len(r.reloads)), ""]

    def report(name: str, r: DataResult | NixherdError) -> DataPushNode:
        if isinstance(r, NixherdError):
            return {"node": name, "outcome": "failed", "error": r.render()}
        return {
            "node": name,
            "outcome": "ok" if r.changed else "up to date",
            "changed": list(r.changed),
            "unchanged": list(r.unchanged),
            "reloads": [list(argv) for argv in r.reloads],
        }

    def document() -> DataPushData:
        return {"nodes": [report(name, r) for name, r in results.items()]}

    done = [r for r in results.values() if not isinstance(r, NixherdError)]
    changed = sum(len(r.changed) for r in done)
    same = sum(len(r.unchanged) for r in done)
    return finish(
        results,
        rows,
        ["NODE", "RESULT", "CHANGED", "UNCHANGED", "RELOADS", "ERROR"],
        json_data=("data push", document) if json_mode else None,
        totals=f"{changed} files pushed, {same} unchanged on {len(results)} nodes{note}",
    )


def _diff_summary(
    results: Mapping[str, list[FileDiff] | NixherdError], *, json_mode: bool, note: str
) -> int:
    from nixherd.errors import NixherdError

    if not json_mode:
        # The diffs, node by node in name order, once all are in (never interleaved).
        for name, result in results.items():
            if not isinstance(result, NixherdError):
                for item in result:
                    if item.changed:
                        _print_file_diff(name, item)

    def rows(name: str, r: list[FileDiff] | NixherdError) -> list[str]:
        if isinstance(r, NixherdError):
            return [name, "failed", "-", error_text(r)]
        changed = [d.name for d in r if d.changed]
        return [name, "changes" if changed else "up to date", ", ".join(changed) or "-", ""]

    def report(name: str, r: list[FileDiff] | NixherdError) -> DataDiffNode:
        if isinstance(r, NixherdError):
            return {"node": name, "outcome": "failed", "error": r.render()}
        return {
            "node": name,
            "outcome": "changes" if any(d.changed for d in r) else "up to date",
            "files": [
                {
                    "name": d.name,
                    "path": d.path,
                    "changed": d.changed,
                    "exists": d.exists,
                    "state": d.state,
                    "note": d.note,
                    "diff": d.content_diff,
                    "ownership": d.ownership,
                }
                for d in r
            ],
        }

    def document() -> DataDiffData:
        return {"nodes": [report(name, r) for name, r in results.items()]}

    done = [r for r in results.values() if not isinstance(r, NixherdError)]
    changed = sum(1 for r in done for d in r if d.changed)
    return finish(
        results,
        rows,
        ["NODE", "RESULT", "FILES THAT WOULD CHANGE", "ERROR"],
        json_data=("data diff", document) if json_mode else None,
        totals=f"{changed} files would change on {len(results)} nodes{note}",
    )


def _print_file_diff(node: str, item: FileDiff) -> None:
    out = sys.stdout
    state = item.note or ("new file" if not item.exists else "changed")
    out.write(f"--- {node}: data {item.name} ({item.path}): {state}\n")
    if item.ownership:
        out.write(f"ownership: {item.ownership}\n")
    out.write(item.content_diff)
