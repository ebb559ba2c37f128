"""The machine's inotify limit, which every lab host's systemd draws on."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from nixherd.errors import LabError

LIMIT = "/proc/sys/fs/inotify/max_user_instances"
# inotify instances a host takes (systemd 3, journald 1, measured 3 per idle host), with room for
# what its units and logins add; and the limit the lab raises to when it must.
PER_HOST = 6
RAISED = 1024


def instances_in_use() -> int:
    """inotify instances open on the machine (root's: the lab's and the machine's own)."""
    count = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    if os.readlink(f"/proc/{pid}/fd/{fd}") == "anon_inode:inotify":
                        count += 1
    return count


def ensure_instances(new_hosts: int) -> list[str]:
    """Raise fs.inotify.max_user_instances when the hosts about to start would exhaust it.

    Every systemd is a root process of the one kernel, and the limit counts root's inotify
    instances machine-wide (inotify(7), "/proc interfaces"). Debian's default, 128, lets about
    40 hosts boot; past it systemd exits at start ("Too many open files"). The lab raises it
    (as machines running many containers do) and says so; it never lowers it.
    """
    try:
        limit = int(Path(LIMIT).read_text())
    except (OSError, ValueError):
        return []
    needed = instances_in_use() + PER_HOST * new_hosts
    if needed <= limit:
        return []
    raised = max(needed, RAISED)
    try:
        Path(LIMIT).write_text(f"{raised}\n")
    except OSError as exc:
        raise LabError(
            f"{new_hosts} more hosts need about {needed} inotify instances, the machine allows "
            f"{limit} ({LIMIT}) and raising it failed: {exc.strerror or exc}"
        ) from exc
    return [
        f"raised fs.inotify.max_user_instances from {limit} to {raised} (each host's "
        "systemd and journald use a few; the default lets about 40 hosts boot)"
    ]
