"""Helpers for deploy tests on lab hosts: generated fleets (flake + inventory) and running nixherd.

Each fleet is a temporary `path:` flake holding a copy of the Nix library, one role module and an
inventory pointing at the lab's hosts. Tests pick a fresh `version` so that every deploy builds
new systems, whatever ran before on the shared hosts. The fixtures are in conftest.py.
"""

from __future__ import annotations

import itertools
import os
import socket
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonkit
import rtoml
from labkit import LabHosts, fleet_flake

from nixherd.run import process
from nixherd.run.process import Result

HOSTS = 4
_versions = itertools.count(1)

ROLE = """{ node, ... }: {
  lab.version = node.vars.version;
  lab.payload = { sharedMB = 1; nodeMB = 1; seed = "${node.name}-${node.vars.version}"; };
  lab.files.motd = node.vars.motd;
}
"""
SERVICE = """{ node, ... }: { lab.service.port = node.vars.http_port; }
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Fleet:
    """A generated fleet over the lab's hosts, and the nixherd command line pointed at it."""

    dir: Path
    lab: LabHosts
    version: str = ""
    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def work(self) -> Path:
        """Where nixherd runs (its logs and results go there): beside the flake, not in it, so
        they are not copied into the store with the `path:` flake's source."""
        return self.dir.parent

    @property
    def flake(self) -> str:
        return f"path:{self.dir}"

    @property
    def inventory(self) -> Path:
        return self.dir / "inventory.toml"

    def write(
        self,
        names: Sequence[str],
        *,
        version: str | None = None,
        vars: Mapping[str, Mapping[str, Any]] | None = None,
        config: Mapping[str, Mapping[str, Any]] | None = None,
        users: Mapping[str, str] | None = None,
        service: Sequence[str] = (),
        extra_nodes: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> str:
        """Write the inventory for `names` (lab hosts); returns the version deployed."""
        self.version = version or f"v{next(_versions)}-{os.getpid()}"
        nodes: dict[str, dict[str, Any]] = {}
        for name in names:
            entry: dict[str, Any] = {
                "role": "app",
                "host": "127.0.0.1",
                "port": self.lab.port(name),
                "vars": dict((vars or {}).get(name, {})),
            }
            if name in service:
                entry["modules"] = ["service.nix"]
                entry["vars"].setdefault("http_port", free_port())
            if users and name in users:
                entry["user"] = users[name]
            if config and name in config:
                entry["config"] = dict(config[name])
            nodes[name] = entry
        for name, extra in (extra_nodes or {}).items():
            nodes[name] = {"role": "app", **extra}
        self.nodes = nodes
        data = {
            "defaults": {
                "ssh_config": self.lab.ssh_config,
                "vars": {"version": self.version, "motd": "hello"},
            },
            "roles": {"app": {"modules": ["app.nix"]}},
            "nodes": nodes,
        }
        self.inventory.write_text(rtoml.dumps(data))
        return self.version

    def nixherd(self, *args: str, check: bool = False, timeout: float = 600) -> Result:
        """`nixherd ARGS --flake THIS` as a separate process, from the work directory."""
        argv = [sys.executable, "-m", "nixherd", "-i", str(self.inventory), *args]
        if args and args[0] in ("apply", "build", "eval", "status"):
            argv += ["--flake", self.flake]
        return process.run(argv, cwd=str(self.work), check=check, timeout=timeout)

    def apply(self, *args: str, check: bool = False) -> tuple[Result, dict[str, Any]]:
        """`nixherd apply ARGS --report FILE`; the result and the report (the JSON document's
        data, checked against the schema)."""
        report = self.work / f"report-{next(_versions)}.json"
        result = self.nixherd("apply", *args, "--report", str(report), check=check)
        data: dict[str, Any] = (
            jsonkit.document(report.read_text(), "apply") if report.exists() else {}
        )
        return result, data

    def current(self, name: str) -> str:
        return self.lab.ssh(name, "readlink", "/run/current-system", check=False).stdout.strip()

    def profile(self, name: str) -> str:
        result = self.lab.ssh(name, "readlink", "-f", "/nix/var/nix/profiles/system", check=False)
        return result.stdout.strip()


def by_node(report: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return {n["node"]: n for n in report["nodes"]}


def make_fleet(root: Path, lab: LabHosts) -> Fleet:
    """A fleet directory at `root` (created) over the hosts of `lab`."""
    fleet_flake(root, {"app.nix": ROLE, "service.nix": SERVICE})
    return Fleet(root, lab)
