"""The sh scripts that read and write files on a node for `transfer`, and the rule they keep.

Each script takes its values as positional arguments (`sh -c LIB+SCRIPT sh ARG...`, see `argv`),
so paths and owners are data, never code. `transfer` runs them and reads their answers.

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

# Shared by every script. `nh_walk DIR [create]` makes DIR (absolute) the working directory as
# this module's docstring says, creating missing directories (root, 0755) with `create`; on failure
# it returns 1 with the reason in $nh_why ($nh_missing set when a directory does not exist).
# `nh_file NAME` says what NAME is in the working
# directory without following it: $nh_kind (absent, symlink, directory, special, linked, file),
# $nh_sig (what must not change while it is read) and $nh_stat (user:group:uid:gid:mode).
LIB = r"""
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
FINGERPRINTS = r"""
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
# what the path is instead (as in FINGERPRINTS) and ".".
CONTENTS = r"""
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
WRITE = r"""
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

# Put back what WRITE replaced: the backup over DEST, or nothing at DEST if there was none.
RESTORE = r"""
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


def argv(script: str, *args: str) -> list[str]:
    """The remote argv running `script` (with the shared functions) on `args`."""
    return ["sh", "-c", LIB + script, "sh", *args]
