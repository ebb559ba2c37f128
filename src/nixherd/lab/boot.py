"""A lab host's launcher and its supervisor, outside the host's namespaces.

Run as a script by the python that ran `nixherd lab up` (`python -I boot.py COMMAND ...`), never
imported by nixherd's core (its imports are the standard library and `nixherd.lab.proc`):

    start HOSTDIR...      fork one detached supervisor per host; return once each recorded its pid
    supervise HOSTDIR     (internal) the host's tracked process, outside its namespaces: runs the
                          host (`unshare ... hostinit.py HOSTDIR`, its pid 1, which becomes
                          systemd), boots it again after a reboot inside it, stops it on SIGTERM,
                          and removes the host's cgroup once it is gone

Host directory contract (written by `nixherd.lab.hosts`): `host.json` (name), `nix/` (the
host's /nix), `etc/` (bind-mounted over /etc as a whole), `var/`, `sshd_config`, `log/`.
This program writes `supervisor.pid` ("PID STARTTIME") and `state.json` (the running boot).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
import traceback
from collections.abc import Sequence

from nixherd.lab import cgroup, hostinit, proc

SCRIPT = os.path.abspath(__file__)


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
    """Runs one host: `unshare ... hostinit.py HOSTDIR`, again after each reboot, until SIGTERM."""

    def __init__(self, hostdir: str) -> None:
        self.hostdir = hostdir
        self.stopping = False
        self.unshare: int | None = None
        self.init: tuple[int, int] | None = None  # pid, starttime

    def kill_host(self) -> None:
        # SIGKILL to a namespace's init ends every process in it, and unshare then reaps it.
        # An init not found yet: kill unshare, whose --kill-child hands its child SIGKILL.
        if self.init is not None and proc.starttime(self.init[0]) == self.init[1]:
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
        record = f"{me} {proc.starttime(me)}\n"
        proc.write_atomic(os.path.join(self.hostdir, "supervisor.pid"), record)
        signal.signal(signal.SIGTERM, self.on_signal)
        signal.signal(signal.SIGINT, self.on_signal)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        unshare = proc.which("unshare")
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
            hostinit.SCRIPT,
            self.hostdir,
        ]
        console = os.path.join(self.hostdir, "log", "console.log")
        boots = 0
        outcome = "stopped"
        while not self.stopping:
            boots += 1
            proc.log(f"boot {boots}")
            self.init = None
            self.unshare = proc.spawn(argv, env=env, output=console)
            self._record(boots)
            _, status = os.waitpid(self.unshare, 0)
            self.unshare = None
            if self.stopping:
                break
            outcome = boot_outcome(status)
            proc.log(f"the host ended: {outcome}")
            if outcome != "reboot":
                break
        if self.stopping:
            outcome = "stopped"
        self.remove_cgroup()
        proc.log(f"supervisor exits: {outcome}")
        proc.write_atomic(
            os.path.join(self.hostdir, "state.json"),
            json.dumps({"boots": boots, "ended": outcome}) + "\n",
        )
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(self.hostdir, "supervisor.pid"))
        return 0

    def remove_cgroup(self) -> None:
        """The host's cgroup tree, once its processes are gone (they die with its pid 1, but not
        all in the same instant: a busy cgroup is tried again for a while)."""
        name = cgroup.name_of(self.hostdir, proc.read_host(self.hostdir)["name"])
        scratch = os.path.join(self.hostdir, "cgroup-mnt")
        deadline = time.monotonic() + 5
        while (left := cgroup.clean_up(name, scratch)) and time.monotonic() < deadline:
            time.sleep(0.05)
        if left:
            proc.log(f"cgroup {name} still busy; the host's next boot removes it")

    def _record(self, boots: int) -> None:
        """Find the namespace's init (unshare's child) and record it for `status` and `down`."""
        assert self.unshare is not None
        deadline = time.monotonic() + 5
        init = None
        while init is None and time.monotonic() < deadline and not self.stopping:
            init = proc.child_of(self.unshare)
            if init is None:
                time.sleep(0.005)
        if init is None:
            return
        begun = proc.starttime(init)
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
        proc.write_atomic(os.path.join(self.hostdir, "state.json"), json.dumps(state) + "\n")


def supervise(hostdir: str) -> int:
    return Supervisor(hostdir).run()


def main(argv: Sequence[str]) -> int:
    if not argv:
        sys.stderr.write(__doc__ or "")
        return 2
    command, rest = argv[0], list(argv[1:])
    if command == "start" and rest:
        return start([os.path.abspath(hostdir) for hostdir in rest])
    if command == "supervise" and len(rest) == 1:
        return supervise(rest[0])
    sys.stderr.write(f"lab: unknown command {' '.join(argv)}\n")
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
