"""Lab hosts on this machine: the state directory, keys and configs, and up / status / down.

Layout of a lab directory (DIR):

    DIR/lab.json                    base port, the deploy user's ids
    DIR/id_ed25519{,.pub}           the client key every host accepts (root and deploy)
    DIR/ssh_config, DIR/known_hosts for `ssh -F DIR/ssh_config` and NIX_SSHOPTS
    DIR/hosts/lab-N/                one host: host.json, sshd_config, host key, authorized_keys,
                                    machine-id, etc/ (its whole /etc: see `lab.etc`), nix/ (its
                                    /nix), var/ (its /var), log/ (console.log, sshd.log, var-log/
                                    = its /var/log with its journal), supervisor.pid, state.json

A host is its supervisor (`boot.py supervise`, tracked by pid and start time) and the namespaces
it runs, with systemd as their pid 1; everything else is plain files, kept across `down` so the
next `up` finds the same keys, stores and journals.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import sys
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nixherd.errors import CommandError, LabError
from nixherd.lab import etc, inotify, render
from nixherd.lab.proc import alive, mounts_under, namespace_pids
from nixherd.lab.render import Account, HostFiles
from nixherd.run import process

DEFAULT_DIR = "lab-state"
DEFAULT_BASE_PORT = 2201
DEFAULT_COUNT = 3
DIR_ENV = "NIXHERD_LAB_DIR"

# `status` logs in to each host (in parallel, this many at once), each login bounded in time.
STATUS_LOGINS = 8
LOGIN_TIMEOUT = 10.0

BOOT_SCRIPT = str(Path(__file__).with_name("boot.py"))
HOST_PREFIX = "lab-"


def default_dir() -> str:
    return os.environ.get(DIR_ENV) or DEFAULT_DIR


@dataclass(frozen=True, slots=True)
class HostStatus:
    """One lab host as `status` reports it."""

    name: str
    port: int
    dir: str
    pid: int | None  # the supervisor's, when it runs
    up: bool  # the supervisor runs and the deploy user logs in over ssh
    system: str | None  # /run/current-system inside the host
    boots: int | None
    pidns: str | None

    @property
    def state(self) -> str:
        """up; unhealthy (its processes run, but no login works); down."""
        if self.up:
            return "up"
        return "unhealthy" if self.pid else "down"

    def to_data(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "port": self.port,
            "dir": self.dir,
            "pid": self.pid,
            "state": self.state,
            "system": self.system,
            "boots": self.boots,
            "pidns": self.pidns,
        }


def ssh_banner(port: int, timeout: float = 1.0) -> bool:
    """True when an SSH server answers on 127.0.0.1:port."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as conn:
            conn.settimeout(timeout)
            return conn.recv(8).startswith(b"SSH-")
    except OSError:
        return False


def port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As sshd binds: a port in TIME_WAIT is free for it.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def check_prerequisites() -> None:
    """The lab needs root (namespaces, mounts) and unshare, sshd, ssh-keygen, nix-daemon, and
    systemd (every host's pid 1)."""
    if os.geteuid() != 0:
        raise LabError("the lab needs root (it creates namespaces and mounts): run as root")
    missing = [
        tool
        for tool in ("unshare", "sshd", "ssh-keygen", "nix-daemon", "systemctl")
        if shutil.which(tool, path="/usr/sbin:/usr/bin:/sbin:/bin") is None
    ]
    if missing:
        raise LabError(
            f"the lab needs {', '.join(missing)}: apt-get install util-linux openssh-server "
            "openssh-client nix-bin nix-setup-systemd systemd"
        )


# Directories every host mounts its own over (lab/hostinit.py): a lab directory below one of them
# would be hidden from its own hosts.
HOST_MOUNTED = ("/nix", "/etc", "/var", "/run", "/dev", "/proc", "/sys")
# -- the lab ------------------------------------------------------------------------------------


class Lab:
    """The lab hosts living in one state directory."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        path = os.path.abspath(os.fspath(directory))
        real = os.path.realpath(path)
        for system_dir in HOST_MOUNTED:
            if real == system_dir or real.startswith(system_dir + "/"):
                raise LabError(
                    f"lab directory {path!r}: not below {system_dir} (every host mounts its own "
                    f"{system_dir} over the machine's, and would lose sight of its own files)"
                )
        if not render.is_safe_path(path):
            raise LabError(
                f"lab directory {path!r}: use a path of letters, digits and ._-/+@,= only "
                "(it is written bare into ssh and sshd configs and passwd)"
            )
        self.dir = path
        # What `up` changed on the machine itself, for the CLI to say (nothing, normally).
        self.notes: list[str] = []

    # paths
    @property
    def ssh_config(self) -> str:
        return os.path.join(self.dir, "ssh_config")

    @property
    def known_hosts(self) -> str:
        return os.path.join(self.dir, "known_hosts")

    @property
    def identity(self) -> str:
        return os.path.join(self.dir, "id_ed25519")

    @property
    def hosts_dir(self) -> str:
        return os.path.join(self.dir, "hosts")

    def host_dir(self, name: str) -> str:
        return os.path.join(self.hosts_dir, name)

    @property
    def nix_sshopts(self) -> str:
        """NIX_SSHOPTS for `nix copy --to ssh://lab-N` (or ssh://root@127.0.0.1 with -p)."""
        return f"-F {self.ssh_config}"

    def hosts(self) -> list[HostFiles]:
        """Every host this directory knows, by number."""
        found: list[tuple[int, HostFiles]] = []
        if not os.path.isdir(self.hosts_dir):
            return []
        for entry in os.listdir(self.hosts_dir):
            info = Path(self.hosts_dir, entry, "host.json")
            if not entry.startswith(HOST_PREFIX) or not info.is_file():
                continue
            data = json.loads(info.read_text())
            files = HostFiles(name=data["name"], port=int(data["port"]), dir=self.host_dir(entry))
            found.append((int(data["index"]), files))
        return [files for _, files in sorted(found, key=lambda pair: pair[0])]

    def _settings(self) -> dict[str, Any]:
        path = Path(self.dir, "lab.json")
        if path.is_file():
            data: dict[str, Any] = json.loads(path.read_text())
            return data
        return {}

    # processes
    def supervisor(self, host: HostFiles) -> tuple[int, int] | None:
        """The host's running supervisor as (pid, start time), verified; None when not running."""
        try:
            pid, begun = Path(host.dir, "supervisor.pid").read_text().split()[:2]
            record = (int(pid), int(begun))
        except (OSError, ValueError):
            return None
        return record if alive(record) else None

    def state(self, host: HostFiles) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads(Path(host.dir, "state.json").read_text())
        except (OSError, ValueError):
            return {}
        return data

    def init_process(self, host: HostFiles) -> tuple[int, int] | None:
        """The host's pid 1 as the machine sees it (pid, start time), when it runs."""
        record = self.state(host).get("init")
        if not record:
            return None
        pair = (int(record[0]), int(record[1]))
        return pair if alive(pair) else None

    def status(self) -> list[HostStatus]:
        """Every host, checked by a real login: a banner alone would call a host up whose sshd
        answers but refuses every user (a host that lost its user database)."""
        hosts = self.hosts()
        if not hosts:
            return []
        with ThreadPoolExecutor(max_workers=min(len(hosts), STATUS_LOGINS)) as pool:
            return list(pool.map(self._status, hosts))

    def login_works(self, host: HostFiles, user: str = render.DEPLOY_USER) -> bool:
        """True when `user` logs in to the host with the lab's key and runs a command there."""
        argv = ["ssh", "-F", self.ssh_config, "-o", "BatchMode=yes", "-o", "ConnectTimeout=5"]
        try:
            result = process.run(
                [*argv, "-l", user, host.name, "true"],
                check=False,
                timeout=LOGIN_TIMEOUT,
                what=f"login to {host.name}",
            )
        except CommandError:  # timed out, or no ssh client
            return False
        return result.ok

    def _status(self, host: HostFiles) -> HostStatus:
        supervisor = self.supervisor(host)
        state = self.state(host)
        init = self.init_process(host) if supervisor else None
        system = None
        if init is not None:
            # The link as the host sees it, read through its pid 1's root.
            with contextlib.suppress(OSError):
                system = os.readlink(f"/proc/{init[0]}/root/run/current-system")
        return HostStatus(
            name=host.name,
            port=host.port,
            dir=host.dir,
            pid=supervisor[0] if supervisor else None,
            up=bool(supervisor and init and self.login_works(host)),
            system=system,
            boots=state.get("boots"),
            pidns=state.get("pidns") if init else None,
        )

    # up
    def up(
        self, count: int = DEFAULT_COUNT, base_port: int | None = None, timeout: float = 30.0
    ) -> list[HostStatus]:
        """Make hosts lab-1..lab-COUNT run (keeping those that do); wait until sshd answers."""
        check_prerequisites()
        if count < 1:
            raise LabError(f"the number of hosts must be at least 1, got {count}")
        settings = self._settings()
        base = base_port if base_port is not None else settings.get("base_port", DEFAULT_BASE_PORT)
        if base < 1 or base + count - 1 > 65535:
            raise LabError(f"ports {base}..{base + count - 1} are not all valid TCP ports")
        for path in (self.dir, self.hosts_dir):
            os.makedirs(path, exist_ok=True)
        # `reboot` tools an older lab put on its hosts' PATH: systemd's own reboot does it now.
        shutil.rmtree(os.path.join(self.dir, "bin"), ignore_errors=True)
        ids = self._account(settings, base)
        self._client_key()
        known = {host.name: host for host in self.hosts()}
        wanted: list[HostFiles] = []
        for index in range(1, count + 1):
            name = f"{HOST_PREFIX}{index}"
            port = base + index - 1
            old = known.get(name)
            if old is not None and old.port != port and self.supervisor(old):
                raise LabError(
                    f"{name} runs on port {old.port}, not {port}: run `nixherd lab down` first"
                )
            wanted.append(HostFiles(name=name, port=port, dir=self.host_dir(name)))
        to_start = [host for host in wanted if self.supervisor(host) is None]
        busy = [f"{h.name}: 127.0.0.1:{h.port}" for h in to_start if not port_free(h.port)]
        if busy:
            raise LabError("ports in use (choose another --base-port): " + ", ".join(busy))
        for index, host in enumerate(wanted, start=1):
            if host in to_start:
                self._prepare(host, index, ids)
        self._write_client_files()
        if to_start:
            self.notes += inotify.ensure_instances(len(to_start))
            process.run(
                [sys.executable, "-I", BOOT_SCRIPT, "start", *(h.dir for h in to_start)],
                timeout=60,
                what="lab start",
            )
        self._wait(to_start, timeout)
        return self.status()

    def _account(self, settings: dict[str, Any], base: int) -> tuple[int, int]:
        """The deploy user's uid and gid: free on the machine, chosen once per lab."""
        if "deploy_uid" in settings:
            uid, gid = int(settings["deploy_uid"]), int(settings["deploy_gid"])
        else:
            uid = gid = render.free_id(
                Path("/etc/passwd").read_text(), Path("/etc/group").read_text()
            )
        settings.update({"base_port": base, "deploy_uid": uid, "deploy_gid": gid})
        etc.write(os.path.join(self.dir, "lab.json"), json.dumps(settings, indent=2) + "\n")
        return uid, gid

    def _client_key(self) -> None:
        if not os.path.exists(self.identity):
            _keygen(self.identity, "nixherd-lab-client")

    def _prepare(self, host: HostFiles, index: int, ids: tuple[int, int]) -> None:
        """Write the host's files (keys are made once and kept)."""
        for sub in ("nix", "log"):
            os.makedirs(os.path.join(host.dir, sub), exist_ok=True)
        etc.write(
            os.path.join(host.dir, "host.json"),
            json.dumps({"name": host.name, "port": host.port, "index": index}) + "\n",
        )
        if not os.path.exists(host.host_key):
            _keygen(host.host_key, f"{host.name}-host")
        etc.write(os.path.join(host.dir, "sshd_config"), render.sshd_config(host))
        public = Path(self.identity + ".pub").read_text()
        etc.write(host.authorized_keys, render.authorized_keys(public))
        etc.make_etc(host, Account(uid=ids[0], gid=ids[1]), index)

    def _write_client_files(self) -> None:
        hosts = self.hosts()
        etc.write(self.ssh_config, render.ssh_config(hosts, self.identity, self.known_hosts))
        entries = [(h, Path(h.host_key + ".pub").read_text()) for h in hosts]
        etc.write(self.known_hosts, render.known_hosts(entries))

    def _wait(self, hosts: Sequence[HostFiles], timeout: float) -> None:
        pending = list(hosts)
        deadline = time.monotonic() + timeout
        while pending:
            pending = [h for h in pending if not ssh_banner(h.port, timeout=0.5)]
            if not pending:
                return
            dead = [h for h in pending if self.supervisor(h) is None]
            if dead or time.monotonic() > deadline:
                failed = dead or pending
                raise LabError(
                    "lab hosts did not come up: "
                    + ", ".join(h.name for h in failed)
                    + "\n"
                    + "\n".join(_log_tail(h) for h in failed[:3])
                )
            time.sleep(0.05)

    # down
    def down(self, timeout: float = 15.0) -> list[str]:
        """Stop every host of this directory (by recorded pid); return the names stopped."""
        stopping: list[tuple[HostFiles, tuple[int, int]]] = []
        namespaces: list[str] = []
        for host in self.hosts():
            supervisor = self.supervisor(host)
            pidns = self.state(host).get("pidns")
            if self.init_process(host) and pidns:
                namespaces.append(pidns)
            if supervisor is None:
                self._kill_orphan(host)
                continue
            with contextlib.suppress(ProcessLookupError):
                os.kill(supervisor[0], signal.SIGTERM)
            stopping.append((host, supervisor))
        deadline = time.monotonic() + timeout
        while any(alive(record) for _, record in stopping) and time.monotonic() < deadline:
            time.sleep(0.02)
        for host, record in stopping:
            if alive(record):
                # The supervisor did not stop in time: end it and its host by recorded pid.
                with contextlib.suppress(ProcessLookupError):
                    os.kill(record[0], signal.SIGKILL)
                self._kill_orphan(host)
        self._check_gone(namespaces)
        return [host.name for host, _ in stopping]

    def _kill_orphan(self, host: HostFiles) -> None:
        init = self.init_process(host)
        if init is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(init[0], signal.SIGKILL)

    def _check_gone(self, namespaces: Iterable[str]) -> None:
        # A killed namespace's processes die as soon as they leave the kernel; one in
        # uninterruptible I/O (a journal being synced on a busy disk) may take seconds.
        deadline = time.monotonic() + 20
        left: list[int] = []
        for pidns in namespaces:
            while (left := namespace_pids(pidns)) and time.monotonic() < deadline:
                time.sleep(0.05)
            if left:
                raise LabError(
                    "processes of a lab host are still running: "
                    + ", ".join(f"{pid} ({describe_process(pid)})" for pid in left)
                )
        mounts = mounts_under(self.dir)
        if mounts:
            raise LabError(f"mounts left below {self.dir}: {', '.join(mounts)}")

    def purge(self) -> None:
        """Delete the lab directory (hosts must be down): stores, keys and all."""
        running = [h.name for h in self.hosts() if self.supervisor(h)]
        if running:
            raise LabError(f"hosts still running: {', '.join(running)}")
        if os.path.isdir(self.dir):
            # Store paths are read-only, which does not stop root (the lab runs as root).
            shutil.rmtree(self.dir)


def _keygen(path: str, comment: str) -> None:
    process.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", path],
        what="ssh-keygen",
    )


def describe_process(pid: int) -> str:
    """Its command and state (/proc/PID/stat), for an error about a process that should be gone."""
    try:
        data = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return "gone"
    name = data[data.index("(") + 1 : data.rindex(")")]
    state = data[data.rindex(")") + 2 :].split()[0]
    return f"{name}, state {state}"


def _log_tail(host: HostFiles, lines: int = 5) -> str:
    parts = []
    for name in ("supervisor.log", "console.log", "sshd.log"):
        path = Path(host.log_dir, name)
        with contextlib.suppress(OSError):
            tail = path.read_text(errors="replace").splitlines()[-lines:]
            if tail:
                parts.append(f"{host.name} {name}:\n  " + "\n  ".join(tail))
    return "\n".join(parts) or f"{host.name}: no logs in {host.log_dir}"
