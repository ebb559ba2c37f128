"""The peers' contracts that mkFleet's outputs must meet, restated as data, and a checker.

Colmena: the types of the deployment options a node may set and the hive's own keys, from
nix-community/colmena src/nix/hive/options.nix (`deploymentOptions`, `metaOptions`) and
src/nix/hive/eval.nix (`reservedNames`).

deploy-rs: the JSON schema of a flake's `deploy` output, serokell/deploy-rs interface.json (draft
2019-09), which deploy-rs's own `deployChecks` (flake.nix) runs with Python's jsonschema. Only the
keywords that schema uses are implemented below, with JSON Schema's meaning: `pattern` and
`patternProperties` are regular expressions matched anywhere in the name (not anchored).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

# --- Colmena ----------------------------------------------------------------------------------


def _null_or(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda value: value is None or check(value)


def _is_str(value: Any) -> bool:
    return isinstance(value, str)


def _is_unsigned(value: Any) -> bool:
    # types.ints.unsigned: an integer >= 0 (a boolean is not a Nix integer).
    return type(value) is int and value >= 0


def _list_of_str(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


# deployment.<option> -> its type, as options.nix declares them (only the ones mkFleet may set;
# every other deployment option is left at Colmena's default).
COLMENA_DEPLOYMENT_TYPES: Mapping[str, tuple[str, Callable[[Any], bool]]] = {
    "targetHost": ("null or string", _null_or(_is_str)),
    "targetPort": ("null or unsigned integer", _null_or(_is_unsigned)),
    "targetUser": ("null or string", _null_or(_is_str)),
    "tags": ("list of string", _list_of_str),
    "sshOptions": ("list of string", _list_of_str),
}
# metaOptions' names.
COLMENA_META_OPTIONS = frozenset(
    {
        "name",
        "description",
        "nixpkgs",
        "nodeNixpkgs",
        "nodeSpecialArgs",
        "machinesFile",
        "specialArgs",
        "allowApplyAll",
    }
)
# eval.nix: `reservedNames = [ "defaults" "network" "meta" ]`; `meta` is the hive's meta.
COLMENA_RESERVED = ("defaults", "network", "meta")


def colmena_problems(hive: Mapping[str, Any]) -> list[str]:
    """What Colmena would refuse in a hive given as data (node values: `deployment` only)."""
    problems = [
        f"meta.{key}: not a meta option" for key in hive["meta"] if key not in COLMENA_META_OPTIONS
    ]
    for name, node in hive.items():
        if name == "meta":
            continue
        if name in COLMENA_RESERVED:
            problems.append(f"{name}: a reserved name")
        for option, value in node["deployment"].items():
            declared = COLMENA_DEPLOYMENT_TYPES.get(option)
            if declared is None:
                problems.append(f"{name}.deployment.{option}: not a deployment option")
            elif not declared[1](value):
                problems.append(f"{name}.deployment.{option}: not a {declared[0]}: {value!r}")
    return problems


# --- deploy-rs --------------------------------------------------------------------------------

_NAME = "[A-z][A-z0-9_-]*"
_STRINGS = {"type": "array", "items": {"type": "string"}}
DEPLOY_RS_SCHEMA: Mapping[str, Any] = {
    "definitions": {
        "generic_settings": {
            "type": "object",
            "properties": {
                "sshUser": {"type": "string"},
                "user": {"type": "string"},
                "sshOpts": _STRINGS,
                "fastConnection": {"type": "boolean"},
                "autoRollback": {"type": "boolean"},
                "magicRollback": {"type": "boolean"},
                "confirmTimeout": {"type": "integer"},
                "activationTimeout": {"type": "integer"},
                "tempPath": {"type": "string"},
                "interactiveSudo": {"type": "boolean"},
                "sudoFile": {"type": "string"},
                "sudoSecret": {"type": "string"},
            },
        },
        "node_settings": {
            "type": "object",
            "properties": {
                "hostname": {"type": "string"},
                "profilesOrder": {**_STRINGS, "uniqueItems": True},
                "profiles": {
                    "type": "object",
                    "patternProperties": {
                        _NAME: {
                            "allOf": [
                                {"$ref": "#/definitions/generic_settings"},
                                {"$ref": "#/definitions/profile_settings"},
                            ]
                        }
                    },
                    "additionalProperties": False,
                },
            },
            "required": ["hostname"],
        },
        "profile_settings": {
            "type": "object",
            "properties": {"path": {"type": "string"}, "profilePath": {"type": "string"}},
            "required": ["path"],
        },
    },
    "type": "object",
    "allOf": [
        {"$ref": "#/definitions/generic_settings"},
        {
            "type": "object",
            "properties": {
                "nodes": {
                    "type": "object",
                    "patternProperties": {
                        _NAME: {
                            "allOf": [
                                {"$ref": "#/definitions/generic_settings"},
                                {"$ref": "#/definitions/node_settings"},
                            ]
                        }
                    },
                    "additionalProperties": False,
                }
            },
        },
    ],
}

_TYPES: Mapping[str, Callable[[Any], bool]] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "boolean": lambda v: isinstance(v, bool),
    "integer": lambda v: type(v) is int,
}


def schema_problems(value: Any, schema: Mapping[str, Any], path: str = "deploy") -> list[str]:
    """Every place `value` breaks `schema` (the keywords DEPLOY_RS_SCHEMA uses), as messages."""
    problems: list[str] = []
    ref = schema.get("$ref")
    if ref is not None:
        target: Any = DEPLOY_RS_SCHEMA
        for part in ref.removeprefix("#/").split("/"):
            target = target[part]
        problems += schema_problems(value, target, path)
    for sub in schema.get("allOf", ()):
        problems += schema_problems(value, sub, path)
    kind = schema.get("type")
    if kind is not None and not _TYPES[kind](value):
        return [*problems, f"{path}: not of type {kind}: {value!r}"]
    if isinstance(value, dict):
        for key in schema.get("required", ()):
            if key not in value:
                problems.append(f"{path}: {key} is required")
        properties = schema.get("properties", {})
        patterns = schema.get("patternProperties", {})
        for key, item in value.items():
            matched = False
            if key in properties:
                matched = True
                problems += schema_problems(item, properties[key], f"{path}.{key}")
            for pattern, sub in patterns.items():
                if re.search(pattern, key):
                    matched = True
                    problems += schema_problems(item, sub, f"{path}.{key}")
            if not matched and schema.get("additionalProperties") is False:
                problems.append(f"{path}: {key!r} is not allowed (no pattern matches it)")
    if isinstance(value, list):
        if "items" in schema:
            for index, item in enumerate(value):
                problems += schema_problems(item, schema["items"], f"{path}[{index}]")
        if schema.get("uniqueItems") and len(set(map(repr, value))) != len(value):
            problems.append(f"{path}: items are not unique")
    return problems
