"""What `add`, `remove` and `set` share: reading a VALUE from the command line, and running one
edit of the inventory (validated before it is written; nothing written on a problem)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nixherd.inventory import Inventory
    from nixherd.inventory.edit import Edit

# Fields whose value is always a string: `set web-1 host 10.0.0.3` is never read as TOML.
STRING_FIELDS = frozenset({"host", "user", "system", "host_key_policy", "name", "role"})
LIST_FIELDS = frozenset({"tags", "modules", "ssh_options"})


def parse_value(key: str, text: str) -> Any:
    """VALUE as the key's type: `false` for user and port (ssh decides), a string for the string
    fields, an integer for `port`, a list for tags/modules/ssh_options (a TOML array, or
    comma-separated words), and elsewhere (vars, config, checks, ...) a TOML value when it is one
    (`true`, `3`, `[1, 2]`, `{ a = 1 }`, `"quoted"`), else the text as a string."""
    from nixherd.errors import UsageError

    top = key.split(".", 1)[0]
    if key in ("user", "port") and text == "false":
        return False  # ssh decides (docs/inventory.md)
    if top in STRING_FIELDS and "." not in key:
        return text
    if top == "port" and "." not in key:
        try:
            return int(text, 10)
        except ValueError:
            raise UsageError(f"{key}: must be an integer, got {text!r}") from None
    if top in LIST_FIELDS and "." not in key:
        if text.lstrip().startswith("["):
            value = _toml_value(text)
            if not isinstance(value, list):
                raise UsageError(f"{key}: not a TOML array: {text!r}")
            return value
        return [word.strip() for word in text.split(",") if word.strip()]
    value = _toml_value(text)
    return text if value is _NOT_TOML else value


_NOT_TOML = object()


def _toml_value(text: str) -> Any:
    import tomlkit

    try:
        return tomlkit.parse("v = " + text + "\n").unwrap()["v"]
    except Exception:  # not TOML: the caller decides
        return _NOT_TOML


def key_value(text: str) -> tuple[str, Any]:
    """`K=V` of --var: V as parse_value reads a var."""
    from nixherd.errors import UsageError

    key, sep, value = text.partition("=")
    if not sep or not key:
        raise UsageError(f"--var {text!r}: expected KEY=VALUE")
    return key, parse_value("vars." + key, value)


def nested(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """Dotted keys (`a.b=1`) as nested tables."""
    from nixherd.errors import UsageError

    result: dict[str, Any] = {}
    for key, value in pairs:
        table = result
        parts = key.split(".")
        for part in parts[:-1]:
            inner = table.setdefault(part, {})
            if not isinstance(inner, dict):
                raise UsageError(f"--var {key}: {part} is already a value")
            table = inner
        table[parts[-1]] = value
    return result


def apply_edit(args: argparse.Namespace, make: Callable[[str, Inventory], Edit]) -> int:
    """Read the inventory, make the edit, validate and write it; print what was done."""
    from nixherd.cli import inventory_path
    from nixherd.inventory import edit

    path = inventory_path(args)
    original, text, inventory = edit.read(path)
    result = make(text, inventory)
    if getattr(args, "dry_run", False):
        from nixherd.inventory import loads

        loads(result.text, file=path)
        sys.stdout.write(result.text)
        return 0
    edit.commit(path, original, result)
    sys.stderr.write(f"{path}: {result.summary}\n")
    for note in result.notes:
        sys.stderr.write(f"{path}: note: {note}\n")
    return 0


def add_dry_run(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="print the edited inventory (validated) instead of writing it",
    )
