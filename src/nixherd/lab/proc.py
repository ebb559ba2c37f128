"""Processes as the lab sees them, standard library only: shared by `nixherd lab` (hosts.py) and
the lab hosts' own programs (boot.py, hostinit.py), which run as scripts under `python -I`.

A process is identified by its pid AND its start time (field 22 of /proc/PID/stat), never by its
name: a pid alone may have been reused by an unrelated process since it was recorded.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path


def starttime(pid: int) -> int | None:
    """Field 22 of /proc/PID/stat; None when no such process or only its zombie is left."""
    try:
        data = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its last ')'.
    fields = data[data.rindex(b")") + 2 :].split()
    if fields[0] in (b"Z", b"X"):
        # Exited; a detached supervisor's zombie waits for the machine's init to reap it.
        return None
    return int(fields[19])


def alive(record: tuple[int, int] | None) -> bool:
    """True when the (pid, start time) still names the process recorded, not a reused pid."""
    return record is not None and starttime(record[0]) == record[1]


def parent_of(pid: int) -> int | None:
    try:
        data = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    return int(data[data.rindex(b")") + 2 :].split()[1])


def child_of(parent: int) -> int | None:
    """A child of `parent` (the lab's launchers have exactly one), found through /proc."""
    for entry in os.listdir("/proc"):
        if entry.isdigit() and parent_of(int(entry)) == parent:
            return int(entry)
    return None


def namespace_pids(pidns: str) -> list[int]:
    """Every live process of the machine in PID namespace `pidns` (e.g. `pid:[4026532301]`)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/{entry}/ns/pid") == pidns and starttime(int(entry)):
                found.append(int(entry))
    return found


def mounts_under(path: str) -> list[str]:
    """Mount points of the machine's mount namespace at or below `path` (should be none)."""
    prefix = path.rstrip("/") + "/"
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if point == path or point.startswith(prefix):
            found.append(point)
    return found


def describe(status: int) -> str:
    """A wait status in words."""
    if os.WIFSIGNALED(status):
        return f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exited with {os.WEXITSTATUS(status)}"


def write_atomic(path: str, text: str) -> None:
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def log(message: str) -> None:
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    sys.stdout.write(f"{stamp} {message}\n")
    sys.stdout.flush()


def spawn(
    argv: Sequence[str],
    *,
    env: dict[str, str],
    output: str | None = None,
    new_session: bool = False,
) -> int:
    """Start argv[0] (an absolute path) with stdin from /dev/null and output to `output`."""
    actions: list[tuple[int, int, str, int, int]] = [
        (os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0)
    ]
    if output is not None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND
        actions.append((os.POSIX_SPAWN_OPEN, 1, output, flags, 0o644))
        actions.append((os.POSIX_SPAWN_OPEN, 2, output, flags, 0o644))
    return os.posix_spawn(
        argv[0],
        list(argv),
        env,
        file_actions=actions,
        setsid=new_session,
        # Python ignores SIGPIPE and catches SIGINT; a child starts with the defaults.
        setsigdef=(signal.SIGPIPE, signal.SIGINT, signal.SIGTERM, signal.SIGHUP),
    )


def which(name: str) -> str:
    for directory in ("/usr/sbin", "/usr/bin", "/sbin", "/bin"):
        path = os.path.join(directory, name)
        if os.access(path, os.X_OK):
            return path
    raise SystemExit(f"lab: {name} not found")


def read_host(hostdir: str) -> dict[str, str]:
    with open(os.path.join(hostdir, "host.json")) as f:
        data: dict[str, str] = json.load(f)
    return data
