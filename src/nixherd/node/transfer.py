"""Files on a node over ssh: their fingerprints in one round trip, atomic writes fed on stdin.

The bytes of a file only ever travel on the ssh process's stdin: never in argv, env, a log or an
error message. The remote side is POSIX sh plus GNU coreutils (`stat`, `mktemp`, `dd`, `chown`,
`chmod`, `mv -T`, `ln -P`, `sha256sum`, `base64`) and /proc, which every NixOS and Debian host
has (dash or bash as sh); nothing is installed there, and no perl or python is assumed (neither
is guaranteed on NixOS). Each script takes its values as positional arguments
(`sh -c SCRIPT sh ARG...`), so paths and owners are data, never code.

The rule: nothing done as root on the node follows a path component another user controls. A
file's directory may belong to an application user (a secret in its home) who can rename,
replace or symlink anything in it at any moment, while nixherd works there as root. So:

- The directory is entered one component at a time from `/` (`cd -P` into a name just seen by
  `lstat`, then the inode of `.` checked against it), never by a path resolved in one go. The
  working directory then pins it: later steps use names relative to it, one level deep, and
  nothing above can be swapped under them. A symlink on the way is followed only when it sits in
  a directory no other user can write (root-owned, not group/other-writable, or sticky with a
  root-owned link: /var/run -> /run); anywhere else it is refused, not followed.
- The temp file is created by the shell itself with O_CREAT|O_EXCL (`set -C` on a fresh random
  name), which never follows a symlink, and is then used through that open descriptor only:
  `cat >&3` writes it, `chown`/`chmod` reach it as /proc/self/fd/3 (a magic link to the open
  file, not a name another user can re-point). Before the rename the name is checked to still
  be that file; `mv -T` renames it over the file's name, replacing a symlink there (rename(2)
  never follows one) and refusing a directory (plain `mv` would move the file into it).
- Reading (fingerprints, `data diff`) takes only regular files with one link: a symlink, a
  directory, a FIFO or a device is reported as such and never opened. `dd iflag=nofollow,
  nonblock` opens the name without following a symlink planted after the `lstat` and without
  blocking on a FIFO, and the `lstat` is compared after the read: a file swapped meanwhile is
  reported as changed, its bytes dropped. (Hard links: fs.protected_hardlinks, on by systemd's
  default, stops a user linking a file they cannot read into their directory.)
- The backup of the previous file is a hard link of whatever was at the name (`ln -P`: a
  symlink is kept as a symlink, not copied through) renamed into place, and restoring is a
  rename back: nothing reads or writes through a name.

What the directory's owner can still do is what owning it allows anyway: make a step fail (a
file at the temp name first, a directory at the file's name), or swap the temp name in the
instant between the check and the rename, which installs their own file at a name in their own
directory. Root's writes, chown and chmod only ever reach the file nixherd created, and the key
in it carries the owner, group and mode asked before it can be renamed anywhere.
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

from nixherd.errors import CommandError, NixherdError
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


# Shared by every script. `nh_walk DIR [create]` makes DIR (absolute) the working directory as
# the module docstring says, creating missing directories (root, 0755) with `create`; on failure
# it returns 1 with the reason in $nh_why ($nh_missing set when a directory does not exist).
# `nh_file NAME` says what NAME is in the working
# directory without following it: $nh_kind (absent, symlink, directory, special, linked, file),
# $nh_sig (what must not change while it is read) and $nh_stat (user:group:uid:gid:mode).
_LIB = r"""
unset CDPATH
LC_ALL=C
export LC_ALL
nh_entry() {
  nh_type=none nh_open=no nh_id=
  set -- $(stat -c '%u %f %d:%i' -- . "./$1" 2>/dev/null)
  if [ $# -lt 3 ]; then nh_why="cannot examine ${nh_in:-/}"; return 1; fi
  # The directory just entered is checked here, by the same stat as its entry.
  if [ -n "$nh_here" ] && [ "$3" != "$nh_here" ]; then
    nh_why="${nh_in:-/} changed while it was entered"
    return 1
  fi
  nh_here=
  [ $# -ge 6 ] || return 0
  case $(( 0x$5 & 0xF000 )) in
    16384) nh_type=dir ;;
    40960) nh_type=link ;;
    *) nh_type=other ;;
  esac
  nh_id=$6
  # May a user other than root replace the entry? The directory is theirs, or writable by a
  # group or everyone, unless it is sticky and the entry is root's.
  if [ "$1" != 0 ]; then
    nh_open=yes
  elif [ $(( 0x$2 & 18 )) != 0 ] && ! { [ $(( 0x$2 & 512 )) != 0 ] && [ "$4" = 0 ]; }; then
    nh_open=yes
  fi
}
nh_here_ok() {
  [ -z "$nh_here" ] || [ "$(stat -c %d:%i .)" = "$nh_here" ] \
    || { nh_why="${nh_in:-/} changed while it was entered"; return 1; }
  nh_here=
}
nh_walk() {
  nh_todo=$1 nh_create=${2-} nh_hops=0 nh_at= nh_in= nh_here= nh_missing=
  cd -P / || { nh_why="cannot enter /"; return 1; }
  while :; do
    case $nh_todo in
      '') nh_here_ok; return ;;
      /*)
        cd -P / || { nh_why="cannot enter /"; return 1; }
        nh_todo=${nh_todo#/} nh_at= nh_in= nh_here=
        continue
        ;;
    esac
    nh_c=${nh_todo%%/*}
    case $nh_todo in */*) nh_todo=${nh_todo#*/} ;; *) nh_todo= ;; esac
    case $nh_c in
      '' | .) continue ;;
      ..)
        # Up from where we are, by the kernel's own path of it, walked again from /.
        nh_here_ok || return 1
        nh_up=$(pwd -P) || { nh_why="cannot find the parent of $nh_at"; return 1; }
        nh_todo=${nh_up%/*}/$nh_todo
        continue
        ;;
    esac
    nh_at=$nh_at/$nh_c
    nh_entry "$nh_c" || return 1
    if [ "$nh_type" = none ] && [ -n "$nh_create" ]; then
      mkdir -m 755 -- "./$nh_c" 2>/dev/null
      nh_entry "$nh_c" || return 1
    fi
    case $nh_type in
      dir)
        # Entered by the name just examined; that it is the directory examined (not a
        # symlink swapped in since) is checked by the next stat of ".".
        cd -P -- "./$nh_c" 2>/dev/null || { nh_why="cannot enter $nh_at"; return 1; }
        nh_here=$nh_id nh_in=$nh_at
        ;;
      link)
        if [ "$nh_open" = yes ]; then
          nh_why="$nh_at is a symlink in a directory another user can write (not followed)"
          return 1
        fi
        nh_hops=$((nh_hops + 1))
        if [ "$nh_hops" -gt 40 ]; then nh_why="too many symlinks at $nh_at"; return 1; fi
        nh_t=$(readlink -- "./$nh_c") || { nh_why="cannot read the link $nh_at"; return 1; }
        nh_todo=$nh_t/$nh_todo nh_at=${nh_at%/*}
        ;;
      none) nh_why="$nh_at does not exist" nh_missing=yes; return 1 ;;
      *) nh_why="$nh_at is not a directory"; return 1 ;;
    esac
  done
}
nh_file() {
  nh_kind=absent nh_sig= nh_stat=
  set -- $(stat -c '%f %h %d:%i:%s:%Y:%Z:%u:%g:%a %U:%G:%u:%g:%a' -- "./$1" 2>/dev/null)
  [ $# -ge 4 ] || return 0
  case $(( 0x$1 & 0xF000 )) in
    40960) nh_kind=symlink ;;
    16384) nh_kind=directory ;;
    32768) if [ "$2" = 1 ]; then nh_kind=file; else nh_kind=linked; fi ;;
    *) nh_kind=special ;;
  esac
  nh_sig=$3 nh_stat=$4
}
nh_read() {
  # The bytes of regular file $1 (just examined by nh_file) on stdout through the filter in
  # $2...; fails if it could not be read whole or is not the file examined any more.
  nh_name=$1 nh_was=$nh_sig
  shift
  nh_r=$({ { dd if="./$nh_name" iflag=nofollow,nonblock bs=65536 status=none \
    || echo failed >&3; } | "$@" >&4; } 3>&1)
  nh_file "$nh_name"
  [ -z "$nh_r" ] && [ "$nh_kind" = file ] && [ "$nh_sig" = "$nh_was" ]
}
"""

# Per path, one line: "file <sha256> <user>:<group>:<uid>:<gid>:<octal mode>", or what the path
# is instead: "absent", "symlink", "directory", "special", "linked", "changed" (while read), or
# "unsafe <why>" (its directory cannot be reached without following another user's symlink).
_FINGERPRINTS = r"""
for f do
  (
    if ! nh_walk "${f%/*}/"; then
      if [ -n "$nh_missing" ]; then echo absent; else printf 'unsafe %s\n' "$nh_why"; fi
      exit 0
    fi
    nh_file "${f##*/}"
    [ "$nh_kind" = file ] || { echo "$nh_kind"; exit 0; }
    st=$nh_stat
    if h=$(nh_read "${f##*/}" sha256sum 4>&1); then
      printf 'file %s %s\n' "${h%% *}" "$st"
    else
      echo changed
    fi
  )
done
"""

# Per path: "file <user>:<group>:<uid>:<gid>:<mode>", the bytes base64-encoded on the following
# lines, then "." (or "! changed" when the file changed while it was read); or one line saying
# what the path is instead (as in _FINGERPRINTS) and ".".
_CONTENTS = r"""
for f do
  (
    if ! nh_walk "${f%/*}/"; then
      if [ -n "$nh_missing" ]; then echo absent; else printf 'unsafe %s\n' "$nh_why"; fi
      echo .
      exit 0
    fi
    nh_file "${f##*/}"
    [ "$nh_kind" = file ] || { printf '%s\n.\n' "$nh_kind"; exit 0; }
    printf 'file %s\n' "$nh_stat"
    if nh_read "${f##*/}" base64 4>&1; then echo .; else echo '! changed'; fi
  )
done
"""

# Write stdin to a new temp file beside DEST, set its owner and mode, then rename it over DEST.
# With a BACKUP name (in DEST's directory), what was at DEST is kept there, and "previous" or
# "none" says whether there was anything. A refusal is one line "refused <why>" and exit 3.
_WRITE = r"""
set -u
dest=$1 owner=$2 mode=$3 backup=${4-}
refuse() { printf 'refused %s\n' "$*"; exit 3; }
nh_walk "${dest%/*}/" create || refuse "$nh_why"
base=${dest##*/}
nh_file "$base"
[ "$nh_kind" != directory ] || refuse "$dest is a directory"
if [ -n "$backup" ]; then
  nh_file "$backup"
  [ "$nh_kind" != directory ] || refuse "${dest%/*}/$backup is a directory"
fi
umask 077
tmp=$(mktemp -u .nixherd.XXXXXXXXXX) || exit 1
trap 'exit 1' HUP INT TERM
set -C
{
  set +C
  trap 'rm -f -- "./$tmp"' EXIT
  # fd 3 is the file this shell just created (O_EXCL): from here on it is used, not its name.
  fd=$(stat -L -c '%d:%i %u %h %s %f' /proc/self/fd/3) || exit 1
  set -- $fd
  if [ "$2 $3 $4 $(( 0x$5 & 0xF000 ))" != "0 1 0 32768" ] \
    || [ "$(stat -c %d:%i -- "./$tmp")" != "$1" ]; then
    refuse "the temp file for $dest is not the one just created"
  fi
  id=$1
  cat >&3 || exit 1
  chown -- "$owner" /proc/self/fd/3 || exit 1
  chmod -- "$mode" /proc/self/fd/3 || exit 1
  if [ -n "$backup" ]; then
    nh_file "$base"
    if [ "$nh_kind" = absent ]; then
      rm -f -- "./$backup"
      echo none
    else
      keep=$(mktemp -u .nixherd.XXXXXXXXXX) || exit 1
      ln -P -- "./$base" "./$keep" || exit 1
      mv -f -T -- "./$keep" "./$backup" || { rm -f -- "./$keep"; exit 1; }
      echo previous
    fi
  fi
  if [ "$(stat -c %d:%i -- "./$tmp" 2>/dev/null)" != "$id" ]; then
    refuse "the temp file for $dest was replaced while it was written" \
      "(another user can write ${dest%/*}/): nothing installed"
  fi
  mv -f -T -- "./$tmp" "./$base" || exit 1
  trap - EXIT
} 3>"./$tmp" || exit 1
"""

# Put back what _WRITE replaced: the backup over DEST, or nothing at DEST if there was none.
_RESTORE = r"""
set -u
dest=$1 backup=$2 had=$3
refuse() { printf 'refused %s\n' "$*"; exit 3; }
nh_walk "${dest%/*}/" || refuse "$nh_why"
base=${dest##*/}
nh_file "$base"
[ "$nh_kind" != directory ] || refuse "$dest is a directory"
if [ "$had" = previous ]; then
  mv -f -T -- "./$backup" "./$base"
else
  rm -f -- "./$base"
fi
"""


def _sh(script: str, *args: str) -> list[str]:
    return ["sh", "-c", script, "sh", *args]


def fingerprints(conn: Connection, paths: Sequence[str]) -> list[RemoteFile | NotAFile]:
    """The current state of each path on the node, in one ssh round trip."""
    if not paths:
        return []
    result = conn.run(
        _sh(_LIB + _FINGERPRINTS, *paths),
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
    result = conn.run(
        _sh(_LIB + _CONTENTS, *paths), elevate=True, timeout=TIMEOUT, what="reading files"
    )
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


def _refused(conn: Connection, result: Result) -> None:
    """Raise RefusedError if a script refused (exit 3, "refused <why>" on stdout)."""
    if result.returncode == 3:
        for line in result.stdout.splitlines():
            if line.startswith("refused "):
                raise RefusedError(conn.target.node, line.removeprefix("refused "))


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
    result = conn.run(
        _sh(_LIB + _WRITE, *args),
        elevate=True,
        input=data,
        timeout=TIMEOUT,
        check=False,
        what=f"writing {dest}",
    )
    _refused(conn, result)
    if not result.ok:
        raise CommandError(
            result.argv,
            result.returncode,
            result.stdout + result.stderr,
            what=f"writing {dest}",
            node=conn.target.node,
        )
    return result.stdout.strip().endswith("previous")


def restore(conn: Connection, dest: str, backup: str, *, had_previous: bool) -> None:
    """Undo a `write` made with `backup`: the previous file back, or none if there was none."""
    result = conn.run(
        _sh(
            _LIB + _RESTORE,
            dest,
            _backup_name(dest, backup),
            "previous" if had_previous else "none",
        ),
        elevate=True,
        timeout=TIMEOUT,
        check=False,
        what=f"restoring {dest}",
    )
    _refused(conn, result)
    if not result.ok:
        raise CommandError(
            result.argv,
            result.returncode,
            result.stdout + result.stderr,
            what=f"restoring {dest}",
            node=conn.target.node,
        )
