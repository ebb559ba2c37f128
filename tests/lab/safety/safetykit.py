"""Helpers for the safety tests: a pool of fresh lab hosts, generated fleets whose nodes can
misbehave on purpose (lab.fail.*), running nixherd as a separate process, watching a host."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonkit
import pytest
import rtoml
from labkit import LabHosts, fleet_flake, free_base, free_ports

from nixherd.errors import LabError
from nixherd.lab.hosts import Lab
from nixherd.run import process
from nixherd.run.process import Result

NODE_MODULE = """{ node, ... }: {
  lab.version = node.vars.version;
  lab.files."app/version" = node.vars.version;
  lab.service = node.vars.service or null;
  lab.fail = node.vars.fail or { };
  lab.payload = node.vars.payload or { };
}
"""


def host_pool(
    tmp_path_factory: pytest.TempPathFactory, name: str, ports: int
) -> Iterator[HostPool]:
    """A test module's own lab, in a temp dir named `name`, with room for `ports` hosts (a fault
    such as a frozen sshd must not leak into other tests' hosts), stopped by recorded pid when
    the module is done. Skips the module unless run as root (lab hosts need it)."""
    if os.geteuid() != 0:
        pytest.skip("lab hosts need root")
    lab = Lab(tmp_path_factory.mktemp(name))
    try:
        yield HostPool(LabHosts(lab, []), free_base(ports), ports)
    finally:
        lab.down()


def out(result: Result) -> str:
    """What a command printed, stdout then stderr."""
    return result.stdout + result.stderr


@dataclass
class HostPool:
    """Lab hosts handed out to tests: every call gives hosts no earlier test used."""

    lab: LabHosts
    base: int
    limit: int

    def take(self, n: int) -> list[str]:
        first = len(self.lab.names) + 1
        total = first + n - 1
        if total > self.limit:
            raise LabError(f"the safety lab has room for {self.limit} hosts")
        self.lab.lab.up(total, base_port=self.base)
        names = [f"lab-{i}" for i in range(first, total + 1)]
        self.lab.names.extend(names)
        return names


@dataclass
class Fleet:
    """A generated fleet (a `path:` flake) whose nodes are lab hosts, and nixherd run over it."""

    dir: Path
    lab: LabHosts
    # node name -> lab host name
    hosts: dict[str, str] = field(default_factory=dict)
    service_ports: dict[str, int] = field(default_factory=dict)
    runs: int = 0

    @property
    def flake(self) -> str:
        return f"path:{self.dir}"

    @property
    def inventory(self) -> Path:
        return self.dir / "inventory.toml"

    def port(self, node: str) -> int:
        """The node's service port (free on the machine: lab hosts share its network)."""
        if node not in self.service_ports:
            self.service_ports[node] = free_ports(1)[0]
        return self.service_ports[node]

    def write(self, nodes: Mapping[str, Mapping[str, Any]]) -> None:
        """The inventory: node -> {"vars": ..., "checks": ...}; every node is a lab host."""
        table: dict[str, Any] = {}
        for name, spec in nodes.items():
            host = self.hosts[name]
            table[name] = {"host": "127.0.0.1", "port": self.lab.port(host), **spec}
        data = {
            "defaults": {
                "ssh_config": self.lab.ssh_config,
                "modules": ["node.nix"],
                "vars": {"version": "1"},
            },
            "nodes": table,
        }
        self.inventory.write_text(rtoml.dumps(data))

    def argv(self, *args: str) -> list[str]:
        argv = [sys.executable, "-m", "nixherd", "-i", str(self.inventory), *args]
        if args and args[0] in ("apply", "diff"):
            argv += ["--flake", self.flake]
        return argv

    def nixherd(self, *args: str, timeout: float = 600) -> Result:
        return process.run(self.argv(*args), cwd=str(self.dir), check=False, timeout=timeout)

    def report_path(self) -> Path:
        self.runs += 1
        return self.dir / f"report-{self.runs}.json"

    def apply(self, *args: str) -> tuple[Result, dict[str, Any]]:
        """`nixherd apply ARGS --report FILE`: the process's result and the report (the JSON
        document's data, checked against the schema)."""
        report = self.report_path()
        result = self.nixherd("apply", *args, "--report", str(report))
        data: dict[str, Any] = (
            jsonkit.document(report.read_text(), "apply") if report.exists() else {}
        )
        return result, data

    def current(self, node: str) -> str | None:
        """What the node's host runs, read through its pid 1's root (no ssh involved: `lab
        status` also logs in, which hangs for seconds while a test has frozen sshd, and its
        answer would be stale by then)."""
        lab = self.lab.lab
        host = next(h for h in lab.hosts() if h.name == self.hosts[node])
        init = lab.init_process(host)
        if init is None:
            return None
        try:
            return os.readlink(f"/proc/{init[0]}/root/run/current-system")
        except OSError:
            return None

    def profile(self, node: str) -> str:
        result = self.lab.ssh(
            self.hosts[node], "readlink", "-f", "/nix/var/nix/profiles/system", check=False
        )
        return result.stdout.strip()


def make_fleet(root: Path, lab: LabHosts, hosts: Mapping[str, str]) -> Fleet:
    fleet_flake(root, {"node.nix": NODE_MODULE})
    return Fleet(root, lab, dict(hosts))


def deployed_pair(hosts: HostPool, root: Path) -> Fleet:
    """Two fresh hosts as nodes alpha and bravo, both switched to version 1."""
    a, b = hosts.take(2)
    fleet = make_fleet(root, hosts.lab, {"alpha": a, "bravo": b})
    fleet.write({"alpha": {"vars": {"version": "1"}}, "bravo": {"vars": {"version": "1"}}})
    result, _ = fleet.apply("switch")
    assert result.ok, result.stdout + result.stderr
    return fleet


def deployed_single(hosts: HostPool, root: Path) -> tuple[Fleet, str]:
    """One fresh host as node alpha, switched to version 1; the fleet and the host's name."""
    (host,) = hosts.take(1)
    fleet = make_fleet(root, hosts.lab, {"alpha": host})
    fleet.write({"alpha": {"vars": {"version": "1"}}})
    result, _ = fleet.apply("switch")
    assert result.ok, result.stdout + result.stderr
    return fleet, host


@contextlib.contextmanager
def apply_running(fleet: Fleet, *args: str) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """`nixherd apply switch ARGS` built beforehand and running in the background (output in
    apply.log), for a test to interfere with; killed if still running when the test is done.
    Yields the process and the path of its JSON report."""
    built = fleet.nixherd("build")
    assert built.returncode == 0, built.stdout + built.stderr
    report = fleet.report_path()
    deployer = process.spawn(
        fleet.argv("apply", "switch", "--report", str(report), *args),
        cwd=str(fleet.dir),
        log_path=str(fleet.dir / "apply.log"),
    )
    try:
        yield deployer, report
    finally:
        if deployer.poll() is None:
            deployer.kill()
            deployer.wait()


def by_node(report: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return {n["node"]: n for n in report["nodes"]}


def children(pid: int) -> list[int]:
    """The direct children of `pid` (from /proc)."""
    found: list[int] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # The command name is in parentheses and may hold spaces: the ppid follows it.
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid:
            found.append(int(entry))
    return found


def descendants(pid: int) -> list[int]:
    out: list[int] = []
    todo = [pid]
    while todo:
        for child in children(todo.pop()):
            out.append(child)
            todo.append(child)
    return out


def cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")[:-1]
    except OSError:
        return []


def wait_for(
    predicate: Any, timeout: float, interval: float = 0.02, what: str = "condition"
) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def versions(paths: Sequence[str | None]) -> list[str | None]:
    """The version part of lab system paths (nixos-system-<node>-<version>)."""
    return [p.rsplit("-", 1)[1] if p else None for p in paths]


def boot_default(lab: LabHosts, host: str) -> str:
    """The system a lab host boots next (its boot loader's entry)."""
    result = lab.ssh(host, "readlink", "-f", "/nix/var/lab/boot-default", check=False)
    return result.stdout.strip()


def activation_status(lab: LabHosts, host: str) -> str:
    """The status of the host's newest activation ("" when there is none)."""
    script = (
        "ls -1dt /run/nixherd/act-* 2>/dev/null | head -n 1 | "
        'while read -r d; do cat "$d/status"; done'
    )
    return lab.sh(host, script, check=False).stdout.strip()
