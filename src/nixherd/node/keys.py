"""Secret keys: read on the deployer (file, command, env var), written to nodes over ssh stdin.

A key's bytes live in memory between `prepare_keys` and `upload_keys` and travel only on the
stdin of one ssh process (`transfer.write`): never in argv, env, a log line, an error message,
the report or any Nix store. A key whose copy on the node already has the same content, owner,
group and mode is not sent again (one round trip fetches every key's fingerprint; a symlink at
the key's path is never looked through, it is replaced). How a key is written safely into a
directory another user owns (an application's home) is `transfer`'s business: see its docstring.
"""

from __future__ import annotations

import os
import shlex
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from nixherd.errors import CommandError, NixherdError, UsageError
from nixherd.events import EventSink, LogLine, Stage, StageFinished, StageStarted
from nixherd.inventory.entries import Key, SourceKind
from nixherd.inventory.entries import Upload as Upload
from nixherd.node import transfer
from nixherd.run import process
from nixherd.run.ssh import Connection

# A secret command (sops, pass, a vault CLI) that does not answer in this time is broken.
SOURCE_TIMEOUT = 120.0


def describe_source(key: Key) -> str:
    """Where the key comes from, for messages (a path, a command line, a variable name)."""
    if key.kind is SourceKind.COMMAND:
        return f"command {shlex.join(key.source)}"
    return f"{key.kind.value} {key.source[0]}"


def source_file(key: Key, base_dir: str) -> str:
    """A `file` key's path on the deployer: relative paths are the inventory directory's."""
    return os.path.normpath(os.path.join(base_dir, key.source[0]))


class KeyedNode(Protocol):
    """What this module needs of an inventory node."""

    @property
    def name(self) -> str: ...

    @property
    def keys(self) -> Mapping[str, Key]: ...


class KeySourceError(NixherdError):
    """A key's source could not be read; the node is failed before anything on it is touched."""


@dataclass(frozen=True, slots=True)
class PreparedKey(transfer.Payload):
    """A key with its bytes read from the source (the bytes never appear in a repr)."""

    spec: Key
    content: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class PreparedKeys:
    """All keys of one node, read before anything on the node is touched."""

    node: str
    keys: tuple[PreparedKey, ...]

    def when(self, upload: Upload) -> tuple[PreparedKey, ...]:
        return tuple(key for key in self.keys if key.spec.upload is upload)


@dataclass(frozen=True, slots=True)
class KeysResult:
    """What an upload did on one node: names of the keys written and of those already in place."""

    node: str
    sent: tuple[str, ...] = ()
    unchanged: tuple[str, ...] = ()

    @property
    def sent_count(self) -> int:
        return len(self.sent)


def key_specs(node: KeyedNode) -> list[Key]:
    """The node's keys, sorted by name."""
    return [key for _, key in sorted(node.keys.items())]


def read_source(
    spec: Key, *, node: str, base_dir: str, env: Mapping[str, str] | None = None
) -> bytes:
    """The bytes of one key from its source on the deployer; KeySourceError if unavailable.
    A relative `file` and a `command` are resolved in `base_dir` (the inventory's directory)."""
    where = f"{node}: key {spec.name!r}"
    if spec.kind is SourceKind.FILE:
        path = source_file(spec, base_dir)
        try:
            with open(path, "rb") as handle:
                return handle.read()
        except OSError as exc:
            raise KeySourceError(f"{where}: cannot read {path}: {exc.strerror}") from None
    if spec.kind is SourceKind.ENV:
        environ = os.environ if env is None else env
        value = environ.get(spec.source[0])
        if value is None:
            raise KeySourceError(f"{where}: environment variable {spec.source[0]} is not set")
        return value.encode()
    try:
        result = process.run_bytes(
            spec.source, cwd=base_dir, timeout=SOURCE_TIMEOUT, what=f"key {spec.name}"
        )
    except CommandError as exc:
        status = "timed out" if exc.returncode is None else "could not start"
        raise KeySourceError(
            f"{where}: {describe_source(spec)} {status}\n{exc.tail(5)}".rstrip()
        ) from None
    if not result.ok:
        # stderr only: a failing secret command may have printed part of the secret on stdout.
        tail = "\n".join(result.stderr.rstrip().splitlines()[-5:])
        raise KeySourceError(
            f"{where}: {describe_source(spec)} exited with {result.returncode}\n{tail}".rstrip()
        )
    return result.stdout


def prepare_keys(
    node: KeyedNode, *, base_dir: str, env: Mapping[str, str] | None = None
) -> PreparedKeys:
    """Read every key source of the node (both upload times), before the node is touched."""
    return PreparedKeys(
        node.name,
        tuple(
            PreparedKey(spec, read_source(spec, node=node.name, base_dir=base_dir, env=env))
            for spec in key_specs(node)
        ),
    )


def upload_prepared(
    conn: Connection,
    prepared: PreparedKeys,
    when: Upload | None,
    *,
    emit: EventSink,
) -> KeysResult:
    """Write the node's keys for `when` (None: all of them) that differ on the node."""
    keys = prepared.keys if when is None else prepared.when(when)
    node = prepared.node
    if not keys:
        return KeysResult(node)
    emit(StageStarted(node, Stage.KEYS))
    started = time.monotonic()
    same = transfer.unchanged(conn, [(k.spec.dest, k.digest, k.ownership) for k in keys])
    sent: list[str] = []
    unchanged: list[str] = []
    for key, is_same in zip(keys, same, strict=True):
        if is_same:
            unchanged.append(key.spec.name)
            continue
        try:
            transfer.write(conn, key.spec.dest, key.content, key.ownership)
        except transfer.RefusedError as exc:
            raise transfer.RefusedError(node, f"key {key.spec.name!r}: {exc.reason}") from None
        sent.append(key.spec.name)
        own = key.ownership
        emit(LogLine(node, f"key {key.spec.name}: wrote {key.spec.dest} ({own.owner} {own.octal})"))
    if unchanged:
        emit(LogLine(node, f"keys unchanged: {', '.join(unchanged)}"))
    emit(StageFinished(node, Stage.KEYS, time.monotonic() - started))
    return KeysResult(node, tuple(sent), tuple(unchanged))


def upload_keys(
    conn: Connection,
    node: KeyedNode,
    when: Literal["pre-activation", "post-activation"] | Upload | None,
    *,
    emit: EventSink,
    base_dir: str,
    prepared: PreparedKeys | None = None,
) -> KeysResult:
    """Write the node's keys meant for `when` (None: all) over `conn`.

    Without `prepared`, every source of the node is read first, so a missing one fails the node
    (KeySourceError) before anything on it is touched. A deploy that uploads before and after
    activation calls `prepare_keys` once at its start and passes the result to both calls.
    """
    if prepared is None:
        prepared = prepare_keys(node, base_dir=base_dir)
    upload = Upload(when) if isinstance(when, str) else when
    return upload_prepared(conn, prepared, upload, emit=emit)


def _flake_root(flake: str, cwd: str) -> tuple[str, bool] | None:
    """(directory Nix copies into the store, whether it copies only git-tracked files) for a
    local flake reference; None for a remote one (github:, a registry name, ...)."""
    ref = flake.split("?", 1)[0].split("#", 1)[0]
    if ref.startswith("path:"):
        return os.path.join(cwd, ref.removeprefix("path:")), False
    if ref.startswith("git+file:"):
        return os.path.join(cwd, ref.removeprefix("git+file:").removeprefix("//")), True
    if ":" in ref or not (ref.startswith((".", "/")) or os.path.isdir(os.path.join(cwd, ref))):
        return None
    directory = os.path.join(cwd, ref)
    # A plain path inside a git work tree is a git flake: Nix copies the tracked files only.
    top = process.run(
        ["git", "-C", directory, "rev-parse", "--show-toplevel"], check=False, timeout=30
    )
    if top.ok and top.stdout.strip():
        return top.stdout.strip(), True
    return directory, False


def store_exposed(
    nodes: Sequence[KeyedNode], *, base_dir: str, flake: str, cwd: str = "."
) -> list[str]:
    """Key `file` sources that Nix would copy into the (world-readable) store when it evaluates
    `flake`: a file inside a `path:` flake, or tracked in a git flake. One message per key."""
    found = _flake_root(flake, os.path.abspath(cwd))
    if found is None:
        return []
    root, git_only = os.path.realpath(found[0]), found[1]
    inside: list[tuple[str, Key, str]] = []
    for node in nodes:
        for spec in key_specs(node):
            if spec.kind is not SourceKind.FILE:
                continue
            real = os.path.realpath(source_file(spec, base_dir))
            if os.path.commonpath([root, real]) == root:
                inside.append((node.name, spec, real))
    if git_only and inside:
        listed = process.run(
            [
                "git",
                "-C",
                root,
                "ls-files",
                "-z",
                "--",
                *(os.path.relpath(r, root) for *_, r in inside),
            ],
            check=False,
            timeout=60,
        )
        tracked = {os.path.join(root, p) for p in listed.stdout.split("\0") if p}
        inside = [entry for entry in inside if entry[2] in tracked]
    how = "tracked in the git flake" if git_only else "inside the path: flake"
    return [
        f"{name}: key {spec.name!r}: {source_file(spec, base_dir)} is {how} {root}: "
        "evaluating it would copy the secret into the world-readable Nix store (keep the file "
        "outside the flake, or use a command source such as sops -d)"
        for name, spec, _ in inside
    ]


def refuse_store_exposed(
    nodes: Sequence[KeyedNode], *, base_dir: str, flake: str, cwd: str = "."
) -> None:
    """Raise UsageError (before anything is evaluated) if `store_exposed` finds a key."""
    problems = store_exposed(nodes, base_dir=base_dir, flake=flake, cwd=cwd)
    if problems:
        raise UsageError("\n".join(problems))


def summary(results: Sequence[KeysResult]) -> tuple[int, int]:
    """(keys sent, keys already in place) over several nodes."""
    return sum(len(r.sent) for r in results), sum(len(r.unchanged) for r in results)
