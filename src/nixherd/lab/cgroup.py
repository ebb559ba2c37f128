"""A lab host's control group: where its systemd lives, apart from the machine's and the others'.

Standard library only (run inside `python -I` scripts: hostinit.py, boot.py).

Every systemd on this machine that runs as a lab host's pid 1 would, in the machine's cgroup
namespace, see the same root cgroup as every other one and as the machine, create its
`init.scope` and `system.slice` there, and move the others' processes about. So each host gets a
cgroup of its own, `/nixherd-lab/<lab id>-<host name>` in the cgroup v2 hierarchy, and a cgroup
namespace rooted there: inside, its systemd mounts cgroup2 and sees that cgroup as `/`.

The hierarchy is reached through a cgroup2 mount made in a private mount namespace (the host's
own, or a throwaway one for the clean-up): the machine may have none mounted at all (a chroot),
one at /sys/fs/cgroup (a systemd machine) or at /sys/fs/cgroup/unified (a hybrid one), and
nothing of this shows in the machine's mount table.
"""

from __future__ import annotations

import contextlib
import hashlib
import os

from nixherd.lab.syscalls import (
    CLONE_NEWCGROUP,
    CLONE_NEWNS,
    MS_PRIVATE,
    MS_REC,
    mount,
    unmount,
    unshare,
)

# Below the root of the cgroup v2 hierarchy: one directory for every lab on this machine.
LAB_ROOT = "nixherd-lab"


def mount_cgroup2(target: str) -> None:
    """Mount the cgroup v2 hierarchy at `target`, as the calling process's namespace sees it."""
    mount("cgroup2", target, "cgroup2", 0, None)


def private_mounts() -> None:
    """A mount namespace of our own where nothing propagates back to the machine's."""
    unshare(CLONE_NEWNS)
    mount("none", "/", None, MS_REC | MS_PRIVATE, None)


def name_of(hostdir: str, host: str) -> str:
    """The host's cgroup, relative to the hierarchy's root. The lab directory's digest keeps two
    labs' `lab-1` apart (tests run several labs at once)."""
    lab = os.path.dirname(os.path.dirname(os.path.abspath(hostdir)))
    digest = hashlib.sha256(lab.encode()).hexdigest()[:10]
    return f"{LAB_ROOT}/{digest}-{host}"


def remove_tree(path: str) -> list[str]:
    """rmdir `path` and every cgroup below it, deepest first; return those that stay (busy)."""
    left: list[str] = []
    if not os.path.isdir(path):
        return left
    for parent, dirs, _ in os.walk(path, topdown=False):
        for name in dirs:
            try:
                os.rmdir(os.path.join(parent, name))
            except FileNotFoundError:
                pass
            except OSError:
                left.append(os.path.join(parent, name))
    try:
        os.rmdir(path)
    except FileNotFoundError:
        pass
    except OSError:
        left.append(path)
    return left


def enter_own(mount_point: str, name: str) -> None:
    """Move this process into cgroup `name` (a fresh one) and root a new cgroup namespace there.

    Called by the host's pid 1 before it becomes systemd, in the host's private mount namespace:
    `mount_point` is an empty directory there (the host's /sys/fs/cgroup), left with the
    namespace's own view of the hierarchy mounted on it.
    """
    mount_cgroup2(mount_point)
    path = os.path.join(mount_point, name)
    # What a previous boot of this host left (its processes died with its PID namespace).
    remove_tree(path)
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "cgroup.procs"), "w") as f:
        f.write("0")  # "0": the writing process itself
    unmount(mount_point)
    unshare(CLONE_NEWCGROUP)
    mount_cgroup2(mount_point)


def clean_up(name: str, scratch: str) -> list[str]:
    """Remove the host's cgroup tree once the host is gone; return what could not be removed.

    Runs in a child process of its own: the mount namespace it makes for the clean-up ends with it.
    """
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            private_mounts()
            os.makedirs(scratch, exist_ok=True)
            mount_cgroup2(scratch)
            code = 2 if remove_tree(os.path.join(scratch, name)) else 0
            with contextlib.suppress(OSError):
                # The lab's root stays while other hosts (or labs) still use it.
                os.rmdir(os.path.join(scratch, LAB_ROOT))
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    with contextlib.suppress(OSError):
        os.rmdir(scratch)
    return [] if os.waitstatus_to_exitcode(status) == 0 else [name]
