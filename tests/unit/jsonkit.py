"""Reading nixherd's JSON documents in tests: each one is checked against the JSON Schema
checked in at docs/schema/ (the one users get), then its payload returned."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import jsonschema

SCHEMA_FILE = Path(__file__).resolve().parents[2] / "docs" / "schema" / "nixherd-v1.json"


@functools.cache
def validator() -> Any:
    schema = json.loads(SCHEMA_FILE.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def document(text: str, command: str) -> Any:
    """The payload (`data`) of the JSON document `text`, which must be the whole of it, valid
    against the schema, and written by `command`."""
    parsed = json.loads(text)
    worst = jsonschema.exceptions.best_match(validator().iter_errors(parsed))
    assert worst is None, f"{list(worst.absolute_path)}: {worst.message}"
    assert parsed["schema"] == "nixherd/v1"
    assert parsed["command"] == command, parsed["command"]
    return parsed["data"]
