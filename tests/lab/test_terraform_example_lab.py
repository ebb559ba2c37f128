"""examples/terraform for real: its Terraform directory applied (Terraform 0.11.11 from PyPI's
terraform-binary), `nixherd terraform sync`, then `nixherd apply` of the example's flake to lab
hosts: nodes from a list of hosts (ssh_config aliases) and from a list of objects, a vars value
from an output, and the sensitive password delivered by a key's command, in no store path, log or
report. The copy is a git tree as the repository is, so the example's .gitignore keeps Terraform's
state (which holds the password) out of the flake's source."""

from __future__ import annotations

import json
import secrets
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import jsonkit
import pytest
import tfkit
import tomlkit
from labkit import REPO, LabFactory, LabHosts, files_holding, new_store_paths, store_paths

from nixherd.run import process
from nixherd.run.process import Result

pytestmark = [pytest.mark.lab, pytest.mark.nix]

EXAMPLE = REPO / "examples" / "terraform"


@pytest.fixture(scope="module")
def lab(lab_hosts: LabFactory) -> Iterator[LabHosts]:
    # Unreachable substituters (cache.nixos.org) would cost every build seconds of retries.
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NIX_CONFIG", "substituters =")
        yield lab_hosts(3)


def explain(result: Result) -> str:
    return f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"


def test_the_terraform_example_deploys_to_lab_hosts(
    tmp_path: Path, lab: LabHosts, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "repo"
    shutil.copytree(REPO / "nix", root / "nix", ignore=shutil.ignore_patterns("*.lock"))
    fleet = root / "examples" / "terraform"
    ignore = shutil.ignore_patterns(".terraform", "terraform.tfstate*", "*.tfvars")
    shutil.copytree(EXAMPLE, fleet, ignore=ignore)
    inventory = tomlkit.parse((fleet / "inventory.toml").read_text())
    inventory["defaults"]["ssh_config"] = lab.ssh_config
    (fleet / "inventory.toml").write_text(tomlkit.dumps(inventory))
    process.run(["git", "init", "-q", str(root)])
    process.run(["git", "-C", str(root), "add", "."])

    # The key's command runs `terraform`: the tests' Terraform, first on PATH.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "terraform").symlink_to(tfkit.TERRAFORM)
    monkeypatch.setenv("PATH", f"{bin_dir}:{Path(sys.executable).parent}:/usr/bin:/bin")

    password = f"db-pw-{secrets.token_hex(16)}"
    infra = fleet / "infra"
    (infra / "terraform.tfvars").write_text(
        f'db_password = "{password}"\ndb_port = "{lab.port("lab-3")}"\n'
    )
    tfkit.workdir(infra, (infra / "main.tf").read_text())
    assert (
        "terraform.tfstate" not in process.run(["git", "-C", str(root), "status", "--short"]).stdout
    )

    work = tmp_path / "work"
    work.mkdir()
    base = [sys.executable, "-m", "nixherd", "-i", str(fleet / "inventory.toml")]

    def nixherd(*args: str) -> Result:
        return process.run([*base, *args], cwd=str(work), check=False, timeout=600)

    before = store_paths()
    synced = nixherd("terraform", "sync")
    assert synced.returncode == 0, explain(synced)
    report_file = work / "report.json"
    result = nixherd("apply", "--flake", str(fleet), "--report", str(report_file))
    assert result.returncode == 0, explain(result)
    report = jsonkit.document(report_file.read_text(), "apply")
    results = {n["node"]: n["result"] for n in report["nodes"]}
    assert results == {"lab-3": "ok", "web-lab-1": "ok", "web-lab-2": "ok"}

    page = lab.ssh("lab-1", "cat", "/nix/var/lab/etc/web/index.html").stdout
    assert "hello from Terraform: web-lab-1 (lab-1), version 1" in page
    assert lab.ssh("lab-3", "cat", "/run/keys/db-password").stdout.strip() == password

    needle = password.encode()
    snapshot = (fleet / "inventory.terraform.json").read_bytes()
    assert needle not in snapshot
    assert json.loads(snapshot)["sources"]["infra"]["outputs"]["db_nodes"][0]["name"] == "lab-3"
    assert password not in synced.stdout + synced.stderr + result.stdout + result.stderr
    assert needle not in report_file.read_bytes()
    assert files_holding(str(work), needle) == []
    for path in new_store_paths(before):
        assert files_holding(path, needle) == [], path
    # The search can find it: Terraform's state, beside the flake's tracked files, does hold it.
    assert files_holding(str(infra), needle)
