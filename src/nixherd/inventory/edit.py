"""Editing an inventory file in place: add, remove and set nodes, keeping every other line as it
was (comments, order, blank lines), and writing nothing unless the result is a valid inventory.

    add_node(text, inventory, spec)          -> Edit   a fan-out target or an explicit node
    remove_node(text, inventory, name)       -> Edit   an explicit node or a fan-out target
    set_value(text, inventory, name, key, v) -> Edit   one (dotted) key of one node
    commit(path, original, edit)                       validate (the normal validation) + write

A TOML library alone cannot do this: tomlkit keeps comments, but it files the comment lines above
a table header under the table before it, so deleting a table takes the next table's comment with
it, and a key added to a table lands after that trailing comment. So tables are cut and keys added
as lines of text, at places found by a small scanner of table headers (`tomltext.py`); tomlkit only
renders values and edits inside a line (a value replaced, an inline array's element). Every edit
is then checked against the same change made on plain data: the new text must parse to exactly
that, or nothing is written (`_verify`).
"""

from __future__ import annotations

import copy
import os
import re
import stat
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nixherd.errors import InventoryError, NixherdError, Problem, UsageError
from nixherd.inventory.load import decode, loads
from nixherd.inventory.model import Inventory
from nixherd.inventory.resolve import fanout_name
from nixherd.inventory.tomltext import (
    block_end,
    cut,
    element_blocks,
    find_headers,
    insert,
    item,
    lines_of,
    render_key,
    render_value,
    table_blocks,
)
from nixherd.inventory.validate import join


@dataclass(frozen=True, slots=True)
class NodeSpec:
    """A node to add. `fan_out`: True a target of `role`, False an explicit node, None: a target
    when the role already fans out (has `targets`), else an explicit node."""

    name: str | None
    role: str | None
    values: Mapping[str, Any] = field(default_factory=dict)  # host, port, user, tags, vars, ...
    fan_out: bool | None = None


@dataclass(frozen=True, slots=True)
class Edit:
    """The new text of the inventory and what was done, in words (for the CLI)."""

    text: str
    summary: str
    notes: tuple[str, ...] = ()


# --- the edits ---------------------------------------------------------------------------------


def _plain(text: str) -> dict[str, Any]:
    import tomlkit

    data: dict[str, Any] = tomlkit.parse(text).unwrap()
    return data


@dataclass(frozen=True, slots=True)
class _Place:
    """Where a node is written: nodes.<name>, or element `index` of roles.<role>.targets."""

    name: str
    role: str | None
    index: int | None  # None: an explicit node

    @property
    def key_path(self) -> str:
        if self.index is None:
            return join("nodes", self.name)
        return f"{join('roles', self.role or '')}.targets[{self.index}]"


def _place(data: Mapping[str, Any], inventory: Inventory, name: str) -> _Place:
    node = inventory.nodes.get(name)
    if node is None:
        import difflib

        close = difflib.get_close_matches(name, list(inventory.nodes), n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise UsageError(f"{inventory.path.name}: no node {name!r} in the inventory{hint}")
    if name in data.get("nodes", {}):
        return _Place(name, node.role, None)
    role = node.role or ""
    for index, target in enumerate(data["roles"][role].get("targets", ())):
        if target.get("name", fanout_name(role, target.get("host", ""))) == name:
            return _Place(name, role, index)
    raise NixherdError(f"{node.source}: cannot find node {name!r} in the file")


def _is_inline_targets(text: str, role: str) -> bool:
    import tomlkit
    from tomlkit.items import AoT

    targets = tomlkit.parse(text)["roles"][role].get("targets")
    return targets is not None and not isinstance(targets, AoT)


def remove_node(text: str, inventory: Inventory, name: str) -> Edit:
    data = _plain(text)
    place = _place(data, inventory, name)
    expected = copy.deepcopy(data)
    lines = lines_of(text)
    if place.index is None:
        del expected["nodes"][name]
        headers = find_headers(lines)
        blocks = table_blocks(headers, ("nodes", name))
        if blocks:
            for i in reversed(blocks):
                cut(lines, headers[i].line, block_end(lines, headers, i))
            new = "".join(lines)
        else:  # written inside [nodes] as `name = { ... }`: one key of that table
            import tomlkit

            doc = tomlkit.parse(text)
            del doc["nodes"][name]
            new = tomlkit.dumps(doc)
    else:
        role = place.role or ""
        del expected["roles"][role]["targets"][place.index]
        if _is_inline_targets(text, role):
            import tomlkit

            doc = tomlkit.parse(text)
            del doc["roles"][role]["targets"][place.index]
            new = tomlkit.dumps(doc)
        else:
            headers = find_headers(lines)
            blocks = element_blocks(headers, ("roles", role, "targets"), place.index)
            cut(lines, headers[blocks[0]].line, block_end(lines, headers, blocks[-1]))
            new = "".join(lines)
            if not expected["roles"][role]["targets"]:
                del expected["roles"][role]["targets"]
    _verify(new, expected, inventory)
    return Edit(new, f"removed {name} ({place.key_path})")


def add_node(text: str, inventory: Inventory, spec: NodeSpec) -> Edit:
    data = _plain(text)
    roles = data.get("roles", {})
    role = spec.role
    fan_out = spec.fan_out
    if fan_out is None:
        fan_out = role is not None and "targets" in roles.get(role, {})
    values = dict(spec.values)
    if fan_out:
        if role is None:
            raise UsageError("a fan-out target needs --role")
        if role not in roles:
            raise InventoryError(
                [Problem(str(inventory.path.name), join("roles", role), "no such role")]
            )
        host = values.get("host")
        if host is None:
            raise UsageError("a fan-out target needs --host")
        if spec.name is not None and spec.name != fanout_name(role, str(host)):
            values = {"name": spec.name, **values}
        name = spec.name or fanout_name(role, str(host))
    else:
        if spec.name is None:
            raise UsageError("an explicit node needs a name")
        name = spec.name
        if role is not None:
            values = {"role": role, **values}
    if name in inventory.nodes:
        raise UsageError(
            f"{inventory.path.name}: node {name!r} already exists ({inventory.nodes[name].source})"
        )
    expected = copy.deepcopy(data)
    lines = lines_of(text)
    if not fan_out:
        expected.setdefault("nodes", {})[name] = values
        block = ["\n"] if lines and lines[-1].strip() else []
        block.append(f"[nodes.{render_key(name)}]\n")
        block += [f"{render_key(k)} = {render_value(v)}\n" for k, v in values.items()]
        insert(lines, len(lines), block)
        new = "".join(lines)
        where = join("nodes", name)
    else:
        assert role is not None
        targets = expected["roles"][role].setdefault("targets", [])
        targets.append(values)
        where = f"{join('roles', role)}.targets[{len(targets) - 1}]"
        new = _add_target(text, lines, role, values, len(targets) - 1)
    _verify(new, expected, inventory)
    return Edit(new, f"added {name} ({where})")


def _add_target(
    text: str, lines: list[str], role: str, values: Mapping[str, Any], index: int
) -> str:
    headers = find_headers(lines)
    path = ("roles", role, "targets")
    inline = _is_inline_targets(text, role)
    if index > 0 and not inline:
        # An array of tables: a new [[...]] block after the last element.
        blocks = element_blocks(headers, path, index - 1)
        end = block_end(lines, headers, blocks[-1])
        block = ["\n", f"[[{'.'.join(render_key(k) for k in path)}]]\n"]
        block += [f"{render_key(k)} = {render_value(v)}\n" for k, v in values.items()]
        insert(lines, end, block)
        return "".join(lines)
    if inline:
        # An inline array (even an empty one): one more line, indented as the first element is.
        import tomlkit

        doc = tomlkit.parse(text)
        table = doc["roles"][role]
        array = table["targets"]
        written = array.as_string()
        if not array:
            # `targets = []`: becomes the one-line-per-target form.
            table["targets"] = item(f"[\n  {render_value(values)},\n]")
        elif "\n" not in written:
            # Written on one line by choice: it stays one line.
            array.append(item(render_value(values)))
        else:
            match = re.search(r"\n([ \t]*)\{", written)
            indent = match.group(1) if match else "  "
            array.add_line(item(render_value(values)), indent=indent)
        return tomlkit.dumps(doc)
    # The role's first target: `targets = [ ... ]` as the last key of the role's own table.
    own = [i for i, h in enumerate(headers) if h.path == ("roles", role) and not h.array]
    if not own:
        raise NixherdError(
            f"roles.{render_key(role)} has no [roles.{render_key(role)}] table of its own to "
            "add `targets` to: add the first target by hand"
        )
    end = block_end(lines, headers, own[0])
    insert(lines, end, ["targets = [\n", f"  {render_value(values)},\n", "]\n"])
    return "".join(lines)


def set_value(text: str, inventory: Inventory, name: str, key: str, value: Any) -> Edit:
    data = _plain(text)
    place = _place(data, inventory, name)
    keys = key.split(".")
    expected = copy.deepcopy(data)
    if place.index is None:
        table_data = expected["nodes"][name]
        table_path: tuple[str, ...] = ("nodes", name)
    else:
        table_data = expected["roles"][place.role]["targets"][place.index]
        table_path = ("roles", place.role or "", "targets")
    _set_plain(table_data, keys, value)
    notes: list[str] = []
    if place.index is not None and "name" not in table_data:
        renamed = fanout_name(place.role or "", str(table_data.get("host", "")))
        if renamed != name:
            notes.append(
                f"{name} is now {renamed}: a fan-out target without `name` is named after its "
                "host (set `name` to keep the old one)"
            )
    new = _set_text(text, place, table_path, keys, table_data)
    _verify(new, expected, inventory)
    return Edit(new, f"set {place.key_path}.{key} = {render_value(value)}", tuple(notes))


def _set_plain(table: dict[str, Any], keys: Sequence[str], value: Any) -> None:
    for k in keys[:-1]:
        inner = table.setdefault(k, {})
        if not isinstance(inner, dict):
            raise UsageError(f"{k} is not a table (it holds {render_value(inner)})")
        table = inner
    table[keys[-1]] = value


def _set_text(
    text: str,
    place: _Place,
    table_path: tuple[str, ...],
    keys: Sequence[str],
    new_table: Mapping[str, Any],
) -> str:
    import tomlkit
    from tomlkit.container import OutOfOrderTableProxy as Proxy
    from tomlkit.items import AoT, InlineTable, Table

    doc = tomlkit.parse(text)
    if place.index is not None:
        targets = doc["roles"][place.role or ""]["targets"]
        if not isinstance(targets, AoT):
            # An inline target is one line: the element is written anew, its comment kept.
            targets[place.index] = item(render_value(new_table))
            return tomlkit.dumps(doc)
        table: Any = targets[place.index]
    else:
        table = doc["nodes"][place.name]
    # Walk down the header tables; the first key that is not one is replaced or added whole.
    depth = 0
    while depth < len(keys) - 1 and isinstance(table.get(keys[depth]), Table | Proxy):
        table = table[keys[depth]]
        depth += 1
    first = keys[depth]
    plain: Any = new_table
    for k in keys[: depth + 1]:
        plain = plain[k]
    if first in table:
        existing = table[first]
        if isinstance(existing, InlineTable) or len(keys) == depth + 1:
            # A value already on its line: replaced in place, the line's comment kept.
            table[first] = item(render_value(plain))
            return tomlkit.dumps(doc)
    # A new key: a line at the end of its table's own block (found by its header). A table with
    # no header of its own (only its sub-tables have one) gets it as a dotted key in the nearest
    # table above that has one (`checks.new.http = ...` in [nodes.x]).
    lines = lines_of(text)
    headers = find_headers(lines)
    if place.index is not None:
        candidates = element_blocks(headers, table_path, place.index)
    else:
        candidates = [i for i, h in enumerate(headers) if not h.array]
    for level in range(depth, -1, -1):
        path = table_path + tuple(keys[:level])
        owners = [i for i in candidates if headers[i].path == path]
        if owners:
            break
    else:
        raise NixherdError(f"{'.'.join(table_path)} has no table header to add {first} to")
    dotted = ".".join(render_key(k) for k in keys[level : depth + 1])
    end = block_end(lines, headers, owners[0])
    insert(lines, end, [f"{dotted} = {render_value(plain)}\n"])
    return "".join(lines)


# --- checking and writing ----------------------------------------------------------------------


def _verify(new: str, expected: Mapping[str, Any], inventory: Inventory) -> None:
    """The edit did what the plain-data change did, and nothing else."""

    def normal(data: Mapping[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in data.items() if not (k in ("nodes", "roles") and v == {})}

    try:
        got = _plain(new)
    except Exception as exc:  # tomlkit's own errors: the edit made invalid TOML
        raise NixherdError(
            f"{inventory.path.name}: the edit would not be valid TOML ({exc}): nothing written"
        ) from exc
    if normal(got) != normal(expected):
        raise NixherdError(
            f"{inventory.path.name}: the edit could not be made without changing other parts of "
            "the file (an unusual layout: dotted keys or inline tables): nothing written; edit "
            "it by hand"
        )


def read(path: str | os.PathLike[str]) -> tuple[bytes, str, Inventory]:
    """The file's bytes, its text and its (valid) inventory."""
    from nixherd.inventory.load import load

    inventory = load(path)
    file = os.fspath(path)
    with open(file, "rb") as handle:
        data = handle.read()
    return data, decode(data, file), inventory


def commit(path: str | os.PathLike[str], original: bytes, edit: Edit) -> None:
    """Validate the edited inventory as every command does (InventoryError: nothing written),
    then replace the file atomically: a temporary file beside it, flushed, renamed over it. A
    file changed by someone else since it was read is left alone."""
    file = os.fspath(path)
    loads(edit.text, file=file, path=Path(file).absolute())
    target = os.path.realpath(file)  # an inventory behind a symlink: the link stays
    with open(target, "rb") as handle:
        if handle.read() != original:
            raise NixherdError(f"{file}: changed while being edited: nothing written, try again")
    mode = stat.S_IMODE(os.stat(target).st_mode)
    directory = os.path.dirname(target) or "."
    fd, temporary = tempfile.mkstemp(prefix=".nixherd-edit-", dir=directory)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(edit.text.encode())
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, target)
    except BaseException:
        os.unlink(temporary)
        raise
