"""The schema table: its combinators, the named-table merge kind end to end, and the docs
staying in step with it."""

from __future__ import annotations

from pathlib import Path

from nixherd.inventory import Origin, loads
from nixherd.inventory.fields import FIELDS, NODE_FIELDS, reference
from nixherd.inventory.validate import (
    integer,
    list_of,
    name_check,
    named_table,
    record,
    shown,
    string,
)

DOC = Path(__file__).resolve().parents[3] / "docs" / "inventory.md"


def test_every_field_is_documented() -> None:
    doc = DOC.read_text()
    for f in FIELDS:
        assert f"`{f.name}`" in doc, f.name


def test_reference_lists_every_field_with_its_merge_rule() -> None:
    table = reference()
    for f in FIELDS:
        assert f"| `{f.name}` |" in table
        assert f.merge.value in table
    assert "| `host` |" in table and "the node's name" in table


def test_record_and_named_table() -> None:
    absolute = string(lambda path: path.startswith("/"), "an absolute path", 99)
    entry = record({"dest": absolute}, ["dest"])
    check = named_table(entry)
    assert check({"acme": {"dest": "/run/keys/acme"}}) is None
    assert check({"acme": {}}) == [(".acme", "dest is required")]
    assert check({"acme": {"dest": "/x", "mode": 1}}) == [(".acme.mode", "unknown field")]
    assert check({"a b": {"dest": "/x"}}) == [
        (
            '."a b"',
            "must be an entry name matching [A-Za-z0-9][A-Za-z0-9_.-]* (at most 63 characters), "
            'got "a b"',
        )
    ]
    assert check([1]) == [("", "must be a table, got array")]


def test_combinators_report_paths_relative_to_the_value() -> None:
    ports = list_of(integer(1, 10))
    assert ports([1, 2]) is None
    assert ports([1, 11, "x"]) == [
        ("[1]", "must be 1..10, got 11"),
        ("[2]", 'must be an integer, got string "x"'),
    ]
    assert name_check("a tag")("ok") is None


def test_shown_values() -> None:
    assert shown("a\nb") == '"a\\nb"'
    assert shown(True) == "true"
    assert shown(2**200) == "<201-bit integer>"
    assert shown("x" * 100) == '"' + "x" * 48 + '..."'
    assert shown([1]) == "array"


def test_named_tables_merge_by_name_through_the_layers() -> None:
    text = """
[defaults.keys.token]
env = "TOKEN"

[roles.web.keys.acme]
file = "secrets/acme"
mode = "0440"

[nodes.w1]
role = "web"
[nodes.w1.keys.acme]
command = ["pass", "show", "acme"]
"""
    node = loads(text).nodes["w1"]
    # The node's acme replaces the role's whole: its mode does not survive.
    assert node.to_data(deployer=True)["keys"] == {
        "token": {"env": "TOKEN"},
        "acme": {"command": ["pass", "show", "acme"]},
    }
    assert node.keys["acme"].mode == 0o400 and node.keys["acme"].source == ("pass", "show", "acme")
    origins = node.origins(deployer=True)
    assert origins["keys"] == {"token": Origin.DEFAULTS, "acme": Origin.NODE}
    assert "keys" not in node.to_data()  # deployer-side: never in the Nix data


def test_node_fields_come_first_in_the_data_shape() -> None:
    nix = [f.name for f in NODE_FIELDS if f.nix]
    assert nix == [
        "host",
        "user",
        "port",
        "system",
        "tags",
        "modules",
        "vars",
        "config",
        "ssh_options",
        "host_key_policy",
    ]
