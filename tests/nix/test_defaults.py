"""The built-in defaults are declared in three places that must agree: the Python field table
(inventory/fields.py), the Nix resolver (nix/lib.nix, `builtinDefaults` and the empty lists and
tables) and the ssh layer's `Target` (run/ssh.py). A node given nothing but its name is resolved
by the real nix and by Python, and both are compared with `Target`'s own defaults."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
from nixfleet import write_fleet

from nixherd.inventory import loads
from nixherd.inventory.fields import BUILTIN, NODE_FIELDS
from nixherd.run.ssh import Target

pytestmark = pytest.mark.nix

BARE = "[nodes.bare]\n"


@pytest.fixture(scope="module")
def nix_node(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    fleet = write_fleet(Path(tmp_path_factory.mktemp("defaults")) / "fleet", BARE)
    node: dict[str, Any] = fleet.eval("nixherd.nodes.bare")
    return node


def test_nix_resolves_a_bare_node_as_python_does(nix_node: dict[str, Any]) -> None:
    assert nix_node == loads(BARE).nodes["bare"].to_data()


def test_nix_defaults_are_the_field_table_defaults(nix_node: dict[str, Any]) -> None:
    nix_fields = [f for f in NODE_FIELDS if f.nix]
    assert nix_node["host"] == "bare"  # `host` defaults to the node's name
    expected = {f.name: BUILTIN[f.name] for f in nix_fields if f.name in BUILTIN}
    # Nix has lists and attribute sets where Python keeps tuples and dicts.
    got = {
        name: tuple(value) if isinstance(value, list) else value
        for name, value in nix_node.items()
        if name in expected
    }
    assert got == expected
    assert set(expected) == {f.name for f in nix_fields} - {"host"}


def test_target_defaults_are_the_field_table_defaults() -> None:
    defaults = {
        f.name: f.default
        for f in dataclasses.fields(Target)
        if f.default is not dataclasses.MISSING
    }
    # Target's field for the inventory's `ssh_options` is `options`.
    assert defaults["user"] == BUILTIN["user"]
    assert defaults["port"] == BUILTIN["port"]
    assert defaults["host_key_policy"] == BUILTIN["host_key_policy"]
    assert defaults["options"] == BUILTIN["ssh_options"]
    # And the target a bare node resolves to is the one Target builds from its defaults.
    assert loads(BARE).nodes["bare"].target == Target(node="bare", host="bare")
