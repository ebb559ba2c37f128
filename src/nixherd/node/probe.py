"""What a node runs now, read in one ssh round trip: current system, booted system, profile,
generation, boot id, and the activation in flight if there is one.

The remote side is a constant POSIX sh script; the one value it takes (the store path the deploy
wants) is a positional argument, so it is data, never code.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from nixherd.errors import CommandError, NixherdError
from nixherd.node.goal import Goal
from nixherd.node.protocol import BootMark, Lock
from nixherd.run.ssh import Connection

PROFILE = "/nix/var/nix/profiles/system"

# `valid` asks nix-store only when the path exists, so an up-to-date node costs no nix process.
SCRIPT = r"""p=/nix/var/nix/profiles/system
c=$(readlink /run/current-system 2>/dev/null)
printf 'current=%s\n' "$c"
printf 'booted=%s\n' "$(readlink /run/booted-system 2>/dev/null)"
if [ -L "$p" ]; then
  g=$(readlink "$p")
  printf 'profile=%s\n' "$(readlink -f "$p")"
  printf 'generation=%s\n' "$g"
  printf 'generation_time=%s\n' "$(stat -c %Y "${p%/*}/${g##*/}" 2>/dev/null)"
fi
printf 'boot_id=%s\n' "$(cat /proc/sys/kernel/random/boot_id 2>/dev/null)"
printf 'pid1=%s\n' "$(cat /proc/1/stat 2>/dev/null)"
if [ -n "$1" ]; then
  if [ "$c" = "$1" ] || { [ -e "$1" ] && nix-store --check-validity "$1" >/dev/null 2>&1; }; then
    echo valid=1
  fi
fi
# An activation in flight (its lock is held until it settles), and the system it activates.
if l=$(readlink /run/nixherd/lock 2>/dev/null); then
  printf 'lock=%s\n' "$l"
  set -f
  set -- $l
  case ${1:-} in
  *[!0-9a-f]* | '') ;;
  *)
    if { IFS= read -r t <"/run/nixherd/act-$1/toplevel"; } 2>/dev/null; then
      printf 'lock_toplevel=%s\n' "$t"
    fi
    ;;
  esac
fi
"""

# The boot identity as a shell function setting `boot` (the watchdog has the same): the kernel's
# boot id, "/", and pid 1's start time, as `boot_marker` computes it from the probe's output.
BOOTMARK_SH = r"""bootmark() {
    { IFS= read -r bm_id </proc/sys/kernel/random/boot_id; } 2>/dev/null || bm_id=
    { IFS= read -r bm_stat </proc/1/stat; } 2>/dev/null || bm_stat=
    set -f
    set -- ${bm_stat##*") "}
    set +f
    if [ $# -ge 20 ]; then shift 19; else set -- ""; fi
    boot="$bm_id/$1"
}"""

_GENERATION = re.compile(r"-(\d+)-link$")
# ssh exits 255 when it cannot reach or log in to the node (the remote command never ran).
SSH_FAILED = 255
PROBE_TIMEOUT = 60.0


class UnreachableError(NixherdError):
    """ssh could not reach or log in to the node."""


@dataclass(frozen=True, slots=True)
class NodeState:
    """A node's systems as seen right now."""

    current: str | None  # /run/current-system
    profile: str | None  # what the system profile points at (the next boot's system)
    generation: int | None  # the system profile's generation number
    generation_time: int | None  # when that generation was made (epoch seconds)
    boot: BootMark  # changes across every boot (a lab host's boot too)
    has_target: bool = False  # the wanted store path is valid on the node
    # The lock of an activation in flight ("ID PID SINCE BY"; read as root only) and the system
    # it activates (None: no activation holds the node).
    lock: str | None = None
    lock_toplevel: str | None = None
    booted: str | None = None  # /run/booted-system: the system the node started at its last boot

    @property
    def holder(self) -> Lock | None:
        """Who holds the node's activation lock, if anyone."""
        return None if self.lock is None else Lock.from_link(self.lock)

    @property
    def in_flight(self) -> str | None:
        """The id of the activation in flight on the node, if any."""
        holder = self.holder
        return None if holder is None else holder.activation_id

    def up_to_date(self, goal: Goal, toplevel: str, *, reboot: bool = False) -> bool:
        """Whether `goal` would change nothing on this node (so nothing is copied or run).

        A node with an activation in flight is up to date for no goal that activates: until
        that activation is confirmed, it may still roll the node back. With `reboot` (`apply
        --reboot`), the node must also have BOOTED `toplevel`: a profile set by an earlier
        `apply boot` is not yet a reboot into it.
        """
        if goal.activates and self.lock is not None:
            return False
        if reboot and self.booted != toplevel:
            return False
        match goal:
            case Goal.BUILD:
                return True
            case Goal.PUSH:
                return self.has_target
            case Goal.SWITCH:
                return self.current == toplevel and self.profile == toplevel
            case Goal.BOOT:
                return self.profile == toplevel
            case Goal.TEST | Goal.DRY_ACTIVATE:
                return self.current == toplevel


def parse(output: str) -> NodeState:
    values: dict[str, str] = {}
    for line in output.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            values[key] = value.strip()
    generation = _GENERATION.search(values.get("generation", ""))
    gen_time = values.get("generation_time", "")
    return NodeState(
        current=values.get("current") or None,
        booted=values.get("booted") or None,
        profile=values.get("profile") or None,
        generation=int(generation.group(1)) if generation else None,
        generation_time=int(gen_time) if gen_time.isdigit() else None,
        boot=boot_marker(values.get("boot_id", ""), values.get("pid1", "")),
        has_target=values.get("valid") == "1",
        lock=values.get("lock") or None,
        lock_toplevel=values.get("lock_toplevel") or None,
    )


def boot_marker(boot_id: str, pid1_stat: str) -> BootMark:
    """An id that changes on every boot: the kernel's boot id plus the start time of pid 1.

    A lab host reboots without a new kernel (same boot_id) but with a new pid 1, whose start time
    (field 22 of /proc/1/stat, after the parenthesised command name) changes.
    """
    _, _, rest = pid1_stat.rpartition(") ")
    fields = rest.split()
    start = fields[19] if len(fields) > 19 else ""
    return f"{boot_id}/{start}"


def probe(
    conn: Connection,
    toplevel: str | None = None,
    *,
    multiplex: bool = True,
    timeout: float = PROBE_TIMEOUT,
    elevate: bool = False,
) -> NodeState:
    """Read the node's state; with `toplevel`, also whether that path is already there.

    With `elevate` (sudo for a non-root user, nothing more for root) it also sees an activation
    in flight: the watchdog's lock is root's alone.
    """
    try:
        result = conn.run(
            ["sh", "-c", SCRIPT, "nixherd-probe", toplevel or ""],
            multiplex=multiplex,
            elevate=elevate,
            timeout=timeout,
            what="probe",
        )
    except CommandError as exc:
        if exc.returncode == SSH_FAILED:
            raise UnreachableError(
                f"cannot reach {conn.target.describe()}: {exc.tail(3) or 'ssh failed'}"
            ) from exc
        raise
    return parse(result.stdout)
