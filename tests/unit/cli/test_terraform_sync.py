"""`nixherd terraform sync` against a real Terraform (0.11.11, from PyPI's terraform-binary): `init`
and `apply` for real, `output -json` run by nixherd, a variable changed and applied again, and the
node appearing and disappearing; `check` on a snapshot older than the state; the binary's choice;
a failing `output` with its stderr shown; sensitive bytes nowhere. No lab host is needed: the
deploy of these nodes is tests/lab/deploy/test_terraform_lab.py."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import jsonkit
import pytest
import tfkit

from nixherd.cli import main
from nixherd.inventory import load
from nixherd.run import process

SECRET = "pw-0c7e55-NEVER-WRITTEN"

MAIN_TF = """
variable "web_hosts" {
  type    = "list"
  default = ["10.0.0.1", "10.0.0.2"]
}
variable "db_password" {
  default = "SECRET"
}
output "web" {
  value = "${var.web_hosts}"
}
output "db" {
  value = { host = "db.internal", port = "5432" }
}
output "db_password" {
  value     = "${var.db_password}"
  sensitive = true
}
""".replace("SECRET", SECRET)

INVENTORY = """
[terraform.infra]
dir = "../infra"
binary = "%s"

[roles.web]
targets_from = "infra.web"
vars = { db = { terraform = "infra.db" } }
"""


@pytest.fixture(autouse=True)
def _private_parse_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("NIXHERD_CACHE_DIR", str(tmp_path / "cache"))
    yield


@pytest.fixture
def infra(tmp_path: Path) -> tfkit.WorkDir:
    return tfkit.workdir(tmp_path / "infra", MAIN_TF)


def write_inventory(tmp_path: Path, binary: str | None = str(tfkit.TERRAFORM)) -> Path:
    fleet = tmp_path / "fleet"
    fleet.mkdir(exist_ok=True)
    text = INVENTORY % binary
    if binary is None:
        text = text.replace('binary = "None"\n', "")
    (fleet / "inventory.toml").write_text(text)
    return fleet / "inventory.toml"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_a_host_removed_by_a_variable_change_removes_the_node(
    tmp_path: Path, infra: tfkit.WorkDir, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_inventory(tmp_path)
    code, out, err = run(capsys, "-i", str(path), "terraform", "sync", "--json")
    assert (code, err) == (0, "")
    data = jsonkit.document(out, "terraform sync")
    assert data["added"] == ["web-10-0-0-1", "web-10-0-0-2"]
    assert data["sources"] == [{"source": "infra", "outputs": ["db", "web"]}]
    nodes = load(path).nodes
    assert sorted(nodes) == ["web-10-0-0-1", "web-10-0-0-2"]
    assert nodes["web-10-0-0-1"].vars == {"db": {"host": "db.internal", "port": "5432"}}
    snapshot = json.loads((tmp_path / "fleet" / "inventory.terraform.json").read_text())
    assert snapshot["sources"]["infra"]["state"]["serial"] == 1
    assert run(capsys, "-i", str(path), "check")[0] == 0

    infra.apply({"web_hosts": ["10.0.0.1"]})
    code, out, _ = run(capsys, "-i", str(path), "check")
    assert code == 2
    assert out == (
        f"{tmp_path}/fleet/inventory.terraform.json: terraform.infra: older than the state "
        "(serial 1 in the snapshot, 2 in ../infra/terraform.tfstate): run `nixherd terraform "
        "sync`\n"
    )
    # Until synced, the nodes are the snapshot's (nothing runs Terraform but `sync`).
    assert sorted(load(path).nodes) == ["web-10-0-0-1", "web-10-0-0-2"]
    code, out, _ = run(capsys, "-i", str(path), "terraform", "sync")
    assert code == 0
    assert out.endswith("inventory.terraform.json: written\n  - web-10-0-0-2\n")
    assert sorted(load(path).nodes) == ["web-10-0-0-1"]
    assert run(capsys, "-i", str(path), "check")[0] == 0

    infra.apply({"web_hosts": ["10.0.0.1", "10.0.0.3"]})
    code, out, _ = run(capsys, "-i", str(path), "terraform", "sync")
    assert code == 0 and out.endswith("  + web-10-0-0-3\n")
    assert sorted(load(path).nodes) == ["web-10-0-0-1", "web-10-0-0-3"]


def test_sensitive_bytes_reach_no_snapshot_and_no_message(
    tmp_path: Path, infra: tfkit.WorkDir, capsys: pytest.CaptureFixture[str]
) -> None:
    assert infra.outputs()["db_password"]["value"] == SECRET  # Terraform does print it
    path = write_inventory(tmp_path)
    code, out, err = run(capsys, "-i", str(path), "terraform", "sync")
    assert code == 0 and SECRET not in out + err
    snapshot = (tmp_path / "fleet" / "inventory.terraform.json").read_bytes()
    assert SECRET.encode() not in snapshot and b"db_password" not in snapshot
    # Used anyway: refused, naming it, its value in no message.
    path.write_text(
        path.read_text() + '\n[nodes.db]\nvars = { pw = { terraform = "infra.db_password" } }\n'
    )
    code, out, err = run(capsys, "-i", str(path), "terraform", "sync")
    assert code == 2
    assert 'output "db_password" is sensitive' in err and "nodes.db.vars.pw" in err
    assert SECRET not in out + err
    assert (tmp_path / "fleet" / "inventory.terraform.json").read_bytes() == snapshot


def test_a_failing_output_command_shows_its_stderr(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Initialised but never applied: Terraform 0.11 has no state to read outputs from.
    infra = tmp_path / "infra"
    infra.mkdir()
    (infra / "main.tf").write_text('output "web" { value = ["10.0.0.1"] }\n')
    tfkit.WorkDir(infra).run("init", "-input=false", "-no-color")
    path = write_inventory(tmp_path)
    code, out, err = run(capsys, "-i", str(path), "terraform", "sync")
    assert (code, out) == (2, "")
    assert err == (
        f"nixherd: error: {path}: terraform.infra: `{tfkit.TERRAFORM} output -json` failed "
        f"(exit 1) in {tmp_path}/fleet/../infra:\n"
        "  The module root could not be found. There is nothing to output.\n"
    )
    assert not (tmp_path / "fleet" / "inventory.terraform.json").exists()


@pytest.mark.usefixtures("infra")
def test_the_binary_is_tofu_when_on_path_else_terraform(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls"
    for name in ("terraform", "tofu"):
        script = bin_dir / name
        script.write_text(f'#!/bin/sh\necho {name} >> {calls}\nexec {tfkit.TERRAFORM} "$@"\n')
        script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    path = write_inventory(tmp_path, binary=None)
    assert run(capsys, "-i", str(path), "terraform", "sync")[0] == 0
    assert calls.read_text() == "tofu\n"
    (bin_dir / "tofu").unlink()
    assert run(capsys, "-i", str(path), "terraform", "sync")[0] == 0
    assert calls.read_text() == "tofu\nterraform\n"
    (bin_dir / "terraform").unlink()
    code, _, err = run(capsys, "-i", str(path), "terraform", "sync")
    assert code == 2
    assert err == (
        f'nixherd: error: {path}: terraform.infra: "terraform" is not found on PATH (install '
        "OpenTofu or Terraform, or set binary)\n"
    )


@pytest.mark.usefixtures("infra")
def test_nodes_runs_no_terraform_and_loads_none_of_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_inventory(tmp_path)
    assert run(capsys, "-i", str(path), "terraform", "sync")[0] == 0
    script = (
        "import sys\n"
        "from nixherd.cli import main\n"
        f"code = main(['-i', {str(path)!r}, 'nodes', '--json'])\n"
        "heavy = ('subprocess', 'nixherd.run', 'nixherd.inventory.terraform_outputs', 'rich')\n"
        "loaded = sorted(m for m in sys.modules if m.startswith(heavy))\n"
        "print(code, loaded, file=sys.stderr)\n"
    )
    # Without Terraform on PATH, too.
    env = {"PATH": "/usr/bin:/bin", "NO_COLOR": "1", "NIXHERD_CACHE_DIR": str(tmp_path / "c")}
    result = process.run([sys.executable, "-c", script], env=env, check=False, timeout=60)
    assert result.stderr.strip() == "0 []"
    listed = jsonkit.document(result.stdout, "nodes")["nodes"]
    assert [n["name"] for n in listed] == ["web-10-0-0-1", "web-10-0-0-2"]
    assert os.environ.get("PATH")  # the test's own environment is untouched
