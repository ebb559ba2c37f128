"""Files on a node over ssh: their fingerprints in one round trip, atomic writes fed on stdin.

The bytes of a file only ever travel on the ssh process's stdin: never in argv, env, a log or an
error message. The remote side is POSIX sh plus GNU coreutils (`stat`, `mktemp`, `dd`, `chown`,
`chmod`, `mv -T`, `ln -P`, `sha256sum`, `base64`) and /proc, which every NixOS and Debian host
has (dash or bash as sh); nothing is installed there, and no perl or python is assumed (neither
is guaranteed on NixOS). Each script takes its values as positional arguments
(`sh -c SCRIPT sh ARG...`), so paths and owners are data, never code.

How it stays safe where a file's directory belongs to another user, and the sh that does it,
is `transfer_sh`: the rule is its docstring.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

from nixherd.errors import CommandError, NixherdError
from nixherd.node.transfer_sh import CONTENTS, FINGERPRINTS, RESTORE, WRITE, argv
from nixherd.run.process import Result
from nixherd.run.ssh import Connection

# A remote step that hangs (a full disk, a stuck sudo) must not hold a node forever.
TIMEOUT = 120.0

# user and group: login names or numeric ids; checked again here because they reach argv.
NAME_RE = re.compile(r"^(?:[A-Za-z_][A-Za-z0-9_.-]{0,31}\$?|[0-9]{1,10})$")
MODE_RE = re.compile(r"^0?[0-7]{3}$")


class RefusedError(NixherdError):
    """A file on the node was not written (or restored): following its path would have meant
    trusting a name another user controls, or a directory stands where the file belongs."""

    def __init__(self, node: str, reason: str) -> None:
        self.node = node
        self.reason = reason
        super().__init__(f"{node}: {reason}")


class Kind(Enum):
    """What a path on the node is, when it is not a plain file nixherd reads."""

    ABSENT = "absent"
    SYMLINK = "symlink"
    DIRECTORY = "directory"
    SPECIAL = "special"  # a FIFO, socket or device
    LINKED = "linked"  # a regular file with more than one hard link
    CHANGED = "changed"  # replaced or modified while it was read
    UNSAFE = "unsafe"  # its directory is reached only through another user's symlink


_KIND_TEXT = {
    Kind.ABSENT: "does not exist",
    Kind.SYMLINK: "is a symlink (not followed; a write replaces it)",
    Kind.DIRECTORY: "is a directory",
    Kind.SPECIAL: "is not a regular file (not read)",
    Kind.LINKED: "has several hard links (not read; a write replaces it)",
    Kind.CHANGED: "changed while it was read (not shown)",
}


@dataclass(frozen=True, slots=True)
class NotAFile:
    """A path that is not a regular file nixherd may read, and why (for UNSAFE)."""

    kind: Kind
    reason: str = ""

    def describe(self) -> str:
        """What the path is, for messages: "is a symlink (not followed; ...)"."""
        if self.kind is Kind.UNSAFE:
            return f"cannot be reached safely: {self.reason}"
        return _KIND_TEXT[self.kind]


def _not_a_file(line: str) -> NotAFile | None:
    word, _, rest = line.partition(" ")
    try:
        kind = Kind(word)
    except ValueError:
        return None
    return NotAFile(kind, rest)


@dataclass(frozen=True, slots=True)
class Ownership:
    """Owner, group and permission bits a file must end up with."""

    user: str = "root"
    group: str = "root"
    mode: int = 0o400

    def __post_init__(self) -> None:
        for value in (self.user, self.group):
            if not NAME_RE.match(value):
                raise ValueError(f"unsafe user or group name {value!r}")
        if not 0 <= self.mode <= 0o777:
            raise ValueError(f"mode out of range: {self.mode:o}")

    @property
    def owner(self) -> str:
        return f"{self.user}:{self.group}"

    @property
    def octal(self) -> str:
        return f"{self.mode:04o}"


class Owned(Protocol):
    """An inventory entry that declares a file's owner, group and mode (a Key, a DataFile)."""

    @property
    def user(self) -> str: ...
    @property
    def group(self) -> str: ...
    @property
    def mode(self) -> int: ...


class Payload:
    """A file's bytes to write (`content`) and its inventory entry (`spec`): the digest and the
    ownership that `unchanged` and `write` take. Mixed into the keys' and data files' dataclasses,
    which declare both fields."""

    __slots__ = ()
    spec: Owned
    content: bytes

    @property
    def digest(self) -> str:
        return sha256(self.content)

    @property
    def ownership(self) -> Ownership:
        return Ownership(self.spec.user, self.spec.group, self.spec.mode)


def parse_mode(text: str) -> int:
    """An octal mode string such as "0400" or "640" as permission bits (no setuid and friends)."""
    if not MODE_RE.match(text):
        raise ValueError(f'mode must be an octal string like "0400", got {text!r}')
    return int(text, 8)


@dataclass(frozen=True, slots=True)
class RemoteFile:
    """What a regular file on the node is now: a digest of its content and its ownership."""

    sha256: str
    user: str
    group: str
    uid: str
    gid: str
    mode: int

    def matches(self, digest: str, want: Ownership) -> bool:
        """Whether writing content with `digest` and ownership `want` would change nothing."""
        return (
            self.sha256 == digest
            and want.user in (self.user, self.uid)
            and want.group in (self.group, self.gid)
            and self.mode == want.mode
        )


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def fingerprints(conn: Connection, paths: Sequence[str]) -> list[RemoteFile | NotAFile]:
    """The current state of each path on the node, in one ssh round trip."""
    if not paths:
        return []
    result = conn.run(
        argv(FINGERPRINTS, *paths),
        elevate=True,
        timeout=TIMEOUT,
        what="reading file hashes",
    )
    lines = result.stdout.splitlines()
    states = [_parse_fingerprint(line) for line in lines]
    if len(lines) != len(paths) or None in states:
        raise CommandError(result.argv, result.returncode, result.stdout, what="reading hashes")
    return [state for state in states if state is not None]


def unchanged(conn: Connection, files: Sequence[tuple[str, str, Ownership]]) -> list[bool]:
    """For each (path, sha256, ownership): whether the node already holds exactly that file.

    One ssh round trip for all of them; what is not unchanged is what a write would change (a
    symlink is never looked through: it is not the file, whatever it points to).
    """
    current = fingerprints(conn, [path for path, _, _ in files])
    return [
        isinstance(remote, RemoteFile) and remote.matches(digest, ownership)
        for (_, digest, ownership), remote in zip(files, current, strict=True)
    ]


def _parse_fingerprint(line: str) -> RemoteFile | NotAFile | None:
    word, _, rest = line.partition(" ")
    if word != "file":
        return _not_a_file(line)
    digest, _, stat = rest.partition(" ")
    if not re.fullmatch(r"[0-9a-f]{64}", digest):
        return None
    return _parse_stat(digest, stat)


def _parse_stat(digest: str, stat: str) -> RemoteFile | None:
    parts = stat.split(":")
    if len(parts) != 5:
        return None
    user, group, uid, gid, mode = parts
    try:
        bits = int(mode, 8) & 0o777
    except ValueError:
        return None
    return RemoteFile(digest, user, group, uid, gid, bits)


@dataclass(frozen=True, slots=True)
class RemoteContent:
    """A file read back from the node (runtime data only, never a key) and its state."""

    data: bytes
    state: RemoteFile


def contents(conn: Connection, paths: Sequence[str]) -> list[RemoteContent | NotAFile]:
    """The bytes of each path on the node that is a regular file, in one ssh round trip; for
    the others, what they are (a symlink or a directory is never read through).

    Only for files that are not secret (runtime data): their content comes back over stdout.
    """
    if not paths:
        return []
    result = conn.run(argv(CONTENTS, *paths), elevate=True, timeout=TIMEOUT, what="reading files")
    found: list[RemoteContent | NotAFile] = []
    lines = iter(result.stdout.splitlines())
    for head in lines:
        chunks: list[str] = []
        end = ""
        for line in lines:
            if line == "." or line.startswith("! "):
                end = line
                break
            chunks.append(line)
        word, _, stat = head.partition(" ")
        if word != "file":
            other = _not_a_file(head)
            if other is None or chunks or end != ".":
                raise CommandError(result.argv, 0, head, what="reading files (bad state line)")
            found.append(other)
            continue
        if end != ".":
            found.append(NotAFile(Kind.CHANGED))
            continue
        try:
            data = base64.b64decode("".join(chunks), validate=True)
        except binascii.Error as exc:
            raise CommandError(result.argv, 0, "", what="reading files (bad base64)") from exc
        state = _parse_stat(sha256(data), stat)
        if state is None:
            raise CommandError(result.argv, 0, head, what="reading files (bad stat line)")
        found.append(RemoteContent(data, state))
    if len(found) != len(paths):
        raise CommandError(result.argv, result.returncode, result.stderr, what="reading files")
    return found


def _backup_name(dest: str, backup: str) -> str:
    """The backup's name in dest's directory (the scripts work inside that directory only)."""
    directory, name = os.path.split(backup)
    if directory != os.path.dirname(dest) or name in ("", ".", ".."):
        raise ValueError(f"backup {backup!r} must be a file beside {dest!r}")
    return name


def _change(
    conn: Connection, script: list[str], what: str, *, input: bytes | None = None
) -> Result:
    """Run a script that changes a file (as root): RefusedError if it refused (exit 3,
    "refused <why>" on stdout), CommandError if it failed otherwise."""
    result = conn.run(script, elevate=True, input=input, timeout=TIMEOUT, check=False, what=what)
    if result.returncode == 3:
        for line in result.stdout.splitlines():
            if line.startswith("refused "):
                raise RefusedError(conn.target.node, line.removeprefix("refused "))
    if not result.ok:
        raise CommandError(
            result.argv,
            result.returncode,
            result.stdout + result.stderr,
            what=what,
            node=conn.target.node,
        )
    return result


def write(
    conn: Connection, dest: str, data: bytes, ownership: Ownership, *, backup: str | None = None
) -> bool:
    """Atomically replace `dest` on the node with `data` (fed on stdin) and `ownership`.

    Returns whether something was at `dest` before (kept at `backup`, a name beside `dest`,
    when given, for `restore`). RefusedError when `dest` is a directory or its directory can
    only be reached through a symlink another user controls.
    """
    args = [dest, ownership.owner, ownership.octal]
    if backup is not None:
        args.append(_backup_name(dest, backup))
    result = _change(conn, argv(WRITE, *args), f"writing {dest}", input=data)
    return result.stdout.strip().endswith("previous")


def restore(conn: Connection, dest: str, backup: str, *, had_previous: bool) -> None:
    """Undo a `write` made with `backup`: the previous file back, or none if there was none."""
    script = argv(RESTORE, dest, _backup_name(dest, backup), "previous" if had_previous else "none")
    _change(conn, script, f"restoring {dest}")
