"""Reading Terraform/OpenTofu outputs and writing the snapshot (`nixherd terraform sync`), and
telling when a snapshot is stale (`nixherd check`). docs/terraform.md.

`output -json` is the stable interface of both tools: an object from output name to
`{"sensitive": bool, "type": T, "value": V}`, where T is a word in Terraform 0.11 ("string",
"list", "map") and a type expression in 0.12+ and OpenTofu ("string", ["list","string"],
["object",{...}]). Only `sensitive` and `value` are read, so both shapes are taken alike.

A sensitive output's value is read into memory (the tools print them all) and dropped there: it is
never written, never shown, and using one in the inventory is an error naming it. The tool's
stdout is read as bytes (`process.run_bytes`), so no error message can carry it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nixherd.errors import CommandError, InventoryError, Problem
from nixherd.inventory.terraform import SNAPSHOT_FORMAT, Source, parse_sources, references
from nixherd.inventory.terraform_ref import Ref
from nixherd.inventory.validate import shown

OUTPUT_TIMEOUT = 300.0  # seconds: `output` reads the state (a remote backend may be slow)
STATE_FILE = "terraform.tfstate"  # the local backend's state, in the working directory


@dataclass(frozen=True, slots=True)
class Synced:
    """What `sync` wrote: the snapshot, the outputs per source, and the nodes it changed."""

    snapshot: Path
    outputs: dict[str, tuple[str, ...]]  # source -> the outputs written
    added: tuple[str, ...]  # node names that were not there with the previous snapshot
    removed: tuple[str, ...]
    changed: bool  # whether the file's bytes changed


def _problem(file: str, path: str, message: str) -> InventoryError:
    return InventoryError([Problem(file, path, message)])


def default_binary() -> str:
    """`tofu` when on PATH, else `terraform` (the source's `binary` overrides it)."""
    return "tofu" if shutil.which("tofu") is not None else "terraform"


def read_outputs(source: Source, base: Path, file: str) -> dict[str, Any]:
    """The outputs of a source, `output -json` parsed: name -> {"sensitive", "value"}.

    `base` is the inventory's directory (a relative dir or file is taken from there); `file`
    names the inventory in messages. InventoryError (exit 2) for a missing dir, file or binary,
    a failing `output` (its stderr shown) or a document that is not `output -json`'s.
    """
    if source.file is not None:
        path = base / source.file
        try:
            data = path.read_bytes()
        except OSError as exc:
            reason = "no such file" if isinstance(exc, FileNotFoundError) else exc.strerror
            raise _problem(file, f"{source.key}.file", f"{reason}: {path}") from None
        return _parse(data, file, source.key, str(path))
    directory = base / (source.dir or "")
    if not directory.is_dir():
        raise _problem(file, f"{source.key}.dir", f"no such directory: {directory}")
    binary = source.binary or default_binary()
    found = shutil.which(binary)
    if found is None:
        hint = "set binary" if source.binary else "install OpenTofu or Terraform, or set binary"
        raise _problem(file, source.key, f"{shown(binary)} is not found on PATH ({hint})")
    from nixherd.run import process

    argv = [found, "output", "-no-color", "-json"]
    # No prompt may wait for an answer nobody gives; TF_IN_AUTOMATION drops hints about commands
    # to run next.
    env = {"TF_INPUT": "0", "TF_IN_AUTOMATION": "1"}
    try:
        result = process.run_bytes(
            argv, cwd=str(directory), env=env, timeout=OUTPUT_TIMEOUT, what="terraform output"
        )
    except CommandError as exc:  # cannot start, timed out: its stderr at most, never stdout
        reason = "timed out" if exc.returncode is None else "could not start"
        detail = f"\n{exc.tail()}" if exc.output.strip() else ""
        raise _problem(
            file, source.key, f"`{binary} output -json` {reason} in {directory}{detail}"
        ) from None
    if not result.ok:
        stderr = result.stderr.strip() or "(no output on stderr)"
        raise _problem(
            file,
            source.key,
            f"`{binary} output -json` failed (exit {result.returncode}) in {directory}:\n{stderr}",
        )
    return _parse(result.stdout, file, source.key, f"`{binary} output -json` in {directory}")


def _parse(data: bytes, file: str, key: str, what: str) -> dict[str, Any]:
    try:
        doc = json.loads(data)
    except ValueError as exc:
        # The message of a JSON error quotes no more than a position: no value leaks through it.
        raise _problem(file, key, f"{what}: not JSON ({type(exc).__name__}: {exc})") from None
    if type(doc) is not dict:
        raise _problem(file, key, f"{what}: not output -json's object of outputs")
    for name, output in doc.items():
        if (
            type(output) is not dict
            or "value" not in output
            or type(output.get("sensitive", False)) is not bool
            or type(output.get("type", "")) not in (str, list)
        ):
            raise _problem(
                file,
                key,
                f"{what}: output {shown(name)} is not an object with sensitive, type and value "
                "(Terraform 0.11+ or OpenTofu output -json)",
            )
    return doc


def state_of(directory: Path) -> dict[str, Any] | None:
    """The local state's lineage and serial (the serial grows with every change), or None when
    the working directory has no local state (a remote backend: staleness is not known here)."""
    try:
        doc = json.loads((directory / STATE_FILE).read_bytes())
    except (OSError, ValueError):
        return None
    if type(doc) is not dict or type(doc.get("serial")) is not int:
        return None
    return {"lineage": doc.get("lineage"), "serial": doc["serial"]}


def _digest(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def build_snapshot(
    doc: Mapping[str, Any], inventory: Path, file: str
) -> tuple[dict[str, Any], dict[str, tuple[str, ...]]]:
    """The snapshot for the inventory `doc`: each declared source's outputs that the inventory
    uses. InventoryError naming the source and output for a missing or sensitive one."""
    problems: list[Problem] = []

    def report(where: str, path: str, message: str) -> None:
        problems.append(Problem(where, path, message))

    sources = parse_sources(doc.get("terraform", {}), report, file)
    used: dict[str, dict[str, str]] = {name: {} for name in sources}  # source -> output -> user
    for where, text in references(doc):
        ref = Ref.parse(text)
        if ref is not None and ref.source in used:
            used[ref.source].setdefault(ref.output, where)
    if problems:
        raise InventoryError(problems)
    base = inventory.parent
    snapshot: dict[str, Any] = {"format": SNAPSHOT_FORMAT, "sources": {}}
    written: dict[str, tuple[str, ...]] = {}
    for name, source in sorted(sources.items()):
        outputs = read_outputs(source, base, file)
        kept: dict[str, Any] = {}
        for output, where in sorted(used[name].items()):
            found = outputs.get(output)
            if found is None:
                known = ", ".join(sorted(o for o in outputs if not outputs[o].get("sensitive")))
                report(
                    file,
                    source.key,
                    f"no output {shown(output)} (used by {where}; outputs: {known or 'none'})",
                )
            elif found.get("sensitive", False):
                report(
                    file,
                    source.key,
                    f"output {shown(output)} is sensitive: it is never copied into the snapshot, "
                    f"so {where} cannot use it; read it in a key instead "
                    f'(command = ["{source.binary or "tofu"}", "output", "-raw", "{output}"])',
                )
            else:
                kept[output] = found["value"]
        entry: dict[str, Any] = {"from": source.origin(), "outputs": kept}
        if source.dir is not None:
            entry["state"] = state_of(base / source.dir)
        else:
            entry["sha256"] = _digest(base / (source.file or ""))
        snapshot["sources"][name] = entry
        written[name] = tuple(kept)
    if problems:
        raise InventoryError(problems)
    return snapshot, written


def dumps(snapshot: Mapping[str, Any]) -> str:
    """The snapshot's text: sorted keys, two-space indent, a final newline (diffs stay small)."""
    return json.dumps(snapshot, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def write_atomically(path: Path, text: str) -> None:
    """Replace `path` whole or not at all: a temporary file beside it, synced, then renamed."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)  # a committed file, readable like the inventory
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def sync(inventory_file: str) -> Synced:
    """Read the outputs the inventory uses, check the inventory resolves with them, and write the
    snapshot beside it (atomically). Nothing is written when anything is wrong."""
    from nixherd.inventory.load import decode, load, parse
    from nixherd.inventory.resolve import resolve
    from nixherd.inventory.terraform import snapshot_path

    path = Path(inventory_file).absolute()
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise _problem(inventory_file, "", "no such file") from None
    except OSError as exc:
        raise _problem(inventory_file, "", f"cannot read: {exc.strerror or exc}") from None
    doc = parse(decode(data, inventory_file), inventory_file)
    if "terraform" not in doc:
        raise _problem(inventory_file, "terraform", "no [terraform.NAME] source to sync")
    snapshot, written = build_snapshot(doc, path, inventory_file)
    # The whole inventory must resolve with the new outputs before anything is written.
    after = resolve(doc, file=inventory_file, path=path, terraform_snapshot=snapshot)
    target = snapshot_path(path)
    try:
        before: set[str] | None = set(load(inventory_file).nodes)
    except InventoryError:
        before = None  # no snapshot yet, or an invalid one: every node is new
    text = dumps(snapshot)
    try:
        old = target.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        old = None
    if old != text:
        try:
            write_atomically(target, text)
        except OSError as exc:
            shown_name = os.path.join(os.path.dirname(inventory_file), target.name)
            raise _problem(shown_name, "", f"cannot write: {exc.strerror or exc}") from None
    names = set(after.nodes)
    return Synced(
        snapshot=target,
        outputs=written,
        added=tuple(sorted(names - (before or set()))),
        removed=tuple(sorted((before or set()) - names)),
        changed=old != text,
    )


def stale(inventory_file: str) -> list[Problem]:
    """Why the snapshot beside the inventory no longer matches its sources (for `check`): a
    source it lacks or that changed, a local state newer than the one it was taken from, a saved
    output file that changed. Runs no Terraform."""
    from nixherd.inventory.load import decode, parse
    from nixherd.inventory.terraform import snapshot_path

    path = Path(inventory_file).absolute()
    doc = parse(decode(path.read_bytes(), inventory_file), inventory_file)
    problems: list[Problem] = []
    sources = parse_sources(doc.get("terraform", {}), lambda *_: None, inventory_file)
    if not sources:
        return problems
    target = snapshot_path(path)
    name = os.path.join(os.path.dirname(inventory_file), target.name)
    try:
        snapshot = json.loads(target.read_bytes())
        recorded = snapshot["sources"]
    except (OSError, ValueError, KeyError, TypeError):
        return problems  # a missing or broken snapshot is the resolver's problem to report
    hint = "run `nixherd terraform sync`"
    for source_name, source in sorted(sources.items()):
        entry = recorded.get(source_name) if type(recorded) is dict else None
        if type(entry) is not dict or entry.get("from") != source.origin():
            problems.append(Problem(name, source.key, f"not synced from this source: {hint}"))
        elif source.dir is not None:
            now = state_of(path.parent / source.dir)
            then = entry.get("state")
            if now is not None and now != then:
                was = then.get("serial") if type(then) is dict else None
                problems.append(
                    Problem(
                        name,
                        source.key,
                        f"older than the state (serial {was} in the snapshot, {now['serial']} "
                        f"in {source.dir}/{STATE_FILE}): {hint}",
                    )
                )
        elif entry.get("sha256") != _digest(path.parent / (source.file or "")):
            problems.append(Problem(name, source.key, f"{source.file} changed since: {hint}"))
    return problems
