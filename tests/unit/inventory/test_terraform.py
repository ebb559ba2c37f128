"""Terraform/OpenTofu sources read from a saved `output -json` (`file`): the 0.12+/OpenTofu shape
(`type` a type expression), targets from lists of hosts, lists of objects and maps, values in vars,
the origins `show` gives, and every kind of bad input (exit 2, naming terraform.NAME and the
output, nothing written). A real Terraform 0.11 runs in tests/unit/cli/test_terraform_sync.py.

The fixtures follow the documented format of `output -json` (hashicorp/terraform and
opentofu/opentofu, website/docs/cli/commands/output.mdx: an object with a key per output), with
`type` as Terraform 0.12+ and OpenTofu write it: cty's JSON type encoding, e.g.
["tuple", ["string"]], ["object", {"host": "string"}], ["map", "string"]. (Checked once against
the real thing: Terraform 1.11.4 prints examples/terraform/infra's outputs with exactly these
shapes, e.g. ["tuple", [["object", {"host": "string", "name": "string", "port": "string"}]]].)
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonkit
import pytest

from nixherd.cli import main
from nixherd.errors import InventoryError
from nixherd.inventory import load

# `output -json` of Terraform 0.12+ / OpenTofu for a configuration like
#   output "web" { value = ["10.0.0.1", "10.0.0.2"] }
#   output "apps" { value = [{ host = "10.0.1.1", port = 2201, user = null, tags = ["a"] }] }
#   output "edge" { value = { "edge-hk" = { host = "203.0.113.5", vars = { region = "hk" } } } }
#   output "db" { value = { host = "db.internal", port = 5432 } }
#   output "db_password" { value = "hunter2-SENSITIVE-7f3a" sensitive = true }
OUTPUTS_012: dict[str, Any] = {
    "web": {
        "sensitive": False,
        "type": ["tuple", ["string", "string"]],
        "value": ["10.0.0.1", "10.0.0.2"],
    },
    "apps": {
        "sensitive": False,
        "type": [
            "tuple",
            [["object", {"host": "string", "port": "number", "tags": ["list", "string"]}]],
        ],
        "value": [{"host": "10.0.1.1", "port": 2201, "user": None, "tags": ["a"]}],
    },
    "edge": {
        "sensitive": False,
        "type": ["map", ["object", {"host": "string", "vars": ["object", {"region": "string"}]}]],
        "value": {"edge-hk": {"host": "203.0.113.5", "vars": {"region": "hk"}}},
    },
    "db": {
        "sensitive": False,
        "type": ["object", {"host": "string", "port": "number"}],
        "value": {"host": "db.internal", "port": 5432},
    },
    "db_password": {"sensitive": True, "type": "string", "value": "hunter2-SENSITIVE-7f3a"},
    "count": {"sensitive": False, "type": "number", "value": 3},
}
SECRET = b"hunter2-SENSITIVE-7f3a"

INVENTORY = """
[terraform.infra]
file = "outputs.json"

[defaults]
vars = { db = { terraform = "infra.db" } }

[roles.web]
targets_from = "infra.web"
tags = ["web"]

[roles.app]
targets_from = ["infra.apps", "infra.edge"]

[nodes.admin]
host = "192.0.2.1"
vars = { db_host = { terraform = "infra.db.host" }, first_web = { terraform = "infra.web.0" } }
"""


@pytest.fixture(autouse=True)
def _in_the_fleet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test runs in its fleet's directory (messages name `inventory.toml` as given), with
    a parse cache of its own."""
    monkeypatch.setenv("NIXHERD_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    yield


def fleet(
    tmp_path: Path, inventory: str = INVENTORY, outputs: dict[str, Any] | None = None
) -> Path:
    (tmp_path / "outputs.json").write_text(json.dumps(OUTPUTS_012 if outputs is None else outputs))
    path = tmp_path / "inventory.toml"
    path.write_text(inventory)
    return Path("inventory.toml")


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def sync(capsys: pytest.CaptureFixture[str], path: Path) -> tuple[int, str, str]:
    return run(capsys, "-i", str(path), "terraform", "sync")


def test_the_012_shape_gives_targets_and_vars(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = fleet(tmp_path)
    code, out, err = run(capsys, "-i", str(path), "terraform", "sync", "--json")
    assert (code, err) == (0, "")
    data = jsonkit.document(out, "terraform sync")
    assert data["sources"] == [{"source": "infra", "outputs": ["apps", "db", "edge", "web"]}]
    assert data["added"] == ["admin", "app-10-0-1-1", "edge-hk", "web-10-0-0-1", "web-10-0-0-2"]
    assert data["removed"] == [] and data["changed"] is True

    nodes = load(path).nodes
    assert sorted(nodes) == data["added"]
    app = nodes["app-10-0-1-1"]
    # null in an object is "not set": the user is the built-in default.
    assert (app.host, app.port, app.user, app.tags) == ("10.0.1.1", 2201, "root", ("a",))
    assert nodes["edge-hk"].vars == {"db": {"host": "db.internal", "port": 5432}, "region": "hk"}
    assert nodes["web-10-0-0-2"].tags == ("web",)
    assert nodes["admin"].vars == {
        "db": {"host": "db.internal", "port": 5432},
        "db_host": "db.internal",
        "first_web": "10.0.0.1",
    }


def test_the_snapshot_is_sorted_deterministic_and_holds_only_what_is_used(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = fleet(tmp_path)
    assert sync(capsys, path)[0] == 0
    snapshot = tmp_path / "inventory.terraform.json"
    first = snapshot.read_bytes()
    doc = json.loads(first)
    assert sorted(doc["sources"]["infra"]["outputs"]) == ["apps", "db", "edge", "web"]
    assert first == (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode()
    assert SECRET not in first and b"db_password" not in first
    code, out, _ = sync(capsys, path)
    assert code == 0 and "unchanged" in out
    assert snapshot.read_bytes() == first
    # No temporary file is left beside it.
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".inventory")) == []


def test_show_gives_the_terraform_origin(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = fleet(tmp_path)
    sync(capsys, path)
    code, out, _ = run(capsys, "-i", str(path), "show", "--json", "edge-hk")
    assert code == 0
    data = jsonkit.document(out, "show")
    assert data["source"] == 'terraform.infra output edge["edge-hk"]'
    origins = data["origins"]
    assert origins["host"] == origins["name"] == "terraform:infra.edge"
    assert origins["vars"] == {
        "db": {"host": "terraform:infra.db", "port": "terraform:infra.db"},
        "region": "terraform:infra.edge",
    }
    code, out, _ = run(capsys, "-i", str(path), "show", "--json", "admin")
    origins = jsonkit.document(out, "show")["origins"]
    assert origins["host"] == "node"
    assert origins["vars"]["first_web"] == "terraform:infra.web"
    code, out, _ = run(capsys, "-i", str(path), "show", "admin")
    assert code == 0 and "terraform:infra.db" in out


def test_nodes_reads_the_snapshot_only(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = fleet(tmp_path)
    sync(capsys, path)
    # The source is gone: `nodes` does not care, it reads the snapshot.
    (tmp_path / "outputs.json").unlink()
    code, out, err = run(capsys, "-i", str(path), "nodes")
    assert (code, err) == (0, "")
    assert "edge-hk" in out and "web-10-0-0-2" in out
    # `check` does: the file the snapshot came from changed.
    code, out, _ = run(capsys, "-i", str(path), "check")
    assert code == 2
    assert out == (
        "inventory.terraform.json: terraform.infra: outputs.json changed since: "
        "run `nixherd terraform sync`\n"
    )


def test_a_changed_file_is_stale_until_synced(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = fleet(tmp_path)
    sync(capsys, path)
    assert run(capsys, "-i", str(path), "check")[0] == 0
    fleet(tmp_path, outputs={**OUTPUTS_012, "web": {**OUTPUTS_012["web"], "value": ["10.0.0.1"]}})
    assert run(capsys, "-i", str(path), "check")[0] == 2
    code, out, _ = sync(capsys, path)
    assert code == 0 and "  - web-10-0-0-2\n" in out
    assert run(capsys, "-i", str(path), "check")[0] == 0
    assert "web-10-0-0-2" not in load(path).nodes


def test_a_missing_snapshot_or_output_is_reported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = fleet(tmp_path)
    code, _, err = run(capsys, "-i", str(path), "nodes")
    assert code == 2
    assert err == (
        "nixherd: error: inventory.terraform.json: no such file (it holds the outputs of "
        "terraform.infra): run `nixherd terraform sync`\n"
    )
    sync(capsys, path)
    path.write_text(INVENTORY + '\n[roles.more]\ntargets_from = "infra.more"\n')
    code, out, _ = run(capsys, "-i", str(path), "check")
    assert code == 2
    assert out == (
        'inventory.terraform.json: terraform.infra: output "more" (used by '
        "roles.more.targets_from) is not in the snapshot: run `nixherd terraform sync`\n"
    )


def refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], inventory: str, outputs: Any
) -> str:
    """The error of `terraform sync` (exit 2), which must have written nothing."""
    path = fleet(tmp_path, inventory, outputs)
    code, out, err = sync(capsys, path)
    assert (code, out) == (2, ""), err
    assert not (tmp_path / "inventory.terraform.json").exists()
    assert "Traceback" not in err
    return err


def one_output(value: Any, type_: Any = "dynamic") -> dict[str, Any]:
    return {"hosts": {"sensitive": False, "type": type_, "value": value}}


ROLE = '[terraform.infra]\nfile = "outputs.json"\n[roles.web]\ntargets_from = "infra.hosts"\n'


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (
            ["-oProxyCommand=touch /tmp/x"],
            "inventory.toml: terraform.infra output hosts[0].host: must be a hostname, an IPv4 "
            'or an IPv6 address, got "-oProxyCommand=touch /tmp/x"',
        ),
        (
            [5],
            "inventory.toml: terraform.infra output hosts[0]: must be a host (a string) or an "
            "object with host, got integer 5",
        ),
        (
            7,
            "inventory.toml: terraform.infra output hosts: must be a list of hosts, a list of "
            "objects with host, or a map from node name to such an object (used by "
            "roles.web.targets_from), got integer 7",
        ),
        (
            [{"host": "10.0.0.1", "user": "-oProxyCommand=x"}],
            "inventory.toml: terraform.infra output hosts[0].user: must be a login name matching "
            '[A-Za-z_][A-Za-z0-9_.-]*, got "-oProxyCommand=x"',
        ),
        (
            [{"host": "10.0.0.1", "port": 70000}],
            "inventory.toml: terraform.infra output hosts[0].port: must be 1..65535, got 70000",
        ),
        (
            [{"host": "10.0.0.1", "ssh_options": ["ProxyCommand=x"]}],
            "inventory.toml: terraform.infra output hosts[0].ssh_options: not taken from "
            "Terraform (only host, name, port, user, tags, vars)",
        ),
        (
            {"bad name!": "10.0.0.1"},
            'inventory.toml: terraform.infra output hosts["bad name!"].name: must be a node name '
            'matching [A-Za-z0-9][A-Za-z0-9_.-]* (at most 63 characters), got "bad name!"',
        ),
        (
            [{"port": 22}],
            "inventory.toml: terraform.infra output hosts[0]: host is required",
        ),
        (
            [{"host": "10.0.0.1", "tags": ["a b"]}],
            "inventory.toml: terraform.infra output hosts[0].tags[0]: must be a tag matching "
            '[A-Za-z0-9][A-Za-z0-9_.-]* (at most 63 characters), got "a b"',
        ),
    ],
    ids=[
        "option-host",
        "number",
        "not-a-list",
        "user",
        "port",
        "other-key",
        "name",
        "no-host",
        "tag",
    ],
)
def test_bad_values_in_outputs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], value: Any, expected: str
) -> None:
    err = refused(tmp_path, capsys, ROLE, one_output(value))
    assert err.splitlines()[0] == f"nixherd: error: {expected}"


def test_two_outputs_producing_one_node_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    outputs = {
        "a": {"sensitive": False, "type": "map", "value": {"web-1": "10.0.0.1"}},
        "b": {"sensitive": False, "type": "map", "value": {"web-1": "10.0.0.2"}},
    }
    inventory = (
        '[terraform.infra]\nfile = "outputs.json"\n'
        '[roles.x]\ntargets_from = "infra.a"\n[roles.y]\ntargets_from = "infra.b"\n'
    )
    err = refused(tmp_path, capsys, inventory, outputs)
    assert err == (
        'nixherd: error: inventory.toml: terraform.infra output b["web-1"]: node name "web-1" is '
        'already used by terraform.infra output a["web-1"]\n'
    )


def test_a_sensitive_output_is_refused_and_never_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inventory = (
        '[terraform.infra]\nfile = "outputs.json"\n'
        '[nodes.a]\nvars = { pw = { terraform = "infra.db_password" } }\n'
    )
    err = refused(tmp_path, capsys, inventory, OUTPUTS_012)
    assert err == (
        'nixherd: error: inventory.toml: terraform.infra: output "db_password" is sensitive: it '
        "is never copied into the snapshot, so nodes.a.vars.pw cannot use it; read it in a key "
        'instead (command = ["tofu", "output", "-raw", "db_password"])\n'
    )
    assert SECRET.decode() not in err


@pytest.mark.parametrize(
    ("inventory", "expected"),
    [
        (
            '[terraform.infra]\ndir = "missing"\n',
            "inventory.toml: terraform.infra.dir: no such directory: {tmp}/missing",
        ),
        (
            '[terraform.infra]\nfile = "missing.json"\n',
            "inventory.toml: terraform.infra.file: no such file: {tmp}/missing.json",
        ),
        (
            '[terraform.infra]\ndir = "."\nbinary = "no-such-tofu"\n',
            'inventory.toml: terraform.infra: "no-such-tofu" is not found on PATH (set binary)',
        ),
        (
            '[terraform.infra]\nfile = "outputs.json"\n[roles.r]\ntargets_from = "infra.nope"\n',
            'inventory.toml: terraform.infra: no output "nope" (used by roles.r.targets_from; '
            "outputs: apps, count, db, edge, web)",
        ),
        (
            '[terraform.infra]\nfile = "x"\ndir = "y"\n',
            "inventory.toml: terraform.infra: give either dir (a working directory) or file "
            "(a saved output -json)",
        ),
        (
            '[terraform.infra]\nfile = "outputs.json"\n[roles.r]\ntargets_from = "other.web"\n',
            'inventory.toml: roles.r.targets_from: unknown Terraform source "other" in '
            '"other.web" ([terraform.NAME] sources: infra)',
        ),
        (
            '[terraform.infra]\nfile = "outputs.json"\n[roles.r]\ntargets_from = "infra"\n',
            "inventory.toml: roles.r.targets_from: must be a reference NAME.OUTPUT (a "
            "[terraform.NAME] source and one of its outputs), or an array of them, got string "
            '"infra"',
        ),
        (
            '[terraform.infra]\nfile = "outputs.json"\n'
            '[nodes.a]\nvars = { x = { terraform = "infra.db.nope" } }\n',
            'inventory.toml: nodes.a.vars.x: terraform.infra output db has no "nope" (it is an '
            "object)",
        ),
    ],
    ids=["dir", "file", "binary", "output", "dir-and-file", "source", "ref", "path-inside"],
)
def test_bad_sources(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], inventory: str, expected: str
) -> None:
    err = refused(tmp_path, capsys, inventory, OUTPUTS_012)
    assert err == f"nixherd: error: {expected.format(tmp=tmp_path)}\n"


def test_not_output_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = refused(tmp_path, capsys, '[terraform.infra]\nfile = "outputs.json"\n', {"a": 1})
    assert err == (
        "nixherd: error: inventory.toml: terraform.infra: "
        f'{tmp_path}/outputs.json: output "a" is not an object with sensitive, type and value '
        "(Terraform 0.11+ or OpenTofu output -json)\n"
    )


def test_a_resync_that_fails_keeps_the_old_snapshot(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = fleet(tmp_path)
    sync(capsys, path)
    before = (tmp_path / "inventory.terraform.json").read_bytes()
    bad = {**OUTPUTS_012, "web": {"sensitive": False, "type": "list", "value": ["-oX=y"]}}
    (tmp_path / "outputs.json").write_text(json.dumps(bad))
    code, _, err = sync(capsys, path)
    assert code == 2 and "terraform.infra output web[0].host" in err
    assert (tmp_path / "inventory.terraform.json").read_bytes() == before


def test_markers_without_sources_are_plain_tables(tmp_path: Path) -> None:
    # As in nix/lib.nix: `{ terraform = ... }` is only read when the inventory has sources.
    path = tmp_path / "inventory.toml"
    path.write_text('[nodes.a]\nvars = { x = { terraform = "infra.db" } }\n')
    assert load(path).nodes["a"].vars == {"x": {"terraform": "infra.db"}}


def test_targets_from_without_any_source(tmp_path: Path) -> None:
    path = tmp_path / "inventory.toml"
    path.write_text('[roles.r]\ntargets_from = "infra.web"\n')
    with pytest.raises(InventoryError) as caught:
        load(path)
    assert str(caught.value) == (
        f'{path}: roles.r.targets_from: unknown Terraform source "infra" in "infra.web" '
        "([terraform.NAME] sources: none declared)"
    )


def test_a_snapshot_that_cannot_be_written_is_an_error_not_a_crash(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = fleet(tmp_path)
    # A directory where the snapshot goes: the rename onto it fails (as root, where permissions
    # would not stop anything).
    (tmp_path / "inventory.terraform.json").mkdir()
    code, out, err = sync(capsys, path)
    assert (code, out) == (2, "")
    assert err.startswith("nixherd: error: inventory.terraform.json: cannot write: ")
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".inventory")] == []
