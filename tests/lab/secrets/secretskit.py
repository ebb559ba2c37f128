"""Helpers for the keys and data tests on lab hosts: lab-1 logs in as root, lab-2 as `deploy`
(through sudo); an inventory of them in a temp dir, and `nixherd` run on it as a process."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomlkit
from labkit import LabHosts

from nixherd.run import process
from nixherd.run.process import Result

USERS = {"lab-1": "root", "lab-2": "deploy"}


@dataclass
class LabInventory:
    """An inventory of lab hosts in `root`, and `nixherd` run on it as a process."""

    root: Path
    lab: LabHosts

    @property
    def inventory(self) -> Path:
        return self.root / "inventory.toml"

    def write(self, nodes: dict[str, dict[str, Any]]) -> None:
        doc: dict[str, Any] = {"defaults": {"ssh_config": self.lab.ssh_config}, "nodes": {}}
        for name, extra in nodes.items():
            doc["nodes"][name] = {
                "host": name,
                "port": self.lab.port(name),
                "user": USERS[name],
                **extra,
            }
        self.inventory.write_text(tomlkit.dumps(doc))

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "nixherd", "-i", str(self.inventory), *args, "--json"]

    def run(self, *args: str) -> tuple[Result, dict[str, Any]]:
        result = process.run(self.argv(*args), check=False, timeout=120)
        report: dict[str, Any] = json.loads(result.stdout) if result.stdout.strip() else {}
        return result, report


def explain(result: Result) -> str:
    return f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
