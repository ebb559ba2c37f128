"""The inventory's field table, declared once: every field, its type, merge rule, where it may
appear, its built-in default and its validator. Validation, error messages, the resolver's merge
and the field reference (`reference()`) all read it.

Adding a per-layer field is one `Field(...)` entry below (plus the attribute on `model.Node`); a
validator is any `Check`, usually built from the combinators of `validate.py`. The entries of the
named tables (keys, data, checks) are typed values declared in `entries.py`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum, Flag
from typing import Any, Final

from nixherd.inventory.cachecfg import BUILDERS_FIELD, CACHE_FIELD
from nixherd.inventory.validate import (
    HOSTNAME,
    MAX_HOST,
    MAX_NAME,
    MAX_USER,
    SYSTEM,
    SYSTEM_PATTERN,
    USER,
    USER_PATTERN,
    Check,
    Issue,
    any_table,
    choice,
    got,
    host_ok,
    join,
    list_of,
    list_of_names,
    name_check,
    named_table,
    node_name_check,
    one,
    shown,
    string,
    unknown_field_message,
)
from nixherd.sshrules import FORBIDDEN_SSH_OPTIONS, HOST_KEY_POLICIES

_SSH_OPTION = re.compile(r"([A-Za-z]+)=[^\s\x00]*").fullmatch


class Where(Flag):
    """The tables of an inventory a field may appear in."""

    DEFAULTS = 1
    ROLE = 2
    TARGET = 4
    NODE = 8


NOWHERE: Final = Where(0)
EVERY_LAYER: Final = Where.DEFAULTS | Where.ROLE | Where.TARGET | Where.NODE

WHERE_NAMES: Final[dict[Where, str]] = {
    Where.DEFAULTS: "[defaults]",
    Where.ROLE: "[roles.<role>]",
    Where.TARGET: "[[roles.<role>.targets]]",
    Where.NODE: "[nodes.<name>]",
}


class Merge(Enum):
    """How the value of a later layer combines with the earlier ones."""

    REPLACE = "later wins"
    UNION = "concatenated, duplicates dropped"
    DEEP = "deep-merged"
    NAMED = "by name: a later entry replaces an earlier one of the same name"
    NONE = "not merged (describes the table it is in)"


class NodeName:
    """The built-in default of `host`: the node's own name."""

    def __repr__(self) -> str:
        return "the node's name"


NODE_NAME: Final = NodeName()


@dataclass(frozen=True, slots=True)
class Field:
    """One key of the inventory: what it holds, where it may appear, how layers combine it."""

    name: str
    type: str
    check: Check
    merge: Merge
    where: Where
    doc: str
    default: Any = None
    required: Where = NOWHERE  # the tables where it must be given
    # How `reference()` shows a default that is not a value (None: ssh decides).
    default_doc: str | None = None
    # Part of the resolved node Nix sees (`to_data()`, `nixherd.nodes`); False for the
    # deployer-side tables (keys, data) that are delivered without a rebuild.
    nix: bool = True

    @property
    def is_node_field(self) -> bool:
        """A field that every resolved node carries (as opposed to one describing its table)."""
        return self.merge is not Merge.NONE


def describe(where: Where) -> str:
    return ", ".join(name for flag, name in WHERE_NAMES.items() if flag in where)


# --- validators of the node fields -------------------------------------------------------------


def _host(value: Any) -> list[Issue] | None:
    if type(value) is str and len(value) <= MAX_HOST:
        # A hostname or IPv4 address, the usual case, without a further call.
        if ":" not in value and HOSTNAME(value) is not None:
            return None
        if host_ok(value):
            return None
    if not isinstance(value, str):
        return one(f"must be a string, {got(value)}")
    if len(value) > MAX_HOST:
        return one(f"must be at most {MAX_HOST} characters, got {len(value)}")
    return one(f"must be a hostname, an IPv4 or an IPv6 address, got {shown(value)}")


def _port(value: Any) -> list[Issue] | None:
    if (type(value) is int and 1 <= value <= 65535) or value is False:
        return None
    if type(value) is not int:
        return one(f"must be an integer or false, {got(value)}")
    return one(f"must be 1..65535, got {shown(value)}")


_LOGIN = string(USER, f"a login name matching {USER_PATTERN}", MAX_USER, what="a string or false")


def _user(value: Any) -> list[Issue] | None:
    return None if value is False else _LOGIN(value)


def _module(value: Any) -> list[Issue] | None:
    if type(value) is str and value and "\x00" not in value and "\n" not in value:
        return None
    if not isinstance(value, str):
        return one(f"must be a string, {got(value)}")
    return one(f"must be a non-empty path without NUL or newline, got {shown(value)}")


def _ssh_option(value: Any) -> list[Issue] | None:
    if type(value) is not str:
        return one(f"must be a string, {got(value)}")
    match = _SSH_OPTION(value)
    if match is None:
        return one(f"must be Key=Value (Key letters only, no whitespace), got {shown(value)}")
    reason = FORBIDDEN_SSH_OPTIONS.get(match.group(1).lower())
    if reason is not None:
        return one(f"{match.group(1)} may not be set: {reason}")
    return None


def _ssh_config(value: Any) -> list[Issue] | None:
    if type(value) is str and value and not re.search(r"[\s\x00]", value):
        return None
    if not isinstance(value, str):
        return one(f"must be a string, {got(value)}")
    # nix splits NIX_SSHOPTS on whitespace: such a path could not be handed on.
    return one(f"must be a path without whitespace, got {shown(value)}")


def _targets(value: Any) -> list[Issue] | None:
    # The entries themselves are checked as TARGET tables by the resolver, which needs them anyway.
    if type(value) is list and all(type(entry) is dict for entry in value):
        return None
    return one(f"must be an array of tables ([[roles.<role>.targets]]), {got(value)}")


def _targets_from(value: Any) -> list[Issue] | None:
    # Imported here: only an inventory with Terraform sources loads that module.
    from nixherd.inventory.terraform_ref import ref_check

    return ref_check(value)


NODE_LAYERS: Final = Where.TARGET | Where.NODE


def _entry_issues(field_name: str) -> Check:
    """The validator of one entry of `field_name` (keys, data, checks). It lives with the entries
    (parse_entries.ISSUES), imported only when an inventory has such entries: `nixherd nodes` on
    a fleet without them does not pay for loading the entry types."""

    def issues(value: Any) -> list[Issue] | None:
        from nixherd.inventory.parse_entries import ISSUES

        return ISSUES[field_name](value)

    return issues


FIELDS: tuple[Field, ...] = (
    Field(
        "host",
        "string (hostname, IPv4 or IPv6 address)",
        _host,
        Merge.REPLACE,
        NODE_LAYERS,
        "where ssh connects to",
        default=NODE_NAME,
        required=Where.TARGET,
    ),
    Field(
        "user",
        "string (login name), or false",
        _user,
        Merge.REPLACE,
        EVERY_LAYER,
        "the ssh login; a user other than root runs activation through sudo. false: none on "
        "ssh's command line, so the ssh config's `User` (else your login name) decides",
        default="root",
    ),
    Field(
        "port",
        "integer 1..65535, or false",
        _port,
        Merge.REPLACE,
        EVERY_LAYER,
        "the ssh port; unset (or false): none on ssh's command line, so the ssh config's `Port` "
        "(else 22) decides",
        default=None,
        default_doc="unset: ssh decides",
    ),
    Field(
        "system",
        "string like x86_64-linux",
        string(SYSTEM, f"a system like x86_64-linux ({SYSTEM_PATTERN})", MAX_NAME),
        Merge.REPLACE,
        EVERY_LAYER,
        "the platform the node's system is built for",
        default="x86_64-linux",
    ),
    Field(
        "tags",
        "array of names",
        list_of_names("a tag"),
        Merge.UNION,
        EVERY_LAYER,
        "labels for selection (`--on @tag`)",
        default=(),
    ),
    Field(
        "modules",
        "array of paths (relative to the flake root)",
        list_of(_module),
        Merge.UNION,
        EVERY_LAYER,
        "NixOS modules imported by the node's system",
        default=(),
    ),
    Field(
        "vars",
        "table (any TOML values)",
        any_table,
        Merge.DEEP,
        EVERY_LAYER,
        "free-form variables, given to modules as `node.vars`",
        default={},
    ),
    Field(
        "config",
        "table (NixOS option values)",
        any_table,
        Merge.DEEP,
        EVERY_LAYER,
        "inline NixOS option values (an attribute-set module)",
        default={},
    ),
    Field(
        "ssh_options",
        "array of Key=Value strings",
        list_of(_ssh_option),
        Merge.UNION,
        EVERY_LAYER,
        "extra `-o Key=Value` options for every ssh call to the node",
        default=(),
    ),
    Field(
        "host_key_policy",
        'string: "strict" or "accept-new"',
        choice(*HOST_KEY_POLICIES),
        Merge.REPLACE,
        EVERY_LAYER,
        "strict: the node's host key must already be known; accept-new: an unknown host's key is "
        "recorded on first contact (a changed key is still refused)",
        default="strict",
    ),
    Field(
        "keys",
        "table of named keys (`keys.<name>`: file|command|env, dest, user, group, mode, upload)",
        named_table(_entry_issues("keys")),
        Merge.NAMED,
        EVERY_LAYER,
        "secrets uploaded over ssh without a rebuild, never via a Nix store (not in the Nix data)",
        default={},
        nix=False,
    ),
    Field(
        "data",
        "table of named files (`data.<name>`: path, format, source|template, mode, owner, reload)",
        named_table(_entry_issues("data")),
        Merge.NAMED,
        EVERY_LAYER,
        "runtime data files rendered from vars and pushed without a rebuild (not in the Nix data)",
        default={},
        nix=False,
    ),
    Field(
        "checks",
        "table of named health checks (`checks.<name>`: command|http|tcp|unit, status, body, "
        "timeout, retries, interval)",
        named_table(_entry_issues("checks")),
        Merge.NAMED,
        EVERY_LAYER,
        "health checks run after activation, before the confirmation (not in the Nix data)",
        default={},
        nix=False,
    ),
    Field("cache", merge=Merge.DEEP, where=EVERY_LAYER, default={}, nix=False, **CACHE_FIELD),
    Field(
        "ssh_config",
        "string (path relative to the inventory's directory)",
        _ssh_config,
        Merge.NONE,
        Where.DEFAULTS,
        "an ssh config file used by every ssh and nix copy call",
    ),
    Field("builders", merge=Merge.NONE, where=Where.DEFAULTS, **BUILDERS_FIELD),
    Field(
        "targets",
        "array of tables",
        _targets,
        Merge.NONE,
        Where.ROLE,
        "fan-out: each entry becomes a node playing the role",
    ),
    Field(
        "targets_from",
        "string NAME.OUTPUT, or an array of them",
        _targets_from,
        Merge.NONE,
        Where.ROLE,
        "fan-out from a Terraform/OpenTofu output of source [terraform.NAME] (docs/terraform.md)",
    ),
    Field(
        "name",
        "string (node name)",
        node_name_check(),
        Merge.NONE,
        Where.TARGET,
        "the node's name (default: <role>-<host> with . and : turned into -)",
    ),
    Field(
        "role",
        "string (role name)",
        name_check("a role name"),
        Merge.NONE,
        Where.NODE,
        "the role the node plays (optional: a node without a role has only its own modules)",
    ),
)

BY_NAME: Final[dict[str, Field]] = {f.name: f for f in FIELDS}
NODE_FIELDS: Final[tuple[Field, ...]] = tuple(f for f in FIELDS if f.is_node_field)
NIX_FIELDS: Final[tuple[Field, ...]] = tuple(f for f in NODE_FIELDS if f.nix)
# `terraform`: the sources of Terraform/OpenTofu outputs (inventory/terraform.py).
TOP_LEVEL: Final = ("defaults", "roles", "nodes", "terraform")
# The built-in default of every node field but `host` (the node's name, filled in per node).
BUILTIN: Final[dict[str, Any]] = {
    f.name: f.default for f in NODE_FIELDS if f.default is not NODE_NAME
}

# Per table kind, the fields allowed there.
ALLOWED: Final[dict[Where, dict[str, Field]]] = {
    where: {f.name: f for f in FIELDS if where in f.where} for where in WHERE_NAMES
}


check_node_name: Final = node_name_check()
check_role_name: Final = name_check("a role name")


_NO_PROBLEMS: Final[list[tuple[str, str]]] = []  # shared, never mutated: returned when valid


@dataclass(frozen=True, slots=True)
class TableSchema:
    """The keys one kind of table may hold, with their validators (built once from FIELDS)."""

    where: Where
    checks: Mapping[str, Check]
    required: tuple[str, ...]

    @classmethod
    def of(cls, where: Where) -> TableSchema:
        allowed = ALLOWED[where]
        return cls(
            where,
            {name: f.check for name, f in allowed.items()},
            tuple(name for name, f in allowed.items() if where in f.required),
        )

    def check(self, table: Mapping[str, Any], path: str) -> list[tuple[str, str]]:
        """Every problem of one table at key path `path`, as (key path, message); [] when valid."""
        checks = self.checks
        # The fast path (every table of a valid inventory): one lookup and one call per key.
        for key, value in table.items():
            check = checks.get(key)
            if check is None or check(value) is not None:
                break
        else:
            for key in self.required:
                if key not in table:
                    break
            else:
                return _NO_PROBLEMS
        problems: list[tuple[str, str]] = []
        for key, value in table.items():
            check = checks.get(key)
            if check is not None:
                issues = check(value)
                if issues is None:
                    continue
                base = join(path, key)
                problems.extend((base + suffix, message) for suffix, message in issues)
                continue
            other = BY_NAME.get(key)
            if other is None:
                message = unknown_field_message(key, checks)
            else:
                where = WHERE_NAMES[self.where]
                message = f"not allowed in {where} (only in {describe(other.where)})"
            problems.append((join(path, key), message))
        for key in self.required:
            if key not in table:
                problems.append((path, f"{key} is required"))
        return problems

    def valid_part(self, table: Mapping[str, Any]) -> dict[str, Any]:
        """The keys of `table` that are allowed here and valid."""
        checks = self.checks
        return {
            key: value
            for key, value in table.items()
            if key in checks and checks[key](value) is None
        }


# Looked up once: hashing a Flag member runs Python code, too slow for a per-node lookup.
DEFAULTS_TABLE: Final = TableSchema.of(Where.DEFAULTS)
ROLE_TABLE: Final = TableSchema.of(Where.ROLE)
TARGET_TABLE: Final = TableSchema.of(Where.TARGET)
NODE_TABLE: Final = TableSchema.of(Where.NODE)


def reference() -> str:
    """The field reference as a Markdown table (for docs; generated from the schema)."""
    lines = [
        "| field | type | merge | allowed in | built-in default |",
        "|---|---|---|---|---|",
    ]
    for f in FIELDS:
        default = "" if f.default is None else f"`{json.dumps(f.default, default=repr)}`"
        if f.default is NODE_NAME:
            default = "the node's name"
        if f.default_doc is not None:
            default = f.default_doc
        lines.append(
            f"| `{f.name}` | {f.type} | {f.merge.value} | {describe(f.where)} | {default} |"
        )
    return "\n".join(lines)
