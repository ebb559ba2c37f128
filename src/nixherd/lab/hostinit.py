"""pid 1 of a lab host until it becomes systemd: NixOS's stage 2, inside the host's namespaces.

Run as a script (`python -I hostinit.py HOSTDIR`) by the host's supervisor (boot.py), under
`unshare --mount --uts --pid --mount-proc`; never imported by nixherd's core. It

1. gives the host its own view of the machine: /nix, /etc, /var (and /var/log), /run and /dev of
   its own, a read-only /sys and /proc/sys, a cgroup and cgroup namespace of its own;
2. activates the boot system before any service runs, as NixOS's stage 2 does: `/run/booted-system`
   points at it and its `activate` runs (bounded in time: a hanging one must not keep the host
   from booting);
3. execs systemd, which stays pid 1 and runs the host's units: sshd, nix-daemon (written by
   `nixherd lab up` into the host's /etc/systemd/system) and the active system's own.

A `reboot` inside the host is systemd's: it ends in reboot(2), which in a child PID namespace ends
that namespace's pid 1 (SIGHUP: restart, SIGINT: power off), and the supervisor boots it again.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import signal
import socket
import stat
import sys
import time
from collections.abc import Sequence

from nixherd.lab import cgroup, proc
from nixherd.lab.syscalls import (
    MS_BIND,
    MS_MOVE,
    MS_NODEV,
    MS_NOEXEC,
    MS_NOSUID,
    MS_RDONLY,
    MS_REMOUNT,
    mount,
)

SCRIPT = os.path.abspath(__file__)

# Where nix-daemon and the garbage collector put their sockets: tmpfs, since a socket file in the
# lab directory breaks anything that copies a tree holding it (a flake `path:` of a repository
# with the lab inside).
SOCKET_DIRS = ("/nix/var/nix/daemon-socket", "/nix/var/nix/gc-socket")
# Device nodes a host's own /dev gets from the machine's (bind-mounted: a tmpfs cannot hold
# device nodes that work unless mknod'ed, and binding keeps exactly the machine's).
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
# Directories of a host's own /var, made on first boot; the rest of /var is empty.
VAR_LINKS = {"run": "/run", "lock": "/run/lock"}
VAR_DIRS = ("lib", "lib/systemd", "cache", "spool", "tmp", "log")
# A hanging activation (lab.fail.hang) must not keep a host from booting forever.
BOOT_ACTIVATION_TIMEOUT = 30.0
SYSTEMD_CANDIDATES = ("/lib/systemd/systemd", "/usr/lib/systemd/systemd")
BOOT_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


def bind(source: str, target: str, *, read_only: bool = False) -> None:
    mount(source, target, None, MS_BIND, None)
    if read_only:
        # A bind mount takes the read-only flag only on a remount of its own.
        mount("none", target, None, MS_REMOUNT | MS_BIND | MS_RDONLY, None)


def ensure_mount_point(path: str) -> None:
    """Create `path` (mode 0755, owned by root) when missing: an empty directory to mount on."""
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, 0o755)


def systemd_binary() -> str:
    for path in SYSTEMD_CANDIDATES:
        if os.access(path, os.X_OK):
            return path
    raise SystemExit("lab: systemd not found (apt-get install systemd)")


class Init:
    """pid 1 of a lab host, from the namespaces' creation to systemd."""

    def __init__(self, hostdir: str) -> None:
        self.hostdir = hostdir
        host = proc.read_host(hostdir)
        self.name = host["name"]
        self.log_dir = os.path.join(hostdir, "log")

    def setup(self) -> None:
        """Mounts (all private to this mount namespace), hostname, the directories of a boot."""
        ensure_mount_point("/nix")
        bind(os.path.join(self.hostdir, "nix"), "/nix")
        # The host's own /etc, a whole directory of the lab's: nothing the machine does to its
        # own /etc (a `useradd` renaming a new /etc/passwd into place) can pull it away.
        bind(os.path.join(self.hostdir, "etc"), "/etc")
        mount("tmpfs", "/run", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755")
        # /tmp stays the machine's (the lab directory may be below it: the host's sshd reads
        # its config and keys there); the host's /etc/tmpfiles.d keeps systemd off it.
        self.setup_var()
        for path in SOCKET_DIRS:
            os.makedirs(path, mode=0o755, exist_ok=True)
            for entry in os.scandir(path):  # left on disk by an older lab
                if stat.S_ISSOCK(entry.stat(follow_symlinks=False).st_mode):
                    os.unlink(entry.path)
            mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755")
        self.setup_dev()
        # The kernel's settings stay the machine's: with /proc/sys and /sys writable, systemd
        # would apply its sysctl.d, binfmt and udev work to the whole machine.
        bind("/proc/sys", "/proc/sys", read_only=True)
        mount("none", "/sys", None, MS_REMOUNT | MS_BIND | MS_RDONLY, None)
        cgroup.enter_own("/sys/fs/cgroup", cgroup.name_of(self.hostdir, self.name))
        socket.sethostname(self.name)
        os.makedirs("/nix/var/lab", mode=0o755, exist_ok=True)
        # Home directories of the host's own users (in passwd below /nix/var/lab/home).
        for user in pwd.getpwall():
            if user.pw_dir.startswith("/nix/var/lab/home/") and not os.path.isdir(user.pw_dir):
                os.makedirs(user.pw_dir, mode=0o700 if user.pw_uid == 0 else 0o755)
                os.chown(user.pw_dir, user.pw_uid, user.pw_gid)

    def setup_var(self) -> None:
        """The host's own /var (systemd keeps its state there), with its own /var/log inside."""
        var = os.path.join(self.hostdir, "var")
        for sub in VAR_DIRS:
            os.makedirs(os.path.join(var, sub), mode=0o755, exist_ok=True)
        os.chmod(os.path.join(var, "tmp"), 0o1777)
        for name, target in VAR_LINKS.items():
            with contextlib.suppress(FileExistsError):
                os.symlink(target, os.path.join(var, name))
        var_log = os.path.join(self.log_dir, "var-log")
        # A journal directory makes journald keep the host's journal across its reboots.
        os.makedirs(os.path.join(var_log, "journal"), mode=0o755, exist_ok=True)
        ensure_mount_point("/var")
        bind(var, "/var")
        bind(var_log, "/var/log")

    def setup_dev(self) -> None:
        """A /dev of the host's own: the few machine devices it needs, its own ptys and shm.

        systemd and journald create links and nodes in /dev (/dev/log among them); on the
        machine's /dev every host would replace the others'.
        """
        staging = "/run/.lab-dev"
        os.makedirs(staging, mode=0o755)
        mount("tmpfs", staging, "tmpfs", MS_NOSUID, "mode=0755")
        for name in DEVICES:
            path = os.path.join(staging, name)
            with open(path, "w"):
                pass
            bind(os.path.join("/dev", name), path)
        for name in ("pts", "shm"):
            os.mkdir(os.path.join(staging, name), 0o755)
        mount(
            "devpts",
            os.path.join(staging, "pts"),
            "devpts",
            MS_NOSUID | MS_NOEXEC,
            "newinstance,ptmxmode=0666,mode=0620,gid=5",
        )
        mount("tmpfs", os.path.join(staging, "shm"), "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777")
        links = {
            "ptmx": "pts/ptmx",
            "fd": "/proc/self/fd",
            "stdin": "/proc/self/fd/0",
            "stdout": "/proc/self/fd/1",
            "stderr": "/proc/self/fd/2",
        }
        for name, target in links.items():
            os.symlink(target, os.path.join(staging, name))
        mount(staging, "/dev", None, MS_MOVE, None)
        os.rmdir(staging)

    def boot_system(self) -> str | None:
        """The system to activate at boot: the boot loader's choice, else the system profile."""
        for link in ("/nix/var/lab/boot-default", "/nix/var/nix/profiles/system"):
            if os.path.exists(os.path.join(link, "activate")):
                return os.path.realpath(link)
        return None

    def activate_at_boot(self) -> None:
        system = self.boot_system()
        if system is None:
            proc.log("no system to activate")
            return
        os.symlink(system, "/run/booted-system")
        proc.log(f"activating {system}")
        env = {"PATH": BOOT_PATH, "LANG": "C.UTF-8", "HOME": "/", "NIXHERD_LAB_HOST": self.name}
        console = os.path.join(self.log_dir, "console.log")
        pid = proc.spawn(
            [os.path.join(system, "activate"), system], env=env, output=console, new_session=True
        )
        deadline = time.monotonic() + BOOT_ACTIVATION_TIMEOUT
        while True:
            done, status = os.waitpid(-1, os.WNOHANG)
            if done == pid:
                proc.log(f"activation {proc.describe(status)}")
                return
            if done:
                continue  # an orphan of the activation, reaped
            if time.monotonic() > deadline:
                proc.log("activation timed out: killed")
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
                deadline = float("inf")
            time.sleep(0.02)

    def run(self) -> int:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        self.setup()
        proc.log(f"{self.name}: pid {os.getpid()}, mounts and cgroup ready")
        self.activate_at_boot()
        binary = systemd_binary()
        proc.log(f"{self.name}: exec {binary}")
        sys.stdout.flush()
        # `container` tells systemd it runs in a container: it skips what needs a real machine.
        env = {"container": "other", "PATH": BOOT_PATH, "LANG": "C.UTF-8"}
        os.execve(binary, [binary], env)
        return 127  # not reached


def main(argv: Sequence[str]) -> int:
    if len(argv) == 1 and os.path.isabs(argv[0]):
        return Init(argv[0]).run()
    sys.stderr.write(__doc__ or "")
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
