"""`nixherd show NODE`: one resolved node, every value with the layer it came from."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nixherd.cli.payloads import ShowData
    from nixherd.inventory import Inventory, Node

HELP = "show one resolved node and where each value comes from"

HEADERS = ("FIELD", "VALUE", "ORIGIN")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("node", metavar="NODE", help="the node's name")
    from nixherd.cli import jsonout

    jsonout.add_json(parser, "the node, its values' origins and its source")


def run(args: argparse.Namespace) -> int:
    from nixherd.cli import inventory_path, render
    from nixherd.inventory import load

    node = find(load(inventory_path(args), cache=True), args.node)
    data = node.to_data(deployer=True)
    origins = node.origins(deployer=True)
    if args.json:
        from nixherd.cli import jsonout

        shown: ShowData = {
            "node": data,
            "origins": _origin_names(origins),
            "source": node.source,
        }
        jsonout.emit("show", shown)
        return 0
    rows = [
        (field if first else "", value, origin)
        for field in data
        for first, (value, origin) in _first(_rows(data[field], origins[field], top=True))
    ]
    render.print_table(HEADERS, rows, title=f"{node.name} ({node.source})")
    return 0


def find(inventory: Inventory, name: str) -> Node:
    """The node called `name`; SelectionError (exit 2) naming close names otherwise."""
    node = inventory.nodes.get(name)
    if node is not None:
        return node
    import difflib
    import json

    from nixherd.errors import SelectionError

    close = difflib.get_close_matches(name, list(inventory.nodes), n=3)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    raise SelectionError(f"no node named {json.dumps(name)} in the inventory{hint}")


def _origin_names(origins: Any) -> Any:
    """The origins tree with each Origin replaced by its name (for JSON)."""
    if isinstance(origins, dict):
        return {key: _origin_names(value) for key, value in origins.items()}
    if isinstance(origins, list):
        return [_origin_names(value) for value in origins]
    return origins.value


def _first(rows: Iterator[tuple[str, str]]) -> Iterator[tuple[bool, tuple[str, str]]]:
    for index, row in enumerate(rows):
        yield index == 0, row


def _text(value: Any) -> str:
    import json

    return json.dumps(value, ensure_ascii=False)


def _rows(
    value: Any, origins: Any, *, top: bool = False, prefix: str = ""
) -> Iterator[tuple[str, str]]:
    """(value, origin) rows: one per scalar, list element, or leaf of a table."""
    from nixherd.inventory.validate import key_segment

    if isinstance(origins, dict):
        if not value:
            yield ("{}" if top else f"{prefix} = {{}}", "")
        for key, sub in value.items():
            path = f"{prefix}.{key_segment(key)}" if prefix else key_segment(key)
            yield from _rows(sub, origins[key], prefix=path)
    elif isinstance(origins, list):
        if not value:
            yield "[]", ""
        for element, origin in zip(value, origins, strict=True):
            yield (element if isinstance(element, str) else _text(element)), origin.value
    elif top:
        shown = "-" if value is None else value if isinstance(value, str) else _text(value)
        yield shown, origins.value
    else:
        yield f"{prefix} = {_text(value)}", origins.value
