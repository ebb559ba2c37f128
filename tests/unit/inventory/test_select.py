"""Selection (`--on`): globs on names, @tags and role:, combined by OR / & / !, and its errors."""

from __future__ import annotations

import pytest

from nixherd.errors import SelectionError
from nixherd.inventory import Inventory, Selection, loads, select
from nixherd.inventory.select import Kind, Op, Piece

FLEET = """
[roles.web]
tags = ["http"]
[[roles.web.targets]]
host = "10.0.0.1"
tags = ["prod", "eu"]
[[roles.web.targets]]
host = "10.0.0.2"
tags = ["staging"]

[roles.db]
tags = ["sql"]

[nodes.db-1]
role = "db"
tags = ["prod", "eu"]
[nodes.db-2]
role = "db"
tags = ["prod", "us"]
[nodes.bastion]
tags = ["eu"]
"""

ALL = ["bastion", "db-1", "db-2", "web-10-0-0-1", "web-10-0-0-2"]


@pytest.fixture(scope="module")
def fleet() -> Inventory:
    return loads(FLEET)


def names(fleet: Inventory, on: str | None) -> list[str]:
    return [node.name for node in select(fleet, on)]


@pytest.mark.parametrize(
    ("on", "expected"),
    [
        (None, ALL),
        ("*", ALL),
        ("db-1", ["db-1"]),
        ("db-*", ["db-1", "db-2"]),
        ("db-?,bastion", ["bastion", "db-1", "db-2"]),
        ("web-10-0-0-[2-9]", ["web-10-0-0-2"]),
        ("@prod", ["db-1", "db-2", "web-10-0-0-1"]),
        ("@e*", ["bastion", "db-1", "web-10-0-0-1"]),
        ("@http", ["web-10-0-0-1", "web-10-0-0-2"]),  # a role's tags are the node's tags
        ("role:db", ["db-1", "db-2"]),
        ("role:*", ["db-1", "db-2", "web-10-0-0-1", "web-10-0-0-2"]),  # bastion has no role
        ("@prod,&@eu", ["db-1", "web-10-0-0-1"]),
        ("@eu,&role:db", ["db-1"]),
        ("@prod,!role:web", ["db-1", "db-2"]),
        ("!@prod", ["bastion", "web-10-0-0-2"]),  # only ! pieces: from all nodes
        ("&@eu", ["bastion", "db-1", "web-10-0-0-1"]),
        ("&@eu,!db-*", ["bastion", "web-10-0-0-1"]),
        (" db-1 , db-2 ", ["db-1", "db-2"]),  # blanks around pieces are ignored
        ("db-1,db-1", ["db-1"]),
    ],
)
def test_selection(fleet: Inventory, on: str | None, expected: list[str]) -> None:
    assert names(fleet, on) == expected


@pytest.mark.parametrize(
    "on",
    ["@prod,&@eu,!db-1", "!db-1,@prod,&@eu", "&@eu,!db-1,@prod", "!db-1,&@eu,@prod"],
)
def test_order_of_pieces_never_matters(fleet: Inventory, on: str) -> None:
    assert names(fleet, on) == ["web-10-0-0-1"]


@pytest.mark.parametrize(
    ("on", "message"),
    [
        ("", '--on "": empty piece (two commas in a row?)'),
        ("a,,b", '--on "a,,b": empty piece (two commas in a row?)'),
        ("a,", '--on "a,": empty piece (two commas in a row?)'),
        ("@", '--on "@": "@" needs a pattern after it'),
        ("!", '--on "!": "!" needs a pattern after it'),
        ("&", '--on "&": "&" needs a pattern after it'),
        ("role:", '--on "role:": "role:" needs a pattern after it'),
        ("x,!@", '--on "x,!@": "!@" needs a pattern after it'),
        ("!!a", '--on "!!a": "!!a": only one ! or & per piece'),
        ("&!a", '--on "&!a": "&!a": only one ! or & per piece'),
    ],
)
def test_malformed_selections(on: str, message: str) -> None:
    with pytest.raises(SelectionError) as caught:
        Selection.parse(on)
    assert str(caught.value) == message
    assert caught.value.exit_code == 2


@pytest.mark.parametrize(
    ("on", "message"),
    [
        ("nope", '--on "nope" matches no node'),
        ("db-3", '--on "db-3" matches no node (did you mean db-2, db-1?)'),
        ("@prd", '--on "@prd" matches no node (did you mean @prod?)'),
        ("role:wbe", '--on "role:wbe" matches no node (did you mean role:web?)'),
        ("db-1,!db-1", '--on "db-1,!db-1" matches no node'),
        ("@prod,&@staging", '--on "@prod,&@staging" matches no node'),
    ],
)
def test_selecting_nothing_is_an_error(fleet: Inventory, on: str, message: str) -> None:
    with pytest.raises(SelectionError) as caught:
        select(fleet, on)
    assert str(caught.value) == message


def test_empty_inventory() -> None:
    empty = loads("")
    assert select(empty, None) == []
    with pytest.raises(SelectionError, match="the inventory has no nodes"):
        select(empty, "*")


def test_parsed_pieces() -> None:
    assert Selection.parse("a*,&@t,!role:r").pieces == (
        Piece(Op.ADD, Kind.NAME, "a*"),
        Piece(Op.AND, Kind.TAG, "t"),
        Piece(Op.NOT, Kind.ROLE, "r"),
    )
    assert str(Piece(Op.NOT, Kind.ROLE, "r")) == "!role:r"


def test_select_takes_a_parsed_selection_or_a_mapping(fleet: Inventory) -> None:
    assert [n.name for n in select(fleet, Selection.parse("@sql"))] == ["db-1", "db-2"]
    reversed_nodes = dict(reversed(list(fleet.nodes.items())))
    assert [n.name for n in select(reversed_nodes, None)] == ALL
    assert [n.name for n in select(reversed_nodes, "db-*")] == ["db-1", "db-2"]


def test_globs_are_case_sensitive_and_anchored(fleet: Inventory) -> None:
    with pytest.raises(SelectionError):
        select(fleet, "DB-*")
    with pytest.raises(SelectionError):
        select(fleet, "db")
    assert names(fleet, "*1") == ["db-1", "web-10-0-0-1"]
