"""Terraform to NixOS on real lab hosts (issue 17): a real Terraform (0.11.11, PyPI's
terraform-binary) applies a configuration whose outputs point at lab hosts, `nixherd terraform
sync` writes the snapshot, `nixherd apply` deploys the nodes it created (their vars holding an
output too); a variable change that removes a host removes the node; the sensitive output's bytes
are in no snapshot, store path, log, report or message."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path

import jsonkit
import pytest
import rtoml
import tfkit
from deploykit import Fleet, by_node, make_fleet
from labkit import LabFactory, LabHosts, files_holding, new_store_paths, store_paths

from nixherd.cli import state
from nixherd.run.process import Result

pytestmark = [pytest.mark.lab, pytest.mark.nix]

NAMES = ["lab-1", "lab-2"]

# Only variables and outputs: nothing for Terraform to download. The nodes come in as a list of
# maps, each port a string (Terraform 0.11 has no numbers in outputs).
MAIN_TF = """
variable "nodes" {
  type    = "list"
  default = []
}
variable "motd" {
  default = "hello"
}
variable "db_password" {
  default = "unset"
}
output "nodes" {
  value = "${var.nodes}"
}
output "motd" {
  value = "${var.motd}"
}
output "db_password" {
  value     = "${var.db_password}"
  sensitive = true
}
"""


@pytest.fixture(scope="module")
def tf_lab(lab_hosts: LabFactory) -> Iterator[LabHosts]:
    # Unreachable substituters (cache.nixos.org) would cost every build seconds of retries.
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NIX_CONFIG", "substituters =")
        yield lab_hosts(len(NAMES))


def explain(result: Result) -> str:
    return f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"


def apply_terraform(infra: tfkit.WorkDir, lab: LabHosts, names: list[str], motd: str) -> None:
    """`terraform apply` with one entry per lab host in `names` (a .tfvars file: Terraform 0.11
    takes a list of maps there, not on the command line)."""
    entries = "".join(
        f'  {{ name = "tf-{name}", host = "127.0.0.1", port = "{lab.port(name)}" }},\n'
        for name in names
    )
    (infra.path / "nodes.tfvars").write_text(f"nodes = [\n{entries}]\n")
    infra.run(
        "apply",
        "-auto-approve",
        "-input=false",
        "-no-color",
        "-var-file=nodes.tfvars",
        f"-var=motd={motd}",
    )


def write_inventory(fleet: Fleet, version: str) -> None:
    inventory = {
        "terraform": {"infra": {"dir": "../infra", "binary": str(tfkit.TERRAFORM)}},
        "defaults": {
            "ssh_config": fleet.lab.ssh_config,
            "vars": {"version": version, "motd": {"terraform": "infra.motd"}},
        },
        "roles": {"app": {"modules": ["app.nix"], "targets_from": "infra.nodes"}},
    }
    fleet.inventory.write_text(rtoml.dumps(inventory))


def test_terraform_apply_sync_and_deploy(tmp_path: Path, tf_lab: LabHosts) -> None:
    secret = f"tf-secret-{secrets.token_hex(16)}"
    fleet = make_fleet(tmp_path / "fleet", tf_lab)
    # The working directory (its state holds the secret) is beside the flake, not in it: a
    # `path:` flake copies its whole directory into the store.
    (tmp_path / "infra").mkdir()
    (tmp_path / "infra" / "terraform.tfvars").write_text(f'db_password = "{secret}"\n')
    infra = tfkit.workdir(tmp_path / "infra", MAIN_TF)
    motd = f"from-terraform-{secrets.token_hex(4)}"
    apply_terraform(infra, tf_lab, NAMES, motd)
    assert infra.outputs()["db_password"]["value"] == secret
    before = store_paths()
    write_inventory(fleet, f"tf1-{secrets.token_hex(4)}")
    outputs: list[str] = []

    def nixherd(*args: str, code: int = 0) -> Result:
        result = fleet.nixherd(*args)
        outputs.append(result.stdout + result.stderr)
        assert result.returncode == code, explain(result)
        return result

    synced = jsonkit.document(nixherd("terraform", "sync", "--json").stdout, "terraform sync")
    assert synced["added"] == ["tf-lab-1", "tf-lab-2"]
    listed = jsonkit.document(nixherd("nodes", "--json").stdout, "nodes")["nodes"]
    assert [(n["name"], n["port"]) for n in listed] == [
        (f"tf-{name}", tf_lab.port(name)) for name in NAMES
    ]

    result, report = fleet.apply()
    outputs.append(result.stdout + result.stderr)
    assert result.returncode == 0, explain(result)
    nodes = by_node(report)
    assert sorted(nodes) == ["tf-lab-1", "tf-lab-2"]
    for name in NAMES:
        node = nodes[f"tf-{name}"]
        assert node["result"] == "ok", node
        assert fleet.current(name) == node["store_path"]
        motd_file = tf_lab.ssh(name, "cat", "/nix/var/lab/etc/motd").stdout
        assert motd_file == motd

    # Terraform drops lab-2: the snapshot is stale until synced, then the node is gone.
    apply_terraform(infra, tf_lab, ["lab-1"], motd)
    stale = nixherd("check", code=2)
    assert "terraform.infra: older than the state (serial" in stale.stdout
    result = nixherd("terraform", "sync")
    assert result.stdout.endswith(": written\n  - tf-lab-2\n")
    nixherd("check")
    write_inventory(fleet, f"tf2-{secrets.token_hex(4)}")
    result, report = fleet.apply()
    outputs.append(result.stdout + result.stderr)
    assert result.returncode == 0, explain(result)
    assert [n["node"] for n in report["nodes"]] == ["tf-lab-1"]
    assert by_node(report)["tf-lab-1"]["result"] == "ok"
    assert fleet.current("lab-1") == by_node(report)["tf-lab-1"]["store_path"]

    # The sensitive output: in no snapshot, message, report, log, fleet file or new store path.
    needle = secret.encode()
    snapshot = fleet.dir / "inventory.terraform.json"
    assert needle not in snapshot.read_bytes()
    assert json.loads(snapshot.read_text())["sources"]["infra"]["outputs"].keys() == {
        "motd",
        "nodes",
    }
    assert all(secret not in text for text in outputs)
    assert files_holding(str(fleet.dir), needle) == []
    reports = [p for p in fleet.work.iterdir() if p.name.startswith("report-")]
    assert len(reports) == 2
    for report_file in reports:
        assert needle not in report_file.read_bytes()
    logs = state.for_inventory(str(fleet.inventory)) / "logs"
    assert logs.is_dir() and files_holding(str(logs), needle) == []
    fresh = new_store_paths(before)
    assert fresh, "the deploys added store paths"
    for store_path in fresh:
        assert files_holding(store_path, needle) == [], store_path
    # The search can find it: the state does hold it.
    assert files_holding(str(infra.path), needle)
