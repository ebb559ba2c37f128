"""`nixherd import colmena`: evaluate a flake's Colmena hive for its nodes' deployment fields
(`resources/colmena-import.nix`, without nixpkgs) and turn them into an inventory
(`inventory.from_colmena`).

One nix process reads every node. A node whose evaluation fails in a way Nix cannot catch (a
missing attribute, a type error) stops that process: then each node is read in a process of its
own, first with its own settings, then without them, so one odd node costs its own import only.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from importlib import resources
from typing import Any

from nixherd.errors import CommandError, NixherdError, UsageError
from nixherd.inventory.from_colmena import Imported, convert
from nixherd.package import nix_library
from nixherd.run import nix


def flake_ref(given: str) -> str:
    """A reference `builtins.getFlake` takes. A local directory becomes `path:` of its absolute
    path: so the source's root is that directory whatever Nix version reads it (a directory
    inside a git work tree is read as the whole repository by some, as itself by others), and
    `modules` come out relative to it. Other references are taken as given."""
    if ":" not in given.split("/", 1)[0] and os.path.isdir(given):
        return "path:" + os.path.abspath(given)
    return given


def _expression(importer: str, ref: str, only: Sequence[str] | None, with_own: bool) -> str:
    names = "null" if only is None else "[ " + " ".join(nix.nix_string(n) for n in only) + " ]"
    # The module system stand-in is the Nix library's, shared with the lab's mkSystem.
    modules = nix.nix_string(os.path.join(nix_library(), "modules.nix"))
    return (
        f"import {nix.nix_string(importer)} {{ flake = builtins.getFlake {nix.nix_string(ref)}; "
        f"modules = import {modules}; "
        f"only = {names}; withOwn = {'true' if with_own else 'false'}; }}"
    )


def _eval(ref: str, attr: str = "", only: Sequence[str] | None = None, own: bool = True) -> Any:
    # The file stays where nix can read it until nix has read it (a zipped package included).
    with resources.as_file(
        resources.files("nixherd").joinpath("resources/colmena-import.nix")
    ) as importer:
        return nix.eval_expr_json(f"({_expression(str(importer), ref, only, own)}){attr}")


def _first_line(exc: CommandError) -> str:
    # The output holds what nix printed on stdout before the error too.
    found = re.search(r"error: *(.+)", exc.output)
    return found.group(1).strip() if found else (exc.tail(1) or "nix eval failed")


def _unreadable(ref: str, exc: CommandError) -> NixherdError:
    """Why the hive could not be read at all: bad input (exit 2) when the flake is missing, has
    no lock or no hive; else Nix's error."""
    first = _first_line(exc)
    if "requires lock file changes" in exc.output:
        return UsageError(
            f"{ref}: its flake.lock is missing or out of date, and Nix reads a flake for an import "
            f"only through an up-to-date lock: run `nix flake lock {ref}` first"
        )
    if "has no `colmena` or `colmenaHive` output" in exc.output:
        return UsageError(f"{ref}: the flake has no `colmena` or `colmenaHive` output")
    if "does not exist" in first or "No such file" in first or "is not a flake" in first:
        return UsageError(f"{ref}: {first}")
    return NixherdError(f"cannot read the Colmena hive of {ref}: {first}\n{exc.tail()}")


def evaluate(ref: str) -> dict[str, Any]:
    """The hive as data (see colmena-import.nix), each failing node isolated."""
    try:
        hive: dict[str, Any] = _eval(ref)
        return hive
    except CommandError as whole:
        try:
            head: dict[str, Any] = _eval(ref, " // { nodes = { }; }", only=[])
        except CommandError:
            raise _unreadable(ref, whole) from whole
    nodes: dict[str, Any] = {}
    for name in head["names"]:
        try:
            nodes[name] = _eval(ref, ".nodes", only=[name])[name]
            continue
        except CommandError:
            pass
        try:
            data = _eval(ref, ".nodes", only=[name], own=False)[name]
            data["own"] = {"data": {}, "skipped": ["(its own module does not evaluate here)"]}
            nodes[name] = data
        except CommandError as exc:
            nodes[name] = {"error": f"its deployment does not evaluate: {_first_line(exc)}"}
    head["nodes"] = nodes
    return head


def subdir(ref: str) -> str:
    """The flake's directory inside its source tree (`?dir=` of the reference): the source's
    store path holds the whole tree, and `modules` are relative to the flake's own directory."""
    query = ref.partition("?")[2]
    for part in query.split("&"):
        key, _, value = part.partition("=")
        if key == "dir":
            return value.strip("/")
    return ""


def import_colmena(given: str) -> Imported:
    ref = flake_ref(given)
    hive = evaluate(ref)
    inner = subdir(ref)
    if inner:
        hive["root"] = f"{hive['root'].rstrip('/')}/{inner}"
    return convert(hive, origin=ref)
