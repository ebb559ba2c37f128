"""Files on a node over ssh: their fingerprints in one round trip, atomic writes fed on stdin.

The bytes of a file only ever travel on the ssh process's stdin: never in argv, env, a log or an
error message. The remote side is POSIX sh plus coreutils (`sha256sum`, `stat`, `mktemp`,
`base64`), which every NixOS host has; nothing is installed there. Each script takes its values
as positional arguments (`sh -c SCRIPT sh ARG...`), so paths and owners are data, never code.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass

from nixherd.errors import CommandError
from nixherd.ssh import Connection

# A remote step that hangs (a full disk, a stuck sudo) must not hold a node forever.
TIMEOUT = 120.0

# user and group: login names or numeric ids; checked again here because they reach argv.
NAME_RE = re.compile(r"^(?:[A-Za-z_][A-Za-z0-9_.-]{0,31}\$?|[0-9]{1,10})$")
MODE_RE = re.compile(r"^0?[0-7]{3}$")


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


# One line per path: "<sha256> <user>:<group>:<uid>:<gid>:<octal mode>", or "-" when the path is
# not a readable regular file.
_FINGERPRINTS = r"""
for f do
  if [ -f "$f" ]; then
    if s=$(stat -c '%U:%G:%u:%g:%a' -- "$f") && h=$(sha256sum < "$f"); then
      printf '%s %s\n' "${h%% *}" "$s"
      continue
    fi
  fi
  echo -
done
"""

# Per path: "present <user>:<group>:<uid>:<gid>:<mode>" or "absent", the file base64-encoded
# on the following lines, then ".".
_CONTENTS = r"""
for f do
  if [ -f "$f" ]; then
    printf 'present %s\n' "$(stat -c '%U:%G:%u:%g:%a' -- "$f")"
    base64 < "$f" || exit 1
  else
    echo absent
  fi
  echo .
done
"""

# Write stdin to a temp file next to DEST, set owner and mode, then rename over DEST. With a
# BACKUP path, the previous DEST is kept there (a hard link, so DEST itself is only ever
# replaced by the rename) and "previous" or "none" says whether there was one.
_WRITE = r"""
set -eu
dest=$1 owner=$2 mode=$3 backup=${4-}
dir=${dest%/*}
[ -n "$dir" ] || dir=/
umask 022
mkdir -p -- "$dir"
umask 077
tmp=$(mktemp -- "$dir/.nixherd.XXXXXXXX")
trap 'rm -f -- "$tmp"' EXIT
trap 'exit 1' HUP INT TERM
cat > "$tmp"
chown -- "$owner" "$tmp"
chmod -- "$mode" "$tmp"
if [ -n "$backup" ]; then
  rm -f -- "$backup"
  if [ -e "$dest" ]; then
    ln -- "$dest" "$backup" 2>/dev/null || cp -p -- "$dest" "$backup"
    echo previous
  else
    echo none
  fi
fi
mv -f -- "$tmp" "$dest"
trap - EXIT
"""

# Put back what _WRITE replaced: the backup over DEST, or no DEST at all if there was none.
_RESTORE = r"""
set -eu
dest=$1 backup=$2 had=$3
if [ "$had" = previous ]; then
  mv -f -- "$backup" "$dest"
else
  rm -f -- "$dest"
fi
"""


def _sh(script: str, *args: str) -> list[str]:
    return ["sh", "-c", script, "sh", *args]


def fingerprints(conn: Connection, paths: Sequence[str]) -> list[RemoteFile | None]:
    """The current state of each path on the node (None: absent), in one ssh round trip."""
    if not paths:
        return []
    result = conn.run(
        _sh(_FINGERPRINTS, *paths), elevate=True, timeout=TIMEOUT, what="reading file hashes"
    )
    lines = result.stdout.splitlines()
    if len(lines) != len(paths):
        raise CommandError(result.argv, result.returncode, result.stdout, what="reading hashes")
    return [_parse_fingerprint(line) for line in lines]


def unchanged(conn: Connection, files: Sequence[tuple[str, str, Ownership]]) -> list[bool]:
    """For each (path, sha256, ownership): whether the node already holds exactly that file.

    One ssh round trip for all of them; what is not unchanged is what a write would change.
    """
    current = fingerprints(conn, [path for path, _, _ in files])
    return [
        remote is not None and remote.matches(digest, ownership)
        for (_, digest, ownership), remote in zip(files, current, strict=True)
    ]


def _parse_fingerprint(line: str) -> RemoteFile | None:
    if line == "-":
        return None
    digest, _, stat = line.partition(" ")
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


def contents(conn: Connection, paths: Sequence[str]) -> list[RemoteContent | None]:
    """The bytes of each path on the node (None: absent), in one ssh round trip.

    Only for files that are not secret (runtime data): their content comes back over stdout.
    """
    if not paths:
        return []
    result = conn.run(_sh(_CONTENTS, *paths), elevate=True, timeout=TIMEOUT, what="reading files")
    found: list[RemoteContent | None] = []
    lines = iter(result.stdout.splitlines())
    for head in lines:
        chunks: list[str] = []
        for line in lines:
            if line == ".":
                break
            chunks.append(line)
        word, _, stat = head.partition(" ")
        if word != "present":
            found.append(None)
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


def write(
    conn: Connection, dest: str, data: bytes, ownership: Ownership, *, backup: str | None = None
) -> bool:
    """Atomically replace `dest` on the node with `data` (fed on stdin) and `ownership`.

    Returns whether a previous file existed (kept at `backup` when given, for `restore`).
    """
    args = [dest, ownership.owner, ownership.octal]
    if backup is not None:
        args.append(backup)
    result = conn.run(
        _sh(_WRITE, *args), elevate=True, input=data, timeout=TIMEOUT, what=f"writing {dest}"
    )
    return result.stdout.strip() == "previous"


def restore(conn: Connection, dest: str, backup: str, *, had_previous: bool) -> None:
    """Undo a `write` made with `backup`: the previous file back, or none if there was none."""
    conn.run(
        _sh(_RESTORE, dest, backup, "previous" if had_previous else "none"),
        elevate=True,
        timeout=TIMEOUT,
        what=f"restoring {dest}",
    )
