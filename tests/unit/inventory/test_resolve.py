"""Resolution: fan-out, the merge rules of docs/inventory.md, provenance, the resolved shape."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from nixherd.inventory import Inventory, Node, Origin, load, loads
from nixherd.inventory.fields import NODE_FIELDS, Merge
from nixherd.inventory.merge import MERGERS, deep_merge
from nixherd.inventory.resolve import fanout_name

D = Origin.DEFAULT
DS = Origin.DEFAULTS
R = Origin.ROLE
N = Origin.NODE
T = Origin.TARGET

DOC_EXAMPLE = """
[roles.nixos-vps]
modules = ["hosts/nixos-vps"]
tags = ["vps"]

[nodes.nixos-hk]
role = "nixos-vps"
host = "103.85.224.63"
tags = ["hk", "prod"]
config = { networking.hostName = "nixos-hk" }
"""


def node(text: str, name: str) -> Node:
    return loads(text).nodes[name]


def test_the_documented_resolved_node() -> None:
    assert node(DOC_EXAMPLE, "nixos-hk").to_data() == {
        "name": "nixos-hk",
        "role": "nixos-vps",
        "host": "103.85.224.63",
        "user": "root",
        "port": None,  # not set: ssh decides
        "system": "x86_64-linux",
        "tags": ["vps", "hk", "prod"],
        "modules": ["hosts/nixos-vps"],
        "vars": {},
        "config": {"networking": {"hostName": "nixos-hk"}},
        "ssh_options": [],
        "host_key_policy": "strict",
    }


LAYERED = """
[defaults]
user = "deploy"
port = 2200
tags = ["fleet", "shared"]
modules = ["common.nix"]
ssh_options = ["ConnectTimeout=5"]
vars = { a = 1, t = { x = 1, y = 1 }, l = [1, 2] }

[roles.web]
port = 2201
system = "aarch64-linux"
tags = ["web", "fleet"]
modules = ["web.nix", "common.nix"]
ssh_options = ["ServerAliveInterval=9", "ConnectTimeout=5"]
vars = { t = { y = 2, z = 2 }, l = [3], s = { deep = 1 } }
config = { services.nginx.enable = true }

[[roles.web.targets]]
host = "10.0.0.1"
tags = ["batch", "web"]
vars = { t = { z = 3 }, s = "flat now" }

[nodes.w2]
role = "web"
host = "w2.example.com"
user = "admin"
port = 22
modules = ["w2.nix"]
config = { services.nginx.enable = false, networking.hostName = "w2" }
"""


def test_scalars_later_layer_wins() -> None:
    target = node(LAYERED, "web-10-0-0-1")
    assert (target.user, target.port, target.system) == ("deploy", 2201, "aarch64-linux")
    explicit = node(LAYERED, "w2")
    assert (explicit.user, explicit.port, explicit.host) == ("admin", 22, "w2.example.com")


def test_lists_concatenate_in_layer_order_without_duplicates() -> None:
    target = node(LAYERED, "web-10-0-0-1")
    assert target.tags == ("fleet", "shared", "web", "batch")
    assert target.modules == ("common.nix", "web.nix")
    assert target.ssh_options == ("ConnectTimeout=5", "ServerAliveInterval=9")
    assert node(LAYERED, "w2").modules == ("common.nix", "web.nix", "w2.nix")


def test_duplicates_inside_one_layer_are_dropped_too() -> None:
    assert node("[nodes.a]\ntags = ['x', 'y', 'x']\n", "a").tags == ("x", "y")


def test_tables_deep_merge_and_everything_else_is_replaced() -> None:
    target = node(LAYERED, "web-10-0-0-1")
    assert target.vars == {
        "a": 1,
        "t": {"x": 1, "y": 2, "z": 3},
        "l": [3],  # lists are replaced, never concatenated inside vars
        "s": "flat now",  # a scalar replaces a table
    }
    assert node(LAYERED, "w2").config == {
        "services": {"nginx": {"enable": False}},
        "networking": {"hostName": "w2"},
    }


def test_a_table_replaces_a_scalar() -> None:
    text = "[roles.r]\nvars = { a = 1 }\n[nodes.n]\nrole = 'r'\nvars = { a = { b = 2 } }\n"
    assert node(text, "n").vars == {"a": {"b": 2}}


def test_merging_never_mutates_the_layers() -> None:
    inventory = loads(LAYERED)
    role_layer = inventory.nodes["w2"].layers[1][1]
    assert role_layer["vars"]["t"] == {"y": 2, "z": 2}
    assert inventory.nodes["w2"].vars["t"] == {"x": 1, "y": 2, "z": 2}


def test_deep_merge_cases() -> None:
    assert deep_merge({}, {"a": 1}) == {"a": 1}
    assert deep_merge({"a": {"b": 1}}, {}) == {"a": {"b": 1}}
    assert deep_merge({"a": {"b": 1}}, {"a": {}}) == {"a": {"b": 1}}
    assert deep_merge({"a": {"b": 1}}, {"a": 5}) == {"a": 5}
    assert deep_merge({"a": [1]}, {"a": [2]}) == {"a": [2]}


def test_named_tables_merge_by_entry_name() -> None:
    named = MERGERS[Merge.NAMED]
    earlier = {"acme": {"dest": "/a", "mode": "0400"}, "db": {"dest": "/d"}}
    later = {"acme": {"dest": "/b"}, "new": {"dest": "/n"}}
    # A later entry replaces the earlier one of the same name whole (its mode is not kept).
    assert named(earlier, later) == {
        "acme": {"dest": "/b"},
        "db": {"dest": "/d"},
        "new": {"dest": "/n"},
    }
    assert earlier["acme"] == {"dest": "/a", "mode": "0400"}


def test_fanout_names() -> None:
    assert fanout_name("nixos-vps", "103.85.224.63") == "nixos-vps-103-85-224-63"
    assert fanout_name("r", "2001:db8::1") == "r-2001-db8--1"
    assert fanout_name("r", "a.example.com") == "r-a-example-com"
    text = (
        "[[roles.r.targets]]\nhost = '2001:db8::1'\n[[roles.r.targets]]\nhost = 'x'\nname = 'y'\n"
    )
    assert list(loads(text).nodes) == ["r-2001-db8--1", "y"]


def test_host_defaults_to_the_name_and_role_may_be_absent() -> None:
    n = node("[nodes.alone]\nmodules = ['m.nix']\n", "alone")
    assert (n.host, n.role, n.modules) == ("alone", None, ("m.nix",))
    assert n.to_data()["role"] is None


def test_nodes_are_sorted_by_name_and_roles_listed() -> None:
    text = "[nodes.b]\n[nodes.a]\n[[roles.z.targets]]\nhost = 'h'\n[roles.m]\n"
    inventory = loads(text)
    assert list(inventory.nodes) == ["a", "b", "z-h"]
    assert inventory.roles == ("m", "z")


def test_ssh_config_is_made_absolute_against_the_inventory_dir(tmp_path: Path) -> None:
    (tmp_path / "fleet").mkdir()
    path = tmp_path / "fleet" / "inventory.toml"
    path.write_text("[defaults]\nssh_config = 'lab/ssh_config'\n")
    inventory = load(path)
    assert inventory.ssh_config == str(tmp_path / "fleet" / "lab" / "ssh_config")
    assert inventory.path == path
    path.write_text("[defaults]\nssh_config = '/etc/ssh/fleet_config'\n")
    assert load(path).ssh_config == "/etc/ssh/fleet_config"
    path.write_text("")
    assert load(path).ssh_config is None


def test_origins_mirror_the_data() -> None:
    target = node(LAYERED, "web-10-0-0-1")
    origins = target.origins()
    assert origins["name"] is T and origins["role"] is T and origins["host"] is T
    assert (origins["user"], origins["port"], origins["system"]) == (DS, R, R)
    assert origins["tags"] == [DS, DS, R, T]
    assert origins["modules"] == [DS, R]
    assert origins["vars"] == {"a": DS, "t": {"x": DS, "y": R, "z": T}, "l": R, "s": T}
    assert origins["config"] == {"services": {"nginx": {"enable": R}}}
    assert origins["ssh_options"] == [DS, R]

    explicit = node(LAYERED, "w2").origins()
    assert (explicit["name"], explicit["role"], explicit["user"], explicit["port"]) == (N, N, N, N)
    assert explicit["config"] == {
        "services": {"nginx": {"enable": N}},
        "networking": {"hostName": N},
    }

    bare = node("[nodes.x]\n", "x").origins()
    assert (bare["name"], bare["role"], bare["host"], bare["port"]) == (N, D, D, D)
    assert bare["tags"] == [] and bare["vars"] == {}


def test_an_empty_table_is_a_leaf_with_an_origin() -> None:
    text = "[roles.r]\nvars = { e = {} }\n[nodes.n]\nrole = 'r'\nvars = { f = {}, e = {} }\n"
    n = node(text, "n")
    assert n.vars == {"e": {}, "f": {}}
    assert n.origins()["vars"] == {"e": R, "f": N}
    text = "[roles.r]\nvars = { e = {} }\n[nodes.n]\nrole = 'r'\nvars = { e = { k = 1 } }\n"
    assert node(text, "n").origins()["vars"] == {"e": {"k": N}}


def test_to_data_hands_out_copies() -> None:
    n = node(LAYERED, "web-10-0-0-1")
    data: dict[str, Any] = n.to_data()
    data["vars"]["t"]["x"] = 99
    data["tags"].append("mutated")
    assert n.vars["t"]["x"] == 1
    assert "mutated" not in n.tags


def test_node_carries_every_schema_field() -> None:
    """A field added to the schema needs its attribute on Node (and the other way round)."""
    # Not per-layer fields: the node's identity, where it came from, and the inventory-wide
    # `[defaults] ssh_config` every node carries for its ssh target.
    not_layered = {"name", "role", "source", "layers", "ssh_config"}
    own = {f.name for f in dataclasses.fields(Node)} - not_layered
    assert own == {f.name for f in NODE_FIELDS}


def test_fast_constructor_builds_the_same_node() -> None:
    n = node(LAYERED, "w2")
    fields = {f.name: getattr(n, f.name) for f in dataclasses.fields(Node)}
    assert Node.from_fields(fields) == Node(**fields) == n
    with pytest.raises(dataclasses.FrozenInstanceError):
        n.port = 1  # type: ignore[misc]


def test_summary_is_the_listing() -> None:
    assert node(LAYERED, "w2").summary() == {
        "name": "w2",
        "role": "web",
        "host": "w2.example.com",
        "user": "admin",
        "port": 22,
        "tags": ["fleet", "shared", "web"],
    }


def test_seed_fleet_example() -> None:
    root = Path(__file__).resolve().parents[3]
    inventory: Inventory = load(root / "examples" / "seed-fleet" / "inventory.toml")
    assert list(inventory.nodes) == [
        "nixos-hk",
        "nixos-vps",
        "nixos-vps-198-51-100-11",
        "nixos-vps-198-51-100-12",
        "nixos-vps-198-51-100-13",
        "nixos-ws",
    ]
    assert inventory.roles == ("nixos-vps", "nixos-ws")
    hk = inventory.nodes["nixos-hk"]
    assert hk.tags == ("vps", "hk", "prod")
    assert hk.config == {"networking": {"hostName": "nixos-hk"}}
    assert inventory.nodes["nixos-vps"].config == {"boot": {"isContainer": True}}
    assert inventory.nodes["nixos-vps"].tags == ("vps", "container", "lab")
    ws = inventory.nodes["nixos-ws"]
    assert (ws.user, ws.host, ws.tags, ws.modules) == (
        "luck",
        "192.168.234.194",
        ("workstation",),
        ("hosts/nixos-ws",),
    )
    batch = [n for n in inventory.nodes.values() if "batch-vps" in n.tags]
    assert len(batch) == 3 and all(n.role == "nixos-vps" for n in batch)
    for module in {m for n in inventory.nodes.values() for m in n.modules}:
        assert (root / "examples" / "seed-fleet" / module / "default.nix").is_file()
