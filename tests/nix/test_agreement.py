"""The Nix resolver (nix/lib.nix) and the Python one (nixherd.inventory) agree on every valid input.

Hypothesis writes many valid inventories as TOML; each is resolved by `nixherd.inventory.load` and
by `mkFleet`'s `nixherd.nodes` under the real nix, and the two must be equal field by field. Nix
starts slowly, so every Hypothesis example is a batch of inventories evaluated in one nix call.
"""

from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import rtoml
import tomlkit
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nixfleet import LIB, STUB_SYSTEM

from nixherd import inventory
from nixherd.run import nix

pytestmark = pytest.mark.nix

# --- comparing ----------------------------------------------------------------------------------


def differences(python: Any, nix_value: Any, path: str = "") -> list[str]:
    """Where two JSON-like values differ, strictly by type (True is not 1).

    One allowance: Nix 2.8 prints floats with 6 significant digits (and 2.0 as `2`), so a float
    matches a number within that precision; the value Nix holds is exact, only its printing is not.
    """
    if type(python) is float:
        if type(nix_value) in (int, float) and math.isclose(python, nix_value, rel_tol=1e-5):
            return []
        return [f"{path or '.'}: python {python!r}, nix {nix_value!r}"]
    if type(python) is not type(nix_value):
        return [f"{path or '.'}: python {python!r}, nix {nix_value!r}"]
    if isinstance(python, dict):
        found = [f"{path}: keys differ: {sorted(python)} / {sorted(nix_value)}"]
        if python.keys() != nix_value.keys():
            return found
        return [d for k in python for d in differences(python[k], nix_value[k], f"{path}.{k}")]
    if isinstance(python, list):
        if len(python) != len(nix_value):
            return [f"{path}: python {python!r}, nix {nix_value!r}"]
        pairs = zip(python, nix_value, strict=True)
        return [d for i, (a, b) in enumerate(pairs) for d in differences(a, b, f"{path}[{i}]")]
    return [] if python == nix_value else [f"{path or '.'}: python {python!r}, nix {nix_value!r}"]


def nix_resolve(files: list[Path], root: Path) -> list[dict[str, Any]]:
    """`nixherd.nodes` of mkFleet for every inventory file, in one nix process."""
    paths = " ".join(nix.nix_string(str(f)) for f in files)
    expr = f"""
      let
        lib = import {nix.nix_string(str(LIB))};
        mkSystem = import {nix.nix_string(str(STUB_SYSTEM))};
        root = {nix.nix_string(str(root))};
      in map (file: (lib.mkFleet {{ inventory = /. + file; inherit root mkSystem; }}).nixherd.nodes)
        [ {paths} ]
    """
    result: list[dict[str, Any]] = nix.eval_expr_json(expr)
    return result


def check_agreement(
    documents: list[dict[str, Any]],
    dump: Callable[[Any], str],
    snapshots: list[dict[str, Any] | None] | None = None,
) -> None:
    """Both resolvers on each document; `snapshots` (by document, None for none) is written
    beside it as its Terraform snapshot, `<stem>.terraform.json`, which both read."""
    with tempfile.TemporaryDirectory(prefix="nixherd-agree-") as tmp:
        files = []
        for index, document in enumerate(documents):
            file = Path(tmp) / f"{index}.toml"
            file.write_text(dump(document))
            snapshot = snapshots[index] if snapshots else None
            if snapshot is not None:
                (Path(tmp) / f"{index}.terraform.json").write_text(json.dumps(snapshot))
            files.append(file)
        from_nix = nix_resolve(files, Path(tmp))
        for file, nix_nodes in zip(files, from_nix, strict=True):
            resolved = inventory.load(file)
            python_nodes = {name: node.to_data() for name, node in resolved.nodes.items()}
            found = differences(python_nodes, nix_nodes)
            assert not found, f"{file.read_text()}\n" + "\n".join(found)


# --- generating valid inventories ---------------------------------------------------------------

ROLES = ["web", "db", "nixos-vps", "edge.eu", "r_1"]
TAGS = ["vps", "prod", "batch-vps", "hk", "a.b", "x_1", "Z"]
MODULES = ["hosts/vps", "./modules/a.nix", "modules/b.nix", "hosts/vps/", "m"]
SSH_OPTIONS = ["ConnectTimeout=5", "Compression=yes", "ServerAliveInterval=10", "Ciphers="]
USERS = ["root", "deploy", "_svc", "a.b-c"]
SYSTEMS = ["x86_64-linux", "aarch64-linux", "riscv64_x-linux"]

# Keys of vars/config tables: anything TOML allows, except what Nix gives a meaning in JSON
# (`outPath` turns a table into that string, `__toString` into a call).
# Any character TOML and Nix can hold: no surrogates, no NUL.
characters = st.characters(codec="utf-8", exclude_characters="\x00")
keys = st.text(alphabet=characters, max_size=6).filter(lambda k: k not in ("outPath", "__toString"))
scalars = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.text(alphabet=characters),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(["${x}", "\\", '"', "''", "\n"]),
)
# Few keys at every level, so that the layers often collide on the same ones.
few_keys = st.sampled_from(["a", "b", "c", "a.b", ""]) | keys
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(few_keys, inner, max_size=3),
    max_leaves=8,
)
tables = st.dictionaries(few_keys, values, max_size=3)


def lists_from(pool: list[str]) -> st.SearchStrategy[list[str]]:
    return st.lists(st.sampled_from(pool), max_size=4)  # duplicates on purpose


LAYER = {
    # false: ssh decides (resolved to null by both sides).
    "user": st.sampled_from([*USERS, False]),
    "port": st.integers(min_value=1, max_value=65535) | st.just(False),
    "system": st.sampled_from(SYSTEMS),
    "tags": lists_from(TAGS),
    "modules": lists_from(MODULES),
    "vars": tables,
    "config": tables,
    "ssh_options": lists_from(SSH_OPTIONS),
    "host_key_policy": st.sampled_from(["strict", "accept-new"]),
}
layers = st.fixed_dictionaries({}, optional=LAYER)


def host(kind: int, index: int) -> str:
    """A host unique to `index` (no two nodes may share host and port), of one of four kinds."""
    if kind == 0:
        return f"10.{index // 65536 % 256}.{index // 256 % 256}.{index % 256}"
    if kind == 1:
        return f"fd00::{index:x}"
    if kind == 2:
        return f"node{index}.example.org"
    return f"H{index}.Example.COM."


@st.composite
def inventories(draw: st.DrawFn) -> dict[str, Any]:
    counter = iter(range(1_000_000))
    document: dict[str, Any] = {}
    defaults = draw(layers)
    if draw(st.booleans()):
        defaults["ssh_config"] = "lab/ssh_config"
    # Tables left out, or written out empty: both are valid.
    write_empty = draw(st.booleans())
    if defaults or write_empty:
        document["defaults"] = defaults
    roles: dict[str, Any] = {}
    for role_name in draw(st.lists(st.sampled_from(ROLES), unique=True, max_size=3)):
        role = draw(layers)
        targets = []
        for _ in range(draw(st.integers(min_value=0, max_value=3))):
            target = draw(layers)
            index = next(counter)
            target["host"] = host(draw(st.integers(0, 3)), index)
            if draw(st.integers(0, 3)) == 0:
                target["name"] = f"t{index}"
            targets.append(target)
        if targets or write_empty:
            role["targets"] = targets
        roles[role_name] = role
    if roles or write_empty:
        document["roles"] = roles
    nodes: dict[str, Any] = {}
    for _ in range(draw(st.integers(min_value=0, max_value=3))):
        node = draw(layers)
        index = next(counter)
        name = draw(st.sampled_from([f"n{index}", f"db.{index}", f"N-{index}_x"]))
        node_role = draw(st.sampled_from([None, *sorted(roles)]))
        if node_role is not None:
            node["role"] = node_role
        if draw(st.booleans()):
            node["host"] = host(draw(st.integers(0, 3)), index)
        nodes[name] = node
    if nodes or write_empty:
        document["nodes"] = nodes
    return document


# --- inventories with Terraform sources ---------------------------------------------------------


def snapshot_of(outputs: dict[str, Any]) -> dict[str, Any]:
    return {"format": "nixherd-terraform/v1", "sources": {"infra": {"outputs": outputs}}}


@st.composite
def terraform_target(draw: st.DrawFn, index: int) -> Any:
    """One entry of an output used by targets_from: a host, or an object with host."""
    address = host(draw(st.integers(0, 3)), 40_000 + index)
    if draw(st.booleans()):
        return address
    entry: dict[str, Any] = {"host": address}
    if draw(st.booleans()):
        # Terraform 0.11 writes every number as a string; 0.12+ and OpenTofu as a number.
        port = draw(st.integers(min_value=1, max_value=65535))
        entry["port"] = draw(st.sampled_from([port, str(port)]))
    if draw(st.booleans()):
        entry["user"] = draw(st.sampled_from([*USERS, None]))  # null: not set
    if draw(st.booleans()):
        entry["tags"] = draw(lists_from(TAGS))
    if draw(st.booleans()):
        entry["vars"] = draw(tables)
    if draw(st.booleans()):
        entry["name"] = f"tf-{index}"
    return entry


@st.composite
def terraform_inventories(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, Any]]:
    """A valid inventory with a source `infra` used by roles' targets_from and vars markers, and
    the snapshot of its outputs."""
    document = draw(inventories())
    document["terraform"] = {"infra": {"file": "outputs.json"}}
    counter = iter(range(1_000_000))
    outputs: dict[str, Any] = {"value": draw(values), "table": {"a": draw(values)}}
    roles = document.setdefault("roles", {})
    if not roles:
        roles["tf"] = {}
    for role_name, role in roles.items():
        if draw(st.booleans()):
            continue
        entries = [draw(terraform_target(next(counter))) for _ in range(draw(st.integers(0, 3)))]
        output = f"hosts_{len(outputs)}"
        if draw(st.booleans()):
            outputs[output] = entries
        else:
            # A map: its keys are the node names.
            outputs[output] = {f"m{next(counter)}": entry for entry in entries}
        role["targets_from"] = f"infra.{output}"
        del role_name
    layers_found = [document.get("defaults"), *roles.values(), *document.get("nodes", {}).values()]
    for layer in layers_found:
        if layer is None or not draw(st.booleans()):
            continue
        ref = draw(st.sampled_from(["infra.value", "infra.table", "infra.table.a"]))
        key = draw(few_keys)
        vars_table = layer.setdefault("vars", {})
        if draw(st.booleans()):
            vars_table[key] = {"terraform": ref}
        else:
            vars_table[key] = {"deeper": [1, {"terraform": ref}]}
    return document, snapshot_of(outputs)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(cases=st.lists(terraform_inventories(), min_size=2, max_size=10))
def test_resolvers_agree_with_terraform_sources(
    cases: list[tuple[dict[str, Any], dict[str, Any]]],
) -> None:
    check_agreement([doc for doc, _ in cases], rtoml.dumps, [snap for _, snap in cases])


WRITERS: dict[str, Callable[[Any], str]] = {"rtoml": rtoml.dumps, "tomlkit": tomlkit.dumps}


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    documents=st.lists(inventories(), min_size=2, max_size=14),
    writer=st.sampled_from(sorted(WRITERS)),
)
def test_resolvers_agree(documents: list[dict[str, Any]], writer: str) -> None:
    check_agreement(documents, WRITERS[writer])


# --- chosen cases ---------------------------------------------------------------------------------

CASES = {
    "the documented example": """
[defaults]
user = "root"
port = 22
system = "x86_64-linux"

[roles.vps]
modules = ["hosts/nixos-vps"]
tags = ["vps"]
vars = { nginx = true }

[[roles.vps.targets]]
host = "103.85.224.63"
tags = ["batch-vps"]

[nodes.nixos-hk]
role = "vps"
host = "203.0.113.7"
tags = ["hk", "prod"]
modules = ["modules/hk-extra.nix"]
config = { networking.hostName = "nixos-hk" }
vars = { domains = ["a.example.com"] }
""",
    "deep merge: tables merge, anything else replaces": """
[defaults]
vars = { a = { b = 1, c = { d = [1, 2] } }, t = { x = 1 }, s = "s", e = {} }
config = { services.x = { enable = true, list = [1] } }

[roles.r]
vars = { a = { c = { d = [3], e = "e" } }, t = 5, s = { now = "table" }, e = { k = 1 } }
config = { services.x.list = [2, 3] }

[[roles.r.targets]]
host = "10.0.0.1"
vars = { a = { b = { deeper = true } }, e = {} }
config = { services = { x = { enable = false } } }
""",
    "lists: concatenated in layer order, first occurrence kept": """
[defaults]
tags = ["z", "a", "z"]
modules = ["m1"]
ssh_options = ["ConnectTimeout=5"]

[roles.r]
tags = ["a", "b"]
modules = ["m2", "m1"]
ssh_options = ["ConnectTimeout=5", "Compression=yes"]

[nodes.x]
role = "r"
tags = ["b", "c", "z"]
modules = ["m3", "m2"]
""",
    "names from hosts, explicit names, nodes without role": """
[roles."edge.eu"]
[[roles."edge.eu".targets]]
host = "fd00::1:2"
[[roles."edge.eu".targets]]
host = "a.b.c"
[[roles."edge.eu".targets]]
host = "10.0.0.9"
name = "custom"
port = 2200

[nodes.bare]
[nodes."with.dot"]
host = "10.0.0.9"
user = "deploy"
""",
}


@pytest.mark.parametrize("text", CASES.values(), ids=list(CASES))
def test_chosen_cases_agree(text: str) -> None:
    check_agreement([rtoml.loads(text)], rtoml.dumps)


TERRAFORM_CASE = """
[terraform.infra]
dir = "infra"

[defaults]
vars = { db = { terraform = "infra.db" }, list = [{ terraform = "infra.web.1" }] }

[roles.web]
targets_from = "infra.web"
[[roles.web.targets]]
host = "10.9.9.9"
vars = { port = { terraform = "infra.db.port" } }

[roles.app]
targets_from = ["infra.apps", "infra.edge"]
vars = { region = "eu" }

[nodes.admin]
host = "192.0.2.1"
vars = { db = { host = { terraform = "infra.db.host" } } }
"""
TERRAFORM_SNAPSHOT = snapshot_of(
    {
        "web": ["127.0.0.1", "10.0.0.2"],
        "db": {"host": "db.example", "port": "5432"},
        "apps": [
            {"host": "10.1.1.1", "port": "2201", "tags": ["x"], "user": None},
            {"host": "fd00::1", "port": 22, "name": "v6", "vars": {"region": "hk"}},
        ],
        "edge": {"e1": {"host": "10.2.2.2", "user": "deploy"}, "e2": "10.2.2.3"},
    }
)


def test_terraform_case_agrees() -> None:
    check_agreement([rtoml.loads(TERRAFORM_CASE)], rtoml.dumps, [TERRAFORM_SNAPSHOT])


def test_differences_is_strict() -> None:
    # The comparison itself must be able to fail, or the agreement tests prove nothing.
    assert differences({"a": True}, {"a": 1})
    assert differences({"a": [1, 2]}, {"a": [2, 1]})
    assert differences({"a": {"b": 1}}, {"a": {"b": 1, "c": 2}})
    assert differences({"a": None}, {"a": "null"})
    assert differences(0.5, 0.6)
    assert not differences(0.123456789, 0.123457)
    assert not differences(2.0, 2)
    assert not differences({"x": [{"y": "z"}]}, {"x": [{"y": "z"}]})
