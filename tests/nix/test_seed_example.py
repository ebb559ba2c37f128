"""The seed fleet (examples/seed-fleet) through mkFleet: every output a user of colmena,
nixos-rebuild or deploy-rs relies on, evaluated with a stand-in mkSystem (no nixpkgs here)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from nixfleet import REPO, STUB_MK_SYSTEM, Fleet, write_fleet

from nixherd import inventory
from nixherd.inventory import Node

pytestmark = pytest.mark.nix

SEED = REPO / "examples" / "seed-fleet"

STUB_INPUTS = """
  colmena.lib.makeHive = hive: { hiveOf = builtins.attrNames hive; };
  deploy-rs.lib.x86_64-linux.activate.nixos =
    cfg: "activate:" + cfg.config.system.build.toplevel.name;
"""


def seed_fleet(tmp_path: Path, args: str = STUB_MK_SYSTEM) -> Fleet:
    """The seed's inventory and modules (not its flake.nix) in a flake using the stand-ins."""
    files = {
        str(path.relative_to(SEED)): path.read_text()
        for path in sorted(SEED.rglob("*"))
        if path.is_file() and path.name not in ("flake.nix", "flake.lock", "inventory.toml")
    }
    return write_fleet(tmp_path / "seed", (SEED / "inventory.toml").read_text(), files, args)


@pytest.fixture(scope="module")
def nodes() -> dict[str, Node]:
    return dict(inventory.load(SEED / "inventory.toml").nodes)


def per_node(fleet: Fleet, attr: str, body: str) -> dict[str, Any]:
    result: dict[str, Any] = fleet.eval(attr, apply=f"builtins.mapAttrs (name: value: {body})")
    return result


def test_nix_nodes_are_the_python_nodes(tmp_path: Path, nodes: dict[str, Node]) -> None:
    fleet = seed_fleet(tmp_path)
    assert fleet.eval("nixherd.nodes") == {name: node.to_data() for name, node in nodes.items()}


def test_colmena_lists_meta_and_every_node(tmp_path: Path, nodes: dict[str, Node]) -> None:
    fleet = seed_fleet(tmp_path)
    assert fleet.eval("colmena", apply="builtins.attrNames") == sorted([*nodes, "meta"])
    deployments = per_node(fleet, "colmena", 'if name == "meta" then null else value.deployment')
    assert deployments.pop("meta") is None
    assert deployments == {
        name: {
            "targetHost": node.host,
            "targetUser": node.user,
            "targetPort": node.port,
            "tags": list(node.tags),
        }
        for name, node in nodes.items()
    }
    assert deployments["nixos-ws"]["targetUser"] == "luck"
    assert deployments["nixos-hk"]["tags"] == ["vps", "hk", "prod"]


def test_fanned_out_nodes_each_have_their_own_host(tmp_path: Path) -> None:
    fleet = seed_fleet(tmp_path)
    deployments = per_node(fleet, "colmena", 'if name == "meta" then null else value.deployment')
    batch = {
        name: d["targetHost"]
        for name, d in deployments.items()
        if d is not None and "batch-vps" in d["tags"]
    }
    assert len(batch) == 3
    assert len(set(batch.values())) == 3
    for name, host in batch.items():
        assert name == "nixos-vps-" + host.replace(".", "-")


def test_systems_get_hostname_config_and_node(tmp_path: Path, nodes: dict[str, Node]) -> None:
    fleet = seed_fleet(tmp_path)
    config = per_node(
        fleet,
        "nixosConfigurations",
        "{ inherit (value.config) networking; time = value.config.time or { };"
        " boot = value.config.boot or { }; users = value.config.users or { }; }",
    )
    assert config["nixos-hk"]["networking"]["hostName"] == "nixos-hk"
    assert config["nixos-vps"]["boot"] == {"isContainer": True}
    for name, node in nodes.items():
        # The hostName default is the node's name; the modules read the node's own vars.
        assert config[name]["networking"]["hostName"] == name
        if node.role == "nixos-vps":
            assert config[name]["time"]["timeZone"] == node.vars.get("timeZone", "UTC")
            assert "isContainer" not in config[name]["boot"] or name == "nixos-vps"
    assert "luck" in config["nixos-ws"]["users"]["users"]
    recorded = per_node(fleet, "nixosConfigurations", "value.recorded")
    for name, node in nodes.items():
        assert recorded[name]["system"] == node.system
        assert recorded[name]["specialArgs"] == {
            "node": node.to_data(),
            "name": name,
            "nodes": sorted(nodes),
        }
        module_files = [m for m in recorded[name]["modules"] if isinstance(m, str)]
        assert [m.split("-source/", 1)[1] for m in module_files] == list(node.modules)


def test_colmena_and_deploy_rs_outputs_with_stub_inputs(
    tmp_path: Path, nodes: dict[str, Node]
) -> None:
    fleet = seed_fleet(tmp_path, STUB_MK_SYSTEM + STUB_INPUTS)
    assert fleet.eval("colmenaHive") == {"hiveOf": sorted([*nodes, "meta"])}
    deploy = fleet.eval("deploy.nodes")
    assert deploy == {
        name: {
            "hostname": node.host,
            "sshUser": node.user,
            # No -p where the inventory sets no port: ssh decides.
            "sshOpts": [
                *(() if node.port is None else ("-p", str(node.port))),
                *("-o", "StrictHostKeyChecking=yes"),
            ],
            "profiles": {"system": {"user": "root", "path": f"activate:nixos-system-{name}"}},
        }
        for name, node in nodes.items()
    }
