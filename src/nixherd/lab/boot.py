"""A lab host's own programs: its launcher, its supervisor (outside) and its pid 1 (inside).

Run as a script by the python that ran `nixherd lab up` (`python -I boot.py COMMAND ...`), standard
library only, never imported by nixherd's core:

    start HOSTDIR...      fork one detached supervisor per host; return once each recorded its pid
    supervise HOSTDIR     (internal) the host's tracked process, outside its namespaces: runs the
                          host, boots it again after a reboot inside it, stops it on SIGTERM
    init HOSTDIR          (internal) pid 1 inside the host's mount, UTS and PID namespaces
    reboot | poweroff     inside a host: reboot(2), which in a child PID namespace ends that
                          namespace's pid 1 only (SIGHUP for a restart, SIGINT for a power-off)

This is the one other place that starts processes (fork/exec, never a shell): pid 1 must reap every
process of its host, orphans included, so it cannot hand children to `nixherd.process`.

Host directory contract (written by `nixherd.lab.hosts`): `host.json` (name, bin_dir),
`nix/` (the host's /nix), `etc/` (bind-mounted over /etc as a whole), `sshd_config`, `log/`.
This program writes `supervisor.pid` ("PID STARTTIME") and `state.json` (the running boot).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import pwd
import signal
import socket
import stat
import sys
import time
import traceback
from collections.abc import Sequence

SCRIPT = os.path.abspath(__file__)

# reboot(2) commands (linux/reboot.h) and mount(2) flags (sys/mount.h).
RB_AUTOBOOT = 0x01234567
RB_POWER_OFF = 0x4321FEDC
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_BIND = 0x1000

# Where the host's /nix is mounted; created when the machine has none (Nix never ran there).
NIX_MOUNT_POINT = "/nix"
# Login records sshd appends to: per-host copies, when the machine has the file at all.
LOG_FILES = ("wtmp", "btmp", "lastlog")
# Where nix-daemon and the garbage collector put their sockets.
SOCKET_DIRS = ("/nix/var/nix/daemon-socket", "/nix/var/nix/gc-socket")

# A hanging activation (lab.fail.hang) must not keep a host from booting forever.
BOOT_ACTIVATION_TIMEOUT = 30.0
RESTART_DELAY = 0.3


# -- helpers shared by every command ------------------------------------------------------------


def starttime(pid: int) -> int | None:
    """Field 22 of /proc/PID/stat (clock ticks after boot): with the pid, identifies a process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its last ')'.
    fields = data[data.rindex(b")") + 2 :].split()
    return int(fields[19])


def parent_of(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    return int(data[data.rindex(b")") + 2 :].split()[1])


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


# -- start: the launcher ------------------------------------------------------------------------


def start(hostdirs: Sequence[str]) -> int:
    """Fork one supervisor per host in its own session; wait until each wrote its pid file."""
    children: dict[str, int] = {}
    for hostdir in hostdirs:
        pid_file = os.path.join(hostdir, "supervisor.pid")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(pid_file)
        pid = os.fork()
        if pid == 0:  # the supervisor: its own session, its own command line (for `ps`)
            try:
                os.setsid()
                _redirect(os.path.join(hostdir, "log", "supervisor.log"))
                os.chdir("/")  # hold no directory of the caller's
                os.execv(sys.executable, [sys.executable, "-I", SCRIPT, "supervise", hostdir])
            except BaseException:
                traceback.print_exc()
            finally:
                os._exit(127)
        children[hostdir] = pid
    deadline = time.monotonic() + 10
    failed = []
    for hostdir, pid in children.items():
        pid_file = os.path.join(hostdir, "supervisor.pid")
        while not _pid_file_names(pid_file, pid):
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done or time.monotonic() > deadline:
                failed.append(hostdir)
                break
            time.sleep(0.01)
    for hostdir in failed:
        sys.stderr.write(f"lab: the supervisor of {hostdir} did not start (see its log/)\n")
    return 1 if failed else 0


def _pid_file_names(path: str, pid: int) -> bool:
    try:
        with open(path) as f:
            return f.read().split()[0] == str(pid)
    except (OSError, IndexError):
        return False


def _redirect(path: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    null = os.open("/dev/null", os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    os.close(null)


# -- supervise: outside the namespaces ----------------------------------------------------------


def boot_outcome(status: int) -> str:
    """What the end of a host's namespace means, from the wait status of its `unshare`.

    reboot(2) inside a child PID namespace kills its init and reports SIGHUP (restart) or SIGINT
    (power off / halt); unshare re-raises its child's signal on itself.
    """
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        if sig == signal.SIGHUP:
            return "reboot"
        if sig == signal.SIGINT:
            return "poweroff"
        return f"killed by {signal.Signals(sig).name}"
    return f"exited with {os.WEXITSTATUS(status)}"


class Supervisor:
    """Runs one host: `unshare ... boot.py init`, again after each reboot, until SIGTERM."""

    def __init__(self, hostdir: str) -> None:
        self.hostdir = hostdir
        self.stopping = False
        self.unshare: int | None = None
        self.init: tuple[int, int] | None = None  # pid, starttime

    def kill_host(self) -> None:
        # SIGKILL to a namespace's init ends every process in it, and unshare then reaps it.
        # An init not found yet: kill unshare, whose --kill-child hands its child SIGKILL.
        if self.init is not None and starttime(self.init[0]) == self.init[1]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.init[0], signal.SIGKILL)
        elif self.unshare is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.unshare, signal.SIGKILL)

    def on_signal(self, signum: int, frame: object) -> None:
        del signum, frame
        self.stopping = True
        self.kill_host()

    def run(self) -> int:
        me = os.getpid()
        write_atomic(os.path.join(self.hostdir, "supervisor.pid"), f"{me} {starttime(me)}\n")
        signal.signal(signal.SIGTERM, self.on_signal)
        signal.signal(signal.SIGINT, self.on_signal)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        unshare = which("unshare")
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
        argv = [
            unshare,
            "--mount",
            "--uts",
            "--pid",
            "--kill-child",
            "--mount-proc",
            "--propagation",
            "private",
            sys.executable,
            "-I",
            SCRIPT,
            "init",
            self.hostdir,
        ]
        console = os.path.join(self.hostdir, "log", "console.log")
        boots = 0
        outcome = "stopped"
        while not self.stopping:
            boots += 1
            log(f"boot {boots}")
            self.init = None
            self.unshare = spawn(argv, env=env, output=console)
            self._record(boots)
            _, status = os.waitpid(self.unshare, 0)
            self.unshare = None
            if self.stopping:
                break
            outcome = boot_outcome(status)
            log(f"the host ended: {outcome}")
            if outcome != "reboot":
                break
        if self.stopping:
            outcome = "stopped"
        log(f"supervisor exits: {outcome}")
        write_atomic(
            os.path.join(self.hostdir, "state.json"),
            json.dumps({"boots": boots, "ended": outcome}) + "\n",
        )
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(self.hostdir, "supervisor.pid"))
        return 0

    def _record(self, boots: int) -> None:
        """Find the namespace's init (unshare's child) and record it for `status` and `down`."""
        assert self.unshare is not None
        deadline = time.monotonic() + 5
        init = None
        while init is None and time.monotonic() < deadline and not self.stopping:
            init = _child_of(self.unshare)
            if init is None:
                time.sleep(0.005)
        if init is None:
            return
        begun = starttime(init)
        try:
            pidns = os.readlink(f"/proc/{init}/ns/pid")
        except OSError:
            return
        if begun is None:
            return
        self.init = (init, begun)
        if self.stopping:
            self.kill_host()
            return
        state = {"boots": boots, "init": [init, begun], "pidns": pidns, "since": time.time()}
        write_atomic(os.path.join(self.hostdir, "state.json"), json.dumps(state) + "\n")


def _child_of(parent: int) -> int | None:
    for entry in os.listdir("/proc"):
        if entry.isdigit() and parent_of(int(entry)) == parent:
            return int(entry)
    return None


def supervise(hostdir: str) -> int:
    return Supervisor(hostdir).run()


# -- init: pid 1 inside the host ----------------------------------------------------------------


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
        host = read_host(hostdir)
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
        for name in LOG_FILES:
            own = os.path.join(self.log_dir, name)
            if os.path.exists(f"/var/log/{name}"):
                with open(own, "a"):
                    pass
                mount(own, f"/var/log/{name}", None, MS_BIND, None)
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
            log("no system to activate")
            return
        os.symlink(system, "/run/booted-system")
        log(f"activating {system}")
        console = os.path.join(self.log_dir, "console.log")
        pid = spawn(
            [os.path.join(system, "activate")], env=self.env, output=console, new_session=True
        )
        deadline = time.monotonic() + BOOT_ACTIVATION_TIMEOUT
        while True:
            done, status = os.waitpid(-1, os.WNOHANG)
            if done == pid:
                log(f"activation {_describe(status)}")
                return
            if done:
                self.reaped(done, status)
                continue
            if time.monotonic() > deadline:
                log("activation timed out: killed")
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
        pid = spawn(argv, env=env, output=os.path.join(self.log_dir, f"{name}.log"))
        self.running[pid] = name

    def run(self) -> int:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        self.setup()
        log(f"{self.name}: up, pid {os.getpid()}")
        self.daemons = {
            "nix-daemon": [which("nix-daemon")],
            "sshd": [
                which("sshd"),
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
            log(f"{name} {_describe(status)}: restarting")
            self.restarts[name] = time.monotonic() + RESTART_DELAY


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exited with {os.WEXITSTATUS(status)}"


def init(hostdir: str) -> int:
    return Init(hostdir).run()


# -- reboot / poweroff: inside a host -----------------------------------------------------------


def in_lab_host(cmdline: str = "/proc/1/cmdline") -> bool:
    """True when pid 1 (as this process sees it) is a lab host's init: never the machine's."""
    try:
        with open(cmdline, "rb") as f:
            words = f.read().split(b"\0")
    except OSError:
        return False
    return SCRIPT.encode() in words and b"init" in words


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
    if not argv:
        sys.stderr.write(__doc__ or "")
        return 2
    command, rest = argv[0], list(argv[1:])
    if command == "start" and rest:
        return start([os.path.abspath(hostdir) for hostdir in rest])
    if command == "supervise" and len(rest) == 1:
        return supervise(rest[0])
    if command == "init" and len(rest) == 1:
        return init(rest[0])
    if command == "reboot":
        return reboot(RB_AUTOBOOT)
    if command in ("poweroff", "halt"):
        return reboot(RB_POWER_OFF)
    sys.stderr.write(f"lab: unknown command {' '.join(argv)}\n")
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
