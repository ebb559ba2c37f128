"""mkFleet with Terraform sources (nix/lib.nix): the snapshot beside the inventory in a real flake,
the `terraform` argument for an inventory given as data, and the errors of a missing snapshot or
output. That both resolvers agree on every input is tests/nix/test_agreement.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from nixfleet import LIB, STUB_SYSTEM, write_fleet

from nixherd.errors import CommandError
from nixherd.inventory import load
from nixherd.run import nix

pytestmark = pytest.mark.nix

INVENTORY = """
[terraform.infra]
file = "outputs.json"

[roles.web]
targets_from = "infra.web"
vars = { region = { terraform = "infra.region" } }
"""
SNAPSHOT = {
    "format": "nixherd-terraform/v1",
    "sources": {"infra": {"outputs": {"web": ["10.0.0.1", "10.0.0.2"], "region": "eu"}}},
}


def test_a_flake_reads_the_snapshot_beside_its_inventory(tmp_path: Path) -> None:
    fleet = write_fleet(tmp_path, INVENTORY, {"inventory.terraform.json": json.dumps(SNAPSHOT)})
    nodes = fleet.eval("nixherd.nodes")
    assert sorted(nodes) == ["web-10-0-0-1", "web-10-0-0-2"]
    assert nodes["web-10-0-0-2"]["vars"] == {"region": "eu"}
    python = {name: node.to_data() for name, node in load(fleet.inventory).nodes.items()}
    assert nodes == python


def test_an_inventory_given_as_data_takes_the_snapshot_as_an_argument(tmp_path: Path) -> None:
    snapshot = tmp_path / "elsewhere.json"
    snapshot.write_text(json.dumps(SNAPSHOT))
    expr = f"""
      let lib = import {nix.nix_string(str(LIB))}; in
      (lib.mkFleet {{
        inventory = builtins.fromTOML {nix.nix_string(INVENTORY)};
        root = {nix.nix_string(str(tmp_path))};
        mkSystem = import {nix.nix_string(str(STUB_SYSTEM))};
        terraform = /. + {nix.nix_string(str(snapshot))};
      }}).nixherd.nodes
    """
    nodes = nix.eval_expr_json(expr)
    assert sorted(nodes) == ["web-10-0-0-1", "web-10-0-0-2"]


def test_a_missing_snapshot_or_output_is_named(tmp_path: Path) -> None:
    fleet = write_fleet(tmp_path / "a", INVENTORY)
    with pytest.raises(CommandError) as info:
        fleet.eval("nixherd.nodes")
    assert "'infra.web': no Terraform snapshot beside the inventory" in info.value.output
    assert "git add" in info.value.output

    without = {"format": "nixherd-terraform/v1", "sources": {"infra": {"outputs": {}}}}
    fleet = write_fleet(
        tmp_path / "b", INVENTORY, {"inventory.terraform.json": json.dumps(without)}
    )
    with pytest.raises(CommandError) as info:
        fleet.eval("nixherd.nodes")
    assert "terraform.infra: output 'web' is not in the snapshot" in info.value.output
