"""Helpers for the keys and data tests on lab hosts: lab-1 logs in as root, lab-2 as `deploy`
(through sudo); an inventory of them in a temp dir, and `nixherd` run on it as a process."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonkit
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
        """`nixherd ARGS --json`: the result and the document's data (checked against the
        schema), with its nodes by name: {"nodes": {name: the node's object without "node"}}."""
        result = process.run(self.argv(*args), check=False, timeout=120)
        return result, by_name(result.stdout, " ".join(args)) if result.stdout.strip() else {}


def by_name(text: str, command: str) -> dict[str, Any]:
    """The payload of a keys/data JSON document with its nodes keyed by name."""
    nodes = jsonkit.document(text, command)["nodes"]
    return {"nodes": {n["node"]: {k: v for k, v in n.items() if k != "node"} for n in nodes}}


def explain(result: Result) -> str:
    return f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
