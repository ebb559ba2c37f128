"""Terraform/OpenTofu outputs in the inventory, on the resolver's side (docs/terraform.md).

    [terraform.NAME]                        a source: `dir` (a working directory, with `binary`)
                                            or `file` (a saved `output -json`)
    roles.R.targets_from = "NAME.OUTPUT"    the output's hosts become the role's fan-out targets
    vars: { terraform = "NAME.OUTPUT.a.b" } the value inside the output

Both resolvers (this one and nix/lib.nix) read the outputs from one snapshot beside the inventory,
`<inventory stem>.terraform.json`, that `nixherd terraform sync` writes (terraform_outputs.py):
Nix cannot run Terraform, and `nixherd nodes` must not wait for it. This module never runs it.

Values from outputs reach ssh's argv (host, user, port, name, tags): each target goes through the
same field validators as a `[[roles.R.targets]]` table (fields.TARGET_TABLE), and values put into
vars through the same check as any vars table. Every problem names `terraform.NAME` and the output.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from nixherd.inventory.fields import TARGET_TABLE
from nixherd.inventory.terraform_ref import SOURCE_PATTERN, Ref, source_name_ok
from nixherd.inventory.validate import (
    Issue,
    any_table,
    got,
    join,
    key_segment,
    one,
    shown,
    source_path,
    unknown_field_message,
)

SNAPSHOT_FORMAT: Final = "nixherd-terraform/v1"
# The keys a target object may have in an output (the rest of a target's fields are the role's).
TARGET_KEYS: Final = ("host", "name", "port", "user", "tags", "vars")
# Terraform 0.11 has no numbers in outputs: a port arrives as a string of digits. Nix reads it
# with `fromJSON`, so only what JSON calls an integer (no leading zero) is taken.
_PORT_TEXT = re.compile(r"[1-9][0-9]{0,4}").fullmatch
# An index into a list, as JSON writes an integer (nix/lib.nix reads it with `fromJSON`).
_INDEX = re.compile(r"0|[1-9][0-9]{0,9}").fullmatch

Report = Callable[[str, str, str], None]  # (file, key path, message)


def snapshot_path(inventory: Path) -> Path:
    """The snapshot beside an inventory: `inventory.toml` -> `inventory.terraform.json`."""
    stem = inventory.name.removesuffix(".toml")
    return inventory.with_name(f"{stem}.terraform.json")


@dataclass(frozen=True, slots=True)
class Source:
    """One `[terraform.NAME]` table: where the outputs come from."""

    name: str
    dir: str | None  # as written: relative to the inventory's directory, or absolute
    file: str | None
    binary: str | None  # None: `tofu` when on PATH, else `terraform`

    @property
    def key(self) -> str:
        return f"terraform.{self.name}"

    def origin(self) -> dict[str, str]:
        """What the snapshot records of the source (a changed source makes it stale)."""
        return {"dir": self.dir} if self.dir is not None else {"file": self.file or ""}


def _binary(value: Any) -> list[Issue] | None:
    if type(value) is str and value and not value.startswith("-") and "\x00" not in value:
        return None
    if not isinstance(value, str):
        return one(f"must be a string, {got(value)}")
    return one(f"must be a command name or path (not starting with -), got {shown(value)}")


_SOURCE_KEYS: Final[dict[str, Callable[[Any], list[Issue] | None]]] = {
    "dir": source_path,
    "file": source_path,
    "binary": _binary,
}


def parse_sources(table: Any, report: Report, file: str) -> dict[str, Source]:
    """The valid `[terraform.NAME]` sources of the inventory's `terraform` table."""
    sources: dict[str, Source] = {}
    if type(table) is not dict:
        report(file, "terraform", f"must be a table of sources ([terraform.NAME]), {got(table)}")
        return sources
    for name, entry in table.items():
        path = join("terraform", name)
        if not source_name_ok(name):
            report(file, path, f"a source name must match {SOURCE_PATTERN}, got {shown(name)}")
            continue
        if type(entry) is not dict:
            report(file, path, f"must be a table (dir or file), {got(entry)}")
            continue
        bad = False
        for key, value in entry.items():
            check = _SOURCE_KEYS.get(key)
            issues = (
                one(unknown_field_message(key, _SOURCE_KEYS)) if check is None else check(value)
            )
            for suffix, message in issues or ():
                report(file, join(path, key) + suffix, message)
                bad = True
        if ("dir" in entry) == ("file" in entry):
            report(
                file, path, "give either dir (a working directory) or file (a saved output -json)"
            )
            bad = True
        elif "binary" in entry and "file" in entry:
            report(file, join(path, "binary"), "only with dir: a file is read, not run")
            bad = True
        if not bad:
            sources[name] = Source(name, entry.get("dir"), entry.get("file"), entry.get("binary"))
    return sources


def _is_marker(value: Any) -> bool:
    """`{ terraform = "..." }`: a table whose only key is `terraform`, holding a string."""
    return type(value) is dict and len(value) == 1 and type(value.get("terraform")) is str


def references(doc: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """Every reference the inventory makes, as (key path, text): targets_from and vars markers."""
    tables: list[tuple[str, Any]] = [("defaults", doc.get("defaults"))]
    roles = doc.get("roles")
    for role_name, role in roles.items() if type(roles) is dict else ():
        role_path = join("roles", role_name)
        tables.append((role_path, role))
        if type(role) is not dict:
            continue
        given = role.get("targets_from")
        for text in given if type(given) is list else [given]:
            if type(text) is str:
                yield join(role_path, "targets_from"), text
        targets = role.get("targets")
        for index, target in enumerate(targets if type(targets) is list else ()):
            tables.append((f"{role_path}.targets[{index}]", target))
    nodes = doc.get("nodes")
    for node_name, node in nodes.items() if type(nodes) is dict else ():
        tables.append((join("nodes", node_name), node))
    for path, table in tables:
        if type(table) is dict and "vars" in table:
            yield from _markers(table["vars"], join(path, "vars"))


def _markers(value: Any, path: str) -> Iterator[tuple[str, str]]:
    if _is_marker(value):
        yield path, value["terraform"]
    elif type(value) is dict:
        for key, element in value.items():
            yield from _markers(element, f"{path}.{key_segment(key)}")
    elif type(value) is list:
        for index, element in enumerate(value):
            yield from _markers(element, f"{path}[{index}]")


class Terraform:
    """The inventory's sources and the outputs of its snapshot, for one resolution.

    `snapshot` is the snapshot document when the caller has it (`terraform sync` validates the one
    it is about to write); otherwise it is read from beside the inventory, once, when first needed.
    """

    def __init__(
        self,
        table: Any,
        inventory: Path,
        file: str,
        report: Report,
        snapshot: Mapping[str, Any] | None = None,
    ) -> None:
        self.file = file
        self.report = report
        self.sources = parse_sources(table, report, file)
        self.snapshot_file = snapshot_path(inventory)
        # Named in messages as the inventory is: beside it.
        self.snapshot_name = os.path.join(os.path.dirname(file), self.snapshot_file.name)
        self._snapshot = snapshot
        self._read = snapshot is not None
        self._missing_reported: set[str] = set()

    # --- the snapshot -----------------------------------------------------------------------------

    def snapshot(self) -> Mapping[str, Any] | None:
        if not self._read:
            self._read = True
            self._snapshot = self._load()
        return self._snapshot

    def _load(self) -> Mapping[str, Any] | None:
        try:
            text = self.snapshot_file.read_text(encoding="utf-8")
        except FileNotFoundError:
            names = ", ".join(f"terraform.{name}" for name in sorted(self.sources))
            self.report(
                self.snapshot_name,
                "",
                f"no such file (it holds the outputs of {names or 'the sources'}): "
                "run `nixherd terraform sync`",
            )
            return None
        except (OSError, UnicodeDecodeError) as exc:
            self.report(self.snapshot_name, "", f"cannot read: {exc}")
            return None
        try:
            doc = json.loads(text)
        except ValueError as exc:
            self.report(
                self.snapshot_name, "", f"invalid JSON: {exc}: run `nixherd terraform sync`"
            )
            return None
        if type(doc) is not dict or doc.get("format") != SNAPSHOT_FORMAT:
            self.report(
                self.snapshot_name,
                "format",
                f"not a snapshot of format {SNAPSHOT_FORMAT}: run `nixherd terraform sync`",
            )
            return None
        if type(doc.get("sources")) is not dict:
            self.report(self.snapshot_name, "sources", "must be an object")
            return None
        return doc

    def output(self, ref: Ref, used_by: str) -> tuple[bool, Any]:
        """(found, value) of the output `ref` names, the path inside it followed."""
        if ref.source not in self.sources:
            known = ", ".join(sorted(self.sources)) or "none declared"
            self.report(
                self.file,
                used_by,
                f"unknown Terraform source {shown(ref.source)} in {shown(str(ref))} "
                f"([terraform.NAME] sources: {known})",
            )
            return False, None
        snapshot = self.snapshot()
        if snapshot is None:
            return False, None
        source = snapshot["sources"].get(ref.source)
        outputs = source.get("outputs") if type(source) is dict else None
        if type(outputs) is not dict or ref.output not in outputs:
            if ref.output_ref not in self._missing_reported:
                self._missing_reported.add(ref.output_ref)
                self.report(
                    self.snapshot_name,
                    f"terraform.{ref.source}",
                    f"output {shown(ref.output)} (used by {used_by}) is not in the snapshot: "
                    "run `nixherd terraform sync`",
                )
            return False, None
        value = outputs[ref.output]
        for index, step in enumerate(ref.path):
            where = ".".join((ref.output, *ref.path[:index]))
            if type(value) is dict and step in value:
                value = value[step]
            elif type(value) is list and _INDEX(step) and int(step) < len(value):
                value = value[int(step)]
            else:
                self.report(
                    self.file,
                    used_by,
                    f"terraform.{ref.source} output {where} has no {shown(step)} "
                    f"(it is {_kind(value)})",
                )
                return False, None
        return True, value

    # --- targets_from --------------------------------------------------------------------------

    def targets(self, given: Any, used_by: str) -> Iterator[tuple[str, str, dict[str, Any]]]:
        """The fan-out targets of `targets_from`: (origin ref, key path for messages, the target
        as a `[[roles.R.targets]]` table), only those valid (the others are reported)."""
        for text in given if type(given) is list else [given]:
            ref = Ref.parse(text)
            if ref is None:
                continue  # reported by the role's own check
            found, value = self.output(ref, used_by)
            if not found:
                continue
            where = f"terraform.{ref.source} output {'.'.join((ref.output, *ref.path))}"
            if type(value) is list:
                entries = [(f"[{index}]", None, entry) for index, entry in enumerate(value)]
            elif type(value) is dict:
                entries = [(f"[{json.dumps(key)}]", key, value[key]) for key in sorted(value)]
            else:
                self.report(
                    self.file,
                    where,
                    "must be a list of hosts, a list of objects with host, or a map from node "
                    f"name to such an object (used by {used_by}), got {_kind(value)}",
                )
                continue
            for suffix, name, entry in entries:
                target = self._target(entry, name, where + suffix)
                if target is not None:
                    yield str(ref), where + suffix, target

    def _target(self, entry: Any, name: str | None, where: str) -> dict[str, Any] | None:
        if type(entry) is str:
            target: dict[str, Any] = {"host": entry}
        elif type(entry) is dict:
            # null: not set (0.12+ objects carry every attribute, the unset ones as null).
            target = {key: value for key, value in entry.items() if value is not None}
        else:
            self.report(
                self.file,
                where,
                f"must be a host (a string) or an object with host, got {_kind(entry)}",
            )
            return None
        if name is not None:
            target["name"] = name
        port = target.get("port")
        if type(port) is str and _PORT_TEXT(port):
            target["port"] = int(port)
        problems = [
            (join(where, key), f"not taken from Terraform (only {', '.join(TARGET_KEYS)})")
            for key in target
            if key not in TARGET_KEYS
        ]
        known = {key: value for key, value in target.items() if key in TARGET_KEYS}
        problems += TARGET_TABLE.check(known, where)
        for path, message in problems:
            self.report(self.file, path, message)
        return None if problems else known

    # --- vars ------------------------------------------------------------------------------------

    def substitute(self, table: Any, path: str) -> tuple[Any, list[tuple[str, dict[str, Any]]]]:
        """The layer `table` with the markers in its vars replaced by their values, and for
        `show`, per marker under tables only: (its output's reference, {"vars": the value at
        its place}). The table itself is returned when it has no marker."""
        if type(table) is not dict or type(table.get("vars")) is not dict:
            return table, []
        provenance: list[tuple[str, dict[str, Any]]] = []
        new_vars = self._walk(table["vars"], join(path, "vars"), (), provenance)
        if new_vars is table["vars"]:
            return table, []
        return {**table, "vars": new_vars}, provenance

    def _walk(
        self,
        value: Any,
        path: str,
        keys: tuple[str, ...] | None,
        provenance: list[tuple[str, dict[str, Any]]],
    ) -> Any:
        if _is_marker(value):
            ref = Ref.parse(value["terraform"])
            if ref is None:
                self.report(
                    self.file,
                    path,
                    f"{shown(value['terraform'])} is not a reference NAME.OUTPUT[.path]",
                )
                return value
            found, found_value = self.output(ref, path)
            if not found:
                return value
            issues = any_table({"value": found_value})
            if found_value is None:
                issues = one("null is not a value the inventory can hold")
            for suffix, message in issues or ():
                where = f"terraform.{ref.source} output {ref}{suffix.removeprefix('.value')}"
                self.report(self.file, path, f"{where}: {message}")
                return value
            if keys is not None:
                nested: Any = found_value
                for key in reversed(keys):
                    nested = {key: nested}
                provenance.append((ref.output_ref, {"vars": nested}))
            return found_value
        if type(value) is dict:
            out: dict[str, Any] | None = None
            for key, element in value.items():
                inner = None if keys is None else (*keys, key)
                new = self._walk(element, f"{path}.{key_segment(key)}", inner, provenance)
                if new is not element:
                    out = dict(value) if out is None else out
                    out[key] = new
            return value if out is None else out
        if type(value) is list:
            items = [
                self._walk(element, f"{path}[{index}]", None, provenance)
                for index, element in enumerate(value)
            ]
            changed = any(new is not old for new, old in zip(items, value, strict=True))
            return items if changed else value
        return value


def _kind(value: Any) -> str:
    """A Terraform value's kind, for messages."""
    if value is None:
        return "null"
    if type(value) is dict:
        return "an object"
    if type(value) is list:
        return "a list"
    return got(value).removeprefix("got ")
