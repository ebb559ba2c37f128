"""Hypothesis strategies for inventories: valid ones (as documents), and ways to break them."""

from __future__ import annotations

import copy
from typing import Any

import rtoml
from hypothesis import strategies as st

TAGS = ["prod", "eu", "us", "web", "db", "canary", "batch-1", "x.y"]
ROLE_NAMES = ["web", "db", "cache", "nixos-vps", "r1"]

# Strings that must never reach ssh's argv (in a host, a user or a name).
HOSTILE = [
    "-oProxyCommand=touch /tmp/pwned",
    "-x",
    "a;b",
    "a b",
    "a\nb",
    "a\tb",
    "$(id)",
    "`id`",
    "a|b",
    "a&&b",
    "a>b",
    "a\x00b",
    "\x1b[31m",
    "\u202eevil",
    "é",
    "",
    " ",
    "x" * 300,
]

scalars = (
    st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.booleans()
    | st.text(
        st.characters(exclude_characters="\x00", categories=("L", "M", "N", "P", "S", "Zs", "Cc")),
        max_size=8,
    )
    | st.floats(allow_nan=False, allow_infinity=False)
)
keys = st.text("abcxyz._- ", min_size=1, max_size=4)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=3),
    max_leaves=8,
)
tables = st.dictionaries(keys, values, max_size=4)
tag_lists = st.lists(st.sampled_from(TAGS), max_size=4)
modules = st.lists(st.sampled_from(["a.nix", "hosts/b", "c/default.nix"]), max_size=3)


@st.composite
def inventories(draw: st.DrawFn) -> dict[str, Any]:
    """A valid inventory document: defaults, roles with targets, explicit nodes."""
    hosts = iter(f"10.{i // 65536}.{i // 256 % 256}.{i % 256}" for i in range(1, 10**6))
    doc: dict[str, Any] = {}
    defaults: dict[str, Any] = {}
    if draw(st.booleans()):
        defaults["user"] = draw(st.sampled_from(["root", "deploy", "_svc", False]))
    if draw(st.booleans()):
        defaults["port"] = draw(st.integers(1, 65535) | st.just(False))
    if draw(st.booleans()):
        defaults["tags"] = draw(tag_lists)
    if draw(st.booleans()):
        defaults["vars"] = draw(tables)
    if defaults:
        doc["defaults"] = defaults
    roles: dict[str, Any] = {}
    for name in draw(st.lists(st.sampled_from(ROLE_NAMES), unique=True, max_size=3)):
        role: dict[str, Any] = {"tags": draw(tag_lists), "modules": draw(modules)}
        if draw(st.booleans()):
            role["vars"] = draw(tables)
        if draw(st.booleans()):
            role["config"] = draw(tables)
        targets = []
        for _ in range(draw(st.integers(0, 3))):
            target: dict[str, Any] = {"host": next(hosts), "tags": draw(tag_lists)}
            if draw(st.booleans()):
                target["vars"] = draw(tables)
            targets.append(target)
        if targets:
            role["targets"] = targets
        roles[name] = role
    if roles:
        doc["roles"] = roles
    nodes: dict[str, Any] = {}
    for index in range(draw(st.integers(0, 4))):
        node: dict[str, Any] = {"host": next(hosts), "tags": draw(tag_lists)}
        if draw(st.booleans()) and roles:
            node["role"] = draw(st.sampled_from(sorted(roles)))
        if draw(st.booleans()):
            node["vars"] = draw(tables)
        if draw(st.booleans()):
            node["port"] = draw(st.integers(1, 65535))
        nodes[f"node{index}"] = node
    if nodes:
        doc["nodes"] = nodes
    return doc


def dump(doc: dict[str, Any]) -> str:
    text: str = rtoml.dumps(doc)
    return text


@st.composite
def shuffled(draw: st.DrawFn, doc: Any) -> Any:
    """The same document with the keys of every table in another order (lists keep theirs)."""
    if isinstance(doc, dict):
        items = draw(st.permutations(list(doc.items())))
        return {key: draw(shuffled(value)) for key, value in items}
    if isinstance(doc, list):
        return [draw(shuffled(value)) for value in doc]
    return doc


def _layers(doc: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Every layer table of a document, with its kind."""
    found: list[tuple[str, dict[str, Any]]] = [("defaults", doc.setdefault("defaults", {}))]
    for role in doc.get("roles", {}).values():
        found.append(("role", role))
        found += [("target", target) for target in role.get("targets", [])]
    found += [("node", node) for node in doc.get("nodes", {}).values()]
    return found


WRONG_TYPES: dict[str, list[Any]] = {
    "user": [1, True, ["root"], {"a": 1}],
    "port": ["22", True, 22.0, [22], 0, 65536, -1, 2**40],
    "system": [1, "x86_64", "", "X86-linux"],
    "tags": ["prod", 1, {"a": "b"}, [1], [["x"]]],
    "modules": ["a.nix", [1], [""], ["a\nb"]],
    "vars": [[1], "x", 1],
    "config": [[1], "x", True],
    "ssh_options": ["A=b", ["nokey"], ["A B=c"], ["StrictHostKeyChecking=no"], [1]],
}


@st.composite
def broken(draw: st.DrawFn) -> str:
    """The text of an inventory with at least one problem that validation must report."""
    doc = copy.deepcopy(draw(inventories()))
    kind = draw(
        st.sampled_from(
            [
                "wrong type",
                "unknown key",
                "missing role",
                "duplicate target",
                "target named like a node",
                "same host and port",
                "hostile host",
                "hostile user",
                "hostile tag",
                "hostile node name",
                "hostile role name",
                "misplaced field",
                "huge integer",
                "junk bytes",
            ]
        )
    )
    layers = _layers(doc)
    nodes = doc.setdefault("nodes", {})
    if kind == "wrong type":
        _, layer = draw(st.sampled_from(layers))
        field = draw(st.sampled_from(sorted(WRONG_TYPES)))
        layer[field] = draw(st.sampled_from(WRONG_TYPES[field]))
    elif kind == "unknown key":
        _, layer = draw(st.sampled_from(layers))
        layer[draw(st.sampled_from(["prot", "hosts", "Tags", "x", "name ", "roles"]))] = 1
    elif kind == "missing role":
        nodes["orphan"] = {"role": "no-such-role", "host": "192.0.2.1"}
    elif kind == "duplicate target":
        role = doc.setdefault("roles", {}).setdefault("web", {})
        targets = role.setdefault("targets", [])
        targets += [{"host": "192.0.2.9"}, {"host": "192.0.2.9", "port": 2222}]
    elif kind == "target named like a node":
        doc.setdefault("roles", {}).setdefault("web", {}).setdefault("targets", []).append(
            {"host": "192.0.2.7"}
        )
        nodes["web-192-0-2-7"] = {"host": "192.0.2.8"}
    elif kind == "same host and port":
        nodes["twin-a"] = {"host": "192.0.2.5", "port": 2022}
        nodes["twin-b"] = {"host": "192.0.2.5", "port": 2022}
    elif kind == "hostile host":
        nodes["victim"] = {"host": draw(st.sampled_from(HOSTILE))}
    elif kind == "hostile user":
        _, layer = draw(st.sampled_from(layers))
        layer["user"] = draw(st.sampled_from(HOSTILE))
    elif kind == "hostile tag":
        _, layer = draw(st.sampled_from(layers))
        layer["tags"] = [*layer.get("tags", []), draw(st.sampled_from(HOSTILE))]
    elif kind == "hostile node name":
        nodes[draw(st.sampled_from(HOSTILE))] = {"host": "192.0.2.3"}
    elif kind == "hostile role name":
        doc.setdefault("roles", {})[draw(st.sampled_from(HOSTILE))] = {}
    elif kind == "misplaced field":
        where, layer = draw(st.sampled_from(layers))
        misplaced = {
            "defaults": ["host", "role", "name", "targets"],
            "role": ["host", "role", "name", "ssh_config"],
            "target": ["role", "targets", "ssh_config"],
            "node": ["name", "targets", "ssh_config"],
        }[where]
        layer[draw(st.sampled_from(misplaced))] = "x"
    text = dump(doc)
    if kind == "huge integer":
        text += (
            "\n[nodes.huge.vars]\nn = " + str(draw(st.sampled_from([2**63, -(2**63) - 1]))) + "\n"
        )
    if kind == "junk bytes":
        cut = draw(st.integers(0, len(text)))
        junk = draw(st.sampled_from(["\udcff", "\udcc3(", "\udce2\udc82"]))
        text = text[:cut] + junk + text[cut:]
    return text


def encoded(text: str) -> bytes:
    """Text back to bytes, lone surrogates standing for raw (invalid UTF-8) bytes."""
    return text.encode("utf-8", "surrogateescape")
