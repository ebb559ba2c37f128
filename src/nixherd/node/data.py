"""Runtime data: per-node files rendered from the inventory's vars and pushed without a rebuild.

A data file (`[nodes.X.data.<name>]`) is rendered on the deployer as JSON, TOML or a text
template, compared with the node's copy (one round trip for all files of a node), and only when
it differs written atomically (temp file + rename, the previous file kept as `<path>.nixherd-prev`),
after which its `reload` command runs on the node. A failing reload puts the previous files back
(and runs the reload once more so the service sees them again); the node is reported failed.
A reload that does not finish in RELOAD_TIMEOUT is killed on the node with its whole session
(everything it started there, whatever process group), the previous files are put back, and the
node is reported failed; the deployer's own ssh timeout is only a backstop behind that.

Only regular files are read back (for `data diff` and the unchanged check): a symlink at a data
path is reported as such and replaced by a push, never followed, and nothing is read or written
through another user's symlink on the way (see `transfer`).

Text files use the tiny template language of `nixherd.inventory.template` (no expressions, no code).
"""

from __future__ import annotations

import datetime
import difflib
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from nixherd.errors import CommandError, NixherdError
from nixherd.events import EventSink, LogLine, Stage, StageFinished, StageStarted
from nixherd.inventory import template as tmpl
from nixherd.inventory.entries import DATA_BACKUP_SUFFIX, DataFile
from nixherd.inventory.entries import Format as Format
from nixherd.node import transfer
from nixherd.run.ssh import Connection

BACKUP_SUFFIX = DATA_BACKUP_SUFFIX
RELOAD_TIMEOUT = 300.0
# After the reload's session got SIGTERM, how long before SIGKILL.
KILL_GRACE = 5
# The line the reload wrapper ends with when it killed a reload that ran out of time.
_TIMED_OUT = "nixherd: reload timed out"

# Run a reload (argv after the timeout) on the node with a deadline kept on the node itself, so
# that neither a slow deployer nor a dropped ssh leaves it running. The reload is the leader of a
# session of its own (`setsid`, util-linux, on NixOS and Debian alike); a timer in another session
# signals this shell when time is up, and then every process of the reload's session (found in
# /proc: a child in a process group of its own is still in the session) gets SIGTERM, then
# SIGKILL after KILL_GRACE. The timer is stopped as soon as the reload ends.
_RELOAD = r"""
t=$1 grace=$2
shift 2
fired=0
trap 'fired=1' USR1
setsid "$@" &
pid=$!
# The timer signals only its parent: were this shell gone, its pid may name another process.
setsid sh -c 'sleep "$1" && read -r s </proc/$$/stat && set -- "$2" ${s##*) } &&
  [ "$3" = "$1" ] && kill -USR1 "$1"' sh "$t" "$$" </dev/null >/dev/null 2>&1 &
timer=$!
wait "$pid"
rc=$?
if [ "$fired" = 1 ] && kill -0 "$pid" 2>/dev/null; then
  members() {
    for s in /proc/[0-9]*/stat; do
      read -r l 2>/dev/null <"$s" || continue
      set -- ${l##*) }
      [ "$4" = "$pid" ] && [ "$1" != Z ] && { p=${s#/proc/}; echo "${p%/stat}"; }
    done
  }
  kill -s TERM -- "-$pid" $(members) 2>/dev/null
  n=0
  while [ -n "$(members)" ] && [ "$n" -lt "$((grace * 10))" ]; do
    sleep 0.1
    n=$((n + 1))
  done
  kill -s KILL -- "-$pid" $(members) 2>/dev/null
  wait "$pid"
  echo "nixherd: reload timed out after $t s: killed it and its session"
  exit 124
fi
[ "$fired" = 1 ] && { wait "$pid"; rc=$?; }
kill -s TERM -- "-$timer" "$timer" 2>/dev/null
exit "$rc"
"""


class DataError(NixherdError):
    """A data file could not be rendered or pushed; the message names the node and the file."""


class DataNode(Protocol):
    """What this module needs of an inventory node."""

    @property
    def name(self) -> str: ...

    @property
    def vars(self) -> Mapping[str, Any]: ...

    @property
    def data(self) -> Mapping[str, DataFile]: ...


def _lookup(vars: Mapping[str, Any], path: Sequence[str], what: str) -> Any:
    value: Any = vars
    for i, key in enumerate(path):
        if isinstance(value, Mapping) and key in value:
            value = value[key]
        elif isinstance(value, list) and key.isdigit() and int(key) < len(value):
            value = value[int(key)]
        else:
            where = ".".join(["vars", *path[: i + 1]])
            raise DataError(f"{what}: {where} is not defined")
    return value


def _scalar_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    return json.dumps(_sorted(value), sort_keys=True, ensure_ascii=False, default=_json_default)


def _json_default(value: object) -> str:
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    raise TypeError(f"cannot render a {type(value).__name__}")


def _sorted(value: Any) -> Any:
    """Tables with keys sorted, recursively: the rendering must not depend on inventory order."""
    if isinstance(value, Mapping):
        return {key: _sorted(value[key]) for key in sorted(value)}
    if isinstance(value, list):
        return [_sorted(item) for item in value]
    return value


def render(spec: DataFile, vars: Mapping[str, Any], *, node: str) -> bytes:
    """The bytes of the file for a node with these vars; DataError if a var is missing."""
    what = f"{node}: data {spec.name!r}"
    if spec.format is Format.TEXT:
        assert spec.template is not None

        def var(path: list[str]) -> str:
            return _scalar_text(_lookup(vars, path, what))

        return tmpl.render(spec.template, name=node, var=var).encode()
    value: Any = vars if spec.source is None else _lookup(vars, tmpl.var_path(spec.source), what)
    if spec.format is Format.JSON:
        text = json.dumps(
            _sorted(value), indent=2, sort_keys=True, ensure_ascii=False, default=_json_default
        )
        return (text + "\n").encode()
    if not isinstance(value, Mapping):
        raise DataError(
            f"{what}: TOML needs a table, vars.{spec.source} is a {type(value).__name__}"
        )
    import tomlkit  # only TOML files need it; keeps the module light for the others

    return tomlkit.dumps(_sorted(value)).encode()


@dataclass(frozen=True, slots=True)
class Rendered(transfer.Payload):
    spec: DataFile
    content: bytes


def data_specs(node: DataNode) -> list[DataFile]:
    """The node's data files, sorted by name."""
    return [data_file for _, data_file in sorted(node.data.items())]


def render_node(node: DataNode) -> list[Rendered]:
    """Every data file of the node rendered (before anything on the node is touched)."""
    return [Rendered(spec, render(spec, node.vars, node=node.name)) for spec in data_specs(node)]


@dataclass(frozen=True, slots=True)
class FileDiff:
    """How one data file on a node differs from its rendering."""

    name: str
    path: str
    exists: bool
    content_diff: str  # unified diff, "" when the content is the same
    ownership: str | None  # "root:root 0600 -> app:app 0640" when only that differs
    # "file" (a regular file, read), "absent", or what stands there instead and was not read:
    # "symlink", "directory", "special", "linked", "changed", "unsafe" (see transfer.Kind).
    state: str = "file"
    note: str = ""  # for a path that is not a regular file: what it is, in words

    @property
    def changed(self) -> bool:
        return self.state != "file" or bool(self.content_diff) or self.ownership is not None


def diff_node(conn: Connection, node: DataNode, *, emit: EventSink) -> list[FileDiff]:
    """What `push` would change on the node, file by file (one round trip)."""
    rendered = render_node(node)
    if not rendered:
        return []
    emit(StageStarted(node.name, Stage.DATA))
    started = time.monotonic()
    current = transfer.contents(conn, [item.spec.path for item in rendered])
    diffs = [_diff(node.name, item, remote) for item, remote in zip(rendered, current, strict=True)]
    emit(StageFinished(node.name, Stage.DATA, time.monotonic() - started))
    return diffs


def _diff(
    node: str, item: Rendered, remote: transfer.RemoteContent | transfer.NotAFile
) -> FileDiff:
    spec = item.spec
    # Whatever is not a regular file was not read: the diff is against nothing.
    is_file = isinstance(remote, transfer.RemoteContent)
    old = remote.data if isinstance(remote, transfer.RemoteContent) else b""
    lines = difflib.unified_diff(
        old.decode(errors="replace").splitlines(keepends=True),
        item.content.decode(errors="replace").splitlines(keepends=True),
        fromfile=f"{node}:{spec.path}" if is_file else "/dev/null",
        tofile=f"{node}:{spec.path} (rendered)",
    )
    text = "".join(
        line if line.endswith("\n") else line + "\n\\ No newline at end of file\n" for line in lines
    )
    if not isinstance(remote, transfer.RemoteContent):
        exists = remote.kind is not transfer.Kind.ABSENT
        note = remote.describe() if exists else ""
        return FileDiff(spec.name, spec.path, exists, text, None, remote.kind.value, note)
    ownership = None
    state = remote.state
    want = item.ownership
    if not state.matches(state.sha256, want):
        ownership = f"{state.user}:{state.group} {state.mode:04o} -> {want.owner} {want.octal}"
    return FileDiff(spec.name, spec.path, True, text, ownership)


@dataclass(frozen=True, slots=True)
class DataResult:
    """What a push did on one node."""

    node: str
    changed: tuple[str, ...] = ()
    unchanged: tuple[str, ...] = ()
    reloads: tuple[tuple[str, ...], ...] = ()


def push_node(conn: Connection, node: DataNode, *, emit: EventSink) -> DataResult:
    """Render, write the files that differ, run their reloads; restore them if a reload fails.

    Raises DataError (after restoring) when a reload fails, so the node is reported failed.
    """
    rendered = render_node(node)
    if not rendered:
        return DataResult(node.name)
    name = node.name
    emit(StageStarted(name, Stage.DATA))
    started = time.monotonic()
    same = transfer.unchanged(
        conn, [(item.spec.path, item.digest, item.ownership) for item in rendered]
    )
    todo: list[Rendered] = []
    unchanged: list[str] = []
    for item, is_same in zip(rendered, same, strict=True):
        if is_same:
            unchanged.append(item.spec.name)
        else:
            todo.append(item)
    written: list[tuple[Rendered, bool]] = []
    try:
        for item in todo:
            try:
                had = transfer.write(
                    conn,
                    item.spec.path,
                    item.content,
                    item.ownership,
                    backup=item.spec.backup,
                )
            except transfer.RefusedError as exc:
                raise DataError(f"{name}: data {item.spec.name!r}: {exc.reason}") from None
            written.append((item, had))
            emit(LogLine(name, f"data {item.spec.name}: wrote {item.spec.path}"))
    except NixherdError:
        _restore(conn, name, written, emit)
        raise
    reloads = _reloads(item for item, _ in written)
    done: list[tuple[str, ...]] = []
    for argv in reloads:
        emit(LogLine(name, f"reload: {' '.join(argv)}"))
        failure = _reload(conn, argv, on_line=lambda line: emit(LogLine(name, line)))
        if failure is not None:
            _restore(conn, name, written, emit)
            # The services saw the new files (or tried to): show them the old ones again. Not
            # a reload that hung: it would most likely hang again.
            again = [*done, argv] if failure.startswith("exited") else done
            for command in again:
                _reload(conn, command, on_line=None)
            files = ", ".join(item.spec.path for item, _ in written)
            raise DataError(
                f"{name}: reload {' '.join(argv)!r} {failure}; restored the previous {files}"
            )
        done.append(argv)
    if unchanged:
        emit(LogLine(name, f"data unchanged: {', '.join(unchanged)}"))
    emit(StageFinished(name, Stage.DATA, time.monotonic() - started))
    return DataResult(
        name, tuple(item.spec.name for item, _ in written), tuple(unchanged), tuple(done)
    )


def _reload(
    conn: Connection, argv: Sequence[str], *, on_line: Callable[[str], None] | None
) -> str | None:
    """Run one reload on the node under RELOAD_TIMEOUT; None if it succeeded, else what went
    wrong ("exited with 1", "timed out after 300 s ...")."""
    timeout = f"{RELOAD_TIMEOUT:g}"
    try:
        result = conn.run(
            ["sh", "-c", _RELOAD, "reload", timeout, str(KILL_GRACE), *argv],
            elevate=True,
            check=False,
            # The node enforces the deadline; this one only catches a node or ssh that hangs.
            timeout=RELOAD_TIMEOUT + KILL_GRACE + 30,
            on_line=on_line,
            what="reload",
        )
    except CommandError as exc:
        return f"failed ({exc.render().splitlines()[0]})"
    last = result.stdout.rstrip().rpartition("\n")[2]
    if result.returncode == 124 and last.startswith(_TIMED_OUT):
        return f"timed out after {timeout} s and was killed (with its session)"
    if result.returncode != 0:
        return f"exited with {result.returncode}"
    return None


def _reloads(items: Any) -> list[tuple[str, ...]]:
    """Distinct reload commands of the written files, in order: a shared reload runs once."""
    seen: list[tuple[str, ...]] = []
    for item in items:
        if item.spec.reload and item.spec.reload not in seen:
            seen.append(item.spec.reload)
    return seen


def _restore(
    conn: Connection, node: str, written: Sequence[tuple[Rendered, bool]], emit: EventSink
) -> None:
    for item, had in reversed(written):
        try:
            transfer.restore(conn, item.spec.path, item.spec.backup, had_previous=had)
            emit(LogLine(node, f"data {item.spec.name}: restored the previous {item.spec.path}"))
        except CommandError as exc:
            emit(LogLine(node, f"data {item.spec.name}: could not restore: {exc.tail(3)}"))
