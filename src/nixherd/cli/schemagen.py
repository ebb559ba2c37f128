"""The JSON Schema of nixherd's JSON documents, derived from the TypedDicts that declare them.

`scripts/gen-json-schema.py` writes it to docs/schema/nixherd-v1.json; a test checks that the
file checked in is what this module derives now, so the schema cannot drift from the code.
Only the typing forms the contract uses are understood (anything else is an error here, not a
silently permissive schema): str, int, float, bool, None, Any, Literal, unions, list, dict with
str keys, nested TypedDicts (NotRequired keys), and Annotated[str, SomeEnum] (the enum's values).
"""

from __future__ import annotations

import enum
import inspect
import json
import types
import typing
from typing import Any

from nixherd.cli import jsonout, payloads

DRAFT = "https://json-schema.org/draft/2020-12/schema"
FILE = f"{jsonout.SCHEMA.replace('/', '-')}.json"  # nixherd-v1.json

_SCALARS: dict[object, str] = {
    str: "string",
    bool: "boolean",
    int: "integer",
    float: "number",
    type(None): "null",
}


def schema() -> dict[str, Any]:
    """The schema: one variant of the envelope per command, its `data` typed."""
    defs: dict[str, Any] = {}
    variants = []
    for command, payload in payloads.payloads().items():
        variants.append(
            {
                "type": "object",
                "properties": {
                    "schema": {"const": jsonout.SCHEMA},
                    "command": {"const": command},
                    "data": _type(payload, defs),
                },
                "required": ["schema", "command", "data"],
                "additionalProperties": False,
            }
        )
    return {
        "$schema": DRAFT,
        "title": f"nixherd JSON documents ({jsonout.SCHEMA})",
        "description": _doc(payloads.Envelope)
        + " Generated from src/nixherd/cli/payloads.py and src/nixherd/fleet/report.py by "
        "scripts/gen-json-schema.py; do not edit.",
        "oneOf": variants,
        "$defs": dict(sorted(defs.items())),
    }


def text() -> str:
    """The schema as the file holds it (stable: sorted definitions, two-space indent)."""
    return json.dumps(schema(), indent=2) + "\n"


def _doc(cls: type) -> str:
    return " ".join((inspect.getdoc(cls) or "").split())


def _type(hint: Any, defs: dict[str, Any]) -> dict[str, Any]:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint in _SCALARS:
        return {"type": _SCALARS[hint]}
    if hint is Any:
        return {}
    if typing.is_typeddict(hint):
        return _typeddict(hint, defs)
    if origin is typing.Annotated:
        inner = _type(args[0], defs)
        for extra in args[1:]:
            if isinstance(extra, type) and issubclass(extra, enum.Enum):
                inner["enum"] = [member.value for member in extra]
            else:
                raise TypeError(f"unsupported Annotated metadata: {extra!r}")
        return inner
    if origin is typing.Literal:
        return {"enum": list(args)}
    if origin in (typing.Union, types.UnionType):
        return {"anyOf": [_type(arg, defs) for arg in args]}
    if origin is list:
        return {"type": "array", "items": _type(args[0], defs)}
    if origin is dict:
        if args[0] is not str:
            raise TypeError(f"JSON objects have string keys, not {args[0]!r}")
        values = _type(args[1], defs)
        return {"type": "object", "additionalProperties": values} if values else {"type": "object"}
    raise TypeError(f"no JSON Schema for {hint!r}")


def _typeddict(cls: Any, defs: dict[str, Any]) -> dict[str, Any]:
    name = cls.__name__
    ref = {"$ref": f"#/$defs/{name}"}
    if name in defs:
        return ref
    defs[name] = {}  # reserved: a recursive reference finds it
    hints = typing.get_type_hints(cls, include_extras=True)
    properties = {}
    required = []
    for key, hint in hints.items():
        # Read from the hint, not only __required_keys__: under `from __future__ import
        # annotations`, Python 3.11's TypedDict cannot see a NotRequired in a string annotation.
        wrapper = typing.get_origin(hint)
        if wrapper in (typing.NotRequired, typing.Required):
            hint = typing.get_args(hint)[0]
        if wrapper is typing.Required or (
            wrapper is not typing.NotRequired and key in cls.__required_keys__
        ):
            required.append(key)
        properties[key] = _type(hint, defs)
    definition: dict[str, Any] = {"type": "object"}
    if cls.__doc__:
        definition["description"] = _doc(cls)
    definition["properties"] = properties
    definition["required"] = required
    # Strict: a key the code writes but the contract does not declare fails the schema tests.
    definition["additionalProperties"] = False
    defs[name] = definition
    return ref
