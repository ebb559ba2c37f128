"""mkFleet's Colmena and deploy-rs outputs reach real lab hosts: ssh and nix copy, run the way
each peer builds them from the outputs, get through with the inventory's ssh_config and
ssh_options alone (a ProxyJump among them)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from labkit import LabFactory, LabHosts

from nixherd.run import nix, process

pytestmark = pytest.mark.lab

REPO = Path(__file__).resolve().parents[2]

FLAKE = """{
  outputs = { self }:
    (import ./lib.nix).mkFleet {
      inventory = ./inventory.toml;
      root = ./.;
      mkSystem = _: { };
      # deploy-rs's activation is never run here: only the ssh words are used.
      deploy-rs.lib.x86_64-linux.activate.nixos = _: "unused";
    };
}
"""


def outputs(tmp_path: Path, lab: LabHosts) -> tuple[dict[str, Any], dict[str, Any]]:
    """The hive's deployment fields and deploy-rs's nodes of a fleet of lab-1 and lab-2, where
    lab-2 is reached through lab-1 (ProxyJump): nothing but the inventory says how."""
    inventory = f"""
[defaults]
ssh_config = {json.dumps(lab.ssh_config)}
ssh_options = ["ConnectTimeout=10"]

[nodes.lab-1]
port = {lab.port("lab-1")}

[nodes.lab-2]
port = {lab.port("lab-2")}
ssh_options = ["ProxyJump=lab-1"]
"""
    root = tmp_path / "fleet"
    root.mkdir()
    (root / "flake.nix").write_text(FLAKE)
    (root / "lib.nix").write_text((REPO / "nix" / "lib.nix").read_text())
    (root / "inventory.toml").write_text(inventory)
    ref = f"path:{root}"
    hive = nix.eval_json(
        f"{ref}#colmena", apply='h: builtins.mapAttrs (_: n: n.deployment) (removeAttrs h ["meta"])'
    )
    deploy = nix.eval_json(
        f"{ref}#deploy.nodes", apply='builtins.mapAttrs (_: n: removeAttrs n [ "profiles" ])'
    )
    return hive, deploy


def colmena_ssh(deployment: dict[str, Any], *command: str) -> list[str]:
    # nix-community/colmena src/nix/host/ssh.rs: `ssh` and `ssh_options`.
    return [
        "ssh",
        f"{deployment['targetUser']}@{deployment['targetHost']}",
        *("-o", "StrictHostKeyChecking=accept-new", "-o", "BatchMode=yes", "-T"),
        *deployment["sshOptions"],
        *("-p", str(deployment["targetPort"])),
        "--",
        *command,
    ]


def deploy_rs_ssh(node: dict[str, Any], *command: str) -> list[str]:
    # serokell/deploy-rs src/deploy.rs: `ssh USER@HOST <sshOpts> COMMAND`.
    return ["ssh", f"{node['sshUser']}@{node['hostname']}", *node["sshOpts"], *command]


def test_peer_outputs_reach_lab_hosts(lab_hosts: LabFactory, tmp_path: Path) -> None:
    lab = lab_hosts(2)
    hive, deploy = outputs(tmp_path, lab)
    for name in ("lab-1", "lab-2"):
        for argv in (colmena_ssh(hive[name], "hostname"), deploy_rs_ssh(deploy[name], "hostname")):
            result = process.run(argv, timeout=60, what=f"ssh {name}")
            assert result.stdout.strip() == name
    # Both reached lab-2 through lab-1 (that ssh reads the words so: tests/nix/test_peers.py).
    assert hive["lab-2"]["sshOptions"][-2:] == ["-o", "ProxyJump=lab-1"]
    assert deploy["lab-2"]["sshOpts"][-2:] == ["-o", "ProxyJump=lab-1"]

    # deploy-rs copies with `nix copy --to ssh://USER@HOST` and NIX_SSHOPTS = sshOpts joined by
    # spaces (src/push.rs): a new store path lands on lab-2 through the jump.
    source = tmp_path / "peer-payload"
    source.write_text(f"peer payload {os.getpid()} {tmp_path}\n")
    path = process.run(["nix-store", "--add", str(source)], what="nix-store --add").stdout.strip()
    assert lab.ssh("lab-2", "test", "-e", path, check=False).returncode == 1
    node = deploy["lab-2"]
    nix.copy(
        [path],
        to=f"ssh://{node['sshUser']}@{node['hostname']}",
        env={"NIX_SSHOPTS": " ".join(node["sshOpts"])},
        timeout=300,
    )
    assert lab.ssh("lab-2", "cat", path).stdout == source.read_text()
