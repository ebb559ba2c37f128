"""The inventory: load and validate it, resolve roles to nodes, select nodes (no Nix involved).

    load(path) -> Inventory         read + validate + resolve; InventoryError lists every problem
    loads(text, file=...)           the same from TOML text
    select(inventory, on) -> [Node] the nodes `--on` picks, sorted; SelectionError if none
    Selection.parse(on)             check an `--on` expression before loading anything

The format and resolution rules are docs/inventory.md; the field table is `fields.FIELDS`
(validators in `validate.py`); the typed entries of keys, data and checks are `entries.py`.
"""

from __future__ import annotations

from nixherd.inventory.load import load, loads
from nixherd.inventory.model import Inventory, Node, Origin
from nixherd.inventory.select import Selection, select

__all__ = ["Inventory", "Node", "Origin", "Selection", "load", "loads", "select"]
