"""pid 1 of a lab host, inside its mount, UTS and PID namespaces, and `reboot` inside a host.

Run as a script (`python -I hostinit.py COMMAND ...`) by the host's supervisor (boot.py) and by
the `reboot`/`poweroff`/`halt` tools on every host's PATH; never imported by nixherd's core.

    HOSTDIR             pid 1 of the host whose directory is HOSTDIR: mounts its /nix, /etc and
                        /run, runs its nix-daemon and sshd (restarted when they die), activates
                        its boot system, reaps every orphan
    reboot | poweroff   inside a host: reboot(2), which in a child PID namespace ends that
                        namespace's pid 1 only (SIGHUP for a restart, SIGINT for a power-off)

pid 1 starts its processes itself (posix_spawn through `proc.spawn`, never a shell): it must reap
every process of its host, orphans included, so it cannot hand children to `nixherd.run.process`.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import pwd
import signal
import socket
import stat
import sys
import time
from collections.abc import Sequence

from nixherd.lab import proc

SCRIPT = os.path.abspath(__file__)

# reboot(2) commands (linux/reboot.h) and mount(2) flags (sys/mount.h).
RB_AUTOBOOT = 0x01234567
RB_POWER_OFF = 0x4321FEDC
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_BIND = 0x1000

# Where the host's /nix is mounted; created when the machine has none (Nix never ran there).
NIX_MOUNT_POINT = "/nix"
# Login records sshd appends to, in the host's own /var/log (a directory of the lab's, mounted
# whole: single files bind-mounted over the machine's vanish when logrotate renames them).
LOG_FILES = ("wtmp", "btmp", "lastlog")
# Where nix-daemon and the garbage collector put their sockets.
SOCKET_DIRS = ("/nix/var/nix/daemon-socket", "/nix/var/nix/gc-socket")

# A hanging activation (lab.fail.hang) must not keep a host from booting forever.
BOOT_ACTIVATION_TIMEOUT = 30.0
RESTART_DELAY = 0.3


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def mount(source: str, target: str, fstype: str | None, flags: int, data: str | None) -> None:
    libc = _libc()
    result = libc.mount(
        source.encode(),
        target.encode(),
        fstype.encode() if fstype else None,
        ctypes.c_ulong(flags),
        data.encode() if data else None,
    )
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"mount {source} on {target}: {os.strerror(errno)}")


def ensure_mount_point(path: str) -> None:
    """Create `path` (mode 0755, owned by root) when missing: an empty directory to mount on."""
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, 0o755)


class Init:
    """pid 1 of a lab host: sets the host up, boots its system, keeps sshd running, reaps."""

    def __init__(self, hostdir: str) -> None:
        self.hostdir = hostdir
        host = proc.read_host(hostdir)
        self.name = host["name"]
        self.bin_dir = host["bin_dir"]
        self.log_dir = os.path.join(hostdir, "log")
        self.env = {
            "PATH": f"/run/current-system/sw/bin:{self.bin_dir}:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": "/nix/var/lab/home/root",
            "USER": "root",
            "LOGNAME": "root",
            "LANG": "C.UTF-8",
            "NIXHERD_LAB_HOST": self.name,
        }
        self.daemons: dict[str, list[str]] = {}
        self.running: dict[int, str] = {}
        self.restarts: dict[str, float] = {}  # daemon name -> when to start it again

    def setup(self) -> None:
        """Mounts (all private to this mount namespace), hostname, the directories of a boot."""
        ensure_mount_point(NIX_MOUNT_POINT)
        mount(os.path.join(self.hostdir, "nix"), NIX_MOUNT_POINT, None, MS_BIND, None)
        # The host's own /etc, a whole directory of the lab's: nothing the machine does to its
        # own /etc (a `useradd` renaming a new /etc/passwd into place) can pull it away.
        mount(os.path.join(self.hostdir, "etc"), "/etc", None, MS_BIND, None)
        mount("tmpfs", "/run", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755")
        # Nix's sockets go to tmpfs: a socket file in the lab directory would break anything
        # that copies a tree holding it (a flake `path:` of a repository with the lab inside).
        for path in SOCKET_DIRS:
            os.makedirs(path, mode=0o755, exist_ok=True)
            for entry in os.scandir(path):  # left on disk by an older lab
                if stat.S_ISSOCK(entry.stat(follow_symlinks=False).st_mode):
                    os.unlink(entry.path)
            mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755")
        var_log = os.path.join(self.log_dir, "var-log")
        os.makedirs(var_log, mode=0o755, exist_ok=True)
        for name in LOG_FILES:
            with open(os.path.join(var_log, name), "a"):
                pass
        ensure_mount_point("/var/log")
        mount(var_log, "/var/log", None, MS_BIND, None)
        socket.sethostname(self.name)
        for path, mode in (("/run/sshd", 0o755), ("/run/lab", 0o755), ("/nix/var/lab", 0o755)):
            os.makedirs(path, mode=mode, exist_ok=True)
        # Home directories of the host's own users (in passwd below /nix/var/lab/home).
        for user in pwd.getpwall():
            if user.pw_dir.startswith("/nix/var/lab/home/") and not os.path.isdir(user.pw_dir):
                os.makedirs(user.pw_dir, mode=0o700 if user.pw_uid == 0 else 0o755)
                os.chown(user.pw_dir, user.pw_uid, user.pw_gid)

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
        console = os.path.join(self.log_dir, "console.log")
        pid = proc.spawn(
            [os.path.join(system, "activate")], env=self.env, output=console, new_session=True
        )
        deadline = time.monotonic() + BOOT_ACTIVATION_TIMEOUT
        while True:
            done, status = os.waitpid(-1, os.WNOHANG)
            if done == pid:
                proc.log(f"activation {proc.describe(status)}")
                return
            if done:
                self.reaped(done, status)
                continue
            if time.monotonic() > deadline:
                proc.log("activation timed out: killed")
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
                deadline = float("inf")
            time.sleep(0.02)

    def start_daemon(self, name: str) -> None:
        argv = self.daemons[name]
        env = dict(self.env)
        if name == "nix-daemon":
            # No daemon on the machine: each host runs its own, trusting deploy as NixOS does a
            # trusted user, so `nix copy --to ssh://deploy@...` can add unsigned paths.
            env["NIX_CONFIG"] = "trusted-users = root deploy"
        pid = proc.spawn(argv, env=env, output=os.path.join(self.log_dir, f"{name}.log"))
        self.running[pid] = name

    def run(self) -> int:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        self.setup()
        proc.log(f"{self.name}: up, pid {os.getpid()}")
        self.daemons = {
            "nix-daemon": [proc.which("nix-daemon")],
            "sshd": [
                proc.which("sshd"),
                "-D",
                "-f",
                os.path.join(self.hostdir, "sshd_config"),
                "-E",
                os.path.join(self.log_dir, "sshd.log"),
            ],
        }
        self.start_daemon("nix-daemon")
        self.activate_at_boot()
        self.start_daemon("sshd")
        while True:
            try:
                # With a restart due, poll, so orphans are still reaped while it waits.
                pid, status = os.waitpid(-1, os.WNOHANG if self.restarts else 0)
            except ChildProcessError:  # no child at all right now
                pid, status = 0, 0
            if pid:
                self.reaped(pid, status)
            else:
                time.sleep(0.05 if self.restarts else 0.5)
            now = time.monotonic()
            for name, due in list(self.restarts.items()):
                if due <= now:
                    del self.restarts[name]
                    self.start_daemon(name)

    def reaped(self, pid: int, status: int) -> None:
        name = self.running.pop(pid, None)
        if name is not None:
            # A daemon that died (a `kill -9 -1` inside, a crash) comes back, as systemd's
            # Restart=always would do; the delay keeps a broken config from spinning.
            proc.log(f"{name} {proc.describe(status)}: restarting")
            self.restarts[name] = time.monotonic() + RESTART_DELAY


# -- reboot / poweroff: inside a host -----------------------------------------------------------


def in_lab_host(cmdline: str = "/proc/1/cmdline") -> bool:
    """True when pid 1 (as this process sees it) is a lab host's init: never the machine's."""
    try:
        with open(cmdline, "rb") as f:
            words = f.read().split(b"\0")
    except OSError:
        return False
    return SCRIPT.encode() in words


def reboot(command: int) -> int:
    if not in_lab_host():
        sys.stderr.write("lab reboot: not inside a nixherd lab host; refusing\n")
        return 1
    if os.geteuid() != 0:
        sys.stderr.write("lab reboot: must be root\n")
        return 1
    os.sync()
    libc = _libc()
    libc.reboot(ctypes.c_int(command))
    errno = ctypes.get_errno()
    sys.stderr.write(f"lab reboot: reboot(2) failed: {os.strerror(errno)}\n")
    return 1


def main(argv: Sequence[str]) -> int:
    if argv and argv[0] == "reboot" and len(argv) == 1:
        return reboot(RB_AUTOBOOT)
    if argv and argv[0] in ("poweroff", "halt") and len(argv) == 1:
        return reboot(RB_POWER_OFF)
    if len(argv) == 1 and os.path.isabs(argv[0]):
        return Init(argv[0]).run()
    sys.stderr.write(__doc__ or "")
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
