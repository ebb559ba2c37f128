"""Properties of resolution and selection over generated inventories, and fuzzing the loader:
whatever the input, the result is an Inventory or an InventoryError, never anything else."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from inventory_strategies import (
    TAGS,
    broken,
    dump,
    encoded,
    inventories,
    keys,
    shuffled,
    values,
)

from nixherd.errors import InventoryError, SelectionError
from nixherd.inventory import Inventory, Origin, Selection, loads, select


def resolved(inventory: Inventory) -> dict[str, Any]:
    return {name: node.to_data() for name, node in inventory.nodes.items()}


@given(st.data())
def test_resolution_does_not_depend_on_the_order_of_tables(data: st.DataObject) -> None:
    doc = data.draw(inventories())
    other = data.draw(shuffled(doc))
    first, second = loads(dump(doc)), loads(dump(other))
    assert list(first.nodes) == list(second.nodes) == sorted(first.nodes)
    assert resolved(first) == resolved(second)


@given(inventories())
def test_a_node_carries_its_roles_and_the_defaults_tags(doc: dict[str, Any]) -> None:
    inventory = loads(dump(doc))
    default_tags = set(doc.get("defaults", {}).get("tags", []))
    for node in inventory.nodes.values():
        assert default_tags <= set(node.tags)
        if node.role is not None:
            role = doc["roles"][node.role]
            assert set(role["tags"]) <= set(node.tags)
            assert set(role["modules"]) <= set(node.modules)
        assert len(set(node.tags)) == len(node.tags)


@given(inventories())
def test_every_fanned_out_target_and_explicit_node_is_there(doc: dict[str, Any]) -> None:
    inventory = loads(dump(doc))
    targets = sum(len(role.get("targets", [])) for role in doc.get("roles", {}).values())
    assert len(inventory.nodes) == targets + len(doc.get("nodes", {}))


@given(inventories())
def test_origins_have_the_shape_of_the_data(doc: dict[str, Any]) -> None:
    def same_shape(data: Any, origins: Any) -> bool:
        if isinstance(origins, dict):
            return (
                isinstance(data, dict)
                and set(origins) == set(data)
                and all(same_shape(data[key], sub) for key, sub in origins.items())
            )
        if isinstance(origins, list):
            return isinstance(data, list) and len(data) == len(origins)
        return isinstance(origins, Origin)

    for node in loads(dump(doc)).nodes.values():
        assert same_shape(node.to_data(), node.origins()), (node.to_data(), node.origins())


pieces = (
    st.sampled_from(["*", "node?", "node0", "web-*", "*-10-0-0-1", "[a-n]*", "nothing"])
    | st.sampled_from([*TAGS, "*", "e*", "missing"]).map(lambda t: "@" + t)
    | st.sampled_from(["web", "d*", "*", "nixos-vps", "none"]).map(lambda r: "role:" + r)
)
selections = st.lists(
    st.tuples(st.sampled_from(["", "", "!", "&"]), pieces).map("".join), min_size=1, max_size=4
).map(",".join)


@given(inventories(), pieces)
def test_a_selection_minus_itself_is_nothing(doc: dict[str, Any], piece: str) -> None:
    inventory = loads(dump(doc))
    assert Selection.parse(f"{piece},!{piece}").names(inventory.nodes) == set()


@given(inventories(), selections)
def test_a_selection_only_returns_nodes_of_the_inventory(doc: dict[str, Any], on: str) -> None:
    inventory = loads(dump(doc))
    try:
        chosen = select(inventory, on)
    except SelectionError:
        assert Selection.parse(on).names(inventory.nodes) == set()
        return
    names = [node.name for node in chosen]
    assert names and names == sorted(set(names))
    assert set(names) <= set(inventory.nodes)


@given(inventories(), st.lists(pieces, min_size=2, max_size=4), st.randoms())
def test_the_order_of_pieces_never_matters(
    doc: dict[str, Any], parts: list[str], random: Any
) -> None:
    inventory = loads(dump(doc))
    ops = ["", "!", "&"]
    marked = [ops[i % 3] + part for i, part in enumerate(parts)]
    again = list(marked)
    random.shuffle(again)
    assert Selection.parse(",".join(marked)).names(inventory.nodes) == Selection.parse(
        ",".join(again)
    ).names(inventory.nodes)


@settings(max_examples=300)
@given(broken())
def test_broken_inventories_always_give_an_inventory_error(text: str) -> None:
    with pytest.raises(InventoryError) as caught:
        loads(encoded(text))
    assert caught.value.problems
    for problem in caught.value.problems:
        line = str(problem)
        assert "\n" not in line and "\x00" not in line and "\x1b" not in line


@given(st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
def test_any_bytes_give_an_inventory_or_an_inventory_error(data: bytes) -> None:
    try:
        loads(data)
    except InventoryError as exc:
        assert exc.problems


field_names = st.sampled_from(
    [
        *("host", "user", "port", "system", "tags", "modules", "vars", "config", "ssh_options"),
        *("keys", "data", "ssh_config", "targets", "name", "role", "defaults", "roles", "nodes"),
    ]
)
documents = st.recursive(
    st.dictionaries(field_names | keys, values, max_size=4),
    lambda inner: st.dictionaries(field_names | keys, inner | st.lists(inner, max_size=2)),
    max_leaves=12,
)


@given(documents)
def test_any_document_gives_an_inventory_or_an_inventory_error(doc: dict[str, Any]) -> None:
    try:
        text = dump(doc)
    except Exception:  # not every generated structure can be written as TOML
        return
    try:
        loads(text)
    except InventoryError as exc:
        assert exc.problems
