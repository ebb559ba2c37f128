"""`nixherd check --eval` on a small fleet flake (stand-in mkSystem): the real CLI and nix."""

from __future__ import annotations

from pathlib import Path

import jsonkit
import pytest
from nixfleet import Fleet, write_fleet

from nixherd.cli import main

pytestmark = pytest.mark.nix

INVENTORY = """
[roles.app]
modules = ["app.nix"]
tags = ["app"]

[[roles.app.targets]]
host = "10.0.1.1"

[[roles.app.targets]]
host = "10.0.1.2"

[nodes.db]
host = "10.0.2.1"
modules = ["db.nix"]
"""

GOOD = {
    "app.nix": "{ node, ... }: { services.app.host = node.host; }",
    "db.nix": "{ ... }: { services.db.enable = true; }",
}
BROKEN_DB = {**GOOD, "db.nix": '{ ... }: { services.db.enable = throw "db: no disk"; }'}


def fleet(tmp_path: Path, files: dict[str, str]) -> Fleet:
    return write_fleet(tmp_path / "fleet", INVENTORY, files)


def test_all_nodes_evaluate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inventory = fleet(tmp_path, GOOD).inventory
    assert main(["check", "--eval", "-i", str(inventory)]) == 0
    out, err = capsys.readouterr()
    assert out == "3 nodes, 1 role: ok\n"
    lines = sorted(err.splitlines())
    assert [line.split(" ")[:2] for line in lines] == [
        ["app-10-0-1-1:", "ok"],
        ["app-10-0-1-2:", "ok"],
        ["db:", "ok"],
    ]
    assert all(line.split(" ")[2].startswith("/nix/store/") for line in lines)


def test_failing_node_is_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inventory = fleet(tmp_path, BROKEN_DB).inventory
    assert main(["check", "--eval", "-i", str(inventory)]) == 1
    out, err = capsys.readouterr()
    assert out == "3 nodes, 1 role: 1 of 3 failed to evaluate\n"
    assert "db: db: no disk\n" in err
    assert "app-10-0-1-1: ok /nix/store/" in err


def test_selection_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inventory = fleet(tmp_path, BROKEN_DB).inventory
    # The broken node is not selected: nothing fails.
    assert main(["check", "--eval", "--on", "@app", "--json", "-i", str(inventory)]) == 0
    result = jsonkit.document(capsys.readouterr().out, "check")
    assert result["ok"] is True
    assert result["selected"] == ["app-10-0-1-1", "app-10-0-1-2"]
    evaluated = {e["node"]: e for e in result["eval"]}
    assert list(evaluated) == ["app-10-0-1-1", "app-10-0-1-2"]
    entry = evaluated["app-10-0-1-2"]
    assert entry["ok"] is True
    assert entry["error"] is None
    assert entry["drv_path"].endswith("-nixos-system-app-10-0-1-2.drv")

    assert main(["check", "--eval", "--on", "db", "--json", "-i", str(inventory)]) == 1
    result = jsonkit.document(capsys.readouterr().out, "check")
    assert result["ok"] is False
    assert result["eval"] == [
        {
            "node": "db",
            "ok": False,
            "drv_path": None,
            "out_path": None,
            "error": "db: no disk\n(use '--show-trace' to show detailed location information)",
        }
    ]


def test_broken_flake_is_one_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = fleet(tmp_path, GOOD)
    (broken.root / "flake.nix").write_text("{ outputs = { self }: import ./missing.nix; }")
    assert main(["check", "--eval", "-i", str(broken.inventory)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"nixherd: error: cannot evaluate {broken.root}#nixosConfigurations: ")
    assert "missing.nix" in err
    assert "Traceback" not in err


def test_without_eval_no_nix_is_needed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    broken = fleet(tmp_path, GOOD)
    (broken.root / "flake.nix").write_text("not nix at all")
    assert main(["check", "-i", str(broken.inventory)]) == 0
    assert capsys.readouterr().out == "3 nodes, 1 role: ok\n"
