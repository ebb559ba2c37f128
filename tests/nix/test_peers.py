"""Peer parity: mkFleet's Colmena hive and deploy-rs nodes carry each node's ssh settings, meet
the peers' contracts (tests/nix/peer_rules.py), refuse names a peer cannot carry, and modules get
Colmena's `name` and `nodes` arguments. Evaluated by the real nix; ssh reads the argv for real."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
from nixfleet import LAB_MK_SYSTEM, STUB_MK_SYSTEM, Fleet, write_fleet
from peer_rules import DEPLOY_RS_SCHEMA, colmena_problems, schema_problems

from nixherd.errors import CommandError

pytestmark = pytest.mark.nix

# Stand-in deploy-rs input: the activation is a string naming the node's system.
DEPLOY_RS = """
  deploy-rs.lib = builtins.listToAttrs (map (system: {
    name = system;
    value.activate.nixos = cfg: "activate-${cfg.config.system.build.toplevel.name}";
  }) [ "x86_64-linux" "aarch64-linux" ]);
"""

SSH_CONFIG = """Host web-alias
  HostName 192.0.2.50
  User alias-user
"""

INVENTORY = """
[defaults]
ssh_config = "ssh/config"
ssh_options = ["ConnectTimeout=7"]

[roles.web]
ssh_options = ["ProxyJump=bastion"]

[[roles.web.targets]]
host = "10.0.0.1"

[[roles.web.targets]]
host = "web-alias"
name = "aliased"
port = 2222
user = "deploy"
host_key_policy = "accept-new"
ssh_options = ["ServerAliveInterval=15"]

[nodes.db]
host = "db.example.com"
system = "aarch64-linux"
tags = ["db"]
"""


def make(tmp_path: Path, inventory: str = INVENTORY, files: dict[str, str] | None = None) -> Fleet:
    return write_fleet(
        tmp_path / "fleet",
        inventory,
        {"ssh/config": SSH_CONFIG, **(files or {})},
        args=STUB_MK_SYSTEM + DEPLOY_RS,
    )


def hive_deployments(fleet: Fleet) -> dict[str, Any]:
    result: dict[str, Any] = fleet.eval(
        "colmena",
        apply='h: builtins.mapAttrs (n: v: if n == "meta" then removeAttrs v [ "nixpkgs" '
        '"nodeNixpkgs" "specialArgs" "nodeSpecialArgs" ] else { inherit (v) deployment; }) h',
    )
    return result


def ssh_config_path(fleet: Fleet) -> str:
    """The ssh_config path the outputs carry: the flake's copy of ssh/config in the store."""
    path: str = fleet.eval("colmena.db.deployment.sshOptions")[1]
    assert path.startswith("/nix/store/") and path.endswith("-source/ssh/config")
    return path


def test_colmena_gets_ssh_config_and_options(tmp_path: Path) -> None:
    fleet = make(tmp_path)
    deployments = hive_deployments(fleet)
    # Relative to the inventory's directory: for a flake, its copy in the store.
    config = ssh_config_path(fleet)
    assert Path(config).read_text() == SSH_CONFIG
    assert deployments["aliased"]["deployment"] == {
        "targetHost": "web-alias",
        "targetUser": "deploy",
        "targetPort": 2222,
        "tags": [],
        # -F, then each option in resolved order (defaults, role, target); no -p (targetPort)
        # and no host key option (Colmena's own comes first and wins).
        "sshOptions": [
            *("-F", config),
            *("-o", "ConnectTimeout=7", "-o", "ProxyJump=bastion"),
            *("-o", "ServerAliveInterval=15"),
        ],
    }
    assert deployments["db"]["deployment"]["sshOptions"] == ["-F", config, "-o", "ConnectTimeout=7"]


def test_colmena_has_no_ssh_options_when_there_are_none(tmp_path: Path) -> None:
    fleet = make(tmp_path, '[nodes.solo]\nhost = "192.0.2.9"\n')
    # Colmena without the option (before 2024) would refuse `sshOptions`, even empty.
    assert hive_deployments(fleet)["solo"]["deployment"] == {
        "targetHost": "192.0.2.9",
        "targetUser": "root",
        "targetPort": None,  # no port set: ssh decides (Colmena's null)
        "tags": [],
    }


def test_deploy_rs_gets_ssh_config_port_host_key_policy_and_options(tmp_path: Path) -> None:
    fleet = make(tmp_path)
    config = ssh_config_path(fleet)
    deploy = fleet.eval("deploy.nodes")
    assert deploy["aliased"] == {
        "hostname": "web-alias",
        "sshUser": "deploy",
        "sshOpts": [
            *("-F", config, "-p", "2222", "-o", "StrictHostKeyChecking=accept-new"),
            *("-o", "ConnectTimeout=7", "-o", "ProxyJump=bastion", "-o", "ServerAliveInterval=15"),
        ],
        "profiles": {"system": {"user": "root", "path": "activate-nixos-system-aliased"}},
    }
    # No port set: no -p, ssh decides.
    assert deploy["db"]["sshOpts"] == [
        *("-F", config, "-o", "StrictHostKeyChecking=yes"),
        *("-o", "ConnectTimeout=7"),
    ]


def test_an_absolute_ssh_config_is_passed_as_is(tmp_path: Path) -> None:
    fleet = make(tmp_path, '[defaults]\nssh_config = "/etc/ssh/ssh_config"\n[nodes.a]\n')
    assert hive_deployments(fleet)["a"]["deployment"]["sshOptions"] == [
        "-F",
        "/etc/ssh/ssh_config",
    ]
    assert fleet.eval("deploy.nodes.a.sshOpts")[:2] == ["-F", "/etc/ssh/ssh_config"]


def test_a_missing_relative_ssh_config_is_named(tmp_path: Path) -> None:
    fleet = make(tmp_path, '[defaults]\nssh_config = "nope/config"\n[nodes.a]\n')
    with pytest.raises(CommandError) as info:
        fleet.eval("colmena.a.deployment.sshOptions")
    assert "defaults.ssh_config 'nope/config' not found" in info.value.output
    assert "tracked by git" in info.value.output


def ssh_settings(argv: list[str]) -> dict[str, str]:
    """What ssh makes of an argv (`ssh -G`: the configuration it would use, no connection)."""
    result = subprocess.run(
        ["ssh", "-G", *argv], capture_output=True, text=True, check=True, timeout=30
    )
    settings: dict[str, str] = {}
    for line in result.stdout.splitlines():
        key, _, value = line.partition(" ")
        settings.setdefault(key, value)
    return settings


def test_ssh_reads_the_peers_argv_as_meant(tmp_path: Path) -> None:
    """The words reach ssh as the peers build its argv: the alias resolves through the
    ssh_config, the port, ProxyJump and the host key policy are what the inventory says."""
    fleet = make(tmp_path)
    hive = hive_deployments(fleet)["aliased"]["deployment"]
    # Colmena (nix-community/colmena src/nix/host/ssh.rs `ssh` and `ssh_options`):
    # ssh USER@HOST -o StrictHostKeyChecking=accept-new -o BatchMode=yes -T <sshOptions> -p PORT
    colmena = ssh_settings(
        [
            f"{hive['targetUser']}@{hive['targetHost']}",
            *("-o", "StrictHostKeyChecking=accept-new", "-o", "BatchMode=yes", "-T"),
            *hive["sshOptions"],
            *("-p", str(hive["targetPort"])),
        ]
    )
    node = fleet.eval("deploy.nodes.aliased")
    # deploy-rs (serokell/deploy-rs src/deploy.rs): ssh USER@HOST <sshOpts>
    deploy_rs = ssh_settings([f"{node['sshUser']}@{node['hostname']}", *node["sshOpts"]])
    for settings in (colmena, deploy_rs):
        assert settings["hostname"] == "192.0.2.50"  # from the ssh_config's alias
        assert settings["user"] == "deploy"  # the inventory's user wins over the alias's
        assert settings["port"] == "2222"
        assert settings["proxyjump"] == "bastion"
        assert settings["connecttimeout"] == "7"
        assert settings["serveraliveinterval"] == "15"
    assert deploy_rs["stricthostkeychecking"] == "accept-new"
    # A strict node: deploy-rs is strict; Colmena's own accept-new comes first and wins, which
    # is why the hive does not pretend to carry the policy (docs/nix-library.md).
    strict = fleet.eval("deploy.nodes.db")
    assert ssh_settings([strict["hostname"], *strict["sshOpts"]])["stricthostkeychecking"] == "true"


def test_hive_meets_colmena_option_types(tmp_path: Path) -> None:
    fleet = make(tmp_path)
    hive = hive_deployments(fleet)
    assert sorted(hive) == ["aliased", "db", "meta", "web-10-0-0-1"]
    assert colmena_problems(hive) == []
    assert sorted(fleet.eval("colmena.meta")) == ["nodeSpecialArgs", "specialArgs"]


def test_colmena_checker_can_fail() -> None:
    bad = {
        "meta": {"nixpkgs": None, "colour": 1},
        "network": {"deployment": {}},
        "a": {"deployment": {"targetPort": "22", "sshOptions": [1], "sshOpts": []}},
    }
    assert colmena_problems(bad) == [
        "meta.colour: not a meta option",
        "network: a reserved name",
        "a.deployment.targetPort: not a null or unsigned integer: '22'",
        "a.deployment.sshOptions: not a list of string: [1]",
        "a.deployment.sshOpts: not a deployment option",
    ]


def test_deploy_output_meets_deploy_rs_schema(tmp_path: Path) -> None:
    fleet = make(tmp_path)
    deploy = fleet.eval("deploy")
    assert sorted(deploy["nodes"]) == ["aliased", "db", "web-10-0-0-1"]
    assert schema_problems(deploy, DEPLOY_RS_SCHEMA) == []


def test_deploy_rs_checker_can_fail() -> None:
    bad = {
        "sshOpts": "-p 22",
        "nodes": {
            "10-0-0-1": {"hostname": "10.0.0.1", "profiles": {}},
            "ok": {"sshOpts": [22], "profiles": {"system": {"user": "root"}, "9": {"path": "/"}}},
        },
    }
    assert sorted(schema_problems(bad, DEPLOY_RS_SCHEMA)) == sorted(
        [
            "deploy.sshOpts: not of type array: '-p 22'",
            "deploy.nodes: '10-0-0-1' is not allowed (no pattern matches it)",
            "deploy.nodes.ok: hostname is required",
            "deploy.nodes.ok.sshOpts[0]: not of type string: 22",
            "deploy.nodes.ok.profiles.system: path is required",
            "deploy.nodes.ok.profiles: '9' is not allowed (no pattern matches it)",
        ]
    )
    # Not anchored, as JSON Schema reads a pattern: a letter anywhere is enough.
    assert schema_problems({"nodes": {"1web": {"hostname": "h"}}}, DEPLOY_RS_SCHEMA) == []


@pytest.mark.parametrize("name", ["meta", "defaults", "network"])
def test_hive_refuses_a_node_named_like_its_own_keys(tmp_path: Path, name: str) -> None:
    fleet = make(tmp_path, f'[nodes.{name}]\nhost = "192.0.2.1"\n[nodes.ok]\n')
    with pytest.raises(CommandError) as info:
        fleet.eval("colmena", apply="builtins.attrNames")
    assert f"node '{name}': Colmena keeps the names defaults, meta, network" in info.value.output
    # The other outputs do not depend on Colmena's rule.
    assert fleet.eval("deploy.nodes", apply="builtins.attrNames") == [name, "ok"]


def test_deploy_rs_refuses_a_node_name_without_a_letter(tmp_path: Path) -> None:
    inventory = '[nodes.10-0-0-1]\n[nodes.1web]\n[nodes."db.example.com"]\n'
    fleet = make(tmp_path, inventory)
    with pytest.raises(CommandError) as info:
        fleet.eval("deploy.nodes", apply="builtins.attrNames")
    assert "node '10-0-0-1': deploy-rs's schema (interface.json) needs a letter" in (
        info.value.output
    )
    assert fleet.eval("colmena", apply="builtins.attrNames") == [
        "10-0-0-1",
        "1web",
        "db.example.com",
        "meta",
    ]
    # The names the schema takes are carried as they are.
    fleet = make(tmp_path, '[nodes.1web]\n[nodes."db.example.com"]\n[nodes._x]\n')
    deploy = fleet.eval("deploy")
    assert sorted(deploy["nodes"]) == ["1web", "_x", "db.example.com"]
    assert schema_problems(deploy, DEPLOY_RS_SCHEMA) == []


MODULES = {
    # A module written for a Colmena hive: it reads `name` and another node through `nodes`.
    "peer.nix": """{ name, nodes, node, ... }: {
      peer.name = name;
      peer.sameAsNode = name == node.name;
      peer.dbHostName = nodes.db.config.networking.hostName;
      peer.all = builtins.attrNames nodes;
    }""",
}
SHARED = """
[defaults]
modules = ["peer.nix"]
[nodes.db]
config = { networking.hostName = "database" }
[nodes.web]
"""


@pytest.mark.parametrize("mk_system", [STUB_MK_SYSTEM, f"mkSystem = {LAB_MK_SYSTEM};"])
def test_modules_get_colmena_name_and_nodes(tmp_path: Path, mk_system: str) -> None:
    fleet = write_fleet(tmp_path / "fleet", SHARED, MODULES, args=mk_system)
    peers = fleet.eval("nixosConfigurations", apply="builtins.mapAttrs (_: c: c.config.peer)")
    for name in ("db", "web"):
        assert peers[name] == {
            "name": name,
            "sameAsNode": True,
            "dbHostName": "database",
            "all": ["db", "web"],
        }


def test_deploy_rs_profiles_are_built_from_those_systems(tmp_path: Path) -> None:
    fleet = write_fleet(tmp_path / "fleet", SHARED, MODULES, args=STUB_MK_SYSTEM + DEPLOY_RS)
    assert fleet.eval("deploy.nodes.web.profiles.system.path") == "activate-nixos-system-web"
    recorded = fleet.eval("nixosConfigurations.web.recorded.specialArgs")
    assert recorded["name"] == "web"
    assert recorded["nodes"] == ["db", "web"]
    # The hive leaves `name` and `nodes` to Colmena (eval.nix passes them to every module).
    assert fleet.eval("colmena.meta.nodeSpecialArgs.web", apply="builtins.attrNames") == ["node"]
