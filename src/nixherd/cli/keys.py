"""`nixherd keys upload`: write the selected nodes' secret keys without a rebuild."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from nixherd.cli import jsonout, runs

if TYPE_CHECKING:
    from nixherd.cli.payloads import KeysData, KeysNode, Payload
    from nixherd.cli.progress import Progress
    from nixherd.errors import NixherdError

HELP = "upload secret keys (files, commands, env vars) to the nodes, without a rebuild"


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    upload = sub.add_parser("upload", help="write every key of the selected nodes that differs")
    add_node_options(upload)


def add_node_options(parser: argparse.ArgumentParser) -> None:
    """Options shared by the per-node commands of this module and `data`."""
    runs.add_selection(parser)
    runs.add_parallel(parser)
    jsonout.add_json(parser, "each node's result")


def progress(names: Sequence[str], title: str) -> Progress:
    """The run's live view (a terminal) or plain `node | line` lines, on stderr."""
    from nixherd.cli.progress import Progress

    return Progress(names, title=title)


def load_selection(args: argparse.Namespace) -> tuple[Any, list[str]]:
    """The inventory and the names `--on` selects, sorted."""
    from nixherd.cli import inventory_path
    from nixherd.inventory import load, select

    inventory = load(inventory_path(args))
    return inventory, [node.name for node in select(inventory, args.on)]


def finish(
    results: Mapping[str, Any],
    rows: Callable[[str, Any], Sequence[str]],
    headers: Sequence[str],
    *,
    json_data: tuple[str, Callable[[], Payload]] | None,
    totals: str,
) -> int:
    """Print the summary: a table, or with `json_data` (the command, and its document made on
    demand) the JSON document; raise NodesFailedError if any failed."""
    from nixherd.errors import NixherdError, NodesFailedError

    failed = [name for name, result in results.items() if isinstance(result, NixherdError)]
    if json_data is not None:
        from nixherd.cli import jsonout

        command, make = json_data
        jsonout.emit(command, make())
    else:
        table = [list(headers), *(list(rows(name, r)) for name, r in results.items())]
        widths = [max(len(row[i]) for row in table) for i in range(len(headers))]
        out = sys.stdout
        if results:
            out.write("\n")
        for row in table:
            out.write(
                "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
            )
            out.write("\n")
        out.write(totals + (f"; {len(failed)} failed" if failed else "") + "\n")
    if failed:
        raise NodesFailedError(f"{len(failed)} of {len(results)} nodes failed: {', '.join(failed)}")
    return 0


def error_text(error: NixherdError) -> str:
    return error.render().splitlines()[0]


def run(args: argparse.Namespace) -> int:
    from nixherd.errors import NixherdError
    from nixherd.fleet.commands import upload_keys_everywhere
    from nixherd.node.keys import KeysResult, summary

    inventory, names = load_selection(args)
    base_dir = str(inventory.path.parent)
    with_keys = [name for name in names if inventory.nodes[name].keys]

    with progress(with_keys, "keys upload") as emit:
        results = upload_keys_everywhere(
            [inventory.nodes[name] for name in with_keys],
            base_dir=base_dir,
            emit=emit,
            parallel=args.parallel,
        ).outcomes()

    def rows(name: str, r: KeysResult | NixherdError) -> list[str]:
        if isinstance(r, NixherdError):
            return [name, "failed", "-", "-", error_text(r)]
        return [name, "ok" if r.sent else "up to date", str(len(r.sent)), str(len(r.unchanged)), ""]

    def report(name: str, r: KeysResult | NixherdError) -> KeysNode:
        if isinstance(r, NixherdError):
            return {"node": name, "outcome": "failed", "error": r.render()}
        return {
            "node": name,
            "outcome": "ok" if r.sent else "up to date",
            "sent": list(r.sent),
            "unchanged": list(r.unchanged),
        }

    def document() -> KeysData:
        return {"nodes": [report(name, r) for name, r in results.items()]}

    sent, same = summary([r for r in results.values() if isinstance(r, KeysResult)])
    skipped = len(names) - len(with_keys)
    totals = f"{sent} keys sent, {same} unchanged on {len(with_keys)} nodes"
    if skipped:
        totals += f" ({skipped} selected nodes have no keys)"
    return finish(
        results,
        rows,
        ["NODE", "RESULT", "SENT", "UNCHANGED", "ERROR"],
        json_data=("keys upload", document) if args.json else None,
        totals=totals,
    )
