"""Node selection (`--on`): comma-separated globs on names, `@`tags and `role:`roles, combined as
docs/inventory.md says (plain pieces OR, `&` pieces AND, `!` pieces NOT)."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import Enum

from nixherd.errors import SelectionError
from nixherd.inventory.model import Inventory, Node

_GLOB_CHARS = frozenset("*?[")


class Op(Enum):
    """How a piece combines with the others."""

    ADD = ""  # a plain piece: these nodes too
    AND = "&"  # only nodes that also match
    NOT = "!"  # minus the nodes that match


class Kind(Enum):
    """What a piece's glob is matched against."""

    NAME = ""
    TAG = "@"
    ROLE = "role:"


def _matcher(pattern: str) -> Callable[[str], bool]:
    if _GLOB_CHARS.isdisjoint(pattern):
        return pattern.__eq__
    match = re.compile(fnmatch.translate(pattern)).match
    return lambda text: match(text) is not None


@dataclass(frozen=True, slots=True)
class Piece:
    """One comma-separated part of a selection."""

    op: Op
    kind: Kind
    pattern: str

    @property
    def is_literal(self) -> bool:
        return _GLOB_CHARS.isdisjoint(self.pattern)

    def __str__(self) -> str:
        return f"{self.op.value}{self.kind.value}{self.pattern}"

    def matching(self, nodes: Mapping[str, Node]) -> set[str]:
        """The names of the nodes this piece matches (its op aside)."""
        if self.kind is Kind.NAME:
            if self.is_literal:
                return {self.pattern} if self.pattern in nodes else set()
            name_matches = _matcher(self.pattern)
            return {name for name in nodes if name_matches(name)}
        if self.kind is Kind.TAG:
            if self.is_literal:
                tag = self.pattern
                return {name for name, node in nodes.items() if tag in node.tags}
            tag_matches = _matcher(self.pattern)
            return {name for name, node in nodes.items() if any(tag_matches(t) for t in node.tags)}
        role_matches = _matcher(self.pattern)
        return {
            name
            for name, node in nodes.items()
            if node.role is not None and role_matches(node.role)
        }


def _parse_piece(text: str, whole: str) -> Piece:
    piece = text.strip()
    if not piece:
        raise SelectionError(f"--on {_quote(whole)}: empty piece (two commas in a row?)")
    op = Op.ADD
    if piece[0] in "!&":
        op = Op(piece[0])
        piece = piece[1:].lstrip()
        if piece[:1] in ("!", "&"):
            raise SelectionError(
                f"--on {_quote(whole)}: {_quote(text.strip())}: only one ! or & per piece"
            )
    kind = Kind.NAME
    if piece.startswith("@"):
        kind, piece = Kind.TAG, piece[1:]
    elif piece.startswith("role:"):
        kind, piece = Kind.ROLE, piece[5:]
    if not piece:
        raise SelectionError(
            f"--on {_quote(whole)}: {_quote(text.strip())} needs a pattern after it"
        )
    return Piece(op, kind, piece)


def _quote(text: str) -> str:
    import json

    return json.dumps(text)


@dataclass(frozen=True, slots=True)
class Selection:
    """A parsed `--on` expression. The order of its pieces never matters."""

    text: str
    pieces: tuple[Piece, ...]

    @classmethod
    def parse(cls, text: str) -> Selection:
        """Parse `--on`; raise SelectionError on an empty or bare piece."""
        return cls(text, tuple(_parse_piece(part, text) for part in text.split(",")))

    def names(self, nodes: Mapping[str, Node]) -> set[str]:
        """The names selected among `nodes` (possibly none)."""
        adds = [p for p in self.pieces if p.op is Op.ADD]
        if adds:
            chosen: set[str] = set()
            for piece in adds:
                chosen |= piece.matching(nodes)
        else:
            chosen = set(nodes)
        for piece in self.pieces:
            if not chosen:
                break
            if piece.op is Op.AND:
                chosen &= piece.matching(nodes)
            elif piece.op is Op.NOT:
                chosen -= piece.matching(nodes)
        return chosen

    def apply(self, nodes: Mapping[str, Node]) -> list[Node]:
        """The selected nodes, sorted by name; SelectionError when none is selected."""
        chosen = self.names(nodes)
        if not chosen:
            raise SelectionError(self._nothing_message(nodes))
        return [nodes[name] for name in sorted(chosen)]

    def _nothing_message(self, nodes: Mapping[str, Node]) -> str:
        message = f"--on {_quote(self.text)} matches no node"
        if not nodes:
            return message + " (the inventory has no nodes)"
        # Hints only for the names that exist nowhere (likely typos), not for a combination
        # of real names that happens to leave nothing.
        hints = _close(
            (p for p in self.pieces if p.op is Op.ADD and p.is_literal and not p.matching(nodes)),
            nodes,
        )
        return f"{message} (did you mean {', '.join(hints)}?)" if hints else message


def _close(pieces: Iterable[Piece], nodes: Mapping[str, Node]) -> list[str]:
    import difflib

    hints: list[str] = []
    for piece in pieces:
        if piece.kind is Kind.NAME:
            known: Iterable[str] = nodes
        elif piece.kind is Kind.TAG:
            known = {t for node in nodes.values() for t in node.tags}
        else:
            known = {node.role for node in nodes.values() if node.role is not None}
        prefix = piece.kind.value
        hints += (prefix + c for c in difflib.get_close_matches(piece.pattern, list(known), n=3))
    return hints


def select(inventory: Inventory | Mapping[str, Node], on: str | Selection | None) -> list[Node]:
    """The nodes `--on` selects (all of them without `--on`), sorted by name.

    Raises SelectionError for a malformed expression or one that selects nothing.
    """
    if isinstance(inventory, Inventory):
        nodes = inventory.nodes  # already sorted by name
        if on is None:
            return list(nodes.values())
    else:
        nodes = inventory
        if on is None:
            return [nodes[name] for name in sorted(nodes)]
    selection = on if isinstance(on, Selection) else Selection.parse(on)
    return selection.apply(nodes)
