"""Helpers for tests on real lab hosts: a handle on running hosts (ssh, nix copy, switch), free
ports, HTTP from the machine to a host's service, generated fleet flakes, looking for leaked
bytes. The `lab_hosts` fixture is in conftest.py."""

from __future__ import annotations

import hashlib
import json
import os
import random
import shlex
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import tomlkit

from nixherd.errors import CommandError, LabError
from nixherd.lab.hosts import HostStatus, Lab, port_free
from nixherd.run import nix, process
from nixherd.run.process import Result

REPO = Path(__file__).resolve().parents[2]

# Ports a lab of the session may grow into without colliding with another test session's.
PORT_BLOCK = 16


@dataclass
class LabHosts:
    """Running lab hosts lab-1..lab-N of one lab directory, and ways to use them."""

    lab: Lab
    names: list[str]

    @property
    def dir(self) -> str:
        return self.lab.dir

    @property
    def ssh_config(self) -> str:
        return self.lab.ssh_config

    @property
    def nix_env(self) -> dict[str, str]:
        """Environment for nix commands that reach the hosts (`ssh://root@lab-N`)."""
        return {"NIX_SSHOPTS": self.lab.nix_sshopts}

    def port(self, name: str) -> int:
        return next(h.port for h in self.lab.hosts() if h.name == name)

    def status(self, name: str) -> HostStatus:
        return next(s for s in self.lab.status() if s.name == name)

    @property
    def control_path(self) -> str:
        """Where this lab's multiplexed connections live (short: socket paths are limited)."""
        digest = hashlib.sha1(self.dir.encode()).hexdigest()[:10]
        return f"/tmp/nhl-{digest}-%C"

    def ssh_argv(
        self, name: str, argv: list[str], user: str = "root", multiplex: bool = True
    ) -> list[str]:
        # One connection per host and user, reused by every command: a handshake costs far
        # more than the commands tests run. A dropped master (reboot, kill) is replaced.
        # Not for commands that may time out: the master keeps the client's output pipes open
        # while the remote command runs, so a killed client's output never ends.
        mux = ["ControlMaster=auto", f"ControlPath={self.control_path}", "ControlPersist=30"]
        options = ["BatchMode=yes", "ConnectTimeout=10", *(mux if multiplex else [])]
        return [
            "ssh",
            "-F",
            self.ssh_config,
            *(word for option in options for word in ("-o", option)),
            f"{user}@{name}",
            "--",
            shlex.join(argv),
        ]

    def ssh(
        self,
        name: str,
        *argv: str,
        user: str = "root",
        check: bool = True,
        timeout: float = 60,
        input: str | None = None,
        multiplex: bool = True,
    ) -> Result:
        """Run argv on a host over ssh (its words quoted here, once)."""
        return process.run(
            self.ssh_argv(name, list(argv), user, multiplex),
            check=check,
            timeout=timeout,
            input=input,
            what=f"ssh {name}",
        )

    def sh(self, name: str, script: str, *, user: str = "root", check: bool = True) -> Result:
        return self.ssh(name, "sh", "-c", script, user=user, check=check)

    def copy(self, name: str, *paths: str, user: str = "root") -> None:
        nix.copy(list(paths), to=f"ssh://{user}@{name}", env=self.nix_env, timeout=300)

    def switch(self, name: str, toplevel: str, action: str = "switch") -> Result:
        """Deploy a lab system the way the deploy engine does: copy, set the profile, switch."""
        self.copy(name, toplevel)
        return self.ssh(
            name,
            "sh",
            "-c",
            'nix-env -p /nix/var/nix/profiles/system --set "$1" && '
            'exec "$1/bin/switch-to-configuration" "$2"',
            "switch",
            toplevel,
            action,
        )

    def reboot(self, name: str, timeout: float = 30) -> None:
        """`reboot` inside the host; return once it booted again and answers ssh."""
        boots = self.status(name).boots or 0
        # reboot(2) in a PID namespace ends the caller with status 0 while it kills the rest:
        # the ssh session reports 0 or 255 depending on which the client hears of first.
        rebooted = self.ssh(name, "reboot", check=False)
        assert rebooted.returncode in (0, 255), rebooted
        deadline = time.monotonic() + timeout
        while (self.status(name).boots or 0) <= boots:
            assert time.monotonic() < deadline, f"{name} did not reboot"
            time.sleep(0.02)
        self.wait_ssh(name, timeout)

    def wait_ssh(self, name: str, timeout: float = 30) -> None:
        """Wait until the host accepts ssh again (after a reboot or a kill)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.ssh(name, "true", timeout=10, multiplex=False)
                return
            except CommandError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)


class LabFactory(Protocol):
    def __call__(self, n: int = 3, *, fresh: bool = False) -> LabHosts: ...


def ephemeral_low() -> int:
    """The first port of the kernel's range for outgoing connections' local ports."""
    return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])


def free_base(count: int) -> int:
    """A base port with `count` free ports after it, away from the defaults (2201...) and below
    the ephemeral range: a port free now but in that range may be an ssh client's local port by
    the time a lab grows into it."""
    rng = random.Random()
    top = min(ephemeral_low(), 65536)
    for _ in range(200):
        base = rng.randrange(10000, top - count, PORT_BLOCK)
        if all(port_free(base + i) for i in range(count)):
            return base
    raise LabError(f"no {count} consecutive free ports found")


def http_get(port: int, path: str = "/", timeout: float = 5) -> tuple[int, bytes]:
    """GET http://127.0.0.1:PORT/PATH from the machine (the hosts share its network)."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def http_json(port: int, timeout: float = 5) -> Mapping[str, str]:
    status, body = http_get(port, timeout=timeout)
    assert status == 200, body
    data: dict[str, str] = json.loads(body)
    return data


EXAMPLE = REPO / "examples" / "lab"


def example_fleet(root: Path, service_ports: Mapping[str, int], lab: LabHosts | None = None) -> str:
    """A copy of examples/lab, with the library beside it as in the repository, whose nodes
    listen on `service_ports` (node -> port) and, given a lab, reach its hosts. Returns the flake
    reference."""
    shutil.copytree(REPO / "nix", root / "nix", ignore=shutil.ignore_patterns("*.lock"))
    fleet = root / "examples" / "lab"
    shutil.copytree(EXAMPLE, fleet)
    inventory: Any = tomlkit.parse((fleet / "inventory.toml").read_text())
    for role in inventory["roles"].values():
        for target in role["targets"]:
            name = str(target["name"])
            for key in ("http_port", "db_port"):
                if key in target["vars"]:
                    target["vars"][key] = service_ports[name]
            if lab is not None:
                target["port"] = lab.port(name)
    if lab is not None:
        inventory["defaults"]["ssh_config"] = lab.ssh_config
    (fleet / "inventory.toml").write_text(tomlkit.dumps(inventory))
    # As in the repository: a flake in a subdirectory of a git tree sees the whole tree
    # (`path:` flakes take no `dir` on Nix 2.8).
    process.run(["git", "init", "-q", str(root)])
    process.run(["git", "-C", str(root), "add", "."])
    return str(fleet)


def build(installables: Sequence[str]) -> list[str]:
    """`nix build` (offline: no substituters), returning the output paths in order."""
    return _offline_build(list(installables))


def _offline_build(args: Sequence[str]) -> list[str]:
    result = process.run(
        nix.nix_argv("build", "--no-link", "--json", "--option", "substituters", "", *args),
        timeout=600,
        what="nix build",
    )
    return [entry["outputs"]["out"] for entry in json.loads(result.stdout)]


def toplevel(ref: str, node: str) -> str:
    return f"{ref}#nixosConfigurations.{node}.config.system.build.toplevel"


def free_ports(count: int) -> list[int]:
    """`count` distinct free TCP ports on 127.0.0.1 (for services: hosts share the network)."""
    ports: list[int] = []
    while len(ports) < count:
        port = free_base(1)
        if port not in ports:
            ports.append(port)
    return ports


def lab_system(*modules: str, system: str = "x86_64-linux") -> str:
    """Build a lab system from Nix module expressions (with nix/lab.nix's `lib` in scope)."""
    expr = (
        f"let lab = import {REPO / 'nix' / 'lab.nix'}; inherit (lab) lib; in "
        f"(lab.mkSystem {{ system = {nix.nix_string(system)}; "
        f"modules = [ {' '.join(f'({m})' for m in modules)} ]; }})"
        ".config.system.build.toplevel"
    )
    return _offline_build(["--impure", "--expr", expr])[0]


def fleet_flake(root: Path, modules: Mapping[str, str]) -> None:
    """A `path:` fleet flake at `root` (created): a copy of the Nix library, a flake whose
    `mkFleet` reads `root/inventory.toml` with the lab's mkSystem, and `modules` (file name ->
    Nix text). The inventory is the test's to write."""
    (root / "nixherd").mkdir(parents=True)
    for name in ("default.nix", "lib.nix", "lab.nix", "modules.nix"):
        shutil.copy(REPO / "nix" / name, root / "nixherd" / name)
    # lab.nix reads its units, activate and switch-to-configuration from nix/lab/.
    shutil.copytree(REPO / "nix" / "lab", root / "nixherd" / "lab")
    (root / "flake.nix").write_text(
        "{ outputs = { self }: let nh = import ./nixherd; in nh.mkFleet {\n"
        "  inventory = ./inventory.toml; root = ./.; inherit (nh.lab) mkSystem; }; }\n"
    )
    for name, text in modules.items():
        (root / name).write_text(text)


def store_paths() -> set[str]:
    """Every valid path of this machine's Nix store."""
    return set(process.run(nix.nix_argv("path-info", "--all"), timeout=120).stdout.split())


def new_store_paths(before: set[str]) -> list[str]:
    """The store paths added since `before` (a `store_paths()` taken earlier)."""
    return sorted(store_paths() - before)


def files_holding(root: str, needle: bytes) -> list[str]:
    """Every regular file under `root` (symlinks not followed) holding `needle`.

    A file removed while the scan runs (a live host's store) holds nothing any more and is
    skipped; any other read error fails the test.
    """
    found: list[str] = []
    for directory, _dirs, files in os.walk(root):
        for name in files:
            path = os.path.join(directory, name)
            try:
                if os.path.islink(path) or not os.path.isfile(path):
                    continue
                if needle in Path(path).read_bytes():
                    found.append(path)
            except FileNotFoundError:
                continue
    return found
